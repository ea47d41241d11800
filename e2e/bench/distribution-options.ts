// Flags of `npm run bench` (distribution-bench.ts), validated with messages naming the flag.
import { dirname, extname, join, basename } from "node:path";
import { parseArgs } from "node:util";
import { BenchUsageError, integerFlag, positiveFlag } from "./bench-flags.js";

export const ARMS = ["direct", "cache", "shoal"] as const;
export type Arm = (typeof ARMS)[number];

export const MAX_NODES = 64;
export const MAX_IMAGE_MIB = 16 * 1024;
export const MAX_LAYERS = 64;
export const MAX_MBIT = 100_000;
/** How each node's containerd is asked to pull: as the kubelet does (CRI), or with `ctr images pull`. */
export const PULLERS = ["cri", "ctr"] as const;
export type Puller = (typeof PULLERS)[number];

export interface DistributionBenchOptions {
  readonly nodes: number;
  readonly imageMiB: number;
  readonly layers: number;
  /** Each node's upload and download. */
  readonly nodeMbit: number;
  readonly originMbit: number;
  readonly arms: readonly Arm[];
  readonly json: string | undefined;
  readonly svg: string | undefined;
  /** Per arm; undefined = derived from the client-server bound. */
  readonly timeoutSeconds: number | undefined;
  /** Shoal arm: agents serve from their node's containerd content store (one copy per node). */
  readonly containerdContent: boolean;
  /** Mutual TLS between the Shoal processes (certificates of a throwaway CA); false: plaintext. */
  readonly tls: boolean;
  readonly puller: Puller;
  readonly help: boolean;
}

export const USAGE = `Usage: npm run bench -- [flags]

Distributes one generated image to N nodes (network namespaces with tc tbf caps, a real containerd
per node) three ways: (a) direct from the origin, (b) through a central pull-through cache
(docker-registry proxy), (c) through Shoal. Needs root, iproute2, docker-registry, skopeo, containerd.

  --nodes N           nodes pulling at once (1-${MAX_NODES}; default 8)
  --image-mib MIB     image size in MiB (1-${MAX_IMAGE_MIB}; default 256)
  --layers N          layers of the image (1-${MAX_LAYERS}; default 4)
  --node-mbit MBIT    each node's upload and download, Mbit/s (default 200)
  --origin-mbit MBIT  the origin's upload, Mbit/s (default 200)
  --arms LIST         comma-separated, from direct,cache,shoal (default all three)
  --json FILE         write the result as JSON
  --svg FILE          write the chart (default: next to --json, .svg)
  --timeout SECONDS   per arm (default 3x the client-server bound + 120 s)
  --containerd-content true|false
                      shoal arm: agents serve from their node's containerd content store and keep
                      no copy of what it holds (default true, as in production)
  --tls BOOL          Shoal's gRPC over mutual TLS, as in a cluster (true, default) or plaintext (false)
  --puller cri|ctr    how each node's containerd pulls: CRI PullImage, as the kubelet does, the daemon
                      fetching itself (cri, default), or "ctr images pull", a client process that
                      fetches and streams every byte to the daemon (ctr)
  --help`;

export { BenchUsageError };

function arms(value: string): Arm[] {
  const names = value
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name !== "");
  if (names.length === 0) throw new BenchUsageError(`--arms must name at least one of ${ARMS.join(", ")}`);
  const unknown = names.filter((name) => !(ARMS as readonly string[]).includes(name));
  if (unknown.length > 0)
    throw new BenchUsageError(`--arms: unknown arm ${unknown.map((u) => JSON.stringify(u)).join(", ")}; choose from ${ARMS.join(", ")}`);
  // Always in the canonical order, each once: the report compares them side by side.
  return ARMS.filter((arm) => names.includes(arm));
}

function puller(value: string): Puller {
  const found = PULLERS.find((name) => name === value);
  if (found === undefined) throw new BenchUsageError(`--puller must be one of ${PULLERS.join(", ")}, got ${JSON.stringify(value)}`);
  return found;
}

function trueOrFalse(flag: string, value: string): boolean {
  if (value === "true" || value === "false") return value === "true";
  throw new BenchUsageError(`--${flag} must be true or false, got ${JSON.stringify(value)}`);
}

/** The SVG next to the JSON: `out/result.json` → `out/result.svg`. */
export function svgBesideJson(json: string): string {
  return join(dirname(json), `${basename(json, extname(json))}.svg`);
}

export function parseDistributionBenchArgs(argv: readonly string[]): DistributionBenchOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        nodes: { type: "string", default: "8" },
        "image-mib": { type: "string", default: "256" },
        layers: { type: "string", default: "4" },
        "node-mbit": { type: "string", default: "200" },
        "origin-mbit": { type: "string", default: "200" },
        arms: { type: "string", default: ARMS.join(",") },
        json: { type: "string" },
        svg: { type: "string" },
        timeout: { type: "string" },
        "containerd-content": { type: "string", default: "true" },
        tls: { type: "string", default: "true" },
        puller: { type: "string", default: "cri" },
        help: { type: "boolean", default: false },
      },
    }));
  } catch (cause) {
    throw new BenchUsageError(cause instanceof Error ? cause.message : String(cause), { cause });
  }
  const text = (name: string): string => {
    const value = values[name];
    return typeof value === "string" ? value : "";
  };
  const optional = (name: string): string | undefined => {
    const value = values[name];
    if (value === undefined) return undefined;
    if (typeof value !== "string" || value.trim() === "") throw new BenchUsageError(`--${name} needs a value`);
    return value;
  };
  const json = optional("json");
  const svg = optional("svg") ?? (json === undefined ? undefined : svgBesideJson(json));
  const timeout = optional("timeout");
  return {
    nodes: integerFlag("nodes", text("nodes"), 1, MAX_NODES),
    imageMiB: integerFlag("image-mib", text("image-mib"), 1, MAX_IMAGE_MIB),
    layers: integerFlag("layers", text("layers"), 1, MAX_LAYERS),
    nodeMbit: positiveFlag("node-mbit", text("node-mbit"), MAX_MBIT),
    originMbit: positiveFlag("origin-mbit", text("origin-mbit"), MAX_MBIT),
    arms: arms(text("arms")),
    json,
    svg,
    timeoutSeconds: timeout === undefined ? undefined : positiveFlag("timeout", timeout, 24 * 3600),
    containerdContent: trueOrFalse("containerd-content", text("containerd-content")),
    tls: trueOrFalse("tls", text("tls")),
    puller: puller(text("puller")),
    help: values.help === true,
  };
}
