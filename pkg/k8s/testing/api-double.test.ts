import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  CoordinationV1Api,
  CoreV1Api,
  CoreV1Event,
  KubeConfig,
  V1Lease,
  V1LeaseSpec,
  V1MicroTime,
  V1ObjectMeta,
  V1ObjectReference,
  Watch,
} from "@kubernetes/client-node";
import { apiStatusOf } from "../errors.js";
import { model } from "../models.js";
import { KubeApiDouble } from "./api-double.js";

interface WatchLine {
  type: string;
  object: { metadata?: { name?: string; resourceVersion?: string }; code?: number; reason?: string };
}

/** Collects watch events until `until` says stop or the watch ends; bounded by `timeoutMs`. */
async function collect(
  config: KubeConfig,
  path: string,
  query: Record<string, string | boolean>,
  until: (events: WatchLine[]) => boolean,
  timeoutMs = 3_000,
): Promise<{ events: WatchLine[]; error: unknown }> {
  const events: WatchLine[] = [];
  return await new Promise((resolve) => {
    let controller: AbortController | undefined;
    let settled = false;
    const finish = (error: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      controller?.abort();
      resolve({ events, error });
    };
    const timer = setTimeout(() => {
      finish(new Error("timed out"));
    }, timeoutMs);
    void new Watch(config)
      .watch(
        path,
        query,
        (type, object: WatchLine["object"]) => {
          events.push({ type, object });
          if (until(events)) finish(null);
        },
        finish,
      )
      .then((c) => {
        controller = c;
        if (settled) c.abort();
      });
  });
}

describe("Kubernetes API double, driven by client-node", () => {
  let api: KubeApiDouble;
  let core: CoreV1Api;
  let leases: CoordinationV1Api;
  let config: KubeConfig;

  before(async () => {
    api = await KubeApiDouble.start({ bookmarkIntervalMs: 60_000 });
    config = api.kubeConfig();
    core = config.makeApiClient(CoreV1Api);
    leases = config.makeApiClient(CoordinationV1Api);
  });
  after(async () => {
    await api.close();
  });

  it("lists with a resourceVersion and label selectors", async () => {
    api.putPod({ name: "a1", nodeName: "n1", ip: "10.0.0.1" });
    api.putPod({ name: "a2", nodeName: "n2", ip: "10.0.0.2", labels: { app: "other" } });
    api.putPod({ name: "a3", nodeName: "n3", namespace: "elsewhere" });
    const list = await core.listNamespacedPod({
      namespace: "shoal",
      labelSelector: "app.kubernetes.io/name=shoal,app.kubernetes.io/component in (agent)",
    });
    assert.deepEqual(
      list.items.map((p) => p.metadata?.name),
      ["a1"],
    );
    assert.equal(list.metadata?.resourceVersion, String(api.resourceVersion));
    assert.equal(list.items[0]?.status?.podIP, "10.0.0.1");
    const others = await core.listNamespacedPod({ namespace: "shoal", labelSelector: "app!=shoal,!app.kubernetes.io/name" });
    assert.deepEqual(
      others.items.map((p) => p.metadata?.name),
      ["a2"],
    );
    await assert.rejects(
      core.listNamespacedPod({ namespace: "shoal", labelSelector: "a in (" }),
      (e: unknown) => apiStatusOf(e)?.code === 400 && apiStatusOf(e)?.reason === "BadRequest",
    );
  });

  it("streams ADDED, MODIFIED, DELETED and BOOKMARK and resumes from a resourceVersion", async () => {
    const from = String(api.resourceVersion);
    const done = collect(
      config,
      "/api/v1/namespaces/shoal/pods",
      { resourceVersion: from, allowWatchBookmarks: true, labelSelector: "app.kubernetes.io/component=agent" },
      (e) => e.some((x) => x.type === "BOOKMARK"),
    );
    await new Promise((r) => setTimeout(r, 100));
    api.putPod({ name: "w1", nodeName: "n1" });
    api.setPodIP("shoal", "w1", "10.0.0.9");
    api.updatePod("shoal", "w1", (p) => {
      p.metadata.labels = { app: "moved" };
    });
    api.putPod({ name: "w2", nodeName: "n1" });
    api.deletePod("shoal", "w2");
    api.sendBookmarks();
    const { events, error } = await done;
    assert.equal(error, null);
    assert.deepEqual(
      events.map((e) => `${e.type} ${e.object.metadata?.name ?? ""}`),
      ["ADDED w1", "MODIFIED w1", "DELETED w1", "ADDED w2", "DELETED w2", "BOOKMARK "],
      "a pod leaving the selector is a DELETED for this watch",
    );
    assert.equal(events.at(-1)?.object.metadata?.resourceVersion, String(api.resourceVersion));
    // Resuming from the first event's version replays what came after it.
    const firstRv = events[0]?.object.metadata?.resourceVersion ?? "";
    const replay = await collect(config, "/api/v1/namespaces/shoal/pods", { resourceVersion: firstRv }, (e) => e.length >= 4);
    assert.deepEqual(
      replay.events.map((e) => e.type),
      ["MODIFIED", "MODIFIED", "ADDED", "DELETED"],
    );
  });

  it("answers 410 Gone for a compacted resourceVersion: as an ERROR event, or as the HTTP status", async () => {
    const old = String(api.resourceVersion);
    api.putNode({ name: "n-gone", zone: "z" });
    api.compact();
    const asEvent = await collect(config, "/api/v1/nodes", { resourceVersion: old }, (e) => e.length >= 1);
    assert.equal(asEvent.events[0]?.type, "ERROR");
    assert.equal(asEvent.events[0].object.code, 410);
    assert.equal(asEvent.events[0].object.reason, "Expired");
    api.goneAs = "status";
    try {
      const asStatus = await collect(config, "/api/v1/nodes", { resourceVersion: old }, () => true);
      assert.equal((asStatus.error as { statusCode?: number }).statusCode, 410);
    } finally {
      api.goneAs = "event";
    }
    await assert.rejects(
      core.listNode({ resourceVersion: old, resourceVersionMatch: "Exact" }),
      (e: unknown) => apiStatusOf(e)?.code === 410,
    );
    const current = await collect(config, "/api/v1/nodes", { resourceVersion: String(api.resourceVersion) }, () => false, 300);
    assert.deepEqual(current.events, [], "the current version is still watchable");
  });

  it("creates and updates Leases with optimistic concurrency and strict MicroTime", async () => {
    const stamp = new V1MicroTime(Date.now());
    const lease = (name: string, spec: Partial<V1LeaseSpec>, base?: V1Lease): V1Lease =>
      model(V1Lease, { metadata: model(V1ObjectMeta, { name }, base?.metadata), spec: model(V1LeaseSpec, spec, base?.spec) }, base);
    const created = await leases.createNamespacedLease({
      namespace: "shoal",
      body: lease("l1", { holderIdentity: "a", leaseDurationSeconds: 15, renewTime: stamp }),
    });
    assert.match(String(created.spec?.renewTime), /\.\d{6}Z$/);
    await assert.rejects(
      leases.createNamespacedLease({ namespace: "shoal", body: lease("l1", {}) }),
      (e: unknown) => apiStatusOf(e)?.reason === "AlreadyExists",
    );
    const read = await leases.readNamespacedLease({ name: "l1", namespace: "shoal" });
    const updated = await leases.replaceNamespacedLease({
      name: "l1",
      namespace: "shoal",
      body: lease("l1", { holderIdentity: "b" }, read),
    });
    assert.equal(updated.spec?.holderIdentity, "b");
    assert.notEqual(updated.metadata?.resourceVersion, read.metadata?.resourceVersion);
    await assert.rejects(
      leases.replaceNamespacedLease({ name: "l1", namespace: "shoal", body: lease("l1", { holderIdentity: "c" }, read) }),
      (e: unknown) => apiStatusOf(e)?.code === 409 && apiStatusOf(e)?.reason === "Conflict",
      "a stale resourceVersion",
    );
    // A plain Date serializes with millisecond precision, which the API server refuses for a MicroTime.
    const millis = lease("l1", {}, updated);
    (millis.spec as { renewTime?: unknown }).renewTime = new Date();
    await assert.rejects(
      leases.replaceNamespacedLease({ name: "l1", namespace: "shoal", body: millis }),
      (e: unknown) => apiStatusOf(e)?.code === 400,
    );
    await assert.rejects(
      leases.readNamespacedLease({ name: "missing", namespace: "shoal" }),
      (e: unknown) => apiStatusOf(e)?.code === 404 && apiStatusOf(e)?.reason === "NotFound",
    );
  });

  it("creates Events and validates them", async () => {
    const event = (name: string, type: string): CoreV1Event =>
      model(CoreV1Event, {
        metadata: model(V1ObjectMeta, { name }),
        involvedObject: model(V1ObjectReference, { kind: "Pod", name: "a1", namespace: "shoal" }),
        reason: "Test",
        message: "m",
        type,
        count: 1,
        firstTimestamp: new Date(),
      });
    await core.createNamespacedEvent({ namespace: "shoal", body: event("e1", "Normal") });
    assert.equal(api.events("shoal").at(-1)?.reason, "Test");
    await assert.rejects(
      core.createNamespacedEvent({ namespace: "shoal", body: event("e2", "Loud") }),
      (e: unknown) => apiStatusOf(e)?.code === 422,
    );
  });

  it("answers Status bodies for 401, 404 and 405 and logs requests with RBAC verbs", async () => {
    const wrong = new KubeConfig();
    wrong.loadFromString(api.kubeconfigYaml().replace(api.token, "wrong"));
    await assert.rejects(wrong.makeApiClient(CoreV1Api).listNode(), (e: unknown) => apiStatusOf(e)?.code === 401);
    const raw = async (
      method: string,
      path: string,
    ): Promise<{ status: number; body: { kind?: string; code?: number; reason?: string } }> => {
      const response = await fetch(`${api.url}${path}`, { method, headers: { authorization: `Bearer ${api.token}` } });
      return { status: response.status, body: (await response.json()) as { kind?: string; code?: number; reason?: string } };
    };
    const unknown = await raw("GET", "/api/v1/configmaps");
    assert.deepEqual([unknown.status, unknown.body.kind, unknown.body.code, unknown.body.reason], [404, "Status", 404, "NotFound"]);
    const patch = await raw("PATCH", "/apis/coordination.k8s.io/v1/namespaces/shoal/leases/l1");
    assert.deepEqual([patch.status, patch.body.reason], [405, "MethodNotAllowed"]);
    const kinds = api.distinctRequests();
    assert.ok(kinds.some((k) => k.verb === "update" && k.apiGroup === "coordination.k8s.io" && k.resource === "leases" && k.namespaced));
    assert.ok(kinds.some((k) => k.verb === "watch" && k.resource === "nodes" && !k.namespaced));
    assert.ok(kinds.some((k) => k.verb === "create" && k.resource === "events"));
  });

  it("injects failures and drops watch connections", async () => {
    const failure = api.failRequests({ verb: "list", resource: "nodes" }, { status: 503 }, 1);
    await assert.rejects(core.listNode(), (e: unknown) => apiStatusOf(e)?.code === 503);
    await core.listNode();
    assert.equal(failure.hits, 1);
    const watching = collect(config, "/api/v1/nodes", { resourceVersion: String(api.resourceVersion) }, () => false);
    for (let i = 0; i < 50 && api.openWatches("nodes") === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(api.dropWatches("nodes"), 1);
    const { error } = await watching;
    assert.ok(error !== null && !(error instanceof Error && error.message === "timed out"), "the client saw the connection drop");
  });
});
