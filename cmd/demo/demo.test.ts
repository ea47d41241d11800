import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import type { DemoResult } from "./report.js";
import { bounds } from "./report.js";
import { SHOAL_NODE_FLAGS } from "../../pkg/config/index.js";

const MAIN = fileURLToPath(new URL("../shoal/main.js", import.meta.url));
const run = promisify(execFile);
const MB = 1e6;

async function demo(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MAIN, "demo", ...args], {
      env: { ...process.env, ...env },
      timeout: 120_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

/** PIDs of processes whose command line mentions `text` (Linux /proc); undefined where there is no /proc. */
async function processesMentioning(text: string): Promise<number[] | undefined> {
  let entries: string[];
  try {
    entries = await readdir("/proc");
  } catch {
    return undefined;
  }
  const found: number[] = [];
  for (const entry of entries.filter((e) => /^\d+$/.test(e))) {
    const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (cmdline.includes(text)) found.push(Number(entry));
  }
  return found;
}

describe("shoal demo", () => {
  it("npm start runs the demo with the Node flags of every shoal process", async () => {
    // The demo's process plays the origin and every node's runtime; with V8's default young generation its
    // socket buffers waited for full collections (docs/benchmarks.md, "December 6 (ninth session)").
    const manifest = JSON.parse(await readFile(fileURLToPath(new URL("../../../package.json", import.meta.url)), "utf8")) as {
      scripts: Record<string, string>;
    };
    assert.equal(manifest.scripts.start, `npm run --silent build && node ${SHOAL_NODE_FLAGS.join(" ")} dist/cmd/shoal/main.js demo`);
  });

  it("computes the P2P and client-server bounds", () => {
    const F = 200 * MB;
    const rates = { originBytesPerSecond: 50 * MB, uploadBytesPerSecond: 25 * MB, downloadBytesPerSecond: 25 * MB };
    // max(F/u_s = 4, F/d = 8, N·F/(u_s + N·u) = 1200/200 = 6) and max(N·F/u_s = 24, F/d = 8)
    assert.deepEqual(bounds(F, 6, rates), { p2p: 8, clientServer: 24 });
    // Slow uplinks: the swarm's total upload is the limit.
    assert.equal(bounds(F, 6, { ...rates, uploadBytesPerSecond: 5 * MB, downloadBytesPerSecond: 100 * MB }).p2p, 1200 / 80);
    // Uncapped everything: no bound to speak of.
    assert.deepEqual(bounds(F, 6, { originBytesPerSecond: 0, uploadBytesPerSecond: 0, downloadBytesPerSecond: 0 }), {
      p2p: 0,
      clientServer: 0,
    });
  });

  it("runs a small swarm: every node complete and verified, the origin sends about one copy", async () => {
    const result = await demo(["--nodes", "3", "--image-size", "20MB", "--json"]);
    assert.equal(result.code, 0, result.stderr);
    const json = JSON.parse(result.stdout) as DemoResult;
    assert.ok(json.imageBytes > 20 * MB && json.imageBytes < 21 * MB, `imageBytes ${json.imageBytes}`);
    assert.equal(json.warmUp, false);
    assert.equal(json.nodes.length, 3);
    for (const node of json.nodes) {
      assert.ok(node.complete, `${node.name} complete`);
      assert.equal(node.bytes, json.imageBytes, `${node.name} pulled the whole image`);
      // manifest, config and 4 layers, each checked against its digest by the puller
      assert.equal(node.digestsVerified, 6, `${node.name} verified every digest`);
      assert.ok(
        node.bytesFromOrigin + node.bytesFromPeers >= json.imageBytes - MB,
        `${node.name}'s agent got the blobs from the origin or peers`,
      );
      assert.ok(node.seconds > 0 && node.seconds <= json.p2pSeconds);
      assert.ok(
        node.duplicatePeerBytes >= 0 && node.duplicatePeerBytes <= node.bytesFromPeers,
        `${node.name} duplicates ${node.duplicatePeerBytes}`,
      );
      // /proc exists where the tests run (Linux): every agent's CPU and peak RSS are measured.
      assert.ok(node.agentCpuSeconds !== null && node.agentCpuSeconds > 0, `${node.name} agent CPU ${String(node.agentCpuSeconds)}`);
      assert.ok(
        node.agentPeakRssBytes !== null && node.agentPeakRssBytes > 10 * MB,
        `${node.name} agent peak RSS ${String(node.agentPeakRssBytes)}`,
      );
    }
    assert.ok(json.agentCpuSecondsPerGB !== null && json.agentCpuSecondsPerGB > 0);
    // The machine's CPU in the round: measured inside the span of the per-agent figures, so the agents'
    // share cannot exceed their sum (each rounded to hundredths).
    const machine = json.machine;
    assert.ok(machine !== null, "the machine's CPU is measured where /proc exists");
    const agentsSum = json.nodes.reduce((total, n) => total + (n.agentCpuSeconds ?? 0), 0);
    const agents = machine.groups.agents ?? -1;
    assert.ok(agents > 0 && agents <= agentsSum + 0.01 * (json.nodes.length + 1), `agents ${agents} of ${agentsSum}`);
    assert.ok((machine.groups.demo ?? 0) > 0, "the origin and the pullers used CPU");
    assert.ok(machine.busyCpuSeconds > 0 && machine.busyCpuSeconds <= machine.availableCpuSeconds * 1.05 + 0.05);
    assert.ok(machine.seconds > 0 && machine.seconds <= json.p2pSeconds + 5);
    assert.ok(
      json.nodes.some((n) => n.bytesFromPeers > 5 * MB),
      "blobs went from node to node",
    );
    assert.ok(json.originBytes >= json.imageBytes, "the origin sent the image at least once");
    assert.ok(json.originBytes <= 1.25 * json.imageBytes, `the origin sent ${(json.originBytes / json.imageBytes).toFixed(2)} copies`);
    assert.ok(json.offloadPercent > 50, `offload ${json.offloadPercent}%`);
    assert.ok(json.clientServerSeconds !== null && json.clientServerSeconds > 0);
    assert.ok(
      json.clientServerOriginBytes !== null && json.clientServerOriginBytes >= 3 * json.imageBytes,
      "client-server: every node from the origin",
    );
    assert.ok(json.boundSeconds > 0 && json.boundSeconds <= json.clientServerBoundSeconds);
    assert.ok(json.p2pSeconds >= json.boundSeconds * 0.9, "nothing beats the bound");
  });

  it("--warm-up: the agents pull another image first, and the round's figures count only the round", async () => {
    const result = await demo(["--nodes", "2", "--image-size", "4MB", "--layers", "2", "--warm-up", "--compare=false", "--json"]);
    assert.equal(result.code, 0, result.stderr);
    const json = JSON.parse(result.stdout) as DemoResult;
    assert.equal(json.warmUp, true);
    // The agents' counters also hold the warm-up image (another 4 MB each): the round reports what it added.
    for (const node of json.nodes) {
      assert.ok(node.complete, `${node.name} complete`);
      const fetched = node.bytesFromOrigin + node.bytesFromPeers + node.bytesFromLocal;
      assert.ok(
        fetched >= json.imageBytes - MB && fetched <= 1.25 * json.imageBytes,
        `${node.name}: ${fetched} bytes for an image of ${json.imageBytes}`,
      );
    }
    assert.ok(json.originBytes >= json.imageBytes && json.originBytes <= 1.25 * json.imageBytes, `origin ${json.originBytes}`);
    assert.ok(json.tracker !== null && json.tracker.lookupsServed > 0);
  });

  it("without a terminal prints plain progress lines and the table", async () => {
    const result = await demo(["--nodes", "2", "--image-size", "2MB", "--layers", "2", "--origin-rate", "0", "--upload-rate", "0"]);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(!result.stdout.includes("\u001b["), "no ANSI escapes when stdout is no terminal");
    for (const node of ["node-1", "node-2"]) assert.match(result.stdout, new RegExp(`${node}\\s+100%.*done in`));
    assert.match(result.stdout, /node\s+time\s+from origin\s+from peers\s+duplicates\s+from local\s+sent to peers\s+agent CPU\s+peak RSS/);
    assert.match(result.stdout, /origin offload \d+\.\d%/);
    assert.match(
      result.stdout,
      /machine: [\d.]+ of [\d.]+ CPU-s busy \(\d+ %; \d+ CPUs × [\d.]+ s\): agents [\d.]+, controller [\d.]+, demo [\d.]+, other [\d.]+/,
    );
    assert.match(result.stdout, /client-server, all from the origin/);
    assert.match(result.stdout, /P2P bound/);
  });

  it("Ctrl-C stops every node and removes its temp files", async () => {
    const temp = await mkdtemp(join(tmpdir(), "shoal-demo-sigint-"));
    try {
      const child = spawn(
        process.execPath,
        [MAIN, "demo", "--nodes", "2", "--image-size", "30MB", "--layers", "2", "--download-rate", "3MB"],
        {
          env: { ...process.env, TMPDIR: temp },
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let stdout = "";
      let stderr = "";
      child.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      const exited = new Promise<number | null>((resolve) => {
        child.once("exit", (code) => {
          resolve(code);
        });
      });
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (chunk: Buffer) => {
          stdout += chunk.toString();
          if (/node-\d\s+25%/.test(stdout)) resolve();
        });
        void exited.then(() => {
          reject(new Error(`demo exited before pulling: ${stdout}${stderr}`));
        });
      });
      assert.ok((await processesMentioning(temp))?.length !== 0, "the nodes are running");
      child.kill("SIGINT");
      const code = await Promise.race([
        exited,
        new Promise((resolve) => {
          setTimeout(() => {
            resolve("timeout");
          }, 20_000).unref();
        }),
      ]);
      assert.equal(code, 130, `exit code after SIGINT; stderr: ${stderr}`);
      assert.match(stderr, /SIGINT: stopping the nodes/);
      assert.deepEqual(await readdir(temp), [], "temp dir removed");
      const left = await processesMentioning(temp);
      if (left !== undefined) assert.deepEqual(left, [], "no node process left");
    } finally {
      await rm(temp, { recursive: true, force: true });
    }
  });

  it("refuses bad flags with exit code 2, naming the option", async () => {
    const cases: [string[], Record<string, string>, RegExp][] = [
      [["--nodes", "0"], {}, /--nodes \(SHOAL_NODES\) "0"/],
      [[], { SHOAL_UPLOAD_RATE: "fast" }, /--upload-rate \(SHOAL_UPLOAD_RATE\) "fast" from environment/],
      [["--timeout", "soon"], {}, /--timeout \(SHOAL_TIMEOUT\)/],
      [["extra"], {}, /unexpected argument "extra"/],
    ];
    for (const [args, env, pattern] of cases) {
      const result = await demo(args, env);
      assert.equal(result.code, 2, `${args.join(" ")} → ${result.code}`);
      assert.match(result.stderr, pattern);
    }
  });
});
