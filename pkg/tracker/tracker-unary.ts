import { type ServiceError, status } from "@grpc/grpc-js";
import { signalReason } from "../util/index.js";
import { TrackerError, type TrackerErrorCode, isTrackerError } from "./errors.js";

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

/** What sessionCall needs of the connection (tracker-connection.ts). */
export interface UnarySessions<C> {
  /** The client of the registered session and a fresh deadline; waits for a session within the session grace. */
  readyClient(signal: AbortSignal | undefined): Promise<{ client: C; deadline: number }>;
  /** `client` is the registered session's. */
  isCurrent(client: C): boolean;
  /** The session of `client` answered nothing, twice: take it for dead (lost) and dial again. */
  abandon(client: C): void;
  /** How long one call may take in all, its second attempt and the wait for a next session included. */
  readonly callBudgetMs: number;
}

/**
 * A unary call made through `call(client, deadline)` on the registered session, asked again where the
 * failure says more about the session than about the tracker. A call that gets no answer (its deadline
 * passed, or the transport failed) on the session that is still current is asked once more on it: a
 * tracker slow for a moment (its event loop behind a re-announce storm, or this agent's own) answers
 * then; silent again, the session is taken for dead: a link cut and back, a tracker that forgot the
 * connection, which keepalive would notice only seconds later. It is then abandoned (it counts as
 * lost, so the session grace applies) and the call asked once on the next session, as is a call whose
 * session was lost or replaced while it was under way. All of it within `callBudgetMs`; any other
 * failure is final.
 */
export async function sessionCall<C, T>(
  sessions: UnarySessions<C>,
  signal: AbortSignal | undefined,
  call: (client: C, deadline: number) => Promise<T>,
): Promise<T> {
  const endsAt = performance.now() + sessions.callBudgetMs;
  const leftMs = (): number => endsAt - performance.now();
  const first = await sessions.readyClient(signal);
  let failure = await attempt(call, first.client, first.deadline);
  if (failure.kind === "answered") return failure.value;
  if (sessions.isCurrent(first.client)) {
    if (leftMs() <= 0) throw failure.error;
    // Returns the same session at once (it is registered), with a new deadline.
    const again = await sessions.readyClient(signal);
    failure = await attempt(call, again.client, Math.min(again.deadline, Date.now() + leftMs()));
    if (failure.kind === "answered") return failure.value;
    sessions.abandon(again.client);
  }
  if (leftMs() <= 0) throw failure.error;
  const next = await readyWithin(sessions, signal, leftMs(), failure.error);
  return await call(next.client, Math.min(next.deadline, Date.now() + leftMs()));
}

/** The answer, or the failure of a call that got none; throws any other failure. */
async function attempt<C, T>(
  call: (client: C, deadline: number) => Promise<T>,
  client: C,
  deadline: number,
): Promise<{ kind: "answered"; value: T } | { kind: "unanswered"; error: unknown }> {
  try {
    return { kind: "answered", value: await call(client, deadline) };
  } catch (error: unknown) {
    if (!unanswered(error)) throw error;
    return { kind: "unanswered", error };
  }
}

/** readyClient, waiting at most `ms`; past it, `failure` (the last call's) is thrown. */
async function readyWithin<C>(
  sessions: UnarySessions<C>,
  signal: AbortSignal | undefined,
  ms: number,
  failure: unknown,
): Promise<{ client: C; deadline: number }> {
  const limit = AbortSignal.timeout(Math.max(1, Math.ceil(ms)));
  try {
    return await sessions.readyClient(signal === undefined ? limit : AbortSignal.any([signal, limit]));
  } catch (error: unknown) {
    if (signal?.aborted !== true && limit.aborted) throw failure;
    throw error;
  }
}

/** The call got no answer: its deadline passed or its transport failed (not a refusal, not the caller's abort). */
function unanswered(error: unknown): boolean {
  if (!isTrackerError(error, "ERR_TRACKER_UNAVAILABLE")) return false;
  const code = (error.cause as Partial<ServiceError> | undefined)?.code;
  return code === status.DEADLINE_EXCEEDED || code === status.UNAVAILABLE;
}
