import type { ResolvedImage } from "./prefetch-resolver.js";
import type { SeedPlan } from "./prefetch-planner.js";
import {
  type Condition,
  type ConditionStatus,
  type ConditionType,
  type ImagePrefetchStatus,
  MAX_SEED_ENTRIES,
  type SeedState,
  type SeedStatus,
} from "./prefetch-types.js";

/** A condition as the reconciler decides it; the transition time is filled in by withCondition. */
export interface ConditionDecision {
  readonly status: ConditionStatus;
  readonly reason: string;
  readonly message: string;
}

/**
 * Sets one condition, keeping its lastTransitionTime when the status did not change (the Kubernetes
 * convention: the time says when it last flipped, not when it was last written).
 */
export function withCondition(
  conditions: readonly Condition[],
  type: ConditionType,
  decision: ConditionDecision,
  nowIso: string,
  generation: number,
): Condition[] {
  const previous = conditions.find((c) => c.type === type);
  const lastTransitionTime = previous !== undefined && previous.status === decision.status ? previous.lastTransitionTime : nowIso;
  const next: Condition = {
    type,
    status: decision.status,
    reason: decision.reason,
    message: truncate(decision.message),
    lastTransitionTime,
    observedGeneration: generation,
  };
  return [...conditions.filter((c) => c.type !== type), next].sort((a, b) => ORDER.indexOf(a.type) - ORDER.indexOf(b.type));
}

const ORDER: readonly ConditionType[] = ["Resolved", "Ready", "Failed"];
/** Condition messages are for people; the API server limits their size (32 KiB), a screen far less. */
const MAX_MESSAGE_LENGTH = 1024;

function truncate(message: string): string {
  return message.length > MAX_MESSAGE_LENGTH ? `${message.slice(0, MAX_MESSAGE_LENGTH - 3)}...` : message;
}

export interface SeedView {
  readonly node: string;
  readonly zone: string;
  readonly state: SeedState;
  readonly message?: string | undefined;
  readonly bytesFromOrigin: number;
  readonly bytesFromPeers: number;
}

export interface StatusView {
  readonly generation: number;
  readonly startTime: string;
  readonly readyTime: string | undefined;
  readonly images: readonly ResolvedImage[] | undefined;
  readonly plan: SeedPlan | undefined;
  readonly seeds: readonly SeedView[];
  readonly conditions: readonly Condition[];
}

/** The status subresource's content from what the reconciler knows now. */
export function buildStatus(view: StatusView): ImagePrefetchStatus {
  const seeds = [...view.seeds].sort((a, b) => a.zone.localeCompare(b.zone) || a.node.localeCompare(b.node));
  const seeded = seeds.filter((s) => s.state === "Seeded").length;
  const target = view.plan?.zones.reduce((n, z) => n + z.target, 0) ?? 0;
  const status: ImagePrefetchStatus = {
    observedGeneration: view.generation,
    startTime: view.startTime,
    ...(view.readyTime === undefined ? {} : { readyTime: view.readyTime }),
    conditions: [...view.conditions],
    progress: `${seeded}/${target}`,
    seeded,
    target,
    bytesFromOrigin: seeds.reduce((n, s) => n + s.bytesFromOrigin, 0),
    bytesFromPeers: seeds.reduce((n, s) => n + s.bytesFromPeers, 0),
  };
  if (view.images !== undefined) {
    status.images = view.images.map((image) => ({
      reference: image.text,
      digest: image.digest,
      mediaType: image.mediaType,
      platforms: image.platforms.map((p) => ({ platform: p.platform, digest: p.digest })),
      blobs: image.manifests.length + image.blobs.length,
      bytes: image.bytes,
    }));
    status.imageBytes = view.images.reduce((n, i) => n + i.bytes, 0);
  }
  if (view.plan !== undefined) {
    status.zones = view.plan.zones.map((z) => ({
      zone: z.zone,
      target: z.target,
      agents: z.agents,
      seeded: seeds.filter((s) => s.zone === z.zone && s.state === "Seeded").length,
    }));
    status.seeds = seeds.slice(0, MAX_SEED_ENTRIES).map((s): SeedStatus => ({
      node: s.node,
      zone: s.zone,
      state: s.state,
      ...(s.message === undefined ? {} : { message: truncate(s.message) }),
      bytesFromOrigin: s.bytesFromOrigin,
      bytesFromPeers: s.bytesFromPeers,
    }));
    if (seeds.length > MAX_SEED_ENTRIES) status.seedsTruncated = true;
  }
  return status;
}

/** Ready and Failed once the images are resolved: from the plan and each seed's state. */
export function seedingConditions(
  plan: SeedPlan,
  seeds: readonly SeedView[],
  target: "seedsPerZone" | "nodeSelector",
): { ready: ConditionDecision; failed: ConditionDecision } {
  const seeded = seeds.filter((v) => v.state === "Seeded").length;
  const wanted = plan.zones.reduce((n, z) => n + z.target, 0);
  let ready: ConditionDecision;
  if (plan.zonesWithoutAgents.length > 0) {
    ready = {
      status: "False",
      reason: "NoAgentsInZone",
      message: `no agent runs in zone ${plan.zonesWithoutAgents.join(", ")} (spec.target.zones); seeded ${seeded}/${wanted} elsewhere`,
    };
  } else if (wanted === 0) {
    ready = {
      status: "False",
      reason: "NoAgents",
      message:
        target === "nodeSelector" ? "no agent runs on a node matching spec.target.nodeSelector" : "no agent has a session with the tracker",
    };
  } else if (seeded < wanted) {
    const lagging = plan.zones
      .filter((z) => seeds.filter((v) => v.zone === z.zone && v.state === "Seeded").length < z.target)
      .map((z) => (z.zone === "" ? "(no zone)" : z.zone));
    ready = { status: "False", reason: "Seeding", message: `${seeded}/${wanted} seeds hold every image; waiting in ${lagging.join(", ")}` };
  } else {
    const missing =
      plan.nodesWithoutAgent.length > 0 ? `; matching nodes without an agent: ${plan.nodesWithoutAgent.slice(0, 10).join(", ")}` : "";
    ready = {
      status: "True",
      reason: "Seeded",
      message: `${seeded}/${wanted} seeds in ${plan.zones.length} zone(s) hold every image${missing}`,
    };
  }
  const failedSeeds = seeds.filter((v) => v.state === "Failed");
  const failed: ConditionDecision =
    failedSeeds.length > 0 && ready.status !== "True"
      ? { status: "True", reason: "SeedFailed", message: failedSeeds.map((v) => `${v.node}: ${v.message ?? ""}`).join("; ") }
      : { status: "False", reason: "NoFailure", message: "" };
  return { ready, failed };
}
