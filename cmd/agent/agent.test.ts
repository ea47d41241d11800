import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { parseOptions } from "../../pkg/config/index.js";
import { CONFIGURE_REPORT_SCHEMA_VERSION, type ConfigureReport, formatConfigureReport } from "../../pkg/runtime/index.js";
import { type RunningAgent, startAgent } from "./agent.js";
import { agentOptionSpecs, validateAgentOptions } from "./options.js";

async function start(dir: string, extra: string[]): Promise<RunningAgent> {
  const { options } = parseOptions(
    agentOptionSpecs,
    [
      "--mirror-addr",
      "127.0.0.1:0",
      "--metrics-addr",
      "127.0.0.1:0",
      "--peer-addr",
      "127.0.0.1:0",
      "--data-dir",
      join(dir, "data"),
      ...extra,
    ],
    {},
  );
  validateAgentOptions(options);
  return await startAgent(options, pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" }));
}

async function metrics(agent: RunningAgent): Promise<string> {
  return await (await fetch(`${agent.metricsUrl}/metrics`)).text();
}

describe("agent: the node's runtime configuration report", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "shoal-agent-report-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("exports every problem `shoal configure` reported as shoal_runtime_config_problems", async () => {
    const report: ConfigureReport = {
      schemaVersion: CONFIGURE_REPORT_SCHEMA_VERSION,
      action: "configure",
      generatedAt: new Date().toISOString(),
      dryRun: false,
      mirrorUrl: "http://127.0.0.1:5000",
      registries: ["_default"],
      runtimes: [
        { runtime: "containerd", configFile: "/etc/containerd/config.toml", configFound: true, configVersion: 2, mirrorEffective: false },
      ],
      changes: [],
      problems: [
        {
          code: "CONFIG_PATH_NOT_SET",
          severity: "error",
          runtime: "containerd",
          file: "/etc/containerd/config.toml",
          message: "config_path is not set",
        },
        { code: "CRIO_RELOAD_NEEDED", severity: "info", runtime: "crio", message: "reload CRI-O" },
      ],
      ok: false,
    };
    const file = join(dir, "configure-report.json");
    await writeFile(file, formatConfigureReport(report));
    const agent = await start(dir, ["--configure-report", file]);
    try {
      const text = await metrics(agent);
      assert.match(text, /shoal_runtime_config_problems\{code="CONFIG_PATH_NOT_SET",severity="error"\} 1/);
      assert.match(text, /shoal_runtime_config_problems\{code="CRIO_RELOAD_NEEDED",severity="info"\} 1/);
    } finally {
      await agent.stop(0);
    }
  });

  it("starts without a readable report, exporting no problems", async () => {
    const agent = await start(dir, ["--configure-report", join(dir, "missing.json")]);
    try {
      assert.doesNotMatch(await metrics(agent), /shoal_runtime_config_problems\{/);
    } finally {
      await agent.stop(0);
    }
  });
});
