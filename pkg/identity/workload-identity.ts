import type { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { IdentityError } from "./errors.js";
import { altNamesOf } from "./x509.js";

export type WorkloadRole = "agent" | "controller";

/**
 * Who a certificate says its holder is. Carried in one URI subjectAltName
 * (`shoal://agent/<node>[/<namespace>/<pod>]`, `shoal://controller/<name>`) and the IP address SANs.
 * The issuer writes it from what it verified (the Pod a token names), never from what the requester says.
 */
export interface WorkloadIdentity {
  readonly role: WorkloadRole;
  /** An agent's node name; a controller replica's name. */
  readonly name: string;
  /** The Pod it runs in, when it was issued from Kubernetes. */
  readonly pod?: { readonly namespace: string; readonly name: string } | undefined;
  /** The addresses it serves on (pod IPs): a client checks the address it dialed against them. */
  readonly ips: readonly string[];
}

export const IDENTITY_URI_SCHEME = "shoal:";

/** DNS-1123 subdomains (node names, pod names) and labels (namespaces): nothing here needs escaping. */
const NAME = /^[a-z0-9A-Z]([-a-z0-9A-Z.]{0,251}[a-z0-9A-Z])?$/;

/** The URI SAN of an identity; also its principal (what sessions are bound to). */
export function identityUri(identity: Pick<WorkloadIdentity, "role" | "name" | "pod">): string {
  const parts = [identity.name, ...(identity.pod === undefined ? [] : [identity.pod.namespace, identity.pod.name])];
  for (const part of parts)
    if (!NAME.test(part))
      throw new IdentityError("ERR_IDENTITY_CONFIG", `${JSON.stringify(part)} cannot be part of an identity (a DNS name is expected)`);
  return `${IDENTITY_URI_SCHEME}//${identity.role}/${parts.join("/")}`;
}

/** The role, name and Pod of a `shoal://` URI, or undefined when it is none. */
export function parseIdentityUri(uri: string): Omit<WorkloadIdentity, "ips"> | undefined {
  const match = /^shoal:\/\/(agent|controller)\/([^/]+)(?:\/([^/]+)\/([^/]+))?$/.exec(uri);
  if (match === null) return undefined;
  const [, role, name, namespace, pod] = match;
  if (role === undefined || name === undefined || !NAME.test(name)) return undefined;
  if (namespace !== undefined && pod !== undefined && !(NAME.test(namespace) && NAME.test(pod))) return undefined;
  return { role: role as WorkloadRole, name, ...(namespace === undefined || pod === undefined ? {} : { pod: { namespace, name: pod } }) };
}

/**
 * The identity a certificate names: exactly one `shoal://` URI SAN, and its IP address SANs. Undefined
 * for a certificate that names none (or several).
 */
export function identityOfCertificate(certificate: X509Certificate): WorkloadIdentity | undefined {
  let names;
  try {
    names = altNamesOf(certificate);
  } catch {
    return undefined;
  }
  const identities = names.uris.map(parseIdentityUri).filter((id) => id !== undefined);
  const [only, ...more] = identities;
  if (only === undefined || more.length > 0) return undefined;
  return { ...only, ips: names.ips };
}

/** For log lines and refusal messages: `agent node-1 (pod shoal/agent-x)`. */
export function describeIdentity(identity: WorkloadIdentity): string {
  return `${identity.role} ${identity.name}${identity.pod === undefined ? "" : ` (pod ${identity.pod.namespace}/${identity.pod.name})`}`;
}

/** Lower-cases, drops IPv6 brackets and the IPv4-mapped prefix so `::ffff:10.0.0.1` matches `10.0.0.1`. */
export function normalizeAddress(host: string): string {
  const bare = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  return bare.startsWith("::ffff:") && bare.includes(".") ? bare.slice("::ffff:".length) : bare;
}

/** Whether `host` (an address a client dialed or a connection came from) is one of the identity's IPs. */
export function identityHasAddress(identity: WorkloadIdentity, host: string): boolean {
  const wanted = normalizeAddress(host);
  if (isIP(wanted) === 0) return false;
  return identity.ips.some((ip) => normalizeAddress(ip) === wanted);
}
