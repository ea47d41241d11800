export * from "./errors.js";
export { apiBackoff } from "./backoff.js";
export {
  Informer,
  type InformerEvent,
  type InformerOptions,
  type ListResult,
  type RestartReason,
  keyOf,
  WATCH_TIMEOUT_SECONDS,
} from "./informer.js";
export {
  podInformer,
  nodeInformer,
  customObjectInformer,
  type PodInformerOptions,
  type NodeInformerOptions,
  type CustomObjectInformerOptions,
  type InformerTuning,
} from "./resource-informers.js";
export {
  LeaderElector,
  type LeaderElectorOptions,
  type LeaderElectionTimings,
  validateLeaderElectionTimings,
  LEASE_DURATION_MS,
  RENEW_DEADLINE_MS,
  RETRY_PERIOD_MS,
} from "./leader-elector.js";
export { EventRecorder, type EventRecorderOptions, type EventType, type InvolvedObject, podReference } from "./event-recorder.js";
export { LabelSelector, parseLabelSelector, type Requirement, type SelectorOperator } from "./label-selector.js";
export { loadKubeConfig, type KubeConfigSource } from "./kube-config.js";
export { withSignal } from "./request-options.js";
export { model } from "./models.js";
