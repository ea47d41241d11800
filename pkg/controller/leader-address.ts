import { isIP } from "node:net";
import { parseLeaderAddress } from "../tracker/index.js";
import { ControllerError } from "./errors.js";

/**
 * The Lease annotation the leader writes (in the same write as holderIdentity, so no extra API verb):
 * JSON `{"holder": identity, "address": "IP:port"}`, the tracker address agents can dial directly.
 */
export const LEADER_ANNOTATION = "shoal.dev/leader-tracker";

/** `host:port` to advertise, undefined for an unspecified host (0.0.0.0, ::, ""); throws ERR_CONTROLLER_CONFIG for a non-IP host. */
export function advertisedAddress(host: string, port: number): string | undefined {
  if (host === "" || host === "0.0.0.0" || host === "::") return undefined;
  const bare = host.replace(/^\[(.*)\]$/, "$1");
  if (isIP(bare) === 0)
    throw new ControllerError("ERR_CONTROLLER_CONFIG", `advertise host ${JSON.stringify(host)} must be an IP address (the pod IP)`);
  const parsed = parseLeaderAddress(isIP(bare) === 6 ? `[${bare}]:${port}` : `${bare}:${port}`);
  if ("invalid" in parsed) throw new ControllerError("ERR_CONTROLLER_CONFIG", parsed.invalid);
  return parsed.address;
}

export function leaderAnnotationValue(holder: string, address: string): string {
  return JSON.stringify({ holder, address });
}

/** The address in `value` if it is well formed and written by `holder` (the Lease's current holder). */
export function leaderFromAnnotation(value: string | undefined, holder: string): string | undefined {
  if (value === undefined || holder === "") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const note = parsed as { holder?: unknown; address?: unknown };
  if (note.holder !== holder || typeof note.address !== "string") return undefined;
  const address = parseLeaderAddress(note.address);
  return "address" in address ? address.address : undefined;
}
