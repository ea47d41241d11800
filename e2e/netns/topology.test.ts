// The harness itself: what the topology creates (and does not create in the root namespace), its
// link caps, and teardown after a normal end, after a crash of an earlier run, and on SIGTERM.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { access } from "node:fs/promises";
import { createInterface } from "node:readline";
import { setTimeout as delay } from "node:timers/promises";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { runCommand } from "../support/process.js";
import { IP_TIMEOUT_MS, addNetns, deleteNetns, ip, listNetns, processAlive, tbfBurstBytes } from "./ip.js";
import { skipReason } from "./scenario-fixture.js";
import { ENDPOINT_IFNAME, NetnsTopology, cleanupStaleNamespaces, namespacesWithPrefix } from "./topology.js";

const HOLD_CLUSTER = fileURLToPath(new URL("./testing/hold-cluster.js", import.meta.url));
const CHILD_START_TIMEOUT_MS = 60_000;
const CHILD_EXIT_TIMEOUT_MS = 30_000;
const MBIT = 1e6 / 8;
const PID_GONE_POLLS = 100;
const PID_GONE_POLL_MS = 50;

async function rootLinks(): Promise<string[]> {
  return (await ip(["-o", "link"]))
    .split("\n")
    .map((line) => line.split(":")[1]?.trim() ?? "")
    .filter((name) => name !== "")
    .sort();
}

describe("netns harness", { skip: skipReason }, () => {
  const leftovers: string[] = [];
  after(async () => {
    for (const name of leftovers) await deleteNetns(name).catch(() => undefined);
  });

  it("builds node, origin, cache and control namespaces on a bridge of its own, with tbf caps, and deletes them all", async () => {
    const linksBefore = await rootLinks();
    const topology = await NetnsTopology.create({
      nodes: 2,
      nodeUploadBytesPerSecond: 200 * MBIT,
      nodeDownloadBytesPerSecond: 300 * MBIT,
      originBytesPerSecond: 100 * MBIT,
    });
    leftovers.push(...topology.namespaces);
    try {
      assert.deepEqual((await namespacesWithPrefix(topology.prefix)).sort(), [...topology.namespaces].sort());
      assert.match(topology.prefix, /^shoal-\d+-[0-9a-f]{4}-$/);
      assert.deepEqual(await rootLinks(), linksBefore, "no interface was created in the root namespace");
      const [first, second] = topology.nodes;
      assert.ok(first && second);
      assert.notEqual(first.address, second.address);
      const qdisc = async (netns: string, dev: string): Promise<string> =>
        (await runCommand("tc", ["-n", netns, "qdisc", "show", "dev", dev], { timeoutMs: IP_TIMEOUT_MS })).stdout;
      // tc prints rates in its own units; 200 Mbit shows as 200Mbit.
      assert.match(await qdisc(first.netns, ENDPOINT_IFNAME), /tbf .*rate 200Mbit/, "upload cap on the node's own veth");
      assert.match(await qdisc(topology.bridgeNetns, first.bridgePort), /tbf .*rate 300Mbit/, "download cap on the bridge side");
      assert.match(await qdisc(topology.origin.netns, ENDPOINT_IFNAME), /tbf .*rate 100Mbit/, "origin egress cap");
      assert.doesNotMatch(await qdisc(topology.control.netns, ENDPOINT_IFNAME), /tbf/, "the control link is not capped");
      // Reachability across the bridge: a counter moves when a node sends to another.
      const before = await topology.counter(first, "tx_bytes");
      // A TCP connect to a closed port of the origin: the SYN leaves, a RST comes back, bash fails.
      await ip(["netns", "exec", first.netns, "bash", "-c", `exec 3<>/dev/tcp/${topology.origin.address}/9`]).catch(() => "");
      assert.ok((await topology.counter(first, "tx_bytes")) > before, "the node's interface sent something");
    } finally {
      await topology.destroy();
    }
    assert.deepEqual(await namespacesWithPrefix(topology.prefix), []);
  });

  it("tbf bursts are at least 256 KiB and grow with the rate", () => {
    assert.equal(tbfBurstBytes(MBIT), 256 * 1024);
    assert.ok(tbfBurstBytes(10_000 * MBIT) > 256 * 1024);
  });

  it("rejects bad sizes with a message naming the field", async () => {
    await assert.rejects(
      NetnsTopology.create({ nodes: 0, nodeUploadBytesPerSecond: 1, nodeDownloadBytesPerSecond: 1, originBytesPerSecond: 1 }),
      /nodes must be an integer/,
    );
    await assert.rejects(
      NetnsTopology.create({ nodes: 2, nodeUploadBytesPerSecond: 1, nodeDownloadBytesPerSecond: 0, originBytesPerSecond: 1 }),
      /nodeDownloadBytesPerSecond must be a positive/,
    );
  });

  it("deletes namespaces a crashed run left behind, and only those", async () => {
    const dead = spawn(process.execPath, ["-e", ""]);
    const deadPid = await new Promise<number>((resolve) =>
      dead.once("exit", () => {
        resolve(dead.pid ?? 0);
      }),
    );
    assert.ok(deadPid > 0 && !processAlive(deadPid));
    const stale = `shoal-${deadPid}-beef-n1`;
    const ours = `shoal-${process.pid}-beef-n1`;
    const foreign = `shoal-test-${deadPid}-other`;
    for (const name of [stale, ours, foreign]) {
      leftovers.push(name);
      await addNetns(name);
    }
    const deleted = await cleanupStaleNamespaces();
    assert.ok(deleted.includes(stale));
    const names = await listNetns();
    assert.ok(!names.includes(stale), "the stale namespace is gone");
    assert.ok(names.includes(ours), "a namespace of a live run stays");
    assert.ok(names.includes(foreign), "a namespace not named by this harness stays");
    for (const name of [ours, foreign]) await deleteNetns(name);
  });

  it("SIGTERM tears everything down: processes, namespaces, files", async () => {
    const child = spawn(process.execPath, [HOLD_CLUSTER], { stdio: ["ignore", "pipe", "inherit"] });
    const exited = new Promise<number | null>((resolve) =>
      child.once("exit", (code) => {
        resolve(code);
      }),
    );
    try {
      const lines = createInterface({ input: child.stdout });
      const first = await Promise.race([
        new Promise<string>((resolve) => lines.once("line", resolve)),
        exited.then((code) => `exited ${code}`),
        new Promise<string>((resolve) =>
          setTimeout(() => {
            resolve("timeout");
          }, CHILD_START_TIMEOUT_MS).unref(),
        ),
      ]);
      const created = JSON.parse(first) as { prefix: string; pids: number[]; runDir: string };
      leftovers.push(...(await namespacesWithPrefix(created.prefix)));
      assert.equal((await namespacesWithPrefix(created.prefix)).length, 5, "bridge, origin, cache, control and one node");
      assert.ok(created.pids.length >= 4, "origin, controller, agent and containerd run");
      child.kill("SIGTERM");
      const code = await Promise.race([
        exited,
        new Promise<string>((resolve) =>
          setTimeout(() => {
            resolve("timeout");
          }, CHILD_EXIT_TIMEOUT_MS).unref(),
        ),
      ]);
      assert.equal(code, 143, "exit code of a SIGTERMed process");
      assert.deepEqual(await namespacesWithPrefix(created.prefix), []);
      // SIGKILLed children of the exited process are reaped by init a moment later.
      for (let i = 0; i < PID_GONE_POLLS && created.pids.some(processAlive); i++) await delay(PID_GONE_POLL_MS);
      for (const pid of created.pids) assert.ok(!processAlive(pid), `pid ${pid} was killed`);
      await assert.rejects(access(created.runDir), "the run's files are removed");
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
  });
});
