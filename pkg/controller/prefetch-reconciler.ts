import type { KubeConfig, V1Node } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { type EventRecorder, type Informer, type InformerEvent, keyOf } from "../k8s/index.js";
import type { ControllerMetrics } from "../metrics/index.js";
import type { MemoryTracker, TrackerEvent } from "../tracker/index.js";
import type { PullSecretReader } from "./prefetch-pull-secrets.js";
import type { PrefetchResolver } from "./prefetch-resolver.js";
import { InvalidSpec, type PrefetchSpec, parsePrefetchSpec } from "./prefetch-spec.js";
import { PrefetchPublisher, STATUS_INTERVAL_MS } from "./prefetch-publisher.js";
import { PrefetchSeeder } from "./prefetch-seeding.js";
import { type ConditionDecision, type SeedView, withCondition } from "./prefetch-status.js";
import type { ImagePrefetchObject } from "./prefetch-types.js";
import { type PrefetchWork, newWork, resolveWork } from "./prefetch-work.js";

/** First wait before a failed resolution or seed is tried again; doubles up to the maximum. */
export const PREFETCH_RETRY_INITIAL_MS = 10_000;
export const PREFETCH_RETRY_MAX_MS = 300_000;
/** Resolving every image of one resource (manifests only) gets this long. */
const RESOLVE_TIMEOUT_MS = 60_000;
/** Changes arriving within this long are handled in one pass. */
const COALESCE_MS = 20;
/** setTimeout's limit; a later wake-up simply wakes early and waits again. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface PrefetchReconcilerOptions {
  readonly kubeConfig: KubeConfig;
  readonly prefetches: Informer<ImagePrefetchObject>;
  readonly nodes: Informer<V1Node>;
  readonly tracker: MemoryTracker;
  readonly resolver: PrefetchResolver;
  readonly secrets: PullSecretReader;
  readonly recorder: EventRecorder;
  readonly metrics?: ControllerMetrics | undefined;
  readonly logger: Logger;
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
  readonly statusIntervalMs?: number;
  /** How long a seed may stay silent after its assignment (REPORT_DEADLINE_MS, prefetch-seeding.ts). */
  readonly reportDeadlineMs?: number;
  /** Wall clock (Unix ms) for status times and schedules. */
  readonly now?: () => number;
}

/**
 * Reconciles ImagePrefetch resources on the leader: resolves each generation's references once (tags to
 * digests, indexes to the wanted platforms, manifests to their blobs; with the resource's pull secrets),
 * picks seeds per zone (or every node a selector matches) among the agents with a tracker session, sends
 * them the assignment over their session, and follows them through the tracker: a seed is seeded when
 * its agent has announced every manifest and blob complete. Agents that join later, are replaced, or
 * lose content are assigned again; a deleted resource (or a new generation) cancels the assignments.
 * The status carries what a new leader needs to continue: the resolved digests, the seeds and their byte
 * counts. Followers only keep their informer warm.
 */
export class PrefetchReconciler {
  private readonly publisher: PrefetchPublisher;
  /** Seeds, assignments and reports (prefetch-seeding.ts). */
  private readonly seeder: PrefetchSeeder;
  private readonly works = new Map<string, PrefetchWork>();
  private readonly queue = new Set<string>();
  private readonly unsubscribe: (() => void)[];
  private readonly now: () => number;
  private leading = false;
  private stopped = false;
  private drainTimer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;

  constructor(private readonly options: PrefetchReconcilerOptions) {
    this.now = options.now ?? Date.now;
    this.publisher = new PrefetchPublisher({
      kubeConfig: options.kubeConfig,
      recorder: options.recorder,
      metrics: options.metrics,
      logger: options.logger,
      statusIntervalMs: options.statusIntervalMs ?? STATUS_INTERVAL_MS,
      now: this.now,
      retryMs: () => this.backoff(1),
    });
    this.seeder = new PrefetchSeeder({
      tracker: options.tracker,
      nodes: options.nodes,
      logger: options.logger,
      ...(options.reportDeadlineMs === undefined ? {} : { reportDeadlineMs: options.reportDeadlineMs }),
      now: this.now,
      iso: () => this.iso(),
      backoff: (attempts) => this.backoff(attempts),
      wakeAt: (work, atMs) => {
        this.wakeAt(work, atMs);
      },
      enqueue: (key) => {
        this.enqueue(key);
      },
    });
    this.unsubscribe = [
      options.prefetches.on((event) => {
        this.onPrefetch(event);
      }),
      options.nodes.on(() => {
        this.enqueueAll();
      }),
      options.tracker.subscribe((event) => {
        this.onTracker(event);
      }),
    ];
  }

  /** This replica leads now: take up every ImagePrefetch (continuing from what their status says). */
  startLeading(): void {
    if (this.stopped) return;
    this.leading = true;
    this.enqueueAll();
  }

  /** Another replica leads: drop all work (the sessions, and with them the agents' assignments, end too). */
  stopLeading(): void {
    this.leading = false;
    for (const work of this.works.values()) this.forget(work);
    this.works.clear();
    this.queue.clear();
    this.publisher.updateMetrics(this.works.values());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const off of this.unsubscribe) off();
    this.stopLeading();
    clearTimeout(this.drainTimer);
    await this.draining;
  }

  // ---- events ------------------------------------------------------------------------------

  private onPrefetch(event: InformerEvent<ImagePrefetchObject>): void {
    const key = keyOf(event.object);
    if (key !== undefined) this.enqueue(key);
  }

  private onTracker(event: TrackerEvent): void {
    if (!this.leading) return;
    switch (event.type) {
      case "registered":
        this.enqueueAll();
        return;
      case "disconnected":
        for (const work of this.works.values()) work.assigned.delete(event.agentId);
        this.enqueueAll();
        return;
      case "holding":
        for (const work of this.works.values()) if (work.digests.has(event.digest)) this.enqueue(work.key);
        return;
      case "prefetch-report":
        for (const work of this.works.values())
          if (work.assignment?.id === event.report.id) this.seeder.report(work, event.agentId, event.report);
        return;
    }
  }

  private enqueueAll(): void {
    for (const object of this.options.prefetches.list()) {
      const key = keyOf(object);
      if (key !== undefined) this.enqueue(key);
    }
    for (const key of this.works.keys()) this.enqueue(key);
  }

  private enqueue(key: string): void {
    if (!this.leading || this.stopped) return;
    this.queue.add(key);
    this.drainTimer ??= setTimeout(() => {
      this.drainTimer = undefined;
      this.draining ??= this.drain().finally(() => {
        this.draining = undefined;
        if (this.queue.size > 0) this.enqueue([...this.queue][0] ?? "");
      });
    }, COALESCE_MS);
  }

  private async drain(): Promise<void> {
    for (let key = this.queue.values().next(); !key.done; key = this.queue.values().next()) {
      this.queue.delete(key.value);
      if (!this.leading) return;
      try {
        await this.reconcile(key.value);
      } catch (error: unknown) {
        this.options.logger.error({ err: error, prefetch: key.value }, "reconcile failed");
      }
    }
  }

  // ---- reconcile ---------------------------------------------------------------------------

  private async reconcile(key: string): Promise<void> {
    const object = this.options.prefetches.get(key);
    let work = this.works.get(key);
    if (object === undefined || object.metadata?.deletionTimestamp !== undefined) {
      if (work !== undefined) {
        this.options.logger.info({ prefetch: key }, "ImagePrefetch deleted: stopping its work");
        this.seeder.cancelAll(work);
        this.forget(work);
        this.works.delete(key);
        this.publisher.updateMetrics(this.works.values());
      }
      return;
    }
    const generation = object.metadata?.generation ?? 1;
    if (work !== undefined && (work.uid !== object.metadata?.uid || work.generation !== generation)) {
      this.seeder.cancelAll(work);
      this.forget(work);
      work = undefined;
    }
    if (work === undefined) {
      let spec: PrefetchSpec | undefined;
      let specError: string | undefined;
      try {
        spec = parsePrefetchSpec(object.spec);
      } catch (error: unknown) {
        if (!(error instanceof InvalidSpec)) throw error;
        specError = error.message;
      }
      work = newWork(object, key, spec, specError, this.iso());
      this.works.set(key, work);
    }
    await this.step(object, work);
    this.publisher.updateMetrics(this.works.values());
  }

  private async step(object: ImagePrefetchObject, work: PrefetchWork): Promise<void> {
    const spec = work.spec;
    if (spec === undefined) {
      work.failure = { reason: "InvalidSpec", message: work.specError ?? "invalid spec" };
      this.setConditions(
        work,
        { status: "False", reason: "InvalidSpec", message: work.failure.message },
        { status: "False", reason: "InvalidSpec", message: work.failure.message },
      );
      await this.publish(object, work, []);
      return;
    }
    const now = this.now();
    if (spec.startAtMs !== undefined && now < spec.startAtMs) {
      this.wakeAt(work, spec.startAtMs);
      this.setConditions(
        work,
        { status: "Unknown", reason: "Scheduled", message: `resolution starts at ${new Date(spec.startAtMs).toISOString()}` },
        { status: "False", reason: "Scheduled", message: `prefetch starts at ${new Date(spec.startAtMs).toISOString()}` },
      );
      await this.publish(object, work, []);
      return;
    }
    if (spec.ttlMs !== undefined) {
      const created = object.metadata?.creationTimestamp;
      const expiresAt = (spec.startAtMs ?? (created === undefined ? now : Date.parse(String(created)))) + spec.ttlMs;
      if (now >= expiresAt) {
        await this.expire(object, work);
        return;
      }
      this.wakeAt(work, expiresAt);
    }
    if (work.images === undefined) {
      if (work.resolving === undefined && now >= work.retryAtMs) this.resolve(work, spec);
      if (work.failure === undefined) {
        this.setConditions(
          work,
          { status: "Unknown", reason: "Resolving", message: "resolving the image references" },
          { status: "False", reason: "Resolving", message: "resolving the image references" },
        );
      } else {
        // Every pass asks again: wakeAt keeps one timer, the earliest asked for.
        if (work.resolving === undefined) this.wakeAt(work, work.retryAtMs);
        const retry = `; retrying at ${new Date(work.retryAtMs).toISOString()}`;
        this.setConditions(
          work,
          { status: "False", reason: work.failure.reason, message: work.failure.message + retry },
          { status: "False", reason: work.failure.reason, message: work.failure.message },
        );
      }
      await this.publish(object, work, []);
      return;
    }
    await this.publish(object, work, this.seeder.seed(work, spec));
  }

  /** Resolves every image in the background; on failure waits for the retry, then reconciles again. */
  private resolve(work: PrefetchWork, spec: PrefetchSpec): void {
    void resolveWork(work, spec, {
      secrets: this.options.secrets,
      resolver: this.options.resolver,
      logger: this.options.logger,
      timeoutMs: RESOLVE_TIMEOUT_MS,
    }).then((outcome) => {
      if (outcome === "aborted") return;
      if (outcome === "failed") {
        work.attempts++;
        work.retryAtMs = this.now() + this.backoff(work.attempts);
        this.wakeAt(work, work.retryAtMs);
      }
      this.enqueue(work.key);
    });
  }

  private setConditions(work: PrefetchWork, resolved: ConditionDecision, ready: ConditionDecision): void {
    const now = this.iso();
    work.conditions = withCondition(work.conditions, "Resolved", resolved, now, work.generation);
    work.conditions = withCondition(work.conditions, "Ready", ready, now, work.generation);
    const failed: ConditionDecision =
      work.failure === undefined
        ? { status: "False", reason: "NoFailure", message: "" }
        : { status: "True", reason: work.failure.reason, message: work.failure.message };
    work.conditions = withCondition(work.conditions, "Failed", failed, now, work.generation);
  }

  private async publish(object: ImagePrefetchObject, work: PrefetchWork, seeds: SeedView[]): Promise<void> {
    const wake = await this.publisher.publish(object, work, seeds);
    if (wake !== undefined) this.wakeAt(work, wake);
  }

  private async expire(object: ImagePrefetchObject, work: PrefetchWork): Promise<void> {
    const wake = await this.publisher.expire(object, work);
    if (wake !== undefined) this.wakeAt(work, wake);
  }

  // ---- helpers ------------------------------------------------------------------------------

  private forget(work: PrefetchWork): void {
    work.resolving?.abort();
    clearTimeout(work.timer);
    work.timer = undefined;
  }

  /** Reconciles this work again at `atMs` (the earliest of the wake-ups asked for). */
  private wakeAt(work: PrefetchWork, atMs: number): void {
    if (work.timer !== undefined && work.timerAtMs <= atMs) return;
    clearTimeout(work.timer);
    const timer = setTimeout(
      () => {
        if (work.timer === timer) work.timer = undefined;
        this.enqueue(work.key);
      },
      Math.min(Math.max(0, atMs - this.now()), MAX_TIMER_MS),
    );
    timer.unref();
    work.timer = timer;
    work.timerAtMs = atMs;
  }

  private backoff(attempts: number): number {
    const initial = this.options.retryInitialMs ?? PREFETCH_RETRY_INITIAL_MS;
    return Math.min(initial * 2 ** Math.max(0, attempts - 1), this.options.retryMaxMs ?? PREFETCH_RETRY_MAX_MS);
  }

  private iso(): string {
    return new Date(this.now()).toISOString().replace(/\.\d+Z$/, "Z");
  }
}
