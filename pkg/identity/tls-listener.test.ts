import assert from "node:assert/strict";
import { connect as http2Connect, createServer as createHttp2Server } from "node:http2";
import { after, before, describe, it } from "node:test";
import { type ConnectionOptions, connect } from "node:tls";
import { pino } from "pino";
import { type RefusalReason, TlsListener } from "./tls-listener.js";
import { StaticIdentity, type TlsMaterial } from "./tls-material.js";
import { clientTlsOptions, secureContextOptions } from "./tls-options.js";
import { TestPki } from "./testing/test-pki.js";

const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });
const HOUR_MS = 3_600_000;

/** Connects with `options` and reports whether the server kept the connection (it sends "ok"). */
function attempt(port: number, options: ConnectionOptions): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port, ALPNProtocols: ["h2"], ...options });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve("timeout");
    }, 5_000);
    socket.once("data", (data: Buffer) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(data.toString() === "ok" ? "accepted" : data.toString());
    });
    socket.once("error", (error: Error & { code?: string }) => {
      clearTimeout(timer);
      resolve(error.code ?? error.message);
    });
    socket.once("close", () => {
      clearTimeout(timer);
      resolve("closed");
    });
  });
}

describe("TlsListener: mutual TLS with identities, refusals by reason, rotation in place", () => {
  const pki = TestPki.create();
  const foreign = TestPki.create("foreign CA");
  const server = new StaticIdentity(pki.agent("node-server"));
  const refused: RefusalReason[] = [];
  let listener: TlsListener;

  before(async () => {
    listener = await TlsListener.start({
      host: "127.0.0.1",
      port: 0,
      identity: server,
      clientCertificates: "require",
      authorize: (peer) => (peer.role === "agent" ? true : `a ${peer.role} may not fetch pieces`),
      onConnection: (socket) => {
        socket.end("ok");
      },
      onRefused: (reason) => refused.push(reason),
      logger,
      name: "test",
    });
  });
  after(async () => {
    await listener.close();
  });

  async function refusal(options: ConnectionOptions): Promise<RefusalReason | undefined> {
    const before = refused.length;
    const outcome = await attempt(listener.port, options);
    assert.notEqual(outcome, "accepted");
    // The server's side of a failed handshake may be reported just after the client's.
    for (let i = 0; i < 100 && refused.length === before; i++) await new Promise((r) => setTimeout(r, 10));
    return refused.at(-1);
  }

  it("accepts an agent of the cluster's CA", async () => {
    assert.equal(await attempt(listener.port, clientTlsOptions(pki.agent("node-client"), { role: "agent" })), "accepted");
  });

  it("refuses a client without a certificate, with a foreign CA's, with an expired one, and a controller", async () => {
    const { ca, key: _key, cert: _cert, ...noCert } = secureContextOptions(pki.agent("x"));
    assert.equal(await refusal({ ...noCert, ca }), "no_certificate");
    assert.equal(await refusal({ ...secureContextOptions(foreign.agent("node-evil")), ca }), "untrusted");
    const expired = pki.agent("node-old", "127.0.0.1", { now: new Date(Date.now() - 2 * HOUR_MS), lifetimeMs: HOUR_MS });
    assert.equal(await refusal({ ...secureContextOptions(expired), ca }), "expired");
    assert.equal(await refusal({ ...secureContextOptions(pki.controller()) }), "not_authorized");
    assert.equal(await refusal({ ca, rejectUnauthorized: false }), "no_certificate");
  });

  it("a client refuses a server whose certificate does not name the dialed address or role", async () => {
    // A server on 127.0.0.2 whose certificate names 127.0.0.1 (another agent's address).
    const elsewhere = await TlsListener.start({
      host: "127.0.0.2",
      port: 0,
      identity: new StaticIdentity(pki.agent("node-server", "127.0.0.1")),
      clientCertificates: "require",
      onConnection: (socket) => {
        socket.end("ok");
      },
      logger,
      name: "elsewhere",
    });
    try {
      const outcome = await new Promise<string>((resolve) => {
        const socket = connect({
          host: "127.0.0.2",
          port: elsewhere.port,
          ALPNProtocols: ["h2"],
          ...clientTlsOptions(pki.agent("c"), { role: "agent" }),
        });
        socket.once("secureConnect", () => {
          socket.destroy();
          resolve("connected");
        });
        socket.once("error", (error: Error) => {
          resolve(error.message);
        });
      });
      assert.match(outcome, /names 127\.0\.0\.1, not 127\.0\.0\.2/);
    } finally {
      await elsewhere.close();
    }
    const wrongRole = await attempt(listener.port, clientTlsOptions(pki.agent("c"), { role: "controller" }));
    assert.match(wrongRole, /not a controller/);
  });

  it("rotates: new handshakes see the new certificate", async () => {
    const client = clientTlsOptions(pki.agent("node-client"), { role: "agent" });
    const first = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port: listener.port, ALPNProtocols: ["h2"], ...client }, () => {
        resolve(socket.getPeerX509Certificate()?.serialNumber ?? "");
        socket.destroy();
      });
      socket.once("error", reject);
    });
    const next: TlsMaterial = pki.agent("node-server");
    server.set(next);
    const second = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port: listener.port, ALPNProtocols: ["h2"], ...client }, () => {
        resolve(socket.getPeerX509Certificate()?.serialNumber ?? "");
        socket.destroy();
      });
      socket.once("error", reject);
    });
    assert.notEqual(first, second);
  });
});

describe("TlsListener in front of node:http2 (how the peer server uses it)", () => {
  it("HTTP/2 requests over the listener's connections, and no handshake before the first certificate", async () => {
    const pki = TestPki.create();
    const identity = new StaticIdentity(undefined);
    const h2 = createHttp2Server();
    h2.on("stream", (stream) => {
      stream.respond({ ":status": 200 });
      stream.end("hello");
    });
    const refusals: RefusalReason[] = [];
    const listener = await TlsListener.start({
      host: "127.0.0.1",
      port: 0,
      identity,
      clientCertificates: "require",
      onConnection: (socket) => {
        h2.emit("connection", socket);
      },
      onRefused: (reason) => refusals.push(reason),
      logger,
      name: "h2",
    });
    try {
      const client = clientTlsOptions(pki.agent("client"), { role: "agent" });
      const early = await attempt(listener.port, client);
      assert.notEqual(early, "accepted");
      for (let i = 0; i < 100 && refusals.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(refusals, ["no_local_certificate"]);
      identity.set(pki.agent("server"));
      const session = http2Connect(`https://127.0.0.1:${listener.port}`, client);
      const body = await new Promise<string>((resolve, reject) => {
        const request = session.request({ ":path": "/" });
        let text = "";
        request.setEncoding("utf8");
        request.on("data", (chunk: string) => (text += chunk));
        request.on("end", () => {
          resolve(text);
        });
        request.on("error", reject);
      });
      session.close();
      assert.equal(body, "hello");
    } finally {
      await listener.close();
      h2.close();
    }
  });
});
