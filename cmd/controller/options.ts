import { type OptionSpecs, type ParsedOptions, parseDuration, parseHostPort } from "../../pkg/config/index.js";
import { commonOptionSpecs } from "../shoal/common-options.js";


const membershipModes = ["open", "static"] as const;
export type MembershipMode = (typeof membershipModes)[number];

function parseMembershipMode(raw: string): MembershipMode {
  if (!(membershipModes as readonly string[]).includes(raw)) throw new Error(`expected one of ${membershipModes.join(", ")}`);
  return raw as MembershipMode;
}

/** `10.0.0.5,node-a,[fd00::1]` → entries; each a host address or a node name. */
export function parsePeerList(raw: string): string[] {
  const entries = raw.split(",").map((entry) => entry.trim()).filter((entry) => entry !== "");
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
    description: "Who may register: open (any agent that connects) or static (only --allowed-peers).",
    parse: parseMembershipMode,
    default: "open",
  },
  allowedPeers: {
    name: "allowed-peers",
    description: "With --membership static: comma-separated agent host addresses (matched against the connection) or node names (as the agent registers; self-declared).",
    parse: parsePeerList,
  },
  grantStallTimeout: {
    name: "grant-stall-timeout",
    description: "An agent granted the origin fetch of a blob that announces no new pieces for this long loses the grant to the next agent asking.",
    parse: parsePositiveDuration,
    default: "10s",
  },
  ...commonOptionSpecs,
} as const satisfies OptionSpecs;

export type ControllerOptions = ParsedOptions<typeof controllerOptionSpecs>;

/** Checks that span several options; the message names them. */
export function validateControllerOptions(options: ControllerOptions): void {
  const peers = options.allowedPeers ?? [];
  if (options.membership === "static" && peers.length === 0) throw new Error("--membership static needs --allowed-peers (SHOAL_ALLOWED_PEERS)");
  if (options.membership === "open" && peers.length > 0) throw new Error("--allowed-peers only applies with --membership static");
}
