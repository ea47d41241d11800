import { RegistryError } from "./errors.js";

/** A transfer's progress is judged over this long (and not before it is this old). */
export const STARVED_TRANSFER_MS = 3_000;
/** Starved: it received less than 1/STARVED_RATIO of what the busiest transfer from the same registry did… */
export const STARVED_RATIO = 16;
/** …while that one received at least this much in the window (the registry and the path are moving bytes). */
export const MOVING_BYTES = 1024 * 1024;
/** A transfer (one digest's fetch) is cut as starved at most this many times; then it is left to its pace. */
export const MAX_STARVED_CUTS = 3;
const CHECK_INTERVAL_MS = 500;
const WINDOW_CHECKS = STARVED_TRANSFER_MS / CHECK_INTERVAL_MS;

/** The errors the watch cut transfers with. */
const cutErrors = new WeakSet<Error>();

/** Whether `error` is a TransferWatch's cut of a starved transfer. */
export function isStarvedError(error: unknown): boolean {
  return error instanceof Error && cutErrors.has(error);
}

/** One request to the origin and its body, as the watch sees it. */
export interface TransferAttempt {
  /** Aborted when the attempt is found starved (combine it with the caller's own signal). */
  readonly signal: AbortSignal;
  /** `bytes` of its body arrived. */
  progress(bytes: number): void;
  /** The attempt is over (its body closed, or the request failed). Idempotent. */
  end(): void;
  /** Whether the watch cut it, and the error to report then (a timeout, which is resumed). */
  readonly starved: boolean;
  readonly error: RegistryError;
}

class Attempt implements TransferAttempt {
  private readonly controller = new AbortController();
  readonly error: RegistryError;
  /** Body bytes so far. */
  total = 0;
  /** `total` at each of the last checks, oldest first (WINDOW_CHECKS + 1 once the attempt is old enough). */
  readonly totals: number[] = [];

  constructor(
    readonly registry: string,
    readonly mayCut: boolean,
    private readonly watch: TransferWatch,
  ) {
    this.error = new RegistryError(
      "ERR_UPSTREAM_TIMEOUT",
      `${registry} sent this transfer less than 1/${STARVED_RATIO} of what another transfer from it received in ${STARVED_TRANSFER_MS} ms`,
    );
    cutErrors.add(this.error);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get starved(): boolean {
    return this.controller.signal.aborted;
  }

  progress(bytes: number): void {
    this.total += bytes;
  }

  end(): void {
    this.watch.ended(this);
  }

  /** Bytes received over the last STARVED_TRANSFER_MS; undefined while the attempt is younger. */
  windowBytes(): number | undefined {
    return this.totals.length > WINDOW_CHECKS ? this.total - (this.totals[0] ?? 0) : undefined;
  }

  cut(): void {
    this.controller.abort(this.error);
    this.end();
  }
}

/**
 * Finds origin transfers that are starved rather than slow. Seen in `npm run bench` on a 2-core host: the
 * origin grantee of all four layers fetched them at once over one 200 Mbit/s tail-drop link; in some runs
 * one or two of the four connections had not brought a single 1 MiB piece after 8–10 s while the others
 * ran at full speed (TCP flows backing off their retransmissions while the others keep the queue full),
 * and every other node's mirror gave up on those layers and sent its runtime to the origin (2.3–4.5 × F
 * in four of twelve runs). A new connection starts without that backoff. A registry that is slow on every
 * transfer, or a transfer alone, is not starved: nothing is cut then, and the upstream client's own
 * timeouts apply.
 */
export class TransferWatch {
  private readonly active = new Set<Attempt>();
  private timer: NodeJS.Timeout | undefined;

  /** `timed` false: no timer (tests call check() every CHECK_INTERVAL_MS of their own clock). */
  constructor(private readonly timed = true) {}

  /** `mayCut` false: watched (its bytes show the registry moving) but never cut (MAX_STARVED_CUTS reached). */
  begin(registry: string, mayCut = true): TransferAttempt {
    const attempt = new Attempt(registry, mayCut, this);
    this.active.add(attempt);
    if (this.timed && this.timer === undefined)
      this.timer = setInterval(() => {
        this.check();
      }, CHECK_INTERVAL_MS).unref();
    return attempt;
  }

  /** @internal An attempt is over. */
  ended(attempt: Attempt): void {
    this.active.delete(attempt);
    if (this.active.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** Samples every attempt's bytes and cuts the starved ones. */
  check(): void {
    const busiest = new Map<string, number>();
    for (const attempt of this.active) {
      attempt.totals.push(attempt.total);
      if (attempt.totals.length > WINDOW_CHECKS + 1) attempt.totals.shift();
      const bytes = attempt.totals.length > 1 ? attempt.total - (attempt.totals[0] ?? 0) : 0;
      busiest.set(attempt.registry, Math.max(busiest.get(attempt.registry) ?? 0, bytes));
    }
    for (const attempt of this.active) {
      const bytes = attempt.windowBytes();
      const best = busiest.get(attempt.registry) ?? 0;
      if (attempt.mayCut && bytes !== undefined && best >= MOVING_BYTES && bytes * STARVED_RATIO < best) attempt.cut();
    }
  }

  /** Attempts being watched. */
  get size(): number {
    return this.active.size;
  }
}
