export * from "./errors.js";
export { ContainerdClient, type ContainerdClientOptions, type ContentInfo } from "./containerd-client.js";
export {
  ContainerdContentSource,
  type ContainerdContentSourceOptions,
  DISCONNECT_GRACE_MS,
  RECONCILE_INTERVAL_MS,
} from "./content-source.js";
export { LeaseKeeper, READER_LEASE_LABEL, GC_EXPIRE_LABEL } from "./lease-keeper.js";
