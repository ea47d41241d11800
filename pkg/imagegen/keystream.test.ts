import assert from "node:assert/strict";
import { deflateRawSync } from "node:zlib";
import { describe, it } from "node:test";
import { Keystream } from "./keystream.js";

describe("Keystream", () => {
  it("is deterministic per (seed, label) and independent across labels and seeds", () => {
    const a = new Keystream("seed", "x").next(4096);
    assert.deepEqual(new Keystream("seed", "x").next(4096), a);
    assert.notDeepEqual(new Keystream("seed", "y").next(4096), a);
    assert.notDeepEqual(new Keystream("seed2", "x").next(4096), a);
  });

  it("gives the same bytes however the stream is chunked", () => {
    const whole = new Keystream("s", "l").next(3 * 1024 * 1024 + 17);
    const chunked = Buffer.concat([...new Keystream("s", "l").chunks(3 * 1024 * 1024 + 17, 100_000)]);
    assert.deepEqual(chunked, whole);
  });

  it("is incompressible", () => {
    const data = new Keystream("s", "compress").next(1024 * 1024);
    assert.ok(deflateRawSync(data).length > data.length * 0.99);
  });
});
