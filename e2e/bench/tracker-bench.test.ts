import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseTrackerBenchArgs, runTrackerBench } from "./tracker-bench.js";

/** A few seconds of the controller load generator at a small K: what CI can afford, and enough to catch a break. */
describe("bench:tracker at a small K", () => {
  const options = (membership: "static" | "kubernetes") => ({
    ...parseTrackerBenchArgs(["--workers", "2", "--duration-s", "2", "--membership", membership]),
    agents: [],
  });

  it("registers every agent, lands every inventory, and answers the rollout's lookups with holders", async () => {
    const r = await runTrackerBench(20, options("static"));
    assert.equal(r.lookupErrors, 0);
    assert.ok(r.lookupsPerSecond > 0 && r.announcesPerSecond > 0 && r.heartbeatsPerSecond > 0, JSON.stringify(r));
    // Every agent pulls the same layers, so the other 19 are the holders of each (at most).
    assert.ok(r.meanHoldersPerAnswer > 0 && r.meanHoldersPerAnswer <= 19, `holders per answer ${r.meanHoldersPerAnswer}`);
    assert.equal(r.downloads, 20 * 3);
    assert.ok(r.controllerPeakRssBytes > 0 && r.controllerCpuCores >= 0);
    assert.ok(r.lookupP99Ms >= r.lookupP50Ms);
  });

  it("admits the agents through Kubernetes membership (the API double with their Pods)", async () => {
    const r = await runTrackerBench(10, options("kubernetes"));
    assert.equal(r.lookupErrors, 0);
    assert.ok(r.meanHoldersPerAnswer > 0 && r.meanHoldersPerAnswer <= 9, `holders per answer ${r.meanHoldersPerAnswer}`);
  });

  it("names a bad flag", () => {
    assert.throws(() => parseTrackerBenchArgs(["--agents", "0"]), /--agents/);
    assert.throws(() => parseTrackerBenchArgs(["--membership", "dns"]), /--membership/);
  });
});
