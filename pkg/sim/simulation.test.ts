import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type SimConfig, type SimResult, isSimError, simulate, uniformSwarm } from "./index.js";
import { type FlowEnds, Network } from "./network.js";

const MB = 1e6;
const MIB = 1024 * 1024;
const F = 16 * MIB;

function run(swarm: { nodes: number; node: number; origin: number; download?: number }, overrides: Partial<SimConfig> = {}): SimResult {
  return simulate(
    uniformSwarm(
      {
        nodes: swarm.nodes,
        blobBytes: F,
        nodeBytesPerSecond: swarm.node * MB,
        originBytesPerSecond: swarm.origin * MB,
        ...(swarm.download === undefined ? {} : { downloadBytesPerSecond: swarm.download * MB }),
      },
      overrides,
    ),
  );
}

/** What holds in every run: nobody beats physics, every node is whole, the origin sent one copy, bytes add up. */
function assertSound(r: SimResult): void {
  assert.ok(
    r.completionSeconds.every((t) => t !== undefined),
    "every node holds the blob",
  );
  assert.ok((r.lastSeconds ?? 0) >= r.boundSeconds, `last node ${r.lastSeconds} s beats the P2P bound ${r.boundSeconds} s`);
  assert.equal(r.originBytes, r.blobBytes, "the origin sends the blob exactly once");
  assert.equal(r.peerBytes, (r.nodes - 1) * r.blobBytes, "every other node kept exactly one copy from peers");
}

describe("Network (max-min sharing)", () => {
  const flows = (...ends: [number, number][]): FlowEnds[] => ends.map(([src, dst]) => ({ src, dst, rate: 0 }));

  it("splits a sender's upload evenly between receivers that could take more", () => {
    const f = flows([0, 1], [0, 2]);
    new Network(Float64Array.of(10, 100, 100), Float64Array.of(100, 100, 100)).allocate(f);
    assert.deepEqual(
      f.map((x) => x.rate),
      [5, 5],
    );
  });

  it("gives what a slow receiver cannot take to the other flows of the sender", () => {
    const f = flows([0, 1], [0, 2]);
    new Network(Float64Array.of(10, 100, 100), Float64Array.of(100, 2, 100)).allocate(f);
    assert.deepEqual(
      f.map((x) => x.rate),
      [2, 8],
    );
  });

  it("limits an uncapped sender by its receivers' downloads, shared among their senders", () => {
    const f = flows([3, 0], [3, 1], [2, 1]);
    new Network(Float64Array.of(0, 0, 100, Infinity), Float64Array.of(7, 10, 0, 0)).allocate(f);
    assert.deepEqual(
      f.map((x) => x.rate),
      [7, 5, 5],
    );
  });
});

describe("Simulation on topologies whose optimum is known by hand", () => {
  it("N = 1: the origin's rate, plus one round trip to it", () => {
    const r = run({ nodes: 1, node: 100, origin: 10 });
    assertSound(r);
    // F / u_s = 1.678 s; the round trip is 20 ms, rounded up to whole ticks.
    assert.ok((r.lastSeconds ?? 0) <= r.boundSeconds + 0.03, `${r.lastSeconds}`);
  });

  it("N = 2, origin-limited: the second node trails the grantee by about one piece", () => {
    // Bound F/u_s = 1.678 s; fast links relay each piece as it lands (1 MiB at 100 MB/s: ~10 ms).
    const r = run({ nodes: 2, node: 100, origin: 10 });
    assertSound(r);
    assert.ok((r.ratioToBound ?? Infinity) <= 1.05, `ratio ${r.ratioToBound}`);
    assert.equal(r.wastedBytes, 0);
  });

  it("N = 3, origin-limited: both others follow the grantee closely", () => {
    const r = run({ nodes: 3, node: 100, origin: 10 });
    assertSound(r);
    assert.ok((r.ratioToBound ?? Infinity) <= 1.1, `ratio ${r.ratioToBound}`);
  });

  it("N = 2, link-limited: the grantee receives at d and uploads at u; the other trails it", () => {
    // Bound F/d = 1.678 s; by hand F/d plus one piece at u (0.105 s) and the first lookup's wait.
    const r = run({ nodes: 2, node: 10, origin: 100 });
    assertSound(r);
    assert.ok((r.ratioToBound ?? Infinity) <= 1.2, `ratio ${r.ratioToBound}`);
  });

  it("N = 3, link-limited: one origin copy, everything else between peers, nothing beats the bound", () => {
    const r = run({ nodes: 3, node: 10, origin: 100 });
    assertSound(r);
    assert.ok((r.ratioToBound ?? Infinity) <= 2, `ratio ${r.ratioToBound}`);
  });

  it("is deterministic for a seed", () => {
    const a = run({ nodes: 6, node: 20, origin: 20 }, { seed: 3 });
    const b = run({ nodes: 6, node: 20, origin: 20 }, { seed: 3 });
    assert.deepEqual(a.completionSeconds, b.completionSeconds);
    assertSound(a);
  });

  it("reports the nodes that did not finish within the time limit instead of running on", () => {
    const r = run({ nodes: 2, node: 10, origin: 1 }, { timeLimitMs: 1_000 });
    assert.equal(r.lastSeconds, undefined);
    assert.equal(r.ratioToBound, undefined);
    assert.ok(r.simulatedSeconds <= 1.01);
  });

  it("refuses a configuration it cannot simulate, naming the setting", () => {
    assert.throws(
      () => run({ nodes: 2, node: 10, origin: 0 }),
      (e: unknown) => isSimError(e, "ERR_SIM_INVALID_CONFIG") && e.message.includes("originBytesPerSecond"),
    );
    assert.throws(
      () => run({ nodes: 2, node: 10, origin: 10 }, { tickMs: 0 }),
      (e: unknown) => isSimError(e) && e.message.includes("tickMs"),
    );
  });
});
