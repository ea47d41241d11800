// Where the machine's CPU went during a measured round (`npm run bench`, `npm start`): the whole machine
// from /proc/stat, and the long-lived processes the harness started, by PID. The remainder is everything
// else that ran: short-lived clients (the bench's `ctr`), the kernel's network work outside those
// processes, and anything else on the host.
import { readFile } from "node:fs/promises";
import { procStatsIfAvailable } from "./proc-stats.js";

/** /proc/stat counts in USER_HZ, 100 on every Linux architecture Node runs on. */
const TICKS_PER_SECOND = 100;

/** The machine's CPU time so far, in seconds summed over every CPU. */
export interface MachineCpu {
  readonly cpus: number;
  readonly busySeconds: number;
  readonly idleSeconds: number;
}

/**
 * Parses /proc/stat: the aggregate `cpu` line (user nice system idle iowait irq softirq steal …) and one
 * `cpuN` line per CPU. Busy is everything but idle and iowait; guest time is already part of user.
 */
export function parseProcStat(text: string): MachineCpu {
  const lines = text.split("\n");
  const total = lines.find((line) => /^cpu\s/.test(line));
  if (total === undefined) throw new Error("/proc/stat has no aggregate cpu line");
  const fields = total.trim().split(/\s+/).slice(1, 9).map(Number);
  if (fields.length < 5 || fields.some((n) => !Number.isFinite(n)))
    throw new Error(`/proc/stat: unreadable cpu line ${JSON.stringify(total)}`);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = fields;
  const cpus = lines.filter((line) => /^cpu\d+\s/.test(line)).length;
  return {
    cpus: Math.max(1, cpus),
    busySeconds: (user + nice + system + irq + softirq + steal) / TICKS_PER_SECOND,
    idleSeconds: (idle + iowait) / TICKS_PER_SECOND,
  };
}

export async function readMachineCpu(): Promise<MachineCpu> {
  return parseProcStat(await readFile("/proc/stat", "utf8"));
}

/** cpuSnapshot, or undefined where /proc/stat cannot be read (not Linux). */
export async function cpuSnapshotIfAvailable(groups: ProcessGroups): Promise<CpuSnapshot | undefined> {
  try {
    return await cpuSnapshot(groups);
  } catch {
    return undefined;
  }
}

/** Processes by what they are, e.g. { agents: [pids], containerd: [pids] }. */
export type ProcessGroups = Readonly<Record<string, readonly number[]>>;

/** The PIDs of processes that are running (a handle's pid is undefined once its process exited). */
export function runningPids(pids: readonly (number | undefined)[]): number[] {
  return pids.filter((pid): pid is number => pid !== undefined);
}

export interface CpuSnapshot {
  readonly atMs: number;
  readonly machine: MachineCpu;
  /** CPU-seconds per group; a process that is gone counts 0. */
  readonly groups: Readonly<Record<string, number>>;
}

export async function cpuSnapshot(groups: ProcessGroups): Promise<CpuSnapshot> {
  const totals: Record<string, number> = {};
  for (const [name, pids] of Object.entries(groups)) {
    let seconds = 0;
    for (const pid of pids) seconds += (await procStatsIfAvailable(pid))?.cpuSeconds ?? 0;
    totals[name] = seconds;
  }
  return { atMs: performance.now(), machine: await readMachineCpu(), groups: totals };
}

/** The machine's CPU between two snapshots. */
export interface MachineFigures {
  readonly cpus: number;
  readonly seconds: number;
  /** cpus × seconds. */
  readonly availableCpuSeconds: number;
  readonly busyCpuSeconds: number;
  /** CPU-seconds per group of processes the harness started. */
  readonly groups: Readonly<Record<string, number>>;
  /** busy minus the groups: short-lived clients, the kernel's network work outside those processes, the rest of the host. */
  readonly otherCpuSeconds: number;
}

export function machineFigures(before: CpuSnapshot, after: CpuSnapshot): MachineFigures {
  const seconds = (after.atMs - before.atMs) / 1000;
  const busy = after.machine.busySeconds - before.machine.busySeconds;
  const groups: Record<string, number> = {};
  let known = 0;
  for (const [name, total] of Object.entries(after.groups)) {
    // A process that exited in between reads 0 after: count nothing for it rather than a negative.
    const spent = Math.max(0, total - (before.groups[name] ?? 0));
    groups[name] = round(spent);
    known += spent;
  }
  return {
    cpus: after.machine.cpus,
    seconds: round(seconds),
    availableCpuSeconds: round(after.machine.cpus * seconds),
    busyCpuSeconds: round(busy),
    groups,
    otherCpuSeconds: round(Math.max(0, busy - known)),
  };
}

/**
 * From this share of the machine busy over a run, the run's time says more about the CPUs than about the
 * links: on the 2-core benchmark VM the default swarms kept it 95–99 % busy, and with 2 nodes 51–86 %
 * (docs/benchmarks.md, "December 5 (sixth session)").
 */
export const CPU_BOUND_BUSY_SHARE = 0.9;

/** The share (0–1) of what the machine's cores allowed that was busy. */
export function busyShare(figures: MachineFigures): number {
  return figures.availableCpuSeconds > 0 ? figures.busyCpuSeconds / figures.availableCpuSeconds : 0;
}

/**
 * For a run of `nodes` nodes that kept the machine at least CPU_BOUND_BUSY_SHARE busy: a sentence saying
 * that its time measures the CPUs more than the links, and, for more than 2 nodes, how to see the swarm
 * without that. Undefined for a run with cores to spare.
 */
export function cpuBoundNote(figures: MachineFigures, nodes: number): string | undefined {
  const share = busyShare(figures);
  if (share < CPU_BOUND_BUSY_SHARE) return undefined;
  const fewer = nodes > 2 ? " (--nodes 2 shows the swarm with cores to spare)" : "";
  return `the CPUs were ${(100 * share).toFixed(0)} % busy: its time measures the ${figures.cpus} CPUs more than the links${fewer}`;
}

/** "busy 81.6 of 85.2 CPU-s (96 %): agents 39.1, containerd 30.2, other 9.8", groups in the given order. */
export function formatMachineFigures(figures: MachineFigures): string {
  const percent = 100 * busyShare(figures);
  const parts = Object.entries(figures.groups).map(([name, seconds]) => `${name} ${seconds.toFixed(1)}`);
  parts.push(`other ${figures.otherCpuSeconds.toFixed(1)}`);
  return `${figures.busyCpuSeconds.toFixed(1)} of ${figures.availableCpuSeconds.toFixed(1)} CPU-s busy (${percent.toFixed(0)} %; ${figures.cpus} CPUs × ${figures.seconds.toFixed(1)} s): ${parts.join(", ")}`;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
