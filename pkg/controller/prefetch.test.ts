import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { digestOf } from "../oci/index.js";
import { eventually } from "../tracker/testing/helpers.js";
import type { KubernetesControllerOptions } from "./controller-options.js";
import type { ClusterAgent } from "./testing/cluster-agent.js";
import {
  APPS,
  DOCKER_CONFIG,
  REPO,
  addImage,
  conditionOf,
  holdsImage,
  prefetchEvents,
  prefetchObject,
  statusOf,
} from "./testing/prefetch-fixture.js";
import { ApiRequestLog } from "./testing/api-request-log.js";
import { TIMINGS, TestCluster } from "./testing/test-cluster.js";

const requestLog = new ApiRequestLog(new URL("../../../pkg/controller/testdata/api-requests-prefetch.json", import.meta.url));
const READY_TIMEOUT_MS = 20_000;

function prefetchOptions(cluster: TestCluster): Partial<KubernetesControllerOptions> {
  return {
    prefetch: {
      upstreams: new Map([[cluster.origin.host, cluster.origin.url]]),
      retryInitialMs: 300,
      retryMaxMs: 1_000,
      statusIntervalMs: 100,
      reportDeadlineMs: 1_500,
    },
  };
}

/** A leader with prefetch on, and agents in two zones (two per zone unless told otherwise). */
async function zonedCluster(perZone = 2): Promise<{ cluster: TestCluster; agents: ClusterAgent[] }> {
  const cluster = await TestCluster.start();
  const pods: [string, string, string, string][] = [];
  for (const [z, zone] of ["zone-a", "zone-b"].entries()) {
    for (let i = 1; i <= perZone; i++) pods.push([`agent-${zone}-${i}`, `node-${zone}-${i}`, `127.0.0.${100 + 10 * z + i}`, zone]);
  }
  for (const [name, node, ip, zone] of pods) cluster.addAgentPod(name, node, ip, zone);
  const replica = await cluster.startReplica("controller-a", prefetchOptions(cluster));
  await eventually(() => {
    assert.ok(replica.controller.leading);
  }, 10_000);
  await cluster.forwarder.probe();
  const agents: ClusterAgent[] = [];
  for (const [name, node, ip] of pods) agents.push(await cluster.startAgent(name, node, ip, undefined, { zoneFromTracker: true }));
  await eventually(() => {
    assert.equal(replica.controller.tracker.snapshot().agents.length, pods.length);
  }, 10_000);
  return { cluster, agents };
}

async function waitReady(cluster: TestCluster, name: string, timeoutMs = READY_TIMEOUT_MS): Promise<void> {
  await eventually(
    () => {
      const status = statusOf(cluster, name);
      assert.equal(conditionOf(status, "Ready")?.status, "True", JSON.stringify(status.conditions));
    },
    timeoutMs,
    50,
  );
}

async function waitFailed(cluster: TestCluster, name: string, reason: string): Promise<string> {
  return await eventually(
    () => {
      const failed = conditionOf(statusOf(cluster, name), "Failed");
      assert.equal(failed?.status, "True", JSON.stringify(statusOf(cluster, name).conditions));
      assert.equal(failed.reason, reason);
      return failed.message;
    },
    10_000,
    50,
  );
}

describe("ImagePrefetch against the API double (real client-node, gRPC tracker, in-process agents)", () => {
  let cluster: TestCluster | undefined;

  afterEach(async () => {
    if (cluster === undefined) return;
    requestLog.collect(cluster);
    await cluster.close();
    cluster = undefined;
  });

  it("seeds one agent per zone with one origin fetch per blob, reports status, conditions and Events; the herd then pulls from peers", async () => {
    const z = await zonedCluster();
    cluster = z.cluster;
    const c = z.cluster;
    const image = await addImage(c.origin, "create", [3 * 1024 * 1024 + 5, 1024 * 1024], "v1");
    const servedBefore = c.origin.blobBytesServed;
    c.api.putImagePrefetch(prefetchObject("web", { images: [image.ref], target: { seedsPerZone: 1 } }));
    await waitReady(c, "web");
    const status = statusOf(c, "web");
    assert.equal(status.observedGeneration, 1);
    const [resolved] = status.images ?? [];
    assert.equal(resolved?.digest, image.digest);
    assert.equal(resolved.reference, image.ref);
    assert.deepEqual(
      status.zones?.map((zone) => [zone.zone, zone.target, zone.seeded, zone.agents]),
      [
        ["zone-a", 1, 1, 2],
        ["zone-b", 1, 1, 2],
      ],
    );
    assert.equal(status.progress, "2/2");
    assert.equal(conditionOf(status, "Resolved")?.status, "True");
    assert.equal(conditionOf(status, "Failed")?.status, "False");
    assert.ok(status.readyTime !== undefined && status.startTime !== undefined);
    assert.equal(c.origin.blobBytesServed - servedBefore, image.blobBytes, "the origin sent each blob once for both seeds");
    // Ready follows the tracker's announcements; the byte counts follow the seeds' reports (every second).
    await eventually(() => {
      const reported = statusOf(c, "web");
      assert.equal((reported.bytesFromOrigin ?? 0) + (reported.bytesFromPeers ?? 0), 2 * image.blobBytes, "both seeds fetched every blob");
    }, 10_000);
    const seeds: ClusterAgent[] = [];
    for (const agent of z.agents) if (await holdsImage(agent, image)) seeds.push(agent);
    assert.equal(seeds.length, 2, "exactly one seed per zone");
    await eventually(() => {
      assert.deepEqual(
        prefetchEvents(c, "web").map((e) => e.reason),
        ["Resolved", "Ready"],
      );
    });
    const leader = c.leaders()[0]!;
    // The gauges are set after the status write the API double already shows: read them once they are.
    await eventually(async () => {
      assert.match(await leader.metrics.registry.getSingleMetricAsString("shoal_prefetch_resources"), /phase="Ready"\} 1/);
      assert.match(await leader.metrics.registry.getSingleMetricAsString("shoal_prefetch_seeds"), /state="seeded"\} 2/);
    }, 10_000);

    // The cold herd: every other agent pulls the image; nothing more comes from the origin.
    for (const agent of z.agents.filter((a) => !seeds.includes(a))) {
      for (const blob of image.blobs) {
        const pulled = await agent.pull(c.origin.host, REPO, blob.digest);
        assert.equal(digestOf(pulled.bytes), blob.digest);
        assert.equal(pulled.source, "peer");
      }
    }
    assert.equal(c.origin.blobBytesServed - servedBefore, image.blobBytes, "the herd took nothing from the origin");
    // More agents holding the image does not change the seeds.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(statusOf(c, "web").progress, "2/2");
  });

  it("a spec change (new tag, an index, another platform) resolves and seeds again under the new generation; the old assignment is cancelled", async () => {
    const z = await zonedCluster(1);
    cluster = z.cluster;
    const c = z.cluster;
    const v1 = await addImage(c.origin, "v1", [512 * 1024], "v1");
    const v2 = await addImage(c.origin, "v2", [700 * 1024], "v2", { index: true });
    c.api.putImagePrefetch(prefetchObject("web", { images: [v1.ref] }));
    await waitReady(c, "web");
    c.api.putImagePrefetch(prefetchObject("web", { images: [v2.ref], platforms: ["linux/amd64"] }));
    await eventually(
      () => {
        const status = statusOf(c, "web");
        assert.equal(status.observedGeneration, 2);
        assert.equal(status.images?.[0]?.digest, v2.digest);
        assert.equal(conditionOf(status, "Ready")?.status, "True");
      },
      READY_TIMEOUT_MS,
      50,
    );
    const status = statusOf(c, "web");
    assert.deepEqual(
      status.images?.[0]?.platforms.map((p) => p.platform),
      ["linux/amd64"],
    );
    for (const agent of z.agents) assert.equal(await holdsImage(agent, v2), true);
    // The arm64 manifest was not asked for.
    const [resolved] = status.images ?? [];
    assert.equal(
      resolved?.platforms.find((p) => p.platform === "linux/arm64"),
      undefined,
    );
  });

  it("deleting the resource mid-prefetch stops the work on every seed", async () => {
    const z = await zonedCluster(1);
    cluster = z.cluster;
    const c = z.cluster;
    const image = await addImage(c.origin, "delete", [8 * 1024 * 1024], "v1");
    const slow = c.origin.script({ kind: "blob" }, { kind: "body", bytesPerSecond: 1024 * 1024 });
    try {
      c.api.putImagePrefetch(prefetchObject("web", { images: [image.ref] }));
      await eventually(
        () => {
          assert.ok(z.agents.some((a) => a.prefetcher.running.length > 0));
        },
        10_000,
        20,
      );
      c.api.deleteImagePrefetch(APPS, "web");
      await eventually(
        () => {
          for (const agent of z.agents) assert.deepEqual(agent.prefetcher.running, []);
        },
        5_000,
        20,
      );
      assert.equal(c.api.object("imageprefetches", APPS, "web"), undefined);
    } finally {
      slow.remove();
    }
  });

  it("re-seeds an agent that lost the content and seeds agents that join later", async () => {
    const z = await zonedCluster(1);
    cluster = z.cluster;
    const c = z.cluster;
    const image = await addImage(c.origin, "reseed", [1024 * 1024, 300_000], "v1");
    c.api.putImagePrefetch(prefetchObject("web", { images: [image.ref], target: { seedsPerZone: 2 } }));
    await waitReady(c, "web");
    assert.deepEqual(
      statusOf(c, "web").zones?.map((zone) => [zone.zone, zone.target, zone.seeded]),
      [
        ["zone-a", 1, 1],
        ["zone-b", 1, 1],
      ],
      "one agent per zone: target 1",
    );

    // Eviction on a seed: it withdraws the blob, the resource is no longer Ready, the seed is assigned again.
    const [seedA] = z.agents;
    await seedA!.store.delete(image.blobs[1]!.digest);
    await eventually(
      () => {
        assert.ok(prefetchEvents(c, "web").some((e) => e.reason === "Reseeding"));
      },
      10_000,
      20,
    );
    // The publisher records the Event before it writes the status, so the status read next may still be
    // the Ready one from before the eviction: wait for the seed to hold the image again, then for Ready.
    await eventually(
      async () => {
        assert.equal(await holdsImage(seedA!, image), true, "the seed holds everything again");
      },
      READY_TIMEOUT_MS,
      50,
    );
    await waitReady(c, "web");

    // A second agent joins zone-a: the target there becomes 2 and the newcomer is seeded.
    c.addAgentPod("agent-zone-a-2", "node-zone-a-2", "127.0.0.112", "zone-a");
    const late = await c.startAgent("agent-zone-a-2", "node-zone-a-2", "127.0.0.112", undefined, { zoneFromTracker: true });
    await eventually(
      () => {
        const zone = statusOf(c, "web").zones?.find((x) => x.zone === "zone-a");
        assert.deepEqual([zone?.target, zone?.seeded], [2, 2]);
      },
      READY_TIMEOUT_MS,
      50,
    );
    assert.equal(await holdsImage(late, image), true);
  });

  it("a seed whose agent ignores its assignment (an older agent) fails with no_report and is replaced by another agent of its zone", async () => {
    const z = await zonedCluster(1);
    cluster = z.cluster;
    const c = z.cluster;
    // The only agent of zone-a takes no assignments, like an agent older than the controller.
    const silent = z.agents[0]!;
    await silent.prefetcher.stop();
    const image = await addImage(c.origin, "silent", [200_000], "v1");
    c.api.putImagePrefetch(prefetchObject("web", { images: [image.ref], target: { seedsPerZone: 1, zones: ["zone-a"] } }));
    assert.match(await waitFailed(c, "web", "SeedFailed"), /node-zone-a-1: no_report: its agent sent no progress report/);
    assert.equal(statusOf(c, "web").seeds?.[0]?.state, "Failed");
    // Another agent joins zone-a: it is preferred over the one that just failed, and seeded.
    c.addAgentPod("agent-zone-a-2", "node-zone-a-2", "127.0.0.112", "zone-a");
    const working = await c.startAgent("agent-zone-a-2", "node-zone-a-2", "127.0.0.112", undefined, { zoneFromTracker: true });
    await waitReady(c, "web");
    assert.deepEqual(
      statusOf(c, "web").seeds?.map((seed) => [seed.node, seed.state]),
      [["node-zone-a-2", "Seeded"]],
    );
    assert.equal(await holdsImage(working, image), true);
    assert.equal(await holdsImage(silent, image), false);
    assert.equal(conditionOf(statusOf(c, "web"), "Failed")?.status, "False");
  });

  it("nodeSelector seeds every agent on a matching node, and schedule.startAt holds the start back", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    c.addAgentPod("agent-1", "node-1", "127.0.0.121", "zone-a", { pool: "gpu" });
    c.addAgentPod("agent-2", "node-2", "127.0.0.122", "zone-b", { pool: "gpu" });
    c.addAgentPod("agent-3", "node-3", "127.0.0.123", "zone-b", { pool: "web" });
    c.api.putNode({ name: "node-4", zone: "zone-b", labels: { pool: "gpu" } });
    const replica = await c.startReplica("controller-a", prefetchOptions(c));
    await eventually(() => {
      assert.ok(replica.controller.leading);
    }, 10_000);
    await c.forwarder.probe();
    const agents = [
      await c.startAgent("agent-1", "node-1", "127.0.0.121"),
      await c.startAgent("agent-2", "node-2", "127.0.0.122"),
      await c.startAgent("agent-3", "node-3", "127.0.0.123"),
    ];
    const image = await addImage(c.origin, "selector", [256 * 1024], "v1");
    const startAt = new Date(Date.now() + 1_500).toISOString();
    c.api.putImagePrefetch(
      prefetchObject("gpu", { images: [image.ref], target: { nodeSelector: { pool: "gpu" } }, schedule: { startAt } }),
    );
    await eventually(
      () => {
        assert.equal(conditionOf(statusOf(c, "gpu"), "Ready")?.reason, "Scheduled");
      },
      5_000,
      20,
    );
    assert.equal(await holdsImage(agents[0]!, image), false, "nothing fetched before startAt");
    await waitReady(c, "gpu");
    assert.ok(Date.now() >= Date.parse(startAt));
    const status = statusOf(c, "gpu");
    assert.deepEqual(status.seeds?.map((s) => s.node).sort(), ["node-1", "node-2"]);
    assert.match(conditionOf(status, "Ready")?.message ?? "", /matching nodes without an agent: node-4/);
    assert.equal(await holdsImage(agents[2]!, image), false, "the non-matching node was left alone");
  });

  it("spec.ttl deletes the resource when it expires, with an Expired Event", async () => {
    const z = await zonedCluster(1);
    cluster = z.cluster;
    const c = z.cluster;
    const image = await addImage(c.origin, "ttl", [100_000], "v1");
    c.api.putImagePrefetch(prefetchObject("short", { images: [image.ref], ttl: "2s" }));
    // Not waiting for Ready on the way: on a busy machine the two seconds may be over before it is seen.
    await eventually(
      () => {
        assert.equal(c.api.object("imageprefetches", APPS, "short"), undefined);
      },
      10_000,
      50,
    );
    // The Event is sent by the recorder's queue, concurrently with the delete: it may land just after it.
    await eventually(
      () => {
        assert.ok(prefetchEvents(c, "short").some((e) => e.reason === "Expired"));
      },
      10_000,
      50,
    );
  });

  it("a bad reference, an unmirrored registry and an invalid spec each give Failed with a reason and a Warning Event", async () => {
    const z = await zonedCluster(1);
    cluster = z.cluster;
    const c = z.cluster;
    c.api.putImagePrefetch(prefetchObject("missing", { images: [`${c.origin.host}/${REPO}:nope`] }));
    c.api.putImagePrefetch(prefetchObject("elsewhere", { images: ["registry.invalid/team/app:v1"] }));
    c.api.putImagePrefetch(
      prefetchObject("invalid", { images: [`${c.origin.host}/${REPO}:v1`], target: { seedsPerZone: 1, nodeSelector: { a: "b" } } }),
    );
    assert.match(await waitFailed(c, "missing", "ReferenceNotFound"), /has no manifest team\/app:nope/);
    assert.match(await waitFailed(c, "elsewhere", "RegistryNotMirrored"), /registry\.invalid is not one the agents mirror/);
    assert.match(await waitFailed(c, "invalid", "InvalidSpec"), /exactly one of seedsPerZone and nodeSelector/);
    for (const name of ["missing", "elsewhere", "invalid"]) {
      const status = statusOf(c, name);
      assert.equal(conditionOf(status, "Ready")?.status, "False");
      assert.notEqual(conditionOf(status, "Resolved")?.status, "True");
    }
    await eventually(() => {
      assert.ok(prefetchEvents(c, "missing").some((e) => e.type === "Warning" && e.reason === "ReferenceNotFound"));
    });
    // The tag appears later: the retry resolves it.
    await addImage(c.origin, "late-tag", [50_000], "nope");
    await waitReady(c, "missing");
    assert.equal(conditionOf(statusOf(c, "missing"), "Failed")?.status, "False");
  });

  it("a missing pull secret gives Failed PullSecretNotFound; with the Secret the private image is resolved and seeded with its credentials", async () => {
    const z = await zonedCluster(1);
    cluster = z.cluster;
    const c = z.cluster;
    c.origin.requireBasic({ username: "robot", password: "s3cret" });
    const image = await addImage(c.origin, "private", [600_000], "v1");
    c.api.putImagePrefetch(prefetchObject("private", { images: [image.ref], pullSecrets: ["regcred"] }));
    assert.match(await waitFailed(c, "private", "PullSecretNotFound"), /Secret apps\/regcred named in spec.pullSecrets does not exist/);
    c.api.putSecret({ namespace: APPS, name: "regcred", type: "Opaque", data: { password: "x" } });
    assert.match(await waitFailed(c, "private", "PullSecretInvalid"), /type Opaque/);
    c.api.putSecret({
      namespace: APPS,
      name: "regcred",
      type: "kubernetes.io/dockerconfigjson",
      data: { ".dockerconfigjson": DOCKER_CONFIG(c.origin.host, "robot", "wrong") },
    });
    assert.match(await waitFailed(c, "private", "AuthFailed"), /refused access|requires credentials/);
    c.api.putSecret({
      namespace: APPS,
      name: "regcred",
      type: "kubernetes.io/dockerconfigjson",
      data: { ".dockerconfigjson": DOCKER_CONFIG(c.origin.host, "robot", "s3cret") },
    });
    await waitReady(c, "private");
    // The agents have no credentials of their own: the seeds fetched with the ones the assignment carried.
    for (const agent of z.agents) assert.equal(await holdsImage(agent, image), true);
    const events = prefetchEvents(c, "private").map((e) => e.reason);
    for (const reason of ["PullSecretNotFound", "PullSecretInvalid", "AuthFailed", "Resolved", "Ready"])
      assert.ok(events.includes(reason), `${reason} in ${events.join(", ")}`);
  });

  it("leader fail-over mid-prefetch: the new leader continues from the status, without resolving the tag again", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    const pods: [string, string, string, string][] = [
      ["agent-1", "node-1", "127.0.0.131", "zone-a"],
      ["agent-2", "node-2", "127.0.0.132", "zone-b"],
    ];
    for (const [name, node, ip, zone] of pods) c.addAgentPod(name, node, ip, zone);
    await c.startReplica("controller-a", prefetchOptions(c));
    await eventually(() => {
      assert.equal(c.leaders().length, 1);
    }, 10_000);
    await c.startReplica("controller-b", prefetchOptions(c));
    const first = c.leaders()[0]!;
    await c.forwarder.probe();
    const agents: ClusterAgent[] = [];
    for (const [name, node, ip] of pods) agents.push(await c.startAgent(name, node, ip, undefined, { zoneFromTracker: true }));
    const image = await addImage(c.origin, "failover", [6 * 1024 * 1024], "v1");
    const slow = c.origin.script({ kind: "blob" }, { kind: "body", bytesPerSecond: 3 * 1024 * 1024 });
    try {
      c.api.putImagePrefetch(prefetchObject("web", { images: [image.ref] }));
      await eventually(
        () => {
          assert.equal(conditionOf(statusOf(c, "web"), "Ready")?.reason, "Seeding");
          assert.ok(agents.some((a) => a.prefetcher.running.length > 0));
        },
        10_000,
        20,
      );
      await c.stopReplica(first.identity, { release: false });
      const second = [...c.replicas.values()].find((r) => r !== first)!;
      await eventually(
        () => {
          assert.ok(second.controller.leading);
        },
        TIMINGS.leaseDurationMs + 5_000,
        20,
      );
      await waitReady(c, "web", 30_000);
    } finally {
      slow.remove();
    }
    const byTag = c.origin.requests.filter((r) => r.kind === "manifest" && r.reference === "v1");
    assert.equal(byTag.length, 1, "the tag was resolved once; the new leader fetched the manifest by its digest");
    assert.equal(statusOf(c, "web").images?.[0]?.digest, image.digest);
    for (const agent of agents) assert.equal(await holdsImage(agent, image), true);
    assert.ok(
      c.origin.blobBytesServed <= 2 * image.blobBytes,
      `the origin sent ${c.origin.blobBytesServed} bytes for ${image.blobBytes} (pieces fetched before the fail-over are kept)`,
    );
  });

  // Runs last: afterEach has collected the request logs of every test above.
  it("issues exactly the API requests listed in testdata/api-requests-prefetch.json (the chart's RBAC)", async () => {
    await requestLog.check();
  });
});
