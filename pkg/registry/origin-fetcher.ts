import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { AgentMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import { type BlobStore, isStoreError, type PartialBlob } from "../store/index.js";
import { choosePieceSize } from "../piece/index.js";
import { type BlobFetcher, type BlobLease, type BlobRequest } from "./blob-fetcher.js";
import { CoalescingWriter } from "./coalescing-writer.js";
import { RegistryError, isTransientUpstreamError } from "./errors.js";
import { type UpstreamClient, type UpstreamResponse, header, toUpstreamError } from "./upstream/upstream-client.js";
import { raceSignal } from "../util/index.js";
import { MAX_STARVED_CUTS, type TransferAttempt, TransferWatch, isStarvedError } from "./transfer-watch.js";

/** How often a transfer that failed mid-stream is resumed with a Range request before giving up. */
export const MAX_RESUMES = 3;
/**
 * A network failure (refused, reset, unreachable, timed out, cut short) is retried for this long without a
 * byte of progress, beyond MAX_RESUMES: a node whose network blips for a few seconds finishes its pulls
 * instead of failing them. Readers' own deadlines still apply.
 */
export const NETWORK_RETRY_WINDOW_MS = 15_000;
/**
 * How long the origin's bytes may wait for more before they are written, while less than a MiB is queued
 * (CoalescingWriterOptions.lingerMs). A slow link delivers small reads far apart; written one by one, each
 * paid a store write, a round trip to the hash worker and a wake-up of every reader. In `npm start` with 2
 * nodes at 100 Mbit/s an agent's writes grew from 67 KB to 135–190 KB on average, and its CPU per GB fell by
 * 7–16 % (docs/benchmarks.md, "December 5 (afternoon)"). A fast origin fills a MiB sooner and is not held
 * back; the last bytes are written at once (flush).
 */
export const ORIGIN_WRITE_LINGER_MS = 20;
const RESUME_DELAY_MS = 200;
const MAX_RESUME_DELAY_MS = 2_000;

/** A failure of the network path to the origin, not an answer from it. */
function isNetworkFailure(error: unknown): boolean {
  return error instanceof RegistryError && ["ERR_UPSTREAM_NETWORK", "ERR_UPSTREAM_TIMEOUT", "ERR_UPSTREAM_TRUNCATED"].includes(error.code);
}

/** Whether attempt `attempt` (1-based) after a failure may go ahead, and after how long. */
function retryDelayMs(error: unknown, attempt: number, stuckSinceMs: number): number | undefined {
  if (!isTransientUpstreamError(error)) return undefined;
  if (attempt > MAX_RESUMES && !(isNetworkFailure(error) && performance.now() - stuckSinceMs < NETWORK_RETRY_WINDOW_MS)) return undefined;
  return Math.min(RESUME_DELAY_MS * attempt, MAX_RESUME_DELAY_MS);
}

export interface OriginFetcherOptions {
  readonly store: BlobStore;
  readonly upstream: UpstreamClient;
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
}

/** How often one fetch's transfers were cut as starved (at most MAX_STARVED_CUTS). */
interface StarvedCuts {
  count: number;
}

/** An upstream blob response, the blob offset its body starts at, and its attempt as the TransferWatch sees it. */
type OffsetResponse = UpstreamResponse & { readonly offset: number; readonly attempt: TransferAttempt };

interface Flight {
  readonly controller: AbortController;
  /** Resolves when the partial exists and bytes are flowing. */
  readonly started: Promise<{ partial: PartialBlob; contentType: string | undefined }>;
  leases: number;
}

/**
 * Fetches blobs from their origin registry into the store, one transfer per digest however many
 * requests want it; readers tail the partial blob while it fills. A transfer that breaks mid-stream
 * resumes with `Range` from the first byte it lacks; one that no reader wants any more stops and keeps
 * its pieces for the next attempt.
 */
export class OriginFetcher implements BlobFetcher {
  private readonly flights = new Map<Digest, Flight>();
  /** Cuts transfers starved beside others from the same registry, to be resumed on a new connection. */
  private readonly watch = new TransferWatch();

  constructor(private readonly options: OriginFetcherOptions) {}

  async acquire(request: BlobRequest, signal: AbortSignal): Promise<BlobLease> {
    signal.throwIfAborted();
    let flight = this.flights.get(request.digest);
    if (flight === undefined) {
      flight = this.start(request);
    }
    const current = flight;
    current.leases++;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      current.leases--;
      if (current.leases === 0 && this.flights.get(request.digest) === current) {
        current.controller.abort(new Error("no reader wants this blob any more"));
      }
    };
    try {
      const { partial, contentType } = await raceSignal(current.started, signal);
      return { partial, source: "origin", contentType, release };
    } catch (error) {
      release();
      throw error;
    }
  }

  async close(): Promise<void> {
    const flights = [...this.flights.values()];
    for (const flight of flights) flight.controller.abort(new Error("agent shutting down"));
    await Promise.allSettled(flights.map((f) => f.started));
  }

  private start(request: BlobRequest): Flight {
    const controller = new AbortController();
    // Starved transfers cut (TransferWatch) over the whole fetch, its first request included.
    const cuts: StarvedCuts = { count: 0 };
    const opened = this.open(request, controller.signal, cuts);
    const started = opened.then(({ partial, contentType }) => ({ partial, contentType }));
    // A failed start is reported to every acquirer; this handler only prevents an unhandled rejection.
    started.catch(() => undefined);
    const flight: Flight = { controller, started, leases: 0 };
    this.flights.set(request.digest, flight);
    this.options.metrics.inflightFetches.inc();
    const finish = (): void => {
      if (this.flights.get(request.digest) === flight) this.flights.delete(request.digest);
      this.options.metrics.inflightFetches.dec();
    };
    opened.then(({ partial, response }) => this.pump(request, partial, response, controller.signal, cuts).finally(finish), finish);
    return flight;
  }

  /** Opens (or resumes) the partial and starts the upstream response that fills it. */
  private async open(
    request: BlobRequest,
    signal: AbortSignal,
    cuts: StarvedCuts,
  ): Promise<{ partial: PartialBlob; contentType: string | undefined; response: OffsetResponse }> {
    const { store } = this.options;
    const persisted = (await store.listPartials()).find((p) => p.digest === request.digest);
    let partial: PartialBlob | undefined;
    if (persisted !== undefined) {
      partial = await store.openPartial(request.digest, persisted.size, { pieceSize: persisted.pieceSize, sequential: true });
    }
    const response = await this.requestWithRetries(request, partial?.appendOffset ?? 0, signal, cuts);
    const contentType = header(response.headers, "content-type");
    if (partial === undefined) {
      const size = Number(header(response.headers, "content-length"));
      if (!Number.isSafeInteger(size) || size < 0) {
        response.body.destroy();
        throw new RegistryError("ERR_UPSTREAM_PROTOCOL", `${request.registry} sent ${request.digest} without a Content-Length`);
      }
      try {
        partial = await store.openPartial(request.digest, size, {
          pieceSize: choosePieceSize(size),
          sequential: true,
          ...(contentType !== undefined && contentType !== "application/octet-stream" ? { mediaType: contentType } : {}),
        });
      } catch (error) {
        response.body.destroy();
        throw error;
      }
    }
    return { partial, contentType: contentType ?? partial.mediaType, response };
  }

  private async pump(
    request: BlobRequest,
    partial: PartialBlob,
    first: OffsetResponse,
    signal: AbortSignal,
    cuts: StarvedCuts,
  ): Promise<void> {
    const { metrics, logger } = this.options;
    const log = logger.child({ digest: request.digest, registry: request.registry });
    let response: OffsetResponse | undefined = first;
    let resumes = 0;
    // Progress resets the retry budget: what counts is how long the transfer has been stuck.
    let stuckSinceMs = performance.now();
    let progressOffset = partial.appendOffset;
    let writer: CoalescingWriter | undefined;
    for (;;) {
      try {
        if (response === undefined) response = await this.requestBlob(request, partial.appendOffset, signal, cuts);
        // Bytes of a 200 start at 0 (the upstream ignored our Range); already-held pieces are skipped by
        // append. The stream keeps its own position: appendOffset may jump past pieces peers delivered.
        let position = response.status === 206 ? response.offset : 0;
        writer = new CoalescingWriter(
          (data) => {
            const at = position;
            position += data.length;
            if (position > partial.size)
              throw new RegistryError("ERR_UPSTREAM_PROTOCOL", `${request.registry} sent more bytes than ${request.digest} has`);
            return partial.append(data, at);
          },
          { lingerMs: ORIGIN_WRITE_LINGER_MS },
        );
        const attempt = response.attempt;
        for await (const chunk of response.body as AsyncIterable<Buffer>) {
          attempt.progress(chunk.length);
          metrics.originBytesFetched.inc(chunk.length);
          await writer.push(chunk);
        }
        await writer.flush();
        if (position < partial.size) {
          throw new RegistryError(
            "ERR_UPSTREAM_TRUNCATED",
            `${request.registry} ended ${request.digest} at ${position} of ${partial.size} bytes`,
          );
        }
        await partial.commit();
        log.debug({ size: partial.size, resumes }, "blob fetched from origin");
        return;
      } catch (caught) {
        // What still waits to be written is dropped: the next attempt starts from what was written.
        writer?.discard();
        writer = undefined;
        // Socket errors and body timeouts surface from the body iterator as undici errors.
        const error =
          response?.attempt.starved === true
            ? response.attempt.error
            : caught instanceof RegistryError || isStoreError(caught) || response === undefined
              ? caught
              : toUpstreamError(response.url, caught);
        response?.body.destroy();
        response = undefined;
        if (signal.aborted) {
          await partial.abort(signal.reason instanceof Error ? signal.reason : new Error("aborted"), { keepData: true });
          return;
        }
        if (isStoreError(error, "ERR_STORE_DIGEST_MISMATCH")) {
          // commit() already discarded the data; readers were failed with the mismatch.
          metrics.digestMismatches.inc({ source: "origin" });
          metrics.upstreamErrors.inc({ reason: "digest_mismatch" });
          log.error({ err: error }, "origin sent content that does not match its digest; discarded");
          return;
        }
        metrics.upstreamErrors.inc({ reason: upstreamErrorReason(error) });
        if (isStarvedError(error)) cuts.count++;
        if (partial.appendOffset > progressOffset) {
          progressOffset = partial.appendOffset;
          stuckSinceMs = performance.now();
          resumes = 0;
        }
        const delayMs = retryDelayMs(error, resumes + 1, stuckSinceMs);
        if (delayMs !== undefined) {
          resumes++;
          metrics.upstreamRetries.inc();
          log.warn({ err: error, offset: partial.appendOffset, resumes }, "origin transfer broke; resuming");
          await sleep(delayMs, undefined, { signal }).catch(() => undefined);
          continue;
        }
        log.error({ err: error, offset: partial.appendOffset }, "origin transfer failed");
        await partial.abort(error instanceof Error ? error : new Error(String(error)), { keepData: !isStoreError(error) });
        return;
      }
    }
  }

  /** requestBlob, retried on network failures for NETWORK_RETRY_WINDOW_MS (a network blip at the start). */
  private async requestWithRetries(request: BlobRequest, offset: number, signal: AbortSignal, cuts: StarvedCuts): Promise<OffsetResponse> {
    const stuckSinceMs = performance.now();
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.requestBlob(request, offset, signal, cuts);
      } catch (error) {
        if (isStarvedError(error)) cuts.count++;
        // Only the network: an answer of the origin's (429, 5xx) goes to the client as it is, promptly.
        const delayMs = signal.aborted || !isNetworkFailure(error) ? undefined : retryDelayMs(error, attempt, stuckSinceMs);
        if (delayMs === undefined) throw error;
        this.options.metrics.upstreamRetries.inc();
        this.options.logger.warn({ err: error, digest: request.digest, attempt }, "origin request failed; retrying");
        await sleep(delayMs, undefined, { signal }).catch(() => undefined);
      }
    }
  }

  /** One request for the blob (from `offset`), watched until its body closes (TransferWatch). */
  private async requestBlob(request: BlobRequest, offset: number, signal: AbortSignal, cuts: StarvedCuts): Promise<OffsetResponse> {
    const attempt = this.watch.begin(request.registry, cuts.count < MAX_STARVED_CUTS);
    let response: UpstreamResponse;
    try {
      response = await this.options.upstream.request(request.registry, {
        method: "GET",
        path: `/v2/${request.name}/blobs/${request.digest}`,
        name: request.name,
        headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
        signal: AbortSignal.any([signal, attempt.signal]),
        credentials: request.credentials,
      });
    } catch (error) {
      attempt.end();
      // Cut by the watch: a timeout, resumed like any network failure (not the flight's own abort).
      throw attempt.starved && !signal.aborted ? attempt.error : error;
    }
    response.body.once("close", () => {
      attempt.end();
    });
    if (response.status === 200) return { ...response, offset: 0, attempt };
    if (response.status === 206 && offset > 0) {
      const start = /^bytes (\d+)-/.exec(header(response.headers, "content-range") ?? "")?.[1];
      if (Number(start) === offset) return { ...response, offset, attempt };
      response.body.destroy();
      throw new RegistryError(
        "ERR_UPSTREAM_PROTOCOL",
        `${request.registry} answered a Range request for ${request.digest} with another range`,
      );
    }
    response.body.destroy();
    throw statusError(request.registry, `blob ${request.digest}`, response.status);
  }
}

export function statusError(registry: string, what: string, status: number): RegistryError {
  if (status === 404) return new RegistryError("ERR_UPSTREAM_NOT_FOUND", `${registry} has no ${what}`, { status });
  if (status === 429) return new RegistryError("ERR_UPSTREAM_TOO_MANY_REQUESTS", `${registry} is rate-limiting requests`, { status });
  return new RegistryError("ERR_UPSTREAM_STATUS", `${registry} answered HTTP ${status} for ${what}`, { status });
}

export function upstreamErrorReason(error: unknown): string {
  if (!(error instanceof RegistryError)) return isStoreError(error) ? "store" : "network";
  switch (error.code) {
    case "ERR_UPSTREAM_TIMEOUT":
      return "timeout";
    case "ERR_UPSTREAM_TRUNCATED":
      return "truncated";
    case "ERR_UPSTREAM_AUTH":
      return "auth";
    case "ERR_UPSTREAM_NOT_FOUND":
      return "not_found";
    case "ERR_UPSTREAM_STATUS":
    case "ERR_UPSTREAM_TOO_MANY_REQUESTS":
      return "status";
    case "ERR_DIGEST_MISMATCH":
      return "digest_mismatch";
    default:
      return "protocol";
  }
}
