import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import { pino } from "pino";
import { abortableDelay } from "../util/index.js";
import type { Informer, InformerEvent, RestartReason } from "./informer.js";
import { podInformer } from "./resource-informers.js";
import { KubeApiDouble } from "./testing/api-double.js";

const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });
const SELECTOR = "app.kubernetes.io/name=shoal,app.kubernetes.io/component=agent";

async function eventually(check: () => void, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      check();
      return;
    } catch (error) {
      if (Date.now() >= deadline) throw error;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** A delay the test releases by hand, recording what was asked for. */
class Gate {
  readonly asked: number[] = [];
  private release: (() => void) | undefined;
  held = false;
  delay = (ms: number, signal: AbortSignal): Promise<void> => {
    this.asked.push(ms);
    this.held = true;
    return new Promise<void>((resolve, reject) => {
      this.release = () => {
        this.held = false;
        resolve();
      };
      signal.addEventListener(
        "abort",
        () => {
          reject(new Error("aborted"));
        },
        { once: true },
      );
    });
  };
  open(): void {
    this.release?.();
  }
}

function names(informer: Informer<V1Pod>): string[] {
  return informer
    .list()
    .map((p) => p.metadata?.name ?? "")
    .sort();
}

describe("informer over the API double", () => {
  let api: KubeApiDouble;
  let informer: Informer<V1Pod> | undefined;

  before(async () => {
    api = await KubeApiDouble.start();
  });
  after(async () => {
    await api.close();
  });
  afterEach(async () => {
    await informer?.stop();
    informer = undefined;
  });

  function start(
    namespace: string,
    extra: Partial<Parameters<typeof podInformer>[0]> = {},
  ): { informer: Informer<V1Pod>; events: string[]; restarts: RestartReason[] } {
    const events: string[] = [];
    const restarts: RestartReason[] = [];
    const created = podInformer({
      kubeConfig: api.kubeConfig(),
      namespace,
      labelSelector: SELECTOR,
      logger,
      random: () => 0.5,
      onRestart: (r) => restarts.push(r),
      ...extra,
    });
    created.on((event: InformerEvent<V1Pod>) => events.push(`${event.type} ${event.object.metadata?.name ?? ""}`));
    created.start();
    informer = created;
    return { informer: created, events, restarts };
  }

  it("lists, then follows adds, updates and deletes; other namespaces and labels stay out", async () => {
    api.putPod({ namespace: "ns1", name: "p1", nodeName: "n1", ip: "10.1.0.1" });
    const { informer: pods, events } = start("ns1");
    await pods.whenSynced(AbortSignal.timeout(5_000));
    assert.deepEqual(names(pods), ["p1"]);
    api.putPod({ namespace: "ns1", name: "p2", nodeName: "n2" });
    api.putPod({ namespace: "ns1", name: "other", nodeName: "n2", labels: { app: "x" } });
    api.putPod({ namespace: "ns2", name: "p9", nodeName: "n2" });
    api.setPodIP("ns1", "p2", "10.1.0.2");
    api.deletePod("ns1", "p1");
    await eventually(() => {
      assert.deepEqual(events, ["added p1", "added p2", "updated p2", "deleted p1"]);
    });
    assert.equal(pods.get("ns1/p2")?.status?.podIP, "10.1.0.2");
    assert.equal(pods.get("ns1/p1"), undefined);
  });

  for (const goneAs of ["event", "status"] as const) {
    it(`relists after 410 Gone (${goneAs === "event" ? "ERROR watch event" : "HTTP status"}) and ends up with the right cache`, async () => {
      const ns = `gone-${goneAs}`;
      api.putPod({ namespace: ns, name: "keep", nodeName: "n1" });
      api.putPod({ namespace: ns, name: "vanish", nodeName: "n1" });
      const gate = new Gate();
      const { informer: pods, events, restarts } = start(ns, { delay: gate.delay });
      await pods.whenSynced(AbortSignal.timeout(5_000));
      await eventually(() => {
        assert.equal(api.openWatches("pods"), 1);
      });
      // The watch breaks; while the informer waits to reconnect, things change and history is compacted.
      api.dropWatches("pods");
      await eventually(() => {
        assert.ok(gate.held);
      });
      api.deletePod(ns, "vanish");
      api.setPodIP(ns, "keep", "10.2.0.1");
      api.putPod({ namespace: ns, name: "new", nodeName: "n2" });
      api.compact();
      api.goneAs = goneAs;
      try {
        gate.open();
        await eventually(() => {
          assert.deepEqual(names(pods), ["keep", "new"]);
        });
      } finally {
        api.goneAs = "event";
      }
      assert.equal(pods.get(`${ns}/keep`)?.status?.podIP, "10.2.0.1");
      assert.ok(restarts.includes("gone"), `restarts: ${restarts.join(",")}`);
      assert.deepEqual(events.slice(2).sort(), ["added new", "deleted vanish", "updated keep"], "the relist reports what the watch missed");
      const lists = api.requests().filter((r) => r.verb === "list" && r.namespace === ns);
      assert.equal(lists.length, 2, "listed again once");
      // And it watches again from the new list's version.
      api.putPod({ namespace: ns, name: "later", nodeName: "n2" });
      await eventually(() => {
        assert.ok(names(pods).includes("later"));
      });
    });
  }

  it("reconnects a dropped watch with capped exponential backoff, then follows changes again", async () => {
    const ns = "backoff";
    const asked: number[] = [];
    const { informer: pods } = start(ns, {
      initialBackoffMs: 10,
      maxBackoffMs: 40,
      delay: (ms, signal) => {
        asked.push(ms);
        return abortableDelay(ms, signal);
      },
    });
    await pods.whenSynced(AbortSignal.timeout(5_000));
    await eventually(() => {
      assert.equal(api.openWatches("pods"), 1);
    });
    const failure = api.failRequests({ verb: "watch", resource: "pods" }, { status: 503, reason: "ServiceUnavailable" }, 4);
    api.dropWatches("pods");
    await eventually(() => {
      assert.equal(api.openWatches("pods"), 1);
    });
    assert.equal(failure.hits, 4);
    assert.deepEqual(asked, [10, 20, 40, 40, 40], "doubling from the initial delay, capped");
    api.putPod({ namespace: ns, name: "after", nodeName: "n1" });
    await eventually(() => {
      assert.deepEqual(names(pods), ["after"]);
    });
    assert.equal(
      api.requests().filter((r) => r.verb === "list" && r.namespace === ns).length,
      1,
      "a dropped watch resumes without listing again",
    );
  });

  it("resumes a cleanly ended watch at once, from the bookmark's resourceVersion", async () => {
    const ns = "bookmarks";
    const gate = new Gate();
    const { informer: pods } = start(ns, { delay: gate.delay });
    await pods.whenSynced(AbortSignal.timeout(5_000));
    await eventually(() => {
      assert.equal(api.openWatches("pods"), 1);
    });
    api.putNode({ name: "unrelated" });
    api.sendBookmarks();
    await eventually(() => {
      assert.equal(pods.lastResourceVersion, String(api.resourceVersion));
    });
    const watchesBefore = api.requests().filter((r) => r.verb === "watch" && r.namespace === ns).length;
    // Wait past the informer's "healthy watch" threshold so the clean end counts as routine.
    await new Promise((r) => setTimeout(r, 1_100));
    api.endWatches("pods");
    await eventually(() => {
      assert.equal(api.requests().filter((r) => r.verb === "watch" && r.namespace === ns).length, watchesBefore + 1);
    });
    assert.deepEqual(gate.asked, [], "no backoff for a clean end");
  });
});
