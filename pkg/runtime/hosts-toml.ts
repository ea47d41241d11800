import { MANAGED_MARKER, tomlString } from "./managed-marker.js";

/** containerd's catch-all host namespace: used for every registry without a directory of its own. */
export const DEFAULT_HOST_NAMESPACE = "_default";
/**
 * How long containerd waits to connect to the agent before trying the next host. Honoured by
 * containerd >= 2.1 (`dial_timeout`); 1.6, 1.7 and 2.0 ignore the key (checked with 1.6).
 * The agent is on the node itself, so a connect that takes longer means it is not there.
 */
export const MIRROR_DIAL_TIMEOUT = "500ms";

/** A registry to pull through the agent: a host as in image references, or `_default`. */
export interface RegistryTarget {
  readonly registry: string;
  /** The upstream containerd falls back to (`server`); none for `_default` (the reference's own host). */
  readonly server?: string;
}

/**
 * `<hosts-dir>/<namespace>/hosts.toml`: the agent as the first host, the upstream as the fallback.
 * Without `mirrorUrl`, only the upstream (what tests write to pull around the agent).
 */
export function renderHostsToml(target: RegistryTarget, mirrorUrl: string | undefined): string {
  const lines = [
    MANAGED_MARKER,
    "# Pulls go through the node's Shoal agent first; when it cannot serve them, containerd pulls",
    target.server === undefined ? "# from the registry named in the image reference directly." : "# from the server below directly.",
    "# `shoal configure --restore` puts back what was here before.",
  ];
  if (target.server !== undefined) lines.push(`server = ${tomlString(target.server)}`);
  if (mirrorUrl !== undefined) {
    lines.push(
      "",
      `[host.${tomlString(mirrorUrl)}]`,
      '  capabilities = ["pull", "resolve"]',
      `  dial_timeout = ${tomlString(MIRROR_DIAL_TIMEOUT)}`,
    );
  }
  return `${lines.join("\n")}\n`;
}
