import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type ServiceError, type StatusObject, credentials, status } from "@grpc/grpc-js";
import { pino } from "pino";
import { type LookupResponse, type SessionRequest, type SessionResponse, TrackerServiceClient } from "../gen/tracker/v1/tracker.js";
import { ControllerMetrics } from "../metrics/index.js";
import { StaticMembership } from "./membership.js";
import { MEMORY_BUDGET_PER_AGENT_BYTES, PIECE_COST_BYTES } from "./blob-ledger.js";
import { MemoryTracker } from "./memory-tracker.js";
import { MAX_PIECES_PER_BLOB } from "./validation.js";
import { TrackerServer } from "./tracker-server.js";
import { eventually, testDigest, testIdentity } from "./testing/helpers.js";
import { spreadForSessions } from "./reannounce-pacing.js";
import { announceRequest, registerRequest } from "./wire.js";

const logger = pino({ level: "silent" });
const digest = testDigest("wire");

interface RawSession {
  write(request: SessionRequest): void;
  readonly responses: SessionResponse[];
  readonly ended: Promise<StatusObject>;
  cancel(): void;
}

function openSession(client: TrackerServiceClient): RawSession {
  const call = client.session();
  const responses: SessionResponse[] = [];
  call.on("data", (r: SessionResponse) => responses.push(r));
  call.on("error", () => undefined);
  const ended = new Promise<StatusObject>((resolve) => call.once("status", resolve));
  return {
    write: (request) => call.write(request),
    responses,
    ended,
    cancel: () => {
      call.cancel();
    },
  };
}

function lookup(client: TrackerServiceClient, agentId: string, d: string, expectedSize = 0): Promise<LookupResponse> {
  return new Promise((resolve, reject) => {
    client.lookup(
      { agentId, digest: d, wantOriginGrant: false, excludedAgentIds: [], expectedSize },
      (error: ServiceError | null, response) => {
        if (error) reject(error);
        else resolve(response);
      },
    );
  });
}

const withCode = (code: status) => (e: unknown) => (e as ServiceError).code === code;

describe("TrackerServer input validation", () => {
  let server: TrackerServer;
  let tracker: MemoryTracker;
  let client: TrackerServiceClient;
  const metrics = new ControllerMetrics({ version: "test", collectDefaults: false });

  before(async () => {
    tracker = new MemoryTracker({ logger, metrics });
    server = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker, metrics, logger });
    client = new TrackerServiceClient(server.address, credentials.createInsecure());
  });
  after(async () => {
    client.close();
    await server.close();
  });

  async function registered(agentId: string): Promise<RawSession> {
    const session = openSession(client);
    session.write(registerRequest(testIdentity(agentId)));
    await eventually(() => {
      assert.equal(session.responses.length, 1);
    });
    return session;
  }

  it("answers register with the tracker id, the re-announce spread for the sessions it holds and that it sends notices", async () => {
    const session = await registered("ok");
    assert.deepEqual(session.responses[0], {
      kind: { $case: "registered", value: { trackerId: tracker.id, reannounceSpreadMs: spreadForSessions(1), sendsNotices: true } },
    });
    session.cancel();
    await eventually(() => {
      assert.equal(tracker.snapshot().agents.length, 0);
    }, 2_000);
  });

  it("ends a session whose first message is not register with INVALID_ARGUMENT", async () => {
    const session = openSession(client);
    session.write(announceRequest({ digest, size: 1, pieceSize: 1, complete: true }));
    assert.equal((await session.ended).code, status.INVALID_ARGUMENT);
    assert.deepEqual(session.responses, []);
  });

  it("refuses identities that are empty, oversized or not HOST:PORT", async () => {
    for (const identity of [
      { ...testIdentity("a"), agentId: "" },
      { ...testIdentity("a"), agentId: "x".repeat(129) },
      { ...testIdentity("a"), peerAddress: "10.0.0.1" },
      { ...testIdentity("a"), zone: "z".repeat(64) },
    ]) {
      const session = openSession(client);
      session.write(registerRequest(identity));
      const ended = await session.ended;
      assert.equal(ended.code, status.INVALID_ARGUMENT, JSON.stringify(identity).slice(0, 80));
    }
  });

  it("ends the session on a malformed announce and drops what it announced", async () => {
    const bad: SessionRequest[] = [
      {
        kind: {
          $case: "announce",
          value: {
            digest: "sha256:nothex",
            size: 1,
            pieceSize: 1,
            complete: true,
            bitmap: Buffer.alloc(0),
            pieceHashes: [],
            hashIndices: [],
            hashBytes: Buffer.alloc(0),
          },
        },
      },
      {
        kind: {
          $case: "announce",
          value: {
            digest: "../../etc/passwd",
            size: 1,
            pieceSize: 1,
            complete: true,
            bitmap: Buffer.alloc(0),
            pieceHashes: [],
            hashIndices: [],
            hashBytes: Buffer.alloc(0),
          },
        },
      },
      announceRequest({ digest, size: 100, pieceSize: 10, complete: false, bitmap: new Uint8Array(1) }),
      // A hash one byte short: as a list (agents before packed hashes), and packed.
      {
        kind: {
          $case: "announce",
          value: {
            digest,
            size: 100,
            pieceSize: 10,
            complete: true,
            bitmap: Buffer.alloc(0),
            pieceHashes: [{ index: 0, sha256: Buffer.alloc(31) }],
            hashIndices: [],
            hashBytes: Buffer.alloc(0),
          },
        },
      },
      {
        kind: {
          $case: "announce",
          value: {
            digest,
            size: 100,
            pieceSize: 10,
            complete: true,
            bitmap: Buffer.alloc(0),
            pieceHashes: [],
            hashIndices: [0],
            hashBytes: Buffer.alloc(31),
          },
        },
      },
      announceRequest({ digest, size: 100, pieceSize: 10, complete: true, packedHashes: { indices: [10], bytes: Buffer.alloc(32) } }),
      announceRequest({ digest, size: 100, pieceSize: 10, complete: true, packedHashes: { indices: [1, 1], bytes: Buffer.alloc(64) } }),
      announceRequest({ digest, size: 100, pieceSize: 0, complete: true }),
      { kind: { $case: "withdraw", value: { digest: "md5:abc" } } },
      registerRequest(testIdentity("again")),
    ];
    const observer = await registered("observer");
    for (const request of bad) {
      const session = await registered("bad");
      session.write(announceRequest({ digest: testDigest("good"), size: 1, pieceSize: 1, complete: true }));
      await eventually(async () => {
        assert.equal((await lookup(client, "observer", testDigest("good"))).holders.length, 1);
      });
      session.write(request);
      assert.equal((await session.ended).code, status.INVALID_ARGUMENT, JSON.stringify(request).slice(0, 120));
      await eventually(async () => {
        assert.equal((await lookup(client, "observer", testDigest("good"))).holders.length, 0);
      });
    }
    observer.cancel();
  });

  it("reads piece hashes packed, and as the list agents before packed hashes send", async () => {
    const packed = await registered("packed");
    const listed = await registered("listed");
    const hash = (fill: number) => Buffer.alloc(32, fill);
    packed.write(
      announceRequest({ digest: testDigest("p"), size: 30, pieceSize: 10, complete: true, pieceHashes: [{ index: 2, sha256: hash(2) }] }),
    );
    listed.write({
      kind: {
        $case: "announce",
        value: {
          digest: testDigest("l"),
          size: 30,
          pieceSize: 10,
          complete: true,
          bitmap: Buffer.alloc(0),
          pieceHashes: [{ index: 1, sha256: hash(1) }],
          hashIndices: [],
          hashBytes: Buffer.alloc(0),
        },
      },
    });
    await eventually(async () => {
      assert.deepEqual((await lookup(client, "listed", testDigest("p"))).pieceHashes, [Buffer.alloc(0), Buffer.alloc(0), hash(2)]);
      assert.deepEqual((await lookup(client, "packed", testDigest("l"))).pieceHashes, [Buffer.alloc(0), hash(1), Buffer.alloc(0)]);
    });
    packed.cancel();
    listed.cancel();
  });

  it("keeps conflicting sizes apart, answers by the expected size, and keeps the session open when an announce is refused", async () => {
    const others = await Promise.all(["a", "c", "d", "e"].map((id) => registered(id)));
    const b = await registered("b");
    others.forEach((agent, i) => {
      agent.write(announceRequest({ digest, size: 100 * (i + 1), pieceSize: 10, complete: true }));
    });
    await eventually(async () => {
      assert.equal((await lookup(client, "b", digest, 400)).size, 400, "each size is a claim of its own");
    });
    assert.equal((await lookup(client, "b", digest, 200)).holders[0]?.agentId, "c");
    b.write(announceRequest({ digest, size: 999, pieceSize: 10, complete: true }));
    b.write(announceRequest({ digest: testDigest("b-only"), size: 5, pieceSize: 10, complete: true }));
    await eventually(async () => {
      assert.equal((await lookup(client, "a", testDigest("b-only"))).holders.length, 1);
    });
    assert.equal((await lookup(client, "a", digest, 999)).size, 0, "a fifth disagreeing claim was refused");
    for (const agent of [...others, b]) agent.cancel();
  });

  it("ends the session of an agent over its memory budget with RESOURCE_EXHAUSTED", async () => {
    const greedy = await registered("greedy");
    const big = { size: MAX_PIECES_PER_BLOB, pieceSize: 1, complete: true };
    for (let i = 0; i <= MEMORY_BUDGET_PER_AGENT_BYTES / (MAX_PIECES_PER_BLOB * PIECE_COST_BYTES); i++)
      greedy.write(announceRequest({ digest: testDigest(`big${i}`), ...big }));
    const ended = await greedy.ended;
    assert.equal(ended.code, status.RESOURCE_EXHAUSTED);
    assert.match(ended.details, /over its tracker memory budget/);
  });

  it("answers lookups of unregistered agents with FAILED_PRECONDITION and bad input with INVALID_ARGUMENT", async () => {
    await assert.rejects(lookup(client, "nobody", digest), withCode(status.FAILED_PRECONDITION));
    await assert.rejects(lookup(client, "", digest), withCode(status.INVALID_ARGUMENT));
    await assert.rejects(lookup(client, "nobody", "sha256:short"), withCode(status.INVALID_ARGUMENT));
    await assert.rejects(lookup(client, "nobody", ""), withCode(status.INVALID_ARGUMENT));
    const rejected = (await metrics.requestsRejected.get()).values.find((v) => v.labels.reason === "invalid")?.value ?? 0;
    assert.ok(rejected >= 3);
  });

  it("ends a session with UNAVAILABLE when the tracker drops the agent", async () => {
    const session = await registered("dropme");
    assert.equal(tracker.disconnect("dropme"), true);
    const ended = await session.ended;
    assert.equal(ended.code, status.UNAVAILABLE);
  });
});

describe("TrackerServer membership and shutdown", () => {
  it("refuses agents the membership does not admit with PERMISSION_DENIED", async () => {
    const metrics = new ControllerMetrics({ version: "test", collectDefaults: false });
    const tracker = new MemoryTracker({ logger, metrics });
    const membership = new StaticMembership(["10.255.255.1", "allowed-node"]);
    const server = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker, membership, logger });
    const client = new TrackerServiceClient(server.address, credentials.createInsecure());
    try {
      const refused = openSession(client);
      refused.write(registerRequest(testIdentity("x", "other-node")));
      const ended = await refused.ended;
      assert.equal(ended.code, status.PERMISSION_DENIED);
      assert.match(ended.details, /not in the allowed peers/);
      assert.equal((await metrics.sessionsRefused.get()).values[0]?.value, 1);
      // A node name entry is matched against certificates only: claiming it in plaintext admits nothing.
      const claimed = openSession(client);
      claimed.write(registerRequest(testIdentity("y", "allowed-node")));
      assert.equal((await claimed.ended).code, status.PERMISSION_DENIED);
    } finally {
      client.close();
      await server.close();
    }
    // An address entry admits connections from that address.
    const byAddress = await TrackerServer.start({
      host: "127.0.0.1",
      port: 0,
      tracker,
      membership: new StaticMembership(["127.0.0.1"]),
      logger,
    });
    const second = new TrackerServiceClient(byAddress.address, credentials.createInsecure());
    try {
      const admitted = openSession(second);
      admitted.write(registerRequest(testIdentity("y", "any-node")));
      await eventually(() => {
        assert.equal(admitted.responses.length, 1);
      });
      admitted.cancel();
    } finally {
      second.close();
      await byAddress.close();
    }
  });

  it("close ends open sessions with UNAVAILABLE and frees the port", async () => {
    const tracker = new MemoryTracker({ logger });
    const server = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker, logger });
    const client = new TrackerServiceClient(server.address, credentials.createInsecure());
    const session = openSession(client);
    session.write(registerRequest(testIdentity("a")));
    await eventually(() => {
      assert.equal(session.responses.length, 1);
    });
    const started = Date.now();
    await server.close();
    assert.equal((await session.ended).code, status.UNAVAILABLE);
    assert.ok(Date.now() - started < 2_000);
    assert.equal(tracker.snapshot().agents.length, 0);
    client.close();
    const again = await TrackerServer.start({ host: "127.0.0.1", port: server.port, tracker, logger });
    await again.close();
  });
});
