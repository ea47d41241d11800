import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isImagegenError } from "./errors.js";
import { TAR_BLOCK_BYTES, decodeTarHeader, encodeTarHeader, tarEntryBytes, tarPaddingBytes } from "./tar.js";

describe("tar headers", () => {
  const base = { type: "file", size: 1234, mode: 0o644, mtimeSeconds: 1_704_067_200 } as const;

  it("round-trips a file header with a valid checksum", () => {
    const block = encodeTarHeader({ ...base, path: "shoal/layer-0/data-0.bin" });
    assert.equal(block.length, TAR_BLOCK_BYTES);
    assert.equal(block.subarray(257, 263).toString("latin1"), "ustar\0");
    assert.equal(block.subarray(263, 265).toString("latin1"), "00");
    assert.deepEqual(decodeTarHeader(block), {
      ...base,
      path: "shoal/layer-0/data-0.bin",
      uid: 0,
      gid: 0,
      uname: "root",
      gname: "root",
    });
  });

  it("computes the checksum as POSIX defines it (checksum field read as spaces)", () => {
    const block = encodeTarHeader({ ...base, path: "a" });
    const stored = parseInt(block.subarray(148, 154).toString("ascii"), 8);
    let sum = 0;
    for (let i = 0; i < TAR_BLOCK_BYTES; i++) sum += i >= 148 && i < 156 ? 0x20 : (block[i] ?? 0);
    assert.equal(stored, sum);
    assert.equal(block.subarray(154, 156).toString("latin1"), "\0 ");
  });

  it("rejects a header whose checksum does not match", () => {
    const block = encodeTarHeader({ ...base, path: "a" });
    block[0] = "b".charCodeAt(0);
    assert.throws(
      () => decodeTarHeader(block),
      (error: unknown) => isImagegenError(error, "ERR_IMAGEGEN_TAR_INVALID"),
    );
  });

  it("encodes directories with type 5 and no size", () => {
    const header = decodeTarHeader(encodeTarHeader({ path: "shoal/", type: "directory", size: 0, mode: 0o755, mtimeSeconds: 0 }));
    assert.equal(header?.type, "directory");
    assert.equal(header.size, 0);
  });

  it("splits paths longer than 100 bytes into prefix and name", () => {
    const path = `${"d".repeat(90)}/${"e".repeat(60)}/file.bin`;
    const block = encodeTarHeader({ ...base, path });
    assert.equal(decodeTarHeader(block)?.path, path);
    assert.throws(
      () => encodeTarHeader({ ...base, path: "x".repeat(101) }),
      (error: unknown) => isImagegenError(error, "ERR_IMAGEGEN_INVALID_OPTIONS"),
    );
  });

  it("returns undefined for the zero end-of-archive block", () => {
    assert.equal(decodeTarHeader(Buffer.alloc(TAR_BLOCK_BYTES)), undefined);
  });

  it("pads bodies to whole blocks", () => {
    assert.equal(tarPaddingBytes(0), 0);
    assert.equal(tarPaddingBytes(1), 511);
    assert.equal(tarPaddingBytes(512), 0);
    assert.equal(tarEntryBytes(513), 512 + 1024);
  });
});
