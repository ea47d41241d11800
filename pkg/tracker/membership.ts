import type { WorkloadIdentity } from "../identity/index.js";
import type { AgentIdentity } from "./tracker.js";

/**
 * Who may hold a session with the tracker. `remoteAddress` is the host (no port) the connection comes
 * from, when known (gRPC); in-process callers have none. `peer` is what the agent's TLS certificate
 * says it is (verified against the trust bundle), when the tracker speaks mutual TLS. Returns true, or
 * the reason for refusing. The Kubernetes membership (agent Pods from an informer) implements the same
 * interface.
 */
export interface Membership {
  admits(identity: AgentIdentity, remoteAddress?: string, peer?: WorkloadIdentity): true | string;
  /**
   * Optional: the identity the tracker records and ranks by for an admitted agent, e.g. with the zone
   * taken from the cluster instead of what the agent claims. Called right after `admits` returned true.
   */
  identify?(identity: AgentIdentity, remoteAddress?: string): AgentIdentity;
}

/**
 * Self-registration: every agent that asks is admitted (with mutual TLS: every agent holding a
 * certificate of the trust bundle). For local development; the controller refuses it outside loopback
 * unless forced.
 */
export class OpenMembership implements Membership {
  admits(): true {
    return true;
  }
}

/**
 * A fixed list of allowed peers, each a host address or a node name. An address entry admits
 * connections from that address; a node name entry admits an agent whose TLS certificate names that
 * node. The name an agent registers with is never compared with the list: it is what the agent says,
 * not what anyone verified (with mutual TLS the tracker has already checked it equals the certificate's).
 */
export class StaticMembership implements Membership {
  private readonly allowed: ReadonlySet<string>;

  constructor(allowed: readonly string[]) {
    this.allowed = new Set(allowed.map((entry) => normalizeHost(entry.trim())).filter((entry) => entry !== ""));
  }

  admits(identity: AgentIdentity, remoteAddress?: string, peer?: WorkloadIdentity): true | string {
    if (remoteAddress !== undefined && this.allowed.has(normalizeHost(remoteAddress))) return true;
    if (peer !== undefined && this.allowed.has(peer.name.toLowerCase())) return true;
    const from = remoteAddress === undefined ? "" : ` from ${remoteAddress}`;
    const named =
      peer === undefined
        ? " without a certificate (node name entries need one)"
        : ` with a certificate for node ${JSON.stringify(peer.name)}`;
    return `agent ${identity.agentId}${from}${named} is not in the allowed peers`;
  }
}

/** Lower-cases, drops IPv6 brackets and the IPv4-mapped prefix so `::ffff:10.0.0.1` matches `10.0.0.1`. */
export function normalizeHost(host: string): string {
  const bare = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  return bare.startsWith("::ffff:") && bare.includes(".") ? bare.slice("::ffff:".length) : bare;
}

/** The host part of a grpc-js peer string (`10.0.0.1:5000`, `::1:5000`, `[::1]:5000`), normalized. */
export function hostOfPeer(peer: string): string | undefined {
  if (peer === "" || peer === "unknown") return undefined;
  const colon = peer.lastIndexOf(":");
  // A string without a port (a Unix socket path, or an address grpc-js printed without one).
  if (colon < 0 || !/^\d+$/.test(peer.slice(colon + 1))) return normalizeHost(peer);
  return normalizeHost(peer.slice(0, colon));
}
