import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { type Digest, digestOf } from "../oci/index.js";
import { GrpcTrackerClient } from "../tracker/index.js";
import { LEADER_ANNOTATION } from "./leader-address.js";
import { NAMESPACE, type Replica, TestCluster } from "./testing/test-cluster.js";
import type { ClusterAgent } from "./testing/cluster-agent.js";

const REPO = "team/app";
const AGENTS = 4;
/** Blobs pulled after the upgrade finished, so that pulls overlap every step of it and go on after. */
const BLOBS_AFTER_UPGRADE = 2;
/** Bounds the pull loop whatever happens to the upgrade. */
const MAX_BLOBS = 40;

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** An annotation of the Lease as the API double holds it. */
function leaseAnnotation(cluster: TestCluster, key: string): string | undefined {
  const metadata = cluster.api.object("leases", NAMESPACE, "shoal-controller")?.metadata as
    { annotations?: Record<string, string> } | undefined;
  return metadata?.annotations?.[key];
}

/** GET requests for `digest`'s bytes that reached the origin (blob or its storage redirect target). */
function originGets(cluster: TestCluster, digest: Digest): number {
  return cluster.origin.requests.filter((r) => r.method === "GET" && r.kind === "blob" && r.reference === digest).length;
}

/** A Deployment's rolling update with maxSurge 1, maxUnavailable 0: a new replica Ready, then one old one stopped (SIGTERM: the Lease is released). */
async function surge(cluster: TestCluster, newIdentity: string, old: Replica): Promise<Replica> {
  const added = await cluster.startReplica(newIdentity);
  await waitFor(() => added.controller.ready() === true, 15_000, `${newIdentity} to be Ready`);
  await waitFor(() => cluster.forwarder.readyTargets.includes(added.controller.trackerAddress), 5_000, `${newIdentity} behind the Service`);
  await cluster.stopReplica(old.identity);
  return added;
}

describe("rolling upgrade of the controller (API double, real client-node, real gRPC tracker)", () => {
  let cluster: TestCluster | undefined;

  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  it("followers are Ready and send agents to the leader: a client pointed at a follower registers with the leader", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    c.addAgentPod("agent-1", "node-1", "127.0.0.41");
    const a = await c.startReplica("controller-a");
    await waitFor(() => c.leaders().length === 1, 10_000, "a leader");
    const b = await c.startReplica("controller-b");
    await waitFor(() => a.controller.ready() === true && b.controller.ready() === true, 10_000, "both replicas Ready");
    const [leader, follower] = a.controller.leading ? [a, b] : [b, a];
    await waitFor(
      () => follower.controller.leaderAddress() !== undefined,
      10_000,
      "the follower to read the leader's address from the Lease",
    );
    assert.equal(follower.controller.leaderAddress(), leader.controller.trackerAddress);
    assert.equal(leader.controller.leaderAddress(), undefined, "the leader sends no one elsewhere");
    const note = JSON.parse(String(leaseAnnotation(c, LEADER_ANNOTATION))) as unknown;
    assert.deepEqual(note, { holder: leader.identity, address: leader.controller.trackerAddress });
    await waitFor(() => c.forwarder.readyTargets.length === 2, 5_000, "the Service to route to both replicas");
    assert.deepEqual(new Set(c.forwarder.readyTargets), new Set([a.controller.trackerAddress, b.controller.trackerAddress]));

    // An agent whose Service connection lands on the follower ends up registered with the leader.
    const agent = await c.startAgent("agent-1", "node-1", "127.0.0.41");
    await waitFor(() => agent.tracker instanceof GrpcTrackerClient && agent.tracker.connected, 10_000, "the agent's session");
    await waitFor(() => leader.controller.tracker.snapshot().agents.length === 1, 10_000, "the session on the leader");
    assert.equal(follower.controller.tracker.snapshot().agents.length, 0);

    // A stopping replica is not Ready; releasing the Lease removes the leader's note with it.
    await c.stopReplica(leader.identity);
    assert.notEqual(leader.controller.ready(), true);
    const released = c.api.object("leases", NAMESPACE, "shoal-controller");
    const holder = (released?.spec as { holderIdentity?: string }).holderIdentity ?? "";
    if (holder === "") assert.equal(leaseAnnotation(c, LEADER_ANNOTATION), undefined, "released without the note");
    await waitFor(() => follower.controller.leading, 10_000, "the follower to lead");
    await waitFor(() => follower.controller.tracker.snapshot().agents.length === 1, 10_000, "the agent on the new leader");
  });

  it("a surge-one rolling update while agents pull: every pull completes, the origin sends each blob once, agents end on the new leader", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    const ips = Array.from({ length: AGENTS }, (_, i) => `127.0.0.${51 + i}`);
    ips.forEach((ip, i) => {
      c.addAgentPod(`agent-${i}`, `node-${i}`, ip);
    });
    const a = await c.startReplica("controller-old-a");
    await waitFor(() => c.leaders().length === 1, 10_000, "a leader");
    const b = await c.startReplica("controller-old-b");
    await waitFor(() => a.controller.ready() === true && b.controller.ready() === true, 10_000, "both replicas Ready");
    await waitFor(() => c.forwarder.readyTargets.length === 2, 5_000, "the Service to route to both replicas");
    const agents: ClusterAgent[] = [];
    for (const [i, ip] of ips.entries()) agents.push(await c.startAgent(`agent-${i}`, `node-${i}`, ip));
    const firstLeader = c.leaders()[0]!;
    await waitFor(() => firstLeader.controller.tracker.snapshot().agents.length === AGENTS, 15_000, "every agent on the first leader");

    // Blob i: one agent pulls it first (the origin grant), then the others at once (from peers).
    const digests: Digest[] = [];
    const failures: string[] = [];
    const progress = { upgraded: false, blobsAfter: 0 };
    const pullLoop = (async () => {
      for (let i = 0; i < MAX_BLOBS && progress.blobsAfter < BLOBS_AFTER_UPGRADE; i++) {
        if (progress.upgraded) progress.blobsAfter++;
        const blob = await c.origin.addBlob({ size: 1024 * 1024 + 4096 * i + 13, seed: `upgrade-${i}` });
        digests.push(blob.digest);
        const first = agents[i % AGENTS]!;
        const pulls = [first.pull(c.origin.host, REPO, blob.digest)];
        const firstResult = await pulls[0]!.catch((error: unknown) => error);
        const rest = agents
          .filter((x) => x !== first)
          .map((x) => x.pull(c.origin.host, REPO, blob.digest).catch((error: unknown) => error));
        for (const [j, result] of [firstResult, ...(await Promise.all(rest))].entries()) {
          if (result instanceof Error) failures.push(`blob ${i} pull ${j}: ${result.message}`);
          else if (
            typeof result === "object" &&
            result !== null &&
            "bytes" in result &&
            digestOf((result as { bytes: Buffer }).bytes) !== blob.digest
          )
            failures.push(`blob ${i} pull ${j}: wrong bytes`);
        }
      }
    })();

    // maxSurge 1, maxUnavailable 0: new-1 Ready, the old leader stopped; new-2 Ready, the other old one stopped.
    const oldFollower = firstLeader === a ? b : a;
    const n1 = await surge(c, "controller-new-1", firstLeader);
    const n2 = await surge(c, "controller-new-2", oldFollower);
    progress.upgraded = true;
    await pullLoop;

    assert.deepEqual(failures, []);
    assert.ok(digests.length > BLOBS_AFTER_UPGRADE, `pulls overlapped the upgrade (${digests.length} blobs)`);
    for (const digest of digests) assert.equal(originGets(c, digest), 1, `the origin sent ${digest} once`);
    const leaders = c.leaders();
    assert.equal(leaders.length, 1);
    const leader = leaders[0]!;
    assert.ok(leader === n1 || leader === n2, "a new replica leads");
    const follower = leader === n1 ? n2 : n1;
    await waitFor(() => leader.controller.tracker.snapshot().agents.length === AGENTS, 15_000, "every agent on the new leader");
    assert.equal(follower.controller.tracker.snapshot().agents.length, 0, "no session stays on a follower");
    const lease = c.api.object("leases", NAMESPACE, "shoal-controller")?.spec as { holderIdentity?: string; leaseTransitions?: number };
    assert.equal(lease.holderIdentity, leader.identity);
    assert.ok((lease.leaseTransitions ?? 0) >= 1);
  });
});
