import { rmdir } from "node:fs/promises";
import { dirname } from "node:path";
import type { Logger } from "pino";
import { writeFileAtomic } from "../util/index.js";
import { removeFile } from "./atomic-file.js";
import { inspectContainerd, shadowingHostDirs } from "./containerd-inspect.js";
import { crioRegistries, crioReloadNotice, shadowingDropIns } from "./crio-inspect.js";
import { CRIO_DROP_IN_NAME, checkCrioRegistriesConf, renderCrioDropIn } from "./crio.js";
import { RuntimeConfigError, errnoCode, isRuntimeConfigError } from "./errors.js";
import { HostRoot, isWithin } from "./host-root.js";
import { DEFAULT_HOST_NAMESPACE, type RegistryTarget, renderHostsToml } from "./hosts-toml.js";
import { type DesiredFile, ManagedFiles } from "./managed-files.js";
import {
  CONFIGURE_REPORT_FILE,
  CONFIGURE_REPORT_SCHEMA_VERSION,
  type ConfigureReport,
  type FileChange,
  type Problem,
  type RuntimeKind,
  type RuntimeStatus,
  formatConfigureReport,
  reportIsOk,
} from "./report.js";

export type RuntimeSelection = "auto" | RuntimeKind;

/** Where things are on the node (node paths; all resolved under the host root). */
export interface NodePaths {
  readonly containerdConfig: string;
  readonly hostsDir: string;
  readonly crioRegistriesDir: string;
  /** Backups, backup state and the report. */
  readonly stateDir: string;
}

interface CommonOptions extends NodePaths {
  /** Where the node's root file system is mounted in this container ("/" on the node itself). */
  readonly hostRoot: string;
  readonly dryRun: boolean;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  /** Clock for the report's timestamp (tests fix it). */
  readonly now?: () => Date;
}

export interface ConfigureOptions extends CommonOptions {
  /** The agent's mirror, e.g. `http://127.0.0.1:5050` (origin only, no path). */
  readonly mirrorUrl: string;
  readonly registries: readonly RegistryTarget[];
  /** CRI-O has no catch-all registry prefix: there `_default` stands for these registries. */
  readonly crioDefaultRegistries: readonly string[];
  readonly runtime: RuntimeSelection;
}

export type RestoreOptions = CommonOptions;

export interface ConfigureResult {
  readonly report: ConfigureReport;
  /** What is (or, with dryRun, would be) written; for printing. */
  readonly files: readonly DesiredFile[];
}

/**
 * Writes the runtime mirror configuration for the node mounted at `hostRoot` and checks that the
 * runtime will use it. Never restarts or signals a runtime. Problems go into the report; only bad
 * options (paths outside the host root, a missing host root) throw RuntimeConfigError.
 */
export async function configureNode(options: ConfigureOptions): Promise<ConfigureResult> {
  const { root, paths } = await openNode(options);
  const problems: Problem[] = [];
  const runtimes: RuntimeStatus[] = [];
  const desired: DesiredFile[] = [];
  const crioMainConf = `${dirname(paths.crioRegistriesDir)}/registries.conf`;

  const containerdPresent = (await root.exists(paths.containerdConfig)) || (await root.exists(paths.hostsDir));
  const crioPresent = (await root.exists(paths.crioRegistriesDir)) || (await root.exists(crioMainConf));
  const useContainerd = options.runtime === "containerd" || (options.runtime === "auto" && containerdPresent);
  const useCrio = options.runtime === "crio" || (options.runtime === "auto" && crioPresent);
  if (!useContainerd && !useCrio) {
    problems.push({
      code: "NO_RUNTIME_FOUND",
      severity: "error",
      message: `found neither ${paths.containerdConfig} nor ${paths.hostsDir} (containerd) nor ${paths.crioRegistriesDir} or ${crioMainConf} (CRI-O) under the host root: check --host-root and the paths, or name the runtime with --runtime`,
    });
  }

  if (useContainerd) {
    const checked = await inspectContainerd(root, paths, options.signal);
    problems.push(...checked.problems);
    runtimes.push({
      runtime: "containerd",
      configFile: paths.containerdConfig,
      configFound: checked.found,
      ...(checked.facts ? { configVersion: checked.facts.version } : {}),
      ...(checked.facts?.configPath !== undefined ? { configPath: checked.facts.configPath } : {}),
      mirrorEffective: checked.mirrorEffective,
    });
    for (const target of options.registries) {
      desired.push({
        path: `${paths.hostsDir}/${target.registry}/hosts.toml`,
        runtime: "containerd",
        content: renderHostsToml(target, options.mirrorUrl),
      });
    }
    if (options.registries.some((t) => t.registry === DEFAULT_HOST_NAMESPACE)) {
      problems.push(...(await shadowingHostDirs(root, paths.hostsDir, options.registries)));
    }
  }

  if (useCrio) {
    const crioProblems: Problem[] = [];
    const main = await root.readText(crioMainConf, options.signal);
    if (main !== undefined) crioProblems.push(...checkCrioRegistriesConf(main, crioMainConf));
    const registries = crioRegistries(options.registries, options.crioDefaultRegistries);
    if (options.registries.some((t) => t.registry === DEFAULT_HOST_NAMESPACE)) {
      crioProblems.push({
        code: "CRIO_NO_CATCH_ALL",
        severity: "info",
        runtime: "crio",
        message: `CRI-O's registries.conf has no catch-all prefix: there _default stands for ${options.crioDefaultRegistries.join(", ")}; list others with --registries`,
      });
    }
    crioProblems.push(...(await shadowingDropIns(root, paths.crioRegistriesDir, registries, options.signal)));
    const dropIn = `${paths.crioRegistriesDir}/${CRIO_DROP_IN_NAME}`;
    desired.push({ path: dropIn, runtime: "crio", content: renderCrioDropIn(registries, options.mirrorUrl) });
    problems.push(...crioProblems);
    runtimes.push({
      runtime: "crio",
      configFile: crioMainConf,
      configFound: main !== undefined,
      mirrorEffective: !crioProblems.some((p) => p.severity === "error"),
    });
  }

  let changes: FileChange[] = [];
  let state: ManagedFiles | undefined;
  try {
    state = await ManagedFiles.load(root, paths.stateDir, options.signal);
  } catch (error) {
    if (!isRuntimeConfigError(error, "ERR_RUNTIME_STATE_INVALID")) throw error;
    problems.push({
      code: "STATE_INVALID",
      severity: "error",
      file: `${paths.stateDir}/state.json`,
      message: `${error.message}: nothing was changed, so that no backup of the originals is lost; inspect or move the state dir`,
    });
  }
  if (state !== undefined) {
    const outcome = await state.apply(desired, options);
    changes = outcome.changes;
    problems.push(...outcome.problems);
    problems.push(...crioReloadNotice(changes));
  }
  // Nothing written (state unusable, or a write failed) means nothing to pull through either.
  const unwritten = (runtime: RuntimeKind): boolean =>
    state === undefined || problems.some((p) => p.code === "WRITE_FAILED" && p.runtime === runtime);
  const report: ConfigureReport = {
    schemaVersion: CONFIGURE_REPORT_SCHEMA_VERSION,
    action: "configure",
    generatedAt: (options.now?.() ?? new Date()).toISOString(),
    dryRun: options.dryRun,
    mirrorUrl: options.mirrorUrl,
    registries: options.registries.map((t) => t.registry),
    runtimes: runtimes.map((r) => ({ ...r, mirrorEffective: r.mirrorEffective && !unwritten(r.runtime) })),
    changes,
    problems,
    ok: reportIsOk(problems),
  };
  if (options.dryRun) return { report, files: desired };
  return { report: await writeReport(root, paths.stateDir, report, options.signal), files: desired };
}

/**
 * Puts back every original Shoal replaced and removes the files it created, then its own state and
 * report (the chart's post-delete hook). Files changed by someone else since are left alone.
 */
export async function restoreNode(options: RestoreOptions): Promise<ConfigureResult> {
  const { root, paths } = await openNode(options);
  const problems: Problem[] = [];
  let changes: FileChange[] = [];
  try {
    const state = await ManagedFiles.load(root, paths.stateDir, options.signal);
    const outcome = await state.restoreAll(options);
    changes = outcome.changes;
    problems.push(...outcome.problems, ...crioReloadNotice(changes));
    if (!options.dryRun && state.size === 0) {
      await removeFile(await root.locate(`${paths.stateDir}/${CONFIGURE_REPORT_FILE}`));
      await removeDirIfEmpty(root, paths.stateDir);
    }
  } catch (error) {
    if (!isRuntimeConfigError(error, "ERR_RUNTIME_STATE_INVALID")) throw error;
    problems.push({
      code: "STATE_INVALID",
      severity: "error",
      file: `${paths.stateDir}/state.json`,
      message: `${error.message}: nothing was restored; the originals are under ${paths.stateDir}/backups`,
    });
  }
  const report: ConfigureReport = {
    schemaVersion: CONFIGURE_REPORT_SCHEMA_VERSION,
    action: "restore",
    generatedAt: (options.now?.() ?? new Date()).toISOString(),
    dryRun: options.dryRun,
    registries: [],
    runtimes: [],
    changes,
    problems,
    ok: reportIsOk(problems),
  };
  return { report, files: [] };
}

/** Opens the host root and resolves every node path inside it; rejects overlapping directories. */
async function openNode(options: CommonOptions): Promise<{ root: HostRoot; paths: NodePaths }> {
  const root = await HostRoot.open(options.hostRoot);
  const resolve = async (field: keyof NodePaths): Promise<string> => {
    try {
      return await root.resolve(options[field]);
    } catch (error) {
      if (error instanceof RuntimeConfigError) throw new RuntimeConfigError(error.code, error.message, { cause: error, field });
      throw error;
    }
  };
  const paths: NodePaths = {
    containerdConfig: await resolve("containerdConfig"),
    hostsDir: await resolve("hostsDir"),
    crioRegistriesDir: await resolve("crioRegistriesDir"),
    stateDir: await resolve("stateDir"),
  };
  // Backups inside a directory the runtime reads would be read as configuration.
  for (const [name, dir] of [
    ["hosts dir", paths.hostsDir],
    ["CRI-O registries dir", paths.crioRegistriesDir],
  ] as const) {
    if (isWithin(paths.stateDir, dir) || isWithin(dir, paths.stateDir)) {
      throw new RuntimeConfigError(
        "ERR_RUNTIME_PATH_INVALID",
        `the state dir ${paths.stateDir} and the ${name} ${dir} must not contain one another`,
        { field: "stateDir" },
      );
    }
  }
  return { root, paths };
}

async function writeReport(root: HostRoot, stateDir: string, report: ConfigureReport, signal: AbortSignal): Promise<ConfigureReport> {
  const file = `${stateDir}/${CONFIGURE_REPORT_FILE}`;
  try {
    await root.makeDirs(stateDir);
    await writeFileAtomic(await root.locate(file), formatConfigureReport(report), { signal });
    return report;
  } catch (error) {
    signal.throwIfAborted();
    const problems: Problem[] = [
      ...report.problems,
      { code: "WRITE_FAILED", severity: "error", file, message: `cannot write the report ${file} (${errnoCode(error) ?? String(error)})` },
    ];
    return { ...report, problems, ok: false };
  }
}

async function removeDirIfEmpty(root: HostRoot, nodeDir: string): Promise<void> {
  try {
    await rmdir(await root.locate(nodeDir));
  } catch (error) {
    if (!["ENOTEMPTY", "EEXIST", "ENOENT", "ENOTDIR", "EBUSY"].includes(errnoCode(error) ?? "")) throw error;
  }
}
