import { type Metadata, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { ControllerMetrics } from "../metrics/index.js";
import { TrackerError, isTrackerError } from "./errors.js";
import { leaderAddressMetadata, parseLeaderAddress } from "./leader-redirect.js";

/** A gRPC status a call ends with. */
export interface StatusError {
  readonly code: status;
  readonly details: string;
  readonly metadata?: Metadata;
}

export interface ServerEdgeOptions {
  readonly logger: Logger;
  /** Counts what the edge rejects before it reaches the tracker. */
  readonly metrics?: ControllerMetrics;
  /** TrackerServerOptions.serving: whether this replica serves now (true), or why not. */
  readonly serving?: () => true | string;
  /** TrackerServerOptions.leaderAddress: the leader's `IP:port`, when this replica does not serve. */
  readonly leaderAddress?: () => string | undefined;
}

/** A refusal because this replica does not serve now; carries the leader's address when known. */
class NotServing extends TrackerError {
  constructor(
    reason: string,
    readonly leaderAddress: string | undefined,
  ) {
    super("ERR_TRACKER_UNAVAILABLE", leaderAddress === undefined ? reason : `${reason}; the leader serves at ${leaderAddress}`);
  }
}

/**
 * The tracker server's edge, shared by its session and unary handlers: whether this replica serves,
 * input checks counted as rejected, and TrackerError → gRPC status (here and nowhere else).
 */
export class ServerEdge {
  constructor(private readonly options: ServerEdgeOptions) {}

  /** Throws ERR_TRACKER_UNAVAILABLE (gRPC UNAVAILABLE, with the leader's address when known) while the `serving` option says no. */
  checkServing(): void {
    const serving = this.options.serving?.() ?? true;
    if (serving === true) return;
    const advertised = this.options.leaderAddress?.();
    const parsed = advertised === undefined ? undefined : parseLeaderAddress(advertised);
    if (parsed !== undefined && "invalid" in parsed)
      this.options.logger.warn({ reason: parsed.invalid }, "not redirecting agents to the leader");
    const leader = parsed !== undefined && "address" in parsed ? parsed.address : undefined;
    if (leader !== undefined) this.options.metrics?.redirects.inc();
    throw new NotServing(serving, leader);
  }

  /** Runs a check at the edge, counting what it rejects. */
  check<T>(check: () => T): T {
    try {
      return check();
    } catch (error) {
      this.options.metrics?.requestsRejected.inc({ reason: "invalid" });
      throw error;
    }
  }

  /** An invalid request, counted: ERR_TRACKER_INVALID_ARGUMENT with `message`. */
  rejected(message: string): TrackerError {
    this.options.metrics?.requestsRejected.inc({ reason: "invalid" });
    return new TrackerError("ERR_TRACKER_INVALID_ARGUMENT", message);
  }

  /** TrackerError → gRPC status; anything else is a bug here, logged and reported as INTERNAL. */
  toStatus(error: unknown): StatusError {
    if (isTrackerError(error)) {
      const code = {
        ERR_TRACKER_INVALID_ARGUMENT: status.INVALID_ARGUMENT,
        ERR_TRACKER_NOT_REGISTERED: status.FAILED_PRECONDITION,
        ERR_TRACKER_PERMISSION_DENIED: status.PERMISSION_DENIED,
        ERR_TRACKER_UNAVAILABLE: status.UNAVAILABLE,
        ERR_TRACKER_CLOSED: status.UNAVAILABLE,
        ERR_TRACKER_RESOURCE_EXHAUSTED: status.RESOURCE_EXHAUSTED,
      }[error.code];
      if (error instanceof NotServing && error.leaderAddress !== undefined)
        return { code, details: error.message, metadata: leaderAddressMetadata(error.leaderAddress) };
      return { code, details: error.message };
    }
    this.options.logger.error({ err: error }, "tracker request failed");
    return { code: status.INTERNAL, details: "internal tracker error" };
  }
}
