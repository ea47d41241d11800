// The peer port with mutual TLS: only agents of the cluster's CA get anything, rotations drop no
// transfer, and the swarm works end to end. The strangers below are the probes that found the port
// open (a plain gRPC client asking Stat and ReadPieces), plus a client of another CA and a controller.
import assert from "node:assert/strict";
import { connect } from "node:http2";
import { after, before, describe, it } from "node:test";
import { type ChannelCredentials, Metadata, credentials, status, type ServiceError } from "@grpc/grpc-js";
import { pino } from "pino";
import { PeerServiceClient, type StatResponse } from "../gen/peer/v1/peer.js";
import { StaticIdentity } from "../identity/index.js";
import { TestPki } from "../identity/testing/test-pki.js";
import { AgentMetrics } from "../metrics/index.js";
import { type Digest, digestOf } from "../oci/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import { MemoryTracker } from "../tracker/index.js";
import { isPeerError } from "./errors.js";
import type { PeerServer } from "./peer-server.js";
import { MiB, PeerFixture, collect, pieceOf, putBlob, testBytes } from "./testing/peer-fixture.js";
import { SwarmNode } from "./testing/swarm-node.js";

const FAST = { refreshIntervalMs: 100, announceIntervalMs: 50, stallMs: 1_000, relayWaitMs: 1_000 };

function statWith(
  address: string,
  channel: ChannelCredentials,
  digest: Digest,
): Promise<{ code: number; details: string; stat?: StatResponse }> {
  const client = new PeerServiceClient(address, channel);
  return new Promise((resolve) => {
    client.stat({ digest }, new Metadata(), { deadline: Date.now() + 5_000 }, (error: ServiceError | null, stat) => {
      client.close();
      resolve(error === null ? { code: status.OK, details: "", stat } : { code: error.code, details: error.details });
    });
  });
}

describe("peer port with mutual TLS", () => {
  const pki = TestPki.create();
  const foreign = TestPki.create("foreign CA");
  const fixture = new PeerFixture();
  const metrics = new AgentMetrics({ version: "test", collectDefaults: false });
  const blob = testBytes(3 * MiB + 5);
  let digest: Digest;
  let server: PeerServer;
  const serverIdentity = new StaticIdentity(pki.agent("node-server", "127.0.0.1"));

  before(async () => {
    const store = await fixture.store();
    digest = await putBlob(store, blob);
    // A slow upload, so a call lasts long enough to rotate certificates in the middle of it.
    server = await fixture.server({ store, tls: serverIdentity, metrics, uploadBytesPerSecond: 4 * MiB });
  });
  after(async () => {
    await fixture.close();
  });

  async function refused(reason: string): Promise<number> {
    const values = (await metrics.identity.tlsHandshakesRefused.get()).values;
    return values.find((v) => v.labels.listener === "peer" && v.labels.reason === reason)?.value ?? 0;
  }

  it("an agent of the cluster's CA reads pieces", async () => {
    const client = fixture.client({ tls: new StaticIdentity(pki.agent("node-client")) });
    const pieces = await collect(
      client.readPieces(server.address, { digest, pieceSize: MiB, pieces: [3, 0], waitMs: 0 }, AbortSignal.timeout(20_000)),
    );
    assert.deepEqual(
      pieces.map((p) => p.index),
      [3, 0],
    );
    assert.ok(pieces[0]?.data.equals(pieceOf(blob, MiB, 3)));
    for (const p of pieces) p.release();
  });

  it("a stranger gets nothing: plain gRPC, TLS without a certificate, another CA's certificate, a controller's", async () => {
    const trust = Buffer.from(pki.trustBundlePem);
    const plain = await statWith(server.address, credentials.createInsecure(), digest);
    assert.equal(plain.code, status.UNAVAILABLE);
    assert.equal(plain.stat, undefined);
    const noCertificate = await statWith(server.address, credentials.createSsl(trust), digest);
    assert.equal(noCertificate.code, status.UNAVAILABLE);
    const other = foreign.agent("node-evil");
    const otherCa = await statWith(
      server.address,
      credentials.createSsl(trust, Buffer.from(other.keyPem), Buffer.from(other.certificatePem)),
      digest,
    );
    assert.equal(otherCa.code, status.UNAVAILABLE);
    const controller = pki.controller();
    const wrongRole = await statWith(
      server.address,
      credentials.createSsl(trust, Buffer.from(controller.keyPem), Buffer.from(controller.certificatePem)),
      digest,
    );
    assert.equal(wrongRole.code, status.UNAVAILABLE);
    // Plain HTTP/2 to the TLS port never gets a response either.
    const session = connect(`http://${server.address}`);
    const outcome = await new Promise<string>((resolve) => {
      const stream = session.request({ ":method": "POST", ":path": "/peer.v1.PeerService/Stat", "content-type": "application/grpc" });
      stream.on("response", () => {
        resolve("response");
      });
      stream.on("error", (error: Error) => {
        resolve(error.message);
      });
      session.on("error", (error: Error) => {
        resolve(error.message);
      });
      session.on("close", () => {
        resolve("closed");
      });
      stream.on("close", () => {
        resolve("closed");
      });
      stream.end();
    });
    session.destroy();
    assert.notEqual(outcome, "response");
    assert.ok((await refused("no_certificate")) >= 1);
    assert.ok((await refused("untrusted")) >= 1);
    assert.ok((await refused("not_authorized")) >= 1);
  });

  it("the PeerClient refuses a peer of another CA, and one whose certificate names another address", async () => {
    const client = fixture.client({ tls: new StaticIdentity(foreign.agent("node-x")) });
    await assert.rejects(client.stat(server.address, digest, AbortSignal.timeout(5_000)), (e) => isPeerError(e, "ERR_PEER_UNAVAILABLE"));
    // The server's certificate names 127.0.0.1; as 127.0.0.1 is what we dial that is fine, but a
    // certificate naming another IP is not.
    const store = await fixture.store();
    const misnamed = await fixture.server({ store, tls: new StaticIdentity(pki.agent("node-y", "10.9.9.9")) });
    const honest = fixture.client({ tls: new StaticIdentity(pki.agent("node-client")) });
    await assert.rejects(honest.stat(misnamed.address, digest, AbortSignal.timeout(5_000)), /names 10\.9\.9\.9, not 127\.0\.0\.1/);
  });

  it("no certificate yet: calls fail fast as unavailable, so the swarm goes elsewhere", async () => {
    const client = fixture.client({ tls: new StaticIdentity(undefined) });
    await assert.rejects(client.stat(server.address, digest, AbortSignal.timeout(5_000)), /holds no certificate yet/);
  });

  it("rotating both certificates mid-transfer drops nothing; the next call connects with the new certificate", async () => {
    const clientIdentity = new StaticIdentity(pki.agent("node-client"));
    const client = fixture.client({ tls: clientIdentity });
    const reading = collect(
      client.readPieces(server.address, { digest, pieceSize: MiB, pieces: [0, 1, 2, 3], waitMs: 0 }, AbortSignal.timeout(30_000)),
    );
    // Once pieces are streaming, rotate both sides.
    while (server.activeUploads === 0) await new Promise((r) => setTimeout(r, 5));
    clientIdentity.set(pki.agent("node-client"));
    serverIdentity.set(pki.agent("node-server", "127.0.0.1"));
    assert.equal(client.openSessions, 0, "the old connection is retired for new calls");
    const pieces = await reading;
    assert.deepEqual(
      pieces.map((p) => p.index),
      [0, 1, 2, 3],
    );
    assert.equal(digestOf(Buffer.concat(pieces.map((p) => p.data))), digest);
    for (const p of pieces) p.release();
    const stat = await client.stat(server.address, digest, AbortSignal.timeout(5_000));
    assert.equal(stat?.complete, true);
    assert.equal(client.openSessions, 1, "a new connection");
  });
});

describe("swarm with mutual TLS end to end", () => {
  let origin: FakeUpstream;
  const nodes: SwarmNode[] = [];
  const pki = TestPki.create();

  before(async () => {
    origin = await FakeUpstream.start();
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await origin.close();
  });

  it("four agents with certificates: one origin copy, the rest from peers over TLS; an agent of another CA gets nothing from them", async () => {
    const blob = await origin.addBlob({ size: 6 * MiB + 77, seed: "tls-swarm" });
    origin.script({ kind: "blob", reference: blob.digest }, { kind: "body", bytesPerSecond: 12 * MiB });
    const tracker = new MemoryTracker({ logger: pino({ level: "silent" }), grantStallTimeoutMs: 1_000 });
    for (let i = 0; i < 4; i++) {
      const host = `127.0.0.${41 + i}`;
      nodes.push(
        await SwarmNode.start({
          name: `node-${i}`,
          host,
          tracker,
          origin: { host: origin.host, url: origin.url },
          tuning: FAST,
          tls: new StaticIdentity(pki.agent(`node-${i}`, host)),
        }),
      );
    }
    const results = await Promise.all(nodes.map((n) => n.pull(origin.host, "tls/app", blob.digest)));
    for (const r of results) assert.equal(digestOf(r.bytes), blob.digest);
    assert.equal(origin.blobBytesServed, blob.size, "the origin sent the blob once");
    const peerBytes = (await Promise.all(nodes.map((n) => n.metric("shoal_peer_bytes_received_total")))).reduce((a, b) => a + b, 0);
    assert.ok(peerBytes >= 3 * blob.size, `three agents got theirs from peers (${peerBytes} bytes)`);

    // An agent whose certificate comes from another CA: registered with the same tracker, it sees the
    // holders but no peer serves it, so it goes to the origin.
    const stranger = await SwarmNode.start({
      name: "stranger",
      host: "127.0.0.49",
      tracker,
      origin: { host: origin.host, url: origin.url },
      tuning: FAST,
      tls: new StaticIdentity(TestPki.create("other").agent("stranger", "127.0.0.49")),
    });
    nodes.push(stranger);
    const pulled = await stranger.pull(origin.host, "tls/app", blob.digest);
    assert.equal(digestOf(pulled.bytes), blob.digest);
    assert.equal(await stranger.metric("shoal_peer_bytes_received_total"), 0);
    // The stranger's client refuses the holders' certificates first (TLS 1.3: the server proves itself
    // first), so the holders see failed handshakes rather than its certificate.
    const refusedByNodes = (await Promise.all(nodes.slice(0, 4).map((n) => n.metric("shoal_tls_handshakes_refused_total")))).reduce(
      (a, b) => a + b,
      0,
    );
    assert.ok(refusedByNodes >= 1, "the holders counted the stranger's failed handshakes");
  });
});
