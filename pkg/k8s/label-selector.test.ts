import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isK8sError } from "./errors.js";
import { parseLabelSelector } from "./label-selector.js";

describe("label selectors", () => {
  it("parses every operator and matches like the API server", () => {
    const selector = parseLabelSelector("app=shoal, tier==agent,env!=dev,zone in (a, b),rack notin (r1),example.com/gpu,!legacy");
    assert.equal(selector.requirements.length, 7);
    const base = { app: "shoal", tier: "agent", zone: "a", "example.com/gpu": "" };
    assert.equal(selector.matches(base), true);
    assert.equal(selector.matches({ ...base, env: "dev" }), false, "!=");
    assert.equal(selector.matches({ ...base, env: "prod" }), true, "!= other value");
    assert.equal(selector.matches({ ...base, zone: "c" }), false, "in");
    assert.equal(selector.matches({ ...base, rack: "r1" }), false, "notin");
    assert.equal(selector.matches({ ...base, rack: "r2" }), true, "notin other value");
    const { "example.com/gpu": _gpu, ...noGpu } = base;
    assert.equal(selector.matches(noGpu), false, "exists");
    assert.equal(selector.matches({ ...base, legacy: "x" }), false, "!exists");
    assert.equal(selector.matches(undefined), false);
    assert.equal(parseLabelSelector("").matches(undefined), true, "empty selects everything");
    assert.equal(parseLabelSelector(selector.toString()).toString(), selector.toString(), "round trip");
    assert.equal(parseLabelSelector("a=").matches({ a: "" }), true, "empty value");
  });

  it("refuses malformed selectors with the reason", () => {
    for (const bad of [
      "a=b,",
      "a in b",
      "a in ()",
      "a in (b",
      "=b",
      "a=b c",
      "bad key=1",
      "a=-x",
      "a notin (b,,c)",
      `${"k".repeat(64)}=v`,
    ]) {
      assert.throws(
        () => parseLabelSelector(bad),
        (e: unknown) => isK8sError(e, "ERR_K8S_SELECTOR") && e.message.includes(JSON.stringify(bad)),
        bad,
      );
    }
  });
});
