// The leader dies under a few dozen agents: two real `shoal controller` replicas elect a leader through the
// Kubernetes API double's Lease and speak mutual TLS (the cluster CA in its Secret); simulated agent sessions
// (the bench:tracker load generator) hold inventories, keep looking up blobs other agents hold, reconnect
// and re-announce paced. Asserts that every agent registered again and re-announced, and that no lookup was
// answered with an origin grant for a blob an agent held. The agents reconnect with a short backoff here,
// so that the whole storm fits in the tracker's hold of unknown blobs and the outcome does not depend on
// how the backoff's jitter falls; bench:tracker --failover runs the agent's own backoff at 2,000 agents.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type FailoverBenchOptions, runFailoverBench } from "./bench/tracker-failover.js";

const BASE: Omit<FailoverBenchOptions, "agents" | "signal"> = {
  workers: 1,
  seed: 7,
  lookupIntervalMs: 500,
  baselineMs: 2_000,
  maxMs: 60_000,
  tailMs: 1_000,
  leaseDurationS: 3,
  renewDeadlineMs: 2_000,
  retryPeriodMs: 500,
  pacing: {},
  backoff: { initialDelayMs: 200, maxDelayMs: 400 },
};

describe("tracker fail-over without a storm (two controller replicas, Kubernetes API double)", () => {
  it("SIGKILL to the leader under 50 agents: all register again, re-announce, and nobody is sent to the origin", async () => {
    const r = await runFailoverBench({ ...BASE, agents: 50, signal: "SIGKILL" });
    assert.equal(r.reRegistered, 50, "every agent registered with the new leader");
    assert.equal(r.reAnnounced, 50, "every inventory became visible at the new leader");
    assert.ok(r.baseline.withHolders > 0, "lookups found holders before the kill");
    assert.ok(
      r.storm.answered > 0 && r.storm.withHolders > 0,
      `the new leader answered lookups with holders during the storm (${JSON.stringify(r.storm)})`,
    );
    assert.equal(r.baseline.originGrants + r.storm.originGrants, 0, "no lookup of a held blob was granted the origin");
  });

  it("SIGTERM to the leader under 20 agents: it hands over at once and nobody is sent to the origin", async () => {
    const r = await runFailoverBench({ ...BASE, agents: 20, signal: "SIGTERM" });
    assert.equal(r.reRegistered, 20);
    assert.equal(r.reAnnounced, 20);
    assert.equal(r.baseline.originGrants + r.storm.originGrants, 0);
  });
});
