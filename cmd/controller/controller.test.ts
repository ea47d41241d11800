import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { ConfigError, formatHelp, parseOptions } from "../../pkg/config/index.js";
import { CertificateAuthority } from "../../pkg/identity/index.js";
import { KubeApiDouble, rbacRequestKinds } from "../../pkg/k8s/testing/index.js";
import { GrpcTrackerClient } from "../../pkg/tracker/index.js";
import { eventually, testIdentity } from "../../pkg/tracker/testing/helpers.js";
import { startController } from "./controller.js";
import { resolveKubernetesSettings } from "./kubernetes-settings.js";
import { type ControllerOptions, controllerOptionSpecs, validateControllerOptions } from "./options.js";

const SHOAL = fileURLToPath(new URL("../shoal/main.js", import.meta.url));
const API_REQUESTS_FILE = new URL("../../../pkg/controller/testdata/api-requests.json", import.meta.url);
const PREFETCH_API_REQUESTS_FILE = new URL("../../../pkg/controller/testdata/api-requests-prefetch.json", import.meta.url);

function parse(argv: string[], env: Record<string, string> = {}): ControllerOptions {
  const { options } = parseOptions(controllerOptionSpecs, argv, env);
  validateControllerOptions(options);
  return options;
}

describe("controller options", () => {
  it("has defaults and reads SHOAL_* variables, flags winning", () => {
    const defaults = parse(["--allow-open-membership", "--allow-insecure"]);
    assert.deepEqual(defaults.listen, { host: "0.0.0.0", port: 7070 });
    assert.equal(defaults.membership, "open");
    assert.deepEqual(
      [defaults.caSecret, defaults.issuerListen, defaults.certLifetime, defaults.tokenAudience],
      ["shoal-ca", { host: "0.0.0.0", port: 7071 }, 86_400_000, "shoal"],
    );
    assert.equal(defaults.grantStallTimeout, 10_000);
    const fromEnv = parse(["--grant-stall-timeout", "3s"], {
      SHOAL_MEMBERSHIP: "static",
      SHOAL_ALLOWED_PEERS: "10.0.0.1, node-a,[fd00::1]",
      SHOAL_GRANT_STALL_TIMEOUT: "1m",
      SHOAL_ALLOW_INSECURE: "true",
    });
    assert.deepEqual(fromEnv.allowedPeers, ["10.0.0.1", "node-a", "[fd00::1]"]);
    assert.equal(fromEnv.grantStallTimeout, 3_000);
  });

  it("rejects inconsistent or malformed values naming the option", () => {
    assert.throws(() => parse(["--membership", "static"]), /--membership static needs --allowed-peers/);
    assert.throws(() => parse(["--allowed-peers", "10.0.0.1"]), /only applies with --membership static/);
    assert.throws(
      () => parse(["--membership", "bogus"]),
      (e: unknown) => e instanceof ConfigError && /--membership \(SHOAL_MEMBERSHIP\)/.test(e.message),
    );
    assert.throws(() => parse(["--membership", "static", "--allowed-peers", "bad peer"]), /--allowed-peers/);
    assert.throws(() => parse(["--grant-stall-timeout", "0s"]), /--grant-stall-timeout/);
    assert.throws(() => parse(["--listen", "nowhere"]), /--listen/);
  });

  it("refuses open membership and plaintext outside loopback unless forced, and incomplete certificate flags", () => {
    assert.throws(() => parse([]), /--membership open admits any agent, and --listen 0\.0\.0\.0:7070 is not loopback/);
    assert.equal(parse(["--listen", "127.0.0.1:7070"]).membership, "open");
    assert.throws(
      () => parse(["--membership", "static", "--allowed-peers", "10.0.0.1"]),
      /the tracker on 0\.0\.0\.0:7070 would be plaintext: give --tls-cert, --tls-key and --tls-ca/,
    );
    assert.equal(
      parse(["--membership", "static", "--allowed-peers", "node-a", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"]).tlsCert,
      "c",
    );
    assert.throws(
      () => parse(["--membership", "static", "--allowed-peers", "node-a", "--tls-cert", "c"]),
      /--tls-cert, --tls-key and --tls-ca go together/,
    );
    assert.throws(
      () => parse(["--membership", "kubernetes", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a"]),
      /do not apply with --membership kubernetes/,
    );
    assert.throws(() => parse(["--membership", "kubernetes", "--cert-lifetime", "30s"]), /--cert-lifetime/);
  });

  it("has the Kubernetes options with client-go's election defaults, validated together", () => {
    const k8s = parse(["--membership", "kubernetes"]);
    assert.equal(k8s.agentSelector, "app.kubernetes.io/name=shoal,app.kubernetes.io/component=agent");
    assert.equal(k8s.leaseName, "shoal-controller");
    assert.deepEqual([k8s.leaseDuration, k8s.renewDeadline, k8s.retryPeriod], [15_000, 10_000, 2_000]);
    assert.equal(k8s.kubeconfig, undefined);
    const fromEnv = parse([], {
      SHOAL_MEMBERSHIP: "kubernetes",
      SHOAL_NAMESPACE: "infra",
      SHOAL_IDENTITY: "ctl-0",
      SHOAL_LEASE_DURATION: "20s",
      SHOAL_AGENT_SELECTOR: "app in (shoal)",
    });
    assert.deepEqual(
      [fromEnv.namespace, fromEnv.identity, fromEnv.leaseDuration, fromEnv.agentSelector],
      ["infra", "ctl-0", 20_000, "app in (shoal)"],
    );
    assert.throws(
      () => parse(["--membership", "kubernetes", "--renew-deadline", "15s"]),
      /--renew-deadline \(15000 ms\) must be shorter than --lease-duration/,
    );
    assert.throws(
      () => parse(["--membership", "kubernetes", "--retry-period", "9s"]),
      /--renew-deadline .* must be longer than 1\.2 × --retry-period/,
    );
    assert.throws(
      () => parse(["--membership", "kubernetes", "--candidate-period", "3s"]),
      /--candidate-period \(3000 ms\) must not be longer than --retry-period \(2000 ms\)/,
    );
    assert.equal(parse(["--membership", "kubernetes", "--candidate-period", "500ms"]).candidatePeriod, 500);
    assert.throws(() => parse(["--membership", "kubernetes", "--advertise-host", "controller.example"]), /--advertise-host.*pod IP/);
    assert.throws(() => parse(["--membership", "kubernetes", "--advertise-host", "0.0.0.0"]), /--advertise-host/);
    assert.equal(parse(["--membership", "kubernetes", "--advertise-host", "10.1.2.3"]).advertiseHost, "10.1.2.3");
    assert.equal(parse(["--membership", "kubernetes", "--advertise-host", "[fd00::1]"]).advertiseHost, "fd00::1");
    assert.throws(() => parse(["--advertise-host", "10.1.2.3"]), /--advertise-host only applies with --membership kubernetes/);
    assert.throws(() => parse(["--lease-duration", "1500ms"]), /--lease-duration .*whole seconds/);
    assert.throws(() => parse(["--agent-selector", "app in (shoal"]), /--agent-selector \(SHOAL_AGENT_SELECTOR\)/);
    assert.throws(() => parse(["--namespace", "Not_A_Namespace"]), /--namespace/);
    assert.throws(() => parse(["--lease-name", "UPPER"]), /--lease-name/);
    assert.throws(() => parse(["--kubeconfig", "/tmp/x"]), /--kubeconfig only applies with --membership kubernetes/);
    assert.throws(
      () => parse(["--membership", "kubernetes", "--allowed-peers", "10.0.0.1"]),
      /--allowed-peers only applies with --membership static/,
    );
  });

  it("resolves the kubeconfig, namespace and identity, naming the missing flag", async () => {
    const k8s = parse(["--membership", "kubernetes"]);
    assert.throws(() => resolveKubernetesSettings(k8s, {}), /needs --kubeconfig \(SHOAL_KUBECONFIG\) outside a cluster/);
    const dir = await mkdtemp(join(tmpdir(), "shoal-kubeconfig-"));
    try {
      const file = join(dir, "config");
      await writeFile(
        file,
        JSON.stringify({
          apiVersion: "v1",
          kind: "Config",
          clusters: [{ name: "c", cluster: { server: "http://127.0.0.1:1", "insecure-skip-tls-verify": true } }],
          users: [{ name: "u", user: { token: "t" } }],
          contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
          "current-context": "x",
        }),
      );
      assert.throws(
        () => resolveKubernetesSettings(parse(["--membership", "kubernetes", "--kubeconfig", file]), {}),
        /--namespace \(SHOAL_NAMESPACE\) is required with --kubeconfig/,
      );
      const settings = resolveKubernetesSettings(parse(["--membership", "kubernetes", "--kubeconfig", file, "--namespace", "infra"]), {});
      assert.equal(settings.namespace, "infra");
      assert.equal(settings.identity, hostname());
      assert.equal(settings.kubeConfig.getCurrentCluster()?.server, "http://127.0.0.1:1");
      assert.throws(
        () =>
          resolveKubernetesSettings(
            parse(["--membership", "kubernetes", "--kubeconfig", join(dir, "missing"), "--namespace", "infra"]),
            {},
          ),
        /--kubeconfig \(SHOAL_KUBECONFIG\): cannot load kubeconfig/,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("documents every option in --help", () => {
    const help = formatHelp("shoal controller [flags]", "", controllerOptionSpecs);
    for (const flag of [
      "--listen",
      "--metrics-addr",
      "--membership",
      "--allowed-peers",
      "--grant-stall-timeout",
      "--log-level",
      "--kubeconfig",
      "--namespace",
      "--agent-selector",
      "--lease-name",
      "--identity",
      "--lease-duration",
      "--renew-deadline",
      "--retry-period",
    ]) {
      assert.ok(help.includes(flag), flag);
    }
    assert.ok(help.includes("SHOAL_GRANT_STALL_TIMEOUT"));
  });
});

describe("controller", () => {
  it("serves the tracker, metrics and readiness, and stops cleanly", async () => {
    const options = parse(["--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--log-level", "fatal"]);
    const controller = await startController(options, pino({ level: "silent" }));
    const client = new GrpcTrackerClient({
      address: controller.trackerAddress,
      identity: testIdentity("a"),
      logger: pino({ level: "silent" }),
    });
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
    const child = spawn(process.execPath, [SHOAL, "controller", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
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

  it("runs as `shoal controller --membership kubernetes`: leads, is Ready, releases the Lease on SIGTERM", async () => {
    const api = await KubeApiDouble.start();
    const { certificatePem, keyPem } = CertificateAuthority.createSelfSigned({ commonName: "test CA", lifetimeMs: 3_600_000 });
    api.putSecret({
      namespace: "shoal",
      name: "shoal-ca",
      type: "kubernetes.io/tls",
      data: { "tls.crt": certificatePem, "tls.key": keyPem },
    });
    const dir = await mkdtemp(join(tmpdir(), "shoal-kubeconfig-"));
    const kubeconfig = join(dir, "config");
    await writeFile(kubeconfig, api.kubeconfigYaml());
    const args = ["controller", "--membership", "kubernetes", "--kubeconfig", kubeconfig, "--namespace", "shoal", "--identity", "ctl-0"];
    const timing = [
      "--lease-duration",
      "2s",
      "--renew-deadline",
      "1s",
      "--retry-period",
      "200ms",
      "--listen",
      "127.0.0.1:0",
      "--metrics-addr",
      "127.0.0.1:0",
      "--issuer-listen",
      "127.0.0.1:0",
    ];
    const child = spawn(process.execPath, [SHOAL, ...args, ...timing], { stdio: ["ignore", "pipe", "pipe"] });
    try {
      let metrics = "";
      for await (const line of createInterface({ input: child.stdout })) {
        const record = JSON.parse(line) as { msg?: string; metrics?: string };
        if (record.msg === "controller started") {
          metrics = record.metrics ?? "";
          break;
        }
      }
      assert.notEqual(metrics, "", "logged its addresses");
      await eventually(async () => {
        assert.equal((await fetch(`${metrics}/readyz`)).status, 200);
      }, 10_000);
      assert.equal((api.object("leases", "shoal", "shoal-controller")?.spec as { holderIdentity?: string }).holderIdentity, "ctl-0");
      child.kill("SIGTERM");
      const [code] = (await once(child, "exit")) as [number | null];
      assert.equal(code, 0);
      assert.equal(
        (api.object("leases", "shoal", "shoal-controller")?.spec as { holderIdentity?: string }).holderIdentity,
        "",
        "released on graceful stop",
      );
      // Every request it made is in the list the chart's Role is checked against.
      const allowed = [
        ...(JSON.parse(await readFile(API_REQUESTS_FILE, "utf8")) as unknown[]),
        ...(JSON.parse(await readFile(PREFETCH_API_REQUESTS_FILE, "utf8")) as unknown[]),
      ];
      for (const kind of rbacRequestKinds(api.requests(), "shoal"))
        assert.ok(
          allowed.some((a) => JSON.stringify(a) === JSON.stringify(kind)),
          `not in testdata/api-requests*.json: ${JSON.stringify(kind)}`,
        );
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
      await api.close();
      await rm(dir, { recursive: true, force: true });
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
    const [help, bad, noCluster] = await Promise.all([
      run(["--help"]),
      run(["--membership", "static"]),
      run(["--membership", "kubernetes"]),
    ]);
    assert.equal(help.code, 0);
    assert.match(help.out, /--allowed-peers/);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /needs --allowed-peers/);
    assert.equal(noCluster.code, 2);
    assert.match(noCluster.err, /needs --kubeconfig/);
  });
});
