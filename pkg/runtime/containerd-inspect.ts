import { readdir, stat } from "node:fs/promises";
import { dirname, posix } from "node:path";
import { TomlError } from "smol-toml";
import { type ContainerdConfigFacts, checkContainerdConfig, mergeImportedFacts, parseContainerdConfig } from "./containerd-config.js";
import { errnoCode } from "./errors.js";
import type { HostRoot } from "./host-root.js";
import type { RegistryTarget } from "./hosts-toml.js";
import type { Problem } from "./report.js";

/** Imports beyond this many are not inspected (containerd has no limit; a node has a handful). */
const MAX_IMPORTS = 64;

export interface ContainerdInspection {
  readonly found: boolean;
  readonly facts: ContainerdConfigFacts | undefined;
  readonly problems: Problem[];
  readonly mirrorEffective: boolean;
}

/**
 * Reads config.toml and its imports on the node and checks them for pulls through `hostsDir`.
 * Unreadable or invalid files become problems, never exceptions.
 */
export async function inspectContainerd(
  root: HostRoot,
  paths: { readonly containerdConfig: string; readonly hostsDir: string },
  signal: AbortSignal,
): Promise<ContainerdInspection> {
  const file = paths.containerdConfig;
  const problems: Problem[] = [];
  const loaded = await loadContainerdConfig(root, file, signal);
  if (loaded.problem !== undefined) return { found: true, facts: undefined, problems: [loaded.problem], mirrorEffective: false };
  if (loaded.facts === undefined) {
    problems.push({
      code: "CONTAINERD_CONFIG_NOT_FOUND",
      severity: "warning",
      runtime: "containerd",
      file,
      message: `${file} does not exist, so containerd runs on built-in defaults: 1.x then ignores ${paths.hostsDir} for the kubelet's pulls; write a config.toml that sets registry.config_path = ${JSON.stringify(paths.hostsDir)} (or pass --containerd-config)`,
    });
    return { found: false, facts: undefined, problems, mirrorEffective: false };
  }
  const imported: ContainerdConfigFacts[] = [];
  for (const path of await expandImports(root, file, loaded.facts.imports)) {
    const result = await loadContainerdConfig(root, path, signal);
    if (result.problem !== undefined) problems.push(result.problem);
    if (result.facts !== undefined) imported.push(result.facts);
  }
  const facts = mergeImportedFacts(loaded.facts, imported);
  const checked = await checkContainerdConfig(facts, {
    configFile: file,
    hostsDir: paths.hostsDir,
    isHostsDir: async (dir) => {
      if (!dir.startsWith("/")) return false;
      try {
        return (await root.resolve(posix.normalize(dir))) === paths.hostsDir;
      } catch {
        return false;
      }
    },
  });
  return { found: true, facts, problems: [...problems, ...checked.problems], mirrorEffective: checked.mirrorEffective };
}

async function loadContainerdConfig(
  root: HostRoot,
  file: string,
  signal: AbortSignal,
): Promise<{ facts?: ContainerdConfigFacts; problem?: Problem }> {
  let text: string | undefined;
  try {
    text = await root.readText(file, signal);
  } catch (error) {
    signal.throwIfAborted();
    return {
      problem: {
        code: "CONTAINERD_CONFIG_UNREADABLE",
        severity: "error",
        runtime: "containerd",
        file,
        message: `cannot read ${file} (${errnoCode(error) ?? String(error)}): its registry settings cannot be checked`,
      },
    };
  }
  if (text === undefined) return {};
  try {
    return { facts: parseContainerdConfig(text) };
  } catch (error) {
    const where = error instanceof TomlError ? ` at line ${error.line}, column ${error.column}` : "";
    const what = (error instanceof Error ? error.message : String(error)).split("\n")[0] ?? "";
    return {
      problem: {
        code: "CONTAINERD_CONFIG_INVALID",
        severity: "error",
        runtime: "containerd",
        file,
        message: `${file} is not valid TOML${where} (${what}): containerd will not start with it`,
      },
    };
  }
}

/** containerd `imports`: absolute or relative to the config file, `*` allowed in the file name. */
async function expandImports(root: HostRoot, configFile: string, imports: readonly string[]): Promise<string[]> {
  const files: string[] = [];
  for (const raw of imports) {
    const path = posix.normalize(raw.startsWith("/") ? raw : `${dirname(configFile)}/${raw}`);
    if (!path.startsWith("/")) continue;
    const base = posix.basename(path);
    if (!base.includes("*")) {
      files.push(path);
      continue;
    }
    const pattern = new RegExp(
      `^${base
        .split("*")
        .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"))
        .join("[^/]*")}$`,
    );
    try {
      const names = await readdir(await root.locate(posix.dirname(path)));
      files.push(
        ...names
          .filter((n) => pattern.test(n))
          .sort()
          .map((n) => `${posix.dirname(path)}/${n}`),
      );
    } catch (error) {
      if (errnoCode(error) !== "ENOENT" && errnoCode(error) !== "ENOTDIR") throw error;
    }
  }
  return files.slice(0, MAX_IMPORTS);
}

/**
 * With `_default`, containerd still prefers a registry's own directory in the hosts dir: such
 * registries bypass the agent. Directories Shoal writes itself are not counted.
 */
export async function shadowingHostDirs(root: HostRoot, hostsDir: string, targets: readonly RegistryTarget[]): Promise<Problem[]> {
  let names: string[];
  try {
    names = await readdir(await root.locate(hostsDir));
  } catch (error) {
    if (errnoCode(error) === "ENOENT" || errnoCode(error) === "ENOTDIR") return [];
    throw error;
  }
  const ours = new Set(targets.map((t) => t.registry));
  const others: string[] = [];
  for (const name of names.sort()) {
    if (ours.has(name) || name.startsWith(".")) continue;
    try {
      if ((await stat(await root.locate(`${hostsDir}/${name}`))).isDirectory()) others.push(name);
    } catch {
      // Vanished or unreadable: not a directory containerd would use either.
    }
  }
  if (others.length === 0) return [];
  return [
    {
      code: "HOSTS_TOML_SHADOWS_DEFAULT",
      severity: "warning",
      runtime: "containerd",
      file: hostsDir,
      message: `${hostsDir} has directories of its own for ${others.join(", ")}: containerd uses those instead of _default, so pulls from them bypass the agent; add them to --registries to route them through it too`,
    },
  ];
}
