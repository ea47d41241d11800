import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { X509Certificate, createPublicKey, generateKeyPairSync } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CertificateAuthority, generateKey } from "./certificate-authority.js";
import * as der from "./der.js";
import { isIdentityError } from "./errors.js";
import { type WorkloadIdentity, identityOfCertificate, identityUri, parseIdentityUri } from "./workload-identity.js";
import {
  KEY_USAGE,
  OID,
  basicConstraints,
  createCertificateRequest,
  encodeName,
  keyUsage,
  parseCertificateRequest,
  signCertificate,
  toPem,
} from "./x509.js";

const HOUR_MS = 3_600_000;
const AGENT: WorkloadIdentity = {
  role: "agent",
  name: "node-1",
  pod: { namespace: "shoal", name: "shoal-agent-x7k2p" },
  ips: ["10.1.2.3", "fd00::7"],
};

function hasOpenssl(): boolean {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

describe("DER writer and reader", () => {
  it("writes minimal INTEGERs, with a zero byte before a set high bit", () => {
    assert.equal(der.integer(0).toString("hex"), "020100");
    assert.equal(der.integer(127).toString("hex"), "02017f");
    assert.equal(der.integer(128).toString("hex"), "02020080");
    assert.equal(der.integer(256).toString("hex"), "02020100");
    assert.equal(der.integer(Buffer.from([0, 0, 0x81])).toString("hex"), "02020081");
  });

  it("round-trips OIDs, including multi-byte arcs", () => {
    for (const id of [OID.sha256WithRsa, OID.subjectAltName, OID.ecdsaWithSha256, "2.999.3", "1.3.6.1.4.1.311.21.20"]) {
      assert.equal(der.readOid(der.readSingle(der.oid(id))), id);
    }
    assert.equal(der.oid("1.2.840.113549").toString("hex"), "06062a864886f70d");
  });

  it("writes long lengths and reads them back", () => {
    const big = der.octetString(Buffer.alloc(70_000, 1));
    assert.equal(big.subarray(0, 5).toString("hex"), "0483011170");
    assert.equal(der.readSingle(big).content.length, 70_000);
  });

  it("uses UTCTime through 2049 and GeneralizedTime from 2050 (RFC 5280)", () => {
    assert.equal(der.time(new Date("2049-12-31T23:59:59Z")).subarray(2).toString(), "491231235959Z");
    assert.equal(der.time(new Date("2050-01-01T00:00:00Z"))[0], der.TAG.GENERALIZED_TIME);
  });

  it("refuses truncated, non-minimal and trailing encodings", () => {
    assert.throws(
      () => der.readSingle(Buffer.from("3005020101", "hex")),
      (e) => isIdentityError(e, "ERR_IDENTITY_MALFORMED"),
    );
    assert.throws(() => der.readSingle(Buffer.from("30810100", "hex")), /non-minimal/);
    assert.throws(() => der.readSingle(Buffer.from("30000000", "hex")), /trailing/);
    assert.throws(() => der.readSingle(Buffer.from("3085000000000000", "hex")), /length of 5 bytes/);
  });
});

describe("certificates and requests", () => {
  it("a self-signed CA that Node parses as a CA and verifies", () => {
    const { ca, certificatePem } = CertificateAuthority.createSelfSigned({ commonName: "test CA", lifetimeMs: HOUR_MS });
    const parsed = new X509Certificate(certificatePem);
    assert.equal(parsed.ca, true);
    assert.ok(parsed.checkIssued(parsed));
    assert.ok(parsed.verify(parsed.publicKey));
    assert.match(parsed.subject, /CN=test CA/);
    assert.equal(ca.certificatePem, certificatePem);
  });

  it("a leaf naming the workload identity (URI and IP SANs, v4 and v6), signed by the CA", () => {
    const { ca } = CertificateAuthority.createSelfSigned({ commonName: "test CA", lifetimeMs: HOUR_MS });
    const key = generateKey();
    const issued = ca.issue({ publicKey: createPublicKey(key), identity: AGENT, lifetimeMs: HOUR_MS, dnsNames: ["agent.example"] });
    const leaf = new X509Certificate(issued.certificatePem);
    assert.ok(leaf.verify(ca.certificate.publicKey));
    assert.ok(leaf.checkIssued(ca.certificate));
    assert.ok(leaf.checkPrivateKey(key));
    assert.equal(leaf.ca, false);
    assert.deepEqual(identityOfCertificate(leaf), AGENT);
    assert.equal(
      leaf.subjectAltName,
      "DNS:agent.example, URI:shoal://agent/node-1/shoal/shoal-agent-x7k2p, IP Address:10.1.2.3, IP Address:FD00:0:0:0:0:0:0:7",
    );
    assert.deepEqual(leaf.keyUsage, [OID.serverAuth, OID.clientAuth]);
    assert.ok(Math.abs(new Date(leaf.validTo).getTime() - issued.notAfter.getTime()) < 1000);
  });

  it("never outlives the CA", () => {
    const { ca } = CertificateAuthority.createSelfSigned({ commonName: "short CA", lifetimeMs: 2 * 60_000 });
    const issued = ca.issue({ publicKey: createPublicKey(generateKey()), identity: AGENT, lifetimeMs: HOUR_MS });
    assert.ok(issued.notAfter.getTime() <= ca.notAfter.getTime());
  });

  it("identity URIs: formatted, parsed, and anything else refused", () => {
    assert.equal(identityUri({ role: "controller", name: "controller-0" }), "shoal://controller/controller-0");
    assert.deepEqual(parseIdentityUri("shoal://agent/node-1"), { role: "agent", name: "node-1" });
    for (const bad of ["spiffe://agent/node-1", "shoal://root/x", "shoal://agent/", "shoal://agent/a/b", "shoal://agent/n%2F1"])
      assert.equal(parseIdentityUri(bad), undefined, bad);
    assert.throws(
      () => identityUri({ role: "agent", name: "a/b" }),
      (e) => isIdentityError(e, "ERR_IDENTITY_CONFIG"),
    );
  });

  it("a certificate request round-trips, and a forged one is refused", () => {
    const key = generateKey();
    const csr = createCertificateRequest(key, [{ oid: OID.commonName, value: "node-1" }]);
    const parsed = parseCertificateRequest(csr);
    assert.ok(parsed.publicKey.equals(createPublicKey(key)));
    // Another key's public half with this signature: no proof of possession.
    const forged = Buffer.from(csr);
    forged[forged.length - 5] = (forged[forged.length - 5] ?? 0) ^ 0xff;
    assert.throws(
      () => parseCertificateRequest(forged),
      (e) => isIdentityError(e, "ERR_IDENTITY_CSR_INVALID") || isIdentityError(e, "ERR_IDENTITY_MALFORMED"),
    );
    assert.throws(
      () => parseCertificateRequest(Buffer.from("not a request")),
      (e) => isIdentityError(e, "ERR_IDENTITY_MALFORMED"),
    );
    assert.throws(() => parseCertificateRequest(Buffer.alloc(20_000)), /at most/);
  });

  it("RSA and Ed25519 keys sign too (an RSA CA is what helm's genCA makes)", () => {
    const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
    const raw = signCertificate(
      {
        subject: encodeName([{ oid: OID.commonName, value: "rsa CA" }]),
        subjectPublicKey: createPublicKey(rsa),
        notBefore: new Date(Date.now() - 1000),
        notAfter: new Date(Date.now() + HOUR_MS),
        extensions: [basicConstraints(true), keyUsage([KEY_USAGE.keyCertSign])],
      },
      rsa,
    );
    const ca = CertificateAuthority.fromPem(toPem("CERTIFICATE", raw), rsa.export({ type: "pkcs1", format: "pem" }).toString());
    const leaf = new X509Certificate(
      ca.issue({ publicKey: createPublicKey(generateKey()), identity: AGENT, lifetimeMs: HOUR_MS }).certificatePem,
    );
    assert.ok(leaf.verify(ca.certificate.publicKey));
    const ed = generateKeyPairSync("ed25519").privateKey;
    assert.ok(parseCertificateRequest(createCertificateRequest(ed, [])).publicKey.equals(createPublicKey(ed)));
  });

  it("fromPem refuses a certificate that is no CA, a key that is not its key, and an expired CA", () => {
    const { ca, keyPem } = CertificateAuthority.createSelfSigned({ commonName: "test CA", lifetimeMs: HOUR_MS });
    const leafKey = generateKey();
    const leafPem = ca.issue({ publicKey: createPublicKey(leafKey), identity: AGENT, lifetimeMs: HOUR_MS }).certificatePem;
    assert.throws(() => CertificateAuthority.fromPem(leafPem, leafKey.export({ type: "pkcs8", format: "pem" }).toString()), /is not a CA/);
    assert.throws(
      () => CertificateAuthority.fromPem(ca.certificatePem, generateKey().export({ type: "pkcs8", format: "pem" }).toString()),
      /does not belong/,
    );
    assert.throws(() => CertificateAuthority.fromPem(ca.certificatePem, keyPem, new Date(Date.now() + 2 * HOUR_MS)), /expired/);
    assert.throws(
      () => CertificateAuthority.fromPem("nothing", keyPem),
      (e) => isIdentityError(e, "ERR_IDENTITY_CONFIG"),
    );
  });

  it(
    "OpenSSL agrees: the request verifies, the leaf chains to the CA for client and server use",
    { skip: hasOpenssl() ? false : "openssl is not installed" },
    async () => {
      const dir = await mkdtemp(join(tmpdir(), "shoal-x509-"));
      try {
        const { ca } = CertificateAuthority.createSelfSigned({ commonName: "test CA", lifetimeMs: HOUR_MS });
        const key = generateKey();
        await writeFile(join(dir, "ca.pem"), ca.certificatePem);
        await writeFile(
          join(dir, "csr.pem"),
          toPem("CERTIFICATE REQUEST", createCertificateRequest(key, [{ oid: OID.commonName, value: "node-1" }])),
        );
        await writeFile(
          join(dir, "leaf.pem"),
          ca.issue({ publicKey: createPublicKey(key), identity: AGENT, lifetimeMs: HOUR_MS }).certificatePem,
        );
        execFileSync("openssl", ["req", "-in", join(dir, "csr.pem"), "-verify", "-noout"], { stdio: "pipe" });
        for (const purpose of ["sslclient", "sslserver"]) {
          const out = execFileSync("openssl", ["verify", "-purpose", purpose, "-CAfile", join(dir, "ca.pem"), join(dir, "leaf.pem")], {
            encoding: "utf8",
          });
          assert.match(out, /OK/);
        }
        const text = execFileSync("openssl", ["x509", "-in", join(dir, "leaf.pem"), "-noout", "-text"], { encoding: "utf8" });
        assert.match(text, /URI:shoal:\/\/agent\/node-1\/shoal\/shoal-agent-x7k2p/);
        assert.match(text, /CA:FALSE/);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
});
