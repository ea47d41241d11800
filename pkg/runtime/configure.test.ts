import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { pino } from "pino";
import {
  CONFIGURE_REPORT_FILE,
  type ConfigureOptions,
  type RegistryTarget,
  configureNode,
  isRuntimeConfigError,
  readConfigureReport,
  restoreNode,
} from "./index.js";

const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });
const HOSTS = "/etc/containerd/certs.d";
const STATE = "/var/lib/shoal/configure";
const CONFIG_V2 = `version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "${HOSTS}"\n`;
const USER_DOCKER_HOSTS = 'server = "https://registry-1.docker.io"\n\n[host."https://mirror.gcr.io"]\n  capabilities = ["pull"]\n';
const DEFAULT: RegistryTarget[] = [{ registry: "_default" }];
const DOCKER: RegistryTarget[] = [{ registry: "docker.io", server: "https://registry-1.docker.io" }];

describe("shoal configure on a node file system", () => {
  let root: string;
  const at = (nodePath: string): string => join(root, nodePath);
  const put = async (nodePath: string, content: string): Promise<void> => {
    await mkdir(dirname(at(nodePath)), { recursive: true });
    await writeFile(at(nodePath), content);
  };
  const read = async (nodePath: string): Promise<string> => readFile(at(nodePath), "utf8");
  const exists = async (nodePath: string): Promise<boolean> =>
    stat(at(nodePath)).then(
      () => true,
      () => false,
    );
  const opts = (overrides: Partial<ConfigureOptions> = {}): ConfigureOptions => ({
    hostRoot: root,
    mirrorUrl: "http://127.0.0.1:5050",
    registries: DEFAULT,
    crioDefaultRegistries: ["docker.io"],
    runtime: "auto",
    containerdConfig: "/etc/containerd/config.toml",
    hostsDir: HOSTS,
    crioRegistriesDir: "/etc/containers/registries.conf.d",
    stateDir: STATE,
    dryRun: false,
    logger,
    signal: AbortSignal.timeout(30_000),
    ...overrides,
  });

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "shoal-configure-"));
    await put("/etc/containerd/config.toml", CONFIG_V2);
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("keeps the first backup (the user's original) across runs with another mirror URL, and restores it", async () => {
    await put(`${HOSTS}/docker.io/hosts.toml`, USER_DOCKER_HOSTS);
    await chmod(at(`${HOSTS}/docker.io/hosts.toml`), 0o600);
    const first = await configureNode(opts({ registries: DOCKER }));
    assert.deepEqual(
      first.report.changes.map((c) => c.action),
      ["updated"],
    );
    assert.ok(first.report.ok);
    assert.match(await read(`${HOSTS}/docker.io/hosts.toml`), /\[host\."http:\/\/127\.0\.0\.1:5050"\]/);
    const again = await configureNode(opts({ registries: DOCKER }));
    assert.deepEqual(
      again.report.changes.map((c) => c.action),
      ["unchanged"],
    );
    const moved = await configureNode(opts({ registries: DOCKER, mirrorUrl: "http://10.0.0.1:5050" }));
    assert.deepEqual(
      moved.report.changes.map((c) => c.action),
      ["updated"],
    );
    assert.equal(moved.report.problems.length, 0, "replacing Shoal's own file is no problem");
    assert.equal(await read(`${STATE}/backups${HOSTS}/docker.io/hosts.toml`), USER_DOCKER_HOSTS, "the backup is still the original");
    const restored = await restoreNode(opts());
    assert.deepEqual(
      restored.report.changes.map((c) => c.action),
      ["restored"],
    );
    assert.equal(await read(`${HOSTS}/docker.io/hosts.toml`), USER_DOCKER_HOSTS);
    assert.equal((await stat(at(`${HOSTS}/docker.io/hosts.toml`))).mode & 0o777, 0o600, "the original's mode comes back");
    assert.equal(await exists(STATE), false, "state, backups and report are gone");
  });

  it("removes what it created on restore, including directories it made, and nothing else", async () => {
    await put(`${HOSTS}/quay.io/hosts.toml`, 'server = "https://quay.io"\n');
    await configureNode(opts({ registries: [...DEFAULT, { registry: "ghcr.io", server: "https://ghcr.io" }] }));
    assert.ok(await exists(`${HOSTS}/_default/hosts.toml`));
    assert.ok(await exists(`${HOSTS}/ghcr.io/hosts.toml`));
    await restoreNode(opts());
    assert.deepEqual((await readdir(at(HOSTS))).sort(), ["quay.io"]);
    assert.equal(await read(`${HOSTS}/quay.io/hosts.toml`), 'server = "https://quay.io"\n');
  });

  it("when --registries changes, files no longer wanted are restored", async () => {
    await put(`${HOSTS}/docker.io/hosts.toml`, USER_DOCKER_HOSTS);
    await configureNode(opts({ registries: DEFAULT }));
    const second = await configureNode(opts({ registries: DOCKER }));
    assert.deepEqual(
      second.report.changes.map((c) => [c.path, c.action]),
      [
        [`${HOSTS}/docker.io/hosts.toml`, "updated"],
        [`${HOSTS}/_default/hosts.toml`, "removed"],
      ],
    );
    assert.equal(await exists(`${HOSTS}/_default`), false);
  });

  it("a file changed by someone else after Shoal wrote it is kept on restore, with a warning and the backup", async () => {
    await put(`${HOSTS}/docker.io/hosts.toml`, USER_DOCKER_HOSTS);
    await configureNode(opts({ registries: DOCKER }));
    await writeFile(at(`${HOSTS}/docker.io/hosts.toml`), 'server = "https://edited.example"\n');
    const restored = await restoreNode(opts());
    assert.deepEqual(
      restored.report.changes.map((c) => c.action),
      ["kept"],
    );
    assert.deepEqual(
      restored.report.problems.map((p) => p.code),
      ["MANAGED_FILE_MODIFIED"],
    );
    assert.equal(await read(`${HOSTS}/docker.io/hosts.toml`), 'server = "https://edited.example"\n');
    assert.equal(await read(`${STATE}/backups${HOSTS}/docker.io/hosts.toml`), USER_DOCKER_HOSTS, "the original is still there to recover");
    // Configuring again overwrites the edit but keeps the first backup.
    const again = await configureNode(opts({ registries: DOCKER }));
    assert.deepEqual(
      again.report.problems.map((p) => p.code),
      ["MANAGED_FILE_MODIFIED"],
    );
    assert.equal(await read(`${STATE}/backups${HOSTS}/docker.io/hosts.toml`), USER_DOCKER_HOSTS);
  });

  it("adopts its own file when the state dir was lost, never backing it up", async () => {
    await configureNode(opts());
    await rm(at(STATE), { recursive: true });
    const second = await configureNode(opts());
    assert.deepEqual(
      second.report.changes.map((c) => c.action),
      ["unchanged"],
    );
    assert.deepEqual(
      second.report.problems.map((p) => p.code),
      ["MANAGED_FILE_ADOPTED"],
    );
    assert.equal(await exists(`${STATE}/backups`), false);
    await restoreNode(opts());
    assert.equal(await exists(`${HOSTS}/_default/hosts.toml`), false);
  });

  it("--dry-run writes nothing, not even the report, and says what it would do", async () => {
    await put(`${HOSTS}/docker.io/hosts.toml`, USER_DOCKER_HOSTS);
    const result = await configureNode(opts({ registries: DOCKER, dryRun: true }));
    assert.deepEqual(
      result.report.changes.map((c) => c.action),
      ["updated"],
    );
    assert.equal(result.files.length, 1);
    assert.match(result.files[0]?.content ?? "", /capabilities = \["pull", "resolve"\]/);
    assert.equal(await read(`${HOSTS}/docker.io/hosts.toml`), USER_DOCKER_HOSTS);
    assert.equal(await exists(STATE), false);
  });

  it("writes through a symlinked hosts dir inside the host root, never outside it", async () => {
    const outside = await mkdtemp(join(tmpdir(), "shoal-configure-outside-"));
    try {
      await mkdir(at("/data/certs"), { recursive: true });
      await symlink("/data/certs", at(HOSTS));
      // The same absolute path exists in this container: it must not be written to.
      await symlink(outside, at("/etc/containerd/other"));
      await configureNode(opts());
      assert.ok(await exists("/data/certs/_default/hosts.toml"));
      const report = await configureNode(opts({ hostsDir: "/etc/containerd/other" }));
      assert.ok(
        report.report.changes.some((c) => c.path === `${outside}/_default/hosts.toml`),
        "the node path it names",
      );
      assert.deepEqual(await readdir(outside), [], "nothing written outside the host root");
      assert.ok(await exists(`${outside}/_default/hosts.toml`), "written under the host root instead");
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it("refuses a state dir inside the hosts dir (backups would be read as registries)", async () => {
    await assert.rejects(
      configureNode(opts({ stateDir: `${HOSTS}/shoal` })),
      (e: unknown) => isRuntimeConfigError(e, "ERR_RUNTIME_PATH_INVALID") && e.field === "stateDir",
    );
  });

  it("a garbled state file stops all changes with STATE_INVALID", async () => {
    await put(`${STATE}/state.json`, "{ not json");
    const result = await configureNode(opts());
    assert.deepEqual(
      result.report.problems.map((p) => p.code),
      ["STATE_INVALID"],
    );
    assert.equal(result.report.ok, false);
    assert.equal(await exists(`${HOSTS}/_default/hosts.toml`), false);
    const restore = await restoreNode(opts());
    assert.deepEqual(
      restore.report.problems.map((p) => p.code),
      ["STATE_INVALID"],
    );
  });

  it("an unreadable config.toml is reported, and the hosts files are still written", async () => {
    await rm(at("/etc/containerd/config.toml"));
    await mkdir(at("/etc/containerd/config.toml"));
    const result = await configureNode(opts());
    assert.deepEqual(
      result.report.problems.map((p) => p.code),
      ["CONTAINERD_CONFIG_UNREADABLE"],
    );
    assert.match(result.report.problems[0]?.message ?? "", /EISDIR/);
    assert.ok(await exists(`${HOSTS}/_default/hosts.toml`));
  });

  it("a write that fails is a WRITE_FAILED problem in the report, not a crash", async () => {
    // A file where the registry's directory should be.
    await put(`${HOSTS}/docker.io`, "not a directory");
    const result = await configureNode(opts({ registries: DOCKER }));
    assert.deepEqual(
      result.report.problems.map((p) => p.code),
      ["WRITE_FAILED"],
    );
    assert.equal(result.report.runtimes[0]?.mirrorEffective, false);
    assert.deepEqual(result.report.changes, []);
  });

  it("the report file is what the agent reads back", async () => {
    await writeFile(at("/etc/containerd/config.toml"), "version = 2\n");
    const result = await configureNode(opts());
    const report = await readConfigureReport(at(`${STATE}/${CONFIGURE_REPORT_FILE}`), AbortSignal.timeout(5_000));
    assert.deepEqual(report, JSON.parse(JSON.stringify(result.report)));
    assert.deepEqual(
      report.problems.map((p) => [p.code, p.severity]),
      [["CONFIG_PATH_NOT_SET", "error"]],
    );
    assert.equal(report.ok, false);
    await writeFile(at(`${STATE}/${CONFIGURE_REPORT_FILE}`), "{}");
    await assert.rejects(readConfigureReport(at(`${STATE}/${CONFIGURE_REPORT_FILE}`), AbortSignal.timeout(5_000)), (e: unknown) =>
      isRuntimeConfigError(e, "ERR_RUNTIME_STATE_INVALID"),
    );
  });

  it("configures containerd and CRI-O together when both are present", async () => {
    await put("/etc/containers/registries.conf", 'unqualified-search-registries = ["docker.io"]\n');
    const result = await configureNode(opts());
    assert.deepEqual(
      result.report.runtimes.map((r) => [r.runtime, r.mirrorEffective]),
      [
        ["containerd", true],
        ["crio", true],
      ],
    );
    assert.match(await read("/etc/containers/registries.conf.d/shoal.conf"), /location = "127\.0\.0\.1:5050\/docker\.io"\ninsecure = true/);
    const restore = await restoreNode(opts());
    assert.ok(restore.report.problems.some((p) => p.code === "CRIO_RELOAD_NEEDED"));
    assert.equal(await exists("/etc/containers/registries.conf.d"), false, "the drop-in dir Shoal created is gone again");
  });
});
