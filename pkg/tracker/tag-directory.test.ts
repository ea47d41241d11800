import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TagDirectory } from "./tag-directory.js";
import { PublishedTags } from "./published-tags.js";
import { testDigest } from "./testing/helpers.js";
import type { TagRecord } from "./tracker.js";

function tag(name: string, digestSeed: string, seenAtMs: number): TagRecord {
  return { registry: "r.example", repository: "app", tag: name, digest: testDigest(digestSeed), mediaType: "application/json", size: 1, seenAtMs };
}

describe("TagDirectory", () => {
  it("keeps the newest record per tag and caps a clock running ahead at the tracker's now", () => {
    const directory = new TagDirectory();
    directory.record(tag("v1", "ahead", 10_000), 5_000);
    assert.equal(directory.resolve(tag("v1", "", 0))?.seenAtMs, 5_000);
    directory.record(tag("v1", "later", 6_000), 7_000);
    assert.equal(directory.resolve(tag("v1", "", 0))?.digest, testDigest("later"), "a skewed clock does not pin a record forever");
    directory.record(tag("v1", "stale", 1_000), 7_000);
    assert.equal(directory.resolve(tag("v1", "", 0))?.digest, testDigest("later"));
  });

  it("forgets the least recently published tags beyond its bound", () => {
    const directory = new TagDirectory(3);
    for (const name of ["a", "b", "c"]) directory.record(tag(name, name, 1), 10);
    directory.record(tag("a", "a2", 2), 10);
    directory.record(tag("d", "d", 1), 10);
    assert.equal(directory.size, 3);
    assert.equal(directory.resolve(tag("b", "", 0)), undefined, "b was the least recently published");
    assert.equal(directory.resolve(tag("a", "", 0))?.digest, testDigest("a2"));
  });
});

describe("PublishedTags", () => {
  it("hands out each new record once, all of them again after markAllUnsent, and stays bounded", () => {
    const tags = new PublishedTags(2);
    tags.add(tag("a", "a", 1));
    tags.add(tag("b", "b", 1));
    assert.deepEqual([...tags.takeUnsent()].map((r) => r.tag), ["a", "b"]);
    assert.deepEqual([...tags.takeUnsent()], []);
    tags.add(tag("a", "a", 1));
    assert.deepEqual([...tags.takeUnsent()], [], "the same record again is not news");
    tags.add(tag("c", "c", 1));
    assert.equal(tags.size, 2, "a, the oldest, made room for c");
    tags.markAllUnsent();
    assert.deepEqual([...tags.takeUnsent()].map((r) => r.tag).sort(), ["b", "c"]);
  });
});
