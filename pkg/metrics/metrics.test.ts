import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AgentMetrics, ControllerMetrics, MAX_ZONE_LABEL_VALUES, MetricsServer } from "./index.js";

describe("metrics", () => {
  it("the agent exports build info, the served-bytes series for every source from the start, and store usage at scrape time", async () => {
    const metrics = new AgentMetrics({ version: "1.2.3", collectDefaults: false });
    metrics.bindStoreUsage(() => ({ usedBytes: 42, quotaBytes: 100, blobs: 3, partials: 1 }));
    const text = await metrics.registry.metrics();
    assert.match(text, /shoal_build_info\{version="1\.2\.3",node_version="v\d+\.\d+\.\d+"\} 1/);
    for (const source of ["local", "peer", "origin"])
      assert.match(text, new RegExp(`shoal_blob_bytes_served_total\\{source="${source}"\\} 0`));
    assert.match(text, /shoal_store_used_bytes 42/);
    assert.match(text, /shoal_store_blobs\{state="partial"\} 1/);
  });

  it('counts peer bytes by zone pair: an unset zone is "unknown", source zones past the cap are "other"', async () => {
    const metrics = new AgentMetrics({ version: "t", collectDefaults: false });
    metrics.countPeerBytesByZone("eu-1a", "eu-1b", 100);
    metrics.countPeerBytesByZone("eu-1a", "eu-1b", 50);
    metrics.countPeerBytesByZone("", "", 7);
    for (let i = 0; i < MAX_ZONE_LABEL_VALUES; i++) metrics.countPeerBytesByZone(`zone-${i}`, "eu-1b", 1);
    const text = await metrics.registry.metrics();
    assert.match(text, /shoal_peer_bytes_received_by_zone_total\{source_zone="eu-1a",zone="eu-1b"\} 150/);
    assert.match(text, /shoal_peer_bytes_received_by_zone_total\{source_zone="unknown",zone="unknown"\} 7/);
    // eu-1a and unknown took two of the places: the last two zones fall into "other".
    assert.match(text, /shoal_peer_bytes_received_by_zone_total\{source_zone="other",zone="eu-1b"\} 2/);
    assert.doesNotMatch(text, new RegExp(`source_zone="zone-${MAX_ZONE_LABEL_VALUES - 1}"`));
  });

  it("the controller exports build info", async () => {
    const text = await new ControllerMetrics({ version: "9.9.9", collectDefaults: false }).registry.metrics();
    assert.match(text, /shoal_build_info\{version="9\.9\.9"/);
  });

  it("agent and controller export the process metrics, event loop lag included, as shoal_…", async () => {
    for (const registry of [new AgentMetrics({ version: "t" }).registry, new ControllerMetrics({ version: "t" }).registry]) {
      const text = await registry.metrics();
      for (const name of [
        "shoal_process_resident_memory_bytes",
        "shoal_process_cpu_seconds_total",
        "shoal_nodejs_eventloop_lag_p99_seconds",
      ]) {
        assert.match(text, new RegExp(`^${name} `, "m"), `${name} in:\n${text.slice(0, 400)}`);
      }
    }
  });

  it("serves /metrics, /healthz and /readyz with the readiness reason", async () => {
    const metrics = new AgentMetrics({ version: "t", collectDefaults: false });
    let ready: true | string = "warming up";
    const server = await MetricsServer.start({
      host: "127.0.0.1",
      port: 0,
      registry: metrics.registry,
      health: { live: () => true, ready: () => ready },
    });
    try {
      const base = `http://127.0.0.1:${server.address.port}`;
      assert.match(await (await fetch(`${base}/metrics`)).text(), /shoal_build_info/);
      assert.equal((await fetch(`${base}/healthz`)).status, 200);
      const notReady = await fetch(`${base}/readyz`);
      assert.equal(notReady.status, 503);
      assert.match(await notReady.text(), /warming up/);
      ready = true;
      assert.equal((await fetch(`${base}/readyz`)).status, 200);
      assert.equal((await fetch(`${base}/nope`)).status, 404);
      assert.equal((await fetch(`${base}/metrics`, { method: "POST" })).status, 405);
    } finally {
      await server.close();
    }
  });
});
