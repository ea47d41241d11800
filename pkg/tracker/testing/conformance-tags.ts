import assert from "node:assert/strict";
import { it } from "node:test";
import { isTrackerError } from "../errors.js";
import type { TagRecord } from "../tracker.js";
import { type TrackerHarnessFactory, withHarness } from "./harness.js";
import { eventually, testDigest, testIdentity } from "./helpers.js";

const KEY = { registry: "registry.example:5000", repository: "team/app", tag: "v1" } as const;

function record(digestSeed: string, seenAtMs: number, key: Partial<TagRecord> = {}): TagRecord {
  return { ...KEY, digest: testDigest(digestSeed), mediaType: "application/vnd.oci.image.index.v1+json", size: 512, seenAtMs, ...key };
}

/** Tag records: what an agent resolved a tag to upstream, for the others to use while the upstream is away. */
export function runTagConformance(factory: TrackerHarnessFactory): void {
  it("a tag one agent published resolves for another; the newest record of a tag wins", () =>
    withHarness(factory, async (h) => {
      const a = await h.agent(testIdentity("a"));
      const b = await h.agent(testIdentity("b"));
      assert.equal(await b.resolveTag(KEY), undefined, "nobody published it yet");
      const now = Date.now();
      a.publishTag(record("first", now - 10_000));
      await eventually(async () => {
        assert.equal((await b.resolveTag(KEY))?.digest, testDigest("first"));
      });
      a.publishTag(record("older", now - 20_000));
      b.publishTag(record("newer", now - 1_000));
      await eventually(async () => {
        assert.equal((await a.resolveTag(KEY))?.digest, testDigest("newer"));
      });
      const other = { ...KEY, tag: "v2" };
      assert.equal(await a.resolveTag(other), undefined, "tags are kept apart");
      assert.deepEqual(await a.resolveTag(KEY), record("newer", now - 1_000));
    }));

  it("a malformed record or key is refused with ERR_TRACKER_INVALID_ARGUMENT", () =>
    withHarness(factory, async (h) => {
      const a = await h.agent(testIdentity("a"));
      const invalid = (e: unknown): boolean => isTrackerError(e, "ERR_TRACKER_INVALID_ARGUMENT");
      assert.throws(() => {
        a.publishTag(record("x", Date.now(), { tag: "no spaces allowed" }));
      }, invalid);
      assert.throws(() => {
        a.publishTag(record("x", Date.now(), { size: -1 }));
      }, invalid);
      assert.throws(() => {
        a.publishTag({ ...record("x", Date.now()), digest: "sha256:nothex" as TagRecord["digest"] });
      }, invalid);
      await assert.rejects(a.resolveTag({ ...KEY, tag: "" }), invalid);
      await assert.rejects(a.resolveTag({ ...KEY, repository: "x".repeat(300) }), invalid);
      assert.equal(a.connected, true, "refused input does not end the session");
    }));

  it("tags are published again to a restarted tracker", async (t) => {
    await withHarness(factory, async (h) => {
      if (h.restartTracker === undefined) {
        t.skip("the harness cannot restart its tracker");
        return;
      }
      const a = await h.agent(testIdentity("a"));
      const b = await h.agent(testIdentity("b"));
      a.publishTag(record("kept", Date.now() - 1_000));
      await eventually(async () => {
        assert.equal((await b.resolveTag(KEY))?.digest, testDigest("kept"));
      });
      await h.restartTracker();
      await eventually(async () => {
        assert.equal((await b.resolveTag(KEY))?.digest, testDigest("kept"));
      }, 5_000);
    });
  });
}
