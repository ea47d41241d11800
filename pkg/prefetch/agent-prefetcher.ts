import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { AgentMetrics } from "../metrics/index.js";
import { type BlobRequest, seedErrorCode, type SeedResult } from "../registry/index.js";
import type { Digest } from "../oci/index.js";
import type { AgentCommand, PrefetchAssignment, PrefetchChannel, PrefetchHandler, PrefetchReport } from "../tracker/index.js";
import { PrefetchError, isPrefetchError } from "./errors.js";

/** Blob fetches at once for all assignments together: containerd's default is 3 per pull. */
export const DEFAULT_PREFETCH_CONCURRENCY = 3;
/** Progress reports while an assignment runs, at most this often. */
export const DEFAULT_REPORT_INTERVAL_MS = 1_000;
/** Transient failures (origin unreachable, 5xx) of one blob are retried this often before the assignment fails. */
const MAX_ATTEMPTS = 3;
const RETRY_DELAY_MS = 500;
/** Finished assignments remembered (for reminders); the oldest beyond this are forgotten. */
const MAX_FINISHED_JOBS = 256;
/** Codes that another attempt may fix; the others (auth, not_found, store_full, …) fail the assignment at once. */
const RETRIABLE_CODES: ReadonlySet<string> = new Set(["unavailable", "failed"]);

/** The seam to the store: what ContentSeeder does, nothing more. */
export interface Seeder {
  storeManifest(digest: Digest, mediaType: string, body: Uint8Array, signal: AbortSignal): Promise<SeedResult>;
  fetchBlob(request: BlobRequest, signal: AbortSignal): Promise<SeedResult>;
}

export interface AgentPrefetcherOptions {
  readonly channel: PrefetchChannel;
  readonly seeder: Seeder;
  readonly logger: Logger;
  readonly metrics?: Pick<AgentMetrics, "prefetchBytes" | "prefetchAssignments">;
  readonly concurrency?: number;
  readonly reportIntervalMs?: number;
}

interface Job {
  readonly assignment: PrefetchAssignment;
  readonly controller: AbortController;
  report: PrefetchReport;
  running: Promise<void> | undefined;
}

/**
 * The agent's side of ImagePrefetch: takes assignments from the tracker session, puts their manifests
 * and blobs into the store through the Seeder (blobs through the swarm, so seeds in several zones share
 * one origin fetch), and reports progress back. An assignment sent again while it runs only asks for a
 * report; sent again after it finished, it runs again (fetching what was evicted meanwhile, and finding
 * the rest in the store). Cancels, the end of the session, and stop() abort the work; fetched pieces
 * stay in the store for the next attempt.
 */
export class AgentPrefetcher implements PrefetchHandler {
  private readonly jobs = new Map<string, Job>();
  private readonly concurrency: number;
  private readonly reportIntervalMs: number;
  private activeFetches = 0;
  private readonly fetchWaiters: (() => void)[] = [];
  private stopped = false;

  constructor(private readonly options: AgentPrefetcherOptions) {
    this.concurrency = Math.max(1, options.concurrency ?? DEFAULT_PREFETCH_CONCURRENCY);
    this.reportIntervalMs = options.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS;
  }

  /** Starts taking assignments from the channel. */
  start(): void {
    this.options.channel.setPrefetchHandler(this);
  }

  /** Ids of the assignments running now (tests, logs). */
  get running(): string[] {
    return [...this.jobs.values()].filter((j) => j.report.state === "running").map((j) => j.assignment.id);
  }

  onCommand(command: AgentCommand): void {
    if (this.stopped) return;
    if (command.kind === "prefetch-cancel") {
      this.cancel(command.id, "cancelled by the tracker");
      return;
    }
    const { assignment } = command;
    const existing = this.jobs.get(assignment.id);
    if (existing?.report.state === "running") {
      this.send(existing.report);
      return;
    }
    this.run(assignment);
  }

  onSessionLost(): void {
    for (const id of [...this.jobs.keys()]) this.cancel(id, "the tracker session ended");
  }

  /** Stops every assignment and waits for them to wind down. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.options.channel.setPrefetchHandler(undefined);
    const running = [...this.jobs.values()].flatMap((j) => (j.running === undefined ? [] : [j.running]));
    for (const id of [...this.jobs.keys()]) this.cancel(id, "the agent is stopping");
    await Promise.allSettled(running);
  }

  private cancel(id: string, why: string): void {
    const job = this.jobs.get(id);
    if (job === undefined) return;
    this.jobs.delete(id);
    if (job.report.state === "running") job.controller.abort(new PrefetchError("ERR_PREFETCH_CANCELLED", `prefetch ${id}: ${why}`));
  }

  private run(assignment: PrefetchAssignment): void {
    const itemsTotal = assignment.contents.reduce((n, c) => n + c.manifests.length + c.blobs.length, 0);
    const job: Job = {
      assignment,
      controller: new AbortController(),
      report: { id: assignment.id, state: "running", itemsDone: 0, itemsTotal, bytesFromOrigin: 0, bytesFromPeers: 0, bytesAlreadyHeld: 0 },
      running: undefined,
    };
    this.jobs.set(assignment.id, job);
    this.forgetOldJobs();
    job.running = this.work(job).catch((error: unknown) => {
      this.options.logger.error({ err: error, prefetch: assignment.id }, "prefetch ended unexpectedly");
    });
  }

  private async work(job: Job): Promise<void> {
    const { assignment, controller } = job;
    const signal = controller.signal;
    const log = this.options.logger.child({ prefetch: assignment.id });
    const startedAt = performance.now();
    log.info(
      { contents: assignment.contents.map((c) => `${c.registry}/${c.repository}`), items: job.report.itemsTotal },
      "prefetch started",
    );
    this.send(job.report);
    const timer = setInterval(() => {
      this.send(job.report);
    }, this.reportIntervalMs);
    timer.unref();
    try {
      for (const content of assignment.contents) {
        for (const manifest of content.manifests) {
          const result = await this.options.seeder.storeManifest(manifest.digest, manifest.mediaType, manifest.body, signal);
          this.count(job, result, false);
        }
      }
      const blobs = assignment.contents.flatMap((content) =>
        content.blobs.map((blob): BlobRequest => ({
          registry: content.registry,
          name: content.repository,
          digest: blob.digest,
          credentials: content.credentials,
        })),
      );
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < blobs.length) {
          const request = blobs[next++];
          if (request === undefined) continue;
          signal.throwIfAborted();
          this.count(job, await this.fetchWithRetries(request, signal, log), true);
        }
      };
      // Workers per assignment; the slots taken per fetch bound all assignments together.
      await Promise.all(Array.from({ length: Math.min(blobs.length, this.concurrency) }, worker));
      this.finish(job, { ...job.report, state: "done" });
      log.info(
        {
          seconds: (performance.now() - startedAt) / 1000,
          fromOrigin: job.report.bytesFromOrigin,
          fromPeers: job.report.bytesFromPeers,
          alreadyHeld: job.report.bytesAlreadyHeld,
        },
        "prefetch done",
      );
    } catch (error: unknown) {
      if (signal.aborted || isPrefetchError(error)) {
        this.options.metrics?.prefetchAssignments.inc({ result: "cancelled" });
        log.info({ reason: String(signal.reason instanceof Error ? signal.reason.message : signal.reason) }, "prefetch cancelled");
        return;
      }
      controller.abort(error);
      const code = seedErrorCode(error);
      const message = error instanceof Error ? error.message : String(error);
      this.finish(job, { ...job.report, state: "failed", error: { code, message } });
      log.warn({ err: error, code }, "prefetch failed");
    } finally {
      clearInterval(timer);
    }
  }

  private async fetchWithRetries(request: BlobRequest, signal: AbortSignal, log: Logger): Promise<SeedResult> {
    for (let attempt = 1; ; attempt++) {
      await this.acquireSlot(signal);
      try {
        return await this.options.seeder.fetchBlob(request, signal);
      } catch (error: unknown) {
        if (signal.aborted || attempt >= MAX_ATTEMPTS || !RETRIABLE_CODES.has(seedErrorCode(error))) throw error;
        log.warn({ err: error, digest: request.digest, attempt }, "prefetch of a blob failed; retrying");
      } finally {
        this.releaseSlot();
      }
      await sleep(RETRY_DELAY_MS * attempt, undefined, { signal });
    }
  }

  private count(job: Job, result: SeedResult, blob: boolean): void {
    const r = job.report;
    job.report = {
      ...r,
      itemsDone: r.itemsDone + 1,
      bytesFromOrigin: r.bytesFromOrigin + (blob && result.source === "origin" ? result.bytes : 0),
      bytesFromPeers: r.bytesFromPeers + (blob && result.source === "peer" ? result.bytes : 0),
      bytesAlreadyHeld: r.bytesAlreadyHeld + (blob && result.source === "local" ? result.bytes : 0),
    };
    if (blob) this.options.metrics?.prefetchBytes.inc({ source: result.source }, result.bytes);
  }

  private finish(job: Job, report: PrefetchReport): void {
    job.report = report;
    this.options.metrics?.prefetchAssignments.inc({ result: report.state });
    // A cancel that raced with the end removed the job: nobody waits for this report.
    if (this.jobs.get(report.id) === job) this.send(report);
  }

  private send(report: PrefetchReport): void {
    try {
      this.options.channel.reportPrefetch(report);
    } catch (error: unknown) {
      this.options.logger.warn({ err: error, prefetch: report.id }, "prefetch report not sent");
    }
  }

  private async acquireSlot(signal: AbortSignal): Promise<void> {
    while (this.activeFetches >= this.concurrency) {
      signal.throwIfAborted();
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          signal.removeEventListener("abort", wake);
          resolve();
        };
        this.fetchWaiters.push(wake);
        signal.addEventListener("abort", wake, { once: true });
      });
    }
    signal.throwIfAborted();
    this.activeFetches++;
  }

  private releaseSlot(): void {
    this.activeFetches--;
    // All of them: a waiter whose assignment was cancelled meanwhile must not swallow the wake-up.
    for (const wake of this.fetchWaiters.splice(0)) wake();
  }

  private forgetOldJobs(): void {
    for (const [id, job] of this.jobs) {
      if (this.jobs.size <= MAX_FINISHED_JOBS) return;
      if (job.report.state !== "running") this.jobs.delete(id);
    }
  }
}
