import { type OptionSpecs, type ParsedOptions, parseBytes, parseDuration, parseInteger } from "../../pkg/config/index.js";

/** Most nodes the demo starts: each is a Node.js process, and they all share this machine's cores. */
export const MAX_NODES = 32;

function parseRate(raw: string): number {
  const bytesPerSecond = parseBytes(raw);
  if (bytesPerSecond !== 0 && bytesPerSecond < 64 * 1024)
    throw new Error("expected 0 (uncapped) or at least 64KiB/s, e.g. 200mbit or 25MB");
  return bytesPerSecond;
}

export const demoOptionSpecs = {
  nodes: {
    name: "nodes",
    description: `Number of nodes (agent processes) pulling the image at once, 1-${MAX_NODES}.`,
    parse: (raw: string) => parseInteger(raw, 1, MAX_NODES),
    default: "6",
  },
  imageSize: {
    name: "image-size",
    description: "Total size of the generated image's layers, e.g. 200MB.",
    parse: (raw: string) => {
      const bytes = parseBytes(raw);
      if (bytes < 64 * 1024 || bytes > 64 * 1024 ** 3) throw new Error("expected a size from 64KiB to 64GiB");
      return bytes;
    },
    default: "200MB",
  },
  layers: {
    name: "layers",
    description: "Number of layers of the generated image.",
    parse: (raw: string) => parseInteger(raw, 1, 64),
    default: "4",
  },
  originRate: {
    name: "origin-rate",
    description: "Egress cap of the embedded origin registry, to play a remote registry (u_s), e.g. 400mbit or 50MB; 0 = uncapped.",
    parse: parseRate,
    default: "400mbit",
  },
  uploadRate: {
    name: "upload-rate",
    description: "Per node: cap on what its agent uploads to other agents (u); 0 = uncapped.",
    parse: parseRate,
    default: "400mbit",
  },
  downloadRate: {
    name: "download-rate",
    description: "Per node: cap on what the node's puller receives (d), modelling the node's link; default the upload rate; 0 = uncapped.",
    parse: parseRate,
  },
  compare: {
    name: "compare",
    description: "Also distribute the image client-server style (every node straight from the origin) for comparison.",
    parse: (raw: string) => raw === "true",
    boolean: true,
    default: "true",
  },
  warmUp: {
    name: "warm-up",
    description:
      "First pull another image of the same size through every agent (not measured), so the round measures agents that have run before (a DaemonSet's steady state) rather than fresh processes.",
    parse: (raw: string) => raw === "true",
    boolean: true,
    default: "false",
  },
  timeout: {
    name: "timeout",
    description: "How long a round of pulls may take before the demo fails, e.g. 5m; auto = 4x the client-server bound plus 60s.",
    parse: (raw: string): number | "auto" => {
      if (raw === "auto") return "auto";
      const ms = parseDuration(raw);
      if (ms <= 0) throw new Error("expected auto or a duration above zero");
      return ms;
    },
    default: "auto",
  },
  json: {
    name: "json",
    description: "Print only a machine-readable result (no progress, no table).",
    parse: (raw: string) => raw === "true",
    boolean: true,
    default: "false",
  },
  workDir: {
    name: "work-dir",
    description: "Directory for the image, the nodes' stores and their logs, kept afterwards; default a temp dir removed at the end.",
    parse: (raw: string) => {
      if (raw.trim() === "") throw new Error("expected a directory path");
      return raw;
    },
  },
} as const satisfies OptionSpecs;

export type DemoOptions = ParsedOptions<typeof demoOptionSpecs>;
