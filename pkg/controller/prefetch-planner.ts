import { createHash } from "node:crypto";
import type { PrefetchTarget } from "./prefetch-spec.js";

export interface PlannerAgent {
  readonly agentId: string;
  readonly nodeName: string;
  /** The zone the tracker ranks the agent by (its Node's label); "" when unknown. */
  readonly zone: string;
}

export interface PlanInput {
  readonly target: PrefetchTarget;
  /** Agents with a session, oldest registration first. */
  readonly agents: readonly PlannerAgent[];
  /** Nodes and their labels (nodeSelector targets; nodes without an agent are reported). */
  readonly nodes: readonly { readonly name: string; readonly labels: Readonly<Record<string, string>> }[];
  /** Whether the agent holds every manifest and blob already. */
  readonly holdsAll: (agentId: string) => boolean;
  /** Nodes chosen before (this leader, or the status a previous leader wrote): kept while they can be. */
  readonly previous: ReadonlySet<string>;
  /** Nodes whose last attempt failed recently: chosen only when nothing else is left. */
  readonly failed: ReadonlySet<string>;
  /** Spreads different ImagePrefetches over different nodes (the resource's uid). */
  readonly salt: string;
}

export interface ZonePlan {
  readonly zone: string;
  readonly target: number;
  readonly agents: number;
  readonly seeds: readonly PlannerAgent[];
}

export interface SeedPlan {
  readonly zones: readonly ZonePlan[];
  readonly seeds: readonly PlannerAgent[];
  /** Zones named in spec.target.zones with no agent. */
  readonly zonesWithoutAgents: readonly string[];
  /** Nodes matching spec.target.nodeSelector with no agent. */
  readonly nodesWithoutAgent: readonly string[];
}

/**
 * Chooses the seeds of an ImagePrefetch. With seedsPerZone N: in every zone with agents (or every zone
 * listed), N agents, preferring those that already hold the content, then nodes whose last attempt did
 * not fail recently (a failed seed is replaced when its zone has another agent), then those chosen
 * before, then a stable hash of (resource, node) so that different resources land on different nodes. With nodeSelector: every agent on a matching Node. One agent per
 * node (the newest session of a restarted agent).
 */
export function planSeeds(input: PlanInput): SeedPlan {
  const byNode = new Map<string, PlannerAgent>();
  for (const agent of input.agents) byNode.set(agent.nodeName, agent);
  const agents = [...byNode.values()];
  const byZone = new Map<string, PlannerAgent[]>();
  for (const agent of agents) byZone.set(agent.zone, [...(byZone.get(agent.zone) ?? []), agent]);

  if (input.target.kind === "nodeSelector") {
    const selector = input.target.nodeSelector;
    const matches = (labels: Readonly<Record<string, string>>): boolean => Object.entries(selector).every(([k, v]) => labels[k] === v);
    const matching = new Set(input.nodes.filter((n) => matches(n.labels)).map((n) => n.name));
    const seeds = agents.filter((a) => matching.has(a.nodeName));
    const zones = [...byZone].map(([zone, members]) => {
      const chosen = seeds.filter((s) => s.zone === zone);
      return { zone, target: chosen.length, agents: members.length, seeds: chosen };
    });
    return {
      zones: zones.filter((z) => z.target > 0).sort((a, b) => a.zone.localeCompare(b.zone)),
      seeds,
      zonesWithoutAgents: [],
      nodesWithoutAgent: [...matching].filter((name) => !byNode.has(name)).sort(),
    };
  }

  const n = input.target.seedsPerZone;
  const zoneNames = input.target.zones ?? [...byZone.keys()];
  const zones: ZonePlan[] = [];
  for (const zone of [...new Set(zoneNames)].sort()) {
    const members = byZone.get(zone) ?? [];
    const ranked = [...members].sort(
      (a, b) =>
        Number(input.holdsAll(b.agentId)) - Number(input.holdsAll(a.agentId)) ||
        Number(input.failed.has(a.nodeName)) - Number(input.failed.has(b.nodeName)) ||
        Number(input.previous.has(b.nodeName)) - Number(input.previous.has(a.nodeName)) ||
        score(input.salt, a.nodeName).localeCompare(score(input.salt, b.nodeName)),
    );
    const seeds = ranked.slice(0, n);
    zones.push({ zone, target: Math.min(n, members.length), agents: members.length, seeds });
  }
  return {
    zones,
    seeds: zones.flatMap((z) => z.seeds),
    zonesWithoutAgents: zones.filter((z) => z.agents === 0).map((z) => z.zone),
    nodesWithoutAgent: [],
  };
}

function score(salt: string, node: string): string {
  return createHash("sha256").update(`${salt}\0${node}`).digest("hex");
}
