export * from "./errors.js";
export {
  KubernetesMembership,
  type KubernetesMembershipOptions,
  type DropReason,
  type PeerDrop,
  ZONE_LABEL,
  LEGACY_ZONE_LABEL,
} from "./kubernetes-membership.js";
export { KubernetesController, EVENT_COMPONENT } from "./kubernetes-controller.js";
export type { KubernetesControllerOptions } from "./controller-options.js";
export type { PrefetchOptions } from "./prefetch-parts.js";
export * from "./prefetch-types.js";
export {
  parsePrefetchSpec,
  InvalidSpec,
  type PrefetchSpec,
  type PrefetchTarget,
  DEFAULT_PLATFORMS,
  MAX_SEEDS_PER_ZONE,
} from "./prefetch-spec.js";
