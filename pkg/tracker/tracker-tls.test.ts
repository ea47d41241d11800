// The tracker with mutual TLS: strangers fail the handshake, and each session is bound to the agent's
// certificate (its node name, its addresses, its agent id). These are the probes that found the tracker
// open: a stranger registering, resolving a tag and looking up holders; a registrant under another
// node's name or address; a registrant taking over another agent's id.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type ChannelCredentials, type ServiceError, type StatusObject, credentials, status } from "@grpc/grpc-js";
import { pino } from "pino";
import { TrackerServiceClient } from "../gen/tracker/v1/tracker.js";
import { StaticIdentity, type TlsMaterial } from "../identity/index.js";
import { TestPki } from "../identity/testing/test-pki.js";
import { ControllerMetrics } from "../metrics/index.js";
import { GrpcTrackerClient } from "./grpc-tracker-client.js";
import { StaticMembership } from "./membership.js";
import { MemoryTracker } from "./memory-tracker.js";
import { TrackerServer } from "./tracker-server.js";
import { eventually, testDigest } from "./testing/helpers.js";
import { registerRequest } from "./wire.js";

const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });

function tlsCredentials(trust: string, material?: TlsMaterial): ChannelCredentials {
  return credentials.createSsl(
    Buffer.from(trust),
    material === undefined ? null : Buffer.from(material.keyPem),
    material === undefined ? null : Buffer.from(material.certificatePem),
    {
      checkServerIdentity: () => undefined,
    },
  );
}

/** Registers over a raw session and returns the status it ends with (or "registered"). */
function register(
  address: string,
  channel: ChannelCredentials,
  identity: { agentId: string; nodeName: string; peerAddress: string },
): Promise<{ code: status; details: string } | "registered"> {
  const client = new TrackerServiceClient(address, channel);
  return new Promise((resolve) => {
    const call = client.session();
    const timer = setTimeout(() => {
      call.cancel();
    }, 5_000);
    call.on("data", () => {
      clearTimeout(timer);
      resolve("registered");
      call.cancel();
    });
    call.on("error", () => undefined);
    call.on("status", (s: StatusObject) => {
      clearTimeout(timer);
      client.close();
      resolve({ code: s.code, details: s.details });
    });
    call.write(registerRequest({ ...identity, zone: "" }));
  });
}

function lookupAs(address: string, channel: ChannelCredentials, agentId: string): Promise<{ code: number; details: string }> {
  const client = new TrackerServiceClient(address, channel);
  return new Promise((resolve) => {
    client.lookup(
      { agentId, digest: testDigest("x"), wantOriginGrant: true, excludedAgentIds: [], expectedSize: 0 },
      (error: ServiceError | null) => {
        client.close();
        resolve({ code: error?.code ?? status.OK, details: error?.details ?? "" });
      },
    );
  });
}

describe("tracker with mutual TLS", () => {
  const pki = TestPki.create();
  const foreign = TestPki.create("foreign CA");
  const metrics = new ControllerMetrics({ version: "test", collectDefaults: false });
  const tracker = new MemoryTracker({ logger, metrics });
  let server: TrackerServer;
  const clients: GrpcTrackerClient[] = [];

  before(async () => {
    server = await TrackerServer.start({
      host: "127.0.0.1",
      port: 0,
      tracker,
      metrics,
      logger,
      tls: new StaticIdentity(pki.controller("controller-0")),
    });
  });
  after(async () => {
    for (const client of clients) await client.close();
    await server.close();
  });

  function agent(nodeName: string, ip: string, tls = new StaticIdentity(pki.agent(nodeName, ip))): GrpcTrackerClient {
    const client = new GrpcTrackerClient({
      address: server.address,
      identity: { agentId: `${nodeName}-id`, nodeName, zone: "", peerAddress: `${ip}:5052` },
      logger,
      tls,
      initialBackoffMs: 50,
      maxBackoffMs: 200,
    });
    clients.push(client);
    return client;
  }

  it("agents with certificates hold sessions and look each other up", async () => {
    const a = agent("node-a", "127.0.0.71");
    const b = agent("node-b", "127.0.0.72");
    await Promise.all([a.whenConnected(AbortSignal.timeout(10_000)), b.whenConnected(AbortSignal.timeout(10_000))]);
    const digest = testDigest("tls-blob");
    a.announce({ digest, size: 10, pieceSize: 1024 * 1024, complete: true });
    await eventually(async () => {
      const found = await b.lookup(digest, { wantOriginGrant: false });
      assert.deepEqual(
        found.holders.map((h) => h.peerAddress),
        ["127.0.0.71:5052"],
      );
    });
  });

  it("a stranger gets nothing: plaintext, TLS without a certificate, another CA's certificate", async () => {
    const identity = { agentId: "intruder", nodeName: "node-z", peerAddress: "127.0.0.99:5052" };
    for (const channel of [
      credentials.createInsecure(),
      tlsCredentials(pki.trustBundlePem),
      tlsCredentials(pki.trustBundlePem, foreign.agent("node-z", "127.0.0.99")),
    ]) {
      const outcome = await register(server.address, channel, identity);
      assert.notEqual(outcome, "registered");
      assert.equal(outcome !== "registered" && outcome.code, status.UNAVAILABLE);
      assert.equal((await lookupAs(server.address, channel, "node-a-id")).code, status.UNAVAILABLE);
    }
    const refused = (await metrics.identity.tlsHandshakesRefused.get()).values
      .filter((v) => v.labels.listener === "tracker")
      .reduce((sum, v) => sum + v.value, 0);
    assert.ok(refused >= 2, `refused handshakes counted (${refused})`);
    assert.equal(
      tracker.snapshot().agents.some((a) => a.identity.agentId === "intruder"),
      false,
    );
  });

  it("a session must say what its certificate says: node name, peer address, and its own agent id", async () => {
    const material = pki.agent("node-c", "127.0.0.73");
    const channel = tlsCredentials(pki.trustBundlePem, material);
    const otherName = await register(server.address, channel, { agentId: "c-1", nodeName: "node-a", peerAddress: "127.0.0.73:5052" });
    assert.ok(otherName !== "registered" && otherName.code === status.PERMISSION_DENIED);
    assert.match(otherName.details, /registers as node "node-a" but its certificate is for agent node-c/);
    const otherAddress = await register(server.address, channel, { agentId: "c-1", nodeName: "node-c", peerAddress: "10.0.0.1:443" });
    assert.ok(otherAddress !== "registered" && otherAddress.code === status.PERMISSION_DENIED);
    assert.match(otherAddress.details, /advertises peer address 10\.0\.0\.1:443 but its certificate .* names 127\.0\.0\.73/);
    // Taking over node-a's session by its agent id (which lookups reveal) is refused, and node-a keeps it.
    const hijack = await register(server.address, channel, { agentId: "node-a-id", nodeName: "node-c", peerAddress: "127.0.0.73:5052" });
    assert.ok(hijack !== "registered" && hijack.code === status.PERMISSION_DENIED);
    assert.match(hijack.details, /belongs to a session of another workload/);
    assert.ok(tracker.snapshot().agents.some((a) => a.identity.agentId === "node-a-id"));
    // So are lookups in node-a's name.
    const asOther = await lookupAs(server.address, channel, "node-a-id");
    assert.equal(asOther.code, status.PERMISSION_DENIED);
    assert.equal(
      await register(server.address, channel, { agentId: "c-1", nodeName: "node-c", peerAddress: "127.0.0.73:5052" }),
      "registered",
    );
  });

  it("a rotation keeps the open session; a new connection presents the new certificate", async () => {
    // The first certificate expires soon: a reconnect after that can only succeed with the new one.
    const first = pki.agent("node-d", "127.0.0.74", { lifetimeMs: 2_000 });
    const tls = new StaticIdentity(first);
    const d = agent("node-d", "127.0.0.74", tls);
    await d.whenConnected(AbortSignal.timeout(10_000));
    const digest = testDigest("tls-rotate");
    d.announce({ digest, size: 10, pieceSize: 1024 * 1024, complete: true });
    await eventually(() => {
      assert.ok(tracker.snapshot().blobs.some((b) => b.digest === digest));
    });
    const sessionsBefore = tracker.snapshot().agents.length;
    tls.set(pki.agent("node-d", "127.0.0.74"));
    assert.ok(d.connected, "the session stays");
    // The tracker goes away and comes back on the same port: the agent reconnects with its new certificate.
    const port = server.port;
    await server.close();
    await eventually(() => {
      assert.equal(d.connected, false);
    }, 5_000);
    while (Date.now() <= first.notAfter.getTime()) await new Promise((r) => setTimeout(r, 50));
    server = await TrackerServer.start({
      host: "127.0.0.1",
      port,
      tracker,
      metrics,
      logger,
      tls: new StaticIdentity(pki.controller("controller-0")),
    });
    await d.whenConnected(AbortSignal.timeout(10_000));
    await eventually(() => {
      assert.ok(tracker.snapshot().blobs.some((b) => b.digest === digest && b.holders.some((h) => h.agentId === "node-d-id")));
    });
    // The other agents come back within their own backoff.
    await eventually(() => {
      assert.equal(tracker.snapshot().agents.length, sessionsBefore);
    });
  });
});

describe("static membership matches certificates, never names a client sends", () => {
  it("an address entry admits that address; a node name entry only a certificate for that node", () => {
    const membership = new StaticMembership(["127.0.0.1", "node-b"]);
    const claim = { agentId: "x", nodeName: "127.0.0.1", zone: "", peerAddress: "127.0.0.99:5052" };
    // The bypass that was found: a process on 127.0.0.99 registering with node name "127.0.0.1".
    assert.match(String(membership.admits(claim, "127.0.0.99")), /not in the allowed peers/);
    assert.match(String(membership.admits({ ...claim, nodeName: "node-b" }, "127.0.0.99")), /node name entries need one/);
    assert.equal(membership.admits(claim, "127.0.0.1"), true);
    assert.equal(
      membership.admits({ ...claim, nodeName: "node-b" }, "127.0.0.99", { role: "agent", name: "node-b", ips: ["127.0.0.99"] }),
      true,
    );
    assert.match(
      String(membership.admits(claim, "127.0.0.99", { role: "agent", name: "node-c", ips: ["127.0.0.99"] })),
      /certificate for node "node-c"/,
    );
  });
});
