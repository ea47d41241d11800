import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { GrpcTrackerClient, type GrpcTrackerClientOptions } from "./grpc-tracker-client.js";
import { MemoryTracker } from "./memory-tracker.js";
import { TrackerServer } from "./tracker-server.js";
import { BlackholeProxy } from "./testing/blackhole-proxy.js";
import { FAST_CLIENT_OPTIONS } from "./testing/harnesses.js";
import { eventually, testDigest, testIdentity } from "./testing/helpers.js";

const logger = pino({ level: "silent" });
const digest = testDigest("silent");

/** A TrackerServer and a client that reaches it through a BlackholeProxy. */
async function silentSessionHarness(clientOptions: Partial<GrpcTrackerClientOptions>): Promise<{
  tracker: MemoryTracker;
  proxy: BlackholeProxy;
  client: GrpcTrackerClient;
  changes: boolean[];
  close: () => Promise<void>;
}> {
  const tracker = new MemoryTracker({ logger, grantStallTimeoutMs: 60_000 });
  const server = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker, logger });
  const proxy = await BlackholeProxy.start(server.address);
  const changes: boolean[] = [];
  const client = new GrpcTrackerClient({
    address: proxy.address,
    identity: testIdentity("a"),
    logger,
    ...FAST_CLIENT_OPTIONS,
    ...clientOptions,
    onConnectionChange: (connected) => changes.push(connected),
  });
  await client.whenConnected(AbortSignal.timeout(5_000));
  return {
    tracker,
    proxy,
    client,
    changes,
    close: async () => {
      await client.close();
      await proxy.close();
      await server.close();
    },
  };
}

describe("GrpcTrackerClient: a session that went silent", () => {
  it("a lookup on a session that died without a word is answered on a new session, not failed", async () => {
    // Keepalive (10 s ping, 5 s timeout) would notice the dead connection only long after this test.
    const h = await silentSessionHarness({ lookupTimeoutMs: 300, sessionGraceMs: 5_000 });
    try {
      h.proxy.blackhole();
      const r = await h.client.lookup(digest, { wantOriginGrant: true });
      assert.deepEqual(r.origin, { granted: true, granteeAgentId: "a" }, "answered by the tracker");
      assert.equal(h.proxy.connections, 2, "on a new connection: the silent one was given up");
      assert.deepEqual(h.changes, [true, false, true], "the silent session counted as lost, and a new one registered");
      assert.equal(h.client.connected, true);
      assert.deepEqual(
        h.tracker.snapshot().agents.map((agent) => agent.identity.agentId),
        ["a"],
        "the new session replaced the old one on the tracker",
      );
    } finally {
      await h.close();
    }
  });

  it("a lookup that got no answer on a session replaced meanwhile is asked again on the new one", async () => {
    const h = await silentSessionHarness({ lookupTimeoutMs: 1_500, sessionGraceMs: 5_000 });
    try {
      // What the agent sends is lost from now on; what the tracker sends still arrives.
      h.proxy.blackhole("to-target");
      let settled = false;
      const pending = h.client.lookup(digest, { wantOriginGrant: true }).finally(() => {
        settled = true;
      });
      // The tracker ends the session; the agent hears it and registers again on a new connection,
      // while the lookup made on the old one waits for an answer that will not come.
      assert.equal(h.tracker.disconnect("a"), true);
      await eventually(() => {
        assert.equal(h.proxy.connections, 2);
        assert.deepEqual(h.changes, [true, false, true]);
        assert.deepEqual(
          h.tracker.snapshot().agents.map((agent) => agent.identity.agentId),
          ["a"],
        );
      });
      assert.equal(settled, false, "the lookup on the old session is still waiting when the new session is up");
      const r = await pending;
      assert.deepEqual(r.origin, { granted: true, granteeAgentId: "a" }, "answered on the new session");
      assert.deepEqual(h.changes, [true, false, true], "the new session was kept");
    } finally {
      await h.close();
    }
  });

  it("the tracker accepts keepalive pings as often as agents may send them", async () => {
    // A server that takes pings for abuse answers GOAWAY ENHANCE_YOUR_CALM and the session is lost.
    // (The proxy only forwards here.)
    const h = await silentSessionHarness({ keepaliveTimeMs: 20, keepaliveTimeoutMs: 1_000 });
    try {
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      assert.deepEqual(h.changes, [true], "one session throughout");
      const r = await h.client.lookup(digest, { wantOriginGrant: false });
      assert.deepEqual(r.origin, { granted: false, granteeAgentId: undefined });
    } finally {
      await h.close();
    }
  });
});
