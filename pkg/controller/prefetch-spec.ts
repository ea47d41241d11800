import { parseDuration } from "../config/index.js";
import { type ImageReference, parseImageReference } from "../oci/index.js";

/** Images one ImagePrefetch may name. */
export const MAX_PREFETCH_IMAGES = 64;
export const MAX_SEEDS_PER_ZONE = 100;
export const MAX_PULL_SECRETS = 16;
export const DEFAULT_PLATFORMS: readonly string[] = ["linux/amd64"];
const PLATFORM = /^[a-z0-9_-]+\/[a-z0-9_-]+(\/[a-z0-9_.-]+)?$/;
const SECRET_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** Label keys and values as the API server allows them on Nodes. */
const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

export type PrefetchTarget =
  /** N agents per zone, picked by the controller; `zones` limits (and requires) the zones. */
  | { readonly kind: "seedsPerZone"; readonly seedsPerZone: number; readonly zones: readonly string[] | undefined }
  /** Every agent on a Node whose labels match. */
  | { readonly kind: "nodeSelector"; readonly nodeSelector: Readonly<Record<string, string>> };

export interface PrefetchImageSpec {
  /** As written. */
  readonly text: string;
  readonly reference: ImageReference;
}

/** A validated ImagePrefetch spec. */
export interface PrefetchSpec {
  readonly images: readonly PrefetchImageSpec[];
  /** `os/arch[/variant]`, used for multi-platform indexes. */
  readonly platforms: readonly string[];
  readonly target: PrefetchTarget;
  readonly pullSecrets: readonly string[];
  /** Unix ms; absent means now. */
  readonly startAtMs: number | undefined;
  /** After this long from the start, the controller deletes the resource. */
  readonly ttlMs: number | undefined;
}

/** Why a spec cannot be used, with the field it is about. */
export class InvalidSpec extends Error {
  override readonly name = "InvalidSpec";
}

function record(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new InvalidSpec(`${field} must be an object`);
  return value as Record<string, unknown>;
}

function stringList(value: unknown, field: string, max: number): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) throw new InvalidSpec(`${field} must be a list of strings`);
  if (value.length > max) throw new InvalidSpec(`${field} has ${value.length} entries; at most ${max}`);
  return value as string[];
}

/**
 * Checks an ImagePrefetch spec the way the CRD schema does, and what a schema cannot say (reference
 * grammar, one target kind, label syntax), with a message naming the field. The API server enforces the
 * schema too; this keeps the controller safe from objects written before a schema change.
 */
export function parsePrefetchSpec(raw: unknown): PrefetchSpec {
  const spec = record(raw ?? {}, "spec");
  const texts = stringList(spec.images ?? [], "spec.images", MAX_PREFETCH_IMAGES);
  if (texts.length === 0) throw new InvalidSpec("spec.images must name at least one image");
  const images = texts.map((text, i) => {
    try {
      return { text, reference: parseImageReference(text) };
    } catch (error: unknown) {
      throw new InvalidSpec(`spec.images[${i}] ${JSON.stringify(text)}: ${error instanceof Error ? error.message : String(error)}`);
    }
  });
  const platforms = spec.platforms === undefined ? [...DEFAULT_PLATFORMS] : stringList(spec.platforms, "spec.platforms", 16);
  if (platforms.length === 0) throw new InvalidSpec("spec.platforms must not be empty (leave it out for linux/amd64)");
  for (const p of platforms)
    if (!PLATFORM.test(p)) throw new InvalidSpec(`spec.platforms: ${JSON.stringify(p)} is not os/arch or os/arch/variant`);
  const pullSecrets = stringList(spec.pullSecrets ?? [], "spec.pullSecrets", MAX_PULL_SECRETS);
  for (const name of pullSecrets)
    if (name.length > 253 || !SECRET_NAME.test(name))
      throw new InvalidSpec(`spec.pullSecrets: ${JSON.stringify(name)} is not a Secret name`);
  let startAtMs: number | undefined;
  if (spec.schedule !== undefined) {
    const schedule = record(spec.schedule, "spec.schedule");
    if (schedule.startAt !== undefined) {
      if (
        typeof schedule.startAt !== "string" ||
        !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(schedule.startAt)
      ) {
        throw new InvalidSpec("spec.schedule.startAt must be an RFC 3339 time such as 2026-01-02T03:04:05Z");
      }
      startAtMs = Date.parse(schedule.startAt);
    }
  }
  let ttlMs: number | undefined;
  if (spec.ttl !== undefined) {
    try {
      ttlMs = typeof spec.ttl === "string" ? parseDuration(spec.ttl) : NaN;
    } catch {
      ttlMs = NaN;
    }
    if (!(ttlMs > 0)) throw new InvalidSpec("spec.ttl must be a duration above zero such as 30m or 24h");
  }
  return { images, platforms, target: parseTarget(spec.target), pullSecrets, startAtMs, ttlMs };
}

function parseTarget(raw: unknown): PrefetchTarget {
  if (raw === undefined) return { kind: "seedsPerZone", seedsPerZone: 1, zones: undefined };
  const target = record(raw, "spec.target");
  const hasSeeds = target.seedsPerZone !== undefined;
  const hasSelector = target.nodeSelector !== undefined;
  if (hasSeeds === hasSelector) throw new InvalidSpec("spec.target must set exactly one of seedsPerZone and nodeSelector");
  if (hasSelector) {
    if (target.zones !== undefined) throw new InvalidSpec("spec.target.zones only applies with seedsPerZone");
    const selector = record(target.nodeSelector, "spec.target.nodeSelector");
    const labels: Record<string, string> = {};
    for (const [key, value] of Object.entries(selector)) {
      if (key.length > 316 || !LABEL_KEY.test(key))
        throw new InvalidSpec(`spec.target.nodeSelector: ${JSON.stringify(key)} is not a label key`);
      if (typeof value !== "string" || !LABEL_VALUE.test(value))
        throw new InvalidSpec(`spec.target.nodeSelector.${key}: must be a label value`);
      labels[key] = value;
    }
    if (Object.keys(labels).length === 0) throw new InvalidSpec("spec.target.nodeSelector must name at least one label");
    return { kind: "nodeSelector", nodeSelector: labels };
  }
  const n = target.seedsPerZone;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > MAX_SEEDS_PER_ZONE)
    throw new InvalidSpec(`spec.target.seedsPerZone must be a whole number from 1 to ${MAX_SEEDS_PER_ZONE}`);
  const zones = target.zones === undefined ? undefined : stringList(target.zones, "spec.target.zones", 64);
  if (zones?.length === 0) throw new InvalidSpec("spec.target.zones must not be empty (leave it out for every zone with agents)");
  return { kind: "seedsPerZone", seedsPerZone: n, zones };
}
