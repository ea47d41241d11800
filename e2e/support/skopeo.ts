import { HarnessError } from "./errors.js";
import { type CommandResult, inNetns, runCommand } from "./process.js";

export const SKOPEO_BINARY = "skopeo";
/** Generous: pushes of benchmark images of several GB go through here too. */
export const SKOPEO_TIMEOUT_MS = 300_000;

export interface SkopeoOptions {
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Where skopeo buffers blobs (`--tmpdir`); default the system's. */
  readonly tmpDir?: string;
  readonly binary?: string;
  /** Run inside this network namespace (`ip netns exec`), e.g. to reach a registry listening only there. */
  readonly netns?: string;
}

export interface SkopeoPushOptions extends SkopeoOptions {
  /** An OCI image layout directory, e.g. from generateImageLayout. */
  readonly layoutDir: string;
  /** The layout's tag (org.opencontainers.image.ref.name). */
  readonly tag: string;
  /** `HOST:PORT/REPO:TAG` without transport, e.g. `127.0.0.1:5000/shoal/app:v1`. */
  readonly destination: string;
  /** Copy every platform of an index (`--all`); default true. */
  readonly all?: boolean;
}

export interface SkopeoPullOptions extends SkopeoOptions {
  /** `HOST:PORT/REPO:TAG` or `HOST:PORT/REPO@DIGEST` without transport. */
  readonly source: string;
  readonly destDir: string;
  /** `dir` (one file per blob) or `oci` (an image layout tagged `tag`); default `oci`. */
  readonly format?: "dir" | "oci";
  /** Tag inside an `oci` destination; default "latest". */
  readonly tag?: string;
  /** Copy every platform of an index (`--all`); default false (the host's platform only). */
  readonly all?: boolean;
}

/**
 * Pushes an OCI layout to a plain-HTTP registry: `skopeo copy --all --preserve-digests
 * --dest-tls-verify=false oci:DIR:TAG docker://DEST`.
 *
 * `--preserve-digests` matters: without it skopeo 1.9 gzips uncompressed layers on the way to a
 * docker:// destination, so the registry would hold different blobs and manifests than the layout.
 */
export async function skopeoPushLayout(options: SkopeoPushOptions): Promise<CommandResult> {
  const args = ["copy", "--preserve-digests", "--dest-tls-verify=false", "--retry-times", "0"];
  if (options.all ?? true) args.push("--all");
  args.push(`oci:${checkPathForTransport(options.layoutDir)}:${options.tag}`, `docker://${options.destination}`);
  return skopeo(args, options);
}

/**
 * Pulls from a plain-HTTP registry or mirror into a directory: `skopeo copy --src-tls-verify=false
 * docker://SRC dir:DEST` (or `oci:DEST:TAG`). Digests are preserved, so blobs can be compared.
 */
export async function skopeoCopyToDir(options: SkopeoPullOptions): Promise<CommandResult> {
  const format = options.format ?? "oci";
  const dest = checkPathForTransport(options.destDir);
  const args = ["copy", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0"];
  if (options.all ?? false) args.push("--all");
  args.push(`docker://${options.source}`, format === "dir" ? `dir:${dest}` : `oci:${dest}:${options.tag ?? "latest"}`);
  return skopeo(args, options);
}

/** The raw manifest or index bytes a plain-HTTP registry serves for `ref` (`HOST:PORT/REPO:TAG`). */
export async function skopeoInspectRaw(ref: string, options: SkopeoOptions = {}): Promise<string> {
  return (await skopeo(["inspect", "--raw", "--tls-verify=false", "--retry-times", "0", `docker://${ref}`], options)).stdout;
}

/**
 * Runs skopeo with `--insecure-policy`, so it needs no /etc/containers/policy.json; the global
 * `--command-timeout` backs up our own process timeout.
 */
export async function skopeo(args: readonly string[], options: SkopeoOptions = {}): Promise<CommandResult> {
  const timeoutMs = options.timeoutMs ?? SKOPEO_TIMEOUT_MS;
  const global = ["--insecure-policy", "--command-timeout", `${Math.ceil(timeoutMs / 1000)}s`];
  if (options.tmpDir !== undefined) global.push("--tmpdir", options.tmpDir);
  const { command, args: commandArgs } = inNetns(options.netns, options.binary ?? SKOPEO_BINARY, [...global, ...args]);
  return runCommand(command, commandArgs, { timeoutMs: timeoutMs + 5_000, signal: options.signal });
}

/** skopeo splits `oci:PATH:TAG` at the first colon after the path; a colon inside PATH would be misread. */
function checkPathForTransport(path: string): string {
  if (path.includes(":")) throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `skopeo cannot address a path containing ':': ${path}`);
  return path;
}
