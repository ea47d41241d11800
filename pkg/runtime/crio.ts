import { parse } from "smol-toml";
import { MANAGED_MARKER, tomlString } from "./managed-marker.js";
import type { Problem } from "./report.js";

/** The drop-in Shoal owns in registries.conf.d. */
export const CRIO_DROP_IN_NAME = "shoal.conf";

/**
 * The agent as a containers/image mirror location for `registry`. CRI-O and podman send no `?ns=`,
 * so the registry travels as the first path segment (`127.0.0.1:5050/ghcr.io`); a port is written
 * `host_port`, because their reference grammar forbids ':' in a path (the agent accepts both).
 */
export function crioMirrorLocation(mirrorUrl: string, registry: string): string {
  return `${new URL(mirrorUrl).host}/${registry.replace(/:(\d+)$/, "_$1")}`;
}

/** `registries.conf.d/shoal.conf`: per registry, the agent as a mirror, then the registry itself. */
export function renderCrioDropIn(registries: readonly string[], mirrorUrl: string): string {
  // containers/image tries HTTPS first and, for an insecure mirror, plain HTTP after it.
  const insecure = new URL(mirrorUrl).protocol === "http:";
  const lines = [
    MANAGED_MARKER,
    "# Pulls go through the node's Shoal agent first; when it cannot serve them, CRI-O pulls from the",
    "# registry directly. `shoal configure --restore` puts back what was here before.",
  ];
  for (const registry of registries) {
    lines.push(
      "",
      "[[registry]]",
      `prefix = ${tomlString(registry)}`,
      `location = ${tomlString(registry)}`,
      "",
      "[[registry.mirror]]",
      `location = ${tomlString(crioMirrorLocation(mirrorUrl, registry))}`,
      `insecure = ${insecure}`,
    );
  }
  return `${lines.join("\n")}\n`;
}

/** Problems of the main registries.conf that break or bypass Shoal's drop-in. */
export function checkCrioRegistriesConf(text: string, file: string): Problem[] {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text, { unsafeKeyBehaviour: "drop" });
  } catch (error) {
    return [
      {
        code: "CRIO_REGISTRIES_CONF_INVALID",
        severity: "error",
        runtime: "crio",
        file,
        message: `${file} is not valid TOML (${firstLine(error)}): CRI-O cannot read its registry configuration`,
      },
    ];
  }
  const v1 = doc.registries;
  if (typeof v1 === "object" && v1 !== null && ["search", "insecure", "block"].some((k) => k in v1)) {
    return [
      {
        code: "CRIO_REGISTRIES_CONF_V1",
        severity: "error",
        runtime: "crio",
        file,
        message: `${file} uses the v1 format ([registries.search] …), which containers/image refuses to mix with v2 drop-ins such as ${CRIO_DROP_IN_NAME}: convert it to [[registry]] tables (v2)`,
      },
    ];
  }
  return [];
}

/** Registry prefixes a drop-in defines (`prefix`, else `location`); [] when it cannot be parsed. */
export function crioPrefixes(text: string): string[] {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text, { unsafeKeyBehaviour: "drop" });
  } catch {
    return [];
  }
  const registries = Array.isArray(doc.registry) ? (doc.registry as unknown[]) : [];
  const prefixes: string[] = [];
  for (const entry of registries) {
    if (typeof entry !== "object" || entry === null) continue;
    const { prefix, location } = entry as { prefix?: unknown; location?: unknown };
    if (typeof prefix === "string" && prefix !== "") prefixes.push(prefix);
    else if (typeof location === "string" && location !== "") prefixes.push(location);
  }
  return prefixes;
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0] ?? "";
}
