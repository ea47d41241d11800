import { access, constants as fsConstants, stat } from "node:fs/promises";
import { Channel, type ClientReadableStream, credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { ContentClient, type Info } from "../gen/containerd/services/content/v1/content.js";
import { type Envelope, EventsClient } from "../gen/containerd/services/events/v1/events.js";
import { LeasesClient } from "../gen/containerd/services/leases/v1/leases.js";
import { ContainerdError } from "./errors.js";

/** Unary calls (info, leases) get this long before they count as containerd being unavailable. */
export const CALL_TIMEOUT_MS = 5_000;
/** A full content listing (thousands of blobs on a busy node) gets this long. */
export const LIST_TIMEOUT_MS = 30_000;
/** One read of at most a few MiB. */
export const READ_TIMEOUT_MS = 30_000;
/**
 * Receive window of the channel: containerd's Read streams ~1 MiB messages, and grpc-js's default window
 * (64 KiB) would cap a read at a fraction of the disk's speed. Only the receiving (client) side sets it.
 */
const FLOW_CONTROL_WINDOW_BYTES = 16 * 1024 * 1024;
/** containerd's namespace travels in this metadata header on every call. */
const NAMESPACE_HEADER = "containerd-namespace";

export interface ContentInfo {
  readonly digest: string;
  readonly size: number;
}

export interface ContainerdClientOptions {
  /** Path of containerd's gRPC socket. */
  readonly socket: string;
  readonly namespace: string;
}

/**
 * The few containerd calls the agent makes (content Info/List/Read, leases, event subscription) over one
 * grpc-js channel on the socket, every one with a deadline and an AbortSignal, every failure a
 * ContainerdError. The namespace is sent with each call.
 */
export class ContainerdClient {
  private readonly channel: Channel;
  private readonly content: ContentClient;
  private readonly leases: LeasesClient;
  private readonly events: EventsClient;
  private readonly metadata: Metadata;
  private closed = false;

  constructor(readonly options: ContainerdClientOptions) {
    this.channel = new Channel(`unix://${options.socket}`, credentials.createInsecure(), {
      "grpc-node.flow_control_window": FLOW_CONTROL_WINDOW_BYTES,
      // containerd may be restarted at any time; reconnect quickly once it is back.
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 5_000,
    });
    const shared = { channelOverride: this.channel };
    const insecure = credentials.createInsecure();
    this.content = new ContentClient(`unix://${options.socket}`, insecure, shared);
    this.leases = new LeasesClient(`unix://${options.socket}`, insecure, shared);
    this.events = new EventsClient(`unix://${options.socket}`, insecure, shared);
    this.metadata = new Metadata();
    this.metadata.set(NAMESPACE_HEADER, options.namespace);
  }

  /**
   * Why the socket cannot be used, in words for the log, or undefined when it looks usable. Checked before
   * connecting because gRPC reports every one of these as the same UNAVAILABLE.
   */
  async checkSocket(): Promise<string | undefined> {
    const { socket } = this.options;
    try {
      const info = await stat(socket);
      if (!info.isSocket()) return `${socket} is not a socket`;
      await access(socket, fsConstants.R_OK | fsConstants.W_OK);
      return undefined;
    } catch (error: unknown) {
      const code = (error as { code?: unknown }).code;
      if (code === "ENOENT") return `containerd socket ${socket} does not exist`;
      if (code === "EACCES")
        return `no permission to use containerd socket ${socket} (the agent needs to run as root or in the socket's group)`;
      return `containerd socket ${socket}: ${error instanceof Error ? error.message : String(error)}`;
    }
  }

  /** The blob's info, or undefined when the namespace does not hold it. */
  async info(digest: string, signal?: AbortSignal): Promise<ContentInfo | undefined> {
    try {
      const response = await this.unary<{ info?: Info | undefined }>(
        (callback, options) => this.content.info({ digest }, this.metadata, options, callback),
        signal,
      );
      const info = response.info;
      if (info === undefined) throw new ContainerdError("ERR_CONTAINERD_PROTOCOL", `content info of ${digest} came without info`);
      return { digest: info.digest, size: info.size };
    } catch (error: unknown) {
      if (error instanceof ContainerdError && error.code === "ERR_CONTAINERD_NOT_FOUND") return undefined;
      throw error;
    }
  }

  /** Every committed blob of the namespace. */
  async list(signal?: AbortSignal): Promise<ContentInfo[]> {
    const found: ContentInfo[] = [];
    await this.stream(this.content.list({ filters: [] }, this.metadata, this.callOptions(LIST_TIMEOUT_MS)), signal, (response) => {
      for (const info of response.info) found.push({ digest: info.digest, size: info.size });
    });
    return found;
  }

  /** Fills `target` with the blob's bytes from `position`. */
  async read(digest: string, target: Uint8Array, position: number, signal?: AbortSignal): Promise<void> {
    if (target.byteLength === 0) return;
    let filled = 0;
    const call = this.content.read({ digest, offset: position, size: target.byteLength }, this.metadata, this.callOptions(READ_TIMEOUT_MS));
    await this.stream(call, signal, (response) => {
      const offset = response.offset - position;
      if (offset !== filled || offset + response.data.byteLength > target.byteLength) {
        call.cancel();
        throw new ContainerdError(
          "ERR_CONTAINERD_PROTOCOL",
          `read of ${digest} returned bytes at ${response.offset}, expected ${position + filled}`,
        );
      }
      target.set(response.data, offset);
      filled += response.data.byteLength;
    });
    if (filled !== target.byteLength) {
      throw new ContainerdError(
        "ERR_CONTAINERD_PROTOCOL",
        `read of ${digest} at ${position} returned ${filled} of ${target.byteLength} bytes`,
      );
    }
  }

  async createLease(id: string, labels: Readonly<Record<string, string>>, signal?: AbortSignal): Promise<void> {
    await this.unary((callback, options) => this.leases.create({ id, labels: { ...labels } }, this.metadata, options, callback), signal);
  }

  async addLeaseResource(id: string, digest: string, signal?: AbortSignal): Promise<void> {
    await this.unary(
      (callback, options) => this.leases.addResource({ id, resource: { id: digest, type: "content" } }, this.metadata, options, callback),
      signal,
    );
  }

  /** Deletes a lease; one already gone is not an error. */
  async deleteLease(id: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.unary((callback, options) => this.leases.delete({ id, sync: false }, this.metadata, options, callback), signal);
    } catch (error: unknown) {
      if (!(error instanceof ContainerdError && error.code === "ERR_CONTAINERD_NOT_FOUND")) throw error;
    }
  }

  /** Ids of the leases matching a containerd filter, e.g. `labels."shoal.dev/reader"==true`. */
  async listLeases(filter: string, signal?: AbortSignal): Promise<string[]> {
    const response = await this.unary<{ leases: { id: string }[] }>(
      (callback, options) => this.leases.list({ filters: [filter] }, this.metadata, options, callback),
      signal,
    );
    return response.leases.map((lease) => lease.id);
  }

  /**
   * Subscribes to events matching `filters` until `signal` aborts. Resolves when the stream ends (containerd
   * stopped or restarted: the caller subscribes again); rejects with a ContainerdError when it fails.
   */
  async subscribe(filters: readonly string[], onEvent: (envelope: Envelope) => void, signal: AbortSignal): Promise<void> {
    await this.stream(this.events.subscribe({ filters: [...filters] }, this.metadata, {}), signal, onEvent);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.content.close();
    this.leases.close();
    this.events.close();
    this.channel.close();
  }

  private callOptions(timeoutMs: number): { deadline: Date } {
    return { deadline: new Date(Date.now() + timeoutMs) };
  }

  private unary<T>(
    start: (callback: (error: ServiceError | null, response: T) => void, options: { deadline: Date }) => { cancel(): void },
    signal: AbortSignal | undefined,
  ): Promise<T> {
    if (this.closed) return Promise.reject(new ContainerdError("ERR_CONTAINERD_CLOSED", "containerd client closed"));
    if (signal?.aborted === true) return Promise.reject(aborted(signal));
    return new Promise<T>((resolve, reject) => {
      const onAbort = (): void => {
        call.cancel();
      };
      const call = start((error, response) => {
        signal?.removeEventListener("abort", onAbort);
        if (error === null) resolve(response);
        else reject(signal?.aborted === true ? aborted(signal) : toContainerdError(error, this.options.socket));
      }, this.callOptions(CALL_TIMEOUT_MS));
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Consumes a server stream; `onMessage` may throw to fail it. */
  private stream<T>(call: ClientReadableStream<T>, signal: AbortSignal | undefined, onMessage: (message: T) => void): Promise<void> {
    if (this.closed) {
      call.cancel();
      return Promise.reject(new ContainerdError("ERR_CONTAINERD_CLOSED", "containerd client closed"));
    }
    return new Promise<void>((resolve, reject) => {
      let failure: Error | undefined;
      const onAbort = (): void => {
        call.cancel();
      };
      if (signal?.aborted === true) onAbort();
      else signal?.addEventListener("abort", onAbort, { once: true });
      call.on("data", (message: T) => {
        if (failure !== undefined) return;
        try {
          onMessage(message);
        } catch (error: unknown) {
          failure = error instanceof Error ? error : new Error(String(error));
          call.cancel();
        }
      });
      call.on("error", (error: ServiceError) => {
        signal?.removeEventListener("abort", onAbort);
        if (failure !== undefined) reject(failure);
        else if (signal?.aborted === true) reject(aborted(signal));
        else reject(toContainerdError(error, this.options.socket));
      });
      call.on("end", () => {
        signal?.removeEventListener("abort", onAbort);
        if (failure !== undefined) reject(failure);
        else resolve();
      });
    });
  }
}

function aborted(signal: AbortSignal): ContainerdError {
  return new ContainerdError("ERR_CONTAINERD_ABORTED", "containerd call aborted", { cause: signal.reason });
}

/** A grpc-js failure as a ContainerdError with a code the caller can act on. */
export function toContainerdError(error: ServiceError, socket: string): ContainerdError {
  const details = error.details || error.message;
  switch (error.code) {
    case status.NOT_FOUND:
      return new ContainerdError("ERR_CONTAINERD_NOT_FOUND", details, { cause: error });
    case status.UNAVAILABLE:
    case status.DEADLINE_EXCEEDED:
    case status.CANCELLED:
      return new ContainerdError("ERR_CONTAINERD_UNAVAILABLE", `containerd at ${socket} is unavailable: ${details}`, { cause: error });
    case status.PERMISSION_DENIED:
    case status.UNAUTHENTICATED:
      return new ContainerdError("ERR_CONTAINERD_DENIED", `containerd at ${socket} refused: ${details}`, { cause: error });
    default:
      return new ContainerdError("ERR_CONTAINERD_FAILED", `containerd at ${socket}: ${status[error.code]} ${details}`, { cause: error });
  }
}
