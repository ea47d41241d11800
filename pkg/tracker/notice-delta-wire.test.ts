import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SessionResponse } from "../gen/tracker/v1/tracker.js";
import { bitmapOf, pieceHash, testDigest, testIdentity } from "./testing/helpers.js";
import type { BlobChange } from "./tracker.js";
import { noticeFromWire, noticeResponse } from "./wire.js";

const D = testDigest("delta on the wire");
const PIECES = 10;

function change(over: Partial<BlobChange> = {}): BlobChange {
  const indices = [3, 7];
  const bytes = new Uint8Array(indices.length * 32);
  indices.forEach((index, i) => {
    bytes.set(pieceHash(index), i * 32);
  });
  return {
    size: PIECES * 4 - 1,
    pieceSize: 4,
    holders: [
      { ...testIdentity("a"), complete: false, bitmap: bitmapOf(PIECES, [3, 7]), activeUploads: 2 },
      { ...testIdentity("b"), complete: true, bitmap: new Uint8Array(0), activeUploads: 0 },
    ],
    hashes: { indices, bytes },
    granteeAgentId: "a",
    ...over,
  };
}

/** Encoded and decoded as the agent receives it. */
function overTheWire(digest: string, c: BlobChange | undefined) {
  const kind = SessionResponse.decode(SessionResponse.encode(noticeResponse(D, c)).finish()).kind;
  if (kind?.$case !== "blobChanged") return assert.fail(`decoded as ${kind?.$case ?? "nothing"}`);
  return noticeFromWire({ ...kind.value, digest });
}

describe("BlobChanged with a delta on the wire", () => {
  it("round-trips the change; a notice without one means look it up", () => {
    const sent = change();
    const got = overTheWire(D, sent);
    assert.equal(got.digest, D);
    assert.equal(got.malformed, undefined);
    assert.ok(got.change);
    assert.deepEqual(
      got.change.holders.map((h) => ({ ...h, bitmap: Array.from(h.bitmap) })),
      sent.holders.map((h) => ({ ...h, bitmap: Array.from(h.bitmap) })),
    );
    assert.deepEqual(Array.from(got.change.hashes.indices), [3, 7]);
    assert.deepEqual(Array.from(got.change.hashes.bytes), Array.from(sent.hashes.bytes));
    assert.equal(got.change.granteeAgentId, "a");
    assert.equal(got.change.size, sent.size);
    assert.equal(overTheWire(D, change({ granteeAgentId: undefined })).change?.granteeAgentId, undefined);
    const plain = overTheWire(D, undefined);
    assert.equal(plain.change, undefined);
    assert.equal(plain.malformed, undefined);
  });

  for (const [name, bad] of [
    [
      "a bitmap of the wrong length",
      change({ holders: [{ ...testIdentity("a"), complete: false, bitmap: new Uint8Array(1), activeUploads: 0 }] }),
    ],
    ["a hash that is not 32 bytes", change({ hashes: { indices: [1], bytes: new Uint8Array(31) } })],
    ["a hash index out of range", change({ hashes: { indices: [PIECES], bytes: new Uint8Array(32) } })],
    ["a hash given twice", change({ hashes: { indices: [1, 1], bytes: new Uint8Array(64) } })],
    ["a piece size of 0", change({ pieceSize: 0 })],
    [
      "an empty holder id",
      change({ holders: [{ ...testIdentity("a"), agentId: "", complete: true, bitmap: new Uint8Array(0), activeUploads: 0 }] }),
    ],
  ] as const) {
    it(`a change with ${name} is dropped, and the notice says look it up`, () => {
      const got = overTheWire(D, bad);
      assert.equal(got.digest, D);
      assert.equal(got.change, undefined);
      assert.match(got.malformed ?? "", /notice|agent id/);
    });
  }

  it("a notice with a malformed digest is refused", () => {
    assert.throws(() => overTheWire("sha256:nothex", change()), { code: "ERR_TRACKER_INVALID_ARGUMENT" });
  });
});
