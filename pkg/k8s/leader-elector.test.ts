import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import { pino } from "pino";
import { isK8sError } from "./errors.js";
import { LeaderElector, type LeaderElectorOptions, validateLeaderElectionTimings } from "./leader-elector.js";
import { KubeApiDouble } from "./testing/api-double.js";

const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });
const TIMINGS = { leaseDurationMs: 2_000, renewDeadlineMs: 1_000, retryPeriodMs: 100 };
/** Acquire attempts come every retryPeriod × [1, 2.2]. */
const SLACK_MS = 2 * 2.2 * TIMINGS.retryPeriodMs + 300;

interface LeaseSpecJson {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  leaseTransitions?: number;
  renewTime?: string;
  acquireTime?: string;
}

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return performance.now() - start;
}

function microTime(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, "000Z");
}

describe("Lease leader election (client-go semantics) against the API double", () => {
  let api: KubeApiDouble;
  let electors: LeaderElector[] = [];

  before(async () => {
    api = await KubeApiDouble.start();
  });
  after(async () => {
    await api.close();
  });
  afterEach(async () => {
    for (const elector of electors) await elector.stop();
    electors = [];
  });

  function elector(identity: string, name: string, extra: Partial<LeaderElectorOptions> = {}): { elector: LeaderElector; log: string[] } {
    const log: string[] = [];
    const created = new LeaderElector({
      kubeConfig: api.kubeConfig(),
      namespace: "shoal",
      name,
      identity,
      logger,
      ...TIMINGS,
      onStartedLeading: () => log.push("started"),
      onStoppedLeading: () => log.push("stopped"),
      onNewLeader: (leader) => log.push(`leader ${leader}`),
      ...extra,
    });
    electors.push(created);
    created.start();
    return { elector: created, log };
  }

  const spec = (name: string): LeaseSpecJson => api.object("leases", "shoal", name)?.spec ?? {};

  it("creates the Lease, leads and keeps renewing it", async () => {
    const { elector: a, log } = elector("a", "create");
    await waitFor(() => a.isLeader, 3_000, "leadership");
    const first = spec("create");
    assert.equal(first.holderIdentity, "a");
    assert.equal(first.leaseDurationSeconds, 2);
    assert.equal(first.leaseTransitions, 0);
    assert.match(first.renewTime ?? "", /\.\d{6}Z$/, "MicroTime with microseconds");
    await waitFor(() => spec("create").renewTime !== first.renewTime, 1_000, "a renewal");
    assert.equal(spec("create").acquireTime, first.acquireTime, "acquireTime stays while the holder renews");
    assert.deepEqual(log, ["leader a", "started"]);
  });

  it("takes over a stale Lease only a full lease duration after it observed it, whatever its renewTime says", async () => {
    for (const [name, renewedMs] of [
      ["stale-past", Date.now() - 3_600_000],
      ["stale-future", Date.now() + 3_600_000],
    ] as const) {
      api.putLease({
        metadata: { name, namespace: "shoal" },
        spec: {
          holderIdentity: "ghost",
          leaseDurationSeconds: 2,
          renewTime: microTime(renewedMs),
          acquireTime: microTime(renewedMs),
          leaseTransitions: 4,
        },
      });
      const startedAt = performance.now();
      const { elector: b, log } = elector("b", name);
      await waitFor(() => b.isLeader, TIMINGS.leaseDurationMs + SLACK_MS + 1_000, "leadership");
      const elapsed = performance.now() - startedAt;
      assert.ok(
        elapsed >= TIMINGS.leaseDurationMs,
        `${name}: acquired after ${Math.round(elapsed)} ms, before the lease duration had passed on its own clock`,
      );
      assert.ok(elapsed <= TIMINGS.leaseDurationMs + SLACK_MS, `${name}: acquired after ${Math.round(elapsed)} ms`);
      assert.equal(spec(name).leaseTransitions, 5, "a change of holder counts a transition");
      assert.deepEqual(log, ["leader ghost", "leader b", "started"]);
    }
  });

  it("never takes a Lease whose holder keeps renewing, even with renewTimes far in the past", async () => {
    const name = "renewing";
    const base = Date.now() - 3_600_000;
    api.putLease({
      metadata: { name, namespace: "shoal" },
      spec: { holderIdentity: "other", leaseDurationSeconds: 2, renewTime: microTime(base) },
    });
    const { elector: c } = elector("c", name);
    const renewer = setInterval(() => {
      const lease = api.object("leases", "shoal", name);
      if (lease === undefined) return;
      (lease.spec as LeaseSpecJson).renewTime = microTime(base + Math.round(performance.now()));
      api.putLease(lease);
    }, 300);
    try {
      await new Promise((r) => setTimeout(r, TIMINGS.leaseDurationMs * 2));
      assert.equal(c.isLeader, false);
      assert.equal(c.observedLeader, "other");
    } finally {
      clearInterval(renewer);
    }
    await waitFor(() => c.isLeader, TIMINGS.leaseDurationMs + SLACK_MS + 1_000, "leadership once the holder stops renewing");
  });

  it("two candidates: exactly one leads; the other follows it", async () => {
    const { elector: d } = elector("d", "race");
    const { elector: e } = elector("e", "race");
    await waitFor(() => d.isLeader || e.isLeader, 3_000, "a leader");
    await new Promise((r) => setTimeout(r, 5 * TIMINGS.retryPeriodMs));
    assert.equal(Number(d.isLeader) + Number(e.isLeader), 1);
    const leader = d.isLeader ? d : e;
    const follower = d.isLeader ? e : d;
    assert.equal(follower.observedLeader, leader.identity);
    assert.equal(spec("race").holderIdentity, leader.identity);
    assert.equal(spec("race").leaseTransitions, 0);
  });

  it("stops leading when it cannot renew within the renew deadline, and leads again when the API is back", async () => {
    const { elector: f, log } = elector("f", "deadline");
    await waitFor(() => f.isLeader, 3_000, "leadership");
    const failure = api.failRequests({ resource: "leases" }, { status: 503, reason: "ServiceUnavailable" });
    const failedAt = performance.now();
    try {
      await waitFor(() => !f.isLeader, TIMINGS.renewDeadlineMs + 2 * TIMINGS.retryPeriodMs + 500, "loss of leadership");
      const lostAfter = performance.now() - failedAt;
      assert.ok(lostAfter <= TIMINGS.renewDeadlineMs + TIMINGS.retryPeriodMs + 300, `lost after ${Math.round(lostAfter)} ms`);
      assert.ok(lostAfter < TIMINGS.leaseDurationMs, "stopped before anyone else could take over");
      assert.ok(failure.hits >= 2, "retried renewing");
    } finally {
      failure.remove();
    }
    await waitFor(() => f.isLeader, 3_000, "leadership again");
    assert.deepEqual(log, ["leader f", "started", "stopped", "started"]);
  });

  it("releases the Lease on stop so that another candidate takes it at its next attempt", async () => {
    const { elector: g, log } = elector("g", "release");
    await waitFor(() => g.isLeader, 3_000, "leadership");
    const { elector: h } = elector("h", "release");
    await waitFor(() => h.observedLeader === "g", 2_000, "h to see g");
    const stoppedAt = performance.now();
    await g.stop();
    assert.deepEqual(log.slice(-1), ["stopped"]);
    const released = spec("release");
    assert.ok(released.holderIdentity === "" || released.holderIdentity === "h");
    await waitFor(() => h.isLeader, 2_000, "h to lead");
    assert.ok(performance.now() - stoppedAt < TIMINGS.leaseDurationMs / 2, "long before the lease duration");
    assert.equal(spec("release").leaseTransitions, 1);
  });

  it("writes the holder's annotations with every write, removes them on release, and a stopped leader sees its successor", async () => {
    const note = { "example.dev/where": "10.1.2.3:7000" };
    const { elector: p } = elector("p", "annotated", { holderAnnotations: note });
    await waitFor(() => p.isLeader, 3_000, "leadership");
    const annotations = (): Record<string, string> | undefined =>
      (api.object("leases", "shoal", "annotated")?.metadata as { annotations?: Record<string, string> }).annotations;
    assert.equal(annotations()?.["example.dev/where"], "10.1.2.3:7000");
    const { elector: q } = elector("q", "annotated", { candidatePeriodMs: 50 });
    await waitFor(() => q.observedLeader === "p", 2_000, "q to see p");
    assert.equal(q.observedAnnotation("example.dev/where"), "10.1.2.3:7000", "followers read what the leader wrote");
    await p.stop();
    const successor = await p.awaitSuccessor(3_000);
    assert.equal(successor, "q");
    await waitFor(() => q.isLeader, 2_000, "q to lead");
    assert.equal(annotations()?.["example.dev/where"], undefined, "released without it, and q writes none");
    assert.equal(p.observedAnnotation("example.dev/where"), undefined);
  });

  it('awaitSuccessor gives up with "" when nobody takes the released Lease', async () => {
    const { elector: r } = elector("r", "alone");
    await waitFor(() => r.isLeader, 3_000, "leadership");
    await r.stop();
    assert.equal(await r.awaitSuccessor(300), "");
  });

  it("refuses a candidate period above the retry period", () => {
    assert.throws(
      () =>
        new LeaderElector({
          kubeConfig: api.kubeConfig(),
          namespace: "shoal",
          name: "x",
          identity: "x",
          logger,
          ...TIMINGS,
          candidatePeriodMs: TIMINGS.retryPeriodMs + 1,
        }),
      (e: unknown) => isK8sError(e, "ERR_K8S_CONFIG"),
    );
    assert.throws(
      () =>
        new LeaderElector({
          kubeConfig: api.kubeConfig(),
          namespace: "shoal",
          name: "x",
          identity: "x",
          logger,
          ...TIMINGS,
          candidatePeriodMs: 0,
        }),
      (e: unknown) => isK8sError(e, "ERR_K8S_CONFIG"),
    );
  });

  it("refuses timings that cannot work", () => {
    const bad = [
      { leaseDurationMs: 10_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 },
      { leaseDurationMs: 15_000, renewDeadlineMs: 2_000, retryPeriodMs: 2_000 },
      { leaseDurationMs: 1_500, renewDeadlineMs: 1_000, retryPeriodMs: 100 },
      { leaseDurationMs: 15_000, renewDeadlineMs: 0, retryPeriodMs: 2_000 },
    ];
    for (const timings of bad)
      assert.throws(
        () => {
          validateLeaderElectionTimings(timings);
        },
        (e: unknown) => isK8sError(e, "ERR_K8S_CONFIG"),
        JSON.stringify(timings),
      );
    validateLeaderElectionTimings({ leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 });
  });
});
