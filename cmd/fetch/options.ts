import { type OptionSpecs, type ParsedOptions, parseDuration } from "../../pkg/config/index.js";
import { parsePlatform } from "../../pkg/oci/index.js";

/** The agent's mirror as the DaemonSet exposes it on every node (--mirror-addr default). */
export const DEFAULT_AGENT_URL = "http://127.0.0.1:5050";

export function parseAgentUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error("expected an http:// URL such as http://127.0.0.1:5050");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("expected an http:// or https:// URL");
  if (url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "")
    throw new Error("expected a URL without credentials, query or fragment");
  return url.toString().replace(/\/+$/, "");
}

export const fetchOptionSpecs = {
  to: {
    name: "to",
    description: "Directory to write the OCI image layout into (created if missing; an existing layout is added to).",
    parse: (raw: string) => {
      if (raw.trim() === "") throw new Error("expected a directory path");
      return raw;
    },
  },
  agent: {
    name: "agent",
    description: "URL of the Shoal agent's mirror to pull through.",
    parse: parseAgentUrl,
    default: DEFAULT_AGENT_URL,
  },
  platform: {
    name: "platform",
    description: "Which image of a multi-platform index to fetch, os/arch[/variant]; default linux/amd64, else the first.",
    parse: (raw: string) => {
      try {
        return parsePlatform(raw);
      } catch {
        throw new Error("expected os/arch[/variant], e.g. linux/arm64");
      }
    },
  },
  timeout: {
    name: "timeout",
    description: "Give up when the whole fetch takes longer than this.",
    parse: (raw: string) => {
      const ms = parseDuration(raw);
      if (ms <= 0) throw new Error("expected a duration above zero");
      return ms;
    },
    default: "30m",
  },
} as const satisfies OptionSpecs;

export type FetchOptions = ParsedOptions<typeof fetchOptionSpecs>;
