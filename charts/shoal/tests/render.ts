// Runs helm on the chart source (charts/shoal, not a copy) and parses what it renders.
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { parseAllDocuments } from "yaml";
import { REPO_ROOT, helmBinary } from "./helm-binary.js";

const run = promisify(execFile);

export const CHART_DIR = join(REPO_ROOT, "charts", "shoal");
export const RELEASE = "edge";
export const NAMESPACE = "shoal-system";
const HELM_TIMEOUT_MS = 60_000;

/** A rendered Kubernetes object; fields are checked by the tests, not typed here. */
export interface K8sObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: {
    readonly name: string;
    readonly namespace?: string;
    readonly labels?: Record<string, string>;
    readonly annotations?: Record<string, string>;
  };
  readonly [field: string]: unknown;
}

export interface HelmResult {
  readonly ok: boolean;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs helm with the given arguments; a non-zero exit is a result (ok false), not an exception. */
export async function helm(args: readonly string[], signal: AbortSignal = AbortSignal.timeout(HELM_TIMEOUT_MS)): Promise<HelmResult> {
  const binary = await helmBinary();
  try {
    const { stdout, stderr } = await run(binary, [...args], {
      signal,
      maxBuffer: 64 * 1024 * 1024,
      env: { ...process.env, HELM_CACHE_HOME: join(tmpdir(), "shoal-helm-cache"), HELM_CONFIG_HOME: join(tmpdir(), "shoal-helm-config") },
    });
    return { ok: true, stdout, stderr };
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string; code?: unknown };
    if (typeof failed.code === "number") return { ok: false, stdout: failed.stdout ?? "", stderr: failed.stderr ?? "" };
    throw error;
  }
}

/** Helm arguments for a values object (written as a JSON file, which is YAML). */
async function withValues<T>(values: object, use: (file: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), "shoal-chart-values-"));
  try {
    const file = join(dir, "values.yaml");
    await writeFile(file, JSON.stringify(values));
    return await use(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** `helm template` with these values; the raw result, for tests that expect a failure. */
export async function template(values: object, extraArgs: readonly string[] = []): Promise<HelmResult> {
  return withValues(values, (file) => helm(["template", RELEASE, CHART_DIR, "--namespace", NAMESPACE, "--values", file, ...extraArgs]));
}

export async function lint(values: object): Promise<HelmResult> {
  return withValues(values, (file) => helm(["lint", "--strict", CHART_DIR, "--namespace", NAMESPACE, "--values", file]));
}

/** Renders and parses every document; throws with helm's message if rendering fails. */
export async function render(values: object = {}): Promise<K8sObject[]> {
  const result = await template(values);
  if (!result.ok) throw new Error(`helm template failed:\n${result.stderr}`);
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(result.stdout)) {
    if (doc.errors.length > 0) throw new Error(`helm rendered invalid YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    objects.push(value as K8sObject);
  }
  return objects;
}

/** The one object of this kind (and name suffix); fails the test if there is not exactly one. */
export function only(objects: readonly K8sObject[], kind: string, nameSuffix = ""): K8sObject {
  const found = objects.filter((o) => o.kind === kind && o.metadata.name.endsWith(nameSuffix));
  if (found.length !== 1)
    throw new Error(
      `expected one ${kind}${nameSuffix ? ` named *${nameSuffix}` : ""}, rendered ${found.length}: ${found.map((o) => o.metadata.name).join(", ")}`,
    );
  const [object] = found;
  if (object === undefined) throw new Error("unreachable");
  return object;
}

/** Follows a path of keys and indexes; undefined when any step is missing. */
export function at(value: unknown, ...path: (string | number)[]): unknown {
  let node = value;
  for (const key of path) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Record<string | number, unknown>)[key];
  }
  return node;
}
