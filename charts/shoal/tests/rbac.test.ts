// The controller's Role and ClusterRole grant exactly the API requests the controller issues, as
// recorded by its tests against the API double (pkg/controller/testdata/api-requests.json).
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { REPO_ROOT } from "./helm-binary.js";
import { type K8sObject, render } from "./render.js";

export const API_REQUESTS_FILE = join(REPO_ROOT, "pkg", "controller", "testdata", "api-requests.json");

interface ApiRequest {
  readonly verb: string;
  readonly apiGroup: string;
  readonly resource: string;
  readonly namespaced: boolean;
}

interface PolicyRule {
  readonly apiGroups?: string[];
  readonly resources?: string[];
  readonly verbs?: string[];
  readonly resourceNames?: string[];
  readonly nonResourceURLs?: string[];
}

function key(request: ApiRequest): string {
  return `${request.verb} ${request.apiGroup === "" ? "core" : request.apiGroup}/${request.resource} (${request.namespaced ? "namespaced" : "cluster"})`;
}

/** The (verb, group, resource) grants of a Role (namespaced) or ClusterRole (cluster-wide). */
function grants(role: K8sObject): string[] {
  const namespaced = role.kind === "Role";
  return ((role.rules as PolicyRule[] | undefined) ?? []).flatMap((rule) => {
    assert.equal(rule.nonResourceURLs, undefined, `${role.kind} ${role.metadata.name} grants no non-resource URLs`);
    const groups = rule.apiGroups ?? [];
    const resources = rule.resources ?? [];
    const verbs = rule.verbs ?? [];
    for (const value of [...groups, ...resources, ...verbs]) assert.notEqual(value, "*", `${role.kind} ${role.metadata.name} uses no wildcard`);
    return groups.flatMap((apiGroup) => resources.flatMap((resource) => verbs.map((verb) => key({ verb, apiGroup, resource, namespaced }))));
  });
}

async function recordedRequests(): Promise<ApiRequest[] | undefined> {
  let text: string;
  try {
    text = await readFile(API_REQUESTS_FILE, "utf8");
  } catch (error) {
    if (error instanceof Error && "code" in error && error.code === "ENOENT") return undefined;
    throw error;
  }
  const parsed: unknown = JSON.parse(text);
  assert.ok(Array.isArray(parsed), `${API_REQUESTS_FILE} is a JSON list`);
  return parsed as ApiRequest[];
}

describe("controller RBAC", () => {
  it("grants exactly the API requests the controller issues (pkg/controller/testdata/api-requests.json)", async (t) => {
    const requests = await recordedRequests();
    if (requests === undefined) {
      t.skip(`${API_REQUESTS_FILE} does not exist yet (the controller's tests record it); nothing to compare the Role with`);
      return;
    }
    const objects = await render({});
    const controllerRoles = objects.filter((o) => (o.kind === "Role" || o.kind === "ClusterRole") && o.metadata.labels?.["app.kubernetes.io/component"] === "controller");
    assert.deepEqual(controllerRoles.map((r) => r.kind).sort(), ["ClusterRole", "Role"]);
    const granted = [...new Set(controllerRoles.flatMap(grants))].sort();
    const needed = [...new Set(requests.map(key))].sort();
    assert.deepEqual(granted, needed, "granted (left) vs issued (right): each extra grant is a privilege too many, each missing one a failing request");
  });

  it("gives the agents nothing by default, and only events create when asked", async () => {
    const agentRoles = (objects: K8sObject[]): K8sObject[] => objects.filter((o) => o.kind.endsWith("Role") && o.metadata.labels?.["app.kubernetes.io/component"] === "agent");
    assert.deepEqual(agentRoles(await render({})), []);
    const roles = agentRoles(await render({ agent: { rbac: { createEvents: true } } }));
    assert.deepEqual(roles.flatMap(grants), ["create core/events (namespaced)"]);
  });
});
