import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { digestOf } from "../oci/index.js";
import { DiskBlobStore } from "../store/disk-blob-store.js";
import { MirrorFixture } from "./testing/mirror-fixture.js";

const run = promisify(execFile);
const FS_BYTES = 4 * 1024 * 1024;
const isRoot = process.getuid?.() === 0;

describe("mirror on a full disk", { skip: isRoot ? false : "needs root to mount a small tmpfs" }, () => {
  let dir = "";
  let mounted = false;
  let f: MirrorFixture | undefined;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "shoal-mirror-full-"));
    await run("mount", ["-t", "tmpfs", "-o", `size=${FS_BYTES}`, "tmpfs", dir]);
    mounted = true;
    f = await MirrorFixture.start({ store: await DiskBlobStore.open({ dir, verifyStartDelayMs: 3_600_000 }) });
  });

  after(async () => {
    try {
      await f?.close();
      if (mounted) await run("umount", [dir]).catch(() => run("umount", ["-l", dir]));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a blob larger than the free space: the client gets an error, nothing becomes visible, other blobs are still served", async () => {
    assert.ok(f);
    const small = await f.upstream.addBlob({ size: 512 * 1024, seed: "fits" });
    assert.equal(digestOf(Buffer.from(await (await fetch(f.blobUrl("app", small.digest))).arrayBuffer())), small.digest);
    const big = await f.upstream.addBlob({ size: 8 * 1024 * 1024, seed: "does-not-fit" });
    const res = await fetch(f.blobUrl("app", big.digest));
    if (res.ok) await assert.rejects(res.arrayBuffer(), "the body breaks off instead of completing");
    else assert.ok(res.status >= 500, `status ${res.status}`);
    assert.equal(await f.store.stat(big.digest), undefined, "no partial blob becomes visible");
    const again = await fetch(f.blobUrl("app", small.digest));
    assert.equal(digestOf(Buffer.from(await again.arrayBuffer())), small.digest);
  });
});
