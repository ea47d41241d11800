// The controller's roles grant exactly the API requests the controller issues, as recorded by its tests
// against the API double (pkg/controller/testdata/api-requests*.json), each where it is needed: the Role
// in the release namespace, the ClusterRole (cluster-scoped resources, and namespaced ones in every
// namespace), and the pull-secret Roles in the namespaces imagePrefetch.pullSecretNamespaces names.
import assert from "node:assert/strict";
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { MODELED_RESOURCES } from "../../../pkg/k8s/testing/index.js";
import { REPO_ROOT } from "./helm-binary.js";
import { type K8sObject, NAMESPACE, render } from "./render.js";

export const API_REQUESTS_DIR = join(REPO_ROOT, "pkg", "controller", "testdata");
/** Resources without a namespace; every other one a ClusterRole grants in every namespace. */
const CLUSTER_SCOPED = new Set(MODELED_RESOURCES.filter((m) => !m.namespaced).map((m) => m.resource));
const NAMESPACE_WITH_SECRETS = "team-a";

interface ApiRequest {
  readonly verb: string;
  readonly apiGroup: string;
  readonly resource: string;
  /** cluster | namespace (the controller's own) | all-namespaces | secret-namespaces */
  readonly scope: string;
}

interface PolicyRule {
  readonly apiGroups?: string[];
  readonly resources?: string[];
  readonly verbs?: string[];
  readonly resourceNames?: string[];
  readonly nonResourceURLs?: string[];
}

function key(request: ApiRequest): string {
  return `${request.verb} ${request.apiGroup === "" ? "core" : request.apiGroup}/${request.resource} (${request.scope})`;
}

/** The (verb, group, resource, scope) grants of one role of the controller. */
function grants(role: K8sObject): string[] {
  const scope = (resource: string): string => {
    if (role.kind === "ClusterRole") return CLUSTER_SCOPED.has(resource) ? "cluster" : "all-namespaces";
    return role.metadata.namespace === NAMESPACE ? "namespace" : "secret-namespaces";
  };
  return ((role.rules as PolicyRule[] | undefined) ?? []).flatMap((rule) => {
    assert.equal(rule.nonResourceURLs, undefined, `${role.kind} ${role.metadata.name} grants no non-resource URLs`);
    const groups = rule.apiGroups ?? [];
    const resources = rule.resources ?? [];
    const verbs = rule.verbs ?? [];
    for (const value of [...groups, ...resources, ...verbs])
      assert.notEqual(value, "*", `${role.kind} ${role.metadata.name} uses no wildcard`);
    return groups.flatMap((apiGroup) =>
      resources.flatMap((resource) => verbs.map((verb) => key({ verb, apiGroup, resource, scope: scope(resource) }))),
    );
  });
}

/** Every recorded list (one per controller test file), together. */
async function recordedRequests(): Promise<ApiRequest[] | undefined> {
  const files = (await readdir(API_REQUESTS_DIR).catch(() => [] as string[])).filter((f) => /^api-requests.*\.json$/.test(f));
  if (files.length === 0) return undefined;
  const all: ApiRequest[] = [];
  for (const file of files) {
    const parsed: unknown = JSON.parse(await readFile(join(API_REQUESTS_DIR, file), "utf8"));
    assert.ok(Array.isArray(parsed), `${file} is a JSON list`);
    all.push(...(parsed as ApiRequest[]));
  }
  return all;
}

describe("controller RBAC", () => {
  it("grants exactly the API requests the controller issues (pkg/controller/testdata/api-requests*.json), each in its scope", async (t) => {
    const requests = await recordedRequests();
    if (requests === undefined) {
      t.skip(`${API_REQUESTS_DIR} has no api-requests*.json yet (the controller's tests record them); nothing to compare the roles with`);
      return;
    }
    const controllerRoles = (objects: K8sObject[]): K8sObject[] =>
      objects.filter(
        (o) => (o.kind === "Role" || o.kind === "ClusterRole") && o.metadata.labels?.["app.kubernetes.io/component"] === "controller",
      );
    assert.deepEqual(
      controllerRoles(await render({}))
        .map((r) => r.kind)
        .sort(),
      ["ClusterRole", "Role"],
      "no Secret anywhere unless a namespace is named",
    );
    const roles = controllerRoles(await render({ imagePrefetch: { pullSecretNamespaces: [{ namespace: NAMESPACE_WITH_SECRETS }] } }));
    const granted = [...new Set(roles.flatMap(grants))].sort();
    const needed = [...new Set(requests.map(key))].sort();
    assert.deepEqual(
      granted,
      needed,
      "granted (left) vs issued (right): each extra grant is a privilege too many, each missing one a failing request",
    );
  });

  it("pull secrets: a Role per named namespace (only the named Secrets when given), nothing without imagePrefetch", async () => {
    const objects = await render({
      imagePrefetch: { pullSecretNamespaces: [{ namespace: "team-a", secretNames: ["regcred"] }, { namespace: "team-b" }] },
    });
    const secretRoles = objects.filter((o) => o.kind === "Role" && o.metadata.namespace !== NAMESPACE);
    assert.deepEqual(
      secretRoles.map((r) => [r.metadata.namespace, r.rules]),
      [
        ["team-a", [{ apiGroups: [""], resources: ["secrets"], resourceNames: ["regcred"], verbs: ["get"] }]],
        ["team-b", [{ apiGroups: [""], resources: ["secrets"], verbs: ["get"] }]],
      ],
    );
    const bindings = objects.filter((o) => o.kind === "RoleBinding" && o.metadata.namespace !== NAMESPACE);
    assert.deepEqual(
      bindings.map((b) => (b.subjects as { namespace: string }[])[0]?.namespace),
      [NAMESPACE, NAMESPACE],
      "bound to the controller's ServiceAccount in the release namespace",
    );
    const off = await render({ imagePrefetch: { enabled: false, pullSecretNamespaces: [{ namespace: "team-a" }] } });
    const offGrants = off.filter((o) => o.kind === "Role" || o.kind === "ClusterRole").flatMap(grants);
    assert.ok(
      // Only the CA Secret's get in the release namespace remains of secrets.
      !offGrants.some((g) => /imageprefetches|\(secret-namespaces\)|\(all-namespaces\)/.test(g)),
      `without imagePrefetch: ${offGrants.join(", ")}`,
    );
  });

  it("gives the agents nothing by default, and only events create when asked", async () => {
    const agentRoles = (objects: K8sObject[]): K8sObject[] =>
      objects.filter((o) => o.kind.endsWith("Role") && o.metadata.labels?.["app.kubernetes.io/component"] === "agent");
    assert.deepEqual(agentRoles(await render({})), []);
    const roles = agentRoles(await render({ agent: { rbac: { createEvents: true } } }));
    assert.deepEqual(roles.flatMap(grants), ["create core/events (namespace)"]);
  });
});
