import type { V1ObjectMeta } from "@kubernetes/client-node";

/**
 * The ImagePrefetch custom resource (shoal.dev/v1alpha1, namespaced) as JSON: the shapes the controller
 * reads and writes. The chart's CRD (charts/shoal/crds/imageprefetches.yaml) is the schema of record;
 * its tests validate what the controller writes against it.
 */

export const PREFETCH_GROUP = "shoal.dev";
export const PREFETCH_VERSION = "v1alpha1";
export const PREFETCH_PLURAL = "imageprefetches";
export const PREFETCH_KIND = "ImagePrefetch";
export const PREFETCH_API_VERSION = `${PREFETCH_GROUP}/${PREFETCH_VERSION}`;

export interface ImagePrefetchObject {
  apiVersion?: string;
  kind?: string;
  /** client-node types the timestamps as Date; in informer caches they are the JSON strings. */
  metadata?: V1ObjectMeta;
  spec?: unknown;
  status?: ImagePrefetchStatus;
}

export type ConditionType = "Resolved" | "Ready" | "Failed";
export type ConditionStatus = "True" | "False" | "Unknown";

export interface Condition {
  type: ConditionType;
  status: ConditionStatus;
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration: number;
}

export interface ImageStatus {
  /** As written in the spec. */
  reference: string;
  /** What the reference resolved to (an index or a manifest), once. */
  digest: string;
  mediaType: string;
  /** Platform manifests chosen from an index (os/arch[/variant] → digest); empty for a single manifest. */
  platforms: { platform: string; digest: string }[];
  /** Manifests and blobs of the chosen platforms. */
  blobs: number;
  bytes: number;
}

export type SeedState = "Pending" | "Seeding" | "Seeded" | "Failed";

export interface SeedStatus {
  node: string;
  zone: string;
  state: SeedState;
  /** For Failed: the agent's error code and message. */
  message?: string;
  bytesFromOrigin: number;
  bytesFromPeers: number;
}

export interface ZoneStatus {
  /** The Node label topology.kubernetes.io/zone; "" for nodes without it. */
  zone: string;
  /** Seeds wanted in the zone: seedsPerZone, or the matching nodes' agents. */
  target: number;
  /** Seeds holding every manifest and blob (as their agents announced to the tracker). */
  seeded: number;
  /** Agents in the zone now. */
  agents: number;
}

export interface ImagePrefetchStatus {
  observedGeneration?: number;
  /** When the controller started working on this generation. */
  startTime?: string;
  /** When every seed first held everything (this generation). */
  readyTime?: string;
  images?: ImageStatus[];
  zones?: ZoneStatus[];
  /** The seeds, at most MAX_SEED_ENTRIES of them (then `seedsTruncated`). */
  seeds?: SeedStatus[];
  seedsTruncated?: boolean;
  /** Seeded/target over all zones, e.g. "3/4": the printer column. */
  progress?: string;
  seeded?: number;
  target?: number;
  /** Bytes the seeds fetched for this content, by source (per seed the largest figure it reported). */
  bytesFromOrigin?: number;
  bytesFromPeers?: number;
  /** Manifest and blob bytes of the resolved images, what one node pulls. */
  imageBytes?: number;
  conditions?: Condition[];
}

/** The status lists at most this many seeds; a nodeSelector over a big cluster would exceed object size limits. */
export const MAX_SEED_ENTRIES = 256;
