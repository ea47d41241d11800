// npm run bench:floor — the per-byte work no agent can skip, measured bare in Node on this machine: SHA-256
// twice, the store's write, mutual TLS in and out, the hand-over to the runtime. Their CPU-seconds per GB
// add up to a floor under what `npm start` and `npm run bench` report per agent. Prints figures; asserts
// nothing.
import { statSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { BenchUsageError, benchOptions, bytesFlag, integerFlag } from "./bench-flags.js";
import {
  DEFAULT_FLOOR_WARM_UP_BYTES,
  FLOOR_HTTP2_LABEL,
  FLOOR_STAGE_LABELS,
  FLOOR_STAGES,
  type FloorRun,
  measureFloor,
  type StageFigures,
} from "./floor.js";
import { makeTempDir, removeTempDir } from "../support/process.js";

const USAGE = `Usage: npm run bench:floor -- [flags]

The work every byte an agent pulls needs, each kind measured on its own in one Node process with the
agents' settings and nothing of Shoal's protocol or scheduling around it: SHA-256 twice (piece check and
blob digest), the store's write and datasync, mutual TLS 1.3 in and out (an agent receives each byte once
and uploads about as much), and reading the stored bytes back to hand them to the runtime over TCP. Prints
each one's CPU-seconds per GB and their sum, run by run; then the TLS transfer again as HTTP/2 over the
same kind of connection (what the peer protocol runs on), and the sum with it in place of bare TLS. The
transfers are measured after a warm-up on the same connection, whose cost is printed apart.

  --size SIZE          bytes per stage (1MiB to 64GiB; default 1GiB)
  --runs N             runs of every stage (1-20; default 2)
  --warm-up SIZE       sent first on each transfer's connection and reported apart (1MiB to 64GiB, at most
                       --size; default 256MiB)
  --dir DIR            where the stages write (default a temp dir; the store's file system is what counts)
  --json FILE          write the result as JSON
  --help`;

const { sizeBytes, warmUpBytes, runs, dir, json } = benchOptions(
  USAGE,
  { size: "1GiB", "warm-up": `${DEFAULT_FLOOR_WARM_UP_BYTES}`, runs: "2", dir: undefined, json: undefined },
  (flags) => {
    const size = bytesFlag("size", flags.size, 1024 * 1024, 64 * 1024 ** 3);
    return {
      sizeBytes: size,
      // At most the stage's size (measureFloor caps it too): what is printed and written is what ran.
      warmUpBytes: Math.min(bytesFlag("warm-up", flags["warm-up"], 1024 * 1024, 64 * 1024 ** 3), size),
      runs: integerFlag("runs", flags.runs, 1, 20),
      dir: directoryFlag("dir", flags.dir),
      json: flags.json,
    };
  },
);

/** An existing directory, or undefined when the flag is not given. */
function directoryFlag(flag: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  let isDirectory = false;
  try {
    isDirectory = statSync(value).isDirectory();
  } catch {
    isDirectory = false;
  }
  if (!isDirectory) throw new BenchUsageError(`--${flag} must be an existing directory, got ${JSON.stringify(value)}`);
  return value;
}

async function main(): Promise<void> {
  const work = await makeTempDir("bench-floor", dir);
  const results: FloorRun[] = [];
  try {
    for (let run = 0; run < runs; run++) {
      console.error(`run ${run + 1} of ${runs}…`);
      results.push(await measureFloor({ sizeBytes, warmUpBytes, dir: work }));
    }
  } finally {
    await removeTempDir(work);
  }
  const width = Math.max(...FLOOR_STAGES.map((stage) => FLOOR_STAGE_LABELS[stage].length)) + 17;
  const cell = (text: string): string => text.padStart(22);
  const row = (label: string, cells: readonly string[]): void => {
    console.log(`${label.padEnd(width)}${cells.map(cell).join("")}`);
  };
  const perGB = ({ cpuSecondsPerGB, throughputMBps }: StageFigures): string =>
    `${cpuSecondsPerGB.toFixed(2)} (${throughputMBps.toFixed(0)} MB/s)`;
  console.log(
    `the floor: ${(sizeBytes / 2 ** 20).toFixed(0)} MiB per stage (the transfers after ${(warmUpBytes / 2 ** 20).toFixed(0)} MiB of warm-up), CPU-seconds per GB (and MB/s) of each run`,
  );
  row(
    "stage",
    results.map((_, run) => `run ${run + 1}`),
  );
  for (const stage of FLOOR_STAGES)
    row(
      FLOOR_STAGE_LABELS[stage],
      results.map((result) => perGB(result.stages[stage])),
    );
  row(
    "sum",
    results.map((result) => result.sumCpuSecondsPerGB.toFixed(2)),
  );
  row(
    FLOOR_HTTP2_LABEL,
    results.map((result) => perGB(result.http2SendReceive)),
  );
  row(
    "sum with HTTP/2 in place of bare TLS",
    results.map((result) => result.sumWithHttp2CpuSecondsPerGB.toFixed(2)),
  );
  const warmUps = [
    ["tlsSendReceive", FLOOR_STAGE_LABELS.tlsSendReceive],
    ["http2SendReceive", FLOOR_HTTP2_LABEL],
    ["handToRuntime", FLOOR_STAGE_LABELS.handToRuntime],
  ] as const;
  for (const [stage, label] of warmUps) {
    row(
      `… its warm-up: ${label}`,
      results.map((result) => perGB(result.warmUp[stage])),
    );
  }
  console.log(`TLS negotiated: ${[...new Set(results.map((result) => result.tlsCipher))].join(", ")}`);
  if (json !== undefined) await writeFile(json, `${JSON.stringify({ sizeBytes, warmUpBytes, runs: results }, null, 2)}\n`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
