import { isIP } from "node:net";
import { Metadata, status } from "@grpc/grpc-js";

/**
 * Trailing metadata of an UNAVAILABLE answer from a controller replica that does not serve (a
 * follower): the `host:port` of the tracker that does (the leader). The agent dials it directly, so a
 * Service that routes to every Ready replica still gets every agent to the leader.
 */
export const LEADER_ADDRESS_METADATA = "shoal-leader-address";
/** Longer than any IP literal with a port; anything longer is garbage, not an address. */
const MAX_ADDRESS_LENGTH = 64;

/**
 * `host:port` with an IP literal host (`[v6]:port` for IPv6) and a port in 1–65535, normalised; a
 * string naming the problem otherwise. Only IP literals: the leader advertises its pod IP, and a name
 * would need a resolver the agent trusts less than the Service it came through.
 */
export function parseLeaderAddress(value: string): { readonly address: string } | { readonly invalid: string } {
  if (value.length === 0 || value.length > MAX_ADDRESS_LENGTH) return { invalid: `leader address of ${value.length} characters` };
  const match = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(value) ?? /^([0-9.]+):(\d{1,5})$/.exec(value);
  const host = match?.[1];
  const port = Number(match?.[2]);
  if (host === undefined || isIP(host) === 0) return { invalid: `leader address ${JSON.stringify(value)} is not IP:port` };
  if (!Number.isInteger(port) || port < 1 || port > 65_535) return { invalid: `leader address ${JSON.stringify(value)} has no valid port` };
  if (host === "0.0.0.0" || host === "::") return { invalid: `leader address ${JSON.stringify(value)} is unspecified, not dialable` };
  return { address: isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}` };
}

/** Metadata carrying `address` (already validated by the sender) for a refusal. */
export function leaderAddressMetadata(address: string): Metadata {
  const metadata = new Metadata();
  metadata.set(LEADER_ADDRESS_METADATA, address);
  return metadata;
}

/** What an agent does after a session attempt ended with `code` and trailing `metadata`. */
export type RedirectDecision =
  /** Dial the leader at this address next, without waiting. */
  | { readonly kind: "follow"; readonly address: string }
  /** The replica named a leader, but not usably: back off and go through the Service again. */
  | { readonly kind: "refuse"; readonly reason: string }
  /** Nothing to follow: the usual backoff. */
  | { readonly kind: "none" };

/**
 * Decides whether a session that ended with `code` and trailing `metadata` is a redirect: UNAVAILABLE
 * naming a leader, from a follower refusing a new session or from a leader handing over on shutdown.
 * `redirectsInARow` counts redirects followed since the last registered session: one hop is enough
 * when replicas agree on the leader, so more in a row means they do not (a hand-over in progress, or a
 * replica with stale or bad data), and the agent backs off to the Service instead of bouncing between
 * replicas.
 */
export function decideRedirect(
  code: status,
  metadata: Metadata | undefined,
  options: { readonly redirectsInARow: number; readonly maxRedirects: number; readonly current: string },
): RedirectDecision {
  if (code !== status.UNAVAILABLE || metadata === undefined) return { kind: "none" };
  const values = metadata.get(LEADER_ADDRESS_METADATA);
  if (values.length === 0) return { kind: "none" };
  if (values.length > 1) return { kind: "refuse", reason: `${values.length} leader addresses in one answer` };
  const raw = values[0];
  if (typeof raw !== "string") return { kind: "refuse", reason: "a binary leader address" };
  const parsed = parseLeaderAddress(raw);
  if ("invalid" in parsed) return { kind: "refuse", reason: parsed.invalid };
  if (parsed.address === options.current) return { kind: "refuse", reason: `redirected to ${parsed.address}, the address just dialed` };
  if (options.redirectsInARow >= options.maxRedirects)
    return { kind: "refuse", reason: `already followed ${options.redirectsInARow} redirect(s) in a row` };
  return { kind: "follow", address: parsed.address };
}
