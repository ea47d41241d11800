// `shoal configure` end to end: the built CLI writes a node's containerd hosts.toml under a temp
// host root; a real containerd 1.6 reads it through CRI `registry.config_path` (the kubelet's pull
// path) and pulls through a running `shoal agent` from Debian's docker-registry; `--restore` brings
// the user's original hosts.toml back, and the next pull goes straight to the origin.
//
// containerd runs in a private mount namespace where the host root's etc/containerd is bind-mounted
// on /etc/containerd, so its config says `config_path = "/etc/containerd/certs.d"` exactly as on a
// node, while `shoal configure --host-root` sees the same directory under the temp host root.
import assert from "node:assert/strict";
import { access, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { generateImageLayout, type GeneratedImageLayout } from "../../pkg/imagegen/index.js";
import type { ConfigureReport } from "../../pkg/runtime/index.js";
import { DockerRegistry } from "../support/docker-registry.js";
import { DaemonProcess, makeTempDir, removeTempDir, runCommand, waitUntil } from "../support/process.js";
import { SHOAL_MAIN, ShoalAgent } from "../support/shoal-agent.js";
import { skopeoPushLayout } from "../support/skopeo.js";
import { criPullImage } from "../support/cri-client.js";

const NODE_CONTAINERD_DIR = "/etc/containerd";
const CONTAINERD_START_TIMEOUT_MS = 20_000;
const CONFIGURE_TIMEOUT_MS = 30_000;
const IMAGE_BYTES = 6 * 1024 * 1024;
const PLATFORM = `linux/${process.arch === "x64" ? "amd64" : process.arch}`;
const q = (value: string): string => JSON.stringify(value);

/** containerd as the node runs it: CRI on, config_path the node's hosts dir, everything else in `dir`. */
function nodeContainerdConfig(dir: string): string {
  return [
    "version = 2",
    `root = ${q(join(dir, "root"))}`,
    `state = ${q(join(dir, "state"))}`,
    'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]',
    "[grpc]",
    `  address = ${q(join(dir, "containerd.sock"))}`,
    "[ttrpc]",
    `  address = ${q(join(dir, "containerd.sock.ttrpc"))}`,
    "[debug]",
    '  address = ""',
    '  level = "info"',
    "[metrics]",
    '  address = ""',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${q(join(dir, "opt"))}`,
    '[plugins."io.containerd.grpc.v1.cri"]',
    "  disable_tcp_service = true",
    '  stream_server_address = "127.0.0.1"',
    '  stream_server_port = "0"',
    '[plugins."io.containerd.grpc.v1.cri".registry]',
    `  config_path = ${q(`${NODE_CONTAINERD_DIR}/certs.d`)}`,
    "",
  ].join("\n");
}

describe("shoal configure with a real containerd (CRI config_path) and a running agent", () => {
  let work: string | undefined;
  let hostRoot: string;
  let containerdDir: string;
  let containerd: DaemonProcess | undefined;
  let origin: DockerRegistry | undefined;
  let agent: ShoalAgent | undefined;
  let imageA: GeneratedImageLayout;
  let imageB: GeneratedImageLayout;
  let userHostsToml: string;
  const socket = (): string => join(containerdDir, "containerd.sock");
  const hostsToml = (): string => join(hostRoot, "etc/containerd/certs.d", origin?.host ?? "", "hosts.toml");
  const blobBytes = (layout: GeneratedImageLayout): number => layout.images.reduce((sum, i) => sum + i.config.size + i.layerBytes, 0);

  async function configure(args: readonly string[]): Promise<{ stdout: string; stderr: string }> {
    return runCommand(process.execPath, [SHOAL_MAIN, "configure", "--host-root", hostRoot, ...args], { timeoutMs: CONFIGURE_TIMEOUT_MS });
  }

  before(async () => {
    await access(NODE_CONTAINERD_DIR); // the bind-mount target: Debian's containerd package creates it
    const dir = await makeTempDir("e2e-configure");
    work = dir;
    hostRoot = join(dir, "host");
    containerdDir = join(dir, "containerd");
    await mkdir(containerdDir);
    imageA = await generateImageLayout({
      dir: join(dir, "image-a"),
      seed: "e2e-configure-a",
      layers: 2,
      totalBytes: IMAGE_BYTES,
      platforms: [PLATFORM],
      tag: "v1",
    });
    imageB = await generateImageLayout({
      dir: join(dir, "image-b"),
      seed: "e2e-configure-b",
      layers: 2,
      totalBytes: IMAGE_BYTES,
      platforms: [PLATFORM],
      tag: "v1",
    });
    origin = await DockerRegistry.start();
    await skopeoPushLayout({ layoutDir: imageA.dir, tag: "v1", destination: `${origin.host}/e2e/configure-a:v1` });
    await skopeoPushLayout({ layoutDir: imageB.dir, tag: "v1", destination: `${origin.host}/e2e/configure-b:v1` });
    agent = await ShoalAgent.start({ upstreams: [`${origin.host}=${origin.url}`] });

    // The node before Shoal: containerd's config, and the user's own hosts.toml for the registry.
    await mkdir(join(hostRoot, "etc/containerd/certs.d", origin.host), { recursive: true });
    await writeFile(join(hostRoot, "etc/containerd/config.toml"), nodeContainerdConfig(containerdDir));
    userHostsToml = `server = ${q(origin.url)}\n\n[host.${q(origin.url)}]\n  capabilities = ["pull", "resolve"]\n`;
    await writeFile(hostsToml(), userHostsToml);

    const log = join(containerdDir, "containerd.log");
    containerd = await DaemonProcess.spawn({
      name: "containerd",
      command: "unshare",
      // unshare and sh exec: the PID stopped later is containerd's, and its namespace dies with it.
      args: [
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        `mount --bind "$0" ${NODE_CONTAINERD_DIR} && exec containerd --config ${NODE_CONTAINERD_DIR}/config.toml`,
        join(hostRoot, "etc/containerd"),
      ],
      stdoutFile: log,
      stderrFile: log,
    });
    const running = containerd;
    await waitUntil(
      async () => {
        if (running.exitStatus !== undefined) throw new Error(`containerd exited: ${await running.logTail()}`);
        try {
          await runCommand("ctr", ["--address", socket(), "version"], { timeoutMs: 2_000 });
          return true;
        } catch {
          return false;
        }
      },
      { timeoutMs: CONTAINERD_START_TIMEOUT_MS, intervalMs: 100, what: "containerd with CRI" },
    );
  });

  after(async () => {
    await containerd?.stop().catch(() => undefined);
    await agent?.stop().catch(() => undefined);
    await origin?.stop().catch(() => undefined);
    if (work !== undefined) await removeTempDir(work);
  });

  it("configure writes hosts.toml for the registry, backs up the user's file and finds config_path honoured", async () => {
    assert.ok(origin && agent);
    const { stdout } = await configure(["--mirror-url", agent.mirrorUrl, "--registries", `${origin.host}=${origin.url}`, "--strict"]);
    assert.match(stdout, /containerd: pulls go through the agent/);
    const written = await readFile(hostsToml(), "utf8");
    assert.match(written, new RegExp(`\\[host\\."${agent.mirrorUrl.replace(/[.]/g, "\\.")}"\\]`));
    assert.match(written, new RegExp(`server = "${origin.url.replace(/[.]/g, "\\.")}"`));
    const report = JSON.parse(await readFile(join(hostRoot, "var/lib/shoal/configure/configure-report.json"), "utf8")) as ConfigureReport;
    assert.equal(report.ok, true, JSON.stringify(report.problems));
    assert.deepEqual(
      report.runtimes.map((r) => [r.runtime, r.configVersion, r.configPath, r.mirrorEffective]),
      [["containerd", 2, "/etc/containerd/certs.d", true]],
    );
    assert.equal(
      await readFile(join(hostRoot, "var/lib/shoal/configure/backups/etc/containerd/certs.d", origin.host, "hosts.toml"), "utf8"),
      userHostsToml,
    );
  });

  it("a CRI pull goes through the agent: it fetched every blob from the origin, which sent each once", async () => {
    assert.ok(origin && agent);
    const mark = await origin.mark();
    const before = await agent.metric("shoal_blob_bytes_served_total", { source: "origin" });
    const ref = await criPullImage(socket(), `${origin.host}/e2e/configure-a:v1`);
    assert.match(ref, /^sha256:[0-9a-f]{64}$/);
    const served = (await agent.metric("shoal_blob_bytes_served_total", { source: "origin" })) - before;
    assert.ok(served >= blobBytes(imageA), `config and layers went through the agent (${served} of ${blobBytes(imageA)} bytes)`);
    assert.equal(await origin.servedBlobBytes({ since: mark }), blobBytes(imageA), "the origin sent each blob once (to the agent)");
  });

  it("configure again changes nothing", async () => {
    assert.ok(origin && agent);
    const before = await readFile(hostsToml(), "utf8");
    const { stdout } = await configure(["--mirror-url", agent.mirrorUrl, "--registries", `${origin.host}=${origin.url}`]);
    assert.match(stdout, /^unchanged .*hosts\.toml$/m);
    assert.equal(await readFile(hostsToml(), "utf8"), before);
  });

  it("--restore puts the user's hosts.toml back; the next CRI pull goes straight to the origin", async () => {
    assert.ok(origin && agent);
    const { stdout } = await configure(["--restore"]);
    assert.match(stdout, /^restored .*hosts\.toml$/m);
    assert.equal(await readFile(hostsToml(), "utf8"), userHostsToml);
    await assert.rejects(stat(join(hostRoot, "var/lib/shoal/configure")), "state, backups and report are removed");
    const mark = await origin.mark();
    const before = await agent.metric("shoal_blob_bytes_served_total");
    await criPullImage(socket(), `${origin.host}/e2e/configure-b:v1`);
    assert.equal(await agent.metric("shoal_blob_bytes_served_total"), before, "the agent served nothing");
    assert.equal(await origin.servedBlobBytes({ since: mark }), blobBytes(imageB), "containerd pulled from the origin itself");
  });
});
