import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { BenchUsageError, bytesFlag, durationFlag, integerFlag, listFlag, parseBenchFlags, positiveFlag } from "./bench-flags.js";

describe("benchmark flags", () => {
  it("parses string flags with their defaults, and --help", () => {
    const { values, help } = parseBenchFlags(["--runs", "5"], { runs: "3", json: undefined, size: "1GiB" });
    assert.deepEqual(values, { runs: "5", json: undefined, size: "1GiB" });
    assert.equal(help, false);
    assert.equal(parseBenchFlags(["--help"], { runs: "3" }).help, true);
  });

  it("refuses unknown flags, positionals and empty values, naming the flag", () => {
    assert.throws(
      () => parseBenchFlags(["--bogus", "1"], { runs: "3" }),
      (e: unknown) => e instanceof BenchUsageError && /--bogus/.test(e.message),
    );
    assert.throws(() => parseBenchFlags(["extra"], { runs: "3" }), BenchUsageError);
    assert.throws(() => parseBenchFlags(["--runs", " "], { runs: "3" }), /--runs needs a value/);
  });

  it("checks numbers, sizes, durations and lists", () => {
    assert.equal(integerFlag("runs", "7", 1, 10), 7);
    assert.throws(() => integerFlag("runs", "0", 1, 10), /--runs must be an integer from 1 to 10, got "0"/);
    assert.throws(() => integerFlag("runs", "2.5", 1, 10), /--runs/);
    assert.throws(() => integerFlag("runs", undefined, 1, 10), /--runs needs a value/);
    assert.equal(positiveFlag("rate", "0.5", 10), 0.5);
    assert.throws(() => positiveFlag("rate", "-1", 10), /--rate must be a number above 0/);
    assert.equal(bytesFlag("size", "2MiB", 1, 1e9), 2 * 1024 * 1024);
    assert.throws(() => bytesFlag("size", "lots", 1, 1e9), /--size: expected a size/);
    assert.throws(() => bytesFlag("size", "2GiB", 1, 1e9), /--size must be from 1 to 1000000000 bytes/);
    assert.equal(durationFlag("sample", "5ms", 1, 1000), 5);
    assert.throws(() => durationFlag("sample", "soon", 1, 1000), /--sample: expected a duration/);
    assert.throws(() => durationFlag("sample", "2s", 1, 1000), /--sample must be from 1 ms to 1000 ms/);
    assert.deepEqual(listFlag("modes", "upgrade,baseline,upgrade", ["baseline", "upgrade"]), ["upgrade", "baseline"]);
    assert.throws(() => listFlag("modes", "both", ["baseline", "upgrade"]), /--modes: unknown "both"; choose from baseline, upgrade/);
    assert.throws(() => listFlag("modes", ",", ["baseline", "upgrade"]), /--modes must name at least one/);
  });

  // Each script checks its flags before it starts anything (no root, registry or controller needed).
  const scripts: readonly [string, readonly string[], RegExp][] = [
    ["mirror-bench.js", ["--runs", "many"], /--runs must be an integer/],
    ["peer-bench.js", ["--modes", "udp"], /--modes: unknown "udp"/],
    ["disk-bench.js", ["--images", "0"], /--images must be an integer/],
    ["rotation-bench.js", ["--lifetime", "1s"], /--lifetime must be from/],
    ["upgrade-bench.js", ["--upgrade-at", "6"], /--upgrade-at must be an integer from 0 to 5/],
    ["tracker-budget-bench.js", ["--pieces", "1,x"], /--pieces must be an integer/],
    ["distribution-bench.js", ["--puller", "docker"], /--puller must be one of cri, ctr/],
    ["mirror-bench.js", ["--bogus"], /--bogus/],
    ["upgrade-bench.js", ["--bogus", "1"], /--bogus/],
  ];
  for (const [script, args, message] of scripts) {
    it(`${script} ${args.join(" ")}: exit code 2 and a message naming the flag, no stack trace`, () => {
      const result = spawnSync(process.execPath, [fileURLToPath(new URL(script, import.meta.url)), ...args], {
        encoding: "utf8",
        timeout: 30_000,
      });
      assert.equal(result.status, 2, `${result.stdout}\n${result.stderr}`);
      assert.match(result.stderr, message);
      assert.match(result.stderr, /Usage: npm run bench/);
      assert.doesNotMatch(result.stderr, /\n\s+at /, "no stack trace");
    });
  }
});
