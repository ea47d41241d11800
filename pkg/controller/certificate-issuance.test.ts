// Workload certificates from the controller, against the API double (TokenReview, Pods, the CA Secret)
// and real gRPC: who gets a certificate, who is refused and why, rotation under load, and a CA Secret
// that is missing at first.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { afterEach, describe, it } from "node:test";
import { Metadata, type ServiceError, credentials, status } from "@grpc/grpc-js";
import { PeerServiceClient } from "../gen/peer/v1/peer.js";
import { GrpcCertificateIssuer, type TlsMaterial, createCertificateRequest, generateKey, isIdentityError } from "../identity/index.js";
import { digestOf } from "../oci/index.js";
import { eventually } from "../tracker/testing/helpers.js";
import { CA_SECRET, NAMESPACE, TestCluster } from "./testing/test-cluster.js";

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** One certificate request from `sourceIp` through the Service, with `token`. */
async function request(cluster: TestCluster, sourceIp: string, token: string): Promise<{ certificatePem: string; trustBundlePem: string }> {
  const issuer = new GrpcCertificateIssuer({
    address: await cluster.issuerForwarder.endpointFor(sourceIp),
    token: () => Promise.resolve(token),
    trustBundle: () => Promise.resolve(cluster.ca.certificatePem),
  });
  return await issuer.issue(createCertificateRequest(generateKey(), []), AbortSignal.timeout(10_000));
}

describe("certificates issued by the controller (TokenReview, agent Pods, the CA Secret)", () => {
  let cluster: TestCluster | undefined;

  afterEach(async () => {
    await cluster?.close();
    cluster = undefined;
  });

  it("an agent Pod's token gets a certificate naming its node, its Pod and its IP, signed by the CA", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    c.addAgentPod("agent-1", "node-1", "127.0.0.81");
    const replica = await c.startReplica("controller-a");
    await waitFor(() => replica.controller.ready() === true, 10_000, "a ready leader");
    await c.forwarder.probe();
    const agent = await c.startAgent("agent-1", "node-1", "127.0.0.81");
    const material = await agent.certificate.whenReady(AbortSignal.timeout(10_000));
    assert.deepEqual(material.identity, {
      role: "agent",
      name: "node-1",
      pod: { namespace: NAMESPACE, name: "agent-1" },
      ips: ["127.0.0.81"],
    });
    assert.ok(new X509Certificate(material.certificatePem).verify(c.ca.certificate.publicKey));
    assert.equal(material.trustBundlePem, c.ca.certificatePem);
    await waitFor(() => agent.tracker.connected, 10_000, "the tracker session over TLS");
    assert.match(
      await replica.metrics.registry.getSingleMetricAsString("shoal_identity_certificates_issued_total"),
      /shoal_identity_certificates_issued_total [1-9]/,
    );
  });

  it("refuses a token naming another Pod, for another audience, unknown, of a Pod that is no agent or is gone; each counted and recorded", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    c.addAgentPod("agent-1", "node-1", "127.0.0.81");
    c.addAgentPod("agent-2", "node-2", "127.0.0.82");
    c.addAgentPod("agent-3", "node-3", "127.0.0.83");
    c.api.putPod({
      namespace: NAMESPACE,
      name: "web",
      nodeName: "node-1",
      ip: "127.0.0.84",
      labels: { app: "web" },
      serviceAccount: "shoal-agent",
    });
    const replica = await c.startReplica("controller-a");
    await waitFor(() => replica.controller.ready() === true, 10_000, "a ready leader");
    await c.issuerForwarder.probe();
    const refused = async (sourceIp: string, token: string, message: RegExp): Promise<void> => {
      await assert.rejects(request(c, sourceIp, token), (error) => {
        assert.ok(isIdentityError(error, "ERR_IDENTITY_REFUSED"), String(error));
        assert.match(error.message, message);
        return true;
      });
    };
    // agent-1 presenting agent-2's token (stolen, or a confused deputy): the Pod it names is elsewhere.
    await refused(
      "127.0.0.81",
      c.tokenFor("agent-2"),
      /names Pod shoal\/agent-2, whose IPs are 127\.0\.0\.82, but the request comes from 127\.0\.0\.81/,
    );
    await refused(
      "127.0.0.81",
      c.tokenFor("agent-1", ["https://kubernetes.default.svc.cluster.local"]),
      /token audiences .* is invalid for the target audiences \["shoal"\]/,
    );
    await refused("127.0.0.81", "not-a-token", /not accepted: invalid bearer token/);
    await refused(
      "127.0.0.84",
      c.api.serviceAccountToken({ namespace: NAMESPACE, serviceAccount: "shoal-agent", pod: "web", audiences: ["shoal"] }),
      /names Pod shoal\/web, which is no agent Pod/,
    );
    const gone = c.tokenFor("agent-3");
    c.api.deletePod(NAMESPACE, "agent-3");
    await refused("127.0.0.83", gone, /pods "agent-3" not found/);
    // And the one that is right is issued.
    const issued = await request(c, "127.0.0.81", c.tokenFor("agent-1"));
    assert.match(
      new X509Certificate(issued.certificatePem).subjectAltName ?? "",
      /URI:shoal:\/\/agent\/node-1\/shoal\/agent-1, IP Address:127\.0\.0\.81/,
    );
    const text = await replica.metrics.registry.getSingleMetricAsString("shoal_identity_issuance_refused_total");
    assert.match(text, /reason="pod_mismatch"\} 1/);
    assert.match(text, /reason="token_invalid"\} 3/);
    assert.match(text, /reason="pod_unknown"\} 1/);
    await eventually(() => {
      const event = c.api.events(NAMESPACE).find((e) => e.reason === "CertificateRefused");
      assert.ok(event !== undefined, "a CertificateRefused Event");
      assert.equal((event.involvedObject as { name?: string }).name, "agent-2");
      assert.equal(event.type, "Warning");
    });
  });

  it("a stranger gets nothing from the issuer, the tracker or an agent's peer port", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    c.addAgentPod("agent-1", "node-1", "127.0.0.81");
    const replica = await c.startReplica("controller-a");
    await waitFor(() => replica.controller.ready() === true, 10_000, "a ready leader");
    await c.forwarder.probe();
    const agent = await c.startAgent("agent-1", "node-1", "127.0.0.81");
    const material = await agent.certificate.whenReady(AbortSignal.timeout(10_000));
    const blob = await c.origin.addBlob({ size: 1024 * 1024, seed: "stranger" });
    await waitFor(() => agent.tracker.connected, 10_000, "the tracker session");
    await agent.pull(c.origin.host, "team/app", blob.digest);
    const stat = (channel: ReturnType<typeof credentials.createInsecure>): Promise<number> =>
      new Promise((resolve) => {
        const client = new PeerServiceClient(agent.peerAddress, channel);
        client.stat({ digest: blob.digest }, new Metadata(), { deadline: Date.now() + 5_000 }, (error: ServiceError | null) => {
          client.close();
          resolve(error?.code ?? status.OK);
        });
      });
    assert.equal(await stat(credentials.createInsecure()), status.UNAVAILABLE);
    assert.equal(await stat(credentials.createSsl(Buffer.from(c.ca.certificatePem))), status.UNAVAILABLE);
    // Plaintext to the issuer: no answer either.
    const { IdentityServiceClient } = await import("../gen/identity/v1/identity.js");
    const plain = new IdentityServiceClient(replica.controller.issuerAddress, credentials.createInsecure());
    const code = await new Promise<number>((resolve) => {
      plain.issueCertificate(
        { certificateRequest: Buffer.alloc(0), token: "x" },
        new Metadata(),
        { deadline: Date.now() + 5_000 },
        (error: ServiceError | null) => {
          plain.close();
          resolve(error?.code ?? status.OK);
        },
      );
    });
    assert.equal(code, status.UNAVAILABLE);
    assert.ok(material.notAfter.getTime() > Date.now());
  });

  it("short-lived certificates rotate under load: agents renew, keep their sessions and keep pulling from each other", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    const LIFETIME_MS = 3_000;
    for (let i = 1; i <= 3; i++) c.addAgentPod(`agent-${i}`, `node-${i}`, `127.0.0.8${i}`);
    const replica = await c.startReplica("controller-a", {
      certificates: {
        caSecret: CA_SECRET,
        issuerListen: { host: "127.0.0.1", port: 0 },
        lifetimeMs: LIFETIME_MS,
        tokenAudience: "shoal",
        retryInitialMs: 100,
      },
    });
    await waitFor(() => replica.controller.ready() === true, 10_000, "a ready leader");
    await c.forwarder.probe();
    const agents = await Promise.all([1, 2, 3].map((i) => c.startAgent(`agent-${i}`, `node-${i}`, `127.0.0.8${i}`)));
    const seen = agents.map(() => new Set<string>());
    const record = (i: number, m: TlsMaterial): void => {
      seen[i]?.add(m.certificatePem);
    };
    agents.forEach((a, i) => {
      a.certificate.subscribe((m) => {
        record(i, m);
      });
    });
    await Promise.all(agents.map((a) => waitFor(() => a.tracker.connected, 10_000, "sessions")));
    // Pull blobs one after another while certificates rotate underneath: each from the origin on one
    // agent and from peers on the others.
    const deadline = Date.now() + 2.5 * LIFETIME_MS;
    let round = 0;
    while (Date.now() < deadline || seen.some((s) => s.size < 2)) {
      const blob = await c.origin.addBlob({ size: 2 * 1024 * 1024 + round, seed: `rotate-${round}` });
      const first = agents[round % 3]!;
      assert.equal(digestOf((await first.pull(c.origin.host, "team/app", blob.digest)).bytes), blob.digest);
      await eventually(async () => {
        assert.equal((await agents[(round + 1) % 3]!.tracker.lookup(blob.digest, { wantOriginGrant: false })).holders.length, 1);
      }, 5_000);
      for (const other of agents.filter((a) => a !== first)) {
        const pulled = await other.pull(c.origin.host, "team/app", blob.digest);
        assert.equal(digestOf(pulled.bytes), blob.digest);
      }
      round++;
      if (round > 200) assert.fail("certificates did not rotate");
    }
    for (const s of seen) assert.ok(s.size >= 2, `each agent rotated (${s.size} certificates)`);
    assert.equal(
      c.origin.blobBytesServed,
      Array.from({ length: round }, (_, r) => 2 * 1024 * 1024 + r).reduce((a, b) => a + b, 0),
      "every blob left the origin once: the rest came from peers across rotations",
    );
    for (const a of agents) assert.ok(a.tracker.connected);
  });

  it("without the CA Secret the controller is not Ready and issues nothing; once it appears, certificates flow", async () => {
    cluster = await TestCluster.start();
    const c = cluster;
    assert.ok(c.api.object("secrets", NAMESPACE, CA_SECRET) !== undefined);
    c.api.deleteSecret(NAMESPACE, CA_SECRET);
    c.addAgentPod("agent-1", "node-1", "127.0.0.81");
    const replica = await c.startReplica("controller-a");
    await waitFor(() => replica.controller.leading, 10_000, "leadership");
    assert.match(String(replica.controller.ready()), /no certificate yet \(is the CA Secret shoal\/shoal-ca there and valid\?\)/);
    c.api.putSecret({
      namespace: NAMESPACE,
      name: CA_SECRET,
      type: "kubernetes.io/tls",
      data: { "tls.crt": c.ca.certificatePem, "tls.key": c.caKeyPem },
    });
    await waitFor(() => replica.controller.ready() === true, 15_000, "the CA to be loaded");
    await c.forwarder.probe();
    const agent = await c.startAgent("agent-1", "node-1", "127.0.0.81");
    await agent.certificate.whenReady(AbortSignal.timeout(10_000));
  });
});
