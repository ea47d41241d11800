// The kubelet's pull path on network namespaces: each node's containerd pulls through its CRI plugin (the
// daemon fetches by itself, through its hosts.toml), the way `npm run bench` pulls by default.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { generateImageLayout } from "../../pkg/imagegen/index.js";
import { makeTempDir, removeTempDir } from "../support/process.js";
import { pullRound } from "./pull-round.js";
import {
  SCENARIO_PULL_TIMEOUT_MS,
  type Scenario,
  assertAllPulled,
  assertOriginSentAboutOnce,
  skipReason,
  startScenario,
} from "./scenario-fixture.js";

describe("netns: pulls through the CRI plugin", { skip: skipReason }, () => {
  let scenario: Scenario | undefined;
  before(async () => {
    scenario = await startScenario("cri", { cri: true });
  });
  after(async () => {
    await scenario?.teardown();
  });

  it("every node gets the image through its agent; the origin sends it about once", async () => {
    assert.ok(scenario);
    const { cluster, ref, layout, imageBytes } = scenario;
    const before = await cluster.originTxBytes();
    const results = await pullRound(cluster.nodes, ref, { cri: true, timeoutMs: SCENARIO_PULL_TIMEOUT_MS });
    assertAllPulled(results, layout.root.digest);
    assertOriginSentAboutOnce((await cluster.originTxBytes()) - before, imageBytes);
  });

  it("a hosts.toml with the origin as plain-HTTP server and no mirror pulls straight from the origin", async () => {
    assert.ok(scenario);
    const { cluster } = scenario;
    const work = await makeTempDir("netns-cri-direct");
    try {
      const layout = await generateImageLayout({
        dir: join(work, "direct"),
        seed: "e2e-netns-cri-direct",
        layers: 1,
        totalBytes: 4 * 1024 * 1024,
        tag: "direct",
      });
      const ref = await cluster.pushImage(layout, "netns/direct");
      const image = layout.images[0];
      assert.ok(image);
      for (const node of cluster.nodes) await cluster.useOriginDirect(node);
      const before = await cluster.originTxBytes();
      const results = await pullRound(cluster.nodes, ref, { cri: true, timeoutMs: SCENARIO_PULL_TIMEOUT_MS });
      assertAllPulled(results, layout.root.digest);
      // Every node fetched its own copy: the agents were not asked.
      const sent = (await cluster.originTxBytes()) - before;
      assert.ok(
        sent >= cluster.nodes.length * image.imageBytes,
        `the origin sent ${(sent / image.imageBytes).toFixed(2)} × F for ${cluster.nodes.length} direct pulls`,
      );
    } finally {
      await removeTempDir(work);
    }
  });
});
