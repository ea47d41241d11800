import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type DemoResult, type NodeResult, formatReport } from "./report.js";

const MB = 1e6;

function node(name: string): NodeResult {
  return {
    name,
    seconds: 10,
    bytes: 200 * MB,
    bytesFromOrigin: 100 * MB,
    bytesFromPeers: 100 * MB,
    bytesFromLocal: 0,
    bytesToPeers: 100 * MB,
    duplicatePeerBytes: 0,
    wastedPeerBytes: {},
    agentCpuSeconds: 2.5,
    agentPeakRssBytes: 150 * 2 ** 20,
    trackerLookups: 10,
    trackerNotices: 20,
    trackerNoticeDeltas: 15,
    digestsVerified: 6,
    complete: true,
  };
}

function result(busyCpuSeconds: number, nodeCount = 6): DemoResult {
  return {
    nodeCount,
    layers: 4,
    warmUp: false,
    rates: { originBytesPerSecond: 50 * MB, uploadBytesPerSecond: 50 * MB, downloadBytesPerSecond: 50 * MB },
    imageBytes: 200 * MB,
    originBytes: 200 * MB,
    offloadPercent: 50,
    p2pSeconds: 10,
    clientServerSeconds: 8,
    clientServerOriginBytes: 400 * MB,
    boundSeconds: 4,
    clientServerBoundSeconds: 8,
    agentCpuSecondsPerGB: 12.5,
    machine: {
      cpus: 2,
      seconds: 10,
      availableCpuSeconds: 20,
      busyCpuSeconds,
      groups: { agents: 5, controller: 0.5, demo: 3 },
      otherCpuSeconds: Math.max(0, busyCpuSeconds - 8.5),
    },
    tracker: { lookupsServed: 20, noticesSent: 40, noticeDeltas: 30 },
    nodes: Array.from({ length: nodeCount }, (_, i) => node(`node-${i + 1}`)),
  };
}

describe("shoal demo's report", () => {
  it("says when the swarm's round kept the CPUs busy, so its time measures the machine more than the links", () => {
    const busy = formatReport(result(19));
    assert.match(busy, /machine: 19\.0 of 20\.0 CPU-s busy \(95 %/);
    assert.match(
      busy,
      /\n {2}the swarm's round: the CPUs were 95 % busy: its time measures the 2 CPUs more than the links \(--nodes 2 shows the swarm with cores to spare\)$/,
    );
    assert.match(
      formatReport(result(19, 2)),
      /\n {2}the swarm's round: the CPUs were 95 % busy: its time measures the 2 CPUs more than the links$/,
      "2 nodes: no advice to run 2 nodes",
    );
    const spare = formatReport(result(12));
    assert.match(spare, /machine: 12\.0 of 20\.0 CPU-s busy \(60 %/);
    assert.doesNotMatch(spare, /CPUs were/, "a round with cores to spare gets no such line");
    assert.doesNotMatch(formatReport({ ...result(19), machine: null }), /CPUs were/, "nothing without /proc");
  });
});
