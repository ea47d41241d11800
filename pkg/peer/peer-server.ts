import {
  Server,
  ServerCredentials,
  status,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { ReadPiecesRequest, StatRequest, StatResponse } from "../gen/peer/v1/peer.js";
import type { AgentMetrics } from "../metrics/index.js";
import { parseDigest, type Digest } from "../oci/index.js";
import type { BlobStore } from "../store/index.js";
import { TokenBucket } from "../throttle/index.js";
import { PeerStatus, toPeerStatus } from "./grpc-status.js";
import { MAX_MESSAGE_BYTES, MAX_PIECES_PER_CALL, peerService } from "./peer-service.js";
import { findHeldBlob, openPieces, planRuns, servableBitmap, type HeldBlob } from "./piece-reader.js";
import { MessagePool, PieceSender } from "./piece-sender.js";

/** Longest wait_ms honoured; longer requests are clamped to it. */
export const MAX_WAIT_MS = 60_000;
export const DEFAULT_MAX_CONCURRENT_UPLOADS = 16;
/** Requests are a digest and at most MAX_PIECES_PER_CALL varints. */
const MAX_REQUEST_BYTES = 64 * 1024;
const KEEPALIVE_TIME_MS = 30_000;
const KEEPALIVE_TIMEOUT_MS = 10_000;
/** How long close() lets connections wind down before cutting them. */
const DEFAULT_CLOSE_GRACE_MS = 2_000;

export interface PeerServerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly store: BlobStore;
  /** Node-wide upload cap shared by all streams; 0 or undefined = uncapped. */
  readonly uploadBytesPerSecond?: number | undefined;
  /** ReadPieces streams served at once; more are refused with RESOURCE_EXHAUSTED. */
  readonly maxConcurrentUploads?: number | undefined;
  readonly metrics?: AgentMetrics | undefined;
  readonly logger: Logger;
  readonly closeGraceMs?: number | undefined;
}

/** Serves PeerService (peer.proto): pieces of complete and partial blobs to other agents. */
export class PeerServer {
  private readonly logger: Logger;
  private readonly bucket: TokenBucket | undefined;
  private readonly maxUploads: number;
  private active = 0;
  /** One controller per ReadPieces call in progress, so close() can stop them. */
  private readonly calls = new Set<AbortController>();
  private readonly handlers = new Set<Promise<void>>();
  private readonly pool = new MessagePool();
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly server: Server,
    private readonly options: PeerServerOptions,
    private boundAddress = "",
  ) {
    this.logger = options.logger.child({ component: "peer-server" });
    const rate = options.uploadBytesPerSecond ?? 0;
    this.bucket = rate > 0 ? new TokenBucket(rate) : undefined;
    this.maxUploads = options.maxConcurrentUploads ?? DEFAULT_MAX_CONCURRENT_UPLOADS;
    if (!(Number.isSafeInteger(this.maxUploads) && this.maxUploads > 0)) {
      throw new RangeError(`maxConcurrentUploads must be a positive integer, got ${this.maxUploads}`);
    }
  }

  static async start(options: PeerServerOptions): Promise<PeerServer> {
    const server = new Server({
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_receive_message_length": MAX_REQUEST_BYTES,
      "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
      "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
    });
    const peer = new PeerServer(server, options);
    const implementation: UntypedServiceImplementation = {
      stat: (call: ServerUnaryCall<StatRequest, StatResponse>, callback: sendUnaryData<StatResponse>) => {
        peer.stat(call, callback);
      },
      readPieces: (call: ServerWritableStream<ReadPiecesRequest, Buffer>) => {
        peer.readPieces(call);
      },
    };
    server.addService(peerService, implementation);
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${formatHost(options.host)}:${options.port}`, ServerCredentials.createInsecure(), (error, bound) => {
        if (error) reject(error);
        else resolve(bound);
      });
    });
    peer.boundAddress = `${formatHost(options.host)}:${port}`;
    peer.logger.info({ address: peer.boundAddress, uploadBytesPerSecond: options.uploadBytesPerSecond ?? 0, maxConcurrentUploads: peer.maxUploads }, "peer server listening");
    return peer;
  }

  /** host:port actually bound. */
  get address(): string {
    return this.boundAddress;
  }

  /** ReadPieces streams being served now (reported to the tracker as this agent's load). */
  get activeUploads(): number {
    return this.active;
  }

  /**
   * Stops serving: calls in progress end with UNAVAILABLE (their clients go to another peer), then the
   * connections close, forcibly after a grace period. Resolves when no handler touches the store any more.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    for (const call of this.calls) call.abort(new PeerStatus(status.UNAVAILABLE, "peer is shutting down"));
    const graceMs = this.options.closeGraceMs ?? DEFAULT_CLOSE_GRACE_MS;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    await Promise.all(this.handlers);
    this.logger.info("peer server closed");
  }

  private stat(call: ServerUnaryCall<StatRequest, StatResponse>, callback: sendUnaryData<StatResponse>): void {
    this.describe(call.request.digest).then(
      (held) => {
        const { blob } = held;
        const bitmap = blob.partial === undefined ? Buffer.alloc(0) : Buffer.from(servableBitmap(blob.partial));
        callback(null, { complete: blob.partial === undefined, size: blob.size, pieceSize: blob.pieceSize, bitmap });
      },
      (error: unknown) => {
        const peerStatus = toPeerStatus(error);
        this.logFailure("stat", peerStatus);
        callback(peerStatus.toStatusObject());
      },
    );
  }

  private readPieces(call: ServerWritableStream<ReadPiecesRequest, Buffer>): void {
    const handler = this.serve(call).finally(() => {
      this.handlers.delete(handler);
    });
    this.handlers.add(handler);
  }

  /** Never rejects: every failure becomes the call's status. */
  private async serve(call: ServerWritableStream<ReadPiecesRequest, Buffer>): Promise<void> {
    const controller = new AbortController();
    const onCancelled = (): void => {
      controller.abort(new PeerStatus(status.CANCELLED, "cancelled by the client"));
    };
    call.on("cancelled", onCancelled);
    this.calls.add(controller);
    if (this.closing !== undefined) controller.abort(new PeerStatus(status.UNAVAILABLE, "peer is shutting down"));
    let slot = false;
    let sender: PieceSender | undefined;
    try {
      const request = call.request;
      const { digest, blob } = await this.describe(request.digest);
      checkPieces(request, blob);
      controller.signal.throwIfAborted();
      if (this.active >= this.maxUploads) {
        this.options.metrics?.peerUploadsRejected.inc();
        throw new PeerStatus(status.RESOURCE_EXHAUSTED, `upload cap reached (${this.maxUploads} streams)`);
      }
      slot = true;
      this.active++;
      this.options.metrics?.peerUploadsActive.inc();
      const metrics = this.options.metrics;
      sender = new PieceSender({
        call,
        signal: controller.signal,
        pool: this.pool,
        bucket: this.bucket,
        onSent: metrics === undefined ? undefined : (bytes) => { metrics.peerBytesSent.inc(bytes); },
      });
      const waitMs = Math.min(request.waitMs, MAX_WAIT_MS);
      for (const { first, count } of planRuns(request.pieces, blob)) {
        const opened = await openPieces({ store: this.options.store, digest, blob, first, count, waitMs, signal: controller.signal });
        try {
          await sender.sendPieces(opened.pieces, opened.stream);
        } catch (error: unknown) {
          // An aborted partial is "piece no longer held", not a server fault.
          if (opened.fromPartial && !controller.signal.aborted && !(error instanceof PeerStatus)) {
            throw new PeerStatus(status.FAILED_PRECONDITION, `piece ${first} is no longer held`, { cause: error });
          }
          throw error;
        } finally {
          opened.stream.destroy();
        }
      }
      call.end();
    } catch (error: unknown) {
      const reason: unknown = controller.signal.aborted ? controller.signal.reason : error;
      const peerStatus = toPeerStatus(reason);
      if (peerStatus.code !== status.CANCELLED) {
        this.logFailure("readPieces", peerStatus);
        // grpc-js ends a server stream with the status of an emitted error (after flushing what was written).
        if (!call.cancelled) call.emit("error", peerStatus.toStatusObject());
      }
    } finally {
      sender?.dispose();
      call.off("cancelled", onCancelled);
      this.calls.delete(controller);
      if (slot) {
        this.active--;
        this.options.metrics?.peerUploadsActive.dec();
      }
    }
  }

  private async describe(rawDigest: string): Promise<{ digest: Digest; blob: HeldBlob }> {
    const digest = parseDigest(rawDigest);
    const blob = await findHeldBlob(this.options.store, digest);
    if (blob === undefined) throw new PeerStatus(status.NOT_FOUND, `blob ${digest} is not held here`);
    return { digest, blob };
  }

  private logFailure(method: string, peerStatus: PeerStatus): void {
    const level = peerStatus.code === status.INTERNAL || peerStatus.code === status.UNAVAILABLE ? "warn" : "debug";
    this.logger[level]({ method, code: status[peerStatus.code], details: peerStatus.details, err: peerStatus.cause }, "peer call failed");
  }
}

function checkPieces(request: ReadPiecesRequest, blob: HeldBlob): void {
  if (request.pieceSize !== blob.pieceSize) {
    throw new PeerStatus(status.INVALID_ARGUMENT, `piece size ${request.pieceSize} does not match ${blob.pieceSize}`);
  }
  if (request.pieces.length === 0 || request.pieces.length > MAX_PIECES_PER_CALL) {
    throw new PeerStatus(status.INVALID_ARGUMENT, `a call asks for 1 to ${MAX_PIECES_PER_CALL} pieces, not ${request.pieces.length}`);
  }
  for (const index of request.pieces) {
    if (index >= blob.pieceCount) throw new PeerStatus(status.INVALID_ARGUMENT, `piece ${index} out of range 0..${blob.pieceCount - 1}`);
  }
}

/** IPv6 literals need brackets in host:port. */
function formatHost(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}
