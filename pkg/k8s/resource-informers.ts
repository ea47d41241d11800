import { CoreV1Api, CustomObjectsApi, type KubeConfig, type KubernetesObject, type V1Node, type V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { Informer, type InformerOptions } from "./informer.js";
import { withSignal } from "./request-options.js";

/** What tests and the controller may tune on the informers; the rest is fixed by the resource. */
export type InformerTuning = Pick<
  InformerOptions<V1Pod>,
  "initialBackoffMs" | "maxBackoffMs" | "delay" | "random" | "now" | "watchTimeoutSeconds" | "onRestart"
>;

export interface PodInformerOptions extends InformerTuning {
  readonly kubeConfig: KubeConfig;
  readonly namespace: string;
  /** Label selector text (validated by parseLabelSelector). */
  readonly labelSelector: string;
  readonly logger: Logger;
}

/** Pods of one namespace matching a label selector (list + watch pods in that namespace). */
export function podInformer(options: PodInformerOptions): Informer<V1Pod> {
  const api = options.kubeConfig.makeApiClient(CoreV1Api);
  const { kubeConfig, namespace, labelSelector, logger, ...tuning } = options;
  return new Informer<V1Pod>({
    ...tuning,
    resource: "pods",
    kubeConfig,
    path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`,
    labelSelector,
    logger,
    list: async (signal) => {
      const list = await api.listNamespacedPod({ namespace, labelSelector }, withSignal(signal));
      return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? "" };
    },
  });
}

export interface NodeInformerOptions extends InformerTuning {
  readonly kubeConfig: KubeConfig;
  readonly logger: Logger;
}

/** All Nodes (cluster-scoped: list + watch nodes), for their zone labels. */
export function nodeInformer(options: NodeInformerOptions): Informer<V1Node> {
  const api = options.kubeConfig.makeApiClient(CoreV1Api);
  const { kubeConfig, logger, ...tuning } = options;
  return new Informer<V1Node>({
    ...tuning,
    resource: "nodes",
    kubeConfig,
    path: "/api/v1/nodes",
    logger,
    list: async (signal) => {
      const list = await api.listNode({}, withSignal(signal));
      return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? "" };
    },
  });
}

export interface CustomObjectInformerOptions extends InformerTuning {
  readonly kubeConfig: KubeConfig;
  readonly group: string;
  readonly version: string;
  /** Plural resource name, e.g. imageprefetches. */
  readonly plural: string;
  readonly logger: Logger;
}

/** Custom objects of one resource across all namespaces (list + watch at cluster scope). */
export function customObjectInformer<T extends KubernetesObject>(options: CustomObjectInformerOptions): Informer<T> {
  const api = options.kubeConfig.makeApiClient(CustomObjectsApi);
  const { kubeConfig, group, version, plural, logger, ...tuning } = options;
  return new Informer<T>({
    ...tuning,
    resource: plural,
    kubeConfig,
    path: `/apis/${group}/${version}/${plural}`,
    logger,
    list: async (signal) => {
      // The generated client types custom object lists as `any`: this is their documented JSON shape.
      const list = (await api.listClusterCustomObject({ group, version, plural }, withSignal(signal))) as unknown as {
        items?: T[];
        metadata?: { resourceVersion?: string };
      };
      return { items: list.items ?? [], resourceVersion: list.metadata?.resourceVersion ?? "" };
    },
  });
}
