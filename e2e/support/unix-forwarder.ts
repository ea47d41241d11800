// A TCP listener that pipes every connection to a Unix socket: how a process inside a network namespace
// reaches a server of the test process (the Kubernetes API double), since a socket file is reachable from
// every network namespace and 127.0.0.1 is not. Run as a script inside the namespace; stopped by PID.
import { readFile } from "node:fs/promises";
import { type Socket, connect, createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { HarnessError } from "./errors.js";
import { DaemonProcess, inNetns, makeTempDir, removeTempDir, waitUntil } from "./process.js";

const SCRIPT = fileURLToPath(import.meta.url);
const START_TIMEOUT_MS = 10_000;
/** Printed once listening: what start() waits for. */
const READY_LINE = "unix-forwarder listening";

export interface UnixForwarderOptions {
  /** Run inside this network namespace. */
  readonly netns?: string;
  readonly host: string;
  readonly port: number;
  readonly socketPath: string;
  readonly parentDir?: string;
}

/** The forwarder as a child process (`ip netns exec NS node unix-forwarder.js …`). */
export class UnixForwarder {
  private constructor(
    readonly daemon: DaemonProcess,
    private readonly logDir: string,
    /** http://HOST:PORT as seen from inside the namespace. */
    readonly url: string,
  ) {}

  static async start(options: UnixForwarderOptions): Promise<UnixForwarder> {
    const logDir = await makeTempDir("unix-forwarder", options.parentDir);
    const logFile = join(logDir, "forwarder.log");
    const daemon = await DaemonProcess.spawn({
      name: "unix-forwarder",
      ...inNetns(options.netns, process.execPath, [SCRIPT, `${options.host}:${options.port}`, options.socketPath]),
      stdoutFile: logFile,
      stderrFile: logFile,
    });
    try {
      await waitUntil(
        async () => {
          const log = await readFile(logFile, "utf8");
          if (daemon.exitStatus !== undefined) throw new HarnessError("ERR_HARNESS_START", `unix forwarder exited: ${log}`);
          return log.includes(READY_LINE);
        },
        { timeoutMs: START_TIMEOUT_MS, what: "unix forwarder start" },
      );
    } catch (error) {
      await daemon.stop();
      await removeTempDir(logDir);
      throw error;
    }
    return new UnixForwarder(daemon, logDir, `http://${options.host}:${options.port}`);
  }

  async stop(): Promise<void> {
    await this.daemon.stop();
    await removeTempDir(this.logDir);
  }
}

function pipe(client: Socket, socketPath: string): void {
  const upstream = connect(socketPath);
  client.pipe(upstream).pipe(client);
  const close = (): void => {
    client.destroy();
    upstream.destroy();
  };
  client.on("error", close);
  upstream.on("error", close);
  client.on("close", close);
  upstream.on("close", close);
}

if (import.meta.main) {
  const [listen = "", socketPath = ""] = process.argv.slice(2);
  const colon = listen.lastIndexOf(":");
  if (colon < 0 || socketPath === "") {
    console.error("usage: unix-forwarder HOST:PORT SOCKET_PATH");
    process.exit(2);
  }
  const server = createServer((client) => {
    pipe(client, socketPath);
  });
  server.listen(Number(listen.slice(colon + 1)), listen.slice(0, colon), () => {
    console.log(READY_LINE);
  });
  process.on("SIGTERM", () => {
    server.close();
    process.exit(0);
  });
}
