import { type Logger, pino } from "pino";
import { EventRecorder, loadKubeConfig } from "../../pkg/k8s/index.js";
import { ConfigError, formatHelp, parseOptions } from "../../pkg/config/index.js";
import {
  type ConfigureReport,
  type ConfigureResult,
  type FileChange,
  RuntimeConfigError,
  type RuntimeOptionField,
  configureNode,
  restoreNode,
} from "../../pkg/runtime/index.js";
import { WELL_KNOWN_REGISTRIES } from "../agent/options.js";
import { type ConfigureCliOptions, configureOptionSpecs } from "./options.js";

const USAGE = "shoal configure --mirror-url URL [flags] | shoal configure --restore [flags]";
const SUMMARY = [
  "Points the node's container runtime at the Shoal agent: containerd hosts.toml files (per registry or",
  "_default) and a CRI-O registries.conf.d drop-in, keeping a backup of whatever was there (--restore puts it",
  "back). Checks that the runtime will use them (config_path, legacy mirrors, containerd >= 2.1's single",
  "directory) and reports problems on stderr and in <state-dir>/configure-report.json. Never restarts the runtime.",
  "Exit codes: 0 done (also with problems, unless --strict), 1 problems of severity error with --strict, 2 bad usage.",
].join("\n");

const FLAG_OF_FIELD: Record<RuntimeOptionField, string> = {
  hostRoot: "--host-root",
  containerdConfig: "--containerd-config",
  hostsDir: "--hosts-dir",
  crioRegistriesDir: "--crio-registries-dir",
  stateDir: "--state-dir",
};

const VERB: Record<FileChange["action"], [now: string, dryRun: string]> = {
  created: ["created", "would create"],
  updated: ["replaced", "would replace"],
  unchanged: ["unchanged", "unchanged"],
  restored: ["restored", "would restore"],
  removed: ["removed", "would remove"],
  kept: ["kept (changed by someone else)", "would keep (changed by someone else)"],
};

/** `shoal configure`. Returns the exit code. */
export async function configureMain(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  let options: ConfigureCliOptions;
  try {
    const parsed = parseOptions(configureOptionSpecs, argv, env);
    if (parsed.help) {
      console.log(formatHelp(USAGE, SUMMARY, configureOptionSpecs));
      return 0;
    }
    if (parsed.positionals.length > 0)
      throw new ConfigError("ERR_CONFIG_UNKNOWN_FLAG", `unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    options = parsed.options;
    if (!options.restore && options.mirrorUrl === undefined) {
      throw new ConfigError(
        "ERR_CONFIG_MISSING_VALUE",
        "--mirror-url (SHOAL_MIRROR_URL) is required: the agent's mirror as the runtime reaches it, e.g. http://127.0.0.1:5050",
      );
    }
  } catch (error) {
    console.error(`shoal configure: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }

  const logger = pino({ level: options.logLevel, base: { component: "configure" } }, pino.destination(2));
  const controller = new AbortController();
  const onSignal = (): void => {
    controller.abort(new Error("interrupted"));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const common = {
    hostRoot: options.hostRoot,
    containerdConfig: options.containerdConfig,
    hostsDir: options.hostsDir,
    crioRegistriesDir: options.crioRegistriesDir,
    stateDir: options.stateDir,
    dryRun: options.dryRun,
    logger,
    signal: controller.signal,
  };
  let result: ConfigureResult;
  try {
    result =
      options.restore || options.mirrorUrl === undefined
        ? await restoreNode(common)
        : await configureNode({
            ...common,
            mirrorUrl: options.mirrorUrl,
            registries: options.registries,
            crioDefaultRegistries: WELL_KNOWN_REGISTRIES,
            runtime: options.runtime,
          });
  } catch (error) {
    if (error instanceof RuntimeConfigError) {
      const flag = error.field === undefined ? "" : `${FLAG_OF_FIELD[error.field]}: `;
      console.error(`shoal configure: ${flag}${error.message}`);
      return 2;
    }
    if (controller.signal.aborted) return 130;
    // Unexpected (I/O on the node, a bug): say so, but do not keep the agent from starting.
    console.error(`shoal configure: failed: ${error instanceof Error ? error.message : String(error)}`);
    return options.strict ? 1 : 0;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  printResult(result, options);
  if (options.eventPod !== undefined) await recordEvents(result.report, options.eventPod, options.kubeconfig, logger);
  return options.strict && !result.report.ok ? 1 : 0;
}

/** Each problem that needs attention as a Warning Event on the Pod (kubectl describe pod shows them). */
async function recordEvents(
  report: ConfigureReport,
  pod: { namespace: string; name: string },
  kubeconfig: string | undefined,
  logger: Logger,
): Promise<void> {
  let recorder: EventRecorder;
  try {
    const kubeConfig = loadKubeConfig(kubeconfig === undefined ? { inCluster: true } : { file: kubeconfig });
    recorder = new EventRecorder({ kubeConfig, component: "shoal-configure", instance: pod.name, logger });
  } catch (error) {
    // Events are for people; the report file and the agent's metric carry the same facts.
    console.error(`shoal configure: --event-pod: no Events recorded: ${error instanceof Error ? error.message : String(error)}`);
    return;
  }
  const object = { kind: "Pod", apiVersion: "v1", namespace: pod.namespace, name: pod.name };
  const attention = report.problems.filter((p) => p.severity !== "info");
  for (const problem of attention) recorder.record(object, "Warning", eventReason(problem.code), problem.message);
  if (attention.length === 0 && report.action === "configure") {
    const effective = report.runtimes.filter((r) => r.mirrorEffective).map((r) => r.runtime);
    recorder.record(
      object,
      "Normal",
      "RuntimeConfigured",
      `pulls of ${effective.join(" and ") || "no runtime"} go through the agent${report.dryRun ? " (dry run)" : ""}`,
    );
  }
  await recorder.close();
}

/** CONFIG_PATH_NOT_SET → ConfigPathNotSet: Event reasons are UpperCamelCase. */
export function eventReason(code: string): string {
  return code
    .toLowerCase()
    .split("_")
    .map((word) => word.charAt(0).toUpperCase() + word.slice(1))
    .join("");
}

/** Changes on stdout (with the content under --dry-run), problems on stderr, one line each. */
function printResult(result: ConfigureResult, options: ConfigureCliOptions): void {
  const { report } = result;
  for (const change of report.changes) {
    const verb = VERB[change.action][options.dryRun ? 1 : 0];
    const backup = change.backup !== undefined && change.action === "updated" ? ` (original kept in ${change.backup})` : "";
    console.log(`${verb} ${change.path}${backup}`);
    if (options.dryRun && (change.action === "created" || change.action === "updated")) {
      const content = result.files.find((f) => f.path === change.path)?.content ?? "";
      console.log(content.replace(/^/gm, "    ").trimEnd());
    }
  }
  for (const problem of report.problems) console.error(`shoal configure: ${problem.severity} ${problem.code}: ${problem.message}`);
  console.log(summaryLine(report, options));
}

function summaryLine(report: ConfigureReport, options: ConfigureCliOptions): string {
  const errors = report.problems.filter((p) => p.severity === "error").length;
  const warnings = report.problems.filter((p) => p.severity === "warning").length;
  const counts = `${errors} error${errors === 1 ? "" : "s"}, ${warnings} warning${warnings === 1 ? "" : "s"}`;
  if (report.action === "restore") return `restore ${options.dryRun ? "(dry run) " : ""}done: ${report.changes.length} file(s); ${counts}`;
  const runtimes = report.runtimes.map(
    (r) => `${r.runtime}: ${r.mirrorEffective ? "pulls go through the agent" : "pulls may NOT go through the agent"}`,
  );
  const where = options.dryRun ? "dry run, nothing written" : `report in ${options.stateDir}/configure-report.json`;
  return `${runtimes.length > 0 ? runtimes.join("; ") : "no runtime configured"} (${counts}; ${where})`;
}
