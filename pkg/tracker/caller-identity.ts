import { X509Certificate } from "node:crypto";
import type { Logger } from "pino";
import { type WorkloadIdentity, describeIdentity, identityHasAddress, identityOfCertificate, identityUri } from "../identity/index.js";
import type { ControllerMetrics } from "../metrics/index.js";
import { TrackerError } from "./errors.js";
import type { Membership } from "./membership.js";
import type { LookupAccess } from "./session-access.js";
import type { AgentIdentity } from "./tracker.js";

/** A grpc-js call as far as its TLS peer is concerned. */
export interface AuthenticatedCall {
  getAuthContext(): { sslPeerCertificate?: { raw: Buffer } };
}

/**
 * The agent's identity from its TLS certificate (already verified by the listener); undefined on a
 * plaintext tracker (`tls` false). A TLS tracker without one is a bug, refused rather than served anonymously.
 */
export function verifiedPeer(call: AuthenticatedCall, tls: boolean): WorkloadIdentity | undefined {
  if (!tls) return undefined;
  const raw = call.getAuthContext().sslPeerCertificate?.raw;
  const peer = raw === undefined ? undefined : identityOfCertificate(new X509Certificate(raw));
  if (peer === undefined) throw new TrackerError("ERR_TRACKER_PERMISSION_DENIED", "no verified agent certificate on this connection");
  return peer;
}

/** What a call in an agent's name brings for the tracker to check (MemoryTracker.register, lookup, resolveTag). */
export function callerAccess(
  membership: Membership | undefined,
  remoteAddress: string | undefined,
  peer: WorkloadIdentity | undefined,
): LookupAccess {
  return {
    ...(membership === undefined ? {} : { membership }),
    ...(remoteAddress === undefined ? {} : { remoteAddress }),
    ...(peer === undefined ? {} : { peer, principal: identityUri(peer) }),
  };
}

/**
 * A session says who it is (node name, peer address); with TLS that must be what the certificate
 * says: its node name, and a peer address on one of its IP addresses, so other agents are never sent
 * to an address the agent does not own. Throws ERR_TRACKER_PERMISSION_DENIED (counted, logged) otherwise.
 */
export function bindToCertificate(
  identity: AgentIdentity,
  peer: WorkloadIdentity,
  { logger, metrics }: { readonly logger: Logger; readonly metrics: ControllerMetrics | undefined },
): void {
  const host = hostOfAddress(identity.peerAddress);
  const refusal =
    identity.nodeName !== peer.name
      ? `registers as node ${JSON.stringify(identity.nodeName)} but its certificate is for ${describeIdentity(peer)}`
      : !identityHasAddress(peer, host)
        ? `advertises peer address ${identity.peerAddress} but its certificate (${describeIdentity(peer)}) names ${peer.ips.join(", ") || "no address"}`
        : undefined;
  if (refusal === undefined) return;
  metrics?.sessionsRefused.inc();
  logger.warn(
    {
      agentId: identity.agentId,
      nodeName: identity.nodeName,
      peerAddress: identity.peerAddress,
      certificate: identityUri(peer),
      reason: refusal,
    },
    "session refused",
  );
  throw new TrackerError("ERR_TRACKER_PERMISSION_DENIED", `agent ${identity.agentId} ${refusal}`);
}

/** The host of `host:port` (`[v6]:port` too), without brackets. */
function hostOfAddress(address: string): string {
  const match = /^\[([^\]]+)\]:\d+$/.exec(address) ?? /^([^:]+):\d+$/.exec(address);
  return match?.[1] ?? address;
}
