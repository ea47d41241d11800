import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { pino } from "pino";
import { type CertificateIssuer, CertificateManager } from "./certificate-manager.js";
import { isIdentityError } from "./errors.js";
import { FileIdentity } from "./file-identity.js";
import type { TlsMaterial } from "./tls-material.js";
import type { WorkloadIdentity } from "./workload-identity.js";
import { parseCertificateRequest } from "./x509.js";
import { TestPki } from "./testing/test-pki.js";

const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });
const NODE: WorkloadIdentity = { role: "agent", name: "node-1", ips: ["127.0.0.1"] };

/** An issuer in process: signs every request for `identity`, failing the first `failures` times. */
function issuerFor(pki: TestPki, identity: WorkloadIdentity, lifetimeMs: number, failures = 0): CertificateIssuer & { calls: number } {
  const issuer = {
    calls: 0,
    issue: (csr: Buffer) => {
      issuer.calls++;
      if (issuer.calls <= failures) return Promise.reject(new Error(`issuer down (call ${issuer.calls})`));
      const { publicKey } = parseCertificateRequest(csr);
      return Promise.resolve({
        certificatePem: pki.ca.issue({ publicKey, identity, lifetimeMs }).certificatePem,
        trustBundlePem: pki.trustBundlePem,
      });
    },
  };
  return issuer;
}

function nextMaterial(manager: CertificateManager, timeoutMs = 15_000): Promise<TlsMaterial> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no new certificate within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = manager.subscribe((material) => {
      clearTimeout(timer);
      off();
      resolve(material);
    });
  });
}

describe("CertificateManager: a local key, certificates from an issuer, rotation before expiry", () => {
  it("issues, then rotates by itself (a new key each time) well before expiry", async () => {
    const pki = TestPki.create();
    const issued: TlsMaterial[] = [];
    const manager = new CertificateManager({
      issuer: issuerFor(pki, NODE, 3_000),
      role: "agent",
      requestName: "node-1",
      logger,
      renewAtFraction: 0.5,
      onIssued: (m) => issued.push(m),
    });
    try {
      manager.start();
      const first = await manager.whenReady(AbortSignal.timeout(10_000));
      assert.deepEqual(first.identity, NODE);
      const second = await nextMaterial(manager);
      assert.ok(!second.key.equals(first.key), "a new key");
      assert.notEqual(second.certificatePem, first.certificatePem);
      // Rotated while the first was still valid.
      assert.ok(issued.length >= 2 && (issued[1]?.notBefore.getTime() ?? 0) < first.notAfter.getTime());
      assert.equal(manager.current(), issued.at(-1));
    } finally {
      await manager.close();
    }
  });

  it("retries a failing issuer with backoff and counts each failure", async () => {
    const pki = TestPki.create();
    const failures: unknown[] = [];
    const issuer = issuerFor(pki, NODE, 60_000, 2);
    const manager = new CertificateManager({
      issuer,
      role: "agent",
      requestName: "node-1",
      logger,
      retryInitialMs: 20,
      onFailure: (e) => failures.push(e),
    });
    try {
      manager.start();
      await manager.whenReady(AbortSignal.timeout(10_000));
      assert.equal(issuer.calls, 3);
      assert.equal(failures.length, 2);
    } finally {
      await manager.close();
    }
  });

  it("refuses a certificate naming another role, and holds nothing once the last one expired", async () => {
    const pki = TestPki.create();
    const failures: unknown[] = [];
    const wrong = new CertificateManager({
      issuer: issuerFor(pki, { role: "controller", name: "c", ips: [] }, 60_000),
      role: "agent",
      requestName: "x",
      logger,
      retryInitialMs: 5_000,
      onFailure: (e) => failures.push(e),
    });
    wrong.start();
    for (let i = 0; i < 500 && failures.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    await wrong.close();
    assert.ok(isIdentityError(failures[0], "ERR_IDENTITY_MALFORMED"));
    assert.match((failures[0] as Error).message, /not a agent/);
    assert.equal(wrong.current(), undefined);

    // One short certificate, then the issuer fails: once it expires, there is no current material.
    const issuer = issuerFor(pki, NODE, 1_500);
    const manager = new CertificateManager({
      issuer,
      role: "agent",
      requestName: "node-1",
      logger,
      renewAtFraction: 0.9,
      retryInitialMs: 200,
    });
    try {
      manager.start();
      const first = await manager.whenReady(AbortSignal.timeout(10_000));
      issuer.issue = () => Promise.reject(new Error("issuer gone"));
      while (Date.now() <= first.notAfter.getTime()) await new Promise((r) => setTimeout(r, 50));
      assert.equal(manager.current(), undefined);
    } finally {
      await manager.close();
    }
  });
});

describe("FileIdentity: certificates from files, reloaded when they change", () => {
  it("loads, reloads a renewed certificate, keeps the old one when the files are broken, and names bad files", async () => {
    const dir = await mkdtemp(join(tmpdir(), "shoal-file-identity-"));
    const pki = TestPki.create();
    const files = { certificateFile: join(dir, "tls.crt"), keyFile: join(dir, "tls.key"), trustBundleFile: join(dir, "ca.crt") };
    const write = async (material: TlsMaterial): Promise<void> => {
      await writeFile(files.certificateFile, material.certificatePem);
      await writeFile(files.keyFile, material.keyPem);
      await writeFile(files.trustBundleFile, material.trustBundlePem);
    };
    try {
      await write(pki.agent("node-1"));
      const identity = await FileIdentity.open({ ...files, logger, refreshIntervalMs: 3_600_000 });
      try {
        const changes: TlsMaterial[] = [];
        identity.subscribe((m) => changes.push(m));
        assert.equal(await identity.reload(), false, "unchanged files are no rotation");
        const renewed = pki.agent("node-1");
        await write(renewed);
        assert.equal(await identity.reload(), true);
        assert.equal(changes[0]?.certificatePem, renewed.certificatePem);
        await writeFile(files.keyFile, "garbage");
        assert.equal(await identity.reload(), false);
        assert.equal(identity.current()?.certificatePem, renewed.certificatePem);
      } finally {
        identity.close();
      }
      // A key that is not the certificate's, and a certificate from another CA than the bundle's.
      await write(pki.agent("node-1"));
      await writeFile(files.keyFile, TestPki.create().agent("x").keyPem);
      await assert.rejects(FileIdentity.open({ ...files, logger }), /tls\.crt.*does not belong/);
      await write(pki.agent("node-1"));
      await writeFile(files.trustBundleFile, TestPki.create("other").trustBundlePem);
      await assert.rejects(FileIdentity.open({ ...files, logger }), /not issued by a CA of the trust bundle/);
      await assert.rejects(
        FileIdentity.open({ ...files, certificateFile: join(dir, "missing.crt"), logger }),
        /cannot read the certificate .*missing\.crt/,
      );
      // A certificate without a workload identity (the CA's own).
      await writeFile(files.certificateFile, pki.trustBundlePem);
      await writeFile(files.keyFile, pki.keyPem);
      await assert.rejects(FileIdentity.open({ ...files, logger }), /names no workload identity/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
