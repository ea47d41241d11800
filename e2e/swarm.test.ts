// The P2P data plane with real processes: Debian's docker-registry as the origin, `shoal controller`
// as the tracker, six `shoal agent` processes on their own loopback addresses, pulling as containerd does.
// Every gRPC channel is mutual TLS (certificate files from a throwaway CA, as on hosts without Kubernetes).
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { Metadata, type ServiceError, credentials, status } from "@grpc/grpc-js";
import { pullImage } from "../pkg/client/index.js";
import { PeerServiceClient } from "../pkg/gen/peer/v1/peer.js";
import { TrackerServiceClient } from "../pkg/gen/tracker/v1/tracker.js";
import { ThrowawayPki, tlsArgs } from "../pkg/identity/index.js";
import { generateImageLayout, type GeneratedImageLayout } from "../pkg/imagegen/index.js";
import { DockerRegistry } from "./support/docker-registry.js";
import { makeTempDir, pathExists, removeTempDir } from "./support/process.js";
import { ShoalAgent } from "./support/shoal-agent.js";
import { ShoalController } from "./support/shoal-controller.js";
import { skopeoPushLayout } from "./support/skopeo.js";
import { ThrottleProxy } from "./support/throttle-proxy.js";

const AGENTS = 6;
const IMAGE_BYTES = 48 * 1024 * 1024;
const PULL_TIMEOUT_MS = 120_000;
/** Per-agent upload cap: transfers last long enough to kill a process in the middle of one. */
const UPLOAD_RATE = "40MB";
const SLOW_ORIGIN_BYTES_PER_SECOND = 12 * 1024 * 1024;

describe("swarm of agent processes (docker-registry origin, shoal controller, 6 agents)", () => {
  let work: string;
  let origin: DockerRegistry;
  let slow: ThrottleProxy;
  let controller: ShoalController | undefined;
  let agents: (ShoalAgent | undefined)[] = [];
  let controllerTls: string[] = [];
  const images = new Map<string, GeneratedImageLayout>();

  async function image(tag: string): Promise<GeneratedImageLayout> {
    const layout = await generateImageLayout({ dir: join(work, tag), seed: `e2e-swarm-${tag}`, layers: 4, totalBytes: IMAGE_BYTES, tag });
    await skopeoPushLayout({ layoutDir: layout.dir, tag, destination: `${origin.host}/swarm/app:${tag}` });
    images.set(tag, layout);
    return layout;
  }

  function blobBytes(layout: GeneratedImageLayout): number {
    const only = layout.images[0];
    assert.ok(only);
    return only.config.size + only.layerBytes;
  }

  async function pull(agent: ShoalAgent, tag: string, registry = origin.host): Promise<string> {
    const result = await pullImage({
      baseUrl: agent.mirrorUrl,
      ns: registry,
      name: "swarm/app",
      reference: tag,
      signal: AbortSignal.timeout(PULL_TIMEOUT_MS),
    });
    return result.digest;
  }

  function live(): ShoalAgent[] {
    return agents.filter((a): a is ShoalAgent => a !== undefined);
  }

  before(async () => {
    work = await makeTempDir("e2e-swarm");
    origin = await DockerRegistry.start();
    slow = await ThrottleProxy.start({ host: "127.0.0.1", port: origin.port }, SLOW_ORIGIN_BYTES_PER_SECOND);
    const pki = await ThrowawayPki.create(join(work, "pki"));
    controllerTls = tlsArgs(await pki.issue({ role: "controller", name: "tracker", ips: ["127.0.0.1"] }));
    controller = await ShoalController.start({ extraArgs: controllerTls });
    const tracker = controller.trackerAddress;
    agents = await Promise.all(
      Array.from({ length: AGENTS }, async (_, i) =>
        ShoalAgent.start({
          host: `127.0.0.${11 + i}`,
          tracker,
          nodeName: `node-${i}`,
          upstreams: [`${origin.host}=${origin.url}`, `${slow.host}=${slow.url}`],
          extraArgs: [
            "--upload-rate",
            UPLOAD_RATE,
            ...tlsArgs(await pki.issue({ role: "agent", name: `node-${i}`, ips: [`127.0.0.${11 + i}`] })),
          ],
        }),
      ),
    );
  });

  after(async () => {
    await Promise.all(live().map((a) => a.stop().catch(() => undefined)));
    await controller?.stop().catch(() => undefined);
    await slow.close().catch(() => undefined);
    await origin.stop().catch(() => undefined);
    await removeTempDir(work);
  });

  it("simultaneous cold pulls through every agent: all digests verified, the origin sends the image about once", async () => {
    const layout = await image("cold");
    const mark = await origin.mark();
    const digests = await Promise.all(live().map((a) => pull(a, "cold")));
    for (const d of digests) assert.equal(d, layout.root.digest);
    const originBytes = await origin.servedBlobBytes({ since: mark });
    const expected = blobBytes(layout);
    assert.ok(originBytes >= expected && originBytes <= expected * 1.05, `origin sent ${originBytes} bytes for a ${expected}-byte image`);
    const fromPeers = (await Promise.all(live().map((a) => a.metric("shoal_peer_bytes_received_total")))).reduce((x, y) => x + y, 0);
    assert.ok(fromPeers >= (AGENTS - 1) * expected * 0.9, `peers supplied ${fromPeers} bytes`);
  });

  it("a peer killed mid-transfer: every other pull finishes, correct", async () => {
    const layout = await image("kill-peer");
    const seed = agents[0];
    assert.ok(seed);
    assert.equal(await pull(seed, "kill-peer"), layout.root.digest);
    await sleep(500); // the seed's inventory announce reaches the tracker
    const others = live().slice(1);
    let finished = 0;
    const pulls = others.map((a) =>
      pull(a, "kill-peer").then((digest) => {
        finished++;
        return digest;
      }),
    );
    await sleep(400);
    const finishedBeforeKill = finished;
    await seed.kill();
    assert.ok(finishedBeforeKill < others.length, "the seed was killed while pulls were still running");
    assert.equal(await pathExists(dirname(seed.logFile)), false, "the killed agent's log dir is removed");
    assert.equal(await pathExists(seed.dataDir), false, "and the data dir the harness made for it");
    agents[0] = undefined;
    for (const d of await Promise.all(pulls)) assert.equal(d, layout.root.digest);
  });

  it("the origin grantee killed mid-transfer: the grant moves and every pull finishes", async () => {
    const layout = await image("kill-grantee");
    const before = new Map(await Promise.all(live().map(async (a) => [a, await a.metric("shoal_origin_bytes_fetched_total")] as const)));
    const pulls = live().map((a) =>
      pull(a, "kill-grantee", slow.host).then(
        (digest) => ({ agent: a, digest }),
        (error: unknown) => ({ agent: a, error }),
      ),
    );
    // The grantee is the agent reading from the (slow) origin now: its origin byte count grows.
    let grantee: ShoalAgent | undefined;
    for (let i = 0; i < 100 && grantee === undefined; i++) {
      await sleep(100);
      for (const a of live())
        if ((await a.metric("shoal_origin_bytes_fetched_total")) - (before.get(a) ?? 0) > 4 * 1024 * 1024) grantee = a;
    }
    assert.ok(grantee, "one agent is fetching from the origin");
    await grantee.kill();
    agents[agents.indexOf(grantee)] = undefined;
    const results = await Promise.all(pulls);
    const originReaders = (
      await Promise.all(live().map(async (a) => (await a.metric("shoal_origin_bytes_fetched_total")) - (before.get(a) ?? 0)))
    ).filter((n) => n > 0);
    assert.ok(originReaders.length >= 1, "after the grantee died another agent fetched the rest from the origin");
    for (const r of results) {
      if (r.agent === grantee) continue;
      assert.ok("digest" in r, `pull through ${r.agent.mirrorUrl} failed: ${"error" in r ? String(r.error) : ""}`);
      assert.equal(r.digest, layout.root.digest);
    }
  });

  it("a stranger gets nothing: plaintext and certificate-less probes of the peer ports and the tracker fail", async () => {
    const agent = live()[0];
    assert.ok(agent?.peerAddress !== undefined && controller !== undefined);
    const layout = images.get("cold");
    assert.ok(layout);
    const digest = layout.images[0]?.layers[0]?.descriptor.digest;
    assert.ok(digest !== undefined);
    for (const channel of [credentials.createInsecure(), credentials.createSsl()]) {
      const peer = new PeerServiceClient(agent.peerAddress, channel);
      const code = await new Promise<number>((resolve) => {
        peer.stat({ digest }, new Metadata(), { deadline: Date.now() + 5_000 }, (error: ServiceError | null) => {
          resolve(error?.code ?? status.OK);
        });
      });
      peer.close();
      assert.equal(code, status.UNAVAILABLE, "no Stat answer without a certificate");
      const tracker = new TrackerServiceClient(controller.trackerAddress, channel);
      const lookup = await new Promise<number>((resolve) => {
        tracker.lookup(
          { agentId: "stranger", digest, wantOriginGrant: false, excludedAgentIds: [], expectedSize: 0 },
          new Metadata(),
          { deadline: Date.now() + 5_000 },
          (error: ServiceError | null) => {
            resolve(error?.code ?? status.OK);
          },
        );
      });
      tracker.close();
      assert.equal(lookup, status.UNAVAILABLE, "no Lookup answer without a certificate");
    }
    assert.ok((await agent.metric("shoal_tls_handshakes_refused_total")) >= 1, "the agent counted the refused handshakes");
  });

  it("tracker down: pulls still succeed from the origin; tracker restarted: state rebuilt from re-announces", async () => {
    const layout = await image("no-tracker");
    assert.ok(controller);
    const port = controller.port;
    await controller.kill();
    controller = undefined;
    const [a, b, c] = live();
    assert.ok(a && b && c);
    for (const d of await Promise.all([pull(a, "no-tracker"), pull(b, "no-tracker")])) assert.equal(d, layout.root.digest);
    controller = await ShoalController.start({ port, extraArgs: controllerTls });
    // Agents reconnect with backoff (at most 10 s) and re-announce everything they hold.
    for (let i = 0; i < 150; i++) {
      const connected = await Promise.all(live().map((x) => x.metric("shoal_tracker_connected")));
      if (connected.every((v) => v === 1)) break;
      await sleep(100);
    }
    await sleep(500);
    const mark = await origin.mark();
    assert.equal(await pull(c, "no-tracker"), layout.root.digest);
    assert.equal(
      await origin.servedBlobBytes({ since: mark }),
      0,
      "the third agent got the image from its peers via the restarted tracker",
    );
  });
});
