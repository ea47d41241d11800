import { type OptionSpecs, type ParsedOptions, parseDuration, parseInteger } from "../../pkg/config/index.js";

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const NAMESPACE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function parseName(raw: string): string {
  if (raw.length > 253 || !NAME.test(raw)) throw new Error("expected a Kubernetes object name: lower-case letters, digits, '-' and '.'");
  return raw;
}

/** `key=value,key2=value2` → labels. */
export function parseLabels(raw: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const part of raw
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "")) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new Error(`expected key=value, got ${JSON.stringify(part)}`);
    labels[part.slice(0, eq)] = part.slice(eq + 1);
  }
  if (Object.keys(labels).length === 0) throw new Error("expected at least one key=value");
  return labels;
}

export const prefetchOptionSpecs = {
  seedsPerZone: {
    name: "seeds-per-zone",
    description: "Agents per zone the controller seeds (picked by it). Default 1 unless --node-selector is given.",
    parse: (raw: string) => parseInteger(raw, 1, 100),
    schemaType: "integer",
  },
  nodeSelector: {
    name: "node-selector",
    description: "Seed every agent on a node with these labels instead, key=value[,key=value].",
    parse: parseLabels,
  },
  zones: {
    name: "zones",
    description: "With --seeds-per-zone: only these zones (comma-separated); a listed zone without agents keeps it not Ready.",
    parse: (raw: string) =>
      raw
        .split(",")
        .map((z) => z.trim())
        .filter((z) => z !== ""),
  },
  platform: {
    name: "platform",
    description: "Platform of a multi-platform image to seed, os/arch[/variant]; repeatable. Default linux/amd64.",
    parse: (raw: string) => raw,
    repeatable: true,
  },
  pullSecret: {
    name: "pull-secret",
    description: "Name of a kubernetes.io/dockerconfigjson Secret in --namespace for a private registry; repeatable.",
    parse: parseName,
    repeatable: true,
  },
  name: {
    name: "name",
    description: "Name of the ImagePrefetch; default a generated prefetch-XXXXX.",
    parse: parseName,
  },
  namespace: {
    name: "namespace",
    description: "Namespace of the ImagePrefetch (and of its pull secrets); default the kubeconfig context's, else default.",
    parse: (raw: string) => {
      if (raw.length > 63 || !NAMESPACE.test(raw)) throw new Error("expected a namespace name");
      return raw;
    },
  },
  kubeconfig: {
    name: "kubeconfig",
    description: "kubeconfig file; default $KUBECONFIG, then ~/.kube/config, then the in-cluster service account.",
    parse: (raw: string) => raw,
  },
  ttl: {
    name: "ttl",
    description: "Delete the ImagePrefetch this long after it starts (the prefetched content stays), e.g. 24h.",
    parse: (raw: string) => {
      if (parseDuration(raw) <= 0) throw new Error("expected a duration above zero");
      return raw;
    },
  },
  startAt: {
    name: "start-at",
    description: "Start prefetching at this time (RFC 3339, e.g. 2026-01-02T03:00:00Z) instead of now.",
    parse: (raw: string) => {
      if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(raw) || Number.isNaN(Date.parse(raw)))
        throw new Error("expected an RFC 3339 time such as 2026-01-02T03:00:00Z");
      return raw;
    },
  },
  wait: {
    name: "wait",
    description: "Wait until the ImagePrefetch is Ready (exit 0) or Failed (exit 1), printing its progress.",
    parse: (raw: string) => raw === "true",
    boolean: true,
    default: "false",
  },
  timeout: {
    name: "timeout",
    description: "With --wait: give up (exit 1) after this long.",
    parse: (raw: string) => {
      const ms = parseDuration(raw);
      if (ms <= 0) throw new Error("expected a duration above zero");
      return ms;
    },
    default: "30m",
  },
  dryRun: {
    name: "dry-run",
    description: "Print the ImagePrefetch as JSON and create nothing.",
    parse: (raw: string) => raw === "true",
    boolean: true,
    default: "false",
  },
} as const satisfies OptionSpecs;

export type PrefetchCliOptions = ParsedOptions<typeof prefetchOptionSpecs>;
