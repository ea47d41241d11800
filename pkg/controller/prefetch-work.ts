import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { Digest } from "../oci/index.js";
import type { BasicCredentials } from "../registry/index.js";
import type { PrefetchAssignment, PrefetchReport } from "../tracker/index.js";
import { PrefetchFailure, type PrefetchFailureReason } from "./errors.js";
import type { SeedPlan } from "./prefetch-planner.js";
import type { PullSecretReader } from "./prefetch-pull-secrets.js";
import { type PrefetchResolver, type ResolvedImage, checkManifestBudget } from "./prefetch-resolver.js";
import type { PrefetchSpec } from "./prefetch-spec.js";
import type { Condition, ImagePrefetchObject } from "./prefetch-types.js";

/** What the leader keeps about one ImagePrefetch generation while it works on it. Lost on fail-over; the status carries what must survive. */
export interface PrefetchWork {
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly generation: number;
  readonly spec: PrefetchSpec | undefined;
  readonly specError: string | undefined;
  readonly startTime: string;
  readyTime: string | undefined;
  /** Digests resolved by an earlier leader (status.images), by reference text: resolved once, not again. */
  readonly knownDigests: ReadonlyMap<string, Digest>;
  images: ResolvedImage[] | undefined;
  /** Every manifest and blob digest of the images. */
  digests: ReadonlySet<Digest>;
  assignment: PrefetchAssignment | undefined;
  resolving: AbortController | undefined;
  failure: { readonly reason: PrefetchFailureReason; readonly message: string } | undefined;
  attempts: number;
  retryAtMs: number;
  plan: SeedPlan | undefined;
  /** Agent id → the assignment id it was sent, when, and when its agent last reported on it. */
  readonly assigned: Map<string, { readonly id: string; readonly atMs: number; reportAtMs: number | undefined }>;
  /** Node → its bytes for this content (per field the largest reported; carried over from the status on fail-over). */
  readonly bytes: Map<string, { origin: number; peers: number }>;
  /** Node → the latest report of its agent. */
  readonly reports: Map<string, PrefetchReport>;
  /** Node → why its last attempt failed and when to try again. */
  readonly seedFailures: Map<
    string,
    { readonly code: string; readonly message: string; readonly retryAtMs: number; readonly attempts: number }
  >;
  /** Nodes seeded before (this leader, or the status): kept as seeds while they can be. */
  readonly previousSeeds: Set<string>;
  conditions: Condition[];
  timer: NodeJS.Timeout | undefined;
  /** When `timer` fires. */
  timerAtMs: number;
  lastStatus: string | undefined;
  lastWriteMs: number;
  /** What the last Events said, so that only changes are recorded. */
  lastEvent: { ready: boolean; failure: string | undefined; resolved: boolean };
}

export function newWork(
  object: ImagePrefetchObject,
  key: string,
  spec: PrefetchSpec | undefined,
  specError: string | undefined,
  nowIso: string,
): PrefetchWork {
  const metadata = object.metadata;
  const generation = metadata?.generation ?? 1;
  const status = object.status?.observedGeneration === generation ? object.status : undefined;
  const knownDigests = new Map<string, Digest>();
  for (const image of status?.images ?? []) knownDigests.set(image.reference, image.digest as Digest);
  const bytes = new Map<string, { origin: number; peers: number }>();
  const previousSeeds = new Set<string>();
  for (const seed of status?.seeds ?? []) {
    bytes.set(seed.node, { origin: seed.bytesFromOrigin, peers: seed.bytesFromPeers });
    previousSeeds.add(seed.node);
  }
  return {
    key,
    namespace: metadata?.namespace ?? "",
    name: metadata?.name ?? "",
    uid: metadata?.uid ?? "",
    generation,
    spec,
    specError,
    startTime: status?.startTime ?? nowIso,
    readyTime: status?.readyTime,
    knownDigests,
    images: undefined,
    digests: new Set(),
    assignment: undefined,
    resolving: undefined,
    failure: undefined,
    attempts: 0,
    retryAtMs: 0,
    plan: undefined,
    assigned: new Map(),
    bytes,
    reports: new Map(),
    seedFailures: new Map(),
    previousSeeds,
    conditions: [...(status?.conditions ?? [])],
    timer: undefined,
    timerAtMs: 0,
    lastStatus: undefined,
    lastWriteMs: 0,
    lastEvent: {
      ready: status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false,
      failure: status?.conditions?.find((c) => c.type === "Failed" && c.status === "True")?.reason,
      resolved: status?.conditions?.some((c) => c.type === "Resolved" && c.status === "True") ?? false,
    },
  };
}

/**
 * The assignment the seeds get: every image's manifests (bytes) and blobs, with the credentials for
 * its registry. Its id changes with the content, so agents never mix two versions of one resource.
 */
export function assignmentOf(
  work: PrefetchWork,
  images: readonly ResolvedImage[],
  credentials: ReadonlyMap<string, BasicCredentials>,
): PrefetchAssignment {
  const hash = createHash("sha256");
  for (const image of images) {
    hash.update(`${image.registry}/${image.repository}@${image.digest}\n`);
    for (const m of image.manifests) hash.update(`${m.digest}\n`);
  }
  return {
    id: `${work.uid}.${work.generation}.${hash.digest("hex").slice(0, 16)}`,
    contents: images.map((image) => ({
      registry: image.registry,
      repository: image.repository,
      manifests: image.manifests.map((m) => ({ digest: m.digest, mediaType: m.mediaType, body: m.body })),
      blobs: image.blobs.map((b) => ({ digest: b.digest, size: b.size })),
      credentials: credentials.get(image.registry),
    })),
  };
}

export function digestsOf(images: readonly ResolvedImage[]): Set<Digest> {
  const digests = new Set<Digest>();
  for (const image of images) {
    for (const m of image.manifests) digests.add(m.digest);
    for (const b of image.blobs) digests.add(b.digest);
  }
  return digests;
}

export interface ResolveDeps {
  readonly secrets: PullSecretReader;
  readonly resolver: PrefetchResolver;
  readonly logger: Logger;
  readonly timeoutMs: number;
}

/**
 * Reads the pull secrets and resolves every image of `work` (abortable through work.resolving). On
 * success the images, their digests and the assignment are set on `work`; on failure `work.failure`
 * says why. Never rejects.
 */
export async function resolveWork(work: PrefetchWork, spec: PrefetchSpec, deps: ResolveDeps): Promise<"resolved" | "failed" | "aborted"> {
  const controller = new AbortController();
  work.resolving = controller;
  const signal = AbortSignal.any([controller.signal, AbortSignal.timeout(deps.timeoutMs)]);
  try {
    const credentials = await deps.secrets.read(work.namespace, spec.pullSecrets, signal);
    const images: ResolvedImage[] = [];
    for (const image of spec.images) {
      images.push(
        await deps.resolver.resolve(
          image,
          spec.platforms,
          credentials.get(image.reference.registry),
          work.knownDigests.get(image.text),
          signal,
        ),
      );
    }
    checkManifestBudget(images);
    if (controller.signal.aborted) return "aborted";
    work.images = images;
    work.digests = digestsOf(images);
    work.assignment = assignmentOf(work, images, credentials);
    work.failure = undefined;
    deps.logger.info(
      { prefetch: work.key, images: images.map((i) => `${i.text}@${i.digest}`), bytes: images.reduce((n, i) => n + i.bytes, 0) },
      "images resolved",
    );
    return "resolved";
  } catch (error: unknown) {
    if (controller.signal.aborted) return "aborted";
    const failure =
      error instanceof PrefetchFailure
        ? error
        : new PrefetchFailure(
            "RegistryUnavailable",
            `resolving the images timed out or failed: ${error instanceof Error ? error.message : String(error)}`,
            { cause: error },
          );
    work.failure = { reason: failure.reason, message: failure.message };
    deps.logger.warn({ prefetch: work.key, reason: failure.reason, message: failure.message }, "resolution failed");
    return "failed";
  } finally {
    if (work.resolving === controller) work.resolving = undefined;
  }
}
