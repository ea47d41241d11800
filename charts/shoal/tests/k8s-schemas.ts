// Validation of rendered objects without an API server: the Kubernetes 1.27 OpenAPI schemas of
// `kubernetes-models` (types, required fields, enums, formats) and the prometheus-operator CRD
// schemas. Those schemas allow unknown fields, which is where template typos hide
// (`readinesProbe:`), so every built-in object is also walked against the field lists of
// @kubernetes/client-node's models, and any field they do not know is reported.
import * as clientNode from "@kubernetes/client-node";
import { PodMonitor, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { DaemonSet, Deployment } from "kubernetes-models/apps/v1";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1";
import { ConfigMap, Secret, Service, ServiceAccount } from "kubernetes-models/v1";
import type { K8sObject } from "./render.js";

interface Validatable {
  validate(): void;
}

/** apiVersion/kind → a kubernetes-models constructor and the client-node model of its fields. */
const MODELS: Record<string, { create: (data: K8sObject) => Validatable; fields?: string }> = {
  "v1/ConfigMap": { create: (d) => new ConfigMap(d), fields: "V1ConfigMap" },
  "v1/Secret": { create: (d) => new Secret(d), fields: "V1Secret" },
  "v1/Service": { create: (d) => new Service(d), fields: "V1Service" },
  "v1/ServiceAccount": { create: (d) => new ServiceAccount(d), fields: "V1ServiceAccount" },
  "apps/v1/DaemonSet": { create: (d) => new DaemonSet(d), fields: "V1DaemonSet" },
  "apps/v1/Deployment": { create: (d) => new Deployment(d), fields: "V1Deployment" },
  "policy/v1/PodDisruptionBudget": { create: (d) => new PodDisruptionBudget(d), fields: "V1PodDisruptionBudget" },
  "networking.k8s.io/v1/NetworkPolicy": { create: (d) => new NetworkPolicy(d), fields: "V1NetworkPolicy" },
  "rbac.authorization.k8s.io/v1/Role": { create: (d) => new Role(d), fields: "V1Role" },
  "rbac.authorization.k8s.io/v1/RoleBinding": { create: (d) => new RoleBinding(d as never), fields: "V1RoleBinding" },
  "rbac.authorization.k8s.io/v1/ClusterRole": { create: (d) => new ClusterRole(d), fields: "V1ClusterRole" },
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": { create: (d) => new ClusterRoleBinding(d as never), fields: "V1ClusterRoleBinding" },
  "monitoring.coreos.com/v1/ServiceMonitor": { create: (d) => new ServiceMonitor(d as never) },
  "monitoring.coreos.com/v1/PodMonitor": { create: (d) => new PodMonitor(d as never) },
};

/** grafana-operator v5 publishes no models package: the fields the chart sets, checked by hand. */
function grafanaDashboardProblems(object: K8sObject): string[] {
  const spec = object.spec as Record<string, unknown> | undefined;
  const problems: string[] = [];
  if (spec === undefined) return ["spec is missing"];
  const allowed = new Set(["instanceSelector", "folder", "resyncPeriod", "allowCrossNamespaceImport", "json"]);
  for (const key of Object.keys(spec)) if (!allowed.has(key)) problems.push(`spec.${key}: not a field the chart should set`);
  if (typeof spec.instanceSelector !== "object" || spec.instanceSelector === null)
    problems.push("spec.instanceSelector must be a label selector");
  if (typeof spec.json !== "string") problems.push("spec.json must be a string");
  else {
    try {
      JSON.parse(spec.json);
    } catch (error) {
      problems.push(`spec.json is not JSON: ${String(error)}`);
    }
  }
  if (typeof spec.resyncPeriod !== "string" || !/^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$/.test(spec.resyncPeriod))
    problems.push("spec.resyncPeriod must be a duration");
  return problems;
}

interface AttributeType {
  readonly baseName: string;
  readonly type: string;
}

function attributesOf(typeName: string): readonly AttributeType[] | undefined {
  const model = (clientNode as unknown as Record<string, unknown>)[typeName];
  if (typeof model !== "function" || !("getAttributeTypeMap" in model) || typeof model.getAttributeTypeMap !== "function") return undefined;
  return (model.getAttributeTypeMap as () => AttributeType[])();
}

/** Fields client-node's model of `typeName` does not know, recursively (type errors are left to the schemas). */
export function unknownFields(value: unknown, typeName: string, path: string): string[] {
  if (value === null || value === undefined) return [];
  const list = /^Array<(.+)>$/.exec(typeName);
  if (list?.[1] !== undefined) {
    const itemType = list[1];
    return Array.isArray(value) ? value.flatMap((item, i) => unknownFields(item, itemType, `${path}[${i}]`)) : [];
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(typeName);
  if (map?.[1] !== undefined) {
    const valueType = map[1];
    return typeof value === "object" ? Object.entries(value).flatMap(([k, v]) => unknownFields(v, valueType, `${path}.${k}`)) : [];
  }
  const attributes = attributesOf(typeName);
  if (attributes === undefined || typeof value !== "object" || Array.isArray(value)) return [];
  const known = new Map(attributes.map((a) => [a.baseName, a.type]));
  return Object.entries(value).flatMap(([key, child]) => {
    const type = known.get(key);
    return type === undefined ? [`${path}.${key}: unknown field of ${typeName}`] : unknownFields(child, type, `${path}.${key}`);
  });
}

/** Every problem found in one object, each prefixed with the object's kind and name. */
export function validateObject(object: K8sObject): string[] {
  const name = `${object.kind}/${object.metadata.name}`;
  if (object.apiVersion === "grafana.integreatly.org/v1beta1" && object.kind === "GrafanaDashboard")
    return grafanaDashboardProblems(object).map((p) => `${name}: ${p}`);
  const model = MODELS[`${object.apiVersion}/${object.kind}`];
  if (model === undefined) return [`${name}: ${object.apiVersion} ${object.kind} is not a kind this chart is expected to render`];
  const problems: string[] = [];
  try {
    model.create(object).validate();
  } catch (error) {
    problems.push(`${name}: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (model.fields !== undefined) problems.push(...unknownFields(object, model.fields, name));
  return problems;
}
