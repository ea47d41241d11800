// The images the suites run: the shoal image built from the repository's Dockerfile, and the tools
// image (docker-registry, skopeo, catatonit). Both come from e2e/image/build.sh, run before each suite:
// the bases are built once, the Dockerfile every time (podman's layer cache makes an unchanged tree
// a matter of seconds), so a suite never runs an image older than the code.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "../../charts/shoal/tests/helm-binary.js";
import { HarnessError } from "../support/errors.js";
import { debugLog, describeError, runCommand } from "../support/process.js";

/** The tag build.sh gives the image by default: package.json's version, the chart's appVersion. */
const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string }).version;

/** `localhost/shoal`: the chart's image.repository in the suites, so the rendered image is the built one. */
export const SHOAL_REPOSITORY = "localhost/shoal";
export const SHOAL_IMAGE = `${SHOAL_REPOSITORY}:${VERSION}`;
export const TOOLS_IMAGE = "localhost/shoal-e2e-tools:bookworm";
/** A cold build (mmdebstrap, npm ci in the build stage) takes 1–3 minutes here. */
const BUILD_TIMEOUT_MS = 600_000;

export async function buildImages(): Promise<void> {
  const started = performance.now();
  try {
    const { stdout } = await runCommand("bash", [join(REPO_ROOT, "e2e", "image", "build.sh"), "--tag", SHOAL_IMAGE], {
      timeoutMs: BUILD_TIMEOUT_MS,
      env: { ...process.env, SHOAL_E2E_TOOLS_IMAGE: TOOLS_IMAGE },
    });
    debugLog(`containers: images built in ${((performance.now() - started) / 1000).toFixed(1)} s\n${stdout}`);
  } catch (cause) {
    throw new HarnessError("ERR_HARNESS_START", `e2e/image/build.sh failed: ${describeError(cause)}`, { cause });
  }
}
