import type { KubeConfig, V1Node } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { type EventRecorder, type Informer, type InformerTuning, customObjectInformer } from "../k8s/index.js";
import type { ControllerMetrics } from "../metrics/index.js";
import { UpstreamClient } from "../registry/index.js";
import type { MemoryTracker } from "../tracker/index.js";
import { PrefetchReconciler } from "./prefetch-reconciler.js";
import { PrefetchResolver } from "./prefetch-resolver.js";
import { PullSecretReader } from "./prefetch-pull-secrets.js";
import { type ImagePrefetchObject, PREFETCH_GROUP, PREFETCH_PLURAL, PREFETCH_VERSION } from "./prefetch-types.js";

export interface PrefetchOptions {
  /** Registry host → base URL: the registries the agents mirror (their --upstream list). */
  readonly upstreams: ReadonlyMap<string, string>;
  readonly userAgent?: string;
  /** What the Failed message tells users to do when reading a pull secret is forbidden. */
  readonly secretGrantHint?: string;
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
  readonly statusIntervalMs?: number;
  readonly reportDeadlineMs?: number;
}

/** The pieces of ImagePrefetch reconciling, stopped with the controller. */
export interface PrefetchParts {
  readonly informer: Informer<ImagePrefetchObject>;
  readonly reconciler: PrefetchReconciler;
  readonly upstream: UpstreamClient;
}

/** What of the controller's options the prefetch parts use (KubernetesControllerOptions). */
export interface PrefetchWiring {
  readonly kubeConfig: KubeConfig;
  readonly logger: Logger;
  readonly metrics?: ControllerMetrics;
  readonly informerTuning?: InformerTuning;
}

const DEFAULT_SECRET_GRANT_HINT =
  "bind the chart's pull-secret reader role in that namespace (value imagePrefetch.pullSecretNamespaces), or create a RoleBinding granting the controller's service account `get` on that Secret";

/** The CRD informer, the resolver's upstream client and the reconciler; the informer starts with the others. */
export function startPrefetchParts(
  options: PrefetchWiring,
  prefetch: PrefetchOptions,
  tracker: MemoryTracker,
  nodes: Informer<V1Node>,
  recorder: EventRecorder,
): PrefetchParts {
  const { logger, kubeConfig } = options;
  const informer = customObjectInformer<ImagePrefetchObject>({
    ...(options.informerTuning ?? {}),
    kubeConfig,
    group: PREFETCH_GROUP,
    version: PREFETCH_VERSION,
    plural: PREFETCH_PLURAL,
    logger: logger.child({ component: "imageprefetch-informer" }),
    onRestart: (reason) => options.metrics?.informerRestarts.inc({ resource: PREFETCH_PLURAL, reason }),
  });
  const upstream = new UpstreamClient({
    upstreams: prefetch.upstreams,
    userAgent: prefetch.userAgent ?? "shoal-controller",
    logger: logger.child({ component: "prefetch-upstream" }),
  });
  const reconciler = new PrefetchReconciler({
    kubeConfig,
    prefetches: informer,
    nodes,
    tracker,
    resolver: new PrefetchResolver(upstream),
    secrets: new PullSecretReader(kubeConfig, prefetch.secretGrantHint ?? DEFAULT_SECRET_GRANT_HINT),
    recorder,
    metrics: options.metrics,
    logger: logger.child({ component: "prefetch" }),
    ...(prefetch.retryInitialMs === undefined ? {} : { retryInitialMs: prefetch.retryInitialMs }),
    ...(prefetch.retryMaxMs === undefined ? {} : { retryMaxMs: prefetch.retryMaxMs }),
    ...(prefetch.statusIntervalMs === undefined ? {} : { statusIntervalMs: prefetch.statusIntervalMs }),
    ...(prefetch.reportDeadlineMs === undefined ? {} : { reportDeadlineMs: prefetch.reportDeadlineMs }),
  });
  return { informer, reconciler, upstream };
}
