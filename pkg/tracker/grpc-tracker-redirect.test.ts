import assert from "node:assert/strict";
import { createServer } from "node:net";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { Metadata, Server, ServerCredentials, type ServerDuplexStream, status } from "@grpc/grpc-js";
import { pino } from "pino";
import { type SessionRequest, type SessionResponse, TrackerServiceService } from "../gen/tracker/v1/tracker.js";
import { isTrackerError } from "./errors.js";
import { GrpcTrackerClient } from "./grpc-tracker-client.js";
import { LEADER_ADDRESS_METADATA } from "./leader-redirect.js";
import { MemoryTracker } from "./memory-tracker.js";
import { TrackerServer } from "./tracker-server.js";
import { FAST_CLIENT_OPTIONS } from "./testing/harnesses.js";
import { eventually, silentServer, testDigest, testIdentity } from "./testing/helpers.js";

const silent = pino({ level: "silent" });

/** A logger whose lines are kept, to check what the client says about a redirect it refuses. */
function recordingLogger(): { logger: pino.Logger; messages: () => string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString("utf8"));
      done();
    },
  });
  return { logger: pino({ level: "info" }, sink), messages: () => lines };
}

/** A replica that refuses every session with UNAVAILABLE and the given trailing leader addresses. */
async function refusingReplica(
  leaderAddresses: () => readonly string[],
): Promise<{ address: string; attempts: () => number; close: () => Promise<void> }> {
  let attempts = 0;
  const server = new Server();
  server.addService(TrackerServiceService, {
    session: (call: ServerDuplexStream<SessionRequest, SessionResponse>) => {
      attempts++;
      const metadata = new Metadata();
      for (const address of leaderAddresses()) metadata.add(LEADER_ADDRESS_METADATA, address);
      call.on("data", () => undefined);
      call.on("error", () => undefined);
      call.emit("error", { code: status.UNAVAILABLE, details: "this controller replica is not the leader", metadata });
    },
    lookup: (_call: unknown, callback: (error: { code: status; details: string }) => void) => {
      callback({ code: status.UNAVAILABLE, details: "not the leader" });
    },
    resolveTag: (_call: unknown, callback: (error: { code: status; details: string }) => void) => {
      callback({ code: status.UNAVAILABLE, details: "not the leader" });
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => {
      if (error === null) resolve(bound);
      else reject(error);
    });
  });
  return {
    address: `127.0.0.1:${port}`,
    attempts: () => attempts,
    close: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => {
          resolve();
        });
      }),
  };
}

/** A free port nobody listens on (connections are refused). */
async function closedPort(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === "object");
  await new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
  return `127.0.0.1:${address.port}`;
}

describe("GrpcTrackerClient follows a follower's redirect to the leader", () => {
  it("a session refused by a follower registers with the leader it names; lookups go there", async () => {
    const tracker = new MemoryTracker({ logger: silent });
    const leader = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker, logger: silent });
    const follower = await TrackerServer.start({
      host: "127.0.0.1",
      port: 0,
      tracker: new MemoryTracker({ logger: silent }),
      logger: silent,
      serving: () => "not the leader",
      leaderAddress: () => leader.address,
    });
    const client = new GrpcTrackerClient({
      address: follower.address,
      identity: testIdentity("a"),
      logger: silent,
      ...FAST_CLIENT_OPTIONS,
    });
    try {
      await client.whenConnected(AbortSignal.timeout(5_000));
      assert.equal(leader.sessionCount, 1);
      assert.equal(follower.sessionCount, 0);
      const result = await client.lookup(testDigest("x"), { wantOriginGrant: true, signal: AbortSignal.timeout(5_000) });
      assert.equal(result.origin.granted, true, "the leader answered");
    } finally {
      await client.close();
      await follower.close();
      await leader.close();
    }
  });

  it("a leader handing over names its successor: the registered session moves there", async () => {
    const first = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker: new MemoryTracker({ logger: silent }), logger: silent });
    const next = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker: new MemoryTracker({ logger: silent }), logger: silent });
    const changes: boolean[] = [];
    const client = new GrpcTrackerClient({
      address: first.address,
      identity: testIdentity("b"),
      logger: silent,
      ...FAST_CLIENT_OPTIONS,
      onConnectionChange: (c) => changes.push(c),
    });
    try {
      await client.whenConnected(AbortSignal.timeout(5_000));
      client.announce({ digest: testDigest("held"), size: 10, pieceSize: 1024 * 1024, complete: true });
      assert.equal(first.endSessions("handing over", next.address), 1);
      await eventually(() => {
        assert.equal(next.sessionCount, 1);
        assert.ok(client.connected);
      }, 5_000);
      await eventually(() => {
        assert.ok(next.sessionCount === 1 && changes.join() === "true,false,true");
      });
    } finally {
      await client.close();
      await first.close();
      await next.close();
    }
  });

  it("garbage, several addresses or a bad port are not followed: a clear warning, back to the Service, lookups fail fast", async () => {
    for (const [addresses, reason] of [
      [["not an address"], /is not IP:port/],
      // HTTP/2 may join repeated values into one: either way it is refused.
      [["127.0.0.1:1", "127.0.0.2:1"], /2 leader addresses|is not IP:port/],
      [["10.0.0.1:99999"], /no valid port/],
    ] as const) {
      const replica = await refusingReplica(() => addresses);
      const { logger, messages } = recordingLogger();
      const client = new GrpcTrackerClient({ address: replica.address, identity: testIdentity("c"), logger, ...FAST_CLIENT_OPTIONS });
      try {
        await eventually(() => {
          assert.ok(replica.attempts() >= 2, "the Service is tried again");
        }, 5_000);
        assert.equal(client.connected, false);
        assert.ok(
          messages().some((line) => line.includes("not following the redirect") && reason.test(line)),
          `warned: ${reason}`,
        );
        await assert.rejects(client.lookup(testDigest("y"), { wantOriginGrant: true, signal: AbortSignal.timeout(5_000) }), (e: unknown) =>
          isTrackerError(e, "ERR_TRACKER_UNAVAILABLE"),
        );
      } finally {
        await client.close();
        await replica.close();
      }
    }
  });

  it("a leader address that refuses connections or never answers: back to the Service, never a hang", async () => {
    const silentLeader = await silentServer();
    for (const target of [await closedPort(), silentLeader.address]) {
      const replica = await refusingReplica(() => [target]);
      const { logger, messages } = recordingLogger();
      const client = new GrpcTrackerClient({
        address: replica.address,
        identity: testIdentity("d"),
        logger,
        ...FAST_CLIENT_OPTIONS,
        lookupTimeoutMs: 300,
      });
      try {
        // Each round: the Service (refused, redirect), the leader address (fails), then the Service again.
        await eventually(() => {
          assert.ok(replica.attempts() >= 2, `the Service is tried again after ${target} failed`);
        }, 10_000);
        assert.equal(client.connected, false);
        assert.ok(messages().some((line) => line.includes("redirected to the leader")));
        if (target === silentLeader.address) assert.ok(messages().some((line) => line.includes("did not register the session in time")));
      } finally {
        await client.close();
        await replica.close();
      }
    }
    await silentLeader.close();
  });

  it("two replicas naming each other: one hop, then the Service with backoff, not a loop", async () => {
    let otherAddress = "";
    const a = await refusingReplica(() => [otherAddress]);
    const b = await refusingReplica(() => [a.address]);
    otherAddress = b.address;
    const { logger, messages } = recordingLogger();
    const client = new GrpcTrackerClient({ address: a.address, identity: testIdentity("e"), logger, ...FAST_CLIENT_OPTIONS });
    try {
      await eventually(() => {
        assert.ok(a.attempts() >= 2);
      }, 5_000);
      assert.ok(messages().some((line) => line.includes("not following the redirect") && /already followed 1 redirect/.test(line)));
      // Every attempt at b came from a's redirect, one each: b is never dialed twice in a row.
      assert.ok(b.attempts() <= a.attempts());
    } finally {
      await client.close();
      await a.close();
      await b.close();
    }
  });
});
