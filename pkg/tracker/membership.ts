import type { AgentIdentity } from "./tracker.js";

/**
 * Who may hold a session with the tracker. `remoteAddress` is the host (no port) the connection comes
 * from, when known (gRPC); in-process callers have none. Returns true, or the reason for refusing.
 * The Kubernetes membership (agent Pods from an informer) implements the same interface.
 */
export interface Membership {
  admits(identity: AgentIdentity, remoteAddress?: string): true | string;
  /**
   * Optional: the identity the tracker records and ranks by for an admitted agent, e.g. with the zone
   * taken from the cluster instead of what the agent claims. Called right after `admits` returned true.
   */
  identify?(identity: AgentIdentity, remoteAddress?: string): AgentIdentity;
}

/** Self-registration: every agent that asks is admitted (demo, tests, trusted networks). */
export class OpenMembership implements Membership {
  admits(): true {
    return true;
  }
}

/**
 * A fixed list of allowed peers, each a host address (matched against the connection's remote address)
 * or a node name (matched against the name the agent registers with). Node names are self-declared by
 * the agent, so only address entries actually restrict who can connect.
 */
export class StaticMembership implements Membership {
  private readonly allowed: ReadonlySet<string>;

  constructor(allowed: readonly string[]) {
    this.allowed = new Set(allowed.map((entry) => normalizeHost(entry.trim())).filter((entry) => entry !== ""));
  }

  admits(identity: AgentIdentity, remoteAddress?: string): true | string {
    if (remoteAddress !== undefined && this.allowed.has(normalizeHost(remoteAddress))) return true;
    if (this.allowed.has(identity.nodeName)) return true;
    const from = remoteAddress === undefined ? "" : ` from ${remoteAddress}`;
    return `agent ${identity.agentId} on node ${JSON.stringify(identity.nodeName)}${from} is not in the allowed peers`;
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
