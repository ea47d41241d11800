// What the chart passes to the shoal CLI is what the CLI takes: the configure init container and the
// restore-on-stop hook run for real against a temp directory standing in for the node, and every
// agent variable and controller flag the chart sets names an option of that command (from
// values.schema.json, which is generated from the commands' option specs).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, it } from "node:test";
import { makeTempDir, removeTempDir } from "../../../e2e/support/process.js";
import { CHART_DIR, type K8sObject, at, only, render } from "./render.js";

const run = promisify(execFile);
const SHOAL_MAIN = fileURLToPath(new URL("../../../cmd/shoal/main.js", import.meta.url));
const CLI_TIMEOUT_MS = 30_000;
/** A containerd 1.7-style config whose CRI registry reads the hosts dir the chart writes. */
const CONTAINERD_CONFIG = `version = 2\n\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n`;
const HOST_IP = "10.1.2.3";

interface EnvVar {
  readonly name: string;
  readonly value?: string;
}

interface Container {
  readonly name: string;
  readonly args?: string[];
  readonly env?: EnvVar[];
  readonly lifecycle?: unknown;
}

async function optionNames(component: "agent" | "controller"): Promise<string[]> {
  const schema = JSON.parse(await readFile(join(CHART_DIR, "values.schema.json"), "utf8")) as unknown;
  return Object.keys(at(schema, "properties", component, "properties", "config", "properties") as Record<string, unknown>);
}

function envName(flag: string): string {
  return `SHOAL_${flag.toUpperCase().replace(/-/g, "_")}`;
}

function containers(ds: K8sObject, init: boolean): Container[] {
  return at(ds, "spec", "template", "spec", init ? "initContainers" : "containers") as Container[];
}

/** Kubernetes' $(VAR) expansion, for the Downward API values a test supplies. */
function expand(value: string, vars: Record<string, string>): string {
  return value.replace(/\$\(([A-Z_]+)\)/g, (whole, name: string) => vars[name] ?? whole);
}

async function shoal(args: readonly string[], env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string }> {
  return run(process.execPath, [SHOAL_MAIN, ...args], { env: { ...process.env, ...env }, timeout: CLI_TIMEOUT_MS });
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length))
    .sort();
}

describe("the chart's contract with the shoal CLI", () => {
  it("the configure init container writes hosts.toml for every registry; the restore-on-stop hook puts the node back", async () => {
    const node = await makeTempDir("chart-node");
    try {
      await mkdir(join(node, "etc", "containerd", "certs.d", "docker.io"), { recursive: true });
      await mkdir(join(node, "etc", "containers"), { recursive: true });
      await writeFile(join(node, "etc", "containerd", "config.toml"), CONTAINERD_CONFIG);
      const original = 'server = "https://registry-1.docker.io"\n# the node\'s own file\n';
      await writeFile(join(node, "etc", "containerd", "certs.d", "docker.io", "hosts.toml"), original);
      const before = await filesUnder(node);
      const ds = only(await render({ registries: ["docker.io", "ghcr.io", "127.0.0.1:5000=http://127.0.0.1:5000"] }), "DaemonSet");
      const init = containers(ds, true).find((c) => c.name === "configure");
      assert.ok(init?.args);
      // The chart mounts the node under /host; here the node is the temp dir.
      const args = init.args.map((a) => (a === "--host-root=/host" ? `--host-root=${node}` : expand(a, { HOST_IP })));
      assert.ok(args.includes(`--host-root=${node}`));
      await shoal(args);
      const hosts = await readFile(join(node, "etc", "containerd", "certs.d", "ghcr.io", "hosts.toml"), "utf8");
      assert.match(
        hosts,
        new RegExp(`\\[host\\."http://${HOST_IP.replace(/\./g, "\\.")}:5050"\\]`),
        "containerd pulls through http://<node IP>:<hostPort>",
      );
      assert.match(
        await readFile(join(node, "etc", "containerd", "certs.d", "docker.io", "hosts.toml"), "utf8"),
        new RegExp(HOST_IP.replace(/\./g, "\\.")),
      );
      assert.match(
        await readFile(join(node, "etc", "containerd", "certs.d", "127.0.0.1:5000", "hosts.toml"), "utf8"),
        /server = "http:\/\/127\.0\.0\.1:5000"/,
      );
      assert.ok(
        (await readdir(join(node, "var", "lib", "shoal", "configure"))).includes("configure-report.json"),
        "the report is in the state dir under the host root",
      );

      const restore = containers(ds, false).find((c) => c.name === "restore-on-stop");
      const command = at(restore, "lifecycle", "preStop", "exec", "command") as string[];
      assert.deepEqual(command.slice(2), ["configure", "--restore"]);
      const env: Record<string, string> = { HOST_IP };
      for (const entry of restore?.env ?? []) if (entry.value !== undefined) env[entry.name] = expand(entry.value, env);
      env.SHOAL_HOST_ROOT = node;
      await shoal(command.slice(2), env);
      assert.equal(
        await readFile(join(node, "etc", "containerd", "certs.d", "docker.io", "hosts.toml"), "utf8"),
        original,
        "the node's own file is back",
      );
      const after = (await filesUnder(node)).filter((f) => !f.startsWith("/var/lib/shoal/configure/"));
      assert.deepEqual(after, before, "nothing of ours is left in the runtime's directories");
    } finally {
      await removeTempDir(node);
    }
  });

  it("every SHOAL_* variable the agent gets and every flag the controller gets is an option of that command", async () => {
    const objects = await render({ agent: { registryCredentials: { secretName: "creds" } } });
    const agentEnv = new Set((await optionNames("agent")).map(envName));
    const agentVariables = [
      ...Object.keys(only(objects, "ConfigMap", "-agent").data as Record<string, string>),
      ...(containers(only(objects, "DaemonSet"), false).find((c) => c.name === "agent")?.env ?? [])
        .map((e) => e.name)
        .filter((n) => n.startsWith("SHOAL_")),
    ];
    assert.ok(agentVariables.length >= 9);
    assert.deepEqual(
      agentVariables.filter((name) => !agentEnv.has(name)),
      [],
      "variables `shoal agent` does not read",
    );
    const controllerFlags = new Set(await optionNames("controller"));
    const args = containers(only(objects, "Deployment"), false).find((c) => c.name === "controller")?.args ?? [];
    const unknown = args
      .slice(1)
      .map((a) => /^--([a-z-]+)=/.exec(a)?.[1] ?? a)
      .filter((name) => !controllerFlags.has(name));
    assert.deepEqual(unknown, [], `flags \`shoal controller\` does not have yet (it has ${[...controllerFlags].join(", ")})`);
  });
});
