import { type KeyObject, X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { IdentityError } from "./errors.js";
import { type WorkloadIdentity, identityUri } from "./workload-identity.js";
import {
  KEY_USAGE,
  OID,
  authorityKeyIdentifier,
  basicConstraints,
  encodeName,
  extKeyUsage,
  keyUsage,
  parseCertificates,
  signCertificate,
  subjectAltName,
  subjectKeyIdOf,
  subjectKeyIdentifier,
  toPem,
} from "./x509.js";

/** Issued certificates start this far in the past, so a peer whose clock is a little behind accepts them. */
export const BACKDATE_MS = 60_000;
/** Shortest lifetime issued (tests rotate every few seconds; the controller's flag asks for more). */
export const MIN_CERTIFICATE_LIFETIME_MS = 1_000;

/** A new P-256 key: small certificates and fast handshakes. Generated where it is used and never sent. */
export function generateKey(): KeyObject {
  return generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
}

export interface IssuedCertificate {
  /** The leaf certificate (PEM). */
  readonly certificatePem: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface IssueOptions {
  readonly publicKey: KeyObject;
  readonly identity: WorkloadIdentity;
  readonly lifetimeMs: number;
  /** Extra DNS names (e.g. the tracker Service's name on a controller's certificate). */
  readonly dnsNames?: readonly string[];
  readonly now?: Date;
}

/**
 * Signs workload certificates with a CA key: the controller's issuer in Kubernetes, and the throwaway CA
 * of the demo and tests. The key never leaves this object; the CA certificate is the trust bundle.
 */
export class CertificateAuthority {
  private constructor(
    readonly certificate: X509Certificate,
    private readonly key: KeyObject,
  ) {}

  /**
   * From PEM (a kubernetes.io/tls Secret's tls.crt and tls.key, or files). Throws ERR_IDENTITY_CONFIG
   * when the certificate is no CA, the key is not its key, or the certificate has expired.
   */
  static fromPem(certificatePem: string, keyPem: string, now = new Date()): CertificateAuthority {
    const [certificate] = parseCertificates(certificatePem);
    if (certificate === undefined) throw new IdentityError("ERR_IDENTITY_CONFIG", "the CA certificate PEM holds no certificate");
    let key: KeyObject;
    try {
      key = createPrivateKey(keyPem);
    } catch (error: unknown) {
      throw new IdentityError("ERR_IDENTITY_CONFIG", "the CA key is not a readable private key (PEM)", { cause: error });
    }
    if (!certificate.ca)
      throw new IdentityError(
        "ERR_IDENTITY_CONFIG",
        `the CA certificate (${certificate.subject.replace(/\n/g, ", ")}) is not a CA (basicConstraints CA:false)`,
      );
    if (!certificate.checkPrivateKey(key))
      throw new IdentityError("ERR_IDENTITY_CONFIG", "the CA key does not belong to the CA certificate");
    if (new Date(certificate.validTo).getTime() <= now.getTime())
      throw new IdentityError("ERR_IDENTITY_CONFIG", `the CA certificate expired at ${certificate.validTo}`);
    return new CertificateAuthority(certificate, key);
  }

  /** A new self-signed CA (P-256): the demo's and the tests' throwaway trust root. */
  static createSelfSigned(options: { commonName: string; lifetimeMs: number; now?: Date }): {
    ca: CertificateAuthority;
    certificatePem: string;
    keyPem: string;
  } {
    const now = options.now ?? new Date();
    const key = generateKey();
    const publicKey = createPublicKey(key);
    const raw = signCertificate(
      {
        subject: encodeName([
          { oid: OID.organization, value: "shoal" },
          { oid: OID.commonName, value: options.commonName },
        ]),
        subjectPublicKey: publicKey,
        notBefore: new Date(now.getTime() - BACKDATE_MS),
        notAfter: new Date(now.getTime() + options.lifetimeMs),
        extensions: [
          basicConstraints(true),
          keyUsage([KEY_USAGE.keyCertSign, KEY_USAGE.cRLSign, KEY_USAGE.digitalSignature]),
          subjectKeyIdentifier(publicKey),
        ],
      },
      key,
    );
    const certificatePem = toPem("CERTIFICATE", raw);
    const keyPem = key.export({ type: "pkcs8", format: "pem" }).toString();
    return { ca: new CertificateAuthority(new X509Certificate(raw), key), certificatePem, keyPem };
  }

  /** The CA certificate as PEM: what every workload trusts. */
  get certificatePem(): string {
    return toPem("CERTIFICATE", this.certificate.raw);
  }

  get notAfter(): Date {
    return new Date(this.certificate.validTo);
  }

  /**
   * A certificate for `publicKey` naming `identity` (URI and IP SANs), for both TLS server and client
   * use. Its lifetime ends no later than the CA's.
   */
  issue(options: IssueOptions): IssuedCertificate {
    if (!(options.lifetimeMs >= MIN_CERTIFICATE_LIFETIME_MS))
      throw new IdentityError(
        "ERR_IDENTITY_CONFIG",
        `certificate lifetime ${options.lifetimeMs} ms is below ${MIN_CERTIFICATE_LIFETIME_MS} ms`,
      );
    const now = options.now ?? new Date();
    const notBefore = new Date(now.getTime() - BACKDATE_MS);
    const notAfter = new Date(Math.min(now.getTime() + options.lifetimeMs, this.notAfter.getTime()));
    if (notAfter.getTime() <= now.getTime())
      throw new IdentityError("ERR_IDENTITY_CONFIG", `the CA certificate expired at ${this.certificate.validTo}`);
    const { identity } = options;
    const usage =
      options.publicKey.asymmetricKeyType === "rsa"
        ? [KEY_USAGE.digitalSignature, KEY_USAGE.keyEncipherment]
        : [KEY_USAGE.digitalSignature];
    const caKeyId = subjectKeyIdOf(this.certificate);
    const raw = signCertificate(
      {
        subject: encodeName([
          { oid: OID.organization, value: "shoal" },
          { oid: OID.organizationalUnit, value: identity.role },
          {
            oid: OID.commonName,
            value: identity.pod === undefined ? identity.name : `${identity.name} ${identity.pod.namespace}/${identity.pod.name}`,
          },
        ]),
        subjectPublicKey: options.publicKey,
        notBefore,
        notAfter,
        extensions: [
          basicConstraints(false),
          keyUsage(usage),
          extKeyUsage([OID.serverAuth, OID.clientAuth]),
          subjectAltName({ uris: [identityUri(identity)], ips: identity.ips, dnsNames: options.dnsNames ?? [] }),
          subjectKeyIdentifier(options.publicKey),
          ...(caKeyId === undefined ? [] : [authorityKeyIdentifier(caKeyId)]),
        ],
      },
      this.key,
      this.certificate,
    );
    return { certificatePem: toPem("CERTIFICATE", raw), notBefore, notAfter };
  }
}
