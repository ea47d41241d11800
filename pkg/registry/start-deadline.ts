import { OwnPauses } from "../util/index.js";

/**
 * The deadline for a response to start: `timeoutMs` after the request, moved to `timeoutMs` after each sign
 * of progress (progress()), and never later than `limitMs` after the request. Time this process did not run
 * (OwnPauses: a busy node) does not count, up to one more `timeoutMs`: the sources could not be heard
 * meanwhile. Its signal aborts with a TimeoutError DOMException whose message says which bound ran out.
 */
export class StartDeadline {
  private readonly controller = new AbortController();
  private readonly pauses: OwnPauses;
  private readonly startedAtMs = performance.now();
  private dueAtMs: number;
  private timer: NodeJS.Timeout | undefined;
  private extended = false;

  constructor(
    private readonly timeoutMs: number,
    private readonly limitMs: number,
  ) {
    this.dueAtMs = this.startedAtMs + timeoutMs;
    this.pauses = new OwnPauses(timeoutMs);
    this.arm();
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** A sign of progress: the deadline moves to `timeoutMs` from now, within the limit. */
  progress(): void {
    if (this.timer === undefined) return;
    const dueAtMs = Math.min(performance.now() + this.timeoutMs, this.startedAtMs + this.limitMs);
    if (dueAtMs > this.dueAtMs) {
      this.dueAtMs = dueAtMs;
      this.extended = true;
    }
  }

  /** The response started (or ended): the deadline no longer applies. */
  dispose(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pauses.close();
  }

  private arm(): void {
    // Re-armed when it fires early (progress moved the deadline), so progress() itself stays a field update.
    this.timer = setTimeout(
      () => {
        this.check();
      },
      Math.max(0, Math.ceil(this.dueAtMs - this.judgedNow())),
    );
    this.timer.unref();
  }

  /** Now, less this process's pauses since the request. */
  private judgedNow(): number {
    const nowMs = performance.now();
    return nowMs - this.pauses.ms(nowMs);
  }

  private check(): void {
    const nowMs = performance.now();
    if (this.dueAtMs > this.judgedNow()) {
      this.arm();
      return;
    }
    this.timer = undefined;
    this.pauses.close();
    const message = this.extended
      ? `no source could start answering within ${this.timeoutMs} ms of the last sign that one was under way ` +
        `(${Math.round(nowMs - this.startedAtMs)} ms after the request; such signs count for ${this.limitMs} ms at most)`
      : `no source could start answering within ${this.timeoutMs} ms`;
    this.controller.abort(new DOMException(message, "TimeoutError"));
  }
}
