import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { digestOf } from "../oci/index.js";
import { GrpcTrackerClient } from "./grpc-tracker-client.js";
import type { TrackerEvent } from "./tracker-events.js";
import {
  type AgentCommand,
  MAX_PREFETCH_MANIFEST_BYTES,
  type PrefetchAssignment,
  validatePrefetchAssignment,
  validatePrefetchReport,
} from "./prefetch.js";
import { FAST_CLIENT_OPTIONS, grpcHarness } from "./testing/harnesses.js";
import { eventually, testDigest, testIdentity } from "./testing/helpers.js";

const logger = pino({ level: "silent" });
const manifest = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}');

function assignment(id: string): PrefetchAssignment {
  return {
    id,
    contents: [
      {
        registry: "ghcr.io",
        repository: "team/app",
        manifests: [{ digest: digestOf(manifest), mediaType: "application/vnd.oci.image.manifest.v1+json", body: manifest }],
        blobs: [{ digest: testDigest("layer"), size: 1234 }],
        credentials: { username: "robot", password: "s3cret" },
      },
    ],
  };
}

describe("prefetch over the tracker session", () => {
  it("delivers assignments and cancels to the agent and its reports to the tracker's observers", async () => {
    const h = await grpcHarness({ grantStallTimeoutMs: 60_000 });
    const client = new GrpcTrackerClient({ address: h.address, identity: testIdentity("a"), logger, ...FAST_CLIENT_OPTIONS });
    const commands: AgentCommand[] = [];
    let lost = 0;
    client.setPrefetchHandler({ onCommand: (c) => commands.push(c), onSessionLost: () => lost++ });
    const events: TrackerEvent[] = [];
    try {
      await client.whenConnected(AbortSignal.timeout(5_000));
      h.tracker().subscribe((e) => events.push(e));
      assert.equal(h.tracker().sendCommand("a", { kind: "prefetch", assignment: assignment("uid-1/abc") }), true);
      assert.equal(h.tracker().sendCommand("nobody", { kind: "prefetch-cancel", id: "uid-1/abc" }), false, "no session, no delivery");
      await eventually(() => {
        assert.equal(commands.length, 1);
      });
      const got = commands[0];
      assert.equal(got?.kind, "prefetch");
      assert.deepEqual(got.assignment.contents[0]?.credentials, { username: "robot", password: "s3cret" });
      const content = got.assignment.contents[0];
      assert.deepEqual(Buffer.from(content.manifests[0]!.body), manifest);
      assert.equal(content.blobs[0]!.size, 1234);

      client.reportPrefetch({
        id: "uid-1/abc",
        state: "failed",
        itemsDone: 1,
        itemsTotal: 2,
        bytesFromOrigin: 0,
        bytesFromPeers: 10,
        bytesAlreadyHeld: 0,
        error: { code: "auth", message: "ghcr.io refused access" },
      });
      await eventually(() => {
        const report = events.find((e) => e.type === "prefetch-report");
        assert.ok(report?.type === "prefetch-report");
        assert.equal(report.agentId, "a");
        assert.deepEqual(report.report.error, { code: "auth", message: "ghcr.io refused access" });
        assert.equal(report.report.bytesFromPeers, 10);
      });
      h.tracker().sendCommand("a", { kind: "prefetch-cancel", id: "uid-1/abc" });
      await eventually(() => {
        assert.deepEqual(commands[1], { kind: "prefetch-cancel", id: "uid-1/abc" });
      });

      // Announcing a complete copy is a `holding` event; partial progress is not; withdrawing is.
      client.announce({ digest: testDigest("layer"), size: 1234, pieceSize: 1024, complete: false, bitmap: Uint8Array.of(0x80) });
      client.announce({ digest: testDigest("layer"), size: 1234, pieceSize: 1024, complete: true });
      client.withdraw(testDigest("layer"));
      await eventually(() => {
        const holdings = events.flatMap((e) => (e.type === "holding" ? [e.complete] : []));
        assert.deepEqual(holdings, [true, false]);
      });
      assert.equal(h.tracker().holdsComplete("a", testDigest("layer")), false);

      // A new tracker (fail-over): the agent learns its session, and with it its assignments, is gone.
      await h.restartTracker!();
      await eventually(() => {
        assert.equal(lost, 1);
      });
      await eventually(() => {
        assert.equal(client.connected, true);
      });
    } finally {
      await client.close();
      await h.close();
    }
    assert.equal(lost, 2, "close ends the session too");
  });

  it("a malformed assignment is dropped and the session stays", async () => {
    const h = await grpcHarness({ grantStallTimeoutMs: 60_000 });
    const client = new GrpcTrackerClient({ address: h.address, identity: testIdentity("b"), logger, ...FAST_CLIENT_OPTIONS });
    const commands: AgentCommand[] = [];
    client.setPrefetchHandler({ onCommand: (c) => commands.push(c), onSessionLost: () => undefined });
    try {
      await client.whenConnected(AbortSignal.timeout(5_000));
      const bad = assignment("has space");
      assert.equal(h.tracker().sendCommand("b", { kind: "prefetch", assignment: bad }), true);
      assert.equal(h.tracker().sendCommand("b", { kind: "prefetch", assignment: assignment("good") }), true);
      await eventually(() => {
        assert.deepEqual(
          commands.map((c) => (c.kind === "prefetch" ? c.assignment.id : c.id)),
          ["good"],
        );
      });
      assert.equal(client.connected, true);
    } finally {
      await client.close();
      await h.close();
    }
  });

  it("validation bounds assignments and reports", () => {
    assert.throws(() => validatePrefetchAssignment({ id: "", contents: [] }), /prefetch id is empty/);
    const big = Buffer.alloc(MAX_PREFETCH_MANIFEST_BYTES + 1);
    assert.throws(
      () =>
        validatePrefetchAssignment({
          id: "x",
          contents: [{ registry: "r.io", repository: "a", manifests: [{ digest: digestOf(big), mediaType: "m/t", body: big }], blobs: [] }],
        }),
      /bytes of manifests/,
    );
    assert.throws(
      () =>
        validatePrefetchAssignment({
          id: "x",
          contents: [{ registry: "r.io", repository: "a", manifests: [], blobs: [{ digest: testDigest("q"), size: -1 }] }],
        }),
      /not a byte count/,
    );
    const report = {
      id: "x",
      state: "running" as const,
      itemsDone: 3,
      itemsTotal: 2,
      bytesFromOrigin: 0,
      bytesFromPeers: 0,
      bytesAlreadyHeld: 0,
    };
    assert.throws(() => validatePrefetchReport(report), /3 of 2 items/);
    assert.deepEqual(validatePrefetchReport({ ...report, itemsDone: 0, state: "failed" }).error, { code: "unknown", message: "" });
  });
});
