// Last-resort teardown when the harness cannot run its normal async teardown: the process exits
// (an uncaught error, process.exit) or gets SIGINT/SIGTERM (Ctrl-C, the test runner's timeout).
// Everything here is synchronous, because an 'exit' handler cannot wait for promises.
import { readFileSync, rmSync } from "node:fs";
import { debugLog } from "../support/process.js";

export interface EmergencyCleanup {
  /** For the debug log. */
  readonly name: string;
  /** Synchronous; must not throw. Kills processes by PID, deletes namespaces, removes dirs. */
  readonly run: () => void;
}

const pending = new Set<EmergencyCleanup>();
let installed = false;

/** Exit code for a process ended by a signal, as shells report it. */
const SIGNAL_EXIT_CODES: Readonly<Record<string, number>> = { SIGINT: 130, SIGTERM: 143 };

function runAll(reason: string): void {
  for (const cleanup of [...pending]) {
    pending.delete(cleanup);
    debugLog(`netns: emergency cleanup of ${cleanup.name} (${reason})`);
    try {
      cleanup.run();
    } catch {
      // run() promises not to throw; if it does, the remaining cleanups must still run.
    }
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on("exit", () => {
    runAll("exit");
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      runAll(signal);
      // Our handler replaced Node's default, which would have ended the process.
      process.exit(SIGNAL_EXIT_CODES[signal] ?? 1);
    });
  }
}

/** Registers `cleanup` until the returned function is called (after a normal teardown). */
export function registerEmergencyCleanup(cleanup: EmergencyCleanup): () => void {
  install();
  pending.add(cleanup);
  return () => pending.delete(cleanup);
}

/** SIGKILLs a process by PID; one already gone is fine. */
export function killSync(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

/** How long an exiting harness waits for SIGKILLed processes to be gone before removing their files. */
const KILL_WAIT_MS = 3_000;
const KILL_POLL_MS = 20;

/** Running (not yet dead or zombie) according to /proc/PID/stat. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/**
 * SIGKILLs processes by PID and waits (bounded) until none runs any more, so none is still writing
 * into a directory about to be removed. Zombies count as gone: this process may never reap them.
 */
export function killAndWaitSync(pids: readonly number[]): void {
  for (const pid of pids) killSync(pid);
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + KILL_WAIT_MS;
  while (pids.some(running) && Date.now() < deadline) Atomics.wait(sleeper, 0, 0, KILL_POLL_MS);
}

export function removeDirSync(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
  } catch {
    // Best effort while exiting.
  }
}
