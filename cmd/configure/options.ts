import { type OptionSpecs, type ParsedOptions } from "../../pkg/config/index.js";
import { DEFAULT_HOST_NAMESPACE, type RegistryTarget, type RuntimeSelection, parseNodePath } from "../../pkg/runtime/index.js";
import { parseLogLevel } from "../shoal/common-options.js";
import { parseUpstream } from "../agent/options.js";

const RUNTIMES: readonly RuntimeSelection[] = ["auto", "containerd", "crio"];

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** `namespace/name` of a Pod. */
export function parseEventPod(raw: string): { namespace: string; name: string } {
  const [namespace, name, ...rest] = raw.split("/");
  if (namespace === undefined || name === undefined || rest.length > 0 || !DNS_LABEL.test(namespace) || !DNS_SUBDOMAIN.test(name)) {
    throw new Error("expected NAMESPACE/NAME of a Pod, e.g. shoal/shoal-agent-x7k2p");
  }
  return { namespace, name };
}

/** The agent's mirror: an http(s) origin, nothing after the port. */
export function parseMirrorUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error("expected the agent's mirror as an http:// URL, e.g. http://127.0.0.1:5050");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("expected an http:// or https:// URL");
  if (url.username !== "" || url.password !== "") throw new Error("the mirror URL takes no credentials");
  if (url.pathname !== "/" || url.search !== "" || url.hash !== "")
    throw new Error("expected scheme://host:port only, without a path, query or fragment");
  return url.origin;
}

/**
 * `_default` (every registry) or a comma-separated list of REGISTRY or REGISTRY=URL, the URL being
 * the upstream containerd falls back to (default https://REGISTRY; docker.io → its API host).
 */
export function parseRegistries(raw: string): RegistryTarget[] {
  const entries = raw
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "");
  if (entries.length === 0)
    throw new Error(`expected ${DEFAULT_HOST_NAMESPACE} or a comma-separated list of registries such as docker.io,ghcr.io`);
  const targets: RegistryTarget[] = [];
  for (const entry of entries) {
    let target: RegistryTarget;
    if (entry === DEFAULT_HOST_NAMESPACE) target = { registry: DEFAULT_HOST_NAMESPACE };
    else {
      try {
        const upstream = parseUpstream(entry);
        target = { registry: upstream.registry, server: upstream.url };
      } catch (error) {
        throw new Error(`entry ${JSON.stringify(entry)}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      }
    }
    if (targets.some((t) => t.registry === target.registry)) throw new Error(`${target.registry} is listed twice`);
    targets.push(target);
  }
  return targets;
}

function parseRuntime(raw: string): RuntimeSelection {
  if (!(RUNTIMES as readonly string[]).includes(raw)) throw new Error(`expected one of ${RUNTIMES.join(", ")}`);
  return raw as RuntimeSelection;
}

function nodePath(raw: string): string {
  try {
    return parseNodePath(raw);
  } catch (error) {
    throw new Error(error instanceof Error ? error.message : String(error), { cause: error });
  }
}

export const configureOptionSpecs = {
  mirrorUrl: {
    name: "mirror-url",
    description: "The node's agent as the runtime reaches it, e.g. http://127.0.0.1:5050. Required unless --restore.",
    parse: parseMirrorUrl,
  },
  registries: {
    name: "registries",
    description: `Registries to pull through the agent: ${DEFAULT_HOST_NAMESPACE} (every registry), or a comma-separated list of REGISTRY or REGISTRY=UPSTREAM-URL.`,
    parse: parseRegistries,
    default: DEFAULT_HOST_NAMESPACE,
  },
  runtime: {
    name: "runtime",
    description: "auto (every runtime whose configuration is present), containerd or crio.",
    parse: parseRuntime,
    default: "auto",
  },
  hostRoot: {
    name: "host-root",
    description: "Where the node's root file system is mounted (e.g. /host in the init container); every path below is under it.",
    parse: nodePath,
    default: "/",
  },
  containerdConfig: {
    name: "containerd-config",
    description: "containerd's config.toml on the node (checked, never changed).",
    parse: nodePath,
    default: "/etc/containerd/config.toml",
  },
  hostsDir: {
    name: "hosts-dir",
    description: "containerd's hosts directory on the node (CRI registry.config_path): <registry>/hosts.toml files are written here.",
    parse: nodePath,
    default: "/etc/containerd/certs.d",
  },
  crioRegistriesDir: {
    name: "crio-registries-dir",
    description: "CRI-O's registries.conf.d on the node: the shoal.conf drop-in is written here.",
    parse: nodePath,
    default: "/etc/containers/registries.conf.d",
  },
  stateDir: {
    name: "state-dir",
    description: "On the node: backups of replaced files, their record, and configure-report.json.",
    parse: nodePath,
    default: "/var/lib/shoal/configure",
  },
  restore: {
    name: "restore",
    description: "Put back what was there before (uninstall) instead of configuring.",
    parse: (raw: string) => raw === "true",
    boolean: true,
    default: "false",
  },
  strict: {
    name: "strict",
    description: "Exit 1 when a problem of severity error is found (default: report it and exit 0, so the agent still starts).",
    parse: (raw: string) => raw === "true",
    boolean: true,
    default: "false",
  },
  dryRun: {
    name: "dry-run",
    description: "Print what would change; write nothing.",
    parse: (raw: string) => raw === "true",
    boolean: true,
    default: "false",
  },
  eventPod: {
    name: "event-pod",
    description:
      "NAMESPACE/NAME of a Pod (the agent's own; the chart sets it from the Downward API) to record a Kubernetes Event on for each problem of severity error or warning, or one Normal event when there is none. Needs the Events create permission.",
    parse: parseEventPod,
  },
  kubeconfig: {
    name: "kubeconfig",
    description: "With --event-pod: the kubeconfig to reach the API server with; default the in-cluster service account.",
    parse: (raw: string) => {
      if (raw.trim() === "") throw new Error("expected a file path");
      return raw;
    },
  },
  logLevel: {
    name: "log-level",
    description: "Level of the JSON logs on stderr: trace, debug, info, warn, error or fatal.",
    parse: parseLogLevel,
    default: "warn",
  },
} as const satisfies OptionSpecs;

export type ConfigureCliOptions = ParsedOptions<typeof configureOptionSpecs>;
