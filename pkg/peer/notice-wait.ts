import type { Digest } from "../oci/index.js";
import type { Tracker } from "../tracker/index.js";

/**
 * A wait that a BlobChanged notice of one digest ends early (Tracker.watchBlob). A notice that came since the
 * last wait ended (e.g. while a lookup was under way) ends the next wait at once. Close it on every exit.
 */
export class NoticeWait {
  private noticed = false;
  private wake: (() => void) | undefined;
  private readonly unwatch: () => void;

  constructor(tracker: Tracker, digest: Digest) {
    this.unwatch = tracker.watchBlob(digest, () => {
      this.noticed = true;
      this.wake?.();
    });
  }

  /** Resolves after `ms`, at a notice, or at once if one is pending; rejects when `signal` aborts. */
  async sleep(ms: number, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    if (!this.noticed) {
      await new Promise<void>((resolve, reject) => {
        const cleanUp = (): void => {
          clearTimeout(timer);
          signal.removeEventListener("abort", onAbort);
          this.wake = undefined;
        };
        const done = (): void => {
          cleanUp();
          resolve();
        };
        const onAbort = (): void => {
          cleanUp();
          reject(signal.reason instanceof Error ? signal.reason : new DOMException("The operation was aborted", "AbortError"));
        };
        const timer = setTimeout(done, ms);
        this.wake = done;
        signal.addEventListener("abort", onAbort, { once: true });
      });
    }
    this.noticed = false;
  }

  close(): void {
    this.wake?.();
    this.unwatch();
  }
}
