// Simultaneous cold start on network namespaces: every node's containerd pulls the same image through
// its own agent at the same moment; the origin's interface sends the image about once.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pullRound } from "./pull-round.js";
import {
  SCENARIO_PULL_TIMEOUT_MS,
  type Scenario,
  assertAllPulled,
  assertOriginSentAboutOnce,
  skipReason,
  startScenario,
} from "./scenario-fixture.js";

describe("netns: simultaneous cold start", { skip: skipReason }, () => {
  let scenario: Scenario | undefined;
  before(async () => {
    scenario = await startScenario("cold");
  });
  after(async () => {
    await scenario?.teardown();
  });

  it("every node gets the image; the origin's interface sends it about once", async () => {
    assert.ok(scenario);
    const { cluster, ref, layout, imageBytes } = scenario;
    const before = await cluster.originTxBytes();
    const results = await pullRound(cluster.nodes, ref, { timeoutMs: SCENARIO_PULL_TIMEOUT_MS });
    assertAllPulled(results, layout.root.digest);
    assertOriginSentAboutOnce((await cluster.originTxBytes()) - before, imageBytes);
    const uploads = (await cluster.topology.nodeCounters()).map((c) => c.tx);
    assert.ok(uploads.reduce((a, b) => a + b, 0) >= (cluster.nodes.length - 1) * imageBytes * 0.9, "the nodes fed each other");
  });
});
