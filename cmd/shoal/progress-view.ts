/** How often bars are redrawn on a terminal: smooth enough, and cheap beside the transfers. */
const REDRAW_INTERVAL_MS = 100;
const MAX_BAR_WIDTH = 28;
const MIN_BAR_WIDTH = 8;
/** Longer labels (long references) are shortened from the left, where the registry name is. */
const MAX_LABEL_WIDTH = 32;
/** When the terminal does not say. */
const DEFAULT_COLUMNS = 100;
const MB = 1e6;
/** Without a terminal, a line per row at each of these fractions. */
const PLAIN_STEPS = [0.25, 0.5, 0.75, 1];

export interface ProgressOutput {
  write(text: string): unknown;
  /** True on a terminal: bars are redrawn in place with ANSI escapes. */
  readonly isTTY?: boolean;
  /** Terminal width: a line that wrapped would break the cursor-up redraw. */
  readonly columns?: number;
}

interface Row {
  readonly label: string;
  total: number;
  done: number;
  /** Seconds from the start of the view until the row completed. */
  seconds: number | undefined;
  failed: boolean;
  /** Index into PLAIN_STEPS of the next line to print. */
  nextStep: number;
}

/**
 * Live progress of several transfers: on a terminal, one bar per row and a total, redrawn in place
 * (plain ANSI: carriage return and cursor-up, no dependency); otherwise a plain line per row at 25, 50,
 * 75 and 100%, which reads well in CI logs.
 */
export class ProgressView {
  private readonly rows: Row[];
  private readonly started = performance.now();
  private readonly timer: NodeJS.Timeout | undefined;
  private drawnLines = 0;
  private stopped = false;

  constructor(
    private readonly out: ProgressOutput,
    labels: readonly string[],
    totalBytes: number,
    private readonly showTotal = labels.length > 1,
  ) {
    this.rows = labels.map((label) => ({
      label: shorten(label),
      total: totalBytes,
      done: 0,
      seconds: undefined,
      failed: false,
      nextStep: 0,
    }));
    if (out.isTTY === true) {
      this.timer = setInterval(() => {
        this.draw();
      }, REDRAW_INTERVAL_MS);
      this.timer.unref();
      this.draw();
    }
  }

  /** For transfers whose size is known only once they started (a manifest read). */
  setTotal(row: number, totalBytes: number): void {
    const r = this.rows[row];
    if (r) r.total = totalBytes;
  }

  update(row: number, doneBytes: number): void {
    const r = this.rows[row];
    if (!r) return;
    r.done = doneBytes;
    if (this.out.isTTY !== true) this.printSteps(r);
  }

  complete(row: number): void {
    const r = this.rows[row];
    if (!r || r.seconds !== undefined) return;
    r.seconds = this.elapsed();
    r.done = Math.max(r.done, r.total);
    if (this.out.isTTY !== true) this.printSteps(r);
  }

  fail(row: number): void {
    const r = this.rows[row];
    if (r) r.failed = true;
  }

  /** Final redraw; the view writes nothing after this. */
  stop(): void {
    if (this.stopped) return;
    if (this.timer) {
      clearInterval(this.timer);
      this.draw();
    }
    this.stopped = true;
  }

  private elapsed(): number {
    return (performance.now() - this.started) / 1000;
  }

  private printSteps(row: Row): void {
    if (this.stopped || row.total <= 0) return;
    for (let step = PLAIN_STEPS[row.nextStep]; step !== undefined && row.done >= row.total * step; step = PLAIN_STEPS[row.nextStep]) {
      // 100% is the complete pull (every digest verified), not the last byte of the last layer.
      if (step === 1 && row.seconds === undefined) return;
      row.nextStep++;
      const detail = row.seconds !== undefined ? `done in ${row.seconds.toFixed(1)} s` : `at ${this.elapsed().toFixed(1)} s`;
      this.out.write(
        `  ${row.label.padEnd(this.labelWidth())}  ${`${Math.round(step * 100)}%`.padStart(4)}  ${formatMB(row.done)} / ${formatMB(row.total)}  ${detail}\n`,
      );
    }
  }

  private draw(): void {
    if (this.stopped) return;
    const lines = this.rows.map((row) => this.line(row.label, row.done, row.total, row.seconds, row.failed));
    if (this.showTotal) {
      const done = this.rows.reduce((sum, r) => sum + r.done, 0);
      const total = this.rows.reduce((sum, r) => sum + r.total, 0);
      const allDone = this.rows.every((r) => r.seconds !== undefined);
      lines.push(
        this.line(
          "total",
          done,
          total,
          allDone ? Math.max(...this.rows.map((r) => r.seconds ?? 0)) : undefined,
          this.rows.some((r) => r.failed),
        ),
      );
    }
    // Back to the first line of the previous frame, then overwrite every line (ESC[2K clears it).
    const up = this.drawnLines > 0 ? `\x1b[${this.drawnLines}A` : "";
    this.out.write(`${up}${lines.map((l) => `\r\x1b[2K${l}\n`).join("")}`);
    this.drawnLines = lines.length;
  }

  private line(label: string, done: number, total: number, seconds: number | undefined, failed: boolean): string {
    const fraction = total > 0 ? Math.min(1, done / total) : 0;
    const time = seconds ?? this.elapsed();
    const rate = time > 0 ? done / time / MB : 0;
    const state = failed ? "failed" : seconds !== undefined ? `done in ${seconds.toFixed(1)} s` : `${rate.toFixed(1)} MB/s`;
    const head = `  ${label.padEnd(this.labelWidth())} `;
    const tail = ` ${`${Math.floor(fraction * 100)}%`.padStart(4)}  ${formatMB(done).padStart(9)} / ${formatMB(total)}  ${state}`;
    // A pseudo-terminal without a size reports 0 columns.
    const columns = (this.out.columns !== undefined && this.out.columns > 0 ? this.out.columns : DEFAULT_COLUMNS) - 1;
    const width = Math.max(MIN_BAR_WIDTH, Math.min(MAX_BAR_WIDTH, columns - head.length - tail.length));
    const filled = Math.round(fraction * width);
    return `${head}${"█".repeat(filled)}${"░".repeat(width - filled)}${tail}`.slice(0, columns);
  }

  private labelWidth(): number {
    return Math.max(5, ...this.rows.map((r) => r.label.length));
  }
}

function shorten(label: string): string {
  return label.length <= MAX_LABEL_WIDTH ? label : `…${label.slice(label.length - MAX_LABEL_WIDTH + 1)}`;
}

export function formatMB(bytes: number): string {
  return `${(bytes / MB).toFixed(1)} MB`;
}
