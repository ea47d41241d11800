import { readFile } from "node:fs/promises";
import { RuntimeConfigError } from "./errors.js";

/** Written to `<state-dir>/configure-report.json` on the node by every `shoal configure` run. */
export const CONFIGURE_REPORT_FILE = "configure-report.json";
export const CONFIGURE_REPORT_SCHEMA_VERSION = 1;

export type RuntimeKind = "containerd" | "crio";

/**
 * `error`: the runtime will not pull through the agent (or something was not written);
 * `warning`: it may not, depending on the runtime's version or on files Shoal does not own;
 * `info`: worth knowing, nothing to fix.
 */
export type ProblemSeverity = "error" | "warning" | "info";

/** Stable codes; an Event reason or a metric label can be derived from them. */
export type ProblemCode =
  /** --runtime auto found neither a containerd nor a CRI-O configuration. */
  | "NO_RUNTIME_FOUND"
  /** No containerd config.toml: containerd runs on built-in defaults. */
  | "CONTAINERD_CONFIG_NOT_FOUND"
  /** config.toml exists but cannot be read (permissions, a directory…). */
  | "CONTAINERD_CONFIG_UNREADABLE"
  /** config.toml is not valid TOML: containerd itself will not start with it. */
  | "CONTAINERD_CONFIG_INVALID"
  /** `version = N` that no containerd release knows. */
  | "CONTAINERD_CONFIG_VERSION_UNKNOWN"
  /** The CRI plugin is in `disabled_plugins`: the kubelet cannot pull through this containerd at all. */
  | "CONTAINERD_CRI_DISABLED"
  /** CRI `registry.config_path` is not set: the kubelet's pulls ignore the hosts dir. */
  | "CONFIG_PATH_NOT_SET"
  /** `config_path` names directories that do not include the hosts dir written. */
  | "CONFIG_PATH_OTHER_DIR"
  /** `config_path` is a `:`-separated list: containerd >= 2.1 honours only a single directory. */
  | "CONFIG_PATH_MULTIPLE_DIRS"
  /** Legacy `registry.mirrors` without `config_path`: containerd uses them and ignores hosts.toml. */
  | "LEGACY_REGISTRY_MIRRORS"
  /** `registry.mirrors` (or `configs.*.tls`) together with `config_path`: the CRI plugin refuses to load. */
  | "REGISTRY_CONFIG_CONFLICT"
  /** A registry has its own hosts.toml (not Shoal's), which containerd prefers over `_default`. */
  | "HOSTS_TOML_SHADOWS_DEFAULT"
  /** CRI-O's registries.conf is not valid TOML. */
  | "CRIO_REGISTRIES_CONF_INVALID"
  /** registries.conf uses the v1 format (`[registries.search]`), which cannot be mixed with v2 drop-ins. */
  | "CRIO_REGISTRIES_CONF_V1"
  /** Another drop-in, read after Shoal's, redefines a registry prefix Shoal configures. */
  | "CRIO_PREFIX_SHADOWED"
  /** registries.conf has no catch-all: `_default` means the listed well-known registries for CRI-O. */
  | "CRIO_NO_CATCH_ALL"
  /** CRI-O reads registries.conf.d at start and on reload (SIGHUP), which Shoal never triggers. */
  | "CRIO_RELOAD_NEEDED"
  /** A file Shoal wrote was changed by someone else since. */
  | "MANAGED_FILE_MODIFIED"
  /** A file with Shoal's marker but no backup record (state dir lost): adopted as Shoal's own. */
  | "MANAGED_FILE_ADOPTED"
  /** The backup state in the state dir is unreadable: nothing was changed, to keep the originals safe. */
  | "STATE_INVALID"
  /** Writing, backing up or restoring a file failed. */
  | "WRITE_FAILED";

export interface Problem {
  readonly code: ProblemCode;
  readonly severity: ProblemSeverity;
  readonly runtime?: RuntimeKind;
  /** Node path of the file concerned. */
  readonly file?: string;
  /** One sentence a person can act on. */
  readonly message: string;
}

export type FileAction =
  /** Did not exist; written. */
  | "created"
  /** Existed (the original was backed up, or it was Shoal's); replaced. */
  | "updated"
  /** Already exactly what Shoal writes. */
  | "unchanged"
  /** Restore: the backed-up original was put back. */
  | "restored"
  /** Restore: Shoal's file removed (there was none before). */
  | "removed"
  /** Restore: left as it is (changed by someone else since Shoal wrote it). */
  | "kept";

export interface FileChange {
  /** Node path. */
  readonly path: string;
  readonly action: FileAction;
  readonly runtime: RuntimeKind;
  /** Node path of the copy of the original, when there was one. */
  readonly backup?: string;
}

export interface RuntimeStatus {
  readonly runtime: RuntimeKind;
  /** Node path of the configuration inspected (containerd config.toml, CRI-O registries.conf). */
  readonly configFile: string;
  readonly configFound: boolean;
  /** containerd: the config schema (1, 2 or 3; 1 when `version` is absent). */
  readonly configVersion?: number;
  /** containerd: CRI `registry.config_path` as written in config.toml. */
  readonly configPath?: string;
  /** Whether, as far as the configuration shows, the runtime's pulls will go through the agent. */
  readonly mirrorEffective: boolean;
}

/** What one run of `shoal configure` did and found. The agent reads it to raise an Event and a metric. */
export interface ConfigureReport {
  readonly schemaVersion: typeof CONFIGURE_REPORT_SCHEMA_VERSION;
  readonly action: "configure" | "restore";
  /** ISO 8601. */
  readonly generatedAt: string;
  readonly dryRun: boolean;
  readonly mirrorUrl?: string;
  /** `_default` or registry hosts, as configured. */
  readonly registries: readonly string[];
  readonly runtimes: readonly RuntimeStatus[];
  readonly changes: readonly FileChange[];
  readonly problems: readonly Problem[];
  /** No problem of severity `error`. */
  readonly ok: boolean;
}

export function reportIsOk(problems: readonly Problem[]): boolean {
  return !problems.some((p) => p.severity === "error");
}

/** Stable JSON (two-space indent, trailing newline): what is written to the report file. */
export function formatConfigureReport(report: ConfigureReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

/** Reads a report written by `shoal configure`; throws ERR_RUNTIME_STATE_INVALID for anything else. */
export async function readConfigureReport(file: string, signal: AbortSignal): Promise<ConfigureReport> {
  const text = await readFile(file, { encoding: "utf8", signal });
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new RuntimeConfigError("ERR_RUNTIME_STATE_INVALID", `${file} is not JSON`, { cause });
  }
  const candidate = parsed as Partial<ConfigureReport> | null;
  if (
    typeof candidate !== "object" ||
    candidate === null ||
    candidate.schemaVersion !== CONFIGURE_REPORT_SCHEMA_VERSION ||
    !Array.isArray(candidate.problems) ||
    !Array.isArray(candidate.changes) ||
    typeof candidate.ok !== "boolean"
  ) {
    throw new RuntimeConfigError(
      "ERR_RUNTIME_STATE_INVALID",
      `${file} is not a shoal configure report (schema ${CONFIGURE_REPORT_SCHEMA_VERSION})`,
    );
  }
  return candidate as ConfigureReport;
}
