// Rolling start: 20% of the nodes pull at a time, each wave after the previous one finished. Later
// waves find the image on their peers; the origin still sends it about once.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type NodePullResult, pullRound } from "./pull-round.js";
import {
  ORIGIN_COPIES_LIMIT,
  SCENARIO_PULL_TIMEOUT_MS,
  type Scenario,
  assertAllPulled,
  skipReason,
  startScenario,
} from "./scenario-fixture.js";

const NODES = 5;
const WAVE_FRACTION = 0.2;

describe("netns: rolling start, 20% of the nodes at a time", { skip: skipReason }, () => {
  let scenario: Scenario | undefined;
  before(async () => {
    scenario = await startScenario("rolling", { nodes: NODES });
  });
  after(async () => {
    await scenario?.teardown();
  });

  it("every wave gets the image; the origin sends it about once in all", async (t) => {
    assert.ok(scenario);
    const { cluster, ref, layout, imageBytes } = scenario;
    const waveSize = Math.max(1, Math.round(WAVE_FRACTION * cluster.nodes.length));
    const before = await cluster.originTxBytes();
    const results: NodePullResult[] = [];
    for (let first = 0; first < cluster.nodes.length; first += waveSize) {
      const wave = cluster.nodes.slice(first, first + waveSize);
      const waveResults = await pullRound(wave, ref, { timeoutMs: SCENARIO_PULL_TIMEOUT_MS });
      assertAllPulled(waveResults, layout.root.digest);
      results.push(...waveResults);
    }
    assert.equal(results.length, cluster.nodes.length);
    const sent = (await cluster.originTxBytes()) - before;
    t.diagnostic(
      `waves of ${waveSize}: ${results.map((r) => `${r.node} ${r.seconds.toFixed(1)} s`).join(", ")}; origin sent ${(sent / imageBytes).toFixed(3)} × F`,
    );
    assert.ok(sent <= ORIGIN_COPIES_LIMIT * imageBytes, `the origin sent ${(sent / imageBytes).toFixed(3)} × F`);
  });
});
