import type { ResourceKind } from "./object-store.js";
import { statuses } from "./status.js";

/** Verbs as RBAC names them. */
export type ApiVerb = "get" | "list" | "watch" | "create" | "update" | "patch" | "delete" | "deletecollection";

export interface ModeledResource extends ResourceKind {
  /** What the double answers for this resource; any other verb is 405. */
  readonly verbs: readonly ApiVerb[];
  /**
   * A status subresource, as a CRD with `subresources: {status: {}}` has: writes to the resource keep the
   * stored status, writes to `/status` change nothing else, and `metadata.generation` counts spec changes.
   */
  readonly statusSubresource?: boolean;
}

/** Exactly what Shoal uses, and a little around it for tests to drive. */
export const MODELED_RESOURCES: readonly ModeledResource[] = [
  {
    resource: "pods",
    group: "",
    version: "v1",
    kind: "Pod",
    namespaced: true,
    verbs: ["get", "list", "watch", "create", "update", "delete"],
  },
  {
    resource: "nodes",
    group: "",
    version: "v1",
    kind: "Node",
    namespaced: false,
    verbs: ["get", "list", "watch", "create", "update", "delete"],
  },
  { resource: "events", group: "", version: "v1", kind: "Event", namespaced: true, verbs: ["get", "list", "watch", "create"] },
  {
    resource: "leases",
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    namespaced: true,
    verbs: ["get", "list", "watch", "create", "update", "delete"],
  },
  {
    resource: "secrets",
    group: "",
    version: "v1",
    kind: "Secret",
    namespaced: true,
    verbs: ["get", "list", "watch", "create", "update", "delete"],
  },
  // Not stored: a create is answered with the review's status (the API server's TokenReview).
  { resource: "tokenreviews", group: "authentication.k8s.io", version: "v1", kind: "TokenReview", namespaced: false, verbs: ["create"] },
  // The chart's CRD (charts/shoal/crds/imageprefetches.yaml).
  {
    resource: "imageprefetches",
    group: "shoal.dev",
    version: "v1alpha1",
    kind: "ImagePrefetch",
    namespaced: true,
    verbs: ["get", "list", "watch", "create", "update", "delete"],
    statusSubresource: true,
  },
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
  /** "status" for `/status` requests. */
  readonly subresource: string | undefined;
}

/** One request as the double received it: what an RBAC Role has to allow. */
export interface RecordedApiRequest {
  readonly verb: ApiVerb | "unknown";
  readonly apiGroup: string;
  /** As RBAC names it: `pods`, or `imageprefetches/status` for a subresource. */
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
  const segments = url.pathname
    .split("/")
    .filter((s) => s !== "")
    .map(decodeURIComponent);
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
  const [resource, name, ...rest2] = rest;
  const kind = MODELED_RESOURCES.find((r) => r.group === group && r.version === version && r.resource === resource);
  if (kind === undefined || (namespace !== undefined && !kind.namespaced)) throw statuses.noRoute();
  let subresource: string | undefined;
  if (rest2.length > 0) {
    if (rest2.length !== 1 || rest2[0] !== "status" || kind.statusSubresource !== true) throw statuses.noRoute();
    subresource = "status";
  }
  const watch = ["true", "1"].includes(url.searchParams.get("watch") ?? "");
  const verb = verbOf(method, name !== undefined, watch);
  if (verb === undefined || !kind.verbs.includes(verb)) throw statuses.methodNotAllowed(method);
  // The status subresource takes get and update (patch is not modeled).
  if (subresource !== undefined && verb !== "get" && verb !== "update") throw statuses.methodNotAllowed(method);
  return { verb, kind, namespace, name, subresource };
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
    (a, b) =>
      a.apiGroup.localeCompare(b.apiGroup) ||
      a.resource.localeCompare(b.resource) ||
      a.verb.localeCompare(b.verb) ||
      Number(a.namespaced) - Number(b.namespaced),
  );
}

/**
 * Where an RBAC grant has to hold for a request: `cluster` (a cluster-scoped resource: ClusterRole),
 * `namespace` (the controller's own namespace: Role), `all-namespaces` (a list/watch across namespaces, or
 * a request in another namespace: ClusterRole), `secret-namespaces` (Secrets in other namespaces: only
 * Roles the chart creates in the namespaces it is told to).
 */
export type RbacScope = "cluster" | "namespace" | "all-namespaces" | "secret-namespaces";

export interface RbacRequestKind {
  readonly verb: string;
  readonly apiGroup: string;
  readonly resource: string;
  readonly scope: RbacScope;
}

/** Distinct request kinds with the scope their grant needs, sorted: the form kept in testdata for the chart's RBAC test. */
export function rbacRequestKinds(requests: readonly RecordedApiRequest[], ownNamespace: string): RbacRequestKind[] {
  const byKey = new Map<string, RbacRequestKind>();
  for (const r of requests) {
    if (r.verb === "unknown") continue;
    const base = r.resource.split("/")[0] ?? r.resource;
    const namespaced =
      MODELED_RESOURCES.find((m) => m.resource === base && m.group === r.apiGroup)?.namespaced ?? r.namespace !== undefined;
    let scope: RbacScope;
    if (!namespaced) scope = "cluster";
    else if (r.namespace === ownNamespace) scope = "namespace";
    else if (r.namespace !== undefined && base === "secrets") scope = "secret-namespaces";
    else scope = "all-namespaces";
    const kind = { verb: r.verb, apiGroup: r.apiGroup, resource: r.resource, scope };
    byKey.set(JSON.stringify(kind), kind);
  }
  return [...byKey.values()].sort(
    (a, b) =>
      a.apiGroup.localeCompare(b.apiGroup) ||
      a.resource.localeCompare(b.resource) ||
      a.verb.localeCompare(b.verb) ||
      a.scope.localeCompare(b.scope),
  );
}
