import { type ChildProcess, spawn } from "node:child_process";
import { type WriteStream, createWriteStream } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { SHOAL_NODE_FLAGS, shoalNodeEnv } from "../../pkg/config/index.js";

/** The CLI these children run: the same build as the demo itself. */
const SHOAL_MAIN = fileURLToPath(new URL("../shoal/main.js", import.meta.url));
/** SIGTERM first so agents flush their stores; past this, SIGKILL. */
const STOP_GRACE_MS = 3_000;
/** After SIGKILL the kernel reaps at once; this only guards against waiting forever. */
const KILL_WAIT_MS = 2_000;
/** Log lines kept in memory to explain a failure. */
const LOG_TAIL_LINES = 20;

export interface ShoalProcessOptions {
  /** `agent` or `controller`. */
  readonly command: string;
  readonly args: readonly string[];
  /** The log message (pino `msg`) that says the process is up, e.g. "agent started". */
  readonly readyMessage: string;
  readonly readyTimeoutMs: number;
  /** Where stdout and stderr are copied. */
  readonly logFile: string;
  readonly name: string;
  readonly signal: AbortSignal;
}

/** Children not yet exited: if the demo itself dies (a crash, an uncaught error), they die with it. */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;

function killWithParent(child: ChildProcess): void {
  liveChildren.add(child);
  child.once("exit", () => liveChildren.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' runs synchronously even after an uncaught exception; kill() is a synchronous syscall.
  process.on("exit", () => {
    for (const c of liveChildren) c.kill("SIGKILL");
  });
}

/**
 * A `shoal agent|controller` child process. It reports its bound addresses in its JSON start log line;
 * it is stopped by its own PID, never by name.
 */
export class ShoalProcess {
  private readonly tail: string[] = [];
  private readonly exited: Promise<void>;
  /** "code 1" or "signal SIGKILL" once the process has exited. */
  private exitStatus: string | undefined;

  private constructor(
    readonly name: string,
    private readonly child: ChildProcess,
    private readonly log: WriteStream,
  ) {
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.exitStatus = code !== null ? `code ${code}` : `signal ${signal ?? "unknown"}`;
        resolve();
      });
      child.once("error", (error) => {
        this.exitStatus = `spawn error ${error.message}`;
        resolve();
      });
    });
    // The copy on disk is a convenience for reading afterwards; a full disk must not crash the demo.
    log.on("error", () => undefined);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** "code 1", "signal SIGKILL"… once the process has exited; undefined while it runs. */
  get exit(): string | undefined {
    return this.exitStatus;
  }

  /** Starts the process and resolves with the fields of its ready log line. */
  static async start(options: ShoalProcessOptions): Promise<{ process: ShoalProcess; ready: Record<string, unknown> }> {
    options.signal.throwIfAborted();
    const log = createWriteStream(options.logFile, { flags: "a" });
    const child = spawn(process.execPath, [...SHOAL_NODE_FLAGS, SHOAL_MAIN, options.command, ...options.args], {
      stdio: ["ignore", "pipe", "pipe"],
      // The user's SHOAL_* settings (say, for their real agent) must not leak into the demo's nodes.
      env: {
        ...Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("SHOAL_"))),
        ...shoalNodeEnv(options.command),
      },
    });
    killWithParent(child);
    const shoal = new ShoalProcess(options.name, child, log);
    try {
      const ready = await shoal.waitReady(options);
      return { process: shoal, ready };
    } catch (error) {
      await shoal.stop();
      throw error;
    }
  }

  /** The last log lines, for error messages. */
  logTail(): string {
    return this.tail.join("\n");
  }

  /** SIGTERM, then SIGKILL after a grace period; resolves once the process has exited. */
  async stop(): Promise<void> {
    if (this.exitStatus === undefined && this.child.pid !== undefined) {
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), STOP_GRACE_MS);
      await this.exited;
      clearTimeout(timer);
    }
    await Promise.race([this.exited, new Promise((resolve) => setTimeout(resolve, KILL_WAIT_MS).unref())]);
    await new Promise<void>((resolve) => {
      this.log.end(resolve);
    });
  }

  private waitReady(options: ShoalProcessOptions): Promise<Record<string, unknown>> {
    const { child } = this;
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (error: Error | undefined, fields?: Record<string, unknown>): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        options.signal.removeEventListener("abort", onAbort);
        if (error) reject(error);
        else resolve(fields ?? {});
      };
      const timer = setTimeout(() => {
        settle(new Error(`${this.name} did not start within ${options.readyTimeoutMs} ms\n${this.logTail()}`));
      }, options.readyTimeoutMs);
      const onAbort = (): void => {
        settle(options.signal.reason instanceof Error ? options.signal.reason : new Error("aborted"));
      };
      options.signal.addEventListener("abort", onAbort, { once: true });
      const onLine = (line: string): void => {
        if (!this.log.writableEnded) this.log.write(`${line}\n`);
        this.tail.push(line);
        if (this.tail.length > LOG_TAIL_LINES) this.tail.shift();
        const fields = parseLogLine(line);
        if (fields?.msg === options.readyMessage) settle(undefined, fields);
      };
      // Both streams are read to the end, so a chatty child never blocks on a full pipe.
      if (child.stdout) createInterface({ input: child.stdout }).on("line", onLine);
      if (child.stderr) createInterface({ input: child.stderr }).on("line", onLine);
      void this.exited.then(() => {
        settle(new Error(`${this.name} exited (${this.exitStatus ?? "unknown"}) before it started\n${this.logTail()}`));
      });
    });
  }
}

function parseLogLine(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const parsed: unknown = JSON.parse(line);
    return typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined; // not a log line (e.g. a stack trace on stderr): kept in the tail only
  }
}
