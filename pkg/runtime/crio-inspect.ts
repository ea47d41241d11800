import { readdir } from "node:fs/promises";
import { CRIO_DROP_IN_NAME, crioPrefixes } from "./crio.js";
import { errnoCode } from "./errors.js";
import type { HostRoot } from "./host-root.js";
import { DEFAULT_HOST_NAMESPACE, type RegistryTarget } from "./hosts-toml.js";
import type { FileChange, Problem } from "./report.js";

/** Drop-ins read after Shoal's (lexical order) that redefine one of its prefixes win over it. */
export async function shadowingDropIns(
  root: HostRoot,
  dir: string,
  registries: readonly string[],
  signal: AbortSignal,
): Promise<Problem[]> {
  let names: string[];
  try {
    names = await readdir(await root.locate(dir));
  } catch (error) {
    if (errnoCode(error) === "ENOENT" || errnoCode(error) === "ENOTDIR") return [];
    throw error;
  }
  const problems: Problem[] = [];
  for (const name of names.filter((n) => n.endsWith(".conf") && n > CRIO_DROP_IN_NAME).sort()) {
    const file = `${dir}/${name}`;
    let text: string | undefined;
    try {
      text = await root.readText(file, signal);
    } catch {
      continue;
    }
    const overlap = crioPrefixes(text ?? "").filter((p) => registries.includes(p));
    if (overlap.length === 0) continue;
    problems.push({
      code: "CRIO_PREFIX_SHADOWED",
      severity: "warning",
      runtime: "crio",
      file,
      message: `${file} is read after ${CRIO_DROP_IN_NAME} and redefines ${overlap.join(", ")}: pulls from there bypass the agent`,
    });
  }
  return problems;
}

/** CRI-O caches registries.conf(.d) until it reloads; Shoal never signals it, so the operator must. */
export function crioReloadNotice(changes: readonly FileChange[]): Problem[] {
  if (!changes.some((c) => c.runtime === "crio" && c.action !== "unchanged" && c.action !== "kept")) return [];
  return [
    {
      code: "CRIO_RELOAD_NEEDED",
      severity: "info",
      runtime: "crio",
      message:
        "CRI-O reads registries.conf.d when it starts or reloads: run `systemctl reload crio` (SIGHUP) on the node for the change to take effect (Shoal never signals the runtime)",
    },
  ];
}

/** The registries CRI-O's drop-in lists: `_default` expanded to `defaults`, each once. */
export function crioRegistries(targets: readonly RegistryTarget[], defaults: readonly string[]): string[] {
  const list: string[] = [];
  for (const target of targets) {
    for (const registry of target.registry === DEFAULT_HOST_NAMESPACE ? defaults : [target.registry]) {
      if (!list.includes(registry)) list.push(registry);
    }
  }
  return list;
}
