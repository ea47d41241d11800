import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { createPublicKey } from "node:crypto";
import { type ChannelCredentials, Metadata, credentials, status } from "@grpc/grpc-js";
import { TrackerServiceClient } from "../gen/tracker/v1/tracker.js";
import { type WorkloadIdentity, generateKey } from "../identity/index.js";
import { digestOf } from "../oci/index.js";
import { LEADER_ADDRESS_METADATA } from "../tracker/index.js";
import { eventually } from "../tracker/testing/helpers.js";
import { ApiRequestLog } from "./testing/api-request-log.js";
import { NAMESPACE, TIMINGS, TestCluster } from "./testing/test-cluster.js";

const requestLog = new ApiRequestLog(new URL("../../../pkg/controller/testdata/api-requests.json", import.meta.url));
/** client-go acquires at retryPeriod × [1, 2.2]; a takeover can also wait one such period to observe the last renewal. */
const ACQUIRE_SLACK_MS = 2 * 2.2 * TIMINGS.retryPeriodMs + 300;
const REPO = "team/app";

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return performance.now() - start;
}

async function status200(url: string): Promise<number> {
  const response = await fetch(url);
  await response.body?.cancel();
  return response.status;
}

/**
 * TLS credentials of a certificate minted straight from the cluster's CA for `identity` (as if its key
 * had been stolen or the CA misused): the membership must still hold.
 */
function minted(cluster: TestCluster, identity: WorkloadIdentity): ChannelCredentials {
  const key = generateKey();
  const issued = cluster.ca.issue({ publicKey: createPublicKey(key), identity, lifetimeMs: 3_600_000 });
  return credentials.createSsl(
    Buffer.from(cluster.ca.certificatePem),
    Buffer.from(key.export({ type: "pkcs8", format: "pem" })),
    Buffer.from(issued.certificatePem),
    { checkServerIdentity: () => undefined },
  );
}

/** A raw Lookup against one replica's tracker (no session): what a follower answers. */
function rawLookup(address: string, channel: ChannelCredentials): Promise<{ code: number; details: string; leader: unknown[] }> {
  const client = new TrackerServiceClient(address, channel);
  return new Promise((resolve) => {
    client.lookup(
      { agentId: "probe", digest: digestOf("x"), wantOriginGrant: false, excludedAgentIds: [], expectedSize: 0 },
      new Metadata(),
      { deadline: Date.now() + 3_000 },
      (error) => {
        client.close();
        resolve({
          code: error?.code ?? status.OK,
          details: error?.details ?? "",
          leader: error?.metadata.get(LEADER_ADDRESS_METADATA) ?? [],
        });
      },
    );
  });
}

/** Opens a session from `sourceIp` (through the Service) and returns the status it ends with. */
async function rawRegister(
  cluster: TestCluster,
  sourceIp: string,
  nodeName: string,
  channel: ChannelCredentials = credentials.createInsecure(),
): Promise<{ code: number; details: string }> {
  const client = new TrackerServiceClient(await cluster.forwarder.endpointFor(sourceIp), channel);
  return await new Promise((resolve) => {
    const call = client.session();
    const timer = setTimeout(() => {
      call.cancel();
    }, 3_000);
    call.on("data", () => undefined);
    call.on("error", () => undefined);
    call.on("status", (s: { code: number; details: string }) => {
      clearTimeout(timer);
      client.close();
      resolve({ code: s.code, details: s.details });
    });
    call.write({
      kind: {
        $case: "register",
        value: { agentId: "intruder-1", nodeName, zone: "", peerAddress: `${sourceIp}:5052`, resumeBlobs: 0, acceptsNotices: false },
      },
    });
  });
}

describe("controller with Kubernetes membership (API double, real client-node, real gRPC tracker)", () => {
  let cluster: TestCluster | undefined;

  afterEach(async () => {
    if (cluster === undefined) return;
    requestLog.collect(cluster);
    await cluster.close();
    cluster = undefined;
  });

  it("two replicas: exactly one leads and serves, both are Ready; the follower refuses with UNAVAILABLE naming the leader", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    const [r1, r2] = [await c.startReplica("controller-a"), await c.startReplica("controller-b")];
    await waitFor(() => c.leaders().length === 1, 10_000, "a leader");
    // Let both campaign for a few retry periods: still exactly one.
    await new Promise((r) => setTimeout(r, 4 * TIMINGS.retryPeriodMs));
    const leaders = c.leaders();
    assert.equal(leaders.length, 1);
    const leader = leaders[0]!;
    const follower = leader === r1 ? r2 : r1;
    assert.equal(c.api.object("leases", NAMESPACE, "shoal-controller")?.spec !== undefined, true);
    assert.equal(
      (c.api.object("leases", NAMESPACE, "shoal-controller")?.spec as { holderIdentity?: string }).holderIdentity,
      leader.identity,
    );
    await waitFor(() => leader.controller.ready() === true && follower.controller.ready() === true, 10_000, "both replicas' certificates");
    assert.equal(await status200(leader.readyUrl), 200);
    assert.equal(await status200(follower.readyUrl), 200, "a synced follower is Ready: it sends agents on to the leader");
    await waitFor(() => follower.controller.leaderAddress() !== undefined, 10_000, "the follower to read the leader's address");
    const probe = minted(c, { role: "agent", name: "node-probe", ips: ["127.0.0.1"] });
    const refused = await rawLookup(follower.controller.trackerAddress, probe);
    assert.equal(refused.code, status.UNAVAILABLE);
    assert.match(refused.details, new RegExp(`not the leader \\(the leader is ${leader.identity}\\)`));
    assert.deepEqual(refused.leader, [leader.controller.trackerAddress]);
    assert.equal(
      await follower.metrics.registry
        .getSingleMetricAsString("shoal_tracker_redirects_total")
        .then((t) => /shoal_tracker_redirects_total 1\b/.test(t)),
      true,
    );
    const served = await rawLookup(leader.controller.trackerAddress, probe);
    assert.equal(served.code, status.FAILED_PRECONDITION, "the leader answers (the probe has no session)");
    await eventually(() => {
      assert.ok(c.api.events(NAMESPACE).some((e) => e.reason === "LeaderElected" && String(e.message).startsWith(leader.identity)));
    });
    assert.equal(
      await leader.metrics.registry.getSingleMetricAsString("shoal_controller_leader").then((t) => /shoal_controller_leader 1/.test(t)),
      true,
    );
  });

  it("the leader dies without releasing: the follower leads within the lease duration, agents follow and the swarm keeps working", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    c.addAgentPod("agent-1", "node-1", "127.0.0.21", "zone-a");
    c.addAgentPod("agent-2", "node-2", "127.0.0.22", "zone-a");
    c.addAgentPod("agent-3", "node-3", "127.0.0.23", "zone-b");
    await c.startReplica("controller-a");
    await waitFor(() => c.leaders().length === 1, 10_000, "the first leader");
    await c.startReplica("controller-b");
    const first = c.leaders()[0]!;
    await c.forwarder.probe();
    const agents = [
      await c.startAgent("agent-1", "node-1", "127.0.0.21"),
      await c.startAgent("agent-2", "node-2", "127.0.0.22"),
      await c.startAgent("agent-3", "node-3", "127.0.0.23"),
    ];
    await waitFor(() => agents.every((a) => a.tracker.connected), 10_000, "agents connected to the first leader");
    const blob = await c.origin.addBlob({ size: 3 * 1024 * 1024 + 17, seed: "failover" });
    const pulled = await agents[0]!.pull(c.origin.host, REPO, blob.digest);
    assert.equal(digestOf(pulled.bytes), blob.digest);
    assert.equal(pulled.source, "origin");
    await eventually(() => {
      assert.equal(first.controller.tracker.snapshot().blobs.length, 1, "announced to the first leader");
    });

    const killedAt = performance.now();
    await c.stopReplica(first.identity, { release: false });
    const second = [...c.replicas.values()].find((r) => r !== first)!;
    await waitFor(() => second.controller.leading, TIMINGS.leaseDurationMs + ACQUIRE_SLACK_MS + 2_000, "the follower to lead");
    const takeoverMs = performance.now() - killedAt;
    assert.ok(takeoverMs <= TIMINGS.leaseDurationMs + ACQUIRE_SLACK_MS, `took over after ${Math.round(takeoverMs)} ms`);
    assert.ok(
      takeoverMs >= TIMINGS.leaseDurationMs - 2 * TIMINGS.retryPeriodMs,
      `took over after only ${Math.round(takeoverMs)} ms: the lease had not expired`,
    );
    const lease = c.api.object("leases", NAMESPACE, "shoal-controller")?.spec as { holderIdentity?: string; leaseTransitions?: number };
    assert.equal(lease.holderIdentity, second.identity);
    assert.equal(lease.leaseTransitions, 1);

    // Agents reconnect through the Service to the new leader and re-announce what they hold.
    await waitFor(() => second.controller.tracker.snapshot().agents.length === 3, 10_000, "agents to re-register with the new leader");
    await eventually(() => {
      const blobs = second.controller.tracker.snapshot().blobs;
      assert.equal(blobs[0]?.holders[0]?.agentId, agents[0]!.agentId, "agent-1 re-announced its blob");
    }, 5_000);
    const fromPeer = await agents[2]!.pull(c.origin.host, REPO, blob.digest);
    assert.equal(digestOf(fromPeer.bytes), blob.digest);
    assert.equal(fromPeer.source, "peer");
    assert.equal(c.origin.blobBytesServed, blob.size, "the origin still sent the blob once");
  });

  it("graceful stop releases the Lease: the follower leads almost at once", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    await c.startReplica("controller-a");
    await waitFor(() => c.leaders().length === 1, 10_000, "the first leader");
    await c.startReplica("controller-b");
    await new Promise((r) => setTimeout(r, 2 * TIMINGS.retryPeriodMs));
    const first = c.leaders()[0]!;
    const second = [...c.replicas.values()].find((r) => r !== first)!;
    const stoppedAt = performance.now();
    await c.stopReplica(first.identity);
    const released = c.api.object("leases", NAMESPACE, "shoal-controller")?.spec as { holderIdentity?: string };
    assert.ok(released.holderIdentity === "" || released.holderIdentity === second.identity, "released (or already taken)");
    await waitFor(() => second.controller.leading, 5_000, "the follower to lead");
    const takeoverMs = performance.now() - stoppedAt;
    assert.ok(takeoverMs < TIMINGS.leaseDurationMs / 2 + 2.2 * TIMINGS.retryPeriodMs, `took over after ${Math.round(takeoverMs)} ms`);
  });

  it("deleting an agent Pod drops its peer from lookups at once and records PeerDropped", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    c.addAgentPod("agent-1", "node-1", "127.0.0.31");
    c.addAgentPod("agent-2", "node-2", "127.0.0.32");
    c.addAgentPod("agent-3", "node-3", "127.0.0.33");
    const replica = await c.startReplica("controller-a");
    await waitFor(() => replica.controller.leading, 10_000, "leadership");
    await c.forwarder.probe();
    const [a1, a2, a3] = [
      await c.startAgent("agent-1", "node-1", "127.0.0.31"),
      await c.startAgent("agent-2", "node-2", "127.0.0.32"),
      await c.startAgent("agent-3", "node-3", "127.0.0.33"),
    ];
    await waitFor(() => a1.tracker.connected && a2.tracker.connected && a3.tracker.connected, 10_000, "agents connected");
    const blob = await c.origin.addBlob({ size: 1024 * 1024, seed: "delete" });
    await a1.pull(c.origin.host, REPO, blob.digest);
    await eventually(async () => {
      assert.equal((await a2.tracker.lookup(blob.digest, { wantOriginGrant: false })).holders.length, 1);
    });
    const deletedAt = performance.now();
    c.api.deletePod(NAMESPACE, "agent-1");
    const dropMs = await waitFor(
      () => !replica.controller.tracker.snapshot().agents.some((a) => a.identity.agentId === a1.agentId),
      2_000,
      "agent-1 to be dropped",
    );
    assert.ok(performance.now() - deletedAt < 1_000, `dropped after ${Math.round(dropMs)} ms`);
    assert.deepEqual((await a2.tracker.lookup(blob.digest, { wantOriginGrant: false })).holders, []);
    await eventually(() => {
      const event = c.api.events(NAMESPACE).find((e) => e.reason === "PeerDropped");
      assert.ok(event !== undefined, "PeerDropped recorded");
      assert.equal((event.involvedObject as { name?: string }).name, "agent-1");
      assert.match(String(event.message), /PodDeleted/);
      assert.deepEqual(event.source, { component: "shoal-controller", host: "controller-a" });
    });
    // A terminating Pod and a changed pod IP drop their agents too.
    c.api.markPodTerminating(NAMESPACE, "agent-2");
    c.api.setPodIP(NAMESPACE, "agent-3", "127.0.0.43");
    await waitFor(() => replica.controller.tracker.snapshot().agents.length === 0, 2_000, "agent-2 and agent-3 to be dropped");
    // Events are sent in the background, after the drop.
    await eventually(() => {
      const reasons = c.api
        .events(NAMESPACE)
        .filter((e) => e.reason === "PeerDropped")
        .map((e) => String(e.message).split(": ").at(-1));
      assert.deepEqual(reasons.sort(), ["PodDeleted", "PodIPChanged", "PodTerminating"]);
    });
    assert.match(await replica.metrics.registry.getSingleMetricAsString("shoal_tracker_peers_dropped_total"), /reason="PodDeleted"\} 1/);
  });

  it("refuses strangers at the handshake, and certificates used from addresses that are no agent Pod or claiming another node", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    c.addAgentPod("agent-1", "node-1", "127.0.0.51");
    c.api.putPod({ namespace: NAMESPACE, name: "not-an-agent", nodeName: "node-1", ip: "127.0.0.52", labels: { app: "web" } });
    const replica = await c.startReplica("controller-a");
    await waitFor(() => replica.controller.ready() === true, 10_000, "leadership and the controller's certificate");
    await c.forwarder.probe();
    // No certificate at all: the handshake fails, nothing is registered.
    const plain = await rawRegister(c, "127.0.0.51", "node-1");
    assert.equal(plain.code, status.UNAVAILABLE);
    // Certificates from the CA that the membership still refuses (a misused CA, a stolen key).
    const stranger = await rawRegister(c, "127.0.0.59", "node-1", minted(c, { role: "agent", name: "node-1", ips: ["127.0.0.59"] }));
    assert.equal(stranger.code, status.PERMISSION_DENIED);
    assert.match(
      stranger.details,
      /connection from 127\.0\.0\.59 is not from a running agent Pod \(namespace shoal, selector app\.kubernetes\.io\/name=shoal/,
    );
    const wrongLabels = await rawRegister(c, "127.0.0.52", "node-1", minted(c, { role: "agent", name: "node-1", ips: ["127.0.0.52"] }));
    assert.equal(wrongLabels.code, status.PERMISSION_DENIED);
    const wrongNode = await rawRegister(c, "127.0.0.51", "node-7", minted(c, { role: "agent", name: "node-7", ips: ["127.0.0.51"] }));
    assert.equal(wrongNode.code, status.PERMISSION_DENIED);
    assert.match(wrongNode.details, /registers as node "node-7" but its Pod shoal\/agent-1 runs on node "node-1"/);
    assert.equal(replica.controller.tracker.snapshot().agents.length, 0);
    assert.match(
      await replica.metrics.registry.getSingleMetricAsString("shoal_tracker_sessions_refused_total"),
      /shoal_tracker_sessions_refused_total 3/,
    );
  });

  it("ranks by the zones of Node labels, not what agents claim, and follows zone label changes", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    c.addAgentPod("agent-1", "node-1", "127.0.0.61", "zone-a");
    c.addAgentPod("agent-2", "node-2", "127.0.0.62", "zone-b");
    c.addAgentPod("agent-3", "node-3", "127.0.0.63", "zone-a");
    const replica = await c.startReplica("controller-a");
    await waitFor(() => replica.controller.leading, 10_000, "leadership");
    await c.forwarder.probe();
    // Every agent claims zone-b: the tracker must not believe it.
    const [a1, a2, a3] = [
      await c.startAgent("agent-1", "node-1", "127.0.0.61", "zone-b"),
      await c.startAgent("agent-2", "node-2", "127.0.0.62", "zone-b"),
      await c.startAgent("agent-3", "node-3", "127.0.0.63", "zone-b"),
    ];
    await waitFor(() => replica.controller.tracker.snapshot().agents.length === 3, 10_000, "agents registered");
    const zones = Object.fromEntries(replica.controller.tracker.snapshot().agents.map((a) => [a.identity.nodeName, a.identity.zone]));
    assert.deepEqual(zones, { "node-1": "zone-a", "node-2": "zone-b", "node-3": "zone-a" });
    const blob = await c.origin.addBlob({ size: 1024 * 1024, seed: "zones" });
    await a2.pull(c.origin.host, REPO, blob.digest);
    await a3.pull(c.origin.host, REPO, blob.digest);
    await eventually(async () => {
      const holders = (await a1.tracker.lookup(blob.digest, { wantOriginGrant: false })).holders;
      assert.equal(holders.length, 2);
      assert.ok(holders.every((h) => h.complete));
    });
    for (let i = 0; i < 5; i++) {
      const holders = (await a1.tracker.lookup(blob.digest, { wantOriginGrant: false })).holders;
      assert.deepEqual(
        holders.map((h) => h.nodeName),
        ["node-3", "node-2"],
        "the same-zone holder first",
      );
    }
    c.api.updateNode("node-2", (node) => {
      node.metadata.labels = { ...node.metadata.labels, "topology.kubernetes.io/zone": "zone-a" };
    });
    await eventually(() => {
      const agent = replica.controller.tracker.snapshot().agents.find((a) => a.identity.nodeName === "node-2");
      assert.equal(agent?.identity.zone, "zone-a");
    });
  });

  // Runs last: afterEach has collected the request logs of every test above.
  it("issues exactly the API requests listed in testdata/api-requests.json (the chart's RBAC)", async () => {
    await requestLog.check();
  });
});
