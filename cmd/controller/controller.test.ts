import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { ConfigError, formatHelp, parseOptions } from "../../pkg/config/index.js";
import { GrpcTrackerClient } from "../../pkg/tracker/index.js";
import { eventually, testIdentity } from "../../pkg/tracker/testing/helpers.js";
import { startController } from "./controller.js";
import { type ControllerOptions, controllerOptionSpecs, validateControllerOptions } from "./options.js";

const SHOAL = fileURLToPath(new URL("../shoal/main.js", import.meta.url));

function parse(argv: string[], env: Record<string, string> = {}): ControllerOptions {
  const { options } = parseOptions(controllerOptionSpecs, argv, env);
  validateControllerOptions(options);
  return options;
}

describe("controller options", () => {
  it("has defaults and reads SHOAL_* variables, flags winning", () => {
    const defaults = parse([]);
    assert.deepEqual(defaults.listen, { host: "0.0.0.0", port: 7070 });
    assert.equal(defaults.membership, "open");
    assert.equal(defaults.grantStallTimeout, 10_000);
    const fromEnv = parse(["--grant-stall-timeout", "3s"], { SHOAL_MEMBERSHIP: "static", SHOAL_ALLOWED_PEERS: "10.0.0.1, node-a,[fd00::1]", SHOAL_GRANT_STALL_TIMEOUT: "1m" });
    assert.deepEqual(fromEnv.allowedPeers, ["10.0.0.1", "node-a", "[fd00::1]"]);
    assert.equal(fromEnv.grantStallTimeout, 3_000);
  });

  it("rejects inconsistent or malformed values naming the option", () => {
    assert.throws(() => parse(["--membership", "static"]), /--membership static needs --allowed-peers/);
    assert.throws(() => parse(["--allowed-peers", "10.0.0.1"]), /only applies with --membership static/);
    assert.throws(() => parse(["--membership", "kubernetes"]), (e: unknown) => e instanceof ConfigError && /--membership \(SHOAL_MEMBERSHIP\)/.test(e.message));
    assert.throws(() => parse(["--membership", "static", "--allowed-peers", "bad peer"]), /--allowed-peers/);
    assert.throws(() => parse(["--grant-stall-timeout", "0s"]), /--grant-stall-timeout/);
    assert.throws(() => parse(["--listen", "nowhere"]), /--listen/);
  });

  it("documents every option in --help", () => {
    const help = formatHelp("shoal controller [flags]", "", controllerOptionSpecs);
    for (const flag of ["--listen", "--metrics-addr", "--membership", "--allowed-peers", "--grant-stall-timeout", "--log-level"]) assert.ok(help.includes(flag), flag);
    assert.ok(help.includes("SHOAL_GRANT_STALL_TIMEOUT"));
  });
});

describe("controller", () => {
  it("serves the tracker, metrics and readiness, and stops cleanly", async () => {
    const options = parse(["--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--log-level", "fatal"]);
    const controller = await startController(options, pino({ level: "silent" }));
    const client = new GrpcTrackerClient({ address: controller.trackerAddress, identity: testIdentity("a"), logger: pino({ level: "silent" }) });
    try {
      await client.whenConnected(AbortSignal.timeout(5_000));
      assert.equal((await fetch(`${controller.metricsUrl}/readyz`)).status, 200);
      const text = await (await fetch(`${controller.metricsUrl}/metrics`)).text();
      assert.match(text, /^shoal_tracker_agents 1$/m);
      assert.match(text, /^shoal_build_info\{/m);
    } finally {
      await client.close();
      await controller.stop();
    }
    await assert.rejects(fetch(`${controller.metricsUrl}/healthz`));
  });

  it("runs as `shoal controller` and exits 0 on SIGTERM", async () => {
    const child = spawn(process.execPath, [SHOAL, "controller", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "pipe"] });
    try {
      const lines = createInterface({ input: child.stdout });
      let started: { tracker: string; metrics: string } | undefined;
      for await (const line of lines) {
        const record = JSON.parse(line) as { msg?: string; tracker?: string; metrics?: string };
        if (record.msg === "controller started") {
          started = { tracker: record.tracker ?? "", metrics: record.metrics ?? "" };
          break;
        }
      }
      assert.ok(started !== undefined, "logged its addresses");
      const metrics = started.metrics;
      await eventually(async () => {
        assert.equal((await fetch(`${metrics}/healthz`)).status, 200);
      });
      child.kill("SIGTERM");
      const [code] = (await once(child, "exit")) as [number | null];
      assert.equal(code, 0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
    }
  });

  it("prints help and refuses bad flags with exit code 2", async () => {
    const run = async (args: string[]): Promise<{ code: number | null; out: string; err: string }> => {
      const child = spawn(process.execPath, [SHOAL, "controller", ...args], { stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      let err = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (err += d.toString()));
      const [code] = (await once(child, "exit")) as [number | null];
      return { code, out, err };
    };
    const [help, bad] = await Promise.all([run(["--help"]), run(["--membership", "static"])]);
    assert.equal(help.code, 0);
    assert.match(help.out, /--allowed-peers/);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /needs --allowed-peers/);
  });
});
