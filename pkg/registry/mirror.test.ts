import assert from "node:assert/strict";
import { once } from "node:events";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { type Digest, MEDIA_TYPE_OCI_MANIFEST, digestOf, parseDigest } from "../oci/index.js";
import type { BlobStore, PartialBlob } from "../store/index.js";
import type { TagRecord } from "../tracker/tracker.js";
import type { BlobFetcher } from "./blob-fetcher.js";
import type { ManifestPeers } from "./manifest-peers.js";
import type { ClusterTags } from "./manifests.js";
import { SWARM_PROGRESS_START_TIMEOUTS } from "./mirror.js";
import { MAX_RESUMES } from "./origin-fetcher.js";
import { MirrorFixture } from "./testing/mirror-fixture.js";

const NAME = "team/app";
const MiB_BYTES = 1024 * 1024;

/**
 * A partial of `data` (1 MiB pieces) that a source fills later, as a fetcher's flight would: the pieces in
 * `order`, the first `firstDelayMs` after the call and each next one `gapMs` after the one before, then
 * the commit. Failures end the filling silently (the test's assertions say what came).
 */
async function partialFilledLater(
  store: BlobStore,
  digest: Digest,
  data: Buffer,
  { order, firstDelayMs = 0, gapMs = 0 }: { order: readonly number[]; firstDelayMs?: number; gapMs?: number },
): Promise<PartialBlob> {
  const partial = await store.openPartial(digest, data.length, { pieceSize: MiB_BYTES });
  void (async () => {
    for (const [i, index] of order.entries()) {
      const delayMs = i === 0 ? firstDelayMs : gapMs;
      if (delayMs > 0) await sleep(delayMs);
      await partial.writePiece(index, data.subarray(index * MiB_BYTES, (index + 1) * MiB_BYTES));
    }
    await partial.commit();
  })().catch(() => undefined);
  return partial;
}

/**
 * GETs blob `digest` through the mirror and checks the mirror served it (`data`) itself rather than send the
 * runtime direct: status 200 (`why` says what kept it from giving up), no `start_timeout` fallback.
 */
async function assertServedFromSource(f: MirrorFixture, digest: Digest, data: Buffer, why: string): Promise<void> {
  const res = await fetch(f.blobUrl(NAME, digest));
  assert.equal(res.status, 200, why);
  assert.deepEqual(await body(res), data);
  assert.equal(await f.metric("shoal_fallback_responses_total", { reason: "start_timeout" }), 0);
}

async function body(res: Response): Promise<Buffer> {
  return Buffer.from(await res.arrayBuffer());
}

async function ociError(res: Response): Promise<string | undefined> {
  const json = (await res.json()) as { errors?: { code?: string }[] };
  return json.errors?.[0]?.code;
}

describe("mirror: blobs", () => {
  let f: MirrorFixture;
  before(async () => {
    f = await MirrorFixture.start();
  });
  after(async () => {
    await f.close();
  });

  it("answers /v2/ like a registry", async () => {
    const res = await fetch(`${f.url}/v2/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("docker-distribution-api-version"), "registry/2.0");
    assert.deepEqual(await res.json(), {});
  });

  it("pulls a blob through, with the upstream's headers, then serves it locally at zero origin cost", async () => {
    const blob = await f.upstream.addBlob({ size: 3 * 1024 * 1024 + 17, seed: "pull-through" });
    const cold = await fetch(f.blobUrl(NAME, blob.digest));
    assert.equal(cold.status, 200);
    assert.equal(cold.headers.get("content-length"), String(blob.size));
    assert.equal(cold.headers.get("docker-content-digest"), blob.digest);
    assert.equal(cold.headers.get("accept-ranges"), "bytes");
    assert.equal(digestOf(await body(cold)), blob.digest);
    const originBefore = f.upstream.blobBytesServed;
    assert.equal(originBefore, blob.size);

    const warm = await fetch(f.blobUrl(NAME, blob.digest));
    assert.equal(digestOf(await body(warm)), blob.digest);
    assert.equal(f.upstream.blobBytesServed, originBefore, "a warm pull costs zero origin bytes");
    assert.equal(await f.metric("shoal_blob_bytes_served_total", { source: "local" }), blob.size);
    assert.ok((await f.metric("shoal_blob_bytes_served_total", { source: "origin" })) >= blob.size);
    assert.equal(await f.metric("shoal_origin_bytes_fetched_total"), blob.size);
  });

  it("shares one upstream fetch between concurrent requests for a digest", async () => {
    const blob = await f.upstream.addBlob({ size: 4 * 1024 * 1024, seed: "single-flight" });
    f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "body", bytesPerSecond: 16 * 1024 * 1024 });
    const before = f.upstreamRequests("blob");
    const bodies = await Promise.all(Array.from({ length: 6 }, () => fetch(f.blobUrl(NAME, blob.digest)).then(body)));
    for (const b of bodies) assert.equal(digestOf(b), blob.digest);
    assert.equal(f.upstreamRequests("blob") - before, 1);
    f.upstream.clearScripts();
  });

  it("serves byte ranges cold and warm, and 416 with an OCI body for unsatisfiable ones", async () => {
    const blob = await f.upstream.addBlob({ size: 2 * 1024 * 1024, seed: "ranges" });
    const partial = await fetch(f.blobUrl(NAME, blob.digest), { headers: { range: "bytes=1000-1999" } });
    assert.equal(partial.status, 206);
    assert.equal(partial.headers.get("content-range"), `bytes 1000-1999/${blob.size}`);
    const full = await body(partial);
    assert.equal(full.length, 1000);
    const whole = await body(await fetch(f.blobUrl(NAME, blob.digest)));
    assert.deepEqual(full, whole.subarray(1000, 2000));
    const suffix = await fetch(f.blobUrl(NAME, blob.digest), { headers: { range: "bytes=-10" } });
    assert.deepEqual(await body(suffix), whole.subarray(whole.length - 10));
    const open = await fetch(f.blobUrl(NAME, blob.digest), { headers: { range: `bytes=${blob.size - 5}-` } });
    assert.deepEqual(await body(open), whole.subarray(whole.length - 5));
    const bad = await fetch(f.blobUrl(NAME, blob.digest), { headers: { range: `bytes=${blob.size}-` } });
    assert.equal(bad.status, 416);
    assert.equal(bad.headers.get("content-range"), `bytes */${blob.size}`);
    assert.equal(await ociError(bad), "RANGE_INVALID");
    const malformed = await fetch(f.blobUrl(NAME, blob.digest), { headers: { range: "bytes=a-b" } });
    assert.equal(malformed.status, 416);
  });

  it("answers HEAD for a missing blob from the upstream without fetching it", async () => {
    const blob = await f.upstream.addBlob({ size: 1024 * 1024, seed: "head" });
    const before = f.upstream.blobBytesServed;
    const res = await fetch(f.blobUrl(NAME, blob.digest), { method: "HEAD" });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-length"), String(blob.size));
    assert.equal(f.upstream.blobBytesServed, before);
    assert.equal(await f.store.stat(blob.digest), undefined);
  });

  it("returns 404 BLOB_UNKNOWN for a blob the upstream lacks", async () => {
    const res = await fetch(f.blobUrl(NAME, digestOf("nowhere")));
    assert.equal(res.status, 404);
    assert.equal(await ociError(res), "BLOB_UNKNOWN");
  });

  it("resumes a truncated upstream transfer with Range and still serves the exact bytes", async () => {
    const blob = await f.upstream.addBlob({ size: 3 * 1024 * 1024, seed: "truncated" });
    f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "body", truncateAfterBytes: 1024 * 1024 + 5 }, { times: 1 });
    const res = await fetch(f.blobUrl(NAME, blob.digest));
    assert.equal(digestOf(await body(res)), blob.digest);
    const ranged = f.upstream.requests.filter((r) => r.kind === "blob" && r.reference === blob.digest && r.headers.range !== undefined);
    assert.equal(ranged.length, 1);
    assert.match(String(ranged[0]?.headers.range), /^bytes=\d+-$/);
    assert.ok((await f.metric("shoal_upstream_resumes_total")) >= 1);
  });

  it("rides out a network blip longer than the resume count: connections reset at the start and mid-transfer", async () => {
    const blob = await f.upstream.addBlob({ size: 3 * 1024 * 1024, seed: "blip" });
    // More failures in a row than MAX_RESUMES: before, the pull failed with 502 after the third.
    f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "reset" }, { times: MAX_RESUMES + 2 });
    const first = await fetch(f.blobUrl(NAME, blob.digest));
    assert.equal(first.status, 200);
    assert.equal(digestOf(await body(first)), blob.digest);
    const other = await f.upstream.addBlob({ size: 3 * 1024 * 1024, seed: "blip-mid" });
    f.upstream.script({ kind: "blob", reference: other.digest }, { kind: "body", truncateAfterBytes: 1024 * 1024 + 5 }, { times: 1 });
    f.upstream.script({ kind: "blob", reference: other.digest }, { kind: "reset" }, { times: MAX_RESUMES + 2 });
    const second = await fetch(f.blobUrl(NAME, other.digest));
    assert.equal(digestOf(await body(second)), other.digest);
  });

  it("never completes a response whose bytes do not match the digest, and stores nothing", async () => {
    const blob = await f.upstream.addBlob({ size: 1024 * 1024 + 3, seed: "corrupt" });
    f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "body", corrupt: true }, { times: 1 });
    const res = await fetch(f.blobUrl(NAME, blob.digest));
    assert.equal(res.status, 200, "headers go out before the digest can be known");
    await assert.rejects(body(res), "the body must break off instead of completing with wrong bytes");
    assert.equal(await f.store.stat(blob.digest), undefined);
    assert.equal(await f.metric("shoal_digest_mismatches_total", { source: "origin" }), 1);
    const retry = await fetch(f.blobUrl(NAME, blob.digest));
    assert.equal(digestOf(await body(retry)), blob.digest);
  });

  it("passes 429 through as TOOMANYREQUESTS and 5xx as 502 UNAVAILABLE", async () => {
    const blob = await f.upstream.addBlob({ size: 1000, seed: "statuses" });
    f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "status", status: 429, retryAfterSeconds: 1 }, { times: 1 });
    const limited = await fetch(f.blobUrl(NAME, blob.digest));
    assert.equal(limited.status, 429);
    assert.equal(await ociError(limited), "TOOMANYREQUESTS");
    f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "status", status: 503 }, { times: 1 });
    const unavailable = await fetch(f.blobUrl(NAME, blob.digest));
    assert.equal(unavailable.status, 502);
    assert.equal(await ociError(unavailable), "UNAVAILABLE");
  });

  it("refuses a blob sent without Content-Length with a clear 502", async () => {
    const blob = await f.upstream.addBlob({ size: 5000, seed: "chunked" });
    f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "body", chunked: true }, { times: 1 });
    const res = await fetch(f.blobUrl(NAME, blob.digest));
    assert.equal(res.status, 502);
    assert.match(JSON.stringify(await res.json()), /Content-Length/);
  });

  it("keeps the shared fetch going for other readers when one client disconnects mid-blob", async () => {
    const blob = await f.upstream.addBlob({ size: 4 * 1024 * 1024, seed: "disconnect" });
    f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "body", bytesPerSecond: 8 * 1024 * 1024 });
    const staying = fetch(f.blobUrl(NAME, blob.digest)).then(body);
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(f.blobUrl(NAME, blob.digest), (res) => {
        let got = 0;
        res.on("data", (chunk: Buffer) => {
          got += chunk.length;
          if (got > 256 * 1024) {
            req.destroy();
            resolve();
          }
        });
        res.on("error", () => undefined);
      });
      req.on("error", () => undefined);
      req.on("close", () => {
        resolve();
      });
      setTimeout(() => {
        reject(new Error("no data"));
      }, 5000).unref();
      req.end();
    });
    assert.equal(digestOf(await staying), blob.digest);
    assert.equal(f.upstreamRequests("blob") > 0, true);
    f.upstream.clearScripts();
  });

  it("stops the upstream fetch when the last reader leaves, and resumes from what it kept", async () => {
    const blob = await f.upstream.addBlob({ size: 6 * 1024 * 1024, seed: "last-reader" });
    f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "body", bytesPerSecond: 4 * 1024 * 1024 }, { times: 1 });
    const controller = new AbortController();
    const res = await fetch(f.blobUrl(NAME, blob.digest), { signal: controller.signal });
    const reader = res.body!.getReader() as ReadableStreamDefaultReader<Uint8Array>;
    let got = 0;
    while (got < 2 * 1024 * 1024) {
      const { value } = await reader.read();
      got += value?.length ?? 0;
    }
    controller.abort();
    await sleep(300);
    const servedAtAbort = f.upstream.blobBytesServed;
    await sleep(300);
    assert.ok(f.upstream.blobBytesServed - servedAtAbort < 512 * 1024, "the upstream transfer stopped with no reader left");
    const resumed = await fetch(f.blobUrl(NAME, blob.digest));
    assert.equal(digestOf(await body(resumed)), blob.digest);
    const last = f.upstream.requests.filter((r) => r.kind === "blob" && r.reference === blob.digest).at(-1);
    assert.match(String(last?.headers.range), /^bytes=[1-9]\d*-$/, "the second fetch resumed where the first stopped");
  });
});

describe("mirror: manifests and tags", () => {
  let f: MirrorFixture;
  before(async () => {
    f = await MirrorFixture.start();
  });
  after(async () => {
    await f.close();
  });

  it("resolves tags upstream on every pull, with one HEAD when the digest is already here", async () => {
    const manifest = f.upstream.addManifest(
      NAME,
      "v1",
      { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, layers: [] },
      MEDIA_TYPE_OCI_MANIFEST,
    );
    const first = await fetch(f.manifestUrl(NAME, "v1"), { headers: { accept: MEDIA_TYPE_OCI_MANIFEST } });
    assert.equal(first.status, 200);
    assert.equal(first.headers.get("content-type"), MEDIA_TYPE_OCI_MANIFEST);
    assert.equal(first.headers.get("docker-content-digest"), manifest.digest);
    assert.equal(digestOf(await body(first)), manifest.digest);
    const getsBefore = f.upstreamRequests("manifest", "GET");
    const headsBefore = f.upstreamRequests("manifest", "HEAD");
    const second = await fetch(f.manifestUrl(NAME, "v1"));
    assert.equal(digestOf(await body(second)), manifest.digest);
    assert.equal(f.upstreamRequests("manifest", "HEAD") - headsBefore, 1);
    assert.equal(f.upstreamRequests("manifest", "GET"), getsBefore, "no GET when the digest is already stored");
    const byDigest = await fetch(f.manifestUrl(NAME, manifest.digest));
    assert.equal(byDigest.headers.get("content-type"), MEDIA_TYPE_OCI_MANIFEST);
    assert.equal(f.upstreamRequests("manifest", "GET"), getsBefore);
  });

  it("follows a moved tag", async () => {
    f.upstream.addManifest(
      NAME,
      "moving",
      { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, layers: [], n: 1 },
      MEDIA_TYPE_OCI_MANIFEST,
    );
    await body(await fetch(f.manifestUrl(NAME, "moving")));
    const next = f.upstream.addManifest(
      NAME,
      "moving",
      { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, layers: [], n: 2 },
      MEDIA_TYPE_OCI_MANIFEST,
    );
    const res = await fetch(f.manifestUrl(NAME, "moving"));
    assert.equal(res.headers.get("docker-content-digest"), next.digest);
  });

  it("serves the last digest seen for a tag while the upstream is down, and counts it", async () => {
    const manifest = f.upstream.addManifest(
      NAME,
      "stable",
      { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, layers: [], s: 1 },
      MEDIA_TYPE_OCI_MANIFEST,
    );
    await body(await fetch(f.manifestUrl(NAME, "stable")));
    f.upstream.script({ kind: "manifest" }, { kind: "status", status: 503 });
    const res = await fetch(f.manifestUrl(NAME, "stable"));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("docker-content-digest"), manifest.digest);
    assert.equal(await f.metric("shoal_tag_fallbacks_total"), 1);
    const unknown = await fetch(f.manifestUrl(NAME, "never-seen"));
    assert.equal(unknown.status, 502);
    f.upstream.clearScripts();
  });

  it("answers HEAD by tag from upstream headers without downloading the manifest", async () => {
    const manifest = f.upstream.addManifest(
      NAME,
      "head-only",
      { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, layers: [], h: 1 },
      MEDIA_TYPE_OCI_MANIFEST,
    );
    const getsBefore = f.upstreamRequests("manifest", "GET");
    const res = await fetch(f.manifestUrl(NAME, "head-only"), { method: "HEAD" });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("docker-content-digest"), manifest.digest);
    assert.equal(res.headers.get("content-length"), String(manifest.size));
    assert.equal(f.upstreamRequests("manifest", "GET"), getsBefore);
  });

  it("rejects a manifest whose body does not match the digest asked for", async () => {
    const manifest = f.upstream.addManifest(NAME, undefined, { schemaVersion: 2, layers: [], bad: true }, MEDIA_TYPE_OCI_MANIFEST);
    f.upstream.script({ kind: "manifest", reference: manifest.digest }, { kind: "body", corrupt: true }, { times: 1 });
    const res = await fetch(f.manifestUrl(NAME, manifest.digest));
    assert.equal(res.status, 502);
    assert.equal(await ociError(res), "DIGEST_INVALID");
    assert.equal(await f.store.stat(manifest.digest), undefined);
  });

  it("returns MANIFEST_UNKNOWN for a tag the upstream lacks", async () => {
    const res = await fetch(f.manifestUrl(NAME, "absent"));
    assert.equal(res.status, 404);
    assert.equal(await ociError(res), "MANIFEST_UNKNOWN");
  });
});

describe("mirror: upstream auth, redirects and credentials", () => {
  it("runs the Bearer token flow once per scope and reuses the token", async () => {
    const f = await MirrorFixture.start();
    try {
      f.upstream.requireBearer({ service: "fake" });
      const blobs = await Promise.all([1, 2, 3].map((i) => f.upstream.addBlob({ size: 10_000 + i, seed: `bearer-${i}` })));
      for (const blob of blobs) assert.equal(digestOf(await body(await fetch(f.blobUrl(NAME, blob.digest)))), blob.digest);
      assert.equal(f.upstream.tokenRequests, 1);
    } finally {
      await f.close();
    }
  });

  it("sends configured Basic credentials to the token endpoint, and sends the runtime direct without them", async () => {
    const withCredentials = await MirrorFixture.start({ credentials: { username: "u", password: "p" } });
    const without = await MirrorFixture.start();
    try {
      for (const f of [withCredentials, without]) f.upstream.requireBearer({ service: "fake", username: "u", password: "p" });
      const blob = await withCredentials.upstream.addBlob({ size: 100, seed: "basic-token" });
      assert.equal(digestOf(await body(await fetch(withCredentials.blobUrl(NAME, blob.digest)))), blob.digest);
      const other = await without.upstream.addBlob({ size: 100, seed: "basic-token" });
      const denied = await fetch(without.blobUrl(NAME, other.digest));
      assert.equal(denied.status, 404, "without credentials the runtime is sent to the upstream itself");
      assert.equal(await ociError(denied), "UNAUTHORIZED");
    } finally {
      await withCredentials.close();
      await without.close();
    }
  });

  it("follows a redirect to blob storage without forwarding Authorization there", async () => {
    const f = await MirrorFixture.start();
    const { FakeUpstream } = await import("./testing/fake-upstream.js");
    const storage = await FakeUpstream.start();
    try {
      f.upstream.requireBearer({ service: "fake" });
      const blob = await f.upstream.addBlob({ size: 512 * 1024, seed: "redirect" });
      f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "redirect", to: storage, status: 307 });
      const res = await fetch(f.blobUrl(NAME, blob.digest), { headers: { authorization: "Bearer client-secret" } });
      assert.equal(digestOf(await body(res)), blob.digest);
      const atStorage = storage.requests.filter((r) => r.kind === "storage");
      assert.equal(atStorage.length, 1);
      assert.equal(atStorage[0]?.headers.authorization, undefined, "no credentials at the redirect target");
      const atRegistry = f.upstream.requests.filter((r) => r.kind === "blob");
      assert.ok(
        atRegistry.every((r) => r.headers.authorization !== "Bearer client-secret"),
        "the client's credentials are never forwarded",
      );
    } finally {
      await storage.close();
      await f.close();
    }
  });
});

describe("mirror: never hang the runtime", () => {
  it("answers 404 within the start deadline when the upstream hangs", async () => {
    const f = await MirrorFixture.start({ responseStartTimeoutMs: 300 });
    try {
      const blob = await f.upstream.addBlob({ size: 1000, seed: "hang" });
      f.upstream.script({ kind: "blob" }, { kind: "hang" });
      const started = performance.now();
      const res = await fetch(f.blobUrl(NAME, blob.digest));
      const elapsedMs = performance.now() - started;
      assert.equal(res.status, 404);
      assert.equal(await ociError(res), "BLOB_UNKNOWN");
      assert.ok(elapsedMs < 2000, `took ${elapsedMs} ms`);
      assert.equal(await f.metric("shoal_fallback_responses_total", { reason: "start_timeout" }), 1);
      // The operator sees which request went to the registry, and why, without debug logs.
      const sent = f.mirrorLogs.filter((line) => line.msg === "runtime sent to the registry");
      const [line] = sent;
      assert.ok(line !== undefined && sent.length === 1, `one fallback logged, not ${sent.length}`);
      assert.equal(line.reason, "start_timeout");
      assert.ok(String(line.url).startsWith(`/v2/${NAME}/blobs/${blob.digest}`), String(line.url));
      f.upstream.script({ kind: "manifest" }, { kind: "hang" });
      const manifest = await fetch(f.manifestUrl(NAME, "v1"));
      assert.equal(manifest.status, 404);
    } finally {
      await f.close();
    }
  });

  it("sends no status line before the first byte: a body that never comes is a 404 within the deadline", async () => {
    const f = await MirrorFixture.start({ responseStartTimeoutMs: 300, bodyStallTimeoutMs: 10_000 });
    try {
      const blob = await f.upstream.addBlob({ size: 3 * 1024 * 1024, seed: "no-first-byte" });
      f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "body", stallAfterBytes: 0 });
      const started = performance.now();
      const res = await fetch(f.blobUrl(NAME, blob.digest));
      assert.equal(res.status, 404);
      assert.equal(await ociError(res), "BLOB_UNKNOWN");
      assert.ok(performance.now() - started < 2_000, `took ${performance.now() - started} ms`);
    } finally {
      await f.close();
    }
  });

  it("waits for the first piece past the start deadline while the blob keeps gaining other pieces", async () => {
    // A source that brings pieces out of order, the first one last, one every 150 ms (a swarm on a busy
    // machine): the start deadline (300 ms) counts time without progress, not time since the request.
    const data = Buffer.alloc(4 * MiB_BYTES, 7);
    const digest = digestOf(data);
    let acquired = 0;
    const outOfOrder = (store: BlobStore): BlobFetcher => ({
      acquire: async (request) => {
        acquired++;
        const partial = await partialFilledLater(store, request.digest, data, { order: [1, 2, 3, 0], firstDelayMs: 150, gapMs: 150 });
        return { partial, source: "peer", contentType: undefined, release: () => undefined };
      },
      close: () => Promise.resolve(),
    });
    const f = await MirrorFixture.start({ responseStartTimeoutMs: 300, fetcher: outOfOrder });
    try {
      await assertServedFromSource(f, digest, data, "not sent direct while the blob was gaining pieces");
      assert.equal(acquired, 1);
    } finally {
      await f.close();
    }
  });

  it("waits past the start deadline while the blob's swarm moves, though no piece has come here yet", async () => {
    // A busy node gets no piece of a blob for longer than the start deadline while its holders keep gaining
    // pieces (BlobLease.progressAtMs): sent direct, the runtime would cost the origin another copy.
    const data = Buffer.alloc(2 * MiB_BYTES, 3);
    const digest = digestOf(data);
    let swarmAtMs = performance.now();
    const ticker = setInterval(() => {
      swarmAtMs = performance.now();
    }, 50);
    const lateButComing = (store: BlobStore): BlobFetcher => ({
      acquire: async (request) => {
        const partial = await partialFilledLater(store, request.digest, data, { order: [0, 1], firstDelayMs: 1_200 });
        return { partial, source: "peer", contentType: undefined, progressAtMs: () => swarmAtMs, release: () => undefined };
      },
      close: () => Promise.resolve(),
    });
    const f = await MirrorFixture.start({ responseStartTimeoutMs: 500, fetcher: lateButComing });
    try {
      await assertServedFromSource(f, digest, data, "not sent direct while the swarm was bringing the blob");
    } finally {
      clearInterval(ticker);
      await f.close();
    }
  });

  it("believes the swarm's progress for a bounded time only: a blob that never gets here is a 404 after 3 start deadlines", async () => {
    // Holders that announce growth and never serve this node (stale, or lying) cannot hold the runtime back
    // for longer than SWARM_PROGRESS_START_TIMEOUTS deadlines.
    const data = Buffer.alloc(MiB_BYTES, 5);
    const digest = digestOf(data);
    const neverHere = (store: BlobStore): BlobFetcher => ({
      acquire: async (request) => {
        const partial = await store.openPartial(request.digest, data.length, { pieceSize: MiB_BYTES });
        return { partial, source: "peer", contentType: undefined, progressAtMs: () => performance.now(), release: () => undefined };
      },
      close: () => Promise.resolve(),
    });
    const f = await MirrorFixture.start({ responseStartTimeoutMs: 400, fetcher: neverHere });
    try {
      const started = performance.now();
      const res = await fetch(f.blobUrl(NAME, digest));
      const tookMs = performance.now() - started;
      assert.equal(res.status, 404);
      assert.equal(await ociError(res), "BLOB_UNKNOWN");
      assert.ok(
        tookMs >= (SWARM_PROGRESS_START_TIMEOUTS - 1) * 400,
        `gave up after ${Math.round(tookMs)} ms, before the swarm's credit ran out`,
      );
      assert.ok(tookMs < 10_000, `took ${Math.round(tookMs)} ms`);
      assert.equal(await f.metric("shoal_fallback_responses_total", { reason: "start_timeout" }), 1);
    } finally {
      await f.close();
    }
  });

  it("moves the start deadline while the fetcher says a source is under way, and serves the blob that comes late", async () => {
    // A fetcher still choosing a source for 2.5 start deadlines (another agent holds the origin grant, then the
    // grant moves) that says so every 100 ms (BlobRequest.onSourceProgress): sent direct at the first deadline,
    // the runtime would cost the origin another copy.
    const data = Buffer.alloc(2 * MiB_BYTES, 9);
    const digest = digestOf(data);
    let told = 0;
    const choosing = (store: BlobStore): BlobFetcher => ({
      acquire: async (request, signal) => {
        for (let waited = 0; waited < 1_000; waited += 100) {
          request.onSourceProgress?.();
          told++;
          await new Promise((resolve) => setTimeout(resolve, 100));
          signal.throwIfAborted();
        }
        const partial = await partialFilledLater(store, request.digest, data, { order: [0, 1] });
        return { partial, source: "peer", contentType: undefined, release: () => undefined };
      },
      close: () => Promise.resolve(),
    });
    const f = await MirrorFixture.start({ responseStartTimeoutMs: 400, fetcher: choosing });
    try {
      await assertServedFromSource(f, digest, data, "not sent direct while a source was under way");
      assert.ok(told >= 10, `the fetcher told of progress ${told} times`);
    } finally {
      await f.close();
    }
  });

  it("believes a source under way for a bounded time only: a fetcher that never chooses is a 404 after 3 start deadlines", async () => {
    const digest = digestOf(Buffer.from("never chosen"));
    const neverChooses: BlobFetcher = {
      acquire: async (request, signal) => {
        for (;;) {
          request.onSourceProgress?.();
          await new Promise((resolve) => setTimeout(resolve, 50));
          signal.throwIfAborted();
        }
      },
      close: () => Promise.resolve(),
    };
    const f = await MirrorFixture.start({ responseStartTimeoutMs: 400, fetcher: () => neverChooses });
    try {
      const started = performance.now();
      const res = await fetch(f.blobUrl(NAME, digest));
      const tookMs = performance.now() - started;
      assert.equal(res.status, 404);
      assert.equal(await ociError(res), "BLOB_UNKNOWN");
      assert.ok(tookMs >= SWARM_PROGRESS_START_TIMEOUTS * 400 - 50, `gave up after ${Math.round(tookMs)} ms, before the bound`);
      assert.ok(tookMs < 10_000, `took ${Math.round(tookMs)} ms`);
      assert.equal(await f.metric("shoal_fallback_responses_total", { reason: "start_timeout" }), 1);
      const [line] = f.mirrorLogs.filter((l) => l.msg === "runtime sent to the registry");
      assert.match(String(line?.error), /last sign that one was under way/);
    } finally {
      await f.close();
    }
  });

  it("cuts a started response whose source stops delivering, instead of hanging the runtime", async () => {
    const f = await MirrorFixture.start({ responseStallTimeoutMs: 500, bodyStallTimeoutMs: 30_000 });
    try {
      const blob = await f.upstream.addBlob({ size: 4 * 1024 * 1024, seed: "stops-midway" });
      f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "body", stallAfterBytes: 2 * 1024 * 1024 + 17 });
      const started = performance.now();
      const res = await fetch(f.blobUrl(NAME, blob.digest));
      assert.equal(res.status, 200);
      await assert.rejects(body(res), "the body breaks off");
      assert.ok(performance.now() - started < 10_000, `took ${performance.now() - started} ms`);
    } finally {
      await f.close();
    }
  });

  it("answers a range of a blob it is still fetching only once the blob matched its digest", async () => {
    const f = await MirrorFixture.start({ responseStartTimeoutMs: 3_000 });
    try {
      const bad = await f.upstream.addBlob({ size: 1024 * 1024 + 9, seed: "range-of-a-lie" });
      f.upstream.script({ kind: "blob", reference: bad.digest }, { kind: "body", corrupt: true }, { times: 1 });
      const refused = await fetch(f.blobUrl(NAME, bad.digest), { headers: { range: "bytes=0-99" } });
      assert.equal(refused.status, 404, "the first 100 bytes were never vouched for: no 206 for them");
      assert.equal(await ociError(refused), "BLOB_UNKNOWN");
      const good = await f.upstream.addBlob({ size: 1024 * 1024 + 9, seed: "range-of-the-truth" });
      const ranged = await fetch(f.blobUrl(NAME, good.digest), { headers: { range: "bytes=0-99" } });
      assert.equal(ranged.status, 206);
      const whole = await body(await fetch(f.blobUrl(NAME, good.digest)));
      assert.deepEqual(await body(ranged), whole.subarray(0, 100));
    } finally {
      await f.close();
    }
  });

  it("answers a client too slow to send its headers with 408 and an OCI body, not 400", async () => {
    const f = await MirrorFixture.start({ headersTimeoutMs: 300 });
    try {
      const url = new URL(f.blobUrl(NAME, digestOf("slow")));
      const socket = connect(Number(url.port), url.hostname);
      await once(socket, "connect");
      socket.write(`GET ${url.pathname} HTTP/1.1\r\nHost: x\r\n`);
      const chunks: Buffer[] = [];
      socket.on("data", (chunk: Buffer) => chunks.push(chunk));
      await once(socket, "close");
      const answer = Buffer.concat(chunks).toString();
      assert.match(answer, /^HTTP\/1\.1 408 /);
      assert.match(answer, /"code":"UNSUPPORTED"/);
    } finally {
      await f.close();
    }
  });

  it("breaks off a stalled transfer and resumes it", async () => {
    const f = await MirrorFixture.start({ bodyStallTimeoutMs: 300 });
    try {
      const blob = await f.upstream.addBlob({ size: 2 * 1024 * 1024, seed: "stall" });
      f.upstream.script({ kind: "blob", reference: blob.digest }, { kind: "body", stallAfterBytes: 600 * 1024 }, { times: 1 });
      const res = await fetch(f.blobUrl(NAME, blob.digest));
      assert.equal(digestOf(await body(res)), blob.digest);
      assert.equal(await f.metric("shoal_upstream_errors_total", { reason: "timeout" }), 1);
    } finally {
      await f.close();
    }
  });
});

describe("mirror: bad input", () => {
  let f: MirrorFixture;
  before(async () => {
    f = await MirrorFixture.start({ defaultRegistry: null });
  });
  after(async () => {
    await f.close();
  });
  const digest = digestOf("x");

  const cases: [string, string, number, string][] = [
    ["path traversal in the name", "/v2/../../etc/passwd/blobs/" + digest, 404, "UNSUPPORTED"],
    ["encoded traversal", "/v2/a/%2e%2e/blobs/" + digest, 404, "UNSUPPORTED"],
    ["encoded slash in the digest", "/v2/a/blobs/sha256:..%2F..%2Fetc", 404, "UNSUPPORTED"],
    ["dots in the digest", "/v2/a/blobs/sha256:....etc?ns=x.io", 400, "DIGEST_INVALID"],
    ["unsupported algorithm", "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e?ns=x.io", 400, "DIGEST_INVALID"],
    ["upper-case name", "/v2/A/manifests/v1?ns=x.io", 400, "NAME_INVALID"],
    ["ns that is a URL", "/v2/a/manifests/v1?ns=http://evil.example", 400, "NAME_INVALID"],
    ["ns with credentials", "/v2/a/manifests/v1?ns=user:pw@evil.example", 400, "NAME_INVALID"],
    ["unknown registry", "/v2/a/manifests/v1?ns=unknown.example", 404, "NAME_UNKNOWN"],
    ["no registry and no default", "/v2/a/manifests/v1", 404, "NAME_UNKNOWN"],
    ["uploads", "/v2/a/blobs/uploads/", 404, "UNSUPPORTED"],
  ];
  for (const [what, path, status, code] of cases) {
    it(`${what} → ${status} ${code}`, async () => {
      const res = await fetch(`${f.url}${path}`);
      assert.equal(res.status, status);
      assert.equal(res.headers.get("content-type"), "application/json");
      assert.equal(await ociError(res), code);
    });
  }

  it("refuses writes with 405 UNSUPPORTED", async () => {
    const res = await fetch(`${f.url}/v2/a/blobs/uploads/?ns=${f.upstream.host}`, { method: "POST", body: "x" });
    assert.equal(res.status, 405);
    assert.equal(await ociError(res), "UNSUPPORTED");
  });

  it("answers oversized headers with 431 and an OCI body, and keeps serving", async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect(f.server.address.port, "127.0.0.1", () => {
        socket.write(`GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(64 * 1024)}\r\n\r\n`);
      });
      let text = "";
      socket.on("data", (chunk: Buffer) => {
        text += chunk.toString();
      });
      socket.on("close", () => {
        resolve(text);
      });
      socket.on("error", reject);
    });
    assert.match(reply, /^HTTP\/1\.1 431/);
    assert.match(reply, /"code":"UNSUPPORTED"/);
    assert.equal((await fetch(`${f.url}/v2/`)).status, 200);
  });

  it("keeps working after all of the above", async () => {
    const blob = await f.upstream.addBlob({ size: 1234, seed: "after-bad-input" });
    const res = await fetch(`${f.url}/v2/${NAME}/blobs/${blob.digest}?ns=${f.upstream.host}`);
    assert.equal(digestOf(await body(res)), parseDigest(blob.digest));
  });
});

describe("mirror: manifests and tags from other agents", () => {
  /** What other agents hold; `lie` makes them answer with other bytes than the digest names. */
  const held = new Map<Digest, Buffer>();
  let lie = false;
  const asked: Digest[] = [];
  const peers: ManifestPeers = {
    fetch(digest: Digest) {
      asked.push(digest);
      const bytes = held.get(digest);
      return Promise.resolve(bytes === undefined ? undefined : lie ? Buffer.from(`${bytes.toString()} `) : bytes);
    },
  };
  /** The tracker's tag records, as the cluster shares them. */
  const published: TagRecord[] = [];
  const clusterTags: ClusterTags = {
    publishTag(record) {
      published.push(record);
    },
    resolveTag(key) {
      const matching = published.filter((r) => r.registry === key.registry && r.repository === key.repository && r.tag === key.tag);
      return Promise.resolve(matching.sort((a, b) => b.seenAtMs - a.seenAtMs)[0]);
    },
  };
  let f: MirrorFixture;
  before(async () => {
    f = await MirrorFixture.start({ manifestPeers: peers, clusterTags });
  });
  after(async () => {
    await f.close();
  });

  it("takes a manifest by digest from a peer without asking the origin, then serves it locally", async () => {
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, layers: [], p: 1 }));
    const manifest = { ...f.upstream.addManifest(NAME, "peer-held", bytes, MEDIA_TYPE_OCI_MANIFEST), body: bytes };
    held.set(manifest.digest, bytes);
    const gets = f.upstreamRequests("manifest", "GET");
    const res = await fetch(f.manifestUrl(NAME, manifest.digest));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), MEDIA_TYPE_OCI_MANIFEST);
    assert.equal(digestOf(await body(res)), manifest.digest);
    assert.equal(f.upstreamRequests("manifest", "GET"), gets, "the origin was not asked");
    assert.equal(await f.metric("shoal_blob_bytes_served_total", { source: "peer" }), manifest.body.length);
    const again = await fetch(f.manifestUrl(NAME, manifest.digest));
    assert.equal(digestOf(await body(again)), manifest.digest);
    assert.equal(await f.metric("shoal_blob_bytes_served_total", { source: "local" }), manifest.body.length);
    assert.equal(asked.filter((d) => d === manifest.digest).length, 1, "kept in the store after the first copy");
  });

  it("goes to the origin when no peer holds it, and when a peer's copy does not match the digest", async () => {
    const missing = f.upstream.addManifest(
      NAME,
      "nobody",
      { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, layers: [], p: 2 },
      MEDIA_TYPE_OCI_MANIFEST,
    );
    const gets = f.upstreamRequests("manifest", "GET");
    assert.equal(digestOf(await body(await fetch(f.manifestUrl(NAME, missing.digest)))), missing.digest);
    assert.equal(f.upstreamRequests("manifest", "GET"), gets + 1);
    const forgedBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, layers: [], p: 3 }));
    const forged = f.upstream.addManifest(NAME, "forged", forgedBytes, MEDIA_TYPE_OCI_MANIFEST);
    held.set(forged.digest, forgedBytes);
    lie = true;
    const res = await fetch(f.manifestUrl(NAME, forged.digest));
    lie = false;
    assert.equal(digestOf(await body(res)), forged.digest);
    assert.equal(f.upstreamRequests("manifest", "GET"), gets + 2);
    assert.equal(await f.metric("shoal_digest_mismatches_total", { source: "peer" }), 1);
  });
});

describe("mirror: a tag only another agent resolved, while the upstream is down", () => {
  const held = new Map<Digest, Buffer>();
  const peers: ManifestPeers = { fetch: (digest: Digest) => Promise.resolve(held.get(digest)) };
  let records: TagRecord[] = [];
  const clusterTags: ClusterTags = {
    publishTag(record) {
      records.push(record);
    },
    resolveTag: (key) => Promise.resolve(records.find((r) => r.repository === key.repository && r.tag === key.tag)),
  };
  let resolver: MirrorFixture;
  let other: MirrorFixture;
  before(async () => {
    resolver = await MirrorFixture.start({ clusterTags });
    other = await MirrorFixture.start({ manifestPeers: peers, clusterTags });
  });
  after(async () => {
    await resolver.close();
    await other.close();
  });

  it("publishes upstream resolutions and serves a tag it never resolved from the cluster's record and a peer's copy", async () => {
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, layers: [], c: 1 }));
    const manifest = resolver.upstream.addManifest(NAME, "shared", bytes, MEDIA_TYPE_OCI_MANIFEST);
    assert.equal((await fetch(resolver.manifestUrl(NAME, "shared"))).status, 200);
    assert.equal(records.length, 1);
    assert.equal(records[0]?.digest, manifest.digest);
    // The other agent's upstream is down and it never saw the tag; the record names the fixture's own
    // upstream host, so point it at this agent's upstream.
    records = records.map((r) => ({ ...r, registry: other.upstream.host }));
    held.set(manifest.digest, bytes);
    other.upstream.script({ kind: "manifest" }, { kind: "status", status: 503 });
    const res = await fetch(other.manifestUrl(NAME, "shared"));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("docker-content-digest"), manifest.digest);
    assert.match(res.headers.get("warning") ?? "", /last digest seen/);
    assert.equal(digestOf(await body(res)), manifest.digest);
    assert.equal(await other.metric("shoal_tag_fallbacks_total"), 1);
    held.clear();
    const again = await fetch(other.manifestUrl(NAME, "shared"));
    assert.equal(again.status, 200, "now stored here: no peer needed");
    const unknown = await fetch(other.manifestUrl(NAME, "nobody-resolved"));
    assert.equal(unknown.status, 502);
    other.upstream.clearScripts();
  });

  it("keeps its own resolution of a tag when the cluster reports another digest (a member cannot move it here)", async () => {
    const mine = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, layers: [], own: 1 }));
    const theirs = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, layers: [], forged: 1 }));
    const own = other.upstream.addManifest(NAME, "mine", mine, MEDIA_TYPE_OCI_MANIFEST);
    assert.equal((await fetch(other.manifestUrl(NAME, "mine"))).status, 200);
    const forged = digestOf(theirs);
    held.set(forged, theirs);
    // A newer record for the same tag, pointing at a manifest of a member's choosing.
    records = [
      {
        registry: other.upstream.host,
        repository: NAME,
        tag: "mine",
        digest: forged,
        mediaType: MEDIA_TYPE_OCI_MANIFEST,
        size: theirs.length,
        seenAtMs: Date.now() + 60_000,
      },
    ];
    other.upstream.script({ kind: "manifest" }, { kind: "status", status: 503 });
    try {
      const res = await fetch(other.manifestUrl(NAME, "mine"));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("docker-content-digest"), own.digest, "this agent's own resolution, not the newer claim");
      assert.equal(digestOf(await body(res)), own.digest);
    } finally {
      other.upstream.clearScripts();
      held.clear();
    }
  });
});
