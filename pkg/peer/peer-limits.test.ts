import assert from "node:assert/strict";
import { once } from "node:events";
import { type ClientHttp2Session, connect, type IncomingHttpHeaders } from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { AgentMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import type { DiskBlobStore } from "../store/index.js";
import { ReadPiecesRequest } from "../gen/peer/v1/peer.js";
import { isPeerError, type PeerErrorCode } from "./errors.js";
import { frameMessage } from "./grpc-wire.js";
import type { PieceReadRequest } from "./piece-source.js";
import {
  collect,
  eventually,
  MiB,
  PeerFixture,
  putBlob,
  putPartial,
  startFakePeer,
  testBytes,
  writePiece,
} from "./testing/peer-fixture.js";

const signal = (): AbortSignal => AbortSignal.timeout(10_000);

/** A bare HTTP/2 connection with a tiny receive window, to play a peer that never reads what it asked for. */
/** pino's number for the debug level (warn is 40). */
const PINO_DEBUG = 20;

async function rawSession(address: string): Promise<ClientHttp2Session> {
  const session = connect(`http://${address}`, { settings: { initialWindowSize: 65_535 } });
  await once(session, "connect");
  return session;
}

/** A ReadPieces call nobody reads; `status` resolves with its grpc-status ("8" = RESOURCE_EXHAUSTED), or "" when it never got one. */
function rawReadPieces(session: ClientHttp2Session, digest: string, pieces: number[]): { status: Promise<string> } {
  const stream = session.request({
    ":method": "POST",
    ":path": "/peer.v1.PeerService/ReadPieces",
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.end(frameMessage(ReadPiecesRequest.encode({ digest, pieceSize: MiB, pieces, waitMs: 0 }).finish()));
  stream.pause();
  return {
    status: new Promise((resolve) => {
      let code = "";
      const record = (headers: IncomingHttpHeaders): void => {
        if (typeof headers["grpc-status"] === "string") code = headers["grpc-status"];
        // A call refused at once answers trailers-only: settle without waiting for the ones that stay open.
        if (code !== "") resolve(code);
      };
      stream.on("response", record);
      stream.on("trailers", record);
      stream.on("error", () => undefined);
      setTimeout(() => {
        resolve(code);
      }, 300).unref();
    }),
  };
}
const failsWith = (code: PeerErrorCode) => (error: unknown) => isPeerError(error, code);

describe("PeerServer + PeerClient: caps, cancellation, timeouts", () => {
  const fixture = new PeerFixture();
  let store: DiskBlobStore;
  // Eight 1 MiB pieces.
  const blob = testBytes(8 * MiB);
  let digest: Digest;
  const all = (pieces: number[]): PieceReadRequest => ({ digest, pieceSize: MiB, pieces, waitMs: 0 });

  before(async () => {
    store = await fixture.store();
    digest = await putBlob(store, blob);
  });
  after(() => fixture.close());

  it("refuses streams over maxConcurrentUploads with ERR_PEER_BUSY, and frees the slot when the client aborts", async () => {
    const metrics = new AgentMetrics({ version: "test", collectDefaults: false });
    const server = await fixture.server({ store, maxConcurrentUploads: 1, metrics });
    const client = fixture.client();
    const data = testBytes(2 * MiB);
    const partial = await putPartial(store, data, MiB, []);
    try {
      // Holds the only slot: the server waits for a piece that does not come.
      const controller = new AbortController();
      const waiting = collect(
        client.readPieces(server.address, { digest: partial.digest, pieceSize: MiB, pieces: [0], waitMs: 30_000 }, controller.signal),
      );
      const aborted = assert.rejects(waiting, failsWith("ERR_PEER_ABORTED"));
      assert.ok(await eventually(() => server.activeUploads === 1));
      assert.equal((await metrics.peerUploadsActive.get()).values[0]?.value, 1);
      await assert.rejects(collect(client.readPieces(server.address, all([0]), signal())), failsWith("ERR_PEER_BUSY"));
      assert.equal((await metrics.peerUploadsRejected.get()).values[0]?.value, 1);
      // A small blob (an image config) takes no slot: served while the only one is held.
      const config = testBytes(949);
      const configDigest = await putBlob(store, config);
      const small = await collect(
        client.readPieces(server.address, { digest: configDigest, pieceSize: MiB, pieces: [0], waitMs: 0 }, signal()),
      );
      assert.equal(small.length, 1);
      assert.equal((await metrics.peerUploadsRejected.get()).values[0]?.value, 1, "not refused");
      controller.abort();
      await aborted;
      assert.ok(await eventually(() => server.activeUploads === 0), "the server side of the aborted call ended");
      const pieces = await collect(client.readPieces(server.address, all([0]), signal()));
      assert.equal(pieces.length, 1);
    } finally {
      await partial.abort(new Error("test done"));
    }
  });

  it("one connection holds at most a quarter of the upload slots; calls it never reads are cut, freeing them", async () => {
    const server = await fixture.server({ store, maxConcurrentUploads: 8, sendStallTimeoutMs: 500 });
    const hog = await rawSession(server.address);
    try {
      // Eight calls on one connection whose responses are never read: the window fills, writes stop.
      const hogged = Array.from({ length: 8 }, () => rawReadPieces(hog, digest, [0, 1, 2, 3, 4, 5, 6, 7]));
      const codes = await Promise.all(hogged.map((call) => call.status));
      assert.equal(codes.filter((code) => code === "8").length, 6, `six refused with RESOURCE_EXHAUSTED: ${codes.join(",")}`);
      // Another peer is served meanwhile, and the two stuck calls are cut after the send-stall timeout.
      const other = fixture.client();
      assert.equal((await collect(other.readPieces(server.address, all([0]), signal()))).length, 1);
      assert.ok(await eventually(() => server.activeUploads === 0, 5_000), "the unread calls were cut");
    } finally {
      hog.destroy();
    }
  });

  it("a client at the per-connection cap that starts each call as the last one ends is never refused", async () => {
    // 16 slots: a connection may hold 4, as many calls as the swarm keeps in flight per peer. The server
    // frees a call's slot before its trailers, so a call started once they arrive always finds it free.
    const metrics = new AgentMetrics({ version: "test", collectDefaults: false });
    // Closing a blob reader takes a while here (a busy thread pool does that): the response is over before.
    const slowClose = new Proxy(store, {
      get(target, key, receiver): unknown {
        if (key !== "openReader") return Reflect.get(target, key, receiver) as unknown;
        return async (...args: Parameters<DiskBlobStore["openReader"]>) => {
          const reader = await target.openReader(...args);
          return new Proxy(reader, {
            get(r, k, rr): unknown {
              const value = Reflect.get(r, k, rr) as unknown;
              if (k !== "close" || typeof value !== "function") return typeof value === "function" ? value.bind(r) : value;
              return async () => {
                await sleep(50);
                await reader.close();
              };
            },
          });
        };
      },
    });
    const server = await fixture.server({ store: slowClose, maxConcurrentUploads: 16, metrics });
    const client = fixture.client();
    const callsPerWorker = 6;
    const worker = async (first: number): Promise<number> => {
      let pieces = 0;
      for (let call = 0; call < callsPerWorker; call++) {
        const index = (first + call) % 8;
        pieces += (await collect(client.readPieces(server.address, all([index, (index + 1) % 8]), signal()))).length;
      }
      return pieces;
    };
    const served = await Promise.all([0, 2, 4, 6].map(worker));
    assert.deepEqual(served, [12, 12, 12, 12]);
    const rejected = (await metrics.peerUploadsRejected.get()).values[0]?.value ?? 0;
    assert.equal(rejected, 0, "no call was refused");
  });

  it("holds the node-wide bytes/s cap across concurrent streams", async () => {
    const rate = 8 * MiB;
    const server = await fixture.server({ store, uploadBytesPerSecond: rate });
    const client = fixture.client();
    const started = performance.now();
    const results = await Promise.all([
      collect(client.readPieces(server.address, all([0, 1]), signal())),
      collect(client.readPieces(server.address, all([2, 3]), signal())),
    ]);
    const seconds = (performance.now() - started) / 1000;
    assert.deepEqual(
      results.map((r) => r.length),
      [2, 2],
    );
    // 4 MiB at 8 MiB/s, less the bucket's initial burst (5% of a second's worth).
    const expected = (4 * MiB - 0.05 * rate) / rate;
    assert.ok(seconds >= expected * 0.9, `4 MiB at 8 MiB/s took ${seconds.toFixed(3)} s, expected at least ${expected.toFixed(3)} s`);
  });

  it("a small read (an image config) pays the upload cap ahead of the queued layer pieces, on a call of its own", async () => {
    // 1 MiB/s: the three 1 MiB pieces below queue three seconds' worth of tokens ahead of anything after them.
    const server = await fixture.server({ store, uploadBytesPerSecond: MiB });
    const client = fixture.client();
    // The config arrives here while the reads wait (a relay), so the test sees its call open.
    const config = testBytes(949).reverse();
    const partial = await putPartial(store, config, MiB, []);
    const arrivals: string[] = [];
    const large = [0, 1, 2].map((i) =>
      (async () => {
        for await (const piece of client.readPieces(server.address, all([i]), signal())) {
          arrivals.push(`large ${piece.index}`);
          piece.release();
        }
      })(),
    );
    try {
      assert.ok(await eventually(() => server.activeUploads === 3), "the large reads hold their slots");
      assert.equal(client.openStreams, 1, "the large reads share the pair's Exchange stream");
      const streamsBefore = server.openCalls;
      const small = collect(
        client.readPieces(
          server.address,
          { digest: partial.digest, pieceSize: MiB, pieces: [0], waitMs: 5_000, blobSize: config.length },
          signal(),
        ),
      );
      // Handled here too, so a failed assertion below does not leave it rejecting unheard.
      small.catch(() => undefined);
      assert.ok(await eventually(() => server.openCalls === streamsBefore + 1), "the small read opened a call of its own");
      // Its only piece is its last: served once the blob is verified.
      await writePiece(partial, config, 0);
      await partial.commit();
      const [piece] = await small;
      assert.ok(piece !== undefined, "the config's piece arrived");
      assert.deepEqual(piece.data, config);
      arrivals.push("small");
      piece.release();
      await Promise.all(large);
      assert.equal(arrivals[0], "small", `the config arrived before any queued layer piece: ${arrivals.join(", ")}`);
    } finally {
      await Promise.allSettled(large);
      await partial.abort(new Error("test done")).catch(() => undefined);
    }
  });

  it("stops the server side at once when the client aborts or stops reading mid-transfer", async () => {
    const metrics = new AgentMetrics({ version: "test", collectDefaults: false });
    // 4 MiB/s: the eight pieces would take two seconds.
    const server = await fixture.server({ store, uploadBytesPerSecond: 4 * MiB, metrics });
    const client = fixture.client();
    const controller = new AbortController();
    const received: number[] = [];
    const started = performance.now();
    await assert.rejects(
      (async () => {
        for await (const piece of client.readPieces(server.address, all([0, 1, 2, 3, 4, 5, 6, 7]), controller.signal)) {
          received.push(piece.index);
          controller.abort();
        }
      })(),
      failsWith("ERR_PEER_ABORTED"),
    );
    assert.deepEqual(received, [0]);
    assert.ok(await eventually(() => server.activeUploads === 0, 500), "server side cancelled");
    // A consumer that just breaks out of the loop cancels the call too.
    for await (const _piece of client.readPieces(server.address, all([0, 1, 2, 3, 4, 5, 6, 7]), signal())) break;
    assert.ok(await eventually(() => server.activeUploads === 0, 500), "server side cancelled after break");
    assert.ok(performance.now() - started < 1500, "neither call ran to its end");
    const sent = (await metrics.peerBytesSent.get()).values[0]?.value ?? 0;
    assert.ok(sent < 6 * MiB, `sent ${sent} bytes for two cancelled calls`);
  });

  it("fails a call whose peer goes silent with ERR_PEER_TIMEOUT after the stall timeout", async () => {
    const address = await startFakePeer(fixture, (call) => {
      // One whole piece, then silence.
      call.send(call.request.pieces[0] ?? 0, 0, Buffer.alloc(call.request.pieceSize));
    });
    const client = fixture.client({ stallTimeoutMs: 200 });
    const received: number[] = [];
    const started = performance.now();
    await assert.rejects(
      (async () => {
        for await (const piece of client.readPieces(address, { digest, pieceSize: 64 * 1024, pieces: [5, 6], waitMs: 100 }, signal()))
          received.push(piece.index);
      })(),
      failsWith("ERR_PEER_TIMEOUT"),
    );
    const elapsed = performance.now() - started;
    assert.deepEqual(received, [5]);
    // The stall timeout counts from the last message and allows for waitMs.
    assert.ok(elapsed >= 290 && elapsed < 2000, `timed out after ${elapsed.toFixed(0)} ms`);
  });

  it("does not count the consumer's time as a stall", async () => {
    // At 8 MiB/s a piece arrives every 125 ms, well within the stall timeout; the consumer dawdles longer
    // than the timeout on each piece while the call is still running.
    const server = await fixture.server({ store, uploadBytesPerSecond: 8 * MiB });
    const client = fixture.client({ stallTimeoutMs: 250 });
    const received: number[] = [];
    for await (const piece of client.readPieces(server.address, all([0, 1, 2, 3]), signal())) {
      received.push(piece.index);
      await sleep(350);
    }
    assert.deepEqual(received, [0, 1, 2, 3]);
  });

  for (const [name, misbehave] of [
    [
      "a wrong offset",
      (send: (piece: number, offset: number, data: Uint8Array) => void, pieceSize: number) => {
        send(0, 1, Buffer.alloc(pieceSize));
      },
    ],
    [
      "pieces out of order",
      (send: (piece: number, offset: number, data: Uint8Array) => void, pieceSize: number) => {
        send(1, 0, Buffer.alloc(pieceSize));
      },
    ],
    [
      "a piece longer than the piece size",
      (send: (piece: number, offset: number, data: Uint8Array) => void, pieceSize: number) => {
        send(0, 0, Buffer.alloc(pieceSize + 1));
      },
    ],
    [
      "two short pieces",
      (send: (piece: number, offset: number, data: Uint8Array) => void, _pieceSize: number) => {
        send(0, 0, Buffer.alloc(10));
        send(1, 0, Buffer.alloc(10));
      },
    ],
    [
      "too few pieces",
      (send: (piece: number, offset: number, data: Uint8Array) => void, pieceSize: number) => {
        send(0, 0, Buffer.alloc(pieceSize));
      },
    ],
  ] as const) {
    it(`fails with ERR_PEER_PROTOCOL on ${name}`, async () => {
      const address = await startFakePeer(fixture, (call) => {
        misbehave((piece, offset, data) => {
          call.send(piece, offset, data);
        }, call.request.pieceSize);
        call.end();
      });
      const client = fixture.client();
      await assert.rejects(
        collect(client.readPieces(address, { digest, pieceSize: 1024, pieces: [0, 1], waitMs: 0 }, signal())),
        failsWith("ERR_PEER_PROTOCOL"),
      );
    });
  }

  it("accepts one short piece as the blob's last", async () => {
    const address = await startFakePeer(fixture, (call) => {
      call.send(2, 0, Buffer.alloc(1024));
      call.send(3, 0, Buffer.alloc(10));
      call.end();
    });
    const client = fixture.client();
    const pieces = await collect(client.readPieces(address, { digest, pieceSize: 1024, pieces: [2, 3], waitMs: 0 }, signal()));
    assert.deepEqual(
      pieces.map((p) => [p.index, p.data.length]),
      [
        [2, 1024],
        [3, 10],
      ],
    );
  });

  it("ends open streams with ERR_PEER_UNAVAILABLE when the server closes, and logs them at debug, not as warnings", async () => {
    const records: { level: number; msg: string; details?: string }[] = [];
    const logger = pino(
      { level: "debug" },
      {
        write(line: string) {
          records.push(JSON.parse(line) as { level: number; msg: string; details?: string });
        },
      },
    );
    const server = await fixture.server({ store, uploadBytesPerSecond: 4 * MiB, logger });
    const client = fixture.client();
    const data = testBytes(2 * MiB);
    const partial = await putPartial(store, data, MiB, []);
    try {
      const streaming = collect(client.readPieces(server.address, all([0, 1, 2, 3, 4, 5, 6, 7]), signal()));
      const waiting = collect(
        client.readPieces(server.address, { digest: partial.digest, pieceSize: MiB, pieces: [0], waitMs: 30_000 }, signal()),
      );
      const outcomes = [
        assert.rejects(streaming, failsWith("ERR_PEER_UNAVAILABLE")),
        assert.rejects(waiting, failsWith("ERR_PEER_UNAVAILABLE")),
      ];
      assert.ok(await eventually(() => server.activeUploads === 2));
      await sleep(100);
      const started = performance.now();
      await server.close();
      assert.ok(performance.now() - started < 1500, "close did not wait for the streams to finish");
      assert.equal(server.activeUploads, 0);
      await Promise.all(outcomes);
      const failures = records.filter((record) => record.msg === "peer call failed");
      // Both requests went over the client's one Exchange stream to this peer: one call, one line.
      assert.deepEqual(
        failures.map((failure) => [failure.level, failure.details]),
        [[PINO_DEBUG, "peer is shutting down"]],
      );
    } finally {
      await partial.abort(new Error("test done"));
    }
  });

  it("cancels its calls on close() with ERR_PEER_ABORTED, and closes idle channels", async () => {
    const server = await fixture.server({ store, uploadBytesPerSecond: 4 * MiB });
    const client = fixture.client({ idleSessionCloseMs: 50 });
    await collect(client.readPieces(server.address, all([0]), signal()));
    assert.equal(client.openSessions, 1);
    assert.ok(await eventually(() => client.openSessions === 0), "idle channel closed");
    const reading = assert.rejects(
      collect(client.readPieces(server.address, all([0, 1, 2, 3, 4, 5, 6, 7]), signal())),
      failsWith("ERR_PEER_ABORTED"),
    );
    await sleep(50);
    client.close();
    await reading;
    assert.ok(await eventually(() => server.activeUploads === 0));
  });
});
