import assert from "node:assert/strict";
import { after, afterEach, describe, it } from "node:test";
import { pino } from "pino";
import { MEDIA_TYPE_OCI_MANIFEST, digestOf } from "../oci/index.js";
import { MemoryBlobStore } from "../store/memory-blob-store.js";
import { choosePieceSize } from "../piece/index.js";
import { LocalTracker, MemoryTracker } from "../tracker/index.js";
import { TrackerManifestPeers } from "./manifest-peers.js";
import { corruptingStore } from "./testing/corrupting-store.js";
import { PeerClient } from "./peer-client.js";
import { PeerServer } from "./peer-server.js";

const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });
const MANIFEST = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, config: {}, layers: [] }));
const DIGEST = digestOf(MANIFEST);

describe("TrackerManifestPeers", () => {
  const closers: (() => Promise<void>)[] = [];
  const client = new PeerClient({ logger, stallTimeoutMs: 1_000 });
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });
  after(() => {
    client.close();
  });

  /** An agent holding the manifest, announced to `tracker`; a liar serves it with one byte changed. */
  async function holder(tracker: MemoryTracker, name: string, options: { lies?: boolean } = {}): Promise<void> {
    const store = new MemoryBlobStore();
    const bytes = MANIFEST;
    const pieceSize = choosePieceSize(bytes.length);
    const partial = await store.openPartial(DIGEST, bytes.length, { pieceSize, mediaType: MEDIA_TYPE_OCI_MANIFEST });
    await partial.append(bytes);
    await partial.commit();
    const served = options.lies === true ? corruptingStore(store) : store;
    const server = await PeerServer.start({ host: "127.0.0.1", port: 0, store: served, logger, closeGraceMs: 50 });
    const session = new LocalTracker({
      tracker,
      identity: { agentId: name, nodeName: name, zone: "", peerAddress: server.address },
      logger,
    });
    session.announce({ digest: DIGEST, size: bytes.length, pieceSize, complete: true });
    closers.push(async () => {
      await session.close();
      await server.close();
      await store.close();
    });
  }

  function asker(tracker: MemoryTracker): TrackerManifestPeers {
    const session = new LocalTracker({
      tracker,
      identity: { agentId: "asker", nodeName: "asker", zone: "", peerAddress: "127.0.0.1:1" },
      logger,
    });
    closers.push(() => session.close());
    return new TrackerManifestPeers({ tracker: session, pieces: client, logger, timeoutMs: 2_000 });
  }

  it("returns the verified bytes from a holder", async () => {
    const tracker = new MemoryTracker({ logger });
    await holder(tracker, "good");
    const body = await asker(tracker).fetch(DIGEST, 1 << 20, AbortSignal.timeout(5_000));
    assert.ok(body);
    assert.equal(digestOf(body), DIGEST);
  });

  it("skips a holder whose copy does not match and takes the next one", async () => {
    const tracker = new MemoryTracker({ logger });
    await holder(tracker, "liar", { lies: true });
    const peers = asker(tracker);
    assert.equal(await peers.fetch(DIGEST, 1 << 20, AbortSignal.timeout(5_000)), undefined, "only a bad copy: nothing");
    await holder(tracker, "good");
    const body = await peers.fetch(DIGEST, 1 << 20, AbortSignal.timeout(5_000));
    assert.equal(body === undefined ? undefined : digestOf(body), DIGEST);
  });

  it("answers undefined when nobody holds it, when it is over the size limit, and rejects when aborted", async () => {
    const tracker = new MemoryTracker({ logger });
    const peers = asker(tracker);
    assert.equal(await peers.fetch(DIGEST, 1 << 20, AbortSignal.timeout(5_000)), undefined);
    await holder(tracker, "good");
    assert.equal(await peers.fetch(DIGEST, MANIFEST.length - 1, AbortSignal.timeout(5_000)), undefined);
    await assert.rejects(peers.fetch(DIGEST, 1 << 20, AbortSignal.abort(new Error("gone"))), /gone/);
  });
});
