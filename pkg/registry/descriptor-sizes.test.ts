import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { digestOf } from "../oci/index.js";
import { DescriptorSizes, MAX_REMEMBERED_DESCRIPTORS } from "./descriptor-sizes.js";

const d = (name: string) => digestOf(name);
const json = (value: unknown) => Buffer.from(JSON.stringify(value));

describe("DescriptorSizes", () => {
  it("remembers the sizes of a manifest's config and layers and of an index's manifests", () => {
    const sizes = new DescriptorSizes();
    sizes.learn(
      json({
        schemaVersion: 2,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: d("config"), size: 123 },
        layers: [
          { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: d("l1"), size: 1_000_000 },
          { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: d("l2"), size: 0 },
        ],
      }),
    );
    sizes.learn(
      json({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: d("m"), size: 500 }] }),
    );
    assert.deepEqual(
      [d("config"), d("l1"), d("l2"), d("m"), d("other")].map((x) => sizes.get(x)),
      [123, 1_000_000, 0, 500, undefined],
    );
  });

  it("ignores what is not a descriptor: malformed JSON, bad digests, sizes that are not byte counts", () => {
    const sizes = new DescriptorSizes();
    sizes.learn(Buffer.from("{not json"));
    sizes.learn(json(null));
    sizes.learn(json({ layers: "nope", config: 5 }));
    sizes.learn(
      json({
        layers: [
          { digest: "sha256:short", size: 1 },
          { digest: d("neg"), size: -1 },
          { digest: d("frac"), size: 1.5 },
          { digest: d("str"), size: "12" },
          { digest: d("huge"), size: 2 ** 60 },
        ],
      }),
    );
    assert.equal(sizes.size, 0);
  });

  it(`keeps at most ${MAX_REMEMBERED_DESCRIPTORS} descriptors, the least recently used going first`, () => {
    const sizes = new DescriptorSizes();
    const layers = Array.from({ length: MAX_REMEMBERED_DESCRIPTORS }, (_, i) => ({ digest: d(`layer ${i}`), size: i }));
    sizes.learn(json({ layers }));
    assert.equal(sizes.get(d("layer 0")), 0, "used: now the most recent");
    sizes.learn(json({ layers: [{ digest: d("new"), size: 7 }] }));
    assert.equal(sizes.size, MAX_REMEMBERED_DESCRIPTORS);
    assert.equal(sizes.get(d("layer 1")), undefined, "the least recently used went");
    assert.equal(sizes.get(d("layer 0")), 0);
    assert.equal(sizes.get(d("new")), 7);
  });
});
