import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { EventRecorder } from "./event-recorder.js";
import { KubeApiDouble } from "./testing/api-double.js";

const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });

describe("Event recorder against the API double", () => {
  let api: KubeApiDouble;

  before(async () => {
    api = await KubeApiDouble.start();
  });
  after(async () => {
    await api.close();
  });

  it("creates core/v1 Events in the background with source, count and timestamps", async () => {
    const recorder = new EventRecorder({
      kubeConfig: api.kubeConfig(),
      component: "shoal-controller",
      instance: "ctl-0",
      logger,
      wallClock: () => Date.parse("2026-01-02T03:04:05.678Z"),
    });
    const before = api.requests().length;
    recorder.record({ kind: "Pod", apiVersion: "v1", namespace: "shoal", name: "agent-1", uid: "u-1" }, "Warning", "PeerDropped", "gone");
    recorder.record({ kind: "Node", apiVersion: "v1", name: "node-1" }, "Normal", "Test", "x".repeat(5_000));
    assert.equal(api.requests().length, before, "record() returned before any request was sent");
    await recorder.close();
    const [dropped] = api.events("shoal");
    assert.ok(dropped !== undefined);
    assert.equal(dropped.type, "Warning");
    assert.equal(dropped.reason, "PeerDropped");
    assert.deepEqual(dropped.involvedObject, { kind: "Pod", apiVersion: "v1", namespace: "shoal", name: "agent-1", uid: "u-1" });
    assert.deepEqual(dropped.source, { component: "shoal-controller", host: "ctl-0" });
    assert.equal(dropped.count, 1);
    assert.equal(dropped.firstTimestamp, "2026-01-02T03:04:05.678Z");
    assert.match(dropped.metadata.name, /^agent-1\.[0-9a-f]+$/);
    const [cluster] = api.events("default");
    assert.equal(cluster?.reason, "Test", "events about cluster-scoped objects go to the default namespace");
    assert.equal(String(cluster.message).length, 1024, "long messages are truncated");
  });

  it("logs failures instead of throwing, and keeps recording", async () => {
    const recorder = new EventRecorder({ kubeConfig: api.kubeConfig(), component: "c", instance: "i", logger });
    const failure = api.failRequests({ verb: "create", resource: "events" }, { status: 403, reason: "Forbidden" }, 1);
    const count = api.events("other").length;
    recorder.record({ kind: "Pod", apiVersion: "v1", namespace: "other", name: "p" }, "Normal", "First", "refused");
    recorder.record({ kind: "Pod", apiVersion: "v1", namespace: "other", name: "p" }, "Normal", "Second", "kept");
    await recorder.close();
    assert.equal(failure.hits, 1);
    assert.deepEqual(
      api
        .events("other")
        .slice(count)
        .map((e) => e.reason),
      ["Second"],
    );
    recorder.record({ kind: "Pod", apiVersion: "v1", namespace: "other", name: "p" }, "Normal", "AfterClose", "ignored");
    assert.equal(api.events("other").length, count + 1);
  });
});
