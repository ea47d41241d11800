import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { FLOOR_STAGES, handToRuntime, measureFloor } from "./floor.js";
import { makeTempDir, removeTempDir } from "../support/process.js";

const SIZE_BYTES = 3 * 1024 * 1024 + 12_345;
const WARM_UP_BYTES = 1024 * 1024 + 7;

describe("bench:floor", () => {
  it("moves every byte through each stage, adds the stages up and leaves no file behind", async () => {
    const dir = await makeTempDir("floor-test");
    try {
      const run = await measureFloor({ sizeBytes: SIZE_BYTES, warmUpBytes: WARM_UP_BYTES, dir });
      let sum = 0;
      for (const stage of FLOOR_STAGES) {
        const figures = run.stages[stage];
        assert.equal(figures.bytes, SIZE_BYTES, stage);
        assert.ok(Number.isFinite(figures.cpuSecondsPerGB) && figures.cpuSecondsPerGB >= 0, `${stage}: ${figures.cpuSecondsPerGB}`);
        assert.ok(figures.seconds > 0 && figures.throughputMBps > 0, stage);
        assert.equal(figures.cpuSecondsPerGB, figures.cpuSeconds / (SIZE_BYTES / 1e9), stage);
        sum += figures.cpuSecondsPerGB;
      }
      assert.equal(run.sumCpuSecondsPerGB, sum);
      // The HTTP/2 transfer is measured like a stage, and stands in for bare TLS only in its own sum.
      assert.equal(run.http2SendReceive.bytes, SIZE_BYTES);
      assert.ok(run.http2SendReceive.seconds > 0 && run.http2SendReceive.cpuSeconds >= 0);
      assert.equal(run.sumWithHttp2CpuSecondsPerGB, sum - run.stages.tlsSendReceive.cpuSecondsPerGB + run.http2SendReceive.cpuSecondsPerGB);
      // The warm-ups are measured apart, and not counted in the stages they precede.
      assert.deepEqual(Object.keys(run.warmUp).sort(), ["handToRuntime", "http2SendReceive", "tlsSendReceive"]);
      for (const figures of Object.values(run.warmUp)) assert.equal(figures.bytes, WARM_UP_BYTES);
      assert.match(run.tlsCipher, /^TLSv1\.3 TLS_AES_128_GCM_SHA256$/);
      assert.deepEqual(
        (await readdir(dir)).filter((name) => name.startsWith("floor-blob")),
        [],
      );
    } finally {
      await removeTempDir(dir);
    }
  });

  it("fails the hand-over with a clear error, and without hanging, when the file is shorter than asked", async () => {
    const dir = await makeTempDir("floor-test");
    try {
      const file = join(dir, "short");
      await writeFile(file, Buffer.alloc(1024 * 1024, 7));
      await assert.rejects(handToRuntime(2 * 1024 * 1024, 1024, file), /the file ended at 1048576 of 2097152 bytes/);
    } finally {
      await removeTempDir(dir);
    }
  });

  it("refuses a bad flag with a message naming it and exit code 2", () => {
    const script = fileURLToPath(new URL("./floor-bench.js", import.meta.url));
    const cases: [string[], RegExp][] = [
      [["--size", "0"], /--size must be from 1048576 to \d+ bytes, got "0"/],
      [["--dir", "/nonexistent/shoal-floor"], /--dir must be an existing directory, got "\/nonexistent\/shoal-floor"/],
      [["--runs", "0"], /--runs must be an integer from 1 to 20, got "0"/],
    ];
    for (const [args, message] of cases) {
      const result = spawnSync(process.execPath, [script, ...args], { encoding: "utf8", timeout: 30_000 });
      assert.equal(result.status, 2, args.join(" "));
      assert.match(result.stderr, message);
    }
  });
});
