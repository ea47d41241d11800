import { type KeyObject, X509Certificate, createHash, createPublicKey, randomBytes, sign, verify } from "node:crypto";
import { isIP } from "node:net";
import * as der from "./der.js";
import { IdentityError } from "./errors.js";

/** Object identifiers used here (RFC 5280, RFC 5480, RFC 8410, RFC 2986). */
export const OID = {
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  organizationalUnit: "2.5.4.11",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  subjectKeyIdentifier: "2.5.29.14",
  authorityKeyIdentifier: "2.5.29.35",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  sha256WithRsa: "1.2.840.113549.1.1.11",
  ed25519: "1.3.101.112",
} as const;

/** KeyUsage bit numbers (RFC 5280 4.2.1.3). */
export const KEY_USAGE = { digitalSignature: 0, keyEncipherment: 2, keyCertSign: 5, cRLSign: 6 } as const;

/** Largest certificate request accepted for parsing: a P-256 or RSA-4096 key and a name fit in far less. */
export const MAX_CSR_BYTES = 16 * 1024;

export interface NameAttribute {
  readonly oid: string;
  readonly value: string;
}

/** A Name (RDNSequence), one attribute per RDN, as UTF8String. */
export function encodeName(attributes: readonly NameAttribute[]): Buffer {
  return der.sequence(...attributes.map((a) => der.setOf(der.sequence(der.oid(a.oid), der.utf8String(a.value)))));
}

export interface Extension {
  readonly oid: string;
  readonly critical: boolean;
  /** The extension's own DER (what goes inside the OCTET STRING). */
  readonly value: Buffer;
}

export function basicConstraints(ca: boolean): Extension {
  return { oid: OID.basicConstraints, critical: true, value: ca ? der.sequence(der.boolean(true)) : der.sequence() };
}

export function keyUsage(bits: readonly number[]): Extension {
  return { oid: OID.keyUsage, critical: true, value: der.namedBitString(bits) };
}

export function extKeyUsage(oids: readonly string[]): Extension {
  return { oid: OID.extKeyUsage, critical: false, value: der.sequence(...oids.map((o) => der.oid(o))) };
}

export interface AltNames {
  readonly uris?: readonly string[];
  readonly ips?: readonly string[];
  readonly dnsNames?: readonly string[];
}

export function subjectAltName(names: AltNames): Extension {
  const general = [
    ...(names.dnsNames ?? []).map((n) => der.implicitPrimitive(2, Buffer.from(n, "ascii"))),
    ...(names.uris ?? []).map((u) => der.implicitPrimitive(6, Buffer.from(u, "ascii"))),
    ...(names.ips ?? []).map((ip) => der.implicitPrimitive(7, ipBytes(ip))),
  ];
  return { oid: OID.subjectAltName, critical: false, value: der.sequence(...general) };
}

export function subjectKeyIdentifier(publicKey: KeyObject): Extension {
  return { oid: OID.subjectKeyIdentifier, critical: false, value: der.octetString(keyIdentifier(publicKey)) };
}

export function authorityKeyIdentifier(id: Buffer): Extension {
  return { oid: OID.authorityKeyIdentifier, critical: false, value: der.sequence(der.implicitPrimitive(0, id)) };
}

/** RFC 5280's method 1: SHA-1 of the subjectPublicKey bits (only an identifier, not a security property). */
export function keyIdentifier(publicKey: KeyObject): Buffer {
  const spki = der.children(der.readSingle(publicKey.export({ type: "spki", format: "der" })));
  const bits = der.readBitStringBytes(der.expectTag(spki[1], der.TAG.BIT_STRING, "subjectPublicKey"));
  return createHash("sha1").update(bits).digest();
}

function ipBytes(ip: string): Buffer {
  const family = isIP(ip);
  if (family === 4) return Buffer.from(ip.split(".").map(Number));
  if (family !== 6) throw new RangeError(`${ip} is not an IP address`);
  // Expand "::" and an embedded IPv4 tail into 8 groups.
  let text = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1] !== undefined) {
    const [a, b, c, d] = v4[1].split(".").map(Number);
    text = `${text.slice(0, -v4[1].length)}${(((a ?? 0) << 8) | (b ?? 0)).toString(16)}:${(((c ?? 0) << 8) | (d ?? 0)).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups =
    tail === undefined ? headGroups : [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill("0"), ...tailGroups];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function formatIp(bytes: Buffer): string {
  if (bytes.length === 4) return [...bytes].join(".");
  if (bytes.length !== 16) throw new IdentityError("ERR_IDENTITY_MALFORMED", `an IP address SAN of ${bytes.length} bytes`);
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2).toString(16));
  // The IPv4-mapped form as node:net reports remote addresses.
  if (groups.slice(0, 5).every((g) => g === "0") && groups[5] === "ffff") return `::ffff:${[...bytes.subarray(12)].join(".")}`;
  return compressIpv6(groups);
}

function compressIpv6(groups: readonly string[]): string {
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < groups.length;) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === "0") j++;
    if (j - i > bestLength && j - i > 1) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return groups.join(":");
  return `${groups.slice(0, bestStart).join(":")}::${groups.slice(bestStart + bestLength).join(":")}`;
}

/** The AlgorithmIdentifier and the signing call for a private key's type. */
function signatureScheme(key: KeyObject): { algorithm: Buffer; sign: (data: Buffer) => Buffer } {
  switch (key.asymmetricKeyType) {
    case "ec":
      return { algorithm: der.sequence(der.oid(OID.ecdsaWithSha256)), sign: (data) => sign("sha256", data, { key, dsaEncoding: "der" }) };
    case "rsa":
      return { algorithm: der.sequence(der.oid(OID.sha256WithRsa), der.nullValue()), sign: (data) => sign("sha256", data, key) };
    case "ed25519":
      return { algorithm: der.sequence(der.oid(OID.ed25519)), sign: (data) => sign(null, data, key) };
    default:
      throw new IdentityError("ERR_IDENTITY_CONFIG", `keys of type ${String(key.asymmetricKeyType)} cannot sign here (EC, RSA or Ed25519)`);
  }
}

function verifySignature(algorithmOid: string, publicKey: KeyObject, data: Buffer, signature: Buffer): boolean {
  switch (algorithmOid) {
    case OID.ecdsaWithSha256:
      return publicKey.asymmetricKeyType === "ec" && verify("sha256", data, { key: publicKey, dsaEncoding: "der" }, signature);
    case OID.sha256WithRsa:
      return publicKey.asymmetricKeyType === "rsa" && verify("sha256", data, publicKey, signature);
    case OID.ed25519:
      return publicKey.asymmetricKeyType === "ed25519" && verify(null, data, publicKey, signature);
    default:
      return false;
  }
}

function extensionsField(extensions: readonly Extension[]): Buffer {
  return der.sequence(
    ...extensions.map((e) => der.sequence(der.oid(e.oid), ...(e.critical ? [der.boolean(true)] : []), der.octetString(e.value))),
  );
}

export interface CertificateTemplate {
  readonly subject: Buffer;
  readonly subjectPublicKey: KeyObject;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly extensions: readonly Extension[];
  /** Default: 16 random bytes. */
  readonly serial?: Buffer;
}

/**
 * Signs an X.509 v3 certificate. With `issuer` undefined it is self-signed (a root CA): the issuer name
 * is the subject and `issuerKey` must be the subject key's private half.
 */
export function signCertificate(template: CertificateTemplate, issuerKey: KeyObject, issuer?: X509Certificate): Buffer {
  const scheme = signatureScheme(issuerKey);
  const serial = template.serial ?? randomSerial();
  const issuerName = issuer === undefined ? template.subject : subjectNameOf(issuer);
  const tbs = der.sequence(
    der.explicit(0, der.integer(2)),
    der.integer(serial),
    scheme.algorithm,
    issuerName,
    der.sequence(der.time(template.notBefore), der.time(template.notAfter)),
    template.subject,
    template.subjectPublicKey.export({ type: "spki", format: "der" }),
    der.explicit(3, extensionsField(template.extensions)),
  );
  return der.sequence(tbs, scheme.algorithm, der.bitString(scheme.sign(tbs)));
}

function randomSerial(): Buffer {
  const serial = randomBytes(16);
  // Positive and without a leading zero byte, so the encoding stays 16 or 17 bytes.
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x40;
  return serial;
}

/** The subject Name of a certificate, byte for byte: what a certificate it issues names as its issuer. */
export function subjectNameOf(certificate: X509Certificate): Buffer {
  return tbsFields(certificate.raw).subject;
}

function tbsFields(raw: Buffer): { subject: Buffer; extensions: DerExtensions } {
  const [tbs] = der.children(der.readSingle(raw, der.TAG.SEQUENCE));
  const fields = der.children(der.expectTag(tbs, der.TAG.SEQUENCE, "tbsCertificate"));
  // version [0] is optional (v1 certificates omit it).
  const offset = fields[0]?.tag === 0xa0 ? 1 : 0;
  const subject = der.expectTag(fields[offset + 4], der.TAG.SEQUENCE, "subject").raw;
  const extensionsNode = fields.slice(offset + 6).find((f) => f.tag === 0xa3);
  const extensions: DerExtensions = new Map();
  if (extensionsNode !== undefined) {
    const [list] = der.children(extensionsNode);
    for (const ext of der.children(der.expectTag(list, der.TAG.SEQUENCE, "extensions"))) {
      const parts = der.children(ext);
      const id = der.readOid(der.expectTag(parts[0], der.TAG.OID, "extnID"));
      const critical = parts[1]?.tag === der.TAG.BOOLEAN && parts[1].content[0] !== 0;
      const value = der.expectTag(parts.at(-1), der.TAG.OCTET_STRING, "extnValue").content;
      extensions.set(id, { critical, value });
    }
  }
  return { subject, extensions };
}

type DerExtensions = Map<string, { readonly critical: boolean; readonly value: Buffer }>;

/** The extensions of a certificate by OID. Throws ERR_IDENTITY_MALFORMED. */
export function certificateExtensions(certificate: X509Certificate): DerExtensions {
  return tbsFields(certificate.raw).extensions;
}

/** The subjectAltName entries of a certificate (URIs, IP addresses, DNS names). */
export function altNamesOf(certificate: X509Certificate): Required<AltNames> {
  const ext = certificateExtensions(certificate).get(OID.subjectAltName);
  const names = { uris: [] as string[], ips: [] as string[], dnsNames: [] as string[] };
  if (ext === undefined) return names;
  for (const name of der.children(der.readSingle(ext.value, der.TAG.SEQUENCE))) {
    if (name.tag === 0x86) names.uris.push(name.content.toString("ascii"));
    else if (name.tag === 0x87) names.ips.push(formatIp(name.content));
    else if (name.tag === 0x82) names.dnsNames.push(name.content.toString("ascii"));
  }
  return names;
}

/** The subjectKeyIdentifier of a certificate, if it has one. */
export function subjectKeyIdOf(certificate: X509Certificate): Buffer | undefined {
  const ext = certificateExtensions(certificate).get(OID.subjectKeyIdentifier);
  return ext === undefined ? undefined : der.readSingle(ext.value, der.TAG.OCTET_STRING).content;
}

// ---- PKCS #10 certificate requests -----------------------------------------------------------

/**
 * A certificate request for `key`'s public half, signed with it (proof of possession). The subject is
 * informational only: the issuer decides what the certificate says.
 */
export function createCertificateRequest(key: KeyObject, subject: readonly NameAttribute[]): Buffer {
  const scheme = signatureScheme(key);
  const info = der.sequence(
    der.integer(0),
    encodeName(subject),
    createPublicKey(key).export({ type: "spki", format: "der" }),
    der.explicit(0, Buffer.alloc(0)),
  );
  return der.sequence(info, scheme.algorithm, der.bitString(scheme.sign(info)));
}

export interface ParsedCertificateRequest {
  readonly publicKey: KeyObject;
  readonly subject: Buffer;
}

/**
 * Parses a DER certificate request and checks its signature against its own key. Throws
 * ERR_IDENTITY_MALFORMED for bytes that are no request, ERR_IDENTITY_CSR_INVALID when the signature
 * does not verify (the sender does not hold the key).
 */
export function parseCertificateRequest(bytes: Uint8Array): ParsedCertificateRequest {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer.length > MAX_CSR_BYTES)
    throw new IdentityError("ERR_IDENTITY_MALFORMED", `certificate request of ${buffer.length} bytes (at most ${MAX_CSR_BYTES})`);
  const [info, algorithm, signature, ...extra] = der.children(der.readSingle(buffer, der.TAG.SEQUENCE));
  if (extra.length > 0) throw new IdentityError("ERR_IDENTITY_MALFORMED", "certificate request with extra fields");
  const infoFields = der.children(der.expectTag(info, der.TAG.SEQUENCE, "certificationRequestInfo"));
  const version = der.expectTag(infoFields[0], der.TAG.INTEGER, "version");
  if (version.content.length !== 1 || version.content[0] !== 0)
    throw new IdentityError("ERR_IDENTITY_MALFORMED", "certificate request version is not 1");
  const subject = der.expectTag(infoFields[1], der.TAG.SEQUENCE, "subject").raw;
  const spki = der.expectTag(infoFields[2], der.TAG.SEQUENCE, "subjectPKInfo").raw;
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: spki, format: "der", type: "spki" });
  } catch (error: unknown) {
    throw new IdentityError("ERR_IDENTITY_MALFORMED", "certificate request with an unreadable public key", { cause: error });
  }
  const [algorithmOid] = der.children(der.expectTag(algorithm, der.TAG.SEQUENCE, "signatureAlgorithm"));
  const oidText = der.readOid(der.expectTag(algorithmOid, der.TAG.OID, "algorithm"));
  const signatureBytes = der.readBitStringBytes(der.expectTag(signature, der.TAG.BIT_STRING, "signature"));
  if (!verifySignature(oidText, publicKey, (info as der.DerNode).raw, signatureBytes)) {
    throw new IdentityError("ERR_IDENTITY_CSR_INVALID", `the certificate request's signature (${oidText}) does not verify with its key`);
  }
  return { publicKey, subject };
}

// ---- PEM -------------------------------------------------------------------------------------

export function toPem(label: "CERTIFICATE" | "CERTIFICATE REQUEST", bytes: Buffer): string {
  const base64 = bytes
    .toString("base64")
    .replace(/(.{64})/g, "$1\n")
    .replace(/\n$/, "");
  return `-----BEGIN ${label}-----\n${base64}\n-----END ${label}-----\n`;
}

/** Every CERTIFICATE block of a PEM text, parsed. Throws ERR_IDENTITY_MALFORMED. */
export function parseCertificates(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((block) => {
    try {
      return new X509Certificate(block);
    } catch (error: unknown) {
      throw new IdentityError("ERR_IDENTITY_MALFORMED", "unreadable certificate in PEM", { cause: error });
    }
  });
}
