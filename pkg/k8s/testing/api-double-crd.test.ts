import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CoreV1Api, CustomObjectsApi } from "@kubernetes/client-node";
import { apiStatusOf } from "../errors.js";
import { KubeApiDouble } from "./api-double.js";

const GROUP = { group: "shoal.dev", version: "v1alpha1", plural: "imageprefetches" } as const;

interface Prefetch {
  metadata: { name: string; namespace?: string; resourceVersion?: string; generation?: number; uid?: string };
  spec?: unknown;
  status?: unknown;
}

describe("API double: the ImagePrefetch custom resource, its status subresource, and Secrets", () => {
  let api: KubeApiDouble;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "shoal-double-"));
    api = await KubeApiDouble.start({ socketPath: join(dir, "api.sock") });
  });
  after(async () => {
    await api.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("create drops the status and sets generation 1; updates keep the status and count spec changes; /status changes only the status", async () => {
    const objects = api.kubeConfig().makeApiClient(CustomObjectsApi);
    const created = (await objects.createNamespacedCustomObject({
      ...GROUP,
      namespace: "apps",
      body: {
        apiVersion: "shoal.dev/v1alpha1",
        kind: "ImagePrefetch",
        metadata: { name: "web" },
        spec: { images: ["a.io/web:1"] },
        status: { bogus: true },
      },
    })) as Prefetch;
    assert.equal(created.metadata.generation, 1);
    assert.equal(created.status, undefined);
    const withStatus = (await objects.replaceNamespacedCustomObjectStatus({
      ...GROUP,
      namespace: "apps",
      name: "web",
      body: { ...created, spec: { images: ["ignored"] }, status: { phase: "Seeding" } },
    })) as Prefetch;
    assert.deepEqual(withStatus.status, { phase: "Seeding" });
    assert.deepEqual(withStatus.spec, { images: ["a.io/web:1"] }, "/status does not change the spec");
    assert.equal(withStatus.metadata.generation, 1);
    const same = (await objects.replaceNamespacedCustomObject({
      ...GROUP,
      namespace: "apps",
      name: "web",
      body: { ...withStatus, status: { phase: "Overwritten" } },
    })) as Prefetch;
    assert.deepEqual(same.status, { phase: "Seeding" }, "the resource keeps its stored status");
    assert.equal(same.metadata.generation, 1, "no spec change, same generation");
    const changed = (await objects.replaceNamespacedCustomObject({
      ...GROUP,
      namespace: "apps",
      name: "web",
      body: { ...same, spec: { images: ["a.io/web:2"] } },
    })) as Prefetch;
    assert.equal(changed.metadata.generation, 2);
    const stale: unknown = await objects
      .replaceNamespacedCustomObjectStatus({ ...GROUP, namespace: "apps", name: "web", body: { ...withStatus, status: { phase: "Late" } } })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    assert.equal(apiStatusOf(stale)?.code, 409, "status writes use optimistic concurrency too");
    const listed = (await objects.listClusterCustomObject(GROUP)) as unknown as { items: Prefetch[] };
    assert.deepEqual(
      listed.items.map((i) => i.metadata.name),
      ["web"],
    );
    await objects.deleteNamespacedCustomObject({ ...GROUP, namespace: "apps", name: "web" });
    assert.equal(api.imagePrefetches().length, 0);
    const kinds = api.distinctRequests().map((r) => `${r.verb} ${r.apiGroup}/${r.resource}`);
    assert.ok(kinds.includes("update shoal.dev/imageprefetches/status"), "the status subresource is recorded as RBAC names it");
  });

  it("serves Secrets by name, and no status subresource where none is modeled", async () => {
    api.putSecret({
      namespace: "apps",
      name: "regcred",
      type: "kubernetes.io/dockerconfigjson",
      data: { ".dockerconfigjson": '{"auths":{}}' },
    });
    const core = api.kubeConfig().makeApiClient(CoreV1Api);
    const secret = await core.readNamespacedSecret({ namespace: "apps", name: "regcred" });
    assert.equal(Buffer.from(secret.data?.[".dockerconfigjson"] ?? "", "base64").toString(), '{"auths":{}}');
    assert.equal(apiStatusOf(await core.readNamespacedSecret({ namespace: "apps", name: "nope" }).catch((e: unknown) => e))?.code, 404);
    assert.equal(apiStatusOf(await core.readNamespacedPodStatus({ namespace: "apps", name: "x" }).catch((e: unknown) => e))?.code, 404);
  });

  it("answers on its Unix socket as on TCP", async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        {
          socketPath: join(dir, "api.sock"),
          path: "/api/v1/namespaces/apps/secrets/regcred",
          headers: { authorization: `Bearer ${api.token}` },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on("error", reject);
      req.end();
    });
    assert.equal(status, 200);
  });
});
