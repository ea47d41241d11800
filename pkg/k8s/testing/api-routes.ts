import type { ResourceKind } from "./object-store.js";
import { statuses } from "./status.js";

/** Verbs as RBAC names them. */
export type ApiVerb = "get" | "list" | "watch" | "create" | "update" | "patch" | "delete" | "deletecollection";

export interface ModeledResource extends ResourceKind {
  /** What the double answers for this resource; any other verb is 405. */
  readonly verbs: readonly ApiVerb[];
}

/** Exactly what Shoal uses, and a little around it for tests to drive. */
export const MODELED_RESOURCES: readonly ModeledResource[] = [
  { resource: "pods", group: "", version: "v1", kind: "Pod", namespaced: true, verbs: ["get", "list", "watch", "create", "update", "delete"] },
  { resource: "nodes", group: "", version: "v1", kind: "Node", namespaced: false, verbs: ["get", "list", "watch", "create", "update", "delete"] },
  { resource: "events", group: "", version: "v1", kind: "Event", namespaced: true, verbs: ["get", "list", "watch", "create"] },
  { resource: "leases", group: "coordination.k8s.io", version: "v1", kind: "Lease", namespaced: true, verbs: ["get", "list", "watch", "create", "update", "delete"] },
  { resource: "secrets", group: "", version: "v1", kind: "Secret", namespaced: true, verbs: ["get", "create", "update", "delete"] },
  // Not stored: a create is answered with the review's status (the API server's TokenReview).
  { resource: "tokenreviews", group: "authentication.k8s.io", version: "v1", kind: "TokenReview", namespaced: false, verbs: ["create"] },
];

export function modeled(resource: string): ModeledResource {
  const found = MODELED_RESOURCES.find((r) => r.resource === resource);
  if (found === undefined) throw new Error(`resource ${resource} is not modeled`);
  return found;
}

export interface Route {
  readonly verb: ApiVerb;
  readonly kind: ModeledResource;
  /** Undefined for cluster-scoped resources and for lists across all namespaces. */
  readonly namespace: string | undefined;
  readonly name: string | undefined;
}

/** One request as the double received it: what an RBAC Role has to allow. */
export interface RecordedApiRequest {
  readonly verb: ApiVerb | "unknown";
  readonly apiGroup: string;
  readonly resource: string;
  readonly namespace: string | undefined;
  readonly name: string | undefined;
  /** The HTTP status answered (200 for a watch that started). */
  status: number;
}

/** A request kind as a Role rule sees it. */
export interface ApiRequestKind {
  readonly verb: string;
  readonly apiGroup: string;
  readonly resource: string;
  readonly namespaced: boolean;
}

/**
 * Maps method + path to a route: `/api/v1/[namespaces/NS/]RESOURCE[/NAME]` and
 * `/apis/GROUP/VERSION/[namespaces/NS/]RESOURCE[/NAME]`. Throws the Status the API server would answer
 * (404 for unknown paths and subresources, 405 for a verb the resource does not take here).
 */
export function parseRoute(method: string, url: URL): Route {
  const segments = url.pathname.split("/").filter((s) => s !== "").map(decodeURIComponent);
  let group: string;
  let version: string;
  let rest: string[];
  if (segments[0] === "api") {
    group = "";
    version = segments[1] ?? "";
    rest = segments.slice(2);
  } else if (segments[0] === "apis") {
    group = segments[1] ?? "";
    version = segments[2] ?? "";
    rest = segments.slice(3);
  } else {
    throw statuses.noRoute();
  }
  let namespace: string | undefined;
  if (rest[0] === "namespaces" && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [resource, name, ...subresource] = rest;
  const kind = MODELED_RESOURCES.find((r) => r.group === group && r.version === version && r.resource === resource);
  if (kind === undefined || subresource.length > 0 || (namespace !== undefined && !kind.namespaced)) throw statuses.noRoute();
  const watch = ["true", "1"].includes(url.searchParams.get("watch") ?? "");
  const verb = verbOf(method, name !== undefined, watch);
  if (verb === undefined || !kind.verbs.includes(verb)) throw statuses.methodNotAllowed(method);
  return { verb, kind, namespace, name };
}

function verbOf(method: string, named: boolean, watch: boolean): ApiVerb | undefined {
  switch (method) {
    case "GET":
      return watch ? "watch" : named ? "get" : "list";
    case "POST":
      return named ? undefined : "create";
    case "PUT":
      return named ? "update" : undefined;
    case "PATCH":
      return named ? "patch" : undefined;
    case "DELETE":
      return named ? "delete" : "deletecollection";
    default:
      return undefined;
  }
}

/** Distinct request kinds, sorted: the stable form kept in the repository for RBAC checks. */
export function distinctKinds(requests: readonly RecordedApiRequest[]): ApiRequestKind[] {
  const byKey = new Map<string, ApiRequestKind>();
  for (const r of requests) {
    const kind = { verb: r.verb, apiGroup: r.apiGroup, resource: r.resource, namespaced: r.namespace !== undefined };
    byKey.set(JSON.stringify(kind), kind);
  }
  return [...byKey.values()].sort(
    (a, b) => a.apiGroup.localeCompare(b.apiGroup) || a.resource.localeCompare(b.resource) || a.verb.localeCompare(b.verb) || Number(a.namespaced) - Number(b.namespaced),
  );
}
