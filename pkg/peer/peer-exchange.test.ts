import assert from "node:assert/strict";
import { once } from "node:events";
import { type ClientHttp2Session, connect, createServer, type IncomingHttpHeaders, type ServerHttp2Stream } from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { credentials, status } from "@grpc/grpc-js";
import { ExchangeRequest, type ExchangeResponse, PeerServiceClient } from "../gen/peer/v1/peer.js";
import { StaticIdentity } from "../identity/index.js";
import { TestPki } from "../identity/testing/test-pki.js";
import type { Digest } from "../oci/index.js";
import type { DiskBlobStore } from "../store/index.js";
import { isPeerError, type PeerErrorCode } from "./errors.js";
import { MAX_OPEN_READS_PER_STREAM } from "./exchange-server.js";
import { frameMessage, MessageCollector, MessageFramer } from "./grpc-wire.js";
import { PEER_METHODS } from "./peer-service.js";
import type { PieceReadRequest } from "./piece-source.js";
import { MAX_QUEUED_MESSAGES, MESSAGE_BUFFER_BYTES } from "./piece-writer.js";
import { collect, eventually, MiB, PeerFixture, pieceOf, putBlob, putPartial, testBytes, writePiece } from "./testing/peer-fixture.js";
import { encodeChunk } from "./wire-codec.js";

// The Exchange stream: many reads multiplexed on one stream per peer pair, each with ReadPieces' semantics.

const signal = (): AbortSignal => AbortSignal.timeout(20_000);
const failsWith = (code: PeerErrorCode) => (error: unknown) => isPeerError(error, code);
const EXCHANGE_HEADERS = { ":method": "POST", ":path": PEER_METHODS.exchange, "content-type": "application/grpc", te: "trailers" };

function readMessage(requestId: number, digest: string, pieces: number[], waitMs = 0, pieceSize = MiB): Buffer {
  return frameMessage(
    ExchangeRequest.encode({ kind: { $case: "read", value: { requestId, digest, pieceSize, pieces, waitMs } } }).finish(),
  );
}

/** Tracks whether a promise settled, without awaiting it. */
function settledFlag(promise: Promise<unknown>): () => boolean {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  return () => settled;
}

/** Sends `body` on an Exchange stream of a bare HTTP/2 session, ends it, and returns the stream's grpc-status. */
function rawExchange(session: ClientHttp2Session, body: Buffer): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const stream = session.request(EXCHANGE_HEADERS);
    let code: string | undefined;
    const record = (headers: IncomingHttpHeaders): void => {
      if (typeof headers["grpc-status"] === "string") code = headers["grpc-status"];
    };
    stream.on("response", record);
    stream.on("trailers", record);
    stream.on("close", () => {
      resolve(code);
    });
    stream.on("error", reject);
    stream.resume();
    stream.end(body);
  });
}

describe("Exchange: one stream per peer pair", () => {
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

  it("multiplexes reads on one stream; a read waiting for a relayed piece holds up no other", async () => {
    const server = await fixture.server({ store });
    const client = fixture.client();
    const data = testBytes(4 * MiB);
    const partial = await putPartial(store, data, MiB, [0]);
    try {
      const relay = collect(
        client.readPieces(server.address, { digest: partial.digest, pieceSize: MiB, pieces: [0, 1], waitMs: 30_000 }, signal()),
      );
      const relayDone = settledFlag(relay);
      assert.ok(await eventually(() => server.activeUploads === 1));
      // With the relay read, as many as a connection may have served at once (4 of 16 slots).
      const reads = await Promise.all(
        [
          [0, 1],
          [7, 2],
          [3, 4],
        ].map((pieces) => collect(client.readPieces(server.address, all(pieces), signal()))),
      );
      assert.deepEqual(
        reads.map((pieces) => pieces.map((p) => p.index)),
        [
          [0, 1],
          [7, 2],
          [3, 4],
        ],
      );
      for (const piece of reads.flat()) assert.ok(piece.data.equals(pieceOf(blob, MiB, piece.index)), `piece ${piece.index}`);
      assert.equal(relayDone(), false, "the relay read still waits");
      assert.equal(client.openStreams, 1);
      assert.equal(server.openExchangeStreams, 1);
      await writePiece(partial, data, 1);
      const relayed = await relay;
      assert.deepEqual(
        relayed.map((p) => p.index),
        [0, 1],
      );
      assert.ok(relayed[1]?.data.equals(pieceOf(data, MiB, 1)));
      assert.equal(server.openExchangeStreams, 1, "still the same stream");
    } finally {
      await partial.abort(new Error("test done"));
    }
  });

  it("cancelling one read (abort, or a consumer that stops) leaves the others running", async () => {
    const server = await fixture.server({ store });
    const client = fixture.client();
    const data = testBytes(4 * MiB);
    const partial = await putPartial(store, data, MiB, [0]);
    try {
      const controller = new AbortController();
      const cancelled = collect(
        client.readPieces(server.address, { digest: partial.digest, pieceSize: MiB, pieces: [1], waitMs: 30_000 }, controller.signal),
      );
      const waiting = collect(
        client.readPieces(server.address, { digest: partial.digest, pieceSize: MiB, pieces: [2], waitMs: 30_000 }, signal()),
      );
      assert.ok(await eventually(() => server.activeUploads === 2));
      controller.abort();
      await assert.rejects(cancelled, failsWith("ERR_PEER_ABORTED"));
      assert.ok(await eventually(() => server.activeUploads === 1), "the server stopped serving the cancelled read");
      // A consumer that breaks out after the first piece cancels its read too.
      for await (const piece of client.readPieces(server.address, all([0, 1, 2, 3, 4, 5, 6, 7]), signal())) {
        piece.release();
        break;
      }
      assert.ok(await eventually(() => server.activeUploads === 1), "the broken-off read ended on the server");
      await writePiece(partial, data, 2);
      assert.deepEqual(
        (await waiting).map((p) => p.index),
        [2],
      );
      assert.equal(server.openExchangeStreams, 1);
    } finally {
      await partial.abort(new Error("test done"));
    }
  });

  it("a busy cap, a missing piece or a bad request fails that read alone, not the stream", async () => {
    // Two slots: a connection may hold both (at least 2 per connection).
    const server = await fixture.server({ store, maxConcurrentUploads: 2 });
    const client = fixture.client();
    const data = testBytes(4 * MiB);
    const partial = await putPartial(store, data, MiB, [0]);
    try {
      const relays = [1, 2].map((index) =>
        collect(client.readPieces(server.address, { digest: partial.digest, pieceSize: MiB, pieces: [index], waitMs: 30_000 }, signal())),
      );
      assert.ok(await eventually(() => server.activeUploads === 2));
      await assert.rejects(collect(client.readPieces(server.address, all([0]), signal())), failsWith("ERR_PEER_BUSY"));
      await assert.rejects(
        collect(client.readPieces(server.address, { ...all([0]), digest: `sha256:${"0".repeat(64)}` as Digest }, signal())),
        failsWith("ERR_PEER_MISSING_PIECE"),
      );
      await assert.rejects(
        collect(client.readPieces(server.address, { ...all([0]), pieceSize: 4096 }, signal())),
        failsWith("ERR_PEER_INVALID_ARGUMENT"),
      );
      await writePiece(partial, data, 1);
      await writePiece(partial, data, 2);
      for (const relay of relays) assert.equal((await relay).length, 1, "the reads open on the stream survived");
      await assert.rejects(
        collect(client.readPieces(server.address, { digest: partial.digest, pieceSize: MiB, pieces: [3], waitMs: 0 }, signal())),
        failsWith("ERR_PEER_MISSING_PIECE"),
      );
      assert.equal((await collect(client.readPieces(server.address, all([5]), signal()))).length, 1);
      assert.equal(server.openExchangeStreams, 1);
    } finally {
      await partial.abort(new Error("test done"));
    }
  });

  it("a stream that fails (the server goes away) fails every open read; the next read opens a new stream", async () => {
    const first = await fixture.server({ store });
    const port = Number(first.address.split(":").at(-1));
    const client = fixture.client();
    const data = testBytes(4 * MiB);
    const partial = await putPartial(store, data, MiB, [0]);
    try {
      const open = [1, 2].map((index) =>
        collect(client.readPieces(first.address, { digest: partial.digest, pieceSize: MiB, pieces: [index], waitMs: 30_000 }, signal())),
      );
      assert.ok(await eventually(() => first.activeUploads === 2));
      const failed = open.map((read) => assert.rejects(read, failsWith("ERR_PEER_UNAVAILABLE")));
      await first.close();
      await Promise.all(failed);
      assert.equal(client.openStreams, 0, "the failed stream is forgotten");
      assert.ok(await eventually(() => client.openSessions === 0), "and the connection to the closed server");
      const second = await fixture.server({ store, port });
      const pieces = await collect(client.readPieces(second.address, all([4]), signal()));
      assert.ok(pieces[0]?.data.equals(pieceOf(blob, MiB, 4)));
      assert.equal(second.openExchangeStreams, 1);
    } finally {
      await partial.abort(new Error("test done"));
    }
  });

  it("malformed requests get a status on the stream (or the read), never a crash", async () => {
    const server = await fixture.server({ store });
    const session = connect(`http://${server.address}`);
    const data = testBytes(2 * MiB);
    const partial = await putPartial(store, data, MiB, []);
    try {
      assert.equal(await rawExchange(session, frameMessage(Buffer.from([0xff, 0xff]))), String(status.INVALID_ARGUMENT), "not protobuf");
      assert.equal(await rawExchange(session, frameMessage(Buffer.alloc(0))), String(status.INVALID_ARGUMENT), "neither read nor cancel");
      assert.equal(
        await rawExchange(session, Buffer.concat([readMessage(1, partial.digest, [0], 5_000), readMessage(1, partial.digest, [0], 5_000)])),
        String(status.INVALID_ARGUMENT),
        "a request id in use",
      );
      assert.equal(await rawExchange(session, Buffer.from([0, 0, 0, 0, 9, 1])), String(status.INVALID_ARGUMENT), "truncated message");
      assert.equal(await rawExchange(session, Buffer.from([0, 0, 2, 0, 0])), String(status.RESOURCE_EXHAUSTED), "over the size limit");
      assert.equal(await rawExchange(session, Buffer.from([1, 0, 0, 0, 0])), String(status.INTERNAL), "compressed without negotiation");
      assert.equal(
        await rawExchange(session, Buffer.concat([readMessage(1, "sha256:nope", [0]), readMessage(2, digest, [], 0)])),
        String(status.OK),
        "bad reads fail alone",
      );
      assert.ok(await eventually(() => server.activeUploads === 0 && server.openExchangeStreams === 0));
      const client = fixture.client();
      assert.equal((await collect(client.readPieces(server.address, all([1]), signal()))).length, 1, "the server still serves");
    } finally {
      session.close();
      await partial.abort(new Error("test done"));
    }
  });

  it("a client that reads nothing: reads beyond the caps are refused, buffers stay bounded, the stream is cut", async () => {
    const server = await fixture.server({ store, maxConcurrentUploads: 16, sendStallTimeoutMs: 1_000 });
    // A tiny receive window: the server can send 64 KiB, then must wait.
    const hog = connect(`http://${server.address}`, { settings: { initialWindowSize: 65_535 } });
    await once(hog, "connect");
    try {
      const stream = hog.request(EXCHANGE_HEADERS);
      stream.on("error", () => undefined);
      // Never read: no 'data' listener, the stream stays paused.
      const reads = Array.from({ length: 3 * MAX_OPEN_READS_PER_STREAM }, (_, i) => readMessage(i + 1, digest, [0, 1, 2, 3, 4, 5, 6, 7]));
      stream.write(Buffer.concat(reads));
      assert.ok(await eventually(() => server.activeUploads === 4), "a connection holds at most a quarter of the slots");
      // Sampled while the stream is stuck: at most MAX_QUEUED_MESSAGES unflushed per read, plus the one being read.
      const bound = 4 * (MAX_QUEUED_MESSAGES + 1) * MESSAGE_BUFFER_BYTES;
      let peak = 0;
      for (let i = 0; i < 20; i++) {
        peak = Math.max(peak, server.messageBytesInUse);
        assert.ok(server.activeUploads <= 4);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.ok(peak > 0 && peak <= bound, `message buffers in use peaked at ${peak} bytes, bound ${bound}`);
      // Others are served meanwhile.
      const other = fixture.client();
      assert.equal((await collect(other.readPieces(server.address, all([0]), signal()))).length, 1);
      assert.ok(await eventually(() => server.openExchangeStreams <= 1 && server.activeUploads === 0, 10_000), "the stuck stream was cut");
      assert.ok(await eventually(() => server.messageBytesInUse === 0, 5_000), "its buffers came back");
    } finally {
      hog.destroy();
    }
  });

  it("a read the peer is silent on fails with ERR_PEER_TIMEOUT and is cancelled; a misbehaving peer is a protocol error", async () => {
    const seen: ExchangeRequest[] = [];
    let misbehave: "no" | "unknown-id" | "unimplemented-after-data" = "no";
    const fake = createServer();
    fake.on("stream", (stream: ServerHttp2Stream) => {
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => {
        stream.sendTrailers({ "grpc-status": String(status.UNIMPLEMENTED) });
      });
      const collector = new MessageCollector();
      const framer = new MessageFramer(1 << 16, collector);
      stream.on("data", (chunk: Buffer) => {
        framer.push(chunk);
        for (const message of collector.messages.splice(0)) {
          const request = ExchangeRequest.decode(message);
          seen.push(request);
          if (request.kind?.$case !== "read") continue;
          if (misbehave === "unknown-id") stream.write(frameMessage(encodeChunk(0, 0, Buffer.alloc(10), 99)));
          if (misbehave === "unimplemented-after-data") {
            stream.end(frameMessage(encodeChunk(0, 0, Buffer.alloc(1024), request.kind.value.requestId)));
          }
        }
      });
      stream.on("error", () => undefined);
    });
    fake.listen(0, "127.0.0.1");
    await once(fake, "listening");
    const address = `127.0.0.1:${(fake.address() as AddressInfo).port}`;
    fixture.defer(
      () =>
        new Promise<void>((resolve) => {
          fake.close(() => {
            resolve();
          });
        }),
    );
    const client = fixture.client({ stallTimeoutMs: 200 });
    try {
      await assert.rejects(
        collect(client.readPieces(address, { digest, pieceSize: MiB, pieces: [0], waitMs: 100 }, signal())),
        failsWith("ERR_PEER_TIMEOUT"),
      );
      assert.ok(
        await eventually(() => seen.some((r) => r.kind?.$case === "cancel" && r.kind.value.requestId === 1)),
        "the timed-out read was cancelled",
      );
      misbehave = "unknown-id";
      await assert.rejects(collect(client.readPieces(address, all([0]), signal())), failsWith("ERR_PEER_PROTOCOL"));
      // A peer that sends a piece and then claims not to serve Exchange: no second read with ReadPieces
      // (the consumer has the piece already), a protocol error.
      misbehave = "unimplemented-after-data";
      const received: number[] = [];
      await assert.rejects(
        (async () => {
          for await (const piece of client.readPieces(address, { digest, pieceSize: 1024, pieces: [0, 1], waitMs: 0 }, signal())) {
            received.push(piece.index);
            piece.release();
          }
        })(),
        failsWith("ERR_PEER_PROTOCOL"),
      );
      assert.deepEqual(received, [0]);
    } finally {
      client.close();
    }
  });
});

describe("Exchange interop: peers with and without it", () => {
  const fixture = new PeerFixture();
  let store: DiskBlobStore;
  const blob = testBytes(3 * MiB);
  let digest: Digest;

  before(async () => {
    store = await fixture.store();
    digest = await putBlob(store, blob);
  });
  after(() => fixture.close());

  it("a client with Exchange reads from a peer without it (UNIMPLEMENTED) through ReadPieces, and remembers", async () => {
    const old = await fixture.server({ store, exchange: false });
    const client = fixture.client();
    for (const pieces of [[2, 0], [1]]) {
      const got = await collect(client.readPieces(old.address, { digest, pieceSize: MiB, pieces, waitMs: 0 }, signal()));
      assert.deepEqual(
        got.map((p) => p.index),
        pieces,
      );
      for (const piece of got) assert.ok(piece.data.equals(pieceOf(blob, MiB, piece.index)));
    }
    assert.equal(client.openStreams, 0);
    assert.equal(old.openExchangeStreams, 0);
  });

  it("a client without Exchange reads from a peer with it through ReadPieces", async () => {
    const server = await fixture.server({ store });
    const client = fixture.client({ exchange: false });
    const got = await collect(client.readPieces(server.address, { digest, pieceSize: MiB, pieces: [1, 2], waitMs: 0 }, signal()));
    assert.deepEqual(
      got.map((p) => p.index),
      [1, 2],
    );
    assert.equal(client.openStreams, 0);
    assert.equal(server.openExchangeStreams, 0);
  });

  it("grpc-js's generated client speaks Exchange with the server: tagged chunks, ends, status OK", async () => {
    const server = await fixture.server({ store });
    const grpc = new PeerServiceClient(server.address, credentials.createInsecure());
    try {
      const call = grpc.exchange();
      const responses: ExchangeResponse[] = [];
      const done = new Promise<void>((resolve, reject) => {
        call.on("data", (response: ExchangeResponse) => {
          responses.push(response);
          if (responses.filter((r) => r.end !== undefined).length === 2) call.end();
        });
        call.on("end", resolve);
        call.on("error", reject);
      });
      call.write({ kind: { $case: "read", value: { requestId: 5, digest, pieceSize: MiB, pieces: [2, 0], waitMs: 0 } } });
      call.write({ kind: { $case: "cancel", value: { requestId: 77 } } });
      call.write({ kind: { $case: "read", value: { requestId: 6, digest, pieceSize: MiB, pieces: [9], waitMs: 0 } } });
      await done;
      const chunks = responses.filter((r) => r.end === undefined);
      assert.ok(chunks.every((r) => r.requestId === 5));
      const joined = (index: number): Buffer => Buffer.concat(chunks.filter((c) => c.piece === index).map((c) => c.data));
      assert.ok(joined(2).equals(pieceOf(blob, MiB, 2)));
      assert.ok(joined(0).equals(pieceOf(blob, MiB, 0)));
      const ends = responses.filter((r) => r.end !== undefined).map((r) => [r.requestId, r.end?.code]);
      assert.deepEqual(ends.sort(), [
        [5, status.OK],
        [6, status.INVALID_ARGUMENT],
      ]);
    } finally {
      grpc.close();
    }
  });
});

describe("Exchange with mutual TLS", () => {
  const pki = TestPki.create();
  const fixture = new PeerFixture();
  const blob = testBytes(2 * MiB);
  let digest: Digest;
  let address: string;
  let openExchangeStreams: () => number;

  before(async () => {
    const store = await fixture.store();
    digest = await putBlob(store, blob);
    const server = await fixture.server({ store, tls: new StaticIdentity(pki.agent("node-server", "127.0.0.1")) });
    address = server.address;
    openExchangeStreams = () => server.openExchangeStreams;
  });
  after(() => fixture.close());

  it("an agent of the cluster's CA reads over the stream; a controller's certificate gets nothing", async () => {
    const agent = fixture.client({ tls: new StaticIdentity(pki.agent("node-client")) });
    const pieces = await collect(agent.readPieces(address, { digest, pieceSize: MiB, pieces: [1, 0], waitMs: 0 }, signal()));
    assert.ok(pieces[0]?.data.equals(pieceOf(blob, MiB, 1)));
    assert.equal(agent.openStreams, 1);
    assert.equal(openExchangeStreams(), 1);
    const controller = fixture.client({ tls: new StaticIdentity(pki.controller()) });
    await assert.rejects(
      collect(controller.readPieces(address, { digest, pieceSize: MiB, pieces: [0], waitMs: 0 }, signal())),
      failsWith("ERR_PEER_UNAVAILABLE"),
    );
    assert.equal(openExchangeStreams(), 1);
  });
});
