import type { V1Node, V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { Informer, InformerEvent } from "../k8s/index.js";
import { keyOf } from "../k8s/index.js";
import { type AgentIdentity, type Membership, normalizeHost } from "../tracker/index.js";

export const ZONE_LABEL = "topology.kubernetes.io/zone";
/** Read when the current label is missing: clusters upgraded from old releases may only have this. */
export const LEGACY_ZONE_LABEL = "failure-domain.beta.kubernetes.io/zone";
/** Agent ids remembered per Pod (agent restarts in the same Pod); older ones have long lost their session. */
const MAX_AGENTS_PER_POD = 16;

/** Why an agent's Pod no longer admits it. */
export type DropReason = "PodDeleted" | "PodTerminating" | "PodNotRunning" | "PodIPChanged";

export interface PeerDrop {
  readonly pod: V1Pod;
  readonly agentIds: readonly string[];
  readonly reason: DropReason;
}

export interface KubernetesMembershipOptions {
  /** Agent Pods: one namespace, the agent selector. */
  readonly pods: Informer<V1Pod>;
  readonly nodes: Informer<V1Node>;
  /** For refusal messages: where agents are looked for. */
  readonly namespace: string;
  readonly selector: string;
  readonly logger: Logger;
  /** Agents admitted from a Pod that just stopped admitting them: end their sessions now. */
  readonly onDrop: (drop: PeerDrop) => void;
  /** A Node's zone label changed: re-rank its agents. */
  readonly onZoneChange: (agentIds: readonly string[], zone: string) => void;
}

/**
 * Membership from the Kubernetes API. An agent is admitted only when the connection comes from the pod
 * IP of an agent Pod (in the namespace, matching the selector, not terminating, not finished) and it
 * registers with that Pod's spec.nodeName. Its zone is its Node's topology.kubernetes.io/zone label,
 * whatever the agent claims.
 *
 * Readiness is deliberately not required: an agent registers while it starts, before its readiness
 * probe passes, and a briefly unready agent still holds and serves verified pieces. What removes an
 * agent is its Pod going away: deleted, terminating (deletionTimestamp), Succeeded/Failed, or a
 * different pod IP. Then the agents admitted from it are dropped at once through onDrop.
 */
export class KubernetesMembership implements Membership {
  /** Normalized pod IP → pod key, for admissible Pods only. */
  private readonly byIp = new Map<string, string>();
  /** Pod key → agent ids admitted from it, oldest first. */
  private readonly agentsByPod = new Map<string, Set<string>>();
  private readonly unsubscribe: (() => void)[];

  constructor(private readonly options: KubernetesMembershipOptions) {
    for (const pod of options.pods.list()) this.index(pod);
    this.unsubscribe = [
      options.pods.on((event) => {
        this.onPod(event);
      }),
      options.nodes.on((event) => {
        this.onNode(event);
      }),
    ];
  }

  admits(identity: AgentIdentity, remoteAddress?: string): true | string {
    if (!this.options.pods.hasSynced || !this.options.nodes.hasSynced)
      return "the controller has not loaded the agent Pods from the Kubernetes API yet";
    if (remoteAddress === undefined) return `agent ${identity.agentId} has no remote address to match against agent Pods`;
    const address = normalizeHost(remoteAddress);
    const key = this.byIp.get(address);
    const pod = key === undefined ? undefined : this.options.pods.get(key);
    if (key === undefined || pod === undefined) {
      return `connection from ${address} is not from a running agent Pod (namespace ${this.options.namespace}, selector ${this.options.selector})`;
    }
    const nodeName = pod.spec?.nodeName ?? "";
    if (identity.nodeName !== nodeName) {
      return `agent ${identity.agentId} registers as node ${JSON.stringify(identity.nodeName)} but its Pod ${key} runs on node ${JSON.stringify(nodeName)}`;
    }
    this.remember(key, identity.agentId);
    return true;
  }

  identify(identity: AgentIdentity, remoteAddress?: string): AgentIdentity {
    const key = remoteAddress === undefined ? undefined : this.byIp.get(normalizeHost(remoteAddress));
    const pod = key === undefined ? undefined : this.options.pods.get(key);
    return { ...identity, zone: this.zoneOf(pod?.spec?.nodeName ?? identity.nodeName) };
  }

  /** The zone label of a Node, "" when unknown. */
  zoneOf(nodeName: string): string {
    return zoneLabel(this.options.nodes.get(nodeName));
  }

  close(): void {
    for (const off of this.unsubscribe) off();
  }

  private onPod(event: InformerEvent<V1Pod>): void {
    const key = keyOf(event.object);
    if (key === undefined) return;
    if (event.type === "added") {
      this.index(event.object);
      return;
    }
    const previous = event.type === "updated" ? event.previous : event.object;
    this.unindex(key, previous);
    let reason: DropReason | undefined;
    // A different uid under the same name is a new Pod (seen as an update when a relist joins the two).
    if (event.type === "deleted" || event.object.metadata?.uid !== event.previous.metadata?.uid) reason = "PodDeleted";
    else {
      this.index(event.object);
      const why = inadmissible(event.object);
      if (why !== undefined) reason = why;
      else if (!sameIps(podIps(event.previous), podIps(event.object))) reason = "PodIPChanged";
    }
    if (reason === undefined) return;
    const agents = this.agentsByPod.get(key);
    this.agentsByPod.delete(key);
    if (agents === undefined || agents.size === 0) return;
    this.options.logger.info({ pod: key, reason, agents: [...agents] }, "agent Pod gone: dropping its peers");
    this.options.onDrop({ pod: event.object, agentIds: [...agents], reason });
  }

  private onNode(event: InformerEvent<V1Node>): void {
    const before = event.type === "updated" ? zoneLabel(event.previous) : event.type === "added" ? "" : zoneLabel(event.object);
    const after = event.type === "deleted" ? "" : zoneLabel(event.object);
    if (before === after) return;
    const nodeName = event.object.metadata?.name ?? "";
    const agentIds: string[] = [];
    for (const [key, agents] of this.agentsByPod) {
      if (this.options.pods.get(key)?.spec?.nodeName === nodeName) agentIds.push(...agents);
    }
    if (agentIds.length === 0) return;
    this.options.logger.info({ node: nodeName, from: before, to: after }, "node zone changed");
    this.options.onZoneChange(agentIds, after);
  }

  private index(pod: V1Pod): void {
    const key = keyOf(pod);
    if (key === undefined || inadmissible(pod) !== undefined) return;
    for (const ip of podIps(pod)) this.byIp.set(ip, key);
  }

  private unindex(key: string, pod: V1Pod): void {
    for (const ip of podIps(pod)) if (this.byIp.get(ip) === key) this.byIp.delete(ip);
  }

  private remember(key: string, agentId: string): void {
    let agents = this.agentsByPod.get(key);
    if (agents === undefined) {
      agents = new Set();
      this.agentsByPod.set(key, agents);
    }
    agents.delete(agentId);
    agents.add(agentId);
    if (agents.size > MAX_AGENTS_PER_POD) {
      const oldest = agents.values().next().value;
      if (oldest !== undefined) agents.delete(oldest);
    }
  }
}

/** Why a Pod cannot admit agents, or undefined when it can. */
function inadmissible(pod: V1Pod): DropReason | undefined {
  if (pod.metadata?.deletionTimestamp !== undefined) return "PodTerminating";
  const phase = pod.status?.phase;
  if (phase === "Succeeded" || phase === "Failed") return "PodNotRunning";
  return undefined;
}

function podIps(pod: V1Pod): string[] {
  const ips = new Set<string>();
  if (pod.status?.podIP !== undefined && pod.status.podIP !== "") ips.add(normalizeHost(pod.status.podIP));
  for (const entry of pod.status?.podIPs ?? []) if (entry.ip !== "") ips.add(normalizeHost(entry.ip));
  return [...ips];
}

function sameIps(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((ip) => b.includes(ip));
}

function zoneLabel(node: V1Node | undefined): string {
  const labels = node?.metadata?.labels ?? {};
  return labels[ZONE_LABEL] ?? labels[LEGACY_ZONE_LABEL] ?? "";
}
