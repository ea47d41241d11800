import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TagDirectory } from "./tag-directory.js";
import { PublishedTags } from "./published-tags.js";
import { testDigest } from "./testing/helpers.js";
import type { TagRecord } from "./tracker.js";

function tag(name: string, digestSeed: string, seenAtMs: number): TagRecord {
  return {
    registry: "r.example",
    repository: "app",
    tag: name,
    digest: testDigest(digestSeed),
    mediaType: "application/json",
    size: 1,
    seenAtMs,
  };
}

describe("TagDirectory", () => {
  it("keeps each agent's newest record per tag and caps a clock running ahead at the tracker's now", () => {
    const directory = new TagDirectory();
    directory.record("a1", "node-1", tag("v1", "ahead", 10_000), 5_000);
    assert.equal(directory.resolve(tag("v1", "", 0))?.seenAtMs, 5_000);
    directory.record("a1", "node-1", tag("v1", "later", 6_000), 7_000);
    assert.equal(directory.resolve(tag("v1", "", 0))?.digest, testDigest("later"), "a skewed clock does not pin a record forever");
    directory.record("a1", "node-1", tag("v1", "stale", 1_000), 7_000);
    assert.equal(directory.resolve(tag("v1", "", 0))?.digest, testDigest("later"));
  });

  it("answers the digest most nodes report: one member cannot move a tag others resolved", () => {
    const directory = new TagDirectory();
    directory.record("a1", "node-1", tag("v1", "real", 1_000), 9_000);
    directory.record("a2", "node-2", tag("v1", "real", 1_100), 9_000);
    directory.record("rogue", "node-3", tag("v1", "evil", 5_000), 9_000);
    assert.equal(directory.resolve(tag("v1", "", 0))?.digest, testDigest("real"), "two nodes against one, however new its record");
    // Several agents on one node count once.
    directory.record("rogue-2", "node-3", tag("v1", "evil", 5_001), 9_000);
    directory.record("rogue-3", "node-3", tag("v1", "evil", 5_002), 9_000);
    assert.equal(directory.resolve(tag("v1", "", 0))?.digest, testDigest("real"));
    // A tie goes to the newest record: a tag that really moved wins once as many nodes saw the move.
    directory.record("a4", "node-4", tag("v1", "evil", 6_000), 9_000);
    assert.equal(directory.resolve(tag("v1", "", 0))?.digest, testDigest("evil"));
  });

  it("forgets an agent's records when its session ends", () => {
    const directory = new TagDirectory();
    directory.record("a1", "node-1", tag("v1", "real", 1_000), 9_000);
    directory.record("rogue", "node-3", tag("v2", "evil", 5_000), 9_000);
    directory.forget("rogue");
    assert.equal(directory.resolve(tag("v2", "", 0)), undefined);
    assert.equal(directory.resolve(tag("v1", "", 0))?.digest, testDigest("real"));
    assert.equal(directory.size, 1);
  });

  it("forgets the least recently published tags beyond its bound", () => {
    const directory = new TagDirectory(3);
    for (const name of ["a", "b", "c"]) directory.record("agent", "node", tag(name, name, 1), 10);
    directory.record("agent", "node", tag("a", "a2", 2), 10);
    directory.record("agent", "node", tag("d", "d", 1), 10);
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
    assert.deepEqual(
      [...tags.takeUnsent()].map((r) => r.tag),
      ["a", "b"],
    );
    assert.deepEqual([...tags.takeUnsent()], []);
    tags.add(tag("a", "a", 1));
    assert.deepEqual([...tags.takeUnsent()], [], "the same record again is not news");
    tags.add(tag("c", "c", 1));
    assert.equal(tags.size, 2, "a, the oldest, made room for c");
    tags.markAllUnsent();
    assert.deepEqual([...tags.takeUnsent()].map((r) => r.tag).sort(), ["b", "c"]);
  });
});
