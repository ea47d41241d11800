import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { pino } from "pino";
import { SessionResponse, type SessionRequest, TrackerServiceService } from "../gen/tracker/v1/tracker.js";
import { ControllerMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import { GrpcTrackerClient } from "./grpc-tracker-client.js";
import { LocalTracker } from "./local-tracker.js";
import { MemoryTracker } from "./memory-tracker.js";
import { TrackerServer } from "./tracker-server.js";
import { FAST_CLIENT_OPTIONS } from "./testing/harnesses.js";
import { bitmapOf, eventually, pieceHash, testDigest, testIdentity } from "./testing/helpers.js";
import type { Tracker } from "./tracker.js";

const logger = pino({ level: "silent" });
const D = testDigest("notices over grpc");
const PIECES = 8;

/** A promise of the next `count` notices of `digest` on `tracker`, and a running count. */
function listen(tracker: Tracker, digest: Digest): { count: () => number; reached: (n: number) => Promise<void>; stop: () => void } {
  let count = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  const stop = tracker.watchBlob(digest, () => {
    count++;
    for (const w of [...waiters]) if (count >= w.n) w.resolve();
  });
  return {
    count: () => count,
    reached: (n) =>
      count >= n
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => {
              reject(new Error(`${count} notices of ${n} within 5 s`));
            }, 5_000);
            waiters.push({
              n,
              resolve: () => {
                clearTimeout(timer);
                resolve();
              },
            });
          }),
    stop,
  };
}

function announcePieces(tracker: Tracker, held: number): void {
  const indices = Array.from({ length: held }, (_, i) => i);
  tracker.announce({
    digest: D,
    size: PIECES * 4,
    pieceSize: 4,
    complete: false,
    bitmap: bitmapOf(PIECES, indices),
    pieceHashes: indices.map((index) => ({ index, sha256: pieceHash(index) })),
  });
}

async function counter(metrics: ControllerMetrics, name: string): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  assert.ok(metric);
  return (await metric.get()).values.reduce((sum, v) => sum + v.value, 0);
}

/** A real TrackerServer on loopback with metrics, and GrpcTrackerClients to it. */
async function start(noticeIntervalMs?: number) {
  const metrics = new ControllerMetrics({ version: "test", collectDefaults: false });
  const tracker = new MemoryTracker({ logger, metrics, ...(noticeIntervalMs === undefined ? {} : { noticeIntervalMs }) });
  const server = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker, metrics, logger });
  const clients: GrpcTrackerClient[] = [];
  return {
    tracker,
    metrics,
    async agent(agentId: string, acceptNotices = true): Promise<GrpcTrackerClient> {
      const client = new GrpcTrackerClient({
        address: server.address,
        identity: testIdentity(agentId),
        logger,
        acceptNotices,
        ...FAST_CLIENT_OPTIONS,
      });
      clients.push(client);
      await client.whenConnected(AbortSignal.timeout(5_000));
      return client;
    },
    async close() {
      for (const client of clients) await client.close();
      await server.close();
    },
  };
}

/**
 * A hand-written tracker on loopback: once an agent's session sends its first message, `script` writes what
 * it likes on the session's stream. Returns its port and how to stop it.
 */
async function scriptedTracker<R>(
  service: typeof TrackerServiceService,
  script: (call: ServerDuplexStream<SessionRequest, R>) => void,
): Promise<{ port: number; stop: () => void }> {
  const server = new Server();
  const calls: ServerDuplexStream<SessionRequest, R>[] = [];
  server.addService(service, {
    session: (call: ServerDuplexStream<SessionRequest, R>) => {
      calls.push(call);
      call.on("error", () => undefined);
      call.once("data", () => {
        script(call);
      });
      call.on("end", () => {
        call.end();
      });
    },
    lookup: () => undefined,
    resolveTag: () => undefined,
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => {
      if (error === null) resolve(bound);
      else reject(error);
    });
  });
  return {
    port,
    stop: () => {
      for (const call of calls) call.end();
      server.forceShutdown();
    },
  };
}

describe("BlobChanged notices over gRPC", () => {
  it("an agent that looked a blob up hears of another agent's announce; the announcer, bystanders and old agents hear nothing", async () => {
    const h = await start();
    try {
      const watcher = await h.agent("watcher");
      const announcer = await h.agent("announcer");
      const bystander = await h.agent("bystander");
      const old = await h.agent("old", false);
      assert.equal(watcher.sendsNotices, true);
      assert.equal(old.sendsNotices, false, "an agent that did not ask polls as before");
      const heard = listen(watcher, D);
      const own = listen(announcer, D);
      const none = listen(bystander, D);
      const oldHeard = listen(old, D);
      await announcer.lookup(D, { wantOriginGrant: true });
      await watcher.lookup(D, { wantOriginGrant: true });
      await old.lookup(D, { wantOriginGrant: true });
      announcePieces(announcer, 1);
      await heard.reached(1);
      // The tracker wrote the notices when it applied the announce: one went out, the watcher's.
      assert.equal(await counter(h.metrics, "shoal_tracker_notices_sent_total"), 1);
      assert.equal(await counter(h.metrics, "shoal_tracker_notices_dropped_total"), 0);
      assert.equal(await counter(h.metrics, "shoal_tracker_blob_watches"), 2, "the watcher's and the announcer's own lookup");
      assert.deepEqual([own.count(), none.count(), oldHeard.count()], [0, 0, 0]);
    } finally {
      await h.close();
    }
  });

  it("coalesces a burst of announces of one blob: the first is told at once, the rest wait for the interval", async () => {
    // An interval far longer than the test: whatever arrives after the first notice is held back.
    const h = await start(600_000);
    try {
      const watcher = await h.agent("watcher");
      const announcer = await h.agent("announcer");
      const heard = listen(watcher, D);
      await watcher.lookup(D, { wantOriginGrant: false });
      for (let held = 1; held <= 4; held++) announcePieces(announcer, held);
      await heard.reached(1);
      await eventually(() => {
        assert.equal(h.tracker.snapshot().blobs[0]?.holders[0]?.heldPieces, 4, "every announce applied");
      });
      assert.equal(await counter(h.metrics, "shoal_tracker_notices_sent_total"), 1);
      assert.equal(heard.count(), 1);
    } finally {
      await h.close();
    }
  });

  it("a session's end ends its watches", async () => {
    const h = await start();
    try {
      const watcher = await h.agent("watcher");
      await watcher.lookup(D, { wantOriginGrant: false });
      await watcher.lookup(testDigest("another"), { wantOriginGrant: false });
      assert.equal(h.tracker.watchCount, 2);
      await watcher.close();
      assert.equal(h.tracker.watchCount, 0);
      assert.equal(await counter(h.metrics, "shoal_tracker_blob_watches"), 0);
    } finally {
      await h.close();
    }
  });

  it("LocalTracker delivers notices in process the same way", async () => {
    const tracker = new MemoryTracker({ logger });
    const watcher = new LocalTracker({ tracker, identity: testIdentity("watcher"), logger });
    const announcer = new LocalTracker({ tracker, identity: testIdentity("announcer"), logger });
    try {
      assert.equal(watcher.sendsNotices, true);
      const heard = listen(watcher, D);
      const own = listen(announcer, D);
      await watcher.lookup(D, { wantOriginGrant: false });
      await announcer.lookup(D, { wantOriginGrant: false });
      announcePieces(announcer, 1);
      assert.equal(heard.count(), 0, "delivered on a later turn of the event loop, never inside the announce");
      await heard.reached(1);
      assert.equal(own.count(), 0);
      heard.stop();
      announcePieces(announcer, 8);
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(heard.count(), 1, "an ended subscription hears nothing more");
    } finally {
      await watcher.close();
      await announcer.close();
    }
  });
});

describe("the agent's session loop and message kinds it does not know", () => {
  it("a SessionResponse of an unknown kind is ignored: the session stays and later messages are handled", async () => {
    // A tracker from the future: after `registered` it sends a kind this agent has never heard of (field 15),
    // then a notice. The agent must keep its session and hear the notice.
    const unknownKind = Buffer.from([(15 << 3) | 2, 2, 0x0a, 0x00]);
    const service = {
      ...TrackerServiceService,
      session: {
        ...TrackerServiceService.session,
        responseSerialize: (value: SessionResponse | Buffer): Buffer =>
          Buffer.isBuffer(value) ? value : Buffer.from(SessionResponse.encode(value).finish()),
      },
    };
    const fake = await scriptedTracker<SessionResponse | Buffer>(service, (call) => {
      call.write({ kind: { $case: "registered", value: { trackerId: "future", reannounceSpreadMs: 0, sendsNotices: true } } });
      call.write(unknownKind);
      call.write({ kind: { $case: "blobChanged", value: { digest: D } } });
    });
    const changes: boolean[] = [];
    const client = new GrpcTrackerClient({
      address: `127.0.0.1:${fake.port}`,
      identity: testIdentity("agent"),
      logger,
      ...FAST_CLIENT_OPTIONS,
      onConnectionChange: (connected) => changes.push(connected),
    });
    const heard = listen(client, D);
    try {
      await heard.reached(1);
      assert.equal(client.connected, true);
      assert.equal(client.sendsNotices, true);
      assert.deepEqual(changes, [true], "never disconnected");
    } finally {
      await client.close();
      fake.stop();
    }
  });

  it("a malformed notice is counted and handed on as 'look it up'; one with a bad digest is dropped; the session stays", async () => {
    const delta = {
      size: PIECES * 4,
      pieceSize: 4,
      holders: [],
      hashIndices: [1],
      hashBytes: Buffer.from(pieceHash(1)),
      granteeAgentId: "",
    };
    const fake = await scriptedTracker<SessionResponse>(TrackerServiceService, (call) => {
      call.write({ kind: { $case: "registered", value: { trackerId: "odd", reannounceSpreadMs: 0, sendsNotices: true } } });
      call.write({ kind: { $case: "blobChanged", value: { digest: "sha256:bad", delta } } });
      call.write({ kind: { $case: "blobChanged", value: { digest: D, delta: { ...delta, hashBytes: Buffer.alloc(31) } } } });
      call.write({ kind: { $case: "blobChanged", value: { digest: D, delta: { ...delta, hashIndices: [PIECES] } } } });
      call.write({ kind: { $case: "blobChanged", value: { digest: D, delta } } });
    });
    const kinds: string[] = [];
    const client = new GrpcTrackerClient({
      address: `127.0.0.1:${fake.port}`,
      identity: testIdentity("agent"),
      logger,
      ...FAST_CLIENT_OPTIONS,
      onNotice: (kind) => kinds.push(kind),
    });
    const changes: (number[] | undefined)[] = [];
    const stop = client.watchBlob(D, (change) => changes.push(change === undefined ? undefined : Array.from(change.hashes.indices)));
    const heard = listen(client, D);
    try {
      await heard.reached(3);
      assert.deepEqual(kinds, ["malformed", "malformed", "malformed", "delta"]);
      assert.deepEqual(changes, [undefined, undefined, [1]], "the malformed ones say look it up; the good one carries its hash");
      assert.equal(client.connected, true);
    } finally {
      stop();
      heard.stop();
      await client.close();
      fake.stop();
    }
  });
});
