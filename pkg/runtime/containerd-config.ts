import { parse } from "smol-toml";
import type { Problem } from "./report.js";

/** The CRI plugin's registry section, by config schema (containerd 1.x: 1 and 2; containerd 2.x: 3, and 2 migrated). */
const REGISTRY_SECTION_PATHS: Readonly<Record<number, readonly (readonly string[])[]>> = {
  1: [
    ["plugins", "cri", "registry"],
    ["plugins", "io.containerd.grpc.v1.cri", "registry"],
  ],
  2: [["plugins", "io.containerd.grpc.v1.cri", "registry"]],
  3: [["plugins", "io.containerd.cri.v1.images", "registry"]],
};
const KNOWN_VERSIONS = [1, 2, 3];
/** Plugin IDs whose presence in `disabled_plugins` takes the kubelet's pull path away. */
const CRI_PLUGIN_IDS = ["cri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images"];

/** What config.toml says about registries, whatever its schema. */
export interface ContainerdConfigFacts {
  /** `version` (absent means 1). */
  readonly version: number;
  /** CRI `registry.config_path` as written; undefined when not set or empty. */
  readonly configPath: string | undefined;
  /** Registries under the legacy `registry.mirrors`. */
  readonly legacyMirrors: readonly string[];
  /** Registries with `registry.configs.<r>.tls`, which containerd refuses together with config_path. */
  readonly legacyTlsConfigs: readonly string[];
  readonly criDisabled: boolean;
  /** `imports` (containerd >= 1.3), as written. */
  readonly imports: readonly string[];
}

/** Parses config.toml (throws smol-toml's TomlError on invalid TOML). */
export function parseContainerdConfig(text: string): ContainerdConfigFacts {
  const doc = parse(text, { unsafeKeyBehaviour: "drop" }) as Record<string, unknown>;
  const version = typeof doc.version === "number" ? doc.version : 1;
  const paths = REGISTRY_SECTION_PATHS[version] ?? Object.values(REGISTRY_SECTION_PATHS).flat();
  let configPath: string | undefined;
  const legacyMirrors = new Set<string>();
  const legacyTlsConfigs = new Set<string>();
  for (const path of paths) {
    const registry = tableAt(doc, path);
    if (registry === undefined) continue;
    if (typeof registry.config_path === "string" && registry.config_path.trim() !== "") configPath = registry.config_path.trim();
    for (const name of Object.keys(tableAt(registry, ["mirrors"]) ?? {})) legacyMirrors.add(name);
    for (const [name, config] of Object.entries(tableAt(registry, ["configs"]) ?? {})) {
      if (isTable(config) && config.tls !== undefined) legacyTlsConfigs.add(name);
    }
  }
  const disabled = Array.isArray(doc.disabled_plugins) ? doc.disabled_plugins.filter((p): p is string => typeof p === "string") : [];
  const imports = Array.isArray(doc.imports) ? doc.imports.filter((p): p is string => typeof p === "string") : [];
  return {
    version,
    configPath,
    legacyMirrors: [...legacyMirrors].sort(),
    legacyTlsConfigs: [...legacyTlsConfigs].sort(),
    criDisabled: disabled.some((id) => CRI_PLUGIN_IDS.includes(id)),
    imports,
  };
}

/**
 * Folds the registry settings of imported files into the main file's facts. containerd merges
 * imports over the main file, so an import that sets config_path or mirrors wins.
 */
export function mergeImportedFacts(main: ContainerdConfigFacts, imported: readonly ContainerdConfigFacts[]): ContainerdConfigFacts {
  let merged = main;
  for (const facts of imported) {
    merged = {
      ...merged,
      configPath: facts.configPath ?? merged.configPath,
      legacyMirrors: facts.legacyMirrors.length > 0 ? facts.legacyMirrors : merged.legacyMirrors,
      legacyTlsConfigs: facts.legacyTlsConfigs.length > 0 ? facts.legacyTlsConfigs : merged.legacyTlsConfigs,
      criDisabled: merged.criDisabled || facts.criDisabled,
    };
  }
  return merged;
}

/** `config_path` split the way containerd 1.x splits it (filepath.SplitList). */
export function configPathDirs(configPath: string): string[] {
  return configPath
    .split(":")
    .map((d) => d.trim())
    .filter((d) => d !== "");
}

/** The TOML a person adds to config.toml for this schema, to point the CRI plugin at `hostsDir`. */
export function configPathSnippet(version: number, hostsDir: string): string {
  const section = version === 3 ? "io.containerd.cri.v1.images" : "io.containerd.grpc.v1.cri";
  return `[plugins.${JSON.stringify(section)}.registry] config_path = ${JSON.stringify(hostsDir)}`;
}

export interface ContainerdCheck {
  readonly problems: Problem[];
  /** Whether the CRI plugin will read the hosts dir written. */
  readonly mirrorEffective: boolean;
}

/**
 * The problems of a parsed config.toml for pulls through `hostsDir`. `isHostsDir` tells whether a
 * directory named in config_path is the hosts dir (after resolving symlinks on the node).
 */
export async function checkContainerdConfig(
  facts: ContainerdConfigFacts,
  context: { readonly configFile: string; readonly hostsDir: string; readonly isHostsDir: (dir: string) => Promise<boolean> },
): Promise<ContainerdCheck> {
  const problems: Problem[] = [];
  const file = context.configFile;
  const add = (problem: Omit<Problem, "runtime" | "file">): void => {
    problems.push({ code: problem.code, severity: problem.severity, runtime: "containerd", file, message: problem.message });
  };
  const restart = "then restart containerd (Shoal never restarts it)";
  const fix = `set ${configPathSnippet(facts.version, context.hostsDir)} in ${file}, ${restart}`;
  if (!KNOWN_VERSIONS.includes(facts.version)) {
    add({
      code: "CONTAINERD_CONFIG_VERSION_UNKNOWN",
      severity: "warning",
      message: `${file} has version = ${facts.version}, which no known containerd release uses; the checks below assume any schema`,
    });
  }
  if (facts.criDisabled) {
    add({
      code: "CONTAINERD_CRI_DISABLED",
      severity: "warning",
      message: `${file} disables the CRI plugin: the kubelet cannot pull through this containerd at all (ctr pulls with --hosts-dir still use the hosts dir)`,
    });
  }
  const conflicts = [...facts.legacyMirrors.map((r) => `mirrors."${r}"`), ...facts.legacyTlsConfigs.map((r) => `configs."${r}".tls`)];
  if (facts.configPath !== undefined && conflicts.length > 0) {
    add({
      code: "REGISTRY_CONFIG_CONFLICT",
      severity: "error",
      message: `${file} sets registry.config_path together with the deprecated registry.${conflicts.join(", registry.")}: containerd's CRI plugin refuses to load with both; move those into hosts.toml files and remove them, ${restart}`,
    });
    return { problems, mirrorEffective: false };
  }
  if (facts.configPath === undefined) {
    if (facts.legacyMirrors.length > 0) {
      add({
        code: "LEGACY_REGISTRY_MIRRORS",
        severity: "error",
        message: `${file} configures the deprecated registry.mirrors (${facts.legacyMirrors.join(", ")}) and no config_path: containerd uses those and ignores ${context.hostsDir}; replace them with hosts.toml files and ${fix}`,
      });
    } else if (facts.version === 3) {
      add({
        code: "CONFIG_PATH_NOT_SET",
        severity: "warning",
        message: `${file} does not set registry.config_path: containerd 2.x then uses its default "/etc/containerd/certs.d:/etc/docker/certs.d", a list that containerd >= 2.1 does not honour; ${fix}`,
      });
    } else {
      add({
        code: "CONFIG_PATH_NOT_SET",
        severity: "error",
        message: `${file} does not set registry.config_path: the kubelet's pulls ignore ${context.hostsDir}; ${fix}`,
      });
    }
    return { problems, mirrorEffective: false };
  }
  const dirs = configPathDirs(facts.configPath);
  let index = -1;
  for (const [i, dir] of dirs.entries()) {
    if (await context.isHostsDir(dir)) {
      index = i;
      break;
    }
  }
  if (index < 0) {
    add({
      code: "CONFIG_PATH_OTHER_DIR",
      severity: "error",
      message: `${file} sets config_path = ${JSON.stringify(facts.configPath)}, which does not include ${context.hostsDir}: run shoal configure with --hosts-dir ${dirs[0] ?? context.hostsDir}, or ${fix}`,
    });
    return { problems, mirrorEffective: false };
  }
  if (dirs.length > 1) {
    const precedence = index > 0 ? ` (older versions also look in ${dirs.slice(0, index).join(", ")} first)` : "";
    add({
      code: "CONFIG_PATH_MULTIPLE_DIRS",
      // Only containerd 2.x reads schema 3, so there the list is certainly not honoured as a list.
      severity: facts.version === 3 ? "error" : "warning",
      message: `${file} sets config_path = ${JSON.stringify(facts.configPath)}, a list of ${dirs.length} directories: containerd >= 2.1 honours a single directory only and ignores or misreads a list${precedence}; ${fix}`,
    });
    return { problems, mirrorEffective: false };
  }
  return { problems, mirrorEffective: true };
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function tableAt(root: Record<string, unknown>, path: readonly string[]): Record<string, unknown> | undefined {
  let here: unknown = root;
  for (const key of path) {
    if (!isTable(here)) return undefined;
    here = here[key];
  }
  return isTable(here) ? here : undefined;
}
