import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, it } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Numbers of the last full collection in a --trace-gc-nvp log. */
function lastMarkCompact(log: string): { endObjectBytes: number; limitBytes: number; newSpaceBytes: number } {
  const line = log
    .split("\n")
    .filter((l) => l.includes(" gc=mc "))
    .at(-1);
  assert.ok(line !== undefined, `no full collection in the trace:\n${log.slice(0, 2000)}`);
  const field = (name: string): number => {
    const match = new RegExp(`\\b${name}=(\\d+)`).exec(line);
    assert.ok(match?.[1] !== undefined, `no ${name} in ${line}`);
    return Number(match[1]);
  };
  return {
    endObjectBytes: field("end_object_size"),
    limitBytes: field("old_gen_allocation_limit"),
    newSpaceBytes: field("new_space_capacity"),
  };
}

describe("applyV8Flags", () => {
  it("takes effect in a running process: with AGENT_V8_FLAGS the old generation may grow to twice what survived a full collection", async () => {
    // A child process sets the agent's flags at run time, keeps ~64 MB alive and forces full collections;
    // V8 prints the allocation limit it sets after each. Without the flags, this Node picks its own factor
    // (4.0 for this idle child; about 1.45 for a busy agent).
    const script = `
      import { AGENT_V8_FLAGS, applyV8Flags } from ${JSON.stringify(new URL("./node-flags.js", import.meta.url).href)};
      applyV8Flags(AGENT_V8_FLAGS);
      const kept = [];
      for (let i = 0; i < 64; i++) kept.push(new Array(128 * 1024).fill(i));
      globalThis.gc();
      globalThis.gc();
      process.stderr.write("kept " + kept.length + "\\n");
    `;
    const { stdout, stderr } = await run(process.execPath, ["--expose-gc", "--trace-gc-nvp", "--input-type=module", "--eval", script], {
      maxBuffer: 16 * 1024 * 1024,
      timeout: 60_000,
    });
    assert.match(stderr, /kept 64/);
    const gc = lastMarkCompact(stdout);
    assert.ok(gc.endObjectBytes > 60 * 1024 * 1024, `live heap ${gc.endObjectBytes} bytes`);
    // The limit is what survived times the growing factor, plus the young generation's capacity.
    const factor = (gc.limitBytes - gc.newSpaceBytes) / gc.endObjectBytes;
    assert.ok(Math.abs(factor - 2) < 0.05, `growing factor ${factor.toFixed(3)}, expected 2`);
  });
});
