// The Dockerfile's shape, checked without building it (e2e/containers builds it with Podman and runs
// the chart's pods from it): the stages, that the runtime stage runs nothing (no npm, no shell step)
// and takes Node, production dependencies and compiled code from the build stage, user and
// entrypoint; that the entrypoint exists in the compiled tree the image copies, that every package
// the compiled cmd/ and pkg/ import is a production dependency (`npm prune --omit=dev` keeps nothing
// else), and that the chart agrees.
import assert from "node:assert/strict";
import { readFile, readdir } from "node:fs/promises";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { REPO_ROOT } from "./helm-binary.js";
import { at, only, render } from "./render.js";
import { SHOAL_NODE_FLAGS } from "../../../pkg/config/index.js";

const MAIN = "/app/dist/cmd/shoal/main.js";
const ENTRYPOINT = ["node", ...SHOAL_NODE_FLAGS, MAIN];
/** The compiled tree this test runs from (dist/ or a dist-* folder), laid out as the image's /app/dist. */
const DIST_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const NON_ROOT_UID = 65532;

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

/** Instructions of a Dockerfile, continuation lines joined, comments and parser directives dropped. */
export function parseDockerfile(text: string): Instruction[] {
  const joined = text.replace(/\\\r?\n/g, " ");
  const instructions: Instruction[] = [];
  for (const raw of joined.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const match = /^(\S+)\s+(.*)$/.exec(line);
    assert.ok(match, `Dockerfile line without arguments: ${line}`);
    instructions.push({ keyword: (match[1] ?? "").toUpperCase(), args: (match[2] ?? "").trim() });
  }
  return instructions;
}

/** Stages: the instructions from one FROM up to the next. */
function stages(instructions: readonly Instruction[]): Instruction[][] {
  const result: Instruction[][] = [];
  for (const instruction of instructions) {
    if (instruction.keyword === "FROM") result.push([]);
    result.at(-1)?.push(instruction);
  }
  return result;
}

async function jsFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith(".js") && !e.name.endsWith(".test.js")).map((e) => join(e.parentPath, e.name));
}

function packageOf(specifier: string): string {
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : (parts[0] ?? specifier);
}

describe("Dockerfile", () => {
  it("builds on node:24 (Debian), runs on the same Debian's slim image with Node, production dependencies and code copied in, as uid 65532, with the one shoal entrypoint", async () => {
    const all = parseDockerfile(await readFile(join(REPO_ROOT, "Dockerfile"), "utf8"));
    const [build, runtime, ...extra] = stages(all);
    assert.ok(build && runtime, "two stages: build and runtime");
    assert.deepEqual(extra, []);
    const buildFrom = /^node:24-(bookworm|trixie)\s+AS\s+build$/i.exec(build[0]?.args ?? "");
    assert.ok(buildFrom, "build stage: Node 24 on Debian");
    assert.equal(
      runtime[0]?.args,
      `debian:${buildFrom[1] ?? ""}-slim`,
      "runtime stage: the build stage's Debian release, slim (the Node binary needs its libc and libstdc++)",
    );
    assert.ok(
      build.some((i) => i.keyword === "RUN" && /\bnpm prune\b.*--omit=dev/.test(i.args)),
      "the build stage drops dev dependencies",
    );
    assert.deepEqual(
      runtime.filter((i) => i.keyword === "RUN"),
      [],
      "the runtime stage runs nothing: no npm, no package manager",
    );
    const copies = runtime.filter((i) => i.keyword === "COPY").map((i) => i.args);
    assert.ok(copies.includes("--from=build /out/node /usr/local/bin/node"), "Node from the build stage");
    assert.ok(
      copies.includes("--from=build /out/deps /app") && copies.includes("--from=build /out/app /app"),
      "dependencies and code from the build stage",
    );
    const cut = build.filter((i) => i.keyword === "RUN").at(-1)?.args ?? "";
    for (const part of ["dist/cmd", "dist/pkg", "package.json", "node_modules"])
      assert.ok(cut.includes(part), `the runtime tree has ${part}`);
    const users = runtime.filter((i) => i.keyword === "USER");
    assert.equal(users.at(-1)?.args, `${NON_ROOT_UID}:${NON_ROOT_UID}`, "the image runs as a non-root uid by default");
    const entrypoint = runtime.filter((i) => i.keyword === "ENTRYPOINT").at(-1);
    assert.deepEqual(JSON.parse(entrypoint?.args ?? "null"), ENTRYPOINT, "exec-form entrypoint: signals reach node directly");
    const env: Record<string, string> = {};
    for (const instruction of runtime.filter((i) => i.keyword === "ENV")) {
      const [key = "", ...value] = instruction.args.split("=");
      env[key] = value.join("=");
    }
    assert.deepEqual(
      env,
      { NODE_ENV: "production" },
      "the runtime environment is NODE_ENV only: the agent keeps glibc's defaults, the chart gives the controller its own (CONTROLLER_NODE_ENV)",
    );
    const ignore = (await readFile(join(REPO_ROOT, ".dockerignore"), "utf8")).split("\n").map((l) => l.trim());
    for (const entry of ["node_modules", "dist", "dist-*", ".cache", ".git"])
      assert.ok(ignore.includes(entry), `.dockerignore excludes ${entry}`);
  });

  it("the entrypoint exists in the compiled tree and every package it can import is a production dependency", async () => {
    await readFile(join(DIST_ROOT, "cmd", "shoal", "main.js"));
    const manifest = JSON.parse(await readFile(join(REPO_ROOT, "package.json"), "utf8")) as { dependencies?: Record<string, string> };
    const production = new Set(Object.keys(manifest.dependencies ?? {}));
    const missing = new Set<string>();
    for (const file of [...(await jsFiles(join(DIST_ROOT, "cmd"))), ...(await jsFiles(join(DIST_ROOT, "pkg")))]) {
      const source = await readFile(file, "utf8");
      for (const match of source.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^import\s+)["']([^"']+)["']/gm)) {
        const specifier = match[1] ?? "";
        if (specifier.startsWith(".") || specifier.startsWith("node:") || specifier.startsWith("/")) continue;
        if (!production.has(packageOf(specifier))) missing.add(`${packageOf(specifier)} (${relative(DIST_ROOT, file)})`);
      }
    }
    assert.deepEqual([...missing].sort(), [], "imported by code the image ships but not in package.json dependencies");
  });

  it("the chart runs the image's entrypoint path and its non-root uid", async () => {
    const objects = await render({});
    const ds = only(objects, "DaemonSet");
    const containers = at(ds, "spec", "template", "spec", "containers") as {
      name: string;
      lifecycle?: unknown;
      securityContext?: { runAsUser?: number };
    }[];
    const restore = containers.find((c) => c.name === "restore-on-stop");
    assert.deepEqual((at(restore, "lifecycle", "preStop", "exec", "command") as string[]).slice(0, 2), ["node", MAIN]);
    assert.equal(containers.find((c) => c.name === "agent")?.securityContext?.runAsUser, NON_ROOT_UID);
    assert.equal(at(only(objects, "Deployment"), "spec", "template", "spec", "securityContext", "runAsUser"), NON_ROOT_UID);
  });
});
