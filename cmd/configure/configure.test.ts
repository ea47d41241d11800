import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { KubeApiDouble } from "../../pkg/k8s/testing/index.js";

const MAIN = fileURLToPath(new URL("../shoal/main.js", import.meta.url));
const run = promisify(execFile);

async function shoal(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MAIN, "configure", ...args], {
      env: { ...process.env, ...env },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

describe("shoal configure CLI", () => {
  let work: string;
  let root: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "shoal-configure-cli-"));
    root = join(work, "host");
    await mkdir(join(root, "etc", "containerd"), { recursive: true });
    await writeFile(
      join(root, "etc", "containerd", "config.toml"),
      'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n',
    );
  });

  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("--help documents every flag with its environment variable", async () => {
    const help = await shoal(["--help"]);
    assert.equal(help.code, 0);
    for (const flag of [
      "mirror-url",
      "registries",
      "runtime",
      "host-root",
      "containerd-config",
      "hosts-dir",
      "crio-registries-dir",
      "state-dir",
      "restore",
      "strict",
      "dry-run",
    ]) {
      assert.match(help.stdout, new RegExp(`--${flag}`));
      assert.match(help.stdout, new RegExp(`SHOAL_${flag.toUpperCase().replace(/-/g, "_")}`));
    }
  });

  it("refuses bad input with exit code 2 and a message naming the flag", async () => {
    await writeFile(join(work, "a-file"), "x");
    const cases: [string[], Record<string, string>, RegExp][] = [
      [["--host-root", root], {}, /--mirror-url \(SHOAL_MIRROR_URL\) is required/],
      [["--mirror-url", "127.0.0.1:5050"], {}, /--mirror-url \(SHOAL_MIRROR_URL\) "127\.0\.0\.1:5050"/],
      [["--mirror-url", "http://127.0.0.1:5050/v2"], {}, /--mirror-url .*without a path/],
      [["--mirror-url", "http://u:p@127.0.0.1:5050"], {}, /--mirror-url .*credentials/],
      [["--mirror-url", "http://127.0.0.1:5050", "--registries", "docker.io,bad host"], {}, /--registries .*"bad host"/],
      [["--mirror-url", "http://127.0.0.1:5050", "--registries", "docker.io,docker.io"], {}, /--registries .*listed twice/],
      [["--mirror-url", "http://127.0.0.1:5050", "--registries", ",,"], {}, /--registries .*_default/],
      [["--mirror-url", "http://127.0.0.1:5050", "--runtime", "docker"], {}, /--runtime .*auto, containerd, crio/],
      [["--mirror-url", "http://127.0.0.1:5050", "--hosts-dir", "etc/containerd/certs.d"], {}, /--hosts-dir .*absolute/],
      [["--mirror-url", "http://127.0.0.1:5050", "--host-root", root, "--state-dir", "/var/lib/../../tmp"], {}, /--state-dir .*'\.\.'/],
      [["--mirror-url", "http://127.0.0.1:5050", "--host-root", join(work, "missing")], {}, /--host-root: host root .*missing/],
      [["--mirror-url", "http://127.0.0.1:5050", "--host-root", join(work, "a-file")], {}, /--host-root: .*not a directory/],
      [
        ["--mirror-url", "http://127.0.0.1:5050", "--host-root", root, "--state-dir", "/etc/containerd/certs.d/state"],
        {},
        /--state-dir: the state dir/,
      ],
      [[], { SHOAL_MIRROR_URL: "ftp://x" }, /--mirror-url \(SHOAL_MIRROR_URL\) "ftp:\/\/x" from environment/],
      [["--mirror-url", "http://127.0.0.1:5050", "stray"], {}, /unexpected argument "stray"/],
    ];
    for (const [args, env, pattern] of cases) {
      const result = await shoal(args, env);
      assert.equal(result.code, 2, `${args.join(" ")} → exit ${result.code}: ${result.stderr}`);
      assert.match(result.stderr, pattern);
    }
  });

  it("configures from SHOAL_* variables, exits 0 despite a problem, and 1 with --strict", async () => {
    const env = {
      SHOAL_MIRROR_URL: "http://127.0.0.1:5050",
      SHOAL_HOST_ROOT: root,
      SHOAL_REGISTRIES: "docker.io,127.0.0.1:5000=http://127.0.0.1:5000",
    };
    const ok = await shoal([], env);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /created \/etc\/containerd\/certs\.d\/docker\.io\/hosts\.toml/);
    assert.match(ok.stdout, /containerd: pulls go through the agent/);
    assert.match(
      await readFile(join(root, "etc/containerd/certs.d/127.0.0.1:5000/hosts.toml"), "utf8"),
      /server = "http:\/\/127\.0\.0\.1:5000"/,
    );
    await writeFile(join(root, "etc", "containerd", "config.toml"), "version = 2\n");
    const lenient = await shoal([], env);
    assert.equal(lenient.code, 0);
    assert.match(lenient.stderr, /error CONFIG_PATH_NOT_SET: .*config_path/);
    assert.match(lenient.stdout, /pulls may NOT go through the agent/);
    const strict = await shoal(["--strict"], env);
    assert.equal(strict.code, 1);
    const report = JSON.parse(await readFile(join(root, "var/lib/shoal/configure/configure-report.json"), "utf8")) as {
      ok: boolean;
      problems: { code: string }[];
    };
    assert.equal(report.ok, false);
    assert.deepEqual(
      report.problems.map((p) => p.code),
      ["CONFIG_PATH_NOT_SET"],
    );
    const restore = await shoal(["--restore"], { SHOAL_HOST_ROOT: root });
    assert.equal(restore.code, 0, restore.stderr);
    assert.match(restore.stdout, /removed \/etc\/containerd\/certs\.d\/docker\.io\/hosts\.toml/);
    await assert.rejects(stat(join(root, "etc/containerd/certs.d/docker.io")));
  });

  it("--dry-run prints the files it would write and writes nothing", async () => {
    const result = await shoal(["--mirror-url", "http://127.0.0.1:5050", "--host-root", root, "--dry-run"]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /would create \/etc\/containerd\/certs\.d\/_default\/hosts\.toml\n {4}# Managed by shoal configure\./);
    assert.match(result.stdout, /dry run, nothing written/);
    await assert.rejects(stat(join(root, "etc/containerd/certs.d/_default")));
    await assert.rejects(stat(join(root, "var/lib/shoal/configure/configure-report.json")));
  });
});

describe("shoal configure: Events on the agent Pod", () => {
  let work: string;
  let api: KubeApiDouble;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "shoal-configure-events-"));
    api = await KubeApiDouble.start();
  });
  after(async () => {
    await api.close();
    await rm(work, { recursive: true, force: true });
  });

  it("records a Warning Event per problem on --event-pod, and refuses a malformed --event-pod", async () => {
    const root = join(work, "host");
    await mkdir(join(root, "etc", "containerd"), { recursive: true });
    // No config_path: the kubelet's pulls would ignore the hosts directory.
    await writeFile(join(root, "etc", "containerd", "config.toml"), "version = 2\n");
    const kubeconfig = join(work, "kubeconfig");
    await writeFile(kubeconfig, api.kubeconfigYaml());
    const args = ["--mirror-url", "http://127.0.0.1:5050", "--host-root", root, "--kubeconfig", kubeconfig];
    const result = await shoal([...args, "--event-pod", "shoal/shoal-agent-abc12"]);
    assert.equal(result.code, 0, result.stderr);
    const events = api.events("shoal");
    const reasons = events.map((e) => (e as { reason?: string }).reason);
    assert.ok(reasons.includes("ConfigPathNotSet"), `events: ${JSON.stringify(reasons)}`);
    const event = events.find((e) => (e as { reason?: string }).reason === "ConfigPathNotSet") as {
      type?: string;
      involvedObject?: { kind?: string; name?: string };
    };
    assert.equal(event.type, "Warning");
    assert.deepEqual([event.involvedObject?.kind, event.involvedObject?.name], ["Pod", "shoal-agent-abc12"]);
    const bad = await shoal([...args, "--event-pod", "shoal-agent-abc12"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--event-pod \(SHOAL_EVENT_POD\).*NAMESPACE\/NAME/);
  });
});
