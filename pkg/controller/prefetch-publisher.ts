import { CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { type EventRecorder, apiStatusOf, toK8sError, withSignal } from "../k8s/index.js";
import type { ControllerMetrics } from "../metrics/index.js";
import type { ResolvedImage } from "./prefetch-resolver.js";
import { type SeedView, buildStatus } from "./prefetch-status.js";
import {
  type ImagePrefetchObject,
  PREFETCH_API_VERSION,
  PREFETCH_GROUP,
  PREFETCH_KIND,
  PREFETCH_PLURAL,
  PREFETCH_VERSION,
} from "./prefetch-types.js";
import type { PrefetchWork } from "./prefetch-work.js";

/** Status writes that only change progress figures are spaced at least this far apart. */
export const STATUS_INTERVAL_MS = 1_000;
/** Each status write or delete gets this long. */
const REQUEST_TIMEOUT_MS = 10_000;

export interface PrefetchPublisherOptions {
  readonly kubeConfig: KubeConfig;
  readonly recorder: EventRecorder;
  readonly metrics: ControllerMetrics | undefined;
  readonly logger: Logger;
  readonly statusIntervalMs: number;
  readonly now: () => number;
  /** How long to wait before trying a failed delete again. */
  readonly retryMs: () => number;
}

/**
 * What the reconciler tells the world about an ImagePrefetch: the status subresource (written only when
 * it changed, progress-only changes at most every statusIntervalMs), Events for transitions, and the
 * deletion of an expired resource. Methods return when the reconciler should come back, if at all.
 */
export class PrefetchPublisher {
  private readonly api: CustomObjectsApi;

  constructor(private readonly options: PrefetchPublisherOptions) {
    this.api = options.kubeConfig.makeApiClient(CustomObjectsApi);
  }

  /** Writes the status when it changed (progress-only changes at most every STATUS_INTERVAL_MS) and records Events for transitions. */
  async publish(object: ImagePrefetchObject, work: PrefetchWork, seeds: SeedView[]): Promise<number | undefined> {
    this.recordEvents(work, object);
    const status = buildStatus({
      generation: work.generation,
      startTime: work.startTime,
      readyTime: work.readyTime,
      images: work.images,
      plan: work.plan,
      seeds,
      conditions: work.conditions,
    });
    const text = JSON.stringify(status);
    if (text === JSON.stringify(object.status ?? {}) || text === work.lastStatus) {
      work.lastStatus = text;
      return undefined;
    }
    const significant = (s: string | undefined): string => {
      if (s === undefined) return "";
      const parsed = JSON.parse(s) as typeof status;
      return JSON.stringify([
        parsed.conditions?.map((c) => [c.type, c.status, c.reason]),
        parsed.progress,
        parsed.seeds?.map((x) => x.state),
        parsed.images?.map((i) => i.digest),
      ]);
    };
    const interval = this.options.statusIntervalMs;
    const sinceMs = this.options.now() - work.lastWriteMs;
    if (significant(text) === significant(work.lastStatus) && sinceMs < interval) return work.lastWriteMs + interval;
    const body: ImagePrefetchObject = { ...object, status };
    try {
      await this.api.replaceNamespacedCustomObjectStatus(
        { group: PREFETCH_GROUP, version: PREFETCH_VERSION, plural: PREFETCH_PLURAL, namespace: work.namespace, name: work.name, body },
        withSignal(AbortSignal.timeout(REQUEST_TIMEOUT_MS)),
      );
      work.lastStatus = text;
      work.lastWriteMs = this.options.now();
      return undefined;
    } catch (error: unknown) {
      // 409: our cached object is older than the stored one; the informer brings the newer one and a new pass.
      const code = apiStatusOf(error)?.code;
      if (code === 404) return undefined;
      if (code !== 409)
        this.options.logger.warn({ err: toK8sError(error, `update status of ImagePrefetch ${work.key}`) }, "status not written");
      return this.options.now() + interval;
    }
  }

  /** shoal_prefetch_resources by phase and shoal_prefetch_seeds, over every resource this leader works on. */
  updateMetrics(works: Iterable<PrefetchWork>): void {
    const metrics = this.options.metrics;
    if (metrics === undefined) return;
    const counts = new Map<Phase, number>(PHASES.map((p) => [p, 0]));
    let seeded = 0;
    let target = 0;
    for (const work of works) {
      const phase = phaseOf(work);
      counts.set(phase, (counts.get(phase) ?? 0) + 1);
      const status = work.lastStatus === undefined ? undefined : (JSON.parse(work.lastStatus) as { seeded?: number; target?: number });
      seeded += status?.seeded ?? 0;
      target += status?.target ?? 0;
    }
    for (const [phase, n] of counts) metrics.prefetchResources.set({ phase }, n);
    metrics.prefetchSeeds.set({ state: "seeded" }, seeded);
    metrics.prefetchSeeds.set({ state: "target" }, target);
  }

  /** Events for transitions only: resolved, a new failure, ready, no longer ready. */
  private recordEvents(work: PrefetchWork, object: ImagePrefetchObject): void {
    const involved = {
      kind: PREFETCH_KIND,
      apiVersion: PREFETCH_API_VERSION,
      namespace: work.namespace,
      name: work.name,
      ...(object.metadata?.uid === undefined ? {} : { uid: object.metadata.uid }),
    };
    const ready = work.conditions.find((c) => c.type === "Ready");
    const failed = work.conditions.find((c) => c.type === "Failed" && c.status === "True");
    const resolved = work.conditions.some((c) => c.type === "Resolved" && c.status === "True");
    const last = work.lastEvent;
    if (resolved && !last.resolved) this.options.recorder.record(involved, "Normal", "Resolved", describeImages(work.images ?? []));
    const failureKey = failed === undefined ? undefined : `${failed.reason}: ${failed.message}`;
    if (failed !== undefined && failureKey !== last.failure)
      this.options.recorder.record(involved, "Warning", failed.reason, failed.message);
    const isReady = ready?.status === "True";
    if (isReady && !last.ready) {
      const seconds = (Date.parse(work.readyTime ?? iso(this.options.now())) - Date.parse(work.startTime)) / 1000;
      this.options.recorder.record(involved, "Normal", "Ready", `${ready.message} (${seconds.toFixed(1)} s after the start)`);
      this.options.metrics?.prefetchReadySeconds.observe(Math.max(0, seconds));
    }
    if (!isReady && last.ready && ready !== undefined) this.options.recorder.record(involved, "Normal", "Reseeding", ready.message);
    work.lastEvent = { ready: isReady, failure: failureKey, resolved };
  }

  /** spec.ttl has passed: deletes the resource; returns when to try again if that failed. */
  async expire(object: ImagePrefetchObject, work: PrefetchWork): Promise<number | undefined> {
    this.options.recorder.record(
      {
        kind: PREFETCH_KIND,
        apiVersion: PREFETCH_API_VERSION,
        namespace: work.namespace,
        name: work.name,
        ...(object.metadata?.uid === undefined ? {} : { uid: object.metadata.uid }),
      },
      "Normal",
      "Expired",
      "spec.ttl has passed: deleting this ImagePrefetch (prefetched content stays in the stores, subject to their quota)",
    );
    try {
      await this.api.deleteNamespacedCustomObject(
        { group: PREFETCH_GROUP, version: PREFETCH_VERSION, plural: PREFETCH_PLURAL, namespace: work.namespace, name: work.name },
        withSignal(AbortSignal.timeout(REQUEST_TIMEOUT_MS)),
      );
      return undefined;
    } catch (error: unknown) {
      if (apiStatusOf(error)?.code === 404) return undefined;
      this.options.logger.warn({ err: toK8sError(error, `delete expired ImagePrefetch ${work.key}`) }, "expired ImagePrefetch not deleted");
      return this.options.now() + this.options.retryMs();
    }
  }
}

const PHASES = ["Pending", "Resolving", "Seeding", "Ready", "Failed"] as const;
type Phase = (typeof PHASES)[number];

function phaseOf(work: PrefetchWork): Phase {
  const condition = (type: string): string | undefined => work.conditions.find((c) => c.type === type)?.status;
  if (condition("Failed") === "True") return "Failed";
  if (condition("Ready") === "True") return "Ready";
  if (work.images !== undefined) return "Seeding";
  return work.resolving !== undefined ? "Resolving" : "Pending";
}

export function describeImages(images: readonly ResolvedImage[]): string {
  const total = images.reduce((n, i) => n + i.bytes, 0);
  return `${images.map((i) => `${i.text} → ${i.digest}`).join(", ")} (${(total / 1024 / 1024).toFixed(1)} MiB)`;
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");
}
