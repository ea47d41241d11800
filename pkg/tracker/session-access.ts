import type { Logger } from "pino";
import type { WorkloadIdentity } from "../identity/index.js";
import type { ControllerMetrics } from "../metrics/index.js";
import { TrackerError } from "./errors.js";
import { type Membership, OpenMembership } from "./membership.js";
import type { AgentIdentity } from "./tracker.js";

/** Who asks in an agent's name: what the membership is handed, and the certificate identity it presents. */
export interface LookupAccess {
  readonly membership?: Membership;
  readonly remoteAddress?: string;
  readonly peer?: WorkloadIdentity;
  /** The caller's certificate identity; must be the one the agent's session is bound to. */
  readonly principal?: string;
}

/** A session as access is checked against: who it registered as, and the certificate identity it is bound to. */
export interface BoundSession {
  readonly identity: AgentIdentity;
  /** Undefined without TLS. */
  readonly principal: string | undefined;
}

const OPEN = new OpenMembership();

/**
 * Whether a session may register as `identity` (validated): the membership (open when absent) admits it,
 * and `current`, the session that holds the agent id now, if any, is of the same principal: a session of
 * another workload cannot take the id over. Throws ERR_TRACKER_PERMISSION_DENIED otherwise, counted and
 * logged.
 */
export function admitSession(
  identity: AgentIdentity,
  access: LookupAccess,
  current: BoundSession | undefined,
  { logger, metrics }: { readonly logger: Logger; readonly metrics: ControllerMetrics | undefined },
): void {
  let verdict = (access.membership ?? OPEN).admits(identity, access.remoteAddress, access.peer);
  if (verdict === true && current !== undefined && current.principal !== access.principal) {
    verdict = `agent id ${identity.agentId} belongs to a session of another workload (${current.principal ?? "without a certificate"})`;
  }
  if (verdict === true) return;
  metrics?.sessionsRefused.inc();
  logger.warn(
    {
      agentId: identity.agentId,
      nodeName: identity.nodeName,
      remoteAddress: access.remoteAddress,
      principal: access.principal,
      reason: verdict,
    },
    "session refused",
  );
  throw new TrackerError("ERR_TRACKER_PERMISSION_DENIED", verdict);
}

/**
 * Lookups in an agent's name: the membership still admits it, and the caller is the session's principal.
 * Throws ERR_TRACKER_PERMISSION_DENIED otherwise.
 */
export function checkLookupAccess(asker: BoundSession, access: LookupAccess): void {
  if (access.principal !== undefined && access.principal !== asker.principal) {
    throw new TrackerError(
      "ERR_TRACKER_PERMISSION_DENIED",
      `agent ${asker.identity.agentId} has a session of another workload than ${access.principal}`,
    );
  }
  const verdict = (access.membership ?? OPEN).admits(asker.identity, access.remoteAddress, access.peer);
  if (verdict !== true) throw new TrackerError("ERR_TRACKER_PERMISSION_DENIED", verdict);
}
