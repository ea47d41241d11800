import type { PeerCertificate, SecureContextOptions, TLSSocket } from "node:tls";
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import type { TlsMaterial } from "./tls-material.js";
import {
  type WorkloadIdentity,
  type WorkloadRole,
  describeIdentity,
  identityHasAddress,
  identityOfCertificate,
} from "./workload-identity.js";

/** TLS 1.3 only: one round trip, no renegotiation, and no legacy cipher to configure away. */
export const TLS_MIN_VERSION = "TLSv1.3";
/**
 * AES-128-GCM first: with AES-NI it costs about two thirds of AES-256-GCM per byte, and bulk piece
 * traffic is where TLS costs (the others stay allowed for peers that prefer them).
 */
export const TLS_CIPHERS = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/** What a workload presents and trusts, as node:tls secure-context options. */
export function secureContextOptions(material: TlsMaterial): SecureContextOptions {
  return {
    key: material.keyPem,
    cert: material.certificatePem,
    ca: material.trustBundlePem,
    minVersion: TLS_MIN_VERSION,
    ciphers: TLS_CIPHERS,
  };
}

/** The verified peer's identity on an authorized TLS socket, or undefined. */
export function peerIdentityOf(socket: TLSSocket): WorkloadIdentity | undefined {
  if (!socket.authorized) return undefined;
  const certificate = socket.getPeerX509Certificate();
  return certificate === undefined ? undefined : identityOfCertificate(certificate);
}

export interface ExpectedServer {
  /** The role the server's certificate must name. */
  readonly role: WorkloadRole;
}

/**
 * The server check a client makes once the chain verified against its trust bundle: the certificate
 * names a workload of the expected role, and, when the client dialed an IP address, that address is
 * one of the certificate's. So a tracker entry cannot send an agent to another host, and an agent
 * certificate cannot stand in for the controller. Returns an Error to refuse (node:tls convention).
 */
export function checkServer(expected: ExpectedServer): (host: string, certificate: PeerCertificate) => Error | undefined {
  return (host, certificate) => {
    let identity: WorkloadIdentity | undefined;
    try {
      identity = identityOfCertificate(new X509Certificate(certificate.raw));
    } catch {
      identity = undefined;
    }
    if (identity === undefined) return new Error(`the server at ${host} presented a certificate that names no workload identity`);
    if (identity.role !== expected.role) return new Error(`the server at ${host} is ${describeIdentity(identity)}, not a ${expected.role}`);
    const bare = host.replace(/^\[(.*)\]$/, "$1");
    if (isIP(bare) !== 0 && !identityHasAddress(identity, bare)) {
      return new Error(
        `the server at ${host} is ${describeIdentity(identity)}, whose certificate names ${identity.ips.join(", ") || "no address"}, not ${bare}`,
      );
    }
    return undefined;
  };
}

/** Client options for node:tls and node:http2 connections to a server of `expected` role. */
export function clientTlsOptions(
  material: TlsMaterial,
  expected: ExpectedServer,
): SecureContextOptions & { checkServerIdentity: (host: string, cert: PeerCertificate) => Error | undefined; rejectUnauthorized: true } {
  return { ...secureContextOptions(material), checkServerIdentity: checkServer(expected), rejectUnauthorized: true };
}
