// The chart's contract, for real: helm renders the chart, and the agent DaemonSet's pods (data-dir
// and configure init containers, agent, restore-on-stop) and the controller Deployment's replicas run
// exactly what it rendered, in containers of the image built from the repository's Dockerfile.
import assert from "node:assert/strict";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type GeneratedImageLayout, generateImageLayout } from "../../pkg/imagegen/index.js";
import { NAMESPACE, at } from "../../charts/shoal/tests/render.js";
import { makeTempDir, removeTempDir } from "../support/process.js";
import { type AgentNode, ChartCluster, ORIGIN_NAME } from "./chart-cluster.js";
import { buildImages } from "./images.js";
import type { ContainerSpec } from "./pod-spec.js";
import { assertAvailable, containerSuiteUnavailable, dockerode, skipUnlessCi } from "./runtime.js";
import { SHOAL_NODE_FLAGS } from "../../pkg/config/index.js";

const unavailable = await containerSuiteUnavailable();
const IMAGE_BYTES = 24 * 1024 * 1024;
const AGENT_READY_TIMEOUT_MS = 60_000;
const AGENT_UID = 65532;

describe("the chart's pods in containers of the built image", { skip: skipUnlessCi(unavailable) }, () => {
  let work: string | undefined;
  let cluster: ChartCluster | undefined;
  let layout: GeneratedImageLayout | undefined;

  before(async () => {
    assertAvailable(unavailable);
    await buildImages();
    work = await makeTempDir("containers-contract");
    cluster = await ChartCluster.start({ nodes: 2, work, containerdConfig: true, deferAgents: true });
    layout = await generateImageLayout({
      dir: join(work, "image"),
      seed: "e2e-containers-contract",
      layers: 3,
      totalBytes: IMAGE_BYTES,
      tag: "v1",
    });
    await cluster.origin.push(layout, "contract/app", "v1");
  });

  after(async () => {
    await cluster?.destroy();
    if (work !== undefined) await removeTempDir(work);
  });

  const nodes = (): [AgentNode, AgentNode] => {
    const [a, b] = cluster?.agents ?? [];
    assert.ok(a && b);
    return [a, b];
  };
  const renderedAgent = (): ContainerSpec => {
    const spec = (at(cluster?.daemonSet, "spec", "template", "spec", "containers") as ContainerSpec[]).find((c) => c.name === "agent");
    assert.ok(spec);
    return spec;
  };
  const hostsToml = (node: AgentNode): string => join(node.nodeRoot, "etc/containerd/certs.d", `${ORIGIN_NAME}:5000`, "hosts.toml");

  it("init containers: the data dir belongs to the agent's uid; configure pointed the node's containerd at the agent on the node IP", async () => {
    for (const node of nodes()) {
      const data = await stat(join(node.nodeRoot, "var/lib/shoal/data"));
      assert.equal(data.uid, AGENT_UID, "data-dir init container chowned the hostPath");
      const toml = await readFile(hostsToml(node), "utf8");
      assert.match(
        toml,
        new RegExp(`\\[host\\."http://${node.pod.ip.replaceAll(".", "\\.")}:5050"\\]`),
        `hosts.toml names the agent at $(HOST_IP):hostPort:\n${toml}`,
      );
      const report = JSON.parse(await readFile(join(node.nodeRoot, "var/lib/shoal/configure/configure-report.json"), "utf8")) as {
        ok: boolean;
        problems: unknown[];
      };
      assert.equal(report.ok, true, JSON.stringify(report.problems));
    }
  });

  it("the agent runs the rendered command line, environment, uid and read-only root, and becomes Ready on the chart's readiness probe", async (t) => {
    assert.ok(cluster);
    const api = await dockerode();
    for (const node of nodes()) {
      const { startMs, readyMs } = await cluster.startAgent(node, AGENT_READY_TIMEOUT_MS);
      t.diagnostic(
        `${node.nodeName}: agent container created and started in ${startMs.toFixed(0)} ms, Ready ${readyMs.toFixed(0)} ms after its start began`,
      );
      const resolved = node.pod.resolved.get("agent");
      assert.ok(resolved);
      const probe = node.pod.probeOf("agent", "readiness");
      assert.deepEqual([probe.path, probe.port], ["/readyz", 9150], "the readiness probe is the chart's (path, named port metrics)");
      assert.ok(await node.pod.probe("agent", "startup"), "the startup probe passes");
      assert.ok(await node.pod.probe("agent", "liveness"), "the liveness probe passes");
      const info = await api.getContainer(node.pod.container("agent").getId()).inspect();
      assert.deepEqual(info.Config.Cmd, renderedAgent().args, "args exactly as rendered");
      assert.deepEqual(
        info.Config.Entrypoint,
        ["node", ...SHOAL_NODE_FLAGS, "/app/dist/cmd/shoal/main.js"],
        "the image's entrypoint (the chart sets no command)",
      );
      assert.equal(info.Config.User, `${AGENT_UID}:${AGENT_UID}`);
      assert.equal(info.HostConfig.ReadonlyRootfs, true);
      assert.ok((info.HostConfig.SecurityOpt as string[] | undefined)?.includes("no-new-privileges"), "allowPrivilegeEscalation: false");
      assert.equal(info.HostConfig.Memory, 1024 ** 3, "the chart's memory limit");
      const env = new Map(info.Config.Env.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
      assert.equal(env.get("SHOAL_PEER_ADVERTISE_ADDR"), `${node.pod.ip}:5052`, "$(POD_IP) expanded from the Downward API");
      assert.equal(env.get("SHOAL_NODE_NAME"), node.nodeName);
      assert.equal(
        env.get("SHOAL_TRACKER"),
        `${cluster.trackerService.host}:${cluster.trackerService.port}`,
        "the agent dials the tracker Service's cluster name",
      );
      assert.equal(env.get("SHOAL_UPSTREAM"), `${ORIGIN_NAME}:5000=http://${ORIGIN_NAME}:5000`);
      const status = await readFile(`/proc/${info.State.Pid}/status`, "utf8");
      assert.match(
        status,
        new RegExp(`^Uid:\\s+${AGENT_UID}\\s+${AGENT_UID}\\s+${AGENT_UID}\\s+${AGENT_UID}$`, "m"),
        "the agent process runs as the chart's uid",
      );
      assert.match(status, /^CapEff:\s+0+$/m, "with no capabilities");
      const write = await node.pod.container("agent").exec(["sh", "-c", "echo x > /app/probe"]);
      assert.notEqual(write.exitCode, 0);
      assert.match(write.output, /Read-only file system/);
    }
  });

  it("one controller leads (the Lease holder; every synced replica is Ready) and every agent holds a tracker session through the Service", async () => {
    assert.ok(cluster);
    const leader = await cluster.waitLeader();
    for (const controller of cluster.controllers)
      assert.ok(await controller.probe("controller", "liveness"), `${controller.options.name} is live`);
    const lease = cluster.api.double.object("leases", NAMESPACE, String(at(cluster.deployment, "metadata", "name")));
    assert.equal(at(lease, "spec", "holderIdentity"), leader.options.name, "identity $(POD_NAME) from the Downward API");
    for (const node of nodes()) {
      const deadline = Date.now() + AGENT_READY_TIMEOUT_MS;
      while ((await cluster.agentMetric(node, "shoal_tracker_connected")) !== 1) {
        assert.ok(Date.now() < deadline, `${node.nodeName} connected to the tracker\n${await node.pod.logTail("agent")}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  });

  it("pulls through the mirror configure wrote: node-0 from the origin, node-1 from node-0; the origin sends each blob once", async (t) => {
    assert.ok(cluster && layout);
    const image = layout.images[0];
    assert.ok(image);
    const [first, second] = nodes();
    const mirrorOf = async (node: AgentNode): Promise<string> => {
      const match = /\[host\."http:\/\/([^"]+)"\]/.exec(await readFile(hostsToml(node), "utf8"));
      assert.ok(match?.[1]);
      return match[1];
    };
    const mark = await cluster.origin.mark();
    const a = await cluster.pull(first, await mirrorOf(first), "contract/app", "v1");
    assert.equal(a.error, undefined);
    assert.equal(a.digest, layout.root.digest);
    await new Promise((resolve) => setTimeout(resolve, 500)); // node-0's announce reaches the tracker
    const b = await cluster.pull(second, await mirrorOf(second), "contract/app", "v1");
    assert.equal(b.error, undefined);
    assert.equal(b.digest, layout.root.digest);
    const blobBytes = image.config.size + image.layerBytes;
    assert.equal(await cluster.origin.blobBytesSince(mark), blobBytes, "the origin sent config and layers once");
    const egress = await cluster.origin.egressSince(mark);
    t.diagnostic(`origin interface sent ${egress} bytes for F = ${image.imageBytes} (${(egress / image.imageBytes).toFixed(3)} × F)`);
    assert.ok(egress <= 1.05 * image.imageBytes, `origin egress ${egress} ≤ 1.05 × ${image.imageBytes}`);
    assert.ok(
      (await cluster.agentMetric(second, "shoal_blob_bytes_served_total", { source: "peer" })) >= image.layerBytes,
      "node-1 served the layers from its peer",
    );
  });

  it("SIGTERM: the preStop hook restores the runtime configuration and the agent exits 0 within terminationGracePeriodSeconds", async (t) => {
    assert.ok(cluster);
    const [, node] = nodes();
    const grace = at(cluster.daemonSet, "spec", "template", "spec", "terminationGracePeriodSeconds");
    assert.equal(grace, 30);
    const results = await node.pod.stop();
    const agent = results.get("agent");
    const restore = results.get("restore-on-stop");
    assert.ok(agent && restore);
    t.diagnostic(`agent stopped in ${agent.milliseconds.toFixed(0)} ms, restore-on-stop in ${restore.milliseconds.toFixed(0)} ms`);
    assert.equal(
      agent.exitCode,
      0,
      `the agent exited by itself on SIGTERM (137 would be the SIGKILL after the grace period)\n${await node.pod.logTail("agent")}`,
    );
    assert.equal(restore.exitCode, 0, await node.pod.logTail("restore-on-stop"));
    await assert.rejects(stat(hostsToml(node)), "configure --restore removed the hosts.toml it wrote (there was none before)");
    const [controller] = cluster.controllers;
    assert.ok(controller);
    const stopped = await controller.stop();
    assert.equal(
      stopped.get("controller")?.exitCode,
      0,
      `the controller exited by itself on SIGTERM\n${await controller.logTail("controller")}`,
    );
  });
});
