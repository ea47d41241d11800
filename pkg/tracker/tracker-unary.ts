import { type ServiceError, status } from "@grpc/grpc-js";
import { signalReason } from "../util/index.js";
import { TrackerError, type TrackerErrorCode } from "./errors.js";

/**
 * One unary call to the tracker (Lookup, ResolveTag). `start` makes the call (with its deadline) and hands
 * it the callback; the call is cancelled when `signal` aborts. Resolves with `parse` of the answer;
 * rejects with the signal's reason, the call's failure as a TrackerError naming `target()` (the address
 * dialed then), or what `parse` threw.
 */
export function unaryCall<R, T>(
  start: (callback: (error: ServiceError | null, response: R) => void) => { cancel(): void },
  signal: AbortSignal | undefined,
  target: () => string,
  parse: (response: R) => T,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      call.cancel();
    };
    const call = start((error, response) => {
      signal?.removeEventListener("abort", onAbort);
      if (signal?.aborted === true) reject(signalReason(signal));
      else if (error !== null) reject(lookupError(error, target()));
      else {
        try {
          resolve(parse(response));
        } catch (invalid) {
          reject(invalid instanceof Error ? invalid : new Error(String(invalid)));
        }
      }
    });
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** gRPC status of a failed lookup → TrackerError. Everything transport-like is ERR_TRACKER_UNAVAILABLE. */
function lookupError(error: ServiceError, address: string): TrackerError {
  const codes: Partial<Record<status, TrackerErrorCode>> = {
    [status.FAILED_PRECONDITION]: "ERR_TRACKER_NOT_REGISTERED",
    [status.PERMISSION_DENIED]: "ERR_TRACKER_PERMISSION_DENIED",
    [status.INVALID_ARGUMENT]: "ERR_TRACKER_INVALID_ARGUMENT",
  };
  const code = codes[error.code] ?? "ERR_TRACKER_UNAVAILABLE";
  return new TrackerError(code, `tracker lookup at ${address} failed: ${status[error.code]} ${error.details}`, { cause: error });
}
