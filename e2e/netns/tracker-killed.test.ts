// The tracker (controller) is killed in the middle of a cold start: every node still finishes, from
// the peers it already knows or from the origin.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pullRound, waitForNodesReceived } from "./pull-round.js";
import { SCENARIO_PULL_TIMEOUT_MS, type Scenario, assertAllPulled, skipReason, startScenario } from "./scenario-fixture.js";

const LINK_BYTES_PER_SECOND = 100e6 / 8;

describe("netns: tracker killed mid-run", { skip: skipReason }, () => {
  let scenario: Scenario | undefined;
  before(async () => {
    scenario = await startScenario("tracker-killed", {
      nodeUploadBytesPerSecond: LINK_BYTES_PER_SECOND,
      nodeDownloadBytesPerSecond: LINK_BYTES_PER_SECOND,
      originBytesPerSecond: LINK_BYTES_PER_SECOND,
    });
  });
  after(async () => {
    await scenario?.teardown();
  });

  it("every node finishes with the right digest", async (t) => {
    assert.ok(scenario);
    const { cluster, ref, layout, imageBytes } = scenario;
    const baseline = await cluster.topology.nodeCounters();
    const originBefore = await cluster.originTxBytes();
    const finished = new Set<string>();
    const round = pullRound(cluster.nodes, ref, {
      timeoutMs: SCENARIO_PULL_TIMEOUT_MS,
      onFinished: (r) => {
        finished.add(r.node);
      },
    });
    await waitForNodesReceived(cluster.topology, baseline, (cluster.nodes.length * imageBytes) / 3, {
      timeoutMs: SCENARIO_PULL_TIMEOUT_MS,
    });
    assert.equal(finished.size, 0, "the tracker dies while every pull is still running");
    await cluster.killController();
    const results = await round;
    assertAllPulled(results, layout.root.digest);
    const sent = (await cluster.originTxBytes()) - originBefore;
    t.diagnostic(`times ${results.map((r) => r.seconds.toFixed(1)).join(", ")} s; origin sent ${(sent / imageBytes).toFixed(2)} × F`);
  });
});
