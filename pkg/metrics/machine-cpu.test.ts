import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  CPU_BOUND_BUSY_SHARE,
  type CpuSnapshot,
  type MachineFigures,
  busyShare,
  cpuBoundNote,
  formatMachineFigures,
  machineFigures,
  parseProcStat,
  runningPids,
} from "./machine-cpu.js";

const STAT = [
  "cpu  1000 50 400 8000 100 10 40 0 0 0",
  "cpu0 500 25 200 4000 50 5 20 0 0 0",
  "cpu1 500 25 200 4000 50 5 20 0 0 0",
  "intr 12345 0 0",
  "ctxt 999",
  "",
].join("\n");

describe("machine CPU of a benchmark arm", () => {
  it("reads busy and idle seconds and the CPU count from /proc/stat", () => {
    const cpu = parseProcStat(STAT);
    assert.equal(cpu.cpus, 2);
    // user + nice + system + irq + softirq + steal = 1500 ticks; idle + iowait = 8100.
    assert.equal(cpu.busySeconds, 15);
    assert.equal(cpu.idleSeconds, 81);
  });

  it("refuses a /proc/stat without the aggregate line", () => {
    assert.throws(() => parseProcStat("cpu0 1 2 3 4 5\n"), /no aggregate cpu line/);
    assert.throws(() => parseProcStat("cpu  1 x 3 4 5\n"), /unreadable cpu line/);
  });

  it("splits the busy time into the groups and the rest, and never counts a vanished process negative", () => {
    const before: CpuSnapshot = {
      atMs: 1_000,
      machine: { cpus: 2, busySeconds: 100, idleSeconds: 500 },
      groups: { agents: 10, containerd: 5, registry: 3 },
    };
    const after: CpuSnapshot = {
      atMs: 41_000,
      machine: { cpus: 2, busySeconds: 170, idleSeconds: 510 },
      // The registry exited: it reads 0 now.
      groups: { agents: 40, containerd: 25, registry: 0 },
    };
    const figures = machineFigures(before, after);
    assert.equal(figures.seconds, 40);
    assert.equal(figures.availableCpuSeconds, 80);
    assert.equal(figures.busyCpuSeconds, 70);
    assert.deepEqual(figures.groups, { agents: 30, containerd: 20, registry: 0 });
    assert.equal(figures.otherCpuSeconds, 20);
    assert.equal(
      formatMachineFigures(figures),
      "70.0 of 80.0 CPU-s busy (88 %; 2 CPUs × 40.0 s): agents 30.0, containerd 20.0, registry 0.0, other 20.0",
    );
  });

  it("says a run's time measures the CPUs once the machine was at least 90 % busy, and nothing below", () => {
    const run = (busy: number): MachineFigures => ({
      cpus: 2,
      seconds: 10,
      availableCpuSeconds: 20,
      busyCpuSeconds: busy,
      groups: { agents: busy / 2 },
      otherCpuSeconds: busy / 2,
    });
    assert.equal(CPU_BOUND_BUSY_SHARE, 0.9);
    assert.equal(busyShare(run(17)), 0.85);
    assert.equal(cpuBoundNote(run(17), 6), undefined, "85 %: cores to spare");
    assert.equal(cpuBoundNote(run(17.9), 6), undefined, "89.5 %: still below");
    assert.equal(
      cpuBoundNote(run(19.2), 6),
      "the CPUs were 96 % busy: its time measures the 2 CPUs more than the links (--nodes 2 shows the swarm with cores to spare)",
    );
    assert.equal(
      cpuBoundNote(run(19.2), 2),
      "the CPUs were 96 % busy: its time measures the 2 CPUs more than the links",
      "no advice to use 2 nodes to a run of 2",
    );
    assert.equal(busyShare({ ...run(0), availableCpuSeconds: 0 }), 0, "no time, no share");
    assert.equal(cpuBoundNote({ ...run(0), availableCpuSeconds: 0 }, 6), undefined);
  });

  it("groups only processes that are running", () => {
    assert.deepEqual(runningPids([12, undefined, 7]), [12, 7]);
    assert.deepEqual(runningPids([undefined]), []);
  });

  it("reports no negative remainder when the groups add up to more than the machine counted", () => {
    const at = (ms: number, busy: number, agents: number): CpuSnapshot => ({
      atMs: ms,
      machine: { cpus: 1, busySeconds: busy, idleSeconds: 0 },
      groups: { agents },
    });
    // Per-process and machine counters tick separately: a few hundredths apart.
    assert.equal(machineFigures(at(0, 10, 0), at(1_000, 10.98, 1)).otherCpuSeconds, 0);
  });
});
