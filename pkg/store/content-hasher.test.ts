import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type ContentHasher, type HashedPiece, InlineContentHasher } from "./content-hasher.js";
import { HASH_STAGING_BYTES, HASH_WORKER_IDLE_MS, hashWorkerForTests, WorkerContentHasher } from "./worker-content-hasher.js";
import { testBytes } from "./testing/conformance-helpers.js";
import { withNewHashThread } from "./testing/hash-thread.js";

/** Bounds the wait for the child process (a hang guard, not a timing assertion). */
const CHILD_EXIT_DEADLINE_MS = 30_000;

const PIECE = 1024 * 1024;
/** Larger than the staging memory, so one update takes several rounds through the worker. */
const SIZE = HASH_STAGING_BYTES * 2 + PIECE + 12_345;

/** Feeds a sequence with a lone chunk, a view into a larger buffer, a blob-only update and a gap. */
async function feed(hasher: ContentHasher, data: Buffer): Promise<HashedPiece[]> {
  const pieces: HashedPiece[] = [];
  const run = async (position: number, bytes: Uint8Array, blob: boolean, withPieces = true): Promise<void> => {
    pieces.push(...(await hasher.update(position, bytes, { blob, pieces: withPieces })));
  };
  await run(0, data.subarray(0, 1000), true);
  await run(1000, data.subarray(1000, 3 * PIECE), true);
  // Blob only (as the catch-up from storage does): the piece in progress breaks off at this gap.
  await run(3 * PIECE, data.subarray(3 * PIECE, 3 * PIECE + 10), true, false);
  await run(3 * PIECE + 10, data.subarray(3 * PIECE + 10, SIZE), true);
  return pieces;
}

function expectedPieces(data: Buffer, indexes: readonly number[]): HashedPiece[] {
  return indexes.map((index) => ({
    index,
    sha256: createHash("sha256")
      .update(data.subarray(index * PIECE, Math.min((index + 1) * PIECE, data.length)))
      .digest(),
  }));
}

describe("ContentHasher", () => {
  const data = testBytes(SIZE);
  const params = { algorithm: "sha256", size: SIZE, pieceSize: PIECE };
  const allButFourth = [0, 1, 2, 4, 5];

  for (const [name, make] of [
    ["inline", () => new InlineContentHasher(params)],
    ["in the worker thread", () => new WorkerContentHasher(params)],
  ] as const) {
    it(`${name}: piece hashes of the pieces fed from their first byte, and the blob digest`, async () => {
      const hasher = make();
      const pieces = await feed(hasher, data);
      assert.deepEqual(
        pieces.map(({ index, sha256 }) => ({ index, sha256: Buffer.from(sha256) })),
        expectedPieces(data, allButFourth),
      );
      assert.equal(await hasher.digest(), createHash("sha256").update(data).digest("hex"));
      hasher.close();
    });
  }

  it("the worker takes sha512 digests too, and an update from a view into a larger buffer", async () => {
    const hasher = new WorkerContentHasher({ algorithm: "sha512", size: 100, pieceSize: 64 });
    const big = testBytes(1000);
    const pieces = await hasher.update(0, big.subarray(500, 600), { blob: true, pieces: true });
    assert.deepEqual(
      pieces.map(({ index, sha256 }) => ({ index, sha256: Buffer.from(sha256) })),
      [
        { index: 0, sha256: createHash("sha256").update(big.subarray(500, 564)).digest() },
        { index: 1, sha256: createHash("sha256").update(big.subarray(564, 600)).digest() },
      ],
    );
    assert.equal(await hasher.digest(), createHash("sha512").update(big.subarray(500, 600)).digest("hex"));
    assert.deepEqual(big, testBytes(1000), "the caller's buffer is left as it was");
  });

  it("the worker reads bytes in shared memory where they are", async () => {
    const hasher = new WorkerContentHasher(params);
    const shared = Buffer.from(new SharedArrayBuffer(SIZE + 10));
    data.copy(shared, 10);
    const view = shared.subarray(10);
    assert.equal(hasher.stage(view), view, "no staging copy");
    const pieces = await hasher.update(0, view, { blob: true, pieces: true });
    assert.deepEqual(
      pieces.map(({ index }) => index),
      [0, 1, 2, 3, 4, 5],
    );
    assert.equal(await hasher.digest(), createHash("sha256").update(data).digest("hex"));
  });

  it("a closed hasher refuses updates", async () => {
    const hasher = new WorkerContentHasher(params);
    hasher.close();
    await assert.rejects(hasher.update(0, data.subarray(0, 10), { blob: true, pieces: true }), /closed/);
  });

  it("the worker thread stops once its last hasher is done and idle, and the next hasher starts a new one", async () => {
    const state = hashWorkerForTests(20);
    try {
      const first = new WorkerContentHasher({ algorithm: "sha256", size: 4, pieceSize: 4 });
      await first.update(0, Buffer.from("abcd"), { blob: true, pieces: true });
      const open = new WorkerContentHasher({ algorithm: "sha256", size: 4, pieceSize: 4 });
      assert.equal((await first.digest()).length, 64);
      await sleep(100);
      // Read through a function: the assertions below would otherwise narrow the property for the loop.
      const running = (): boolean => state.running;
      assert.equal(running(), true, "a hasher is still open");
      open.close();
      for (let waited = 0; running() && waited < 5_000; waited += 20) await sleep(20);
      assert.equal(running(), false, "stopped after the idle time");
      const next = new WorkerContentHasher({ algorithm: "sha256", size: 4, pieceSize: 4 });
      await next.update(0, Buffer.from("abcd"), { blob: true, pieces: true });
      assert.equal(await next.digest(), createHash("sha256").update("abcd").digest("hex"));
    } finally {
      hashWorkerForTests(HASH_WORKER_IDLE_MS);
    }
  });

  it("until its thread runs, a worker hasher takes piece hashes itself and the thread takes over at the next piece boundary", async () => {
    // Not held: the test turns no event loop before it checks, so the new thread cannot be online yet.
    await withNewHashThread(false, async () => {
      const hasher = new WorkerContentHasher(params);
      assert.equal(hasher.ready, false, "a new thread is starting");
      const early = 1.5 * PIECE;
      // No turn of the event loop in between: the thread's 'online' event cannot have come yet.
      const before = await hasher.update(0, data.subarray(0, early), { blob: false, pieces: true });
      assert.equal(hasher.ready, false, "still starting: the pieces did not wait for it");
      assert.deepEqual(
        before.map(({ index, sha256 }) => ({ index, sha256: Buffer.from(sha256) })),
        expectedPieces(data, [0]),
      );
      await hasher.whenReady();
      assert.equal(hasher.ready, true);
      // The partial's catch-up feeds the digest the bytes it skipped, then the transfer goes on mid-piece.
      assert.deepEqual(await hasher.update(0, data.subarray(0, early), { blob: true, pieces: false }), []);
      const after = await hasher.update(early, data.subarray(early), { blob: true, pieces: true });
      assert.deepEqual(
        after.map(({ index, sha256 }) => ({ index, sha256: Buffer.from(sha256) })),
        expectedPieces(data, [1, 2, 3, 4, 5]),
        "piece 1, begun before the thread ran, is finished here; the thread takes 2 to 5",
      );
      assert.equal(await hasher.digest(), createHash("sha256").update(data).digest("hex"));
    });
  });

  it("an inline hasher is always ready", async () => {
    const hasher = new InlineContentHasher(params);
    assert.equal(hasher.ready, true);
    await hasher.whenReady();
  });

  it("the worker thread does not keep a process alive, used or only opened", async () => {
    const module = new URL("./worker-content-hasher.js", import.meta.url).href;
    for (const body of [
      "new WorkerContentHasher({ algorithm: 'sha256', size: 10, pieceSize: 4 });",
      "const h = new WorkerContentHasher({ algorithm: 'sha256', size: 10, pieceSize: 4 }); await h.update(0, new Uint8Array(3), { blob: true, pieces: true }); h.close();",
    ]) {
      const child = spawn(
        process.execPath,
        ["--input-type=module", "-e", `import { WorkerContentHasher } from ${JSON.stringify(module)}; ${body}`],
        { stdio: "ignore" },
      );
      const guard = setTimeout(() => child.kill("SIGKILL"), CHILD_EXIT_DEADLINE_MS);
      const [code, signal] = (await once(child, "exit")) as [number | null, NodeJS.Signals | null];
      clearTimeout(guard);
      assert.deepEqual({ code, signal }, { code: 0, signal: null }, `the process exits by itself after: ${body}`);
    }
  });
});
