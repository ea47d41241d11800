import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it, type TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { FakeUpstream, seededBytes } from "./index.js";

const SEED = "faults";
const BLOB_BYTES = 10_000;

async function startWithBlob(t: TestContext): Promise<{ up: FakeUpstream; url: string; digest: string; bytes: Buffer }> {
  const up = await FakeUpstream.start();
  t.after(() => up.close());
  const { digest } = await up.addBlob({ size: BLOB_BYTES, seed: SEED });
  return { up, url: `${up.url}/v2/app/blobs/${digest}`, digest, bytes: seededBytes(SEED, 0, BLOB_BYTES) };
}

// fetch types its body as a stream of `any`; it is bytes.
function bodyReader(res: Response): ReadableStreamDefaultReader<Uint8Array> {
  return (res.body as ReadableStream<Uint8Array>).getReader();
}

/** Reads a body until it ends or fails, keeping what arrived. */
async function drain(res: Response): Promise<{ bytes: Buffer; error: unknown }> {
  const reader = bodyReader(res);
  const chunks: Uint8Array[] = [];
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { bytes: Buffer.concat(chunks), error: undefined };
      chunks.push(value);
    }
  } catch (error: unknown) {
    return { bytes: Buffer.concat(chunks), error };
  }
}

/** Waits (bounded by the test timeout) until the fake has seen `count` requests. */
async function seen(up: FakeUpstream, count: number): Promise<void> {
  while (up.requests.length < count) await sleep(5);
}

const PENDING = Symbol("pending");
/** Whether `promise` is still unsettled after `ms`: for "nothing happens" checks, never for speed. */
async function stillPending(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const winner = await Promise.race([
    promise.then(
      () => "settled",
      () => "settled",
    ),
    sleep(ms, PENDING),
  ]);
  return winner === PENDING;
}

describe("FakeUpstream scripted faults", () => {
  it("injects 429 with Retry-After for the next N matching requests only", async (t) => {
    const { up, url } = await startWithBlob(t);
    const script = up.script({ kind: "blob", method: "GET" }, { kind: "status", status: 429, retryAfterSeconds: 3 }, { times: 2 });
    for (let i = 0; i < 2; i++) {
      const res = await fetch(url);
      assert.equal(res.status, 429);
      assert.equal(res.headers.get("retry-after"), "3");
      assert.deepEqual(((await res.json()) as { errors: { code: string }[] }).errors[0]?.code, "TOOMANYREQUESTS");
    }
    const head = await fetch(url, { method: "HEAD" });
    assert.equal(head.status, 200, "HEAD does not match a GET-only script");
    const ok = await fetch(url);
    assert.equal(ok.status, 200);
    await ok.arrayBuffer();
    assert.deepEqual([script.hits, script.remaining], [2, 0]);
  });

  it("injects 5xx until the script is removed, and only where it matches", async (t) => {
    const { up, url } = await startWithBlob(t);
    up.addManifest("other", "v1", { schemaVersion: 2, layers: [] });
    for (const status of [500, 502, 503]) {
      const script = up.script((request) => request.name === "app", { kind: "status", status });
      for (let i = 0; i < 2; i++) {
        const res = await fetch(url);
        assert.equal(res.status, status);
        await res.arrayBuffer();
      }
      const other = await fetch(`${up.url}/v2/other/manifests/v1`);
      assert.equal(other.status, 200);
      await other.arrayBuffer();
      script.remove();
    }
    assert.equal((await fetch(url, { method: "HEAD" })).status, 200);
  });

  it("truncates: full Content-Length, fewer bytes, then the connection closes", async (t) => {
    const { up, url, bytes } = await startWithBlob(t);
    up.script({ kind: "blob" }, { kind: "body", truncateAfterBytes: 4_000 }, { times: 1 });
    const res = await fetch(url);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-length"), String(BLOB_BYTES));
    const cut = await drain(res);
    assert.ok(cut.error instanceof Error, "the client must see the body fail");
    assert.deepEqual(cut.bytes, bytes.subarray(0, 4_000));
    assert.equal(up.blobBytesServed, 4_000);
    const whole = await drain(await fetch(url));
    assert.equal(whole.error, undefined);
    assert.deepEqual(whole.bytes, bytes);
  });

  it("serves wrong bytes of the right length for a wrong-digest blob", async (t) => {
    const { up, url, digest, bytes } = await startWithBlob(t);
    up.script({ kind: "blob" }, { kind: "body", corrupt: true });
    const res = await fetch(url);
    assert.equal(res.headers.get("docker-content-digest"), digest);
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(body.byteLength, BLOB_BYTES);
    assert.notEqual(`sha256:${createHash("sha256").update(body).digest("hex")}`, digest);
    assert.deepEqual(body.subarray(0, -1), bytes.subarray(0, -1));
  });

  it("sends a blob without Content-Length when asked to chunk it", async (t) => {
    const { up, url, bytes } = await startWithBlob(t);
    up.script({ kind: "blob" }, { kind: "body", chunked: true });
    const res = await fetch(url);
    assert.equal(res.headers.get("content-length"), null);
    assert.equal(res.headers.get("transfer-encoding"), "chunked");
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), bytes);
  });

  it("paces a slow body to its rate", async (t) => {
    const { up, url, bytes } = await startWithBlob(t);
    const bytesPerSecond = 20_000;
    up.script({ kind: "blob" }, { kind: "body", bytesPerSecond });
    const startedMs = performance.now();
    const body = Buffer.from(await (await fetch(url)).arrayBuffer());
    const elapsedMs = performance.now() - startedMs;
    assert.deepEqual(body, bytes);
    // A lower bound only: the bucket's initial burst (50 ms worth) is the most it may run ahead.
    const floorMs = ((BLOB_BYTES - bytesPerSecond * 0.05) / bytesPerSecond) * 1000;
    assert.ok(elapsedMs >= floorMs * 0.95, `took ${elapsedMs} ms, rate limit implies at least ${floorMs} ms`);
  });

  it("hangs before headers until close()", async (t) => {
    const { up, url } = await startWithBlob(t);
    up.script({ kind: "blob" }, { kind: "hang" });
    const pending = fetch(url);
    await seen(up, 1);
    assert.ok(await stillPending(pending, 100));
    assert.equal(up.requests[0]?.status, undefined);
    await up.close();
    await assert.rejects(pending);
  });

  it("stalls after sending part of the body until close()", async (t) => {
    const { up, url, bytes } = await startWithBlob(t);
    up.script({ kind: "blob" }, { kind: "body", stallAfterBytes: 1_000 });
    const res = await fetch(url);
    assert.equal(res.status, 200);
    const reader = bodyReader(res);
    const received: Uint8Array[] = [];
    let total = 0;
    while (total < 1_000) {
      const { done, value } = await reader.read();
      assert.equal(done, false);
      received.push(value);
      total += value.byteLength;
    }
    assert.deepEqual(Buffer.concat(received), bytes.subarray(0, 1_000));
    const next = reader.read();
    assert.ok(await stillPending(next, 100));
    await up.close();
    await assert.rejects(next);
  });

  it("resets the connection without an answer", async (t) => {
    const { up, url } = await startWithBlob(t);
    up.script({ kind: "blob" }, { kind: "reset" }, { times: 1 });
    await assert.rejects(fetch(url));
    assert.equal(up.requests[0]?.status, undefined);
  });

  it("redirects blobs to a second origin that records what reaches it", async (t) => {
    const { up, url, digest, bytes } = await startWithBlob(t);
    const storage = await FakeUpstream.start();
    t.after(() => storage.close());
    up.requireBasic({ username: "u", password: "p" });
    up.script({ kind: "blob" }, { kind: "redirect", to: storage });
    const authorization = `Basic ${Buffer.from("u:p").toString("base64")}`;

    const manual = await fetch(url, { headers: { authorization }, redirect: "manual" });
    assert.equal(manual.status, 307);
    const location = manual.headers.get("location") ?? "";
    assert.ok(location.startsWith(`${storage.url}/_storage/${digest}?`), location);
    assert.equal(storage.requests.length, 0);

    // Sent straight to the storage origin, a header is recorded there...
    const direct = await fetch(location, { headers: { authorization: "Bearer leaked" } });
    assert.deepEqual(Buffer.from(await direct.arrayBuffer()), bytes);
    assert.equal(storage.requests[0]?.headers.authorization, "Bearer leaked");
    assert.equal(storage.requests[0].kind, "storage");

    // ...and a client that follows the redirect properly drops it at the origin boundary.
    const followed = await fetch(url, { headers: { authorization } });
    assert.equal(followed.status, 200);
    assert.deepEqual(Buffer.from(await followed.arrayBuffer()), bytes);
    assert.equal(storage.requests.length, 2);
    assert.equal(storage.requests[1]?.headers.authorization, undefined);
    assert.equal(up.blobBytesServed, 0);
    assert.equal(storage.blobBytesServed, 2 * BLOB_BYTES);

    const ranged = await fetch(url, { headers: { authorization, range: "bytes=10-19" } });
    assert.equal(ranged.status, 206);
    assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), bytes.subarray(10, 20));
  });

  it("close() is idempotent and refuses new connections", async () => {
    const up = await FakeUpstream.start();
    await Promise.all([up.close(), up.close()]);
    await assert.rejects(fetch(`${up.url}/v2/`));
  });
});
