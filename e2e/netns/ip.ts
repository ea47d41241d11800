// iproute2 and sysfs, driven from the root namespace. Every helper names the namespace it acts in;
// nothing here creates an interface, address or qdisc in the root namespace.
import { execFileSync } from "node:child_process";
import { HarnessError } from "../support/errors.js";
import { IP_BINARY, runCommand } from "../support/process.js";

/** iproute2 answers in milliseconds; a hung `ip` means the kernel or the machine is in trouble. */
export const IP_TIMEOUT_MS = 15_000;
/** tc tbf needs a bucket of at least this much to shape within a few % of the set rate. */
export const TBF_MIN_BURST_BYTES = 256 * 1024;
/** …and a larger one at high rates, so a timer tick of tokens always fits: 5 ms of traffic. */
const TBF_BURST_SECONDS = 0.005;
/** Queue a packet may wait in tbf before it is dropped; TCP adapts to drops. */
export const TBF_LATENCY_MS = 50;

export type InterfaceCounter = "tx_bytes" | "rx_bytes" | "tx_packets" | "rx_packets";

export async function ip(args: readonly string[], signal?: AbortSignal): Promise<string> {
  return (await runCommand(IP_BINARY, args, { timeoutMs: IP_TIMEOUT_MS, signal })).stdout;
}

/** Names of every network namespace (`ip netns list` prints `NAME (id: N)` or `NAME`). */
export async function listNetns(signal?: AbortSignal): Promise<string[]> {
  return parseNetnsList(await ip(["netns", "list"], signal));
}

export function parseNetnsList(output: string): string[] {
  return output
    .split("\n")
    .map((line) => line.trim().split(/\s+/)[0] ?? "")
    .filter((name) => name !== "");
}

export async function addNetns(name: string, signal?: AbortSignal): Promise<void> {
  await ip(["netns", "add", name], signal);
  // Loopback is down in a fresh namespace; daemons that talk to themselves need it.
  await ip(["-n", name, "link", "set", "lo", "up"], signal);
}

/** Deletes a namespace; one that is already gone is fine. Its processes must be stopped first. */
export async function deleteNetns(name: string, signal?: AbortSignal): Promise<void> {
  try {
    await ip(["netns", "del", name], signal);
  } catch (error) {
    if ((await listNetns(signal)).includes(name)) throw error;
  }
}

/** For exit and signal handlers, which cannot wait for promises. Never throws. */
export function deleteNetnsSync(name: string): void {
  try {
    execFileSync(IP_BINARY, ["netns", "del", name], { stdio: "ignore", timeout: IP_TIMEOUT_MS });
  } catch {
    // Already gone, or nothing more can be done while the process exits.
  }
}

/** PIDs of the processes whose network namespace is `name`. */
export async function netnsPids(name: string, signal?: AbortSignal): Promise<number[]> {
  return (await ip(["netns", "pids", name], signal))
    .split("\n")
    .map((line) => Number(line.trim()))
    .filter((pid) => Number.isInteger(pid) && pid > 0);
}

/** A kernel interface counter, read inside the namespace from /sys/class/net/IF/statistics. */
export async function readCounter(netns: string, ifname: string, counter: InterfaceCounter, signal?: AbortSignal): Promise<number> {
  const { stdout } = await runCommand(IP_BINARY, ["netns", "exec", netns, "cat", `/sys/class/net/${ifname}/statistics/${counter}`], {
    timeoutMs: IP_TIMEOUT_MS,
    signal,
  });
  const value = Number(stdout.trim());
  if (!Number.isSafeInteger(value))
    throw new HarnessError("ERR_HARNESS_COMMAND", `${counter} of ${ifname} in ${netns} is not a number: ${JSON.stringify(stdout)}`);
  return value;
}

/** Token bucket burst for a rate: never under TBF_MIN_BURST_BYTES. */
export function tbfBurstBytes(bytesPerSecond: number): number {
  return Math.max(TBF_MIN_BURST_BYTES, Math.ceil(bytesPerSecond * TBF_BURST_SECONDS));
}

/** Caps the egress of `dev` in `netns` at `bytesPerSecond` with a tbf root qdisc. */
export async function shapeEgress(netns: string, dev: string, bytesPerSecond: number, signal?: AbortSignal): Promise<void> {
  if (!(bytesPerSecond > 0))
    throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `rate for ${dev} in ${netns} must be > 0, got ${bytesPerSecond}`);
  const bits = Math.round(bytesPerSecond * 8);
  await runCommand(
    "tc",
    [
      "-n",
      netns,
      "qdisc",
      "replace",
      "dev",
      dev,
      "root",
      "tbf",
      "rate",
      `${bits}bit`,
      "burst",
      `${tbfBurstBytes(bytesPerSecond)}b`,
      "latency",
      `${TBF_LATENCY_MS}ms`,
    ],
    { timeoutMs: IP_TIMEOUT_MS, signal },
  );
}

/** Whether a process exists (signal 0); EPERM means it exists but is not ours. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
