export * from "./errors.js";
export { KubernetesMembership, type KubernetesMembershipOptions, type DropReason, type PeerDrop, ZONE_LABEL, LEGACY_ZONE_LABEL } from "./kubernetes-membership.js";
export { KubernetesController, type KubernetesControllerOptions, EVENT_COMPONENT } from "./kubernetes-controller.js";
