import { Client, credentials, type ChannelOptions } from "@grpc/grpc-js";

export interface ChannelPoolOptions {
  readonly channelOptions: ChannelOptions;
  /** A channel with no call for this long is closed (its connection with it). */
  readonly idleCloseMs: number;
}

export interface ChannelLease {
  readonly client: Client;
  /** Ends this use of the channel; call exactly once. */
  release(): void;
}

interface Entry {
  readonly client: Client;
  calls: number;
  idleTimer: NodeJS.Timeout | undefined;
}

/**
 * One gRPC channel (one HTTP/2 connection) per peer address, shared by every call to that peer, so
 * concurrent piece requests multiplex on one connection and its large flow-control window. Channels
 * are closed after being idle, because a node talks to many peers over time.
 */
export class ChannelPool {
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  constructor(private readonly options: ChannelPoolOptions) {}

  acquire(address: string): ChannelLease {
    if (this.closed) throw new Error("channel pool is closed");
    let entry = this.entries.get(address);
    if (entry === undefined) {
      entry = { client: new Client(address, credentials.createInsecure(), this.options.channelOptions), calls: 0, idleTimer: undefined };
      this.entries.set(address, entry);
    }
    const leased = entry;
    clearTimeout(leased.idleTimer);
    leased.idleTimer = undefined;
    leased.calls++;
    let released = false;
    return {
      client: leased.client,
      release: () => {
        if (released) return;
        released = true;
        leased.calls--;
        if (leased.calls === 0 && this.entries.get(address) === leased) {
          leased.idleTimer = setTimeout(() => {
            this.entries.delete(address);
            leased.client.close();
          }, this.options.idleCloseMs);
          leased.idleTimer.unref();
        }
      },
    };
  }

  /** Open channels (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }

  /** Closes every channel. Calls already running are not cut by this; their owner cancels them. */
  close(): void {
    this.closed = true;
    for (const entry of this.entries.values()) {
      clearTimeout(entry.idleTimer);
      entry.client.close();
    }
    this.entries.clear();
  }
}
