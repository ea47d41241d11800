import { type KeyObject, X509Certificate, createPrivateKey } from "node:crypto";
import { IdentityError } from "./errors.js";
import { type WorkloadIdentity, identityOfCertificate } from "./workload-identity.js";
import { parseCertificates } from "./x509.js";

/** What a workload presents and trusts: its key and certificate, and the CA certificates it accepts. */
export interface TlsMaterial {
  readonly key: KeyObject;
  readonly keyPem: string;
  /** The leaf first, then any intermediates (PEM). */
  readonly certificatePem: string;
  /** The CA certificates peers must chain to (PEM; several during a CA rotation). */
  readonly trustBundlePem: string;
  readonly identity: WorkloadIdentity;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * Where a workload's current TLS material comes from: issued and rotated by the controller, read from
 * files, or fixed (tests). Listeners hear of every new material; connections made afterwards use it.
 */
export interface IdentitySource {
  /** The material to use now, or undefined before the first certificate and once it has expired. */
  current(): TlsMaterial | undefined;
  /** `listener` gets each new material (a rotation). Returns the unsubscribe function. */
  subscribe(listener: (material: TlsMaterial) => void): () => void;
}

/**
 * Checks and assembles material from PEM: the key must be the certificate's, the certificate must name
 * a workload identity, and the trust bundle must hold at least one CA certificate. Throws
 * ERR_IDENTITY_CONFIG with what is wrong.
 */
export function materialFromPem(pem: { keyPem: string; certificatePem: string; trustBundlePem: string }): TlsMaterial {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem.keyPem);
  } catch (error: unknown) {
    throw new IdentityError("ERR_IDENTITY_CONFIG", "the key is not a readable private key (PEM)", { cause: error });
  }
  const [leaf] = parseCertificates(pem.certificatePem);
  if (leaf === undefined) throw new IdentityError("ERR_IDENTITY_CONFIG", "the certificate PEM holds no certificate");
  if (!leaf.checkPrivateKey(key)) throw new IdentityError("ERR_IDENTITY_CONFIG", "the key does not belong to the certificate");
  const identity = identityOfCertificate(leaf);
  if (identity === undefined) {
    throw new IdentityError(
      "ERR_IDENTITY_CONFIG",
      `the certificate (${leaf.subject.replace(/\n/g, ", ")}) names no workload identity: one subjectAltName URI shoal://agent/<node> or shoal://controller/<name> is needed`,
    );
  }
  const cas = parseCertificates(pem.trustBundlePem);
  if (cas.length === 0) throw new IdentityError("ERR_IDENTITY_CONFIG", "the trust bundle holds no certificate");
  if (!cas.some((ca) => leaf.checkIssued(ca) && leaf.verify(ca.publicKey))) {
    throw new IdentityError("ERR_IDENTITY_CONFIG", "the certificate was not issued by a CA of the trust bundle");
  }
  return {
    key,
    keyPem: pem.keyPem,
    certificatePem: pem.certificatePem,
    trustBundlePem: pem.trustBundlePem,
    identity,
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
  };
}

/** The leaf certificate of some material, parsed. */
export function leafOf(material: TlsMaterial): X509Certificate {
  const [leaf] = parseCertificates(material.certificatePem);
  if (leaf === undefined) throw new IdentityError("ERR_IDENTITY_MALFORMED", "material without a certificate");
  return leaf;
}

/** Material that changes only when told to (tests, and the demo's fixed certificates). */
export class StaticIdentity implements IdentitySource {
  private readonly listeners = new Set<(material: TlsMaterial) => void>();

  constructor(private material: TlsMaterial | undefined) {}

  current(): TlsMaterial | undefined {
    const material = this.material;
    return material !== undefined && material.notAfter.getTime() > Date.now() ? material : undefined;
  }

  /** Replaces the material and tells every listener (a rotation). */
  set(material: TlsMaterial): void {
    this.material = material;
    for (const listener of [...this.listeners]) listener(material);
  }

  subscribe(listener: (material: TlsMaterial) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
