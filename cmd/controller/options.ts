import { isIP } from "node:net";
import { type OptionSpecs, type ParsedOptions, parseBoolean, parseDuration, parseHostPort } from "../../pkg/config/index.js";
import { parseLabelSelector } from "../../pkg/k8s/index.js";
import { WELL_KNOWN_REGISTRIES, parseUpstream } from "../agent/options.js";
import { commonOptionSpecs } from "../shoal/common-options.js";
import { isLoopback, tlsFileOptionSpecs, validateTlsFiles } from "../shoal/tls-options.js";

const membershipModes = ["open", "static", "kubernetes"] as const;
export type MembershipMode = (typeof membershipModes)[number];

function parseMembershipMode(raw: string): MembershipMode {
  if (!(membershipModes as readonly string[]).includes(raw)) throw new Error(`expected one of ${membershipModes.join(", ")}`);
  return raw as MembershipMode;
}

/** `10.0.0.5,node-a,[fd00::1]` → entries; each a host address or a node name. */
export function parsePeerList(raw: string): string[] {
  const entries = raw
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  for (const entry of entries) {
    if (!/^(\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:.]+|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$/.test(entry)) {
      throw new Error(`${JSON.stringify(entry)} is neither a host address nor a node name`);
    }
  }
  return entries;
}

function parsePositiveDuration(raw: string): number {
  const ms = parseDuration(raw);
  if (ms <= 0) throw new Error("expected a duration above zero");
  return ms;
}

/** The Lease stores its duration in whole seconds. */
function parseLeaseDuration(raw: string): number {
  const ms = parsePositiveDuration(raw);
  if (ms % 1000 !== 0) throw new Error("expected whole seconds (the Lease stores seconds)");
  return ms;
}

/** A Kubernetes object name (RFC 1123 subdomain), as namespaces, Leases and pod names are. */
function parseObjectName(raw: string): string {
  if (raw.length > 253 || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(raw)) {
    throw new Error("expected a Kubernetes object name: lower-case letters, digits, '-' and '.', at most 253 characters");
  }
  return raw;
}

function parseNamespace(raw: string): string {
  if (raw.length > 63 || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(raw))
    throw new Error("expected a namespace name: lower-case letters, digits and '-', at most 63 characters");
  return raw;
}

function parseSelector(raw: string): string {
  return parseLabelSelector(raw).toString();
}

/** An IP address (the pod IP), without port or brackets. */
function parseAdvertiseHost(raw: string): string {
  const bare = raw.replace(/^\[(.*)\]$/, "$1");
  if (isIP(bare) === 0 || bare === "0.0.0.0" || bare === "::")
    throw new Error("expected this replica's IP address (the pod IP), e.g. from the downward API's status.podIP");
  return bare;
}

function parseIdentity(raw: string): string {
  if (raw.trim() === "" || raw.length > 253) throw new Error("expected a non-empty name of at most 253 characters");
  return raw;
}

export const controllerOptionSpecs = {
  listen: {
    name: "listen",
    description: "Address of the tracker (gRPC) that agents hold their session with.",
    parse: parseHostPort,
    default: "0.0.0.0:7070",
  },
  metricsAddr: {
    name: "metrics-addr",
    description: "Address serving /metrics, /healthz and /readyz.",
    parse: parseHostPort,
    default: "0.0.0.0:9151",
  },
  membership: {
    name: "membership",
    description:
      "Who may register: open (any agent that connects), static (only --allowed-peers) or kubernetes (agent Pods from the API; Lease leader election, only the leader serves).",
    parse: parseMembershipMode,
    schemaEnum: membershipModes,
    default: "open",
  },
  allowedPeers: {
    name: "allowed-peers",
    description:
      "With --membership static: comma-separated agent host addresses (matched against the connection) or node names (as the agent registers; self-declared).",
    parse: parsePeerList,
  },
  grantStallTimeout: {
    name: "grant-stall-timeout",
    description:
      "An agent granted the origin fetch of a blob that announces no new pieces for this long loses the grant to the next agent asking.",
    parse: parsePositiveDuration,
    default: "10s",
  },
  kubeconfig: {
    name: "kubeconfig",
    description:
      "With --membership kubernetes: kubeconfig file to reach the API server (its current context). Default: the Pod's in-cluster service account.",
    parse: (raw: string) => raw,
  },
  namespace: {
    name: "namespace",
    description:
      "With --membership kubernetes: namespace of the agent Pods and of the leader Lease. Default: the Pod's own namespace (in-cluster).",
    parse: parseNamespace,
  },
  agentSelector: {
    name: "agent-selector",
    description: "With --membership kubernetes: label selector of the agent Pods; only connections from their pod IPs are admitted.",
    parse: parseSelector,
    default: "app.kubernetes.io/name=shoal,app.kubernetes.io/component=agent",
  },
  leaseName: {
    name: "lease-name",
    description: "With --membership kubernetes: name of the coordination.k8s.io/v1 Lease the replicas elect a leader with.",
    parse: parseObjectName,
    default: "shoal-controller",
  },
  identity: {
    name: "identity",
    description: "With --membership kubernetes: this replica's name in the Lease and in Events. Default: the host name (the pod name).",
    parse: parseIdentity,
  },
  leaseDuration: {
    name: "lease-duration",
    description: "With --membership kubernetes: how long followers wait, after they last saw the Lease change, before taking it over.",
    parse: parseLeaseDuration,
    default: "15s",
  },
  renewDeadline: {
    name: "renew-deadline",
    description: "With --membership kubernetes: the leader stops leading (and serving) if it could not renew the Lease for this long.",
    parse: parsePositiveDuration,
    default: "10s",
  },
  retryPeriod: {
    name: "retry-period",
    description: "With --membership kubernetes: how often candidates try to acquire, and the leader to renew, the Lease.",
    parse: parsePositiveDuration,
    default: "2s",
  },
  candidatePeriod: {
    name: "candidate-period",
    description:
      "With --membership kubernetes: how often a follower reads the Lease while another replica holds it (at most --retry-period). A leader stopping gracefully serves until a follower has taken the released Lease, so this bounds how long that hand-over takes. Default: 1s, or --retry-period if shorter.",
    parse: parsePositiveDuration,
  },
  advertiseHost: {
    name: "advertise-host",
    description:
      "With --membership kubernetes: this replica's IP address as agents reach it (the pod IP). The leader writes IP:tracker port on the Lease; a follower that an agent reaches through the Service names it, and the agent dials the leader directly. Default: the --listen host when it is an IP other than 0.0.0.0/::; without any, followers cannot send agents on.",
    parse: parseAdvertiseHost,
  },
  prefetch: {
    name: "prefetch",
    description:
      "With --membership kubernetes: reconcile ImagePrefetch resources (shoal.dev/v1alpha1) on the leader. Needs the CRD installed.",
    parse: (raw: string) => raw === "true",
    boolean: true,
    default: "true",
  },
  upstream: {
    name: "upstream",
    description: `With --prefetch: a registry the agents mirror, REGISTRY or REGISTRY=URL as for \`shoal agent --upstream\`; ImagePrefetch resolves references there. Default: ${WELL_KNOWN_REGISTRIES.join(", ")}.`,
    parse: parseUpstream,
    repeatable: true,
  },
  caSecret: {
    name: "ca-secret",
    description:
      "With --membership kubernetes: the kubernetes.io/tls Secret (tls.crt, tls.key) of the CA that signs agents' and controllers' certificates.",
    parse: parseObjectName,
    default: "shoal-ca",
  },
  issuerListen: {
    name: "issuer-listen",
    description:
      "With --membership kubernetes: address of the certificate issuer, where agents trade their ServiceAccount token for a certificate.",
    parse: parseHostPort,
    default: "0.0.0.0:7071",
  },
  certLifetime: {
    name: "cert-lifetime",
    description:
      "With --membership kubernetes: lifetime of the certificates issued (at least 1m); holders renew them after two thirds of it.",
    parse: (raw: string) => {
      const ms = parseDuration(raw);
      if (ms < 60_000) throw new Error("expected at least 1m");
      return ms;
    },
    default: "24h",
  },
  tokenAudience: {
    name: "token-audience",
    description:
      "With --membership kubernetes: the audience of the agents' projected ServiceAccount tokens; tokens for any other audience are refused.",
    parse: (raw: string) => {
      if (raw.trim() === "" || raw.length > 253) throw new Error("expected a non-empty audience of at most 253 characters");
      return raw;
    },
    default: "shoal",
  },
  allowOpenMembership: {
    name: "allow-open-membership",
    description:
      "Allow --membership open on an address other than loopback (any agent holding a certificate of the CA, or anyone in plaintext, may register).",
    parse: parseBoolean,
    boolean: true,
    default: "false",
  },
  ...tlsFileOptionSpecs,
  ...commonOptionSpecs,
} as const satisfies OptionSpecs;

export type ControllerOptions = ParsedOptions<typeof controllerOptionSpecs>;

/** Registry host → base URL for ImagePrefetch resolution, from --upstream or the agents' defaults. */
export function prefetchUpstreams(options: ControllerOptions): Map<string, string> {
  const list = options.upstream.length > 0 ? options.upstream : WELL_KNOWN_REGISTRIES.map((r) => parseUpstream(r));
  return new Map(list.map((u) => [u.registry, u.url]));
}

/** A follower's Lease reads, unless --candidate-period says otherwise. */
export const DEFAULT_CANDIDATE_PERIOD_MS = 1_000;

/** Checks that span several options; the message names them. */
export function validateControllerOptions(options: ControllerOptions): void {
  const peers = options.allowedPeers ?? [];
  if (new Set(options.upstream.map((u) => u.registry)).size !== options.upstream.length)
    throw new Error("--upstream names the same registry twice");
  if (options.membership === "static" && peers.length === 0)
    throw new Error("--membership static needs --allowed-peers (SHOAL_ALLOWED_PEERS)");
  if (options.membership !== "static" && peers.length > 0) throw new Error("--allowed-peers only applies with --membership static");
  const tlsFiles = validateTlsFiles(options);
  if (options.membership === "kubernetes" && (tlsFiles || options.tlsCa !== undefined)) {
    throw new Error(
      "--tls-cert, --tls-key and --tls-ca do not apply with --membership kubernetes: the controller issues its own certificate from --ca-secret",
    );
  }
  if (options.membership !== "kubernetes" && options.tlsCa !== undefined && !tlsFiles)
    throw new Error("--tls-ca needs --tls-cert and --tls-key");
  if (options.membership !== "kubernetes") {
    for (const [flag, value] of [
      ["--kubeconfig", options.kubeconfig],
      ["--namespace", options.namespace],
      ["--identity", options.identity],
      ["--advertise-host", options.advertiseHost],
    ] as const) {
      if (value !== undefined) throw new Error(`${flag} only applies with --membership kubernetes`);
    }
    if (options.upstream.length > 0)
      throw new Error("--upstream only applies with --membership kubernetes (ImagePrefetch resolves references there)");
    if (options.membership === "open" && !isLoopback(options.listen.host) && !options.allowOpenMembership) {
      throw new Error(
        `--membership open admits any agent, and --listen ${options.listen.host}:${options.listen.port} is not loopback: use --membership static or kubernetes, --listen 127.0.0.1:${options.listen.port} for local development, or --allow-open-membership`,
      );
    }
    if (!tlsFiles && !isLoopback(options.listen.host) && !options.allowInsecure) {
      throw new Error(
        `the tracker on ${options.listen.host}:${options.listen.port} would be plaintext: give --tls-cert, --tls-key and --tls-ca, listen on loopback, or --allow-insecure`,
      );
    }
    return;
  }
  if (options.renewDeadline >= options.leaseDuration)
    throw new Error(`--renew-deadline (${options.renewDeadline} ms) must be shorter than --lease-duration (${options.leaseDuration} ms)`);
  if (options.renewDeadline <= 1.2 * options.retryPeriod) {
    throw new Error(`--renew-deadline (${options.renewDeadline} ms) must be longer than 1.2 × --retry-period (${options.retryPeriod} ms)`);
  }
  if (options.candidatePeriod !== undefined && options.candidatePeriod > options.retryPeriod)
    throw new Error(
      `--candidate-period (${options.candidatePeriod} ms) must not be longer than --retry-period (${options.retryPeriod} ms)`,
    );
}
