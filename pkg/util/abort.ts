/** The reason a signal aborted, as an Error (an AbortError DOMException when the reason is not one). */
export function signalReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new DOMException("The operation was aborted", "AbortError");
}

/**
 * Waits for `promise`, but rejects as soon as `signal` aborts (the promise's work runs on): with
 * `abortError(signal)`, by default the signal's reason.
 */
export function raceSignal<T>(
  promise: Promise<T>,
  signal: AbortSignal,
  abortError: (signal: AbortSignal) => Error = signalReason,
): Promise<T> {
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      reject(abortError(signal));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) {
      reject(signalReason(signal));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signalReason(signal));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
