// The origin goes away after the first node has the image: the others finish from their peers, and
// a pull by tag still resolves: on a node that resolved the tag before, and on one that never did.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pullRound } from "./pull-round.js";
import { SCENARIO_PULL_TIMEOUT_MS, type Scenario, assertAllPulled, skipReason, startScenario } from "./scenario-fixture.js";

const LINK_BYTES_PER_SECOND = 150e6 / 8;
/** A pull that cannot resolve a tag fails fast; no need to wait for the full pull timeout. */
const TAG_PULL_TIMEOUT_MS = 60_000;

describe("netns: origin stopped after the first node finishes", { skip: skipReason }, () => {
  let scenario: Scenario | undefined;
  before(async () => {
    scenario = await startScenario("origin-stopped", {
      nodeUploadBytesPerSecond: LINK_BYTES_PER_SECOND,
      nodeDownloadBytesPerSecond: LINK_BYTES_PER_SECOND,
      originBytesPerSecond: LINK_BYTES_PER_SECOND,
    });
  });
  after(async () => {
    await scenario?.teardown();
  });

  it("the remaining nodes finish from their peers", async (t) => {
    assert.ok(scenario);
    const { cluster, ref, layout } = scenario;
    // The last node stays out of this round: it never resolves the tag (see the last test).
    const pulling = cluster.nodes.slice(0, -1);
    let stopping: Promise<void> | undefined;
    let stoppedAfter = "";
    const results = await pullRound(pulling, ref, {
      timeoutMs: SCENARIO_PULL_TIMEOUT_MS,
      onFinished: (r) => {
        if (stopping !== undefined || r.error !== undefined) return;
        stoppedAfter = r.node;
        stopping = cluster.stopOrigin();
      },
    });
    await stopping;
    assert.equal(cluster.origin, undefined, "the origin was stopped");
    t.diagnostic(
      `origin stopped after ${stoppedAfter} finished; times ${results.map((r) => `${r.node} ${r.seconds.toFixed(1)} s`).join(", ")}`,
    );
    assertAllPulled(results, layout.root.digest);
  });

  it("a pull by tag on a node that resolved the tag before still works", async () => {
    assert.ok(scenario);
    const { cluster, ref, layout } = scenario;
    const node = cluster.nodes[1];
    assert.ok(node?.containerd);
    assert.equal(cluster.origin, undefined, "the origin is still down");
    await node.containerd.removeImage(ref);
    assertAllPulled(await pullRound([node], ref, { timeoutMs: TAG_PULL_TIMEOUT_MS }), layout.root.digest);
  });

  it("a pull by tag on a node that never resolved the tag works (the tracker's tag record, manifests from peers)", async () => {
    assert.ok(scenario);
    const { cluster, ref, layout } = scenario;
    const node = cluster.nodes.at(-1);
    assert.ok(node);
    assert.equal(cluster.origin, undefined, "the origin is still down");
    assertAllPulled(await pullRound([node], ref, { timeoutMs: TAG_PULL_TIMEOUT_MS }), layout.root.digest);
  });
});
