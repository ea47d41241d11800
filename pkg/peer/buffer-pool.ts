/** Default for BufferPoolOptions.idleReleaseMs: a pool unused this long gives its idle buffers back. */
export const DEFAULT_IDLE_RELEASE_MS = 10_000;

export interface BufferPoolOptions {
  /** Idle bytes kept for reuse; a buffer given back beyond this is dropped (the allocator gets it back). */
  readonly maxIdleBytes: number;
  /** After this long without a take(), the idle buffers are dropped, so an idle agent holds none. */
  readonly idleReleaseMs?: number | undefined;
}

/**
 * Large I/O buffers (pieces, messages), reused: recycling them instead of allocating a fresh megabyte
 * each time saves page faults and garbage collections at a gigabyte a second, and keeps the allocator
 * from churning blocks it may not give back. It keeps at most maxIdleBytes idle and drops them when
 * unused for a while.
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private idle = 0;
  private lent = 0;
  private lastTakeMs = 0;
  private releaseTimer: NodeJS.Timeout | undefined;
  private readonly idleReleaseMs: number;

  constructor(private readonly options: BufferPoolOptions) {
    this.idleReleaseMs = options.idleReleaseMs ?? DEFAULT_IDLE_RELEASE_MS;
  }

  /** A buffer of exactly `size` bytes (contents undefined), lent until give(). */
  take(size: number): Buffer {
    this.lastTakeMs = performance.now();
    this.lent += size;
    const reused = this.free.get(size)?.pop();
    if (reused === undefined) return Buffer.allocUnsafeSlow(size);
    this.idle -= size;
    return reused;
  }

  /** Gives back a buffer from take(); the caller must not touch it (or any view of it) again. */
  give(buffer: Buffer): void {
    const size = buffer.byteLength;
    this.lent -= size;
    if (this.idle + size <= this.options.maxIdleBytes) {
      const list = this.free.get(size);
      if (list === undefined) this.free.set(size, [buffer]);
      else list.push(buffer);
      this.idle += size;
      this.armRelease();
    }
  }

  /** Bytes taken and not given back. */
  get lentBytes(): number {
    return this.lent;
  }

  /** Bytes kept idle for reuse. */
  get idleBytes(): number {
    return this.idle;
  }

  private armRelease(): void {
    if (this.releaseTimer !== undefined) return;
    const check = (): void => {
      const idleForMs = performance.now() - this.lastTakeMs;
      if (idleForMs >= this.idleReleaseMs) {
        this.releaseTimer = undefined;
        this.free.clear();
        this.idle = 0;
      } else {
        this.releaseTimer = setTimeout(check, this.idleReleaseMs - idleForMs).unref();
      }
    };
    this.releaseTimer = setTimeout(check, this.idleReleaseMs).unref();
  }
}
