import type { IncomingMessage, ServerResponse } from "node:http";
import { type Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "pino";
import type { AgentMetrics, RequestKind, ServeSource } from "../metrics/index.js";
import { type ByteRange, type MirrorRoute, OciError, parseMirrorPath, parseRangeHeader } from "../oci/index.js";
import { type BlobStore, isStoreError, type PartialBlob, recycleReadChunk, type TagStore } from "../store/index.js";
import type { BlobFetcher } from "./blob-fetcher.js";
import { RegistryError } from "./errors.js";
import type { ManifestPeers } from "./manifest-peers.js";
import { type ClusterTags, ManifestResolver } from "./manifests.js";
import { toOciErrorResponse, writeOciError } from "./oci-errors.js";
import { statusError } from "./origin-fetcher.js";
import { type UpstreamClient, header } from "./upstream/upstream-client.js";
import { DescriptorSizes } from "./descriptor-sizes.js";
import { raceSignal } from "../util/index.js";
import { StartDeadline } from "./start-deadline.js";

/** containerd waits for a mirror indefinitely; this bounds how long a response may take to start. */
export const DEFAULT_RESPONSE_START_TIMEOUT_MS = 10_000;
/** While waiting for a response's first piece, how often the blob's progress is looked at. */
const START_PROGRESS_CHECK_MS = 250;
/**
 * While the first piece is awaited, the swarm's progress on the blob (a holder gaining pieces, a peer sending
 * bytes: BlobLease.progressAtMs) holds the runtime back like a piece here would, but only up to this many
 * response-start timeouts after this node's last piece (or the request): it is what peers claim, and a peer
 * that announces growth it never serves must not keep the runtime waiting for long (30 s with the defaults).
 * Before that, while the fetcher is still choosing a source, each sign that one is under way (another agent
 * holds the origin grant, the fetch from the origin begins: BlobRequest.onSourceProgress) moves the deadline
 * to a start timeout from then, up to this many start timeouts after the request.
 */
export const SWARM_PROGRESS_START_TIMEOUTS = 3;
export const DEFAULT_RESPONSE_STALL_TIMEOUT_MS = 60_000;
/** How often a running blob response checks that bytes still come. */
const STREAM_WATCHDOG_INTERVAL_MS = 1_000;

export interface MirrorOptions {
  readonly store: BlobStore;
  readonly tags: TagStore;
  readonly upstream: UpstreamClient;
  readonly fetcher: BlobFetcher;
  /** Other agents, asked for manifests by digest before the origin. */
  readonly manifestPeers?: ManifestPeers | undefined;
  /** The tracker's tag records, for pulls by tag while the upstream is down. */
  readonly clusterTags?: ClusterTags | undefined;
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
  /** Registry for requests that name none (no `?ns=`, no registry path segment). */
  readonly defaultRegistry?: string | undefined;
  readonly responseStartTimeoutMs?: number;
  /** A started blob response with nothing to send for this long is cut. */
  readonly responseStallTimeoutMs?: number;
}

type Route = Exclude<MirrorRoute, { kind: "base" }>;

/** The pull-only OCI distribution endpoint of the agent. */
export class Mirror {
  private readonly manifests: ManifestResolver;
  /** Sizes of the blobs the manifests this mirror served name: a fetch believes no other size from peers. */
  private readonly sizes = new DescriptorSizes();
  private readonly startTimeoutMs: number;
  private readonly streamStallTimeoutMs: number;

  constructor(private readonly options: MirrorOptions) {
    this.manifests = new ManifestResolver({ ...options, descriptorSizes: this.sizes });
    this.startTimeoutMs = options.responseStartTimeoutMs ?? DEFAULT_RESPONSE_START_TIMEOUT_MS;
    this.streamStallTimeoutMs = options.responseStallTimeoutMs ?? DEFAULT_RESPONSE_STALL_TIMEOUT_MS;
  }

  /** Node `request` listener. Never throws; every failure becomes an OCI error response or a destroyed stream. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    const startedAt = performance.now();
    const controller = new AbortController();
    res.once("close", () => {
      controller.abort(new Error("client went away"));
    });
    let kind: RequestKind = "base";
    let source: ServeSource | "none" = "none";
    res.once("close", () => {
      this.options.metrics.requests.inc({ kind, source, code: String(res.statusCode) });
      this.options.metrics.requestDuration.observe({ kind, source }, (performance.now() - startedAt) / 1000);
    });
    const run = async (): Promise<void> => {
      if (req.method !== "GET" && req.method !== "HEAD") {
        writeOciError(
          res,
          { status: 405, code: "UNSUPPORTED", message: "this mirror is pull-only: GET and HEAD" },
          { allow: "GET, HEAD", connection: "close" },
        );
        return;
      }
      const url = new URL(req.url ?? "/", "http://mirror.invalid");
      const route = parseMirrorPath(url.pathname, url.searchParams.get("ns"));
      if (route.kind === "base") {
        res.writeHead(200, { "content-type": "application/json", "content-length": 2, "docker-distribution-api-version": "registry/2.0" });
        res.end(req.method === "HEAD" ? undefined : "{}");
        return;
      }
      kind = route.kind;
      const registry = route.registry ?? this.options.defaultRegistry;
      if (registry === undefined) {
        throw new RegistryError(
          "ERR_REGISTRY_UNNAMED",
          "no registry named: use ?ns=<registry> or /v2/<registry>/<name>/..., or configure a default upstream",
        );
      }
      if (!this.options.upstream.knows(registry))
        throw new RegistryError("ERR_REGISTRY_UNKNOWN", `registry ${registry} is not mirrored by this agent`);
      const started = (s: ServeSource): void => {
        source = s;
        this.options.metrics.timeToFirstByte.observe({ kind, source: s }, (performance.now() - startedAt) / 1000);
      };
      const start = new StartDeadline(this.startTimeoutMs, SWARM_PROGRESS_START_TIMEOUTS * this.startTimeoutMs);
      const deadline = AbortSignal.any([controller.signal, start.signal]);
      try {
        if (route.kind === "manifest") await this.serveManifest(route, registry, req, res, deadline, controller.signal, started);
        else
          await this.serveBlob(
            route,
            registry,
            req,
            res,
            {
              deadline,
              progress: () => {
                start.progress();
              },
            },
            controller.signal,
            started,
          );
      } finally {
        start.dispose();
      }
    };
    run().catch((error: unknown) => {
      this.fail(req, res, kind, error, controller.signal);
    });
  };

  private async serveManifest(
    route: Extract<Route, { kind: "manifest" }>,
    registry: string,
    req: IncomingMessage,
    res: ServerResponse,
    deadline: AbortSignal,
    signal: AbortSignal,
    started: (source: ServeSource) => void,
  ): Promise<void> {
    const resolved = await this.withDeadline(deadline, () =>
      this.manifests.resolve({
        registry,
        name: route.name,
        reference: route.reference,
        accept: req.headers.accept,
        method: req.method === "HEAD" ? "HEAD" : "GET",
        signal: deadline,
      }),
    );
    const head = req.method === "HEAD";
    const common = { "docker-distribution-api-version": "registry/2.0" };
    if (resolved.kind === "headers") {
      res.writeHead(200, {
        ...common,
        "content-type": resolved.mediaType,
        "content-length": resolved.size,
        "docker-content-digest": resolved.digest,
      });
      started("origin");
      res.end();
      return;
    }
    const staleWarning = { warning: '110 shoal "upstream unreachable: last digest seen for this tag"' };
    if (resolved.kind === "body") {
      res.writeHead(200, {
        ...common,
        "content-type": resolved.mediaType,
        "content-length": resolved.body.length,
        "docker-content-digest": resolved.digest,
        ...(resolved.stale === true ? staleWarning : {}),
      });
      started(resolved.source);
      if (!head) this.options.metrics.blobBytesServed.inc({ source: resolved.source }, resolved.body.length);
      res.end(head ? undefined : resolved.body);
      return;
    }
    const { info } = resolved;
    const stream = head ? undefined : await this.options.store.createReadStream(info.digest, { signal });
    res.writeHead(200, {
      ...common,
      "content-type": info.mediaType,
      "content-length": info.size,
      "docker-content-digest": info.digest,
      ...(resolved.stale ? staleWarning : {}),
    });
    started(resolved.source);
    if (stream) await this.send(stream, res, resolved.source);
    else res.end();
  }

  private async serveBlob(
    route: Extract<Route, { kind: "blob" }>,
    registry: string,
    req: IncomingMessage,
    res: ServerResponse,
    start: { readonly deadline: AbortSignal; progress(): void },
    signal: AbortSignal,
    started: (source: ServeSource) => void,
    retried = false,
  ): Promise<void> {
    const { store, fetcher } = this.options;
    const { deadline } = start;
    const head = req.method === "HEAD";
    const info = await store.stat(route.digest);
    if (info !== undefined) {
      const range = this.range(req, res, info.size);
      let stream: Readable | undefined;
      try {
        stream = head ? undefined : await store.createReadStream(route.digest, { ...rangeOptions(range), signal });
      } catch (error) {
        // Evicted between stat and open: fetch it like any missing blob.
        if (!isStoreError(error, "ERR_STORE_BLOB_NOT_FOUND")) throw error;
      }
      if (head || stream) {
        this.writeBlobHeaders(res, route.digest, info.size, range, info.mediaType);
        started("local");
        if (stream) await this.send(stream, res, "local");
        else res.end();
        return;
      }
    }
    if (head) {
      await this.headUpstreamBlob(route, registry, res, deadline);
      started("origin");
      return;
    }
    let lease;
    try {
      lease = await this.withDeadline(deadline, () =>
        fetcher.acquire(
          {
            registry,
            name: route.name,
            digest: route.digest,
            size: this.sizes.get(route.digest),
            onSourceProgress: () => {
              start.progress();
            },
          },
          deadline,
        ),
      );
    } catch (error) {
      // Completed by another flight between our stat and the fetch: serve it from the store.
      if (!isStoreError(error, "ERR_STORE_BLOB_EXISTS") || retried) throw error;
      await this.serveBlob(route, registry, req, res, start, signal, started, true);
      return;
    }
    try {
      const { partial } = lease;
      const range = this.range(req, res, partial.size);
      if (range !== undefined && range.end < partial.size - 1) {
        // A range that stops short of the blob's end would be a complete response before the digest was
        // checked (only a response reaching the last byte can be cut off when it fails). So it waits
        // for the verified blob, within the response-start deadline; past it the runtime goes direct.
        await this.withDeadline(deadline, () => raceSignal(partial.whenSettled(), deadline));
        if (partial.state !== "committed")
          throw new RegistryError("ERR_START_TIMEOUT", `${route.digest} could not be verified for a range request`);
        lease.release();
        await this.serveBlob(route, registry, req, res, start, signal, started, true);
        return;
      }
      // No status line before the first byte is here: until then the runtime can still be sent elsewhere.
      const first = range?.start ?? 0;
      if (partial.size > 0) await this.waitForFirstPiece(partial, Math.floor(first / partial.pieceSize), signal, lease.progressAtMs);
      const stream = partial.createReadStream({ ...rangeOptions(range), signal });
      this.writeBlobHeaders(res, route.digest, partial.size, range, lease.contentType);
      started(lease.source);
      await this.send(stream, res, lease.source);
    } finally {
      lease.release();
    }
  }

  /**
   * Waits for the piece the response starts with. Sending the runtime direct costs the origin another copy
   * of the blob, so the wait follows progress, not the clock: it goes on while the blob keeps gaining pieces
   * here (a swarm slow on a busy machine, or one that brings that piece later than others) or, for up to
   * SWARM_PROGRESS_START_TIMEOUTS start timeouts after the last piece here, while its swarm moves
   * (`swarmProgressAtMs`: a holder gained pieces, a peer sent bytes; a busy node may get no piece of a blob
   * for seconds while the blob spreads everywhere else). It ends with ERR_START_TIMEOUT (a 404: the runtime
   * goes direct) after `startTimeoutMs` without either, and ends anyway with the transfer (a failed partial
   * rejects).
   */
  private async waitForFirstPiece(
    partial: PartialBlob,
    index: number,
    signal: AbortSignal,
    swarmProgressAtMs: (() => number) | undefined,
  ): Promise<void> {
    let held = partial.heldPieces;
    const askedAtMs = performance.now();
    let localAtMs = askedAtMs;
    let progressAtMs = localAtMs;
    /** The swarm's progress kept the wait going past a start timeout without a piece here. */
    let carried = false;
    for (;;) {
      const nowMs = performance.now();
      if (partial.heldPieces > held) {
        held = partial.heldPieces;
        localAtMs = nowMs;
        progressAtMs = nowMs;
      }
      const swarmAtMs = swarmProgressAtMs?.() ?? Number.NEGATIVE_INFINITY;
      const believedUntilMs = localAtMs + (SWARM_PROGRESS_START_TIMEOUTS - 1) * this.startTimeoutMs;
      if (swarmAtMs > progressAtMs) progressAtMs = Math.min(swarmAtMs, believedUntilMs);
      if (nowMs - localAtMs > this.startTimeoutMs) carried = true;
      const leftMs = this.startTimeoutMs - (nowMs - progressAtMs);
      if (leftMs <= 0) {
        throw new RegistryError(
          "ERR_START_TIMEOUT",
          progressAtMs > localAtMs
            ? `${partial.digest} gained no piece here for ${Math.round(nowMs - localAtMs)} ms before the response could start (its peers' progress is believed for ${SWARM_PROGRESS_START_TIMEOUTS * this.startTimeoutMs} ms)`
            : `${partial.digest} gained no piece for ${this.startTimeoutMs} ms before the response could start`,
        );
      }
      const step = AbortSignal.any([signal, AbortSignal.timeout(Math.ceil(Math.min(leftMs, START_PROGRESS_CHECK_MS)))]);
      try {
        await partial.waitForPiece(index, step);
        if (carried) {
          // Without the swarm's progress this response would have been a 404 (and another copy from the origin).
          this.options.logger.info(
            { digest: partial.digest, waitedMs: Math.round(performance.now() - askedAtMs) },
            "first piece came after more than --response-start-timeout without a piece here; waited on the blob's swarm",
          );
        }
        return;
      } catch (error) {
        if (signal.aborted || !step.aborted) throw error;
      }
    }
  }

  /** HEAD of a blob this node lacks: ask the upstream, fetch nothing. */
  private async headUpstreamBlob(
    route: Extract<Route, { kind: "blob" }>,
    registry: string,
    res: ServerResponse,
    deadline: AbortSignal,
  ): Promise<void> {
    const response = await this.withDeadline(deadline, () =>
      this.options.upstream.request(registry, {
        method: "HEAD",
        path: `/v2/${route.name}/blobs/${route.digest}`,
        name: route.name,
        signal: deadline,
      }),
    );
    response.body.destroy();
    if (response.status !== 200) throw statusError(registry, `blob ${route.digest}`, response.status);
    const size = Number(header(response.headers, "content-length"));
    this.writeBlobHeaders(
      res,
      route.digest,
      Number.isSafeInteger(size) ? size : undefined,
      undefined,
      header(response.headers, "content-type"),
    );
    res.end();
  }

  private range(req: IncomingMessage, res: ServerResponse, size: number): ByteRange | undefined {
    try {
      return parseRangeHeader(req.headers.range, size);
    } catch (error) {
      if (error instanceof OciError) res.setHeader("content-range", `bytes */${size}`);
      throw error;
    }
  }

  private writeBlobHeaders(
    res: ServerResponse,
    digest: string,
    size: number | undefined,
    range: ByteRange | undefined,
    contentType: string | undefined,
  ): void {
    const headers: Record<string, string | number> = {
      "content-type": contentType ?? "application/octet-stream",
      "docker-content-digest": digest,
      "docker-distribution-api-version": "registry/2.0",
      "accept-ranges": "bytes",
      etag: `"${digest}"`,
    };
    if (range !== undefined && size !== undefined) {
      headers["content-range"] = `bytes ${range.start}-${range.end}/${size}`;
      headers["content-length"] = range.end - range.start + 1;
      res.writeHead(206, headers);
    } else {
      if (size !== undefined) headers["content-length"] = size;
      res.writeHead(200, headers);
    }
  }

  /**
   * Streams with backpressure, counting served bytes by source as they go. Each chunk is given back to the
   * store's chunk pool once the socket has taken it (the write's callback), so serving allocates nothing per
   * chunk in the steady state.
   */
  private async send(stream: Readable, res: ServerResponse, source: ServeSource): Promise<void> {
    // The status line goes on the wire now, not with the first chunk: Node reports headersSent as soon as
    // writeHead ran, so a source failing before its first chunk made fail() destroy a socket that had
    // sent nothing at all (a client saw the connection close without a response).
    res.flushHeaders();
    const served = this.options.metrics.blobBytesServed.labels({ source });
    // A started response whose source delivers nothing for this long is cut (the runtime retries, maybe
    // elsewhere): waiting on a swarm that cannot finish must not hang a pull. Time the client itself is
    // slow to read (waiting for 'drain') does not count.
    let lastChunkMs = performance.now();
    let draining = false;
    const watchdog = setInterval(
      () => {
        if (!draining && performance.now() - lastChunkMs > this.streamStallTimeoutMs) {
          stream.destroy(new RegistryError("ERR_STREAM_STALLED", `no byte to send for ${this.streamStallTimeoutMs} ms`));
        }
      },
      Math.min(STREAM_WATCHDOG_INTERVAL_MS, this.streamStallTimeoutMs),
    );
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        served.inc(chunk.length);
        lastChunkMs = performance.now();
        const more = res.write(chunk, () => {
          recycleReadChunk(chunk);
        });
        if (more) callback();
        else {
          draining = true;
          res.once("drain", () => {
            draining = false;
            lastChunkMs = performance.now();
            callback();
          });
        }
      },
      final(callback) {
        res.end(() => {
          callback();
        });
      },
      destroy(error, callback) {
        if (error !== null && !res.writableFinished) res.destroy(error);
        callback(error);
      },
    });
    res.once("close", () => {
      if (!res.writableFinished) sink.destroy(new Error("client went away"));
    });
    try {
      await pipeline(stream, sink);
    } finally {
      clearInterval(watchdog);
    }
  }

  /** Runs the phase before the first byte; past the deadline the client gets a 404 so it falls back. */
  private async withDeadline<T>(deadline: AbortSignal, phase: () => Promise<T>): Promise<T> {
    try {
      return await phase();
    } catch (error) {
      const reason: unknown = deadline.reason;
      if (deadline.aborted && reason instanceof DOMException && reason.name === "TimeoutError") {
        throw new RegistryError("ERR_START_TIMEOUT", reason.message, { cause: error });
      }
      throw error;
    }
  }

  private fail(req: IncomingMessage, res: ServerResponse, kind: RequestKind, error: unknown, signal: AbortSignal): void {
    const log = this.options.logger;
    if (res.headersSent) {
      // Mid-stream: the only honest signal left is a broken connection; the client never gets a complete wrong body.
      if (!signal.aborted) log.warn({ err: error, url: req.url }, "response failed mid-stream");
      res.destroy(error instanceof Error ? error : undefined);
      return;
    }
    if (signal.aborted && !res.writable) return;
    const response = toOciErrorResponse(error, kind);
    const reason = error instanceof Error ? errorCode(error) : "unknown";
    if (response.status >= 500 && response.code === "UNKNOWN") log.error({ err: error, url: req.url }, "mirror request failed");
    // A fallback sends the runtime to the registry: the origin sends what the swarm would have, so the
    // operator (and the benchmarks' per-agent report) can see which request and why.
    else if (response.fallback === true)
      log.info(
        { url: req.url, status: response.status, reason, error: error instanceof Error ? error.message : String(error) },
        "runtime sent to the registry",
      );
    else log.debug({ err: error, url: req.url, status: response.status }, "mirror request refused");
    if (response.fallback === true) this.options.metrics.fallbackResponses.inc({ reason });
    writeOciError(res, response);
  }
}

function rangeOptions(range: ByteRange | undefined): { start?: number; end?: number } {
  return range === undefined ? {} : { start: range.start, end: range.end };
}

function errorCode(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" ? code.replace(/^ERR_/, "").toLowerCase() : "unknown";
}
