export {
  KubeApiDouble,
  type KubeApiDoubleOptions,
  type FailureMatch,
  type FailureResponse,
  type InjectedFailure,
  DEFAULT_BOOKMARK_INTERVAL_MS,
} from "./api-double.js";
export {
  type ApiRequestKind,
  type ApiVerb,
  type RecordedApiRequest,
  type RbacRequestKind,
  type RbacScope,
  MODELED_RESOURCES,
  distinctKinds,
  rbacRequestKinds,
} from "./api-routes.js";
export { AGENT_LABELS, ZONE_LABEL, type NodeFixture, type PodFixture, nodeObject, podObject } from "./fixtures.js";
export type { ApiObject } from "./object-store.js";
export { ServiceForwarder, type ServiceBackend, type ServiceForwarderOptions } from "./service-forwarder.js";
