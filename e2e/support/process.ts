import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { access, mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { HarnessError } from "./errors.js";

/** SHOAL_E2E_DEBUG=1 prints daemon lifecycle and client command lines to stderr. */
export const DEBUG_ENV = "SHOAL_E2E_DEBUG";
/** SHOAL_E2E_KEEP=1 leaves harness temp dirs (configs, logs, data) in place for inspection. */
export const KEEP_ENV = "SHOAL_E2E_KEEP";

/** How much of a log a thrown error quotes. */
export const LOG_TAIL_BYTES = 4096;
/** SIGTERM grace period before SIGKILL. */
export const STOP_GRACE_MS = 5_000;
/** After SIGKILL the kernel reaps quickly; longer means something is badly wrong. */
const KILL_WAIT_MS = 5_000;
/** Client output kept in memory per stream; the tail is what matters for errors. */
const MAX_CAPTURED_BYTES = 1024 * 1024;

export function debugEnabled(): boolean {
  return isTruthy(process.env[DEBUG_ENV]);
}

export function debugLog(message: string): void {
  if (debugEnabled()) console.error(`[e2e-support] ${message}`);
}

function isTruthy(value: string | undefined): boolean {
  return value !== undefined && value !== "" && value !== "0" && value.toLowerCase() !== "false";
}

/** A fresh `shoal-<prefix>-XXXXXX` dir under `parentDir` (default the system temp dir). */
export async function makeTempDir(prefix: string, parentDir: string = tmpdir()): Promise<string> {
  return mkdtemp(join(parentDir, `shoal-${prefix}-`));
}

export const IP_BINARY = "ip";

/**
 * The command line that runs `command args` inside network namespace `netns` (`ip netns exec NS …`,
 * which execs in place: the PID stays the command's own), or unchanged when `netns` is undefined.
 */
export function inNetns(netns: string | undefined, command: string, args: readonly string[]): { command: string; args: string[] } {
  if (netns === undefined) return { command, args: [...args] };
  return { command: IP_BINARY, args: ["netns", "exec", netns, command, ...args] };
}

/** Removes a harness temp dir unless SHOAL_E2E_KEEP is set. */
export async function removeTempDir(dir: string): Promise<void> {
  if (isTruthy(process.env[KEEP_ENV])) {
    debugLog(`keeping ${dir}`);
    return;
  }
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Whether `path` exists: for checks that a harness left nothing behind. */
export async function pathExists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** The last `maxBytes` of a file, or a note that it cannot be read: for error messages. */
export async function readTail(file: string, maxBytes: number = LOG_TAIL_BYTES): Promise<string> {
  try {
    const handle = await open(file, "r");
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, maxBytes);
      const { buffer, bytesRead } = await handle.read(Buffer.alloc(length), 0, length, size - length);
      const text = buffer.subarray(0, bytesRead).toString("utf8");
      // Start at a line boundary: a cut-off first line only confuses the reader.
      return length < size && text.includes("\n") ? text.slice(text.indexOf("\n") + 1) : text;
    } finally {
      await handle.close();
    }
  } catch (cause) {
    return `(cannot read ${file}: ${describeError(cause)})`;
  }
}

/** Polls `check` until it returns true; throws ERR_HARNESS_TIMEOUT after `timeoutMs`. */
export async function waitUntil(
  check: () => Promise<boolean>,
  options: { readonly timeoutMs: number; readonly intervalMs?: number; readonly what: string; readonly signal?: AbortSignal },
): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    options.signal?.throwIfAborted();
    if (await check()) return;
    if (Date.now() >= deadline)
      throw new HarnessError("ERR_HARNESS_TIMEOUT", `timed out after ${options.timeoutMs} ms waiting for ${options.what}`);
    await delay(options.intervalMs ?? 50, undefined, { signal: options.signal });
  }
}

export interface SpawnDaemonOptions {
  /** For messages: "docker-registry", "containerd". */
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  /** The daemon writes straight into these files (no pipe through Node, so it never blocks on us). */
  readonly stdoutFile: string;
  readonly stderrFile: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
}

interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

// Daemons still running when this Node process exits (a crashed test, an uncaught error) are
// SIGKILLed by PID from an exit hook, so a failing run cannot leave registries holding ports.
const running = new Set<DaemonProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const daemon of running) {
      try {
        process.kill(daemon.pid, "SIGKILL");
      } catch {
        // Already gone: nothing to clean up.
      }
    }
  });
}

/** A long-running child process that this harness started and alone stops, by its PID. */
export class DaemonProcess {
  readonly exited: Promise<ExitStatus>;
  private status: ExitStatus | undefined;

  private constructor(
    readonly options: SpawnDaemonOptions,
    private readonly child: ChildProcess,
    readonly pid: number,
    exit: Promise<ExitStatus>,
  ) {
    this.exited = exit.then((status) => {
      this.status = status;
      running.delete(this);
      debugLog(`${options.name} pid ${pid} exited (code ${status.code}, signal ${status.signal})`);
      return status;
    });
  }

  static async spawn(options: SpawnDaemonOptions): Promise<DaemonProcess> {
    installExitHook();
    const stdout = openSync(options.stdoutFile, "a");
    const stderr = options.stderrFile === options.stdoutFile ? stdout : openSync(options.stderrFile, "a");
    let child: ChildProcess;
    let exit: Promise<ExitStatus>;
    try {
      child = spawn(options.command, [...options.args], {
        stdio: ["ignore", stdout, stderr],
        env: options.env ?? process.env,
        cwd: options.cwd,
      });
      // Listen before anything else can run, so an immediate exit is never missed.
      exit = new Promise<ExitStatus>((resolve) => {
        child.once("exit", (code, signal) => {
          resolve({ code, signal });
        });
      });
      // Resolves once the exec succeeded; rejects e.g. with ENOENT for a missing binary.
      await new Promise<void>((resolve, reject) => {
        child.once("spawn", resolve);
        child.once("error", reject);
      });
    } catch (cause) {
      throw new HarnessError("ERR_HARNESS_START", `cannot start ${options.name} (${options.command})`, { cause });
    } finally {
      // The child holds its own copies of the descriptors.
      closeSync(stdout);
      if (stderr !== stdout) closeSync(stderr);
    }
    if (child.pid === undefined) throw new HarnessError("ERR_HARNESS_START", `${options.name} has no pid`);
    // Later errors (a failed kill) must not crash the test process; stop() reports what matters.
    child.on("error", (cause) => {
      debugLog(`${options.name}: ${cause.message}`);
    });
    const daemon = new DaemonProcess(options, child, child.pid, exit);
    running.add(daemon);
    debugLog(`${options.name} pid ${child.pid}: ${options.command} ${options.args.join(" ")}`);
    return daemon;
  }

  get exitStatus(): ExitStatus | undefined {
    return this.status;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. Idempotent. */
  async stop(graceMs: number = STOP_GRACE_MS): Promise<void> {
    if (this.status !== undefined) return;
    this.child.kill("SIGTERM");
    if (await this.waitForExit(graceMs)) return;
    debugLog(`${this.options.name} pid ${this.pid} ignored SIGTERM for ${graceMs} ms; sending SIGKILL`);
    this.child.kill("SIGKILL");
    if (await this.waitForExit(KILL_WAIT_MS)) return;
    throw new HarnessError("ERR_HARNESS_STOP", `${this.options.name} pid ${this.pid} did not exit after SIGKILL`);
  }

  /** Tail of the daemon's log file(s), for error messages. */
  async logTail(maxBytes: number = LOG_TAIL_BYTES): Promise<string> {
    const { stdoutFile, stderrFile } = this.options;
    if (stdoutFile === stderrFile) return readTail(stderrFile, maxBytes);
    return `--- ${stderrFile}\n${await readTail(stderrFile, maxBytes)}\n--- ${stdoutFile}\n${await readTail(stdoutFile, maxBytes)}`;
  }

  private async waitForExit(timeoutMs: number): Promise<boolean> {
    const timeout = new AbortController();
    const timer = delay(timeoutMs, false, { signal: timeout.signal }).catch(() => false);
    const exited = await Promise.race([this.exited.then(() => true), timer]);
    timeout.abort();
    return exited;
  }
}

export interface RunCommandOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
}

export interface CommandResult {
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a client command to completion. Throws ERR_HARNESS_COMMAND, quoting the tail of its
 * output, on a non-zero exit, a spawn failure, the timeout or the caller's abort (the child is
 * SIGKILLed then).
 */
export async function runCommand(command: string, args: readonly string[], options: RunCommandOptions): Promise<CommandResult> {
  const signals = [AbortSignal.timeout(options.timeoutMs), ...(options.signal ? [options.signal] : [])];
  const signal = AbortSignal.any(signals);
  const line = `${command} ${args.join(" ")}`;
  debugLog(`run: ${line}`);
  const child = spawn(command, [...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: options.env ?? process.env,
    cwd: options.cwd,
    signal,
    killSignal: "SIGKILL",
  });
  const stdout = captureTail(child.stdout);
  const stderr = captureTail(child.stderr);
  const status = await new Promise<ExitStatus & { error?: unknown }>((resolve) => {
    let error: unknown;
    child.once("error", (cause) => {
      error = cause;
    });
    // 'close' comes after 'exit' and after both pipes ended, also after a spawn error.
    child.once("close", (code, killedBy) => {
      resolve({ code, signal: killedBy, error });
    });
  });
  const result = { stdout: stdout(), stderr: stderr() };
  if (status.code === 0 && status.error === undefined) return result;
  const reason = signal.aborted
    ? options.signal?.aborted === true
      ? "aborted"
      : `timed out after ${options.timeoutMs} ms`
    : status.error !== undefined
      ? `failed to run: ${describeError(status.error)}`
      : `exited with code ${status.code} (signal ${status.signal})`;
  const tail = (text: string): string => text.slice(-LOG_TAIL_BYTES).trimEnd();
  throw new HarnessError(
    "ERR_HARNESS_COMMAND",
    `${line}\n${reason}\n--- stderr\n${tail(result.stderr)}\n--- stdout\n${tail(result.stdout)}`,
    {
      cause: status.error,
    },
  );
}

function captureTail(stream: NodeJS.ReadableStream | null): () => string {
  let chunks: Buffer[] = [];
  let bytes = 0;
  stream?.on("data", (chunk: Buffer) => {
    chunks.push(chunk);
    bytes += chunk.length;
    if (bytes > 2 * MAX_CAPTURED_BYTES) {
      const kept = Buffer.concat(chunks).subarray(-MAX_CAPTURED_BYTES);
      chunks = [kept];
      bytes = kept.length;
    }
  });
  return () => Buffer.concat(chunks).toString("utf8");
}

export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : JSON.stringify(error);
}
