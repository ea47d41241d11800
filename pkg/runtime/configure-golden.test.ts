// Golden tests of `shoal configure` on node file systems under testdata/<case>/node: real containerd
// 1.6 (its own `containerd config default`), 1.7 and 2.x config.toml files and CRI-O setups. The whole
// tree after configuring (hosts.toml files, drop-ins, backups, state, report) must equal
// testdata/<case>/golden byte for byte. Regenerate after an intended change with
//   SHOAL_UPDATE_GOLDEN=1 node --test <dist>/pkg/runtime/configure-golden.test.js
// and review the diff of testdata/*/golden.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { chmod, cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { pino } from "pino";
import { type RegistryTarget, type RuntimeSelection, configureNode, restoreNode } from "./index.js";

/** The source tree's testdata, whether this runs from dist/ or another output folder. */
export const TESTDATA = fileURLToPath(new URL("../../../pkg/runtime/testdata/", import.meta.url));
const UPDATE_ENV = "SHOAL_UPDATE_GOLDEN";
const MIRROR_URL = "http://127.0.0.1:5050";
const NOW = new Date("2026-01-01T00:00:00.000Z");
const REPORT = "var/lib/shoal/configure/configure-report.json";
const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });

interface CaseArgs {
  readonly description: string;
  readonly registries: RegistryTarget[];
  readonly runtime?: RuntimeSelection;
  readonly crioDefaultRegistries?: string[];
}

/** Every file under `dir`, by relative path. */
async function readTree(dir: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const visit = async (relative: string): Promise<void> => {
    for (const entry of await readdir(join(dir, relative), { withFileTypes: true })) {
      const path = relative === "" ? entry.name : `${relative}/${entry.name}`;
      if (entry.isDirectory()) await visit(path);
      else files.set(path, await readFile(join(dir, path)));
    }
  };
  await visit("");
  return files;
}

function assertSameTree(got: Map<string, Buffer>, want: Map<string, Buffer>, what: string, ignore: readonly string[] = []): void {
  const keys = (m: Map<string, Buffer>): string[] => [...m.keys()].filter((k) => !ignore.includes(k)).sort();
  assert.deepEqual(keys(got), keys(want), `${what}: the set of files differs`);
  for (const path of keys(want)) {
    assert.equal(
      got.get(path)?.toString("utf8"),
      want.get(path)?.toString("utf8"),
      `${what}: ${path} differs (${UPDATE_ENV}=1 regenerates goldens)`,
    );
  }
}

function options(root: string, args: CaseArgs) {
  return {
    hostRoot: root,
    mirrorUrl: MIRROR_URL,
    registries: args.registries,
    crioDefaultRegistries: args.crioDefaultRegistries ?? ["docker.io", "ghcr.io", "quay.io"],
    runtime: args.runtime ?? "auto",
    containerdConfig: "/etc/containerd/config.toml",
    hostsDir: "/etc/containerd/certs.d",
    crioRegistriesDir: "/etc/containers/registries.conf.d",
    stateDir: "/var/lib/shoal/configure",
    dryRun: false,
    logger,
    signal: AbortSignal.timeout(30_000),
    now: () => NOW,
  };
}

const cases = readdirSync(TESTDATA, { withFileTypes: true })
  .filter((e) => e.isDirectory())
  .map((e) => e.name)
  .sort();

describe("shoal configure golden files", () => {
  it("has the fixtures of every supported runtime configuration", () => {
    for (const name of [
      "containerd-1.6",
      "containerd-1.7-legacy-mirrors",
      "containerd-2.0",
      "containerd-2.1-multi-dir",
      "crio",
      "containerd-garbled",
    ]) {
      assert.ok(cases.includes(name), `testdata/${name} is missing`);
    }
  });

  for (const name of cases) {
    const args = JSON.parse(readFileSync(join(TESTDATA, name, "args.json"), "utf8")) as CaseArgs;
    it(`${name}: ${args.description}; idempotent; --restore gives back the original tree`, async () => {
      const root = await mkdtemp(join(tmpdir(), `shoal-golden-${name}-`));
      try {
        const node = join(TESTDATA, name, "node");
        await cp(node, root, { recursive: true });
        // state.json records the original's mode: make it independent of the checkout's umask.
        for (const path of (await readTree(root)).keys()) await chmod(join(root, path), 0o644);
        await configureNode(options(root, args));
        const got = await readTree(root);
        const goldenDir = join(TESTDATA, name, "golden");
        if (process.env[UPDATE_ENV] === "1") {
          await rm(goldenDir, { recursive: true, force: true });
          for (const [path, data] of got) {
            await mkdir(dirname(join(goldenDir, path)), { recursive: true });
            await writeFile(join(goldenDir, path), data);
          }
        }
        assertSameTree(got, await readTree(goldenDir), `${name} after configure`);

        const again = await configureNode(options(root, args));
        assert.ok(
          again.report.changes.every((c) => c.action === "unchanged"),
          `second run changed something: ${JSON.stringify(again.report.changes)}`,
        );
        assertSameTree(await readTree(root), got, `${name} after a second configure`, [REPORT]);

        const restored = await restoreNode(options(root, args));
        assert.ok(restored.report.ok, JSON.stringify(restored.report.problems));
        assertSameTree(await readTree(root), await readTree(node), `${name} after --restore`);
      } finally {
        await rm(root, { recursive: true, force: true });
      }
    });
  }
});
