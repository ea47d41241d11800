import { abortedBySignal } from "./store-helpers.js";

interface Waiter {
  readonly index: number;
  resolve(): void;
  reject(error: Error): void;
}

/** Callers of waitForPiece, woken when their piece is held or the partial ends. */
export class PieceWaiters {
  private readonly waiters = new Set<Waiter>();

  wait(index: number, signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted === true) return Promise.reject(abortedBySignal(signal));
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        if (signal !== undefined) waiter.reject(abortedBySignal(signal));
      };
      const done = (): void => {
        this.waiters.delete(waiter);
        signal?.removeEventListener("abort", onAbort);
      };
      const waiter: Waiter = {
        index,
        resolve: () => {
          done();
          resolve();
        },
        reject: (error) => {
          done();
          reject(error);
        },
      };
      this.waiters.add(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Wakes every waiter whose piece `isHeld` says is there. */
  wakeHeld(isHeld: (index: number) => boolean): void {
    for (const waiter of [...this.waiters]) if (isHeld(waiter.index)) waiter.resolve();
  }

  rejectAll(error: Error): void {
    for (const waiter of [...this.waiters]) waiter.reject(error);
  }
}
