import { RegistryError } from "./errors.js";

/**
 * An origin transfer that has received nothing (not its headers, not a body byte) for this long, while
 * another transfer from the same registry received bytes within STARVED_PEER_ACTIVE_MS, is starved: it is
 * cut and resumed on a new connection.
 */
export const STARVED_TRANSFER_MS = 3_000;
/** "Another transfer received bytes just now": the registry and the path to it are moving bytes. */
export const STARVED_PEER_ACTIVE_MS = 1_000;
const CHECK_INTERVAL_MS = 500;

/** One request to the origin and its body, as the watch sees it. */
export interface TransferAttempt {
  /** Aborted when the attempt is found starved (combine it with the caller's own signal). */
  readonly signal: AbortSignal;
  /** Bytes (headers or body) arrived. */
  progress(): void;
  /** The attempt is over (its body closed, or the request failed). Idempotent. */
  end(): void;
  /** Whether the watch cut it, and the error to report then (a timeout, which is resumed). */
  readonly starved: boolean;
  readonly error: RegistryError;
}

class Attempt implements TransferAttempt {
  private readonly controller = new AbortController();
  readonly error: RegistryError;
  lastMs: number;

  constructor(
    readonly registry: string,
    private readonly watch: TransferWatch,
    private readonly now: () => number,
  ) {
    this.lastMs = now();
    this.error = new RegistryError(
      "ERR_UPSTREAM_TIMEOUT",
      `${registry} sent nothing on this transfer for ${STARVED_TRANSFER_MS} ms while other transfers from it received bytes`,
    );
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get starved(): boolean {
    return this.controller.signal.aborted;
  }

  progress(): void {
    this.lastMs = this.now();
    this.watch.bytesFrom(this.registry, this.lastMs);
  }

  end(): void {
    this.watch.ended(this);
  }

  cut(): void {
    this.controller.abort(this.error);
    this.end();
  }
}

/**
 * Finds origin transfers that are starved rather than slow. Seen in `npm run bench` on a 2-core host: the
 * origin grantee of all four layers fetched them at once over one 200 Mbit/s tail-drop link, two of the
 * four connections received nothing for over 10 s while the other two ran at full speed (a TCP flow
 * backing off its retransmissions while the others keep the queue full), and every other node's mirror
 * gave up on those layers and sent its runtime to the origin (2.8–4.5 × F in three of eleven runs). A new
 * connection starts without that backoff. A registry that is slow for every transfer, or one transfer
 * alone, is not starved: nothing is cut then, and the upstream client's own timeouts apply.
 */
export class TransferWatch {
  private readonly active = new Set<Attempt>();
  /** When each registry last sent bytes on any transfer. */
  private readonly lastBytesMs = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly now: () => number = () => performance.now(),
    /** Whether to check on a timer (tests call check() themselves). */
    private readonly timed = true,
  ) {}

  begin(registry: string): TransferAttempt {
    const attempt = new Attempt(registry, this, this.now);
    this.active.add(attempt);
    if (this.timed && this.timer === undefined)
      this.timer = setInterval(() => {
        this.check();
      }, CHECK_INTERVAL_MS).unref();
    return attempt;
  }

  /** @internal An attempt received bytes from `registry`. */
  bytesFrom(registry: string, nowMs: number): void {
    this.lastBytesMs.set(registry, nowMs);
  }

  /** @internal An attempt is over. */
  ended(attempt: Attempt): void {
    this.active.delete(attempt);
    if (this.active.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** Cuts every starved attempt. */
  check(): void {
    const now = this.now();
    for (const attempt of this.active) {
      if (now - attempt.lastMs < STARVED_TRANSFER_MS) continue;
      const othersAt = this.lastBytesMs.get(attempt.registry) ?? Number.NEGATIVE_INFINITY;
      // The registry's last bytes are another transfer's: this one has had none for STARVED_TRANSFER_MS.
      if (now - othersAt >= STARVED_PEER_ACTIVE_MS) continue;
      attempt.cut();
    }
    for (const [registry, at] of this.lastBytesMs) if (now - at > STARVED_TRANSFER_MS) this.lastBytesMs.delete(registry);
  }

  /** Attempts being watched. */
  get size(): number {
    return this.active.size;
  }
}
