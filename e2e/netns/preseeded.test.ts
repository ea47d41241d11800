// One node already holds the image (it pulled it earlier); when all the others pull it at once, the
// origin sends next to nothing: only the tag resolution.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pullRound } from "./pull-round.js";
import { SCENARIO_PULL_TIMEOUT_MS, type Scenario, assertAllPulled, skipReason, startScenario } from "./scenario-fixture.js";

/** Tag resolutions (HEAD/GET of the manifest by tag) are all the origin should still serve. */
const RESIDUAL_ORIGIN_FRACTION = 0.01;

describe("netns: one node pre-seeded", { skip: skipReason }, () => {
  let scenario: Scenario | undefined;
  before(async () => {
    scenario = await startScenario("preseeded");
  });
  after(async () => {
    await scenario?.teardown();
  });

  it("the other nodes get the image from it; the origin sends ~0", async (t) => {
    assert.ok(scenario);
    const { cluster, ref, layout, imageBytes } = scenario;
    const [seed, ...others] = cluster.nodes;
    assert.ok(seed);
    assertAllPulled(await pullRound([seed], ref, { timeoutMs: SCENARIO_PULL_TIMEOUT_MS }), layout.root.digest);
    const before = await cluster.originTxBytes();
    const seedSentBefore = await cluster.topology.counter(seed.endpoint, "tx_bytes");
    assertAllPulled(await pullRound(others, ref, { timeoutMs: SCENARIO_PULL_TIMEOUT_MS }), layout.root.digest);
    const sent = (await cluster.originTxBytes()) - before;
    const seedSent = (await cluster.topology.counter(seed.endpoint, "tx_bytes")) - seedSentBefore;
    t.diagnostic(
      `origin sent ${sent} bytes (${((100 * sent) / imageBytes).toFixed(2)}% of F); the seed uploaded ${(seedSent / imageBytes).toFixed(2)} × F`,
    );
    assert.ok(sent <= RESIDUAL_ORIGIN_FRACTION * imageBytes, `the origin sent ${sent} bytes for an image the cluster already had`);
    assert.ok(seedSent >= 0.9 * imageBytes, "the pre-seeded node served the image");
  });
});
