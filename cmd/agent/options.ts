import {
  type OptionSpecs,
  type ParsedOptions,
  parseBoolean,
  parseBytes,
  parseDuration,
  parseFraction,
  parseHostPort,
  parseInteger,
} from "../../pkg/config/index.js";
import { commonOptionSpecs } from "../shoal/common-options.js";
import { isLoopback, tlsFileOptionSpecs, validateTlsFiles } from "../shoal/tls-options.js";
import { parseRegistryHost } from "../../pkg/oci/index.js";
import { defaultUpstreamUrl } from "../../pkg/registry/index.js";

/** Public registries mirrored when no --upstream is given. */
export const WELL_KNOWN_REGISTRIES = [
  "docker.io",
  "ghcr.io",
  "quay.io",
  "registry.k8s.io",
  "gcr.io",
  "mcr.microsoft.com",
  "public.ecr.aws",
];

export interface UpstreamSpec {
  readonly registry: string;
  readonly url: string;
}

/** `REGISTRY` or `REGISTRY=URL`; the URL must be http(s) with no credentials, query or fragment. */
export function parseUpstream(raw: string): UpstreamSpec {
  const eq = raw.indexOf("=");
  const registry = parseRegistryHost(eq < 0 ? raw : raw.slice(0, eq));
  if (eq < 0) return { registry, url: defaultUpstreamUrl(registry) };
  let url: URL;
  try {
    url = new URL(raw.slice(eq + 1));
  } catch {
    throw new Error("expected REGISTRY=URL with an http:// or https:// URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("the upstream URL must be http:// or https://");
  if (url.username !== "" || url.password !== "") throw new Error("put credentials in --registry-credentials, not in the URL");
  if (url.search !== "" || url.hash !== "") throw new Error("the upstream URL takes no query or fragment");
  return { registry, url: url.toString().replace(/\/$/, "") };
}

export const agentOptionSpecs = {
  mirrorAddr: {
    name: "mirror-addr",
    description: "Address of the OCI registry mirror that containerd pulls through.",
    parse: parseHostPort,
    default: "127.0.0.1:5050",
  },
  metricsAddr: {
    name: "metrics-addr",
    description: "Address serving /metrics, /healthz and /readyz.",
    parse: parseHostPort,
    default: "127.0.0.1:9150",
  },
  dataDir: {
    name: "data-dir",
    description: "Directory of the blob store (blobs, partial blobs, tag records).",
    parse: (raw: string) => {
      if (raw.trim() === "") throw new Error("expected a directory path");
      return raw;
    },
    default: "/var/lib/shoal",
  },
  upstream: {
    name: "upstream",
    description: `A registry to mirror: REGISTRY (HTTPS) or REGISTRY=URL, e.g. 127.0.0.1:5000=http://127.0.0.1:5000. Requests for registries not listed get 404 so the runtime goes direct. Default: ${WELL_KNOWN_REGISTRIES.join(", ")}.`,
    parse: parseUpstream,
    repeatable: true,
  },
  defaultUpstream: {
    name: "default-upstream",
    description: "Registry for requests that name none (no ?ns= and no registry as first path segment).",
    parse: parseRegistryHost,
  },
  registryCredentials: {
    name: "registry-credentials",
    description: "Docker config JSON file (e.g. a mounted kubernetes.io/dockerconfigjson Secret) with credentials per registry.",
    parse: (raw: string) => raw,
  },
  storeQuota: {
    name: "store-quota",
    description: "Size quota of the blob store, e.g. 20GiB; 0 means unlimited.",
    parse: parseBytes,
    default: "0",
  },
  storeHighWatermark: {
    name: "store-high-watermark",
    description: "Fraction of the quota at which least-recently-used blobs are evicted.",
    parse: parseFraction,
    default: "0.9",
  },
  storeLowWatermark: {
    name: "store-low-watermark",
    description: "Fraction of the quota eviction brings the store down to.",
    parse: parseFraction,
    default: "0.8",
  },
  responseStartTimeout: {
    name: "response-start-timeout",
    description:
      "Longest wait before a response starts: for a source (counted from the last sign that one is under way, such as another agent fetching the blob from the origin, up to 3 times this in all), and then this long without the blob gaining a piece while its first piece is awaited (for a blob from peers, its swarm moving also counts, up to 3 times this after the last piece here); past it the mirror answers 404 so containerd pulls directly.",
    parse: parseDuration,
    default: "10s",
  },
  responseStallTimeout: {
    name: "response-stall-timeout",
    description: "A started blob response with no byte to send for this long is cut, so the runtime retries instead of hanging.",
    parse: parseDuration,
    default: "60s",
  },
  upstreamConnectTimeout: {
    name: "upstream-connect-timeout",
    description: "Timeout for connecting to an upstream registry.",
    parse: parseDuration,
    default: "5s",
  },
  upstreamStallTimeout: {
    name: "upstream-stall-timeout",
    description: "An upstream transfer that sends nothing for this long is broken off and resumed.",
    parse: parseDuration,
    default: "30s",
  },
  tracker: {
    name: "tracker",
    description: "Address of the tracker (shoal controller), HOST:PORT. Without it the agent works alone: local store, then origin.",
    parse: parseHostPort,
  },
  peerAddr: {
    name: "peer-addr",
    description: "Address the PeerService (pieces for other agents, gRPC) listens on.",
    parse: parseHostPort,
    default: "127.0.0.1:5052",
  },
  peerAdvertiseAddr: {
    name: "peer-advertise-addr",
    description:
      "Address other agents reach the PeerService at (e.g. the pod IP); default --peer-addr. Required when --peer-addr listens on 0.0.0.0.",
    parse: parseHostPort,
  },
  nodeName: {
    name: "node-name",
    description: "Name of this node (Kubernetes: spec.nodeName from the Downward API); default the host name.",
    parse: (raw: string) => {
      if (!/^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$/.test(raw)) throw new Error("expected a node name (letters, digits, '.', '-')");
      return raw;
    },
  },
  zone: {
    name: "zone",
    description: "Zone of this node (topology.kubernetes.io/zone); peers in the same zone are preferred.",
    parse: (raw: string) => raw,
    default: "",
  },
  uploadRate: {
    name: "upload-rate",
    description: "Cap on the bytes/s this node uploads to other agents, e.g. 500mbit; 0 = uncapped.",
    parse: parseBytes,
    default: "0",
  },
  maxUploads: {
    name: "max-uploads",
    description: "Piece streams served to other agents at once; more are refused and go elsewhere.",
    parse: (raw: string) => parseInteger(raw, 1, 1024),
    default: "16",
    schemaType: "integer",
  },
  peerExchange: {
    name: "peer-exchange",
    description:
      "Read pieces from each peer over one long-lived Exchange stream, rather than a ReadPieces call per request. Peers that do not serve Exchange (older agents) are read with ReadPieces either way; set false to use calls only.",
    parse: parseBoolean,
    boolean: true,
    default: "true",
  },
  configureReport: {
    name: "configure-report",
    description:
      "The report `shoal configure` wrote on this node (<state-dir>/configure-report.json): its problems are logged and exported as shoal_runtime_config_problems.",
    parse: (raw: string) => {
      if (raw.trim() === "") throw new Error("expected a file path");
      return raw;
    },
  },
  shutdownGrace: {
    name: "shutdown-grace",
    description: "On SIGTERM, how long running responses may continue before they are cut.",
    parse: parseDuration,
    default: "10s",
  },
  containerdContent: {
    name: "containerd-content",
    description:
      "Serve and announce the blobs in containerd's content store, and drop the agent's own copy of a blob once containerd has committed it (one copy per node). Set false on nodes without containerd (CRI-O).",
    parse: parseBoolean,
    boolean: true,
    default: "true",
  },
  containerdAddress: {
    name: "containerd-address",
    description:
      "containerd's gRPC socket (K3s and RKE2: /run/k3s/containerd/containerd.sock). A missing or refusing socket is logged and retried; the agent serves from its own store meanwhile.",
    parse: parseFilePath,
    default: "/run/containerd/containerd.sock",
  },
  containerdNamespace: {
    name: "containerd-namespace",
    description: "containerd namespace whose content is shared (the kubelet's images are in k8s.io).",
    parse: (raw: string) => {
      if (!/^[A-Za-z0-9]([A-Za-z0-9._-]{0,74}[A-Za-z0-9])?$/.test(raw))
        throw new Error("expected a containerd namespace (letters, digits, '.', '_', '-')");
      return raw;
    },
    default: "k8s.io",
  },
  containerdContentDir: {
    name: "containerd-content-dir",
    description:
      "containerd's content directory (<root>/io.containerd.content.v1.content, e.g. /var/lib/containerd/io.containerd.content.v1.content), mounted read-only: blobs are read from its files instead of through the socket. Unset: through the socket.",
    parse: parseFilePath,
  },
  containerdHashRate: {
    name: "containerd-hash-rate",
    description:
      "Bytes/s of containerd blobs the agent did not store itself (imported, pulled before Shoal) hashed in the background to announce them, e.g. 128MiB (about a tenth of a core); 0 = unlimited. Hashes are kept in the data dir.",
    parse: parseBytes,
    default: "128MiB",
  },
  identityIssuer: {
    name: "identity-issuer",
    description:
      "The controller's certificate issuer, HOST:PORT: this agent trades its projected ServiceAccount token (--identity-token) for a certificate, renewed before it expires; --tls-ca is the CA bundle the controller must chain to.",
    parse: parseHostPort,
  },
  identityToken: {
    name: "identity-token",
    description: "With --identity-issuer: the projected ServiceAccount token file (audience-bound; read again for every request).",
    parse: (raw: string) => {
      if (raw.trim() === "") throw new Error("expected a file path");
      return raw;
    },
    default: "/var/run/secrets/shoal/token",
  },
  ...tlsFileOptionSpecs,
  ...commonOptionSpecs,
} as const satisfies OptionSpecs;

function parseFilePath(raw: string): string {
  if (!raw.startsWith("/")) throw new Error("expected an absolute path");
  return raw;
}

export type AgentOptions = ParsedOptions<typeof agentOptionSpecs>;

/** Checks that span several options; the message names them. */
export function validateAgentOptions(options: AgentOptions): void {
  if (options.tracker !== undefined && options.peerAdvertiseAddr === undefined && ["0.0.0.0", "::"].includes(options.peerAddr.host)) {
    throw new Error("--peer-addr listens on all interfaces: set --peer-advertise-addr to the address other agents reach this one at");
  }
  const tlsFiles = validateTlsFiles(options);
  if (options.identityIssuer !== undefined) {
    if (tlsFiles) throw new Error("--identity-issuer and --tls-cert/--tls-key are two ways to get a certificate: use one");
    if (options.tlsCa === undefined)
      throw new Error("--identity-issuer needs --tls-ca: the CA bundle the controller's certificate must chain to");
  } else if (options.tlsCa !== undefined && !tlsFiles) {
    throw new Error("--tls-ca needs --tls-cert and --tls-key, or --identity-issuer");
  }
  if (options.tracker !== undefined && options.identityIssuer === undefined && !tlsFiles && !options.allowInsecure) {
    const exposed = [
      options.tracker.host,
      options.peerAddr.host,
      ...(options.peerAdvertiseAddr === undefined ? [] : [options.peerAdvertiseAddr.host]),
    ].filter((host) => !isLoopback(host));
    if (exposed.length > 0) {
      throw new Error(
        `peer and tracker gRPC would be plaintext on ${exposed.join(", ")}: set --identity-issuer (Kubernetes) or --tls-cert/--tls-key/--tls-ca, use loopback addresses, or --allow-insecure`,
      );
    }
  }
  if (options.storeLowWatermark >= options.storeHighWatermark) {
    throw new Error(
      `--store-low-watermark (${options.storeLowWatermark}) must be below --store-high-watermark (${options.storeHighWatermark})`,
    );
  }
  const registries = new Set((options.upstream.length > 0 ? options.upstream : []).map((u) => u.registry));
  if (options.upstream.length > 0 && registries.size !== options.upstream.length)
    throw new Error("--upstream names the same registry twice");
  if (options.defaultUpstream !== undefined && options.upstream.length > 0 && !registries.has(options.defaultUpstream)) {
    throw new Error(`--default-upstream ${options.defaultUpstream} is not one of the --upstream registries`);
  }
}

/** Registry host → base URL, from --upstream or the well-known defaults. */
export function upstreamMap(options: AgentOptions): Map<string, string> {
  const list = options.upstream.length > 0 ? options.upstream : WELL_KNOWN_REGISTRIES.map((r) => parseUpstream(r));
  return new Map(list.map((u) => [u.registry, u.url]));
}
