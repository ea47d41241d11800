import assert from "node:assert/strict";
import { createServer } from "node:net";
import { describe, it } from "node:test";
import { pino } from "pino";
import { isTrackerError } from "./errors.js";
import { GrpcTrackerClient, type GrpcTrackerClientOptions } from "./grpc-tracker-client.js";
import { StaticMembership } from "./membership.js";
import { MemoryTracker } from "./memory-tracker.js";
import { TrackerServer } from "./tracker-server.js";
import { grpcHarness, FAST_CLIENT_OPTIONS } from "./testing/harnesses.js";
import { eventually, silentServer, sleep, testDigest, testIdentity } from "./testing/helpers.js";

const logger = pino({ level: "silent" });
const digest = testDigest("session");

describe("GrpcTrackerClient session", () => {
  it("reports connect and disconnect through the callback and `connected`", async () => {
    const h = await grpcHarness({ grantStallTimeoutMs: 60_000 });
    const changes: boolean[] = [];
    const client = new GrpcTrackerClient({
      address: h.address,
      identity: testIdentity("a"),
      logger,
      ...FAST_CLIENT_OPTIONS,
      onConnectionChange: (c) => changes.push(c),
    });
    try {
      assert.equal(client.connected, false);
      await client.whenConnected(AbortSignal.timeout(5_000));
      assert.deepEqual(changes, [true]);
      await h.restartTracker!();
      await eventually(() => {
        assert.deepEqual(changes, [true, false, true]);
      });
      assert.equal(client.connected, true);
      await client.close();
      assert.deepEqual(changes, [true, false, true, false]);
      assert.equal(client.connected, false);
      assert.equal(h.tracker().snapshot().agents.length, 0, "close ended the session on the tracker before resolving");
    } finally {
      await client.close();
      await h.close();
    }
  });

  it("a lookup made while the first session is being set up waits for it", async () => {
    const h = await grpcHarness({ grantStallTimeoutMs: 60_000 });
    const client = new GrpcTrackerClient({ address: h.address, identity: testIdentity("early"), logger, ...FAST_CLIENT_OPTIONS });
    try {
      const r = await client.lookup(digest, { wantOriginGrant: true });
      assert.deepEqual(r.origin, { granted: true, granteeAgentId: "early" });
    } finally {
      await client.close();
      await h.close();
    }
  });

  it("a freshly started client waits for its first session through failed dials, until its grace ends", async () => {
    const port = await unusedPort();
    const tracker = new MemoryTracker({ logger });
    let server: TrackerServer | undefined;
    // Dials are refused (nothing listens yet) and the client backs off between them.
    const client = new GrpcTrackerClient({
      address: `127.0.0.1:${port}`,
      identity: testIdentity("late"),
      logger,
      ...FAST_CLIENT_OPTIONS,
      lookupTimeoutMs: 200,
      sessionGraceMs: 10_000,
    });
    try {
      const pending = client.lookup(digest, { wantOriginGrant: true });
      await sleep(600);
      assert.equal(client.connected, false, "no tracker listened yet");
      server = await TrackerServer.start({ host: "127.0.0.1", port, tracker, logger });
      const r = await pending;
      assert.deepEqual(r.origin, { granted: true, granteeAgentId: "late" }, "answered by the tracker, not failed as unreachable");
    } finally {
      await client.close();
      await server?.close();
    }
  });

  it("once the first-session grace is over, a client that never connected fails lookups at once", async () => {
    const port = await unusedPort();
    const client = new GrpcTrackerClient({
      address: `127.0.0.1:${port}`,
      identity: testIdentity("a"),
      logger,
      ...FAST_CLIENT_OPTIONS,
      lookupTimeoutMs: 200,
      sessionGraceMs: 400,
    });
    try {
      const started = performance.now();
      await assert.rejects(client.lookup(digest, { wantOriginGrant: true }), (e: unknown) => isTrackerError(e, "ERR_TRACKER_UNAVAILABLE"));
      const waited = performance.now() - started;
      assert.ok(waited >= 350, `waited for the grace (${waited.toFixed(0)} ms)`);
      assert.ok(waited < 3_000, `and no longer (${waited.toFixed(0)} ms)`);
      const again = performance.now();
      await assert.rejects(client.lookup(digest, { wantOriginGrant: true }), (e: unknown) => isTrackerError(e, "ERR_TRACKER_UNAVAILABLE"));
      assert.ok(performance.now() - again < 300, "the next lookup fails without waiting");
    } finally {
      await client.close();
    }
  });

  it("past the grace, a lookup dials a tracker that is back at once instead of failing until the backoff's timer fires", async () => {
    let server: TrackerServer | undefined;
    // The backoff's timer would dial again only in 30 s: only the lookup's own dial can find the tracker.
    const { client, port, lines } = await clientOfAbsentTracker("back", { lookupTimeoutMs: 1_000, redialOnDemandMs: 200 });
    try {
      await assert.rejects(client.lookup(digest, { wantOriginGrant: true }), (e: unknown) => isTrackerError(e, "ERR_TRACKER_UNAVAILABLE"));
      server = await TrackerServer.start({ host: "127.0.0.1", port, tracker: new MemoryTracker({ logger }), logger });
      await sleep(250);
      const r = await client.lookup(digest, { wantOriginGrant: true });
      assert.deepEqual(r.origin, { granted: true, granteeAgentId: "back" }, "answered by the tracker that came back");
      assert.equal(client.connected, true);
      const registered = lines.filter((line) => line.includes("tracker session registered"));
      assert.equal(registered.length, 1);
      assert.match(registered[0] ?? "", /dialed for a lookup, ahead of the backoff/, "the log says why the session came up now");
    } finally {
      await client.close();
      await server?.close();
    }
  });

  it("lookups against a tracker that stays away dial it at most once per interval", async () => {
    const { client, count } = await clientOfAbsentTracker("a", { lookupTimeoutMs: 1_000, redialOnDemandMs: 2_000, logLevel: "debug" });
    // The client's own record of the dials it made for a lookup (grpc-js may dial once more by itself).
    const onDemandDials = (): number => count("a lookup dials the tracker ahead of the backoff");
    const unavailable = (e: unknown): boolean => isTrackerError(e, "ERR_TRACKER_UNAVAILABLE");
    try {
      await assert.rejects(client.lookup(digest, { wantOriginGrant: false }), unavailable);
      assert.equal(onDemandDials(), 0, "the first lookup waited for the client's own first dial");
      await sleep(2_100);
      const started = performance.now();
      for (let i = 0; i < 10; i++) await assert.rejects(client.lookup(digest, { wantOriginGrant: false }), unavailable);
      const tookMs = performance.now() - started;
      assert.ok(tookMs < 2_000, `the 10 lookups fit in one interval (${tookMs.toFixed(0)} ms)`);
      assert.equal(onDemandDials(), 1, "the first of the 10 dialed; the other 9 failed without dialing");
      await sleep(2_100);
      await assert.rejects(client.lookup(digest, { wantOriginGrant: false }), unavailable);
      assert.equal(onDemandDials(), 2, "an interval later, a lookup dials again");
    } finally {
      await client.close();
    }
  });

  it("an announce made while the tracker is away brings the session back within the redial interval, not at the backoff's timer", async () => {
    let server: TrackerServer | undefined;
    // The backoff's timer would dial again only in 30 s.
    const { client, port, lines } = await clientOfAbsentTracker("holder", { redialOnDemandMs: 200 });
    try {
      await eventually(() => {
        assert.ok(lines.some((line) => line.includes("tracker session failed")));
      });
      const tracker = new MemoryTracker({ logger });
      server = await TrackerServer.start({ host: "127.0.0.1", port, tracker, logger });
      await sleep(600);
      assert.equal(client.connected, false, "with nothing new to say, the client waits for its backoff's timer");
      client.announce({ digest, size: 10, pieceSize: 10, complete: true });
      await eventually(() => {
        assert.equal(tracker.snapshot().blobs[0]?.digest, digest);
      }, 3_000);
      assert.equal(client.connected, true);
      const registered = lines.filter((line) => line.includes("tracker session registered"));
      assert.equal(registered.length, 1);
      assert.match(
        registered[0] ?? "",
        /dialed to announce blobs the tracker has not heard of/,
        "the log says why the session came up now",
      );
    } finally {
      await client.close();
      await server?.close();
    }
  });

  it("with blobs the tracker has not heard of, failed dials repeat once per interval instead of backing off", async () => {
    let server: TrackerServer | undefined;
    const { client, port, count } = await clientOfAbsentTracker("holder", { redialOnDemandMs: 300 });
    const failedDials = (): number => count("tracker session failed");
    try {
      await eventually(() => {
        assert.equal(failedDials(), 1);
      });
      client.announce({ digest, size: 10, pieceSize: 10, complete: true });
      await sleep(1_400);
      const dials = failedDials();
      // The first failure, then one dial per 300 ms for 1.4 s: 4 or 5 more (not 30 s of backoff, not a dial per failure).
      assert.ok(dials >= 4 && dials <= 7, `${dials} failed dials in 1.4 s`);
      const tracker = new MemoryTracker({ logger });
      server = await TrackerServer.start({ host: "127.0.0.1", port, tracker, logger });
      await eventually(() => {
        assert.equal(tracker.snapshot().blobs[0]?.digest, digest);
      }, 3_000);
    } finally {
      await client.close();
      await server?.close();
    }
  });

  it("news old enough no longer hurries the dials: a tracker away that long is down, and the backoff's timer takes over", async () => {
    const { client, count } = await clientOfAbsentTracker("holder", { redialOnDemandMs: 200, newsRedialWindowMs: 700 });
    const failedDials = (): number => count("tracker session failed");
    try {
      await eventually(() => {
        assert.equal(failedDials(), 1);
      });
      client.announce({ digest, size: 10, pieceSize: 10, complete: true });
      await sleep(1_200);
      const withinWindow = failedDials();
      assert.ok(withinWindow >= 3, `${withinWindow} failed dials: the news hurried them`);
      await sleep(1_200);
      assert.equal(failedDials(), withinWindow, "past the window, the next dial waits for the 30 s backoff");
    } finally {
      await client.close();
    }
  });

  it("a lookup made just after the session was lost waits for the next one instead of failing at once", async () => {
    const h = await grpcHarness({ grantStallTimeoutMs: 60_000 });
    const a = new GrpcTrackerClient({
      address: h.address,
      identity: testIdentity("a"),
      logger,
      ...FAST_CLIENT_OPTIONS,
      sessionGraceMs: 10_000,
    });
    try {
      await a.whenConnected(AbortSignal.timeout(5_000));
      await h.stopTracker!();
      await eventually(() => {
        assert.equal(a.connected, false);
      });
      const pending = a.lookup(digest, { wantOriginGrant: true });
      await sleep(300);
      await h.restartTracker!();
      const r = await pending;
      assert.deepEqual(r.origin, { granted: true, granteeAgentId: "a" }, "answered by the tracker once it was back");
    } finally {
      await a.close();
      await h.close();
    }
  });

  it("sends heartbeats with the active upload count", async () => {
    const h = await grpcHarness({ grantStallTimeoutMs: 60_000 });
    try {
      const a = await h.agent(testIdentity("a"));
      a.setActiveUploads(4);
      await eventually(() => {
        assert.equal(h.tracker().snapshot().agents[0]?.activeUploads, 4);
      });
    } finally {
      await h.close();
    }
  });

  it("registers again and re-announces after the tracker drops the session", async () => {
    const h = await grpcHarness({ grantStallTimeoutMs: 60_000 });
    try {
      const a = await h.agent(testIdentity("a"));
      a.announce({ digest, size: 10, pieceSize: 10, complete: true });
      await eventually(() => {
        assert.equal(h.tracker().snapshot().blobs.length, 1);
      });
      assert.equal(h.tracker().disconnect("a"), true);
      assert.equal(h.tracker().snapshot().blobs.length, 0);
      await eventually(() => {
        assert.deepEqual(
          h
            .tracker()
            .snapshot()
            .blobs.map((b) => b.holders.map((x) => x.agentId)),
          [["a"]],
        );
      });
    } finally {
      await h.close();
    }
  });

  it("a lookup against a tracker that never answers fails at its deadline", async () => {
    const silent = await silentServer();
    const client = new GrpcTrackerClient({
      address: `127.0.0.1:${silent.port}`,
      identity: testIdentity("a"),
      logger,
      ...FAST_CLIENT_OPTIONS,
      lookupTimeoutMs: 300,
      sessionGraceMs: 0,
    });
    try {
      const started = Date.now();
      await assert.rejects(client.lookup(digest, { wantOriginGrant: true }), (e: unknown) => isTrackerError(e, "ERR_TRACKER_UNAVAILABLE"));
      const elapsed = Date.now() - started;
      assert.ok(elapsed < 1_000, `took ${elapsed} ms`);
      assert.equal(client.connected, false);
    } finally {
      await client.close();
      await silent.close();
    }
  });

  it("a lookup honours its AbortSignal", async () => {
    const silent = await silentServer();
    const client = new GrpcTrackerClient({
      address: `127.0.0.1:${silent.port}`,
      identity: testIdentity("a"),
      logger,
      ...FAST_CLIENT_OPTIONS,
      lookupTimeoutMs: 5_000,
    });
    try {
      const controller = new AbortController();
      const started = Date.now();
      const pending = client.lookup(digest, { wantOriginGrant: false, signal: controller.signal });
      setTimeout(() => {
        controller.abort(new Error("caller gave up"));
      }, 50);
      await assert.rejects(pending, /caller gave up/);
      assert.ok(Date.now() - started < 1_000);
    } finally {
      await client.close();
      await silent.close();
    }
  });

  it("an agent the membership refuses never connects and keeps failing fast", async () => {
    const tracker = new MemoryTracker({ logger });
    const server = await TrackerServer.start({
      host: "127.0.0.1",
      port: 0,
      tracker,
      membership: new StaticMembership(["10.255.255.1"]),
      logger,
    });
    const client = new GrpcTrackerClient({ address: server.address, identity: testIdentity("a"), logger, ...FAST_CLIENT_OPTIONS });
    try {
      await sleep(300);
      assert.equal(client.connected, false);
      await assert.rejects(client.lookup(digest, { wantOriginGrant: false }), (e: unknown) => isTrackerError(e, "ERR_TRACKER_UNAVAILABLE"));
      assert.equal(tracker.snapshot().agents.length, 0);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("announces made while disconnected reach the tracker once it is back", async () => {
    const h = await grpcHarness({ grantStallTimeoutMs: 60_000 });
    try {
      const a = await h.agent(testIdentity("a"));
      await h.stopTracker!();
      await eventually(() => {
        assert.equal(a.connected, false);
      });
      a.announce({ digest, size: 10, pieceSize: 10, complete: true });
      await h.restartTracker!();
      await eventually(() => {
        assert.equal(h.tracker().snapshot().blobs[0]?.digest, digest);
      });
    } finally {
      await h.close();
    }
  });
});

/**
 * A client of a tracker that is not there yet (a loopback port nothing listens on), past its session grace,
 * whose backoff would dial again only in 30 s, and whose log lines are kept; `options` override.
 */
async function clientOfAbsentTracker(
  agentId: string,
  options: Partial<GrpcTrackerClientOptions> & { readonly logLevel?: "info" | "debug" } = {},
): Promise<{ client: GrpcTrackerClient; port: number; lines: string[]; count: (text: string) => number }> {
  const port = await unusedPort();
  const lines: string[] = [];
  const { logLevel = "info", ...overrides } = options;
  const client = new GrpcTrackerClient({
    address: `127.0.0.1:${port}`,
    identity: testIdentity(agentId),
    logger: pino({ level: logLevel }, { write: (line: string) => lines.push(line) }),
    ...FAST_CLIENT_OPTIONS,
    sessionGraceMs: 0,
    initialBackoffMs: 30_000,
    maxBackoffMs: 30_000,
    ...overrides,
  });
  return { client, port, lines, count: (text) => lines.filter((line) => line.includes(text)).length };
}

/** A loopback port nothing listens on (bound once by the OS, then released). */
async function unusedPort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const address = probe.address();
  await new Promise<void>((resolve) =>
    probe.close(() => {
      resolve();
    }),
  );
  assert.ok(address !== null && typeof address === "object");
  return address.port;
}
