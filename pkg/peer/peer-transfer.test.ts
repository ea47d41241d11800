import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { AgentMetrics } from "../metrics/index.js";
import { digestOf, type Digest } from "../oci/index.js";
import { PieceBitmap, sha256Of } from "../piece/index.js";
import { type DiskBlobStore, MemoryBlobStore } from "../store/index.js";
import { isPeerError } from "./errors.js";
import type { PeerClient } from "./peer-client.js";
import type { PeerServer } from "./peer-server.js";
import { collect, eventually, MiB, PeerFixture, pieceOf, putBlob, putPartial, testBytes, writePiece } from "./testing/peer-fixture.js";

const signal = (): AbortSignal => AbortSignal.timeout(10_000);

describe("PeerServer + PeerClient: transfers", () => {
  const fixture = new PeerFixture();
  let store: DiskBlobStore;
  let server: PeerServer;
  let client: PeerClient;
  let metrics: AgentMetrics;
  let clientMetrics: AgentMetrics;
  // 3.5 MiB: four 1 MiB pieces (choosePieceSize), the last one short.
  const blob = testBytes(3.5 * MiB);
  let digest: Digest;

  before(async () => {
    store = await fixture.store();
    digest = await putBlob(store, blob);
    metrics = new AgentMetrics({ version: "test", collectDefaults: false });
    clientMetrics = new AgentMetrics({ version: "test", collectDefaults: false });
    server = await fixture.server({ store, metrics });
    client = fixture.client({ metrics: clientMetrics });
  });
  after(() => fixture.close());

  it("serves the pieces of a complete blob byte-exact, in request order", async () => {
    // 3 alone, then 0..2 as one run read with one store stream, then 1 again.
    const pieces = await collect(
      client.readPieces(server.address, { digest, pieceSize: MiB, pieces: [3, 0, 1, 2, 1], waitMs: 0 }, signal()),
    );
    assert.deepEqual(
      pieces.map((p) => p.index),
      [3, 0, 1, 2, 1],
    );
    for (const piece of pieces) assert.ok(piece.data.equals(pieceOf(blob, MiB, piece.index)), `piece ${piece.index} differs`);
    assert.equal(pieces[0]?.data.length, 0.5 * MiB);
  });

  it("counts piece bytes sent and received", async () => {
    const sentBefore = (await metrics.peerBytesSent.get()).values[0]?.value ?? 0;
    const receivedBefore = (await clientMetrics.peerBytesReceived.get()).values[0]?.value ?? 0;
    await collect(client.readPieces(server.address, { digest, pieceSize: MiB, pieces: [0, 3], waitMs: 0 }, signal()));
    const sent = ((await metrics.peerBytesSent.get()).values[0]?.value ?? 0) - sentBefore;
    const received = ((await clientMetrics.peerBytesReceived.get()).values[0]?.value ?? 0) - receivedBefore;
    assert.equal(received, 1.5 * MiB);
    assert.equal(sent, 1.5 * MiB);
  });

  it("reuses one channel per peer", async () => {
    await collect(client.readPieces(server.address, { digest, pieceSize: MiB, pieces: [1], waitMs: 0 }, signal()));
    await client.stat(server.address, digest, signal());
    assert.equal(client.openSessions, 1);
  });

  it("stats a complete blob, and nothing for an unknown one", async () => {
    const hashes = [0, 1, 2, 3].map((index) => new Uint8Array(sha256Of(pieceOf(blob, MiB, index))));
    assert.deepEqual(await client.stat(server.address, digest, signal()), {
      complete: true,
      size: blob.length,
      pieceSize: MiB,
      bitmap: new Uint8Array(0),
      pieceHashes: hashes,
      holders: [],
    });
    assert.equal(await client.stat(server.address, digestOf("unknown"), signal()), undefined);
  });

  it("serves held pieces of a partial blob, several chunks per piece, and stats its bitmap", async () => {
    const data = testBytes(10 * MiB);
    // 2.5 MiB pieces arrive as three chunk messages each (1, 1, 0.5 MiB): exercises reassembly.
    const pieceSize = 2.5 * MiB;
    const partial = await putPartial(store, data, pieceSize, [1, 3]);
    try {
      const pieces = await collect(
        client.readPieces(server.address, { digest: partial.digest, pieceSize, pieces: [1], waitMs: 0 }, signal()),
      );
      assert.equal(pieces.length, 1);
      assert.ok(pieces[0]?.data.equals(pieceOf(data, pieceSize, 1)));
      const stat = await client.stat(server.address, partial.digest, signal());
      assert.ok(stat !== undefined);
      assert.equal(stat.complete, false);
      assert.equal(stat.pieceSize, pieceSize);
      const bitmap = new PieceBitmap(4, stat.bitmap);
      // Piece 3 is held but is the blob's last: not servable before commit, so not announced.
      assert.deepEqual(
        [0, 1, 2, 3].map((i) => bitmap.has(i)),
        [false, true, false, false],
      );
      // The hashes of what it serves, and nothing for the rest.
      assert.deepEqual(
        stat.pieceHashes.map((h) => (h === undefined ? undefined : Buffer.from(h))),
        [undefined, sha256Of(pieceOf(data, pieceSize, 1)), undefined, undefined],
      );
    } finally {
      await partial.abort(new Error("test done"));
    }
  });

  it("relays a piece written after the request started (wait_ms)", async () => {
    const data = testBytes(3 * MiB);
    const partial = await putPartial(store, data, MiB, [0]);
    try {
      const reading = collect(
        client.readPieces(server.address, { digest: partial.digest, pieceSize: MiB, pieces: [0, 1], waitMs: 5_000 }, signal()),
      );
      await sleep(100);
      await writePiece(partial, data, 1);
      const pieces = await reading;
      assert.deepEqual(
        pieces.map((p) => p.index),
        [0, 1],
      );
      assert.ok(pieces[1]?.data.equals(pieceOf(data, MiB, 1)));
    } finally {
      await partial.abort(new Error("test done"));
    }
  });

  it("serves a partial's last piece once the blob is committed", async () => {
    const data = testBytes(2.25 * MiB);
    const partial = await putPartial(store, data, MiB, [0, 2]);
    const reading = collect(
      client.readPieces(server.address, { digest: partial.digest, pieceSize: MiB, pieces: [2], waitMs: 5_000 }, signal()),
    );
    await sleep(100);
    await writePiece(partial, data, 1);
    await partial.commit();
    const pieces = await reading;
    assert.ok(pieces[0]?.data.equals(pieceOf(data, MiB, 2)));
    await store.delete(partial.digest);
  });

  it("serves the last piece once the digest is verified, while commit still makes the blob durable", async () => {
    // Publishing (the disk store's fsync and rename) takes 2 s here: a busy disk.
    const slow = new MemoryBlobStore({ publishDelayMs: 2_000 });
    const slowServer = await fixture.server({ store: slow });
    const config = testBytes(949);
    const partial = await putPartial(slow, config, MiB, [0]);
    const before = await client.stat(slowServer.address, partial.digest, signal());
    assert.equal(before?.bitmap[0], 0, "held but not yet verified: not offered");
    const committing = partial.commit();
    try {
      assert.ok(await eventually(() => partial.verified), "commit verified the digest");
      // Asked without wait_ms: served now, or refused as not held.
      const pieces = await collect(
        client.readPieces(slowServer.address, { digest: partial.digest, pieceSize: MiB, pieces: [0], waitMs: 0 }, signal()),
      );
      assert.ok(pieces[0]?.data.equals(config), "the only piece, its last, arrived");
      assert.equal(partial.state, "open", "before the blob was durable");
      const stat = await client.stat(slowServer.address, partial.digest, signal());
      assert.equal(stat?.bitmap[0], 0x80, "offered once verified");
    } finally {
      await partial.abort(new Error("test done")).catch(() => undefined);
      await slow.close().catch(() => undefined);
      void committing.catch(() => undefined);
    }
  });

  it("answers ERR_PEER_MISSING_PIECE for a piece not held, at once or after wait_ms", async () => {
    const data = testBytes(3 * MiB);
    const partial = await putPartial(store, data, MiB, [0]);
    try {
      await assert.rejects(
        collect(client.readPieces(server.address, { digest: partial.digest, pieceSize: MiB, pieces: [1], waitMs: 0 }, signal())),
        (error) => isPeerError(error, "ERR_PEER_MISSING_PIECE"),
      );
      const started = performance.now();
      const pieces: number[] = [];
      await assert.rejects(
        (async () => {
          for await (const piece of client.readPieces(
            server.address,
            { digest: partial.digest, pieceSize: MiB, pieces: [0, 1], waitMs: 200 },
            signal(),
          ))
            pieces.push(piece.index);
        })(),
        (error) => isPeerError(error, "ERR_PEER_MISSING_PIECE"),
      );
      assert.deepEqual(pieces, [0], "the held piece arrives before the failure");
      assert.ok(performance.now() - started >= 190, "the server waited wait_ms");
    } finally {
      await partial.abort(new Error("test done"));
    }
  });

  it("answers ERR_PEER_MISSING_PIECE when a partial is aborted while the server waits", async () => {
    const data = testBytes(2 * MiB);
    const partial = await putPartial(store, data, MiB, []);
    const reading = collect(
      client.readPieces(server.address, { digest: partial.digest, pieceSize: MiB, pieces: [0], waitMs: 5_000 }, signal()),
    );
    const outcome = assert.rejects(reading, (error) => isPeerError(error, "ERR_PEER_MISSING_PIECE"));
    await sleep(50);
    await partial.abort(new Error("origin failed"));
    await outcome;
  });

  it("answers ERR_PEER_MISSING_PIECE for a blob it does not hold", async () => {
    await assert.rejects(
      collect(client.readPieces(server.address, { digest: digestOf("nope"), pieceSize: MiB, pieces: [0], waitMs: 0 }, signal())),
      (error) => isPeerError(error, "ERR_PEER_MISSING_PIECE"),
    );
  });

  for (const [name, request] of [
    ["a malformed digest", { digest: "sha256:xyz", pieceSize: MiB, pieces: [0] }],
    ["a wrong piece size", { pieceSize: 2 * MiB, pieces: [0] }],
    ["a piece out of range", { pieceSize: MiB, pieces: [0, 4] }],
    ["no pieces", { pieceSize: MiB, pieces: [] }],
    ["too many pieces", { pieceSize: MiB, pieces: Array.from({ length: 65 }, () => 0) }],
  ] as const) {
    it(`answers ERR_PEER_INVALID_ARGUMENT for ${name}`, async () => {
      const full = { waitMs: 0, ...request, digest: ("digest" in request ? request.digest : digest) as Digest };
      await assert.rejects(collect(client.readPieces(server.address, full, signal())), (error) =>
        isPeerError(error, "ERR_PEER_INVALID_ARGUMENT"),
      );
    });
  }

  it("answers ERR_PEER_INVALID_ARGUMENT to a Stat with a malformed digest", async () => {
    await assert.rejects(client.stat(server.address, "md5:00" as Digest, signal()), (error) =>
      isPeerError(error, "ERR_PEER_INVALID_ARGUMENT"),
    );
  });

  it("answers ERR_PEER_UNAVAILABLE when nobody listens", async () => {
    const other = await fixture.server({ store });
    const address = other.address;
    await other.close();
    await assert.rejects(collect(client.readPieces(address, { digest, pieceSize: MiB, pieces: [0], waitMs: 0 }, signal())), (error) =>
      isPeerError(error, "ERR_PEER_UNAVAILABLE"),
    );
  });
});
