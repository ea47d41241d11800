import type { ModeledResource } from "./api-routes.js";
import type { ApiObject } from "./object-store.js";
import { statuses } from "./status.js";

/** metav1.MicroTime's layout, RFC3339 with exactly six fractional digits: the API server rejects other forms. */
const MICRO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$/;
/** metav1.Time: RFC3339, fractional seconds allowed. */
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

export function validateCreate(kind: ModeledResource, object: ApiObject): void {
  checkType(kind, object);
  if (kind.resource === "leases") checkLease(kind, object);
  if (kind.resource === "events") checkEvent(kind, object);
}

export function validateUpdate(kind: ModeledResource, object: ApiObject): void {
  validateCreate(kind, object);
}

function checkType(kind: ModeledResource, object: ApiObject): void {
  const apiVersion = kind.group === "" ? kind.version : `${kind.group}/${kind.version}`;
  if (object.kind !== undefined && object.kind !== kind.kind)
    throw statuses.badRequest(`the object's kind ${JSON.stringify(object.kind)} is not ${kind.kind}`);
  if (object.apiVersion !== undefined && object.apiVersion !== apiVersion)
    throw statuses.badRequest(`the object's apiVersion ${JSON.stringify(object.apiVersion)} is not ${apiVersion}`);
}

function checkLease(kind: ModeledResource, lease: ApiObject): void {
  const spec = (lease.spec ?? {}) as Record<string, unknown>;
  for (const field of ["acquireTime", "renewTime"]) {
    const value = spec[field];
    if (value === undefined || value === null) continue;
    if (typeof value !== "string" || !MICRO_TIME.test(value)) {
      throw statuses.badRequest(
        `Lease in version "v1" cannot be handled as a Lease: spec.${field}: parsing time ${JSON.stringify(value)} as "2006-01-02T15:04:05.000000Z07:00": cannot parse`,
      );
    }
  }
  const name = lease.metadata.name;
  const duration = spec.leaseDurationSeconds;
  if (duration !== undefined && duration !== null && (typeof duration !== "number" || !Number.isInteger(duration) || duration <= 0)) {
    throw statuses.invalid(
      kind.resource,
      kind.group,
      name,
      `spec.leaseDurationSeconds: Invalid value: ${JSON.stringify(duration)}: must be greater than 0`,
    );
  }
  const transitions = spec.leaseTransitions;
  if (
    transitions !== undefined &&
    transitions !== null &&
    (typeof transitions !== "number" || !Number.isInteger(transitions) || transitions < 0)
  ) {
    throw statuses.invalid(
      kind.resource,
      kind.group,
      name,
      `spec.leaseTransitions: Invalid value: ${JSON.stringify(transitions)}: must be greater than or equal to 0`,
    );
  }
}

function checkEvent(kind: ModeledResource, event: ApiObject): void {
  const name = event.metadata.name;
  const involved = event.involvedObject as Record<string, unknown> | undefined;
  if (
    involved === undefined ||
    typeof involved.kind !== "string" ||
    involved.kind === "" ||
    typeof involved.name !== "string" ||
    involved.name === ""
  ) {
    throw statuses.invalid(kind.resource, kind.group, name, "involvedObject: Required value: kind and name are required");
  }
  if (involved.namespace !== undefined && involved.namespace !== "" && involved.namespace !== event.metadata.namespace) {
    throw statuses.invalid(
      kind.resource,
      kind.group,
      name,
      `involvedObject.namespace: Invalid value: ${JSON.stringify(involved.namespace)}: does not match event.namespace`,
    );
  }
  if (event.type !== "Normal" && event.type !== "Warning") {
    throw statuses.invalid(
      kind.resource,
      kind.group,
      name,
      `type: Invalid value: ${JSON.stringify(event.type)}: has invalid value: must be Normal or Warning`,
    );
  }
  if (typeof event.reason !== "string" || event.reason === "")
    throw statuses.invalid(kind.resource, kind.group, name, "reason: Required value");
  for (const field of ["firstTimestamp", "lastTimestamp"]) {
    const value = event[field];
    if (value !== undefined && value !== null && (typeof value !== "string" || !TIME.test(value))) {
      throw statuses.badRequest(
        `Event in version "v1" cannot be handled as a Event: ${field}: parsing time ${JSON.stringify(value)}: cannot parse`,
      );
    }
  }
}
