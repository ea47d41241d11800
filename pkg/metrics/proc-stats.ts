import { readFile } from "node:fs/promises";

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ; 100 on Linux). */
const CLOCK_TICKS_PER_SECOND = 100;

export interface ProcStats {
  /** Resident set size now, bytes. */
  readonly rssBytes: number;
  /** Peak resident set size (VmHWM), bytes. */
  readonly peakRssBytes: number;
  /** User + system CPU time, seconds. */
  readonly cpuSeconds: number;
}

/** Reads a process's memory and CPU figures from /proc (Linux only: elsewhere it rejects). */
export async function procStats(pid: number): Promise<ProcStats> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuTicks = Number(fields[11]) + Number(fields[12]);
  return { rssBytes: kib("VmRSS"), peakRssBytes: kib("VmHWM"), cpuSeconds: cpuTicks / CLOCK_TICKS_PER_SECOND };
}

/** procStats, or undefined where /proc is not there (not Linux) or the process is gone. */
export async function procStatsIfAvailable(pid: number | undefined): Promise<ProcStats | undefined> {
  if (pid === undefined) return undefined;
  try {
    return await procStats(pid);
  } catch {
    return undefined;
  }
}
