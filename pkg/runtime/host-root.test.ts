import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { HostRoot, isRuntimeConfigError, parseNodePath } from "./index.js";

describe("node paths under a host root", () => {
  let work: string;
  let root: HostRoot;
  let outside: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "shoal-host-root-"));
    await mkdir(join(work, "host", "etc", "containerd"), { recursive: true });
    await mkdir(join(work, "host", "data", "certs"), { recursive: true });
    outside = join(work, "outside");
    await mkdir(outside);
    root = await HostRoot.open(join(work, "host"));
  });

  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("accepts absolute node paths and refuses relative ones, '..' and NUL", () => {
    assert.equal(parseNodePath("/etc/containerd/certs.d/"), "/etc/containerd/certs.d");
    assert.equal(parseNodePath("//etc//containerd"), "/etc/containerd");
    assert.equal(parseNodePath("/"), "/");
    for (const bad of ["etc/containerd", "", "/etc/../root", "/etc/containerd/..", "/a\0b"]) {
      assert.throws(
        () => parseNodePath(bad),
        (e: unknown) => isRuntimeConfigError(e, "ERR_RUNTIME_PATH_INVALID"),
        bad,
      );
    }
  });

  it("resolves an absolute symlink inside the host root, not in this container", async () => {
    await symlink("/data/certs", join(work, "host", "etc", "containerd", "certs.d"));
    assert.equal(await root.resolve("/etc/containerd/certs.d/docker.io/hosts.toml"), "/data/certs/docker.io/hosts.toml");
    assert.equal(await root.locate("/etc/containerd/certs.d"), join(work, "host", "data", "certs"));
  });

  it("keeps a relative symlink that climbs with '..' at the root", async () => {
    // On the node this points above /; there, as here, '..' at / stays at /.
    await symlink(`../../../../../..${outside}`, join(work, "host", "etc", "escape"));
    const resolved = await root.resolve("/etc/escape/x");
    assert.equal(resolved, `${outside}/x`);
    assert.ok((await root.locate("/etc/escape/x")).startsWith(join(work, "host") + "/"), "stays under the host root");
  });

  it("refuses a symlink loop with a clear error", async () => {
    await symlink("/etc/loop-b", join(work, "host", "etc", "loop-a"));
    await symlink("/etc/loop-a", join(work, "host", "etc", "loop-b"));
    await assert.rejects(root.resolve("/etc/loop-a/hosts.toml"), (e: unknown) => isRuntimeConfigError(e, "ERR_RUNTIME_SYMLINK_LOOP"));
  });

  it("makeDirs creates the missing directories only and says which", async () => {
    const created = await root.makeDirs("/var/lib/shoal/configure");
    assert.deepEqual(created, ["/var", "/var/lib", "/var/lib/shoal", "/var/lib/shoal/configure"]);
    assert.deepEqual(await root.makeDirs("/var/lib/shoal/configure/backups"), ["/var/lib/shoal/configure/backups"]);
  });

  it("refuses a host root that is missing or not a directory", async () => {
    await writeFile(join(work, "a-file"), "x");
    await assert.rejects(
      HostRoot.open(join(work, "nope")),
      (e: unknown) => isRuntimeConfigError(e, "ERR_RUNTIME_PATH_INVALID") && e.field === "hostRoot",
    );
    await assert.rejects(
      HostRoot.open(join(work, "a-file")),
      (e: unknown) => isRuntimeConfigError(e, "ERR_RUNTIME_PATH_INVALID") && /not a directory/.test(e.message),
    );
    await assert.rejects(HostRoot.open("relative"), (e: unknown) => isRuntimeConfigError(e, "ERR_RUNTIME_PATH_INVALID"));
    assert.equal(await readFile(join(work, "a-file"), "utf8"), "x");
  });
});
