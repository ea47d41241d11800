import { type ClientHttp2Session, connect, type SecureClientSessionOptions } from "node:http2";

export interface SessionPoolOptions {
  /** Per-stream receive window the client announces: how much a peer may send ahead of us per call. */
  readonly streamWindowBytes: number;
  /** Connection-wide receive window (all calls to one peer together). */
  readonly connectionWindowBytes: number;
  /** A session with no call for this long is closed. */
  readonly idleCloseMs: number;
  /**
   * TLS options for each new connection (the current certificate; throws when there is none yet); plain
   * HTTP/2 without. Called per connection, so connections made after a rotation use the new certificate.
   */
  readonly connectOptions?: (() => SecureClientSessionOptions) | undefined;
}

export interface SessionLease {
  readonly session: ClientHttp2Session;
  /** Ends this use of the session; call exactly once. */
  release(): void;
}

interface Entry {
  readonly session: ClientHttp2Session;
  calls: number;
  idleTimer: NodeJS.Timeout | undefined;
}

/**
 * One HTTP/2 session (one connection) per peer address, shared by every call to that peer, so concurrent
 * piece requests multiplex on one connection and its large flow-control window. A session that fails
 * or is told to go away is dropped at once (the next call connects again); idle ones are closed.
 */
export class SessionPool {
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  constructor(private readonly options: SessionPoolOptions) {}

  acquire(address: string): SessionLease {
    if (this.closed) throw new Error("session pool is closed");
    let entry = this.entries.get(address);
    if (entry === undefined || entry.session.closed || entry.session.destroyed) {
      entry = { session: this.connect(address), calls: 0, idleTimer: undefined };
      this.entries.set(address, entry);
    }
    const leased = entry;
    clearTimeout(leased.idleTimer);
    leased.idleTimer = undefined;
    leased.calls++;
    let released = false;
    return {
      session: leased.session,
      release: () => {
        if (released) return;
        released = true;
        leased.calls--;
        if (leased.calls === 0 && this.entries.get(address) === leased) {
          leased.idleTimer = setTimeout(() => {
            this.drop(address, leased);
            leased.session.close();
          }, this.options.idleCloseMs);
          leased.idleTimer.unref();
        }
      },
    };
  }

  /** Open sessions (tests and metrics). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Stops handing out the sessions open now (after a certificate rotation): the next call to each peer
   * connects anew, and calls running on the old sessions finish before those close.
   */
  retire(): void {
    for (const [address, entry] of [...this.entries]) {
      this.drop(address, entry);
      // Closing a session that is still connecting would fail the calls queued on it.
      if (entry.session.connecting) {
        entry.session.once("connect", () => {
          entry.session.close();
        });
      } else entry.session.close();
    }
  }

  /** Closes every session; calls still running on them are cut. */
  close(): void {
    this.closed = true;
    for (const entry of this.entries.values()) {
      clearTimeout(entry.idleTimer);
      entry.session.destroy();
    }
    this.entries.clear();
  }

  private connect(address: string): ClientHttp2Session {
    const tls = this.options.connectOptions?.();
    const session = connect(`${tls === undefined ? "http" : "https"}://${address}`, {
      ...tls,
      settings: { initialWindowSize: this.options.streamWindowBytes, enablePush: false },
    });
    session.once("connect", () => {
      // The connection window is not a SETTINGS value: it is raised by a WINDOW_UPDATE once connected.
      if (!session.destroyed) session.setLocalWindowSize(this.options.connectionWindowBytes);
    });
    const forget = (): void => {
      const entry = this.entries.get(address);
      if (entry?.session === session) this.drop(address, entry);
    };
    // Errors reach the calls on the session (their streams fail); here they only retire the session.
    session.on("error", forget);
    session.once("goaway", forget);
    session.once("close", forget);
    return session;
  }

  private drop(address: string, entry: Entry): void {
    clearTimeout(entry.idleTimer);
    if (this.entries.get(address) === entry) this.entries.delete(address);
  }
}
