// Churn: the node that has uploaded the most (the best seeder) dies halfway through a cold start;
// every other node still gets the image, verified by containerd.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pullRound, waitForNodesReceived } from "./pull-round.js";
import { SCENARIO_PULL_TIMEOUT_MS, type Scenario, assertAllPulled, nodesExcept, skipReason, startScenario } from "./scenario-fixture.js";

/** Slower links than the other scenarios, so "halfway" lasts long enough to act on. */
const LINK_BYTES_PER_SECOND = 100e6 / 8;

describe("netns: churn, the best seeder killed halfway", { skip: skipReason }, () => {
  let scenario: Scenario | undefined;
  before(async () => {
    scenario = await startScenario("churn", {
      nodeUploadBytesPerSecond: LINK_BYTES_PER_SECOND,
      nodeDownloadBytesPerSecond: LINK_BYTES_PER_SECOND,
      originBytesPerSecond: LINK_BYTES_PER_SECOND,
    });
  });
  after(async () => {
    await scenario?.teardown();
  });

  it("the others finish with the right digest", async (t) => {
    assert.ok(scenario);
    const { cluster, ref, layout, imageBytes } = scenario;
    const { topology } = cluster;
    const baseline = await topology.nodeCounters();
    const finished = new Set<string>();
    const round = pullRound(cluster.nodes, ref, {
      timeoutMs: SCENARIO_PULL_TIMEOUT_MS,
      onFinished: (r) => {
        finished.add(r.node);
      },
    });
    const halfway = (cluster.nodes.length * imageBytes) / 2;
    const now = await waitForNodesReceived(topology, baseline, halfway, { timeoutMs: SCENARIO_PULL_TIMEOUT_MS });
    const uploaded = now.map((c, i) => c.tx - (baseline[i]?.tx ?? 0));
    const best = uploaded.indexOf(Math.max(...uploaded));
    const victim = cluster.nodes[best];
    assert.ok(victim);
    assert.equal(finished.size, 0, "nobody had finished at halfway: the kill lands mid-transfer");
    await cluster.killAgent(victim);
    await cluster.stopContainerd(victim);
    t.diagnostic(
      `killed ${victim.endpoint.name} after it uploaded ${(uploaded[best] ?? 0) / imageBytes} × F; uploads ${uploaded.map((u) => (u / imageBytes).toFixed(2)).join(", ")}`,
    );
    const results = (await round).filter((r) => r.node !== victim.endpoint.name);
    assert.equal(results.length, nodesExcept(cluster.nodes, victim).length);
    assertAllPulled(results, layout.root.digest);
  });
});
