import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { CustomObjectsApi } from "@kubernetes/client-node";
import { KubeApiDouble } from "../../pkg/k8s/testing/index.js";
import { eventually } from "../../pkg/tracker/testing/helpers.js";

const SHOAL = fileURLToPath(new URL("../shoal/main.js", import.meta.url));
const GROUP = { group: "shoal.dev", version: "v1alpha1", plural: "imageprefetches" } as const;

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function run(args: readonly string[], env: Record<string, string> = {}): { done: Promise<Run> } {
  const child = spawn(process.execPath, [SHOAL, "prefetch", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { PATH: process.env.PATH ?? "", HOME: "/nonexistent", ...env },
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  return {
    done: new Promise((resolve) => {
      child.on("exit", (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
    }),
  };
}

describe("shoal prefetch", () => {
  let api: KubeApiDouble;
  let dir: string;
  let kubeconfig: string;
  before(async () => {
    api = await KubeApiDouble.start();
    dir = await mkdtemp(join(tmpdir(), "shoal-prefetch-cli-"));
    kubeconfig = join(dir, "config");
    await writeFile(kubeconfig, api.kubeconfigYaml());
  });
  after(async () => {
    await api.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("creates the ImagePrefetch the flags describe", async () => {
    const result = await run([
      "ghcr.io/acme/web:v2",
      "registry.example:5000/team/api@sha256:" + "a".repeat(64),
      "--seeds-per-zone",
      "2",
      "--zones",
      "zone-a,zone-b",
      "--platform",
      "linux/arm64",
      "--pull-secret",
      "regcred",
      "--ttl",
      "24h",
      "--namespace",
      "team",
      "--name",
      "rollout-42",
      "--kubeconfig",
      kubeconfig,
    ]).done;
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /imageprefetch\.shoal\.dev\/rollout-42 created in namespace team/);
    const object = api.object("imageprefetches", "team", "rollout-42");
    assert.deepEqual(object?.spec, {
      images: ["ghcr.io/acme/web:v2", `registry.example:5000/team/api@sha256:${"a".repeat(64)}`],
      platforms: ["linux/arm64"],
      target: { seedsPerZone: 2, zones: ["zone-a", "zone-b"] },
      pullSecrets: ["regcred"],
      ttl: "24h",
    });
    assert.equal(object.metadata.generation, 1);
  });

  it("--wait follows the status: exit 0 when Ready, 1 when Failed", async () => {
    const objects = api.kubeConfig().makeApiClient(CustomObjectsApi);
    for (const [name, outcome] of [
      ["ready-one", "ready"],
      ["failed-one", "failed"],
    ] as const) {
      const child = run(["docker.io/library/nginx:1.27", "--name", name, "--namespace", "team", "--wait", "--timeout", "20s"], {
        KUBECONFIG: kubeconfig,
      });
      const created = await eventually(() => {
        const object = api.object("imageprefetches", "team", name);
        assert.ok(object !== undefined);
        return object;
      }, 10_000);
      const conditions =
        outcome === "ready"
          ? [
              {
                type: "Ready",
                status: "True",
                reason: "Seeded",
                message: "2/2 seeds",
                lastTransitionTime: "2026-01-01T00:00:01Z",
                observedGeneration: 1,
              },
            ]
          : [
              {
                type: "Failed",
                status: "True",
                reason: "ReferenceNotFound",
                message: "docker.io has no manifest library/nginx:1.27",
                lastTransitionTime: "2026-01-01T00:00:01Z",
                observedGeneration: 1,
              },
            ];
      await objects.replaceNamespacedCustomObjectStatus({
        ...GROUP,
        namespace: "team",
        name,
        body: { ...created, status: { progress: "2/2", startTime: "2026-01-01T00:00:00Z", readyTime: "2026-01-01T00:00:07Z", conditions } },
      });
      const result = await child.done;
      if (outcome === "ready") {
        assert.equal(result.code, 0, result.stderr);
        assert.match(result.stdout, /ready-one: Ready after 7 s; 2\/2 seeds/);
      } else {
        assert.equal(result.code, 1);
        assert.match(result.stderr, /failed-one failed: ReferenceNotFound: docker\.io has no manifest/);
      }
    }
  });

  it("--dry-run prints the object; bad usage exits 2 naming the flag or argument", async () => {
    const dry = await run(["nginx", "--node-selector", "pool=gpu", "--dry-run", "--kubeconfig", kubeconfig, "--namespace", "x"]).done;
    assert.equal(dry.code, 0, dry.stderr);
    const printed = JSON.parse(dry.stdout) as { metadata: { generateName?: string; namespace?: string }; spec: unknown };
    assert.deepEqual(printed.spec, { images: ["nginx"], target: { nodeSelector: { pool: "gpu" } } });
    assert.deepEqual(printed.metadata, { generateName: "prefetch-", namespace: "x" });
    const cases: [string[], RegExp][] = [
      [[], /expected at least one image reference/],
      [["UPPER/Case:bad tag"], /argument 1/],
      [["nginx", "--seeds-per-zone", "0"], /--seeds-per-zone/],
      [["nginx", "--node-selector", "pool=gpu", "--seeds-per-zone", "2"], /--node-selector cannot be combined/],
      [["nginx", "--platform", "amd64"], /--platform/],
      [["nginx", "--start-at", "tomorrow"], /--start-at/],
      [["nginx", "--kubeconfig", join(dir, "missing")], /--kubeconfig/],
    ];
    for (const [args, message] of cases) {
      const result = await run(args).done;
      assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, message, args.join(" "));
    }
  });

  it("an API error is exit 1 with the API's message", async () => {
    api.failRequests({ verb: "create", resource: "imageprefetches" }, { status: 403, reason: "Forbidden" }, 1);
    const result = await run(["nginx", "--kubeconfig", kubeconfig, "--namespace", "team"]).done;
    assert.equal(result.code, 1);
    assert.match(result.stderr, /create ImagePrefetch in namespace team: 403 Forbidden/);
  });
});
