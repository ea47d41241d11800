/** How often the pause meter's heartbeat runs while some silence is watched. */
export const PAUSE_TICK_MS = 100;
/** A heartbeat this much later than due shows a pause of this process (timers are a little late anyway). */
export const LATE_TIMER_MS = 15;

/**
 * How long this process has not run, in all: a heartbeat timer adds up how much later than due it fires.
 * A process the kernel does not schedule (a busy machine) or that is stuck in a long garbage collection
 * runs no timer and reads no socket; its peers' bytes wait unread meanwhile, and after the pause Node runs
 * due timers before it reads sockets. The heartbeat runs only while some silence is watched (OwnPauses),
 * and does not keep the process alive.
 */
class PauseMeter {
  private totalMs = 0;
  private dueMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private watchers = 0;

  /** Starts the heartbeat for one more watcher; the returned function stops watching (once). */
  watch(): () => void {
    this.watchers++;
    if (this.timer === undefined) this.arm(performance.now());
    let stopped = false;
    return () => {
      if (stopped) return;
      stopped = true;
      if (--this.watchers === 0) {
        clearTimeout(this.timer);
        this.timer = undefined;
      }
    };
  }

  /** The pauses so far (ms), with one in progress that the heartbeat has not counted yet (it is overdue). */
  pausedMs(nowMs: number): number {
    const late = nowMs - this.dueMs;
    return this.totalMs + (this.timer !== undefined && late > LATE_TIMER_MS ? late : 0);
  }

  private arm(nowMs: number): void {
    this.dueMs = nowMs + PAUSE_TICK_MS;
    this.timer = setTimeout(() => {
      const now = performance.now();
      const late = now - this.dueMs;
      if (late > LATE_TIMER_MS) this.totalMs += late;
      this.arm(now);
    }, PAUSE_TICK_MS);
    this.timer.unref();
  }
}

const meter = new PauseMeter();

/**
 * The part of a silence that was this process's own pause (PauseMeter), so that a peer is not blamed for
 * it: the owner judges `now - lastHeardMs - ms()` and calls reset() when the other side is heard from.
 * What is discounted is bounded (`maxMs` per silence): on a machine that never lets the process run, a dead
 * peer is still given up after at most its timeout plus `maxMs`. close() when done.
 */
export class OwnPauses {
  private base: number;
  private readonly unwatch: () => void;

  constructor(private readonly maxMs: number) {
    this.unwatch = meter.watch();
    this.base = meter.pausedMs(performance.now());
  }

  /** This process's pauses since the last reset (ms), at most maxMs. */
  ms(nowMs = performance.now()): number {
    return Math.min(this.maxMs, meter.pausedMs(nowMs) - this.base);
  }

  /** The other side was heard from: a new silence begins. */
  reset(nowMs = performance.now()): void {
    this.base = meter.pausedMs(nowMs);
  }

  /** Stops watching (idempotent). */
  close(): void {
    this.unwatch();
  }
}
