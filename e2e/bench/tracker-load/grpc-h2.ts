// A minimal gRPC client on node:http2 for the load generator: pre-encoded messages, one HTTP/2
// connection per simulated agent from its own loopback address (its "pod IP"), no per-call channel
// machinery. What the controller sees is what real agents send: one connection, one Session stream,
// unary Lookups on the same connection.
import { type ClientHttp2Session, type ClientHttp2Stream, connect } from "node:http2";
import { connect as tcpConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";

/** An agent's certificate (PEM) and the trust bundle, for a tracker that speaks mutual TLS. */
export interface AgentTls {
  readonly keyPem: string;
  readonly certificatePem: string;
  readonly caPem: string;
}
/** The TLS server name agents send (as the agent's tracker client does); the certificate is checked by role. */
const TLS_SERVER_NAME = "shoal-controller";

const SERVICE = "/tracker.v1.TrackerService";
/** The gRPC length-prefixed message header: a compression flag and a 4-byte big-endian length. */
const HEADER_BYTES = 5;

export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_BYTES + message.length);
  frame[0] = 0;
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, HEADER_BYTES);
  return frame;
}

/** The messages of a gRPC response body (whole frames only). */
export function grpcMessages(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at + HEADER_BYTES <= body.length;) {
    const length = body.readUInt32BE(at + 1);
    out.push(body.subarray(at + HEADER_BYTES, at + HEADER_BYTES + length));
    at += HEADER_BYTES + length;
  }
  return out;
}

export interface UnaryResult {
  /** grpc-status (0 = OK); -1 when the call failed below gRPC. */
  readonly status: number;
  readonly body: Buffer | undefined;
  readonly bytes: number;
}

export class AgentConnection {
  private session: ClientHttp2Session | undefined;
  private sessionStream: ClientHttp2Stream | undefined;
  /** The Session stream's buffer is full: messages are skipped until it drains (as the agent does). */
  blocked = false;
  /** The first Session response (`registered`), as received. */
  registered: Buffer | undefined;
  private ended = false;
  private readonly endWaiters: (() => void)[] = [];

  constructor(
    private readonly port: number,
    private readonly localAddress: string,
    private readonly tls?: AgentTls,
  ) {}

  /** Connects, opens the Session stream, sends `register` and resolves at `registered`. */
  async open(register: Buffer, signal: AbortSignal): Promise<void> {
    const tls = this.tls;
    const session = connect(`${tls === undefined ? "http" : "https"}://127.0.0.1:${this.port}`, {
      createConnection: () =>
        tls === undefined
          ? tcpConnect({ host: "127.0.0.1", port: this.port, localAddress: this.localAddress })
          : tlsConnect({
              // TLS over a socket from the agent's own address (tls.connect has no localAddress).
              socket: tcpConnect({ host: "127.0.0.1", port: this.port, localAddress: this.localAddress }),
              key: tls.keyPem,
              cert: tls.certificatePem,
              ca: tls.caPem,
              servername: TLS_SERVER_NAME,
              ALPNProtocols: ["h2"],
              // The bench trusts its own CA; which controller answers is not what it measures.
              checkServerIdentity: () => undefined,
            }),
    });
    this.session = session;
    session.on("error", () => undefined);
    const stream = session.request(
      { ":method": "POST", ":path": `${SERVICE}/Session`, "content-type": "application/grpc", te: "trailers" },
      { endStream: false },
    );
    this.sessionStream = stream;
    stream.on("error", () => undefined);
    stream.on("drain", () => {
      this.blocked = false;
    });
    const markEnded = (): void => {
      if (this.ended) return;
      this.ended = true;
      for (const waiter of this.endWaiters.splice(0)) waiter();
    };
    stream.on("close", markEnded);
    session.on("close", markEnded);
    await new Promise<void>((resolve, reject) => {
      const fail = (reason: string): void => {
        cleanup();
        reject(new Error(`session from ${this.localAddress}: ${reason}`));
      };
      const onData = (chunk: Buffer): void => {
        this.registered = chunk;
        cleanup();
        resolve();
      };
      const onClose = (): void => {
        fail(`closed before registered (rst ${stream.rstCode})`);
      };
      const onTrailers = (headers: Record<string, string | string[] | undefined>): void => {
        fail(`ended: grpc-status ${String(headers["grpc-status"])} ${String(headers["grpc-message"] ?? "")}`);
      };
      const onAbort = (): void => {
        fail("aborted");
      };
      const cleanup = (): void => {
        stream.off("data", onData);
        stream.off("close", onClose);
        stream.off("trailers", onTrailers);
        signal.removeEventListener("abort", onAbort);
      };
      stream.on("data", onData);
      stream.on("close", onClose);
      stream.on("trailers", onTrailers);
      signal.addEventListener("abort", onAbort, { once: true });
      stream.write(register);
    });
    // Later session responses (none today) are read and dropped so the window stays open.
    stream.on("data", () => undefined);
  }

  /** Whether the session stream has ended (the tracker went away or ended it). */
  get sessionEnded(): boolean {
    return this.ended;
  }

  /** Resolves when the session stream ends (at once if it has). */
  whenEnded(): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise<void>((resolve) => this.endWaiters.push(resolve));
  }

  /**
   * Writes a framed session message, waiting (at most `timeoutMs`) for the stream to drain first when it
   * is backed up, as the agent's client does. False when the session ended or the wait ran out.
   */
  async write(frame: Buffer, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.blocked && !this.ended && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    const stream = this.sessionStream;
    if (stream === undefined || this.ended || this.blocked || stream.destroyed) return false;
    if (!stream.write(frame)) this.blocked = true;
    return true;
  }

  /** Drops the connection at once (no clean end): for connections whose tracker is gone. */
  destroy(): void {
    this.session?.destroy();
  }

  /** Writes a framed session message; false when skipped because the stream is backed up. */
  send(frame: Buffer): boolean {
    const stream = this.sessionStream;
    if (stream === undefined || this.blocked || stream.destroyed) return false;
    if (!stream.write(frame)) this.blocked = true;
    return true;
  }

  /** A unary call with a framed request; resolves with the status and (if `keepBody`) the body. */
  unary(method: string, frame: Buffer, keepBody: boolean, timeoutMs: number): Promise<UnaryResult> {
    const session = this.session;
    if (session === undefined || session.destroyed) return Promise.resolve({ status: -1, body: undefined, bytes: 0 });
    return new Promise<UnaryResult>((resolve) => {
      const stream = session.request({
        ":method": "POST",
        ":path": `${SERVICE}/${method}`,
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-timeout": `${timeoutMs}m`,
      });
      const chunks: Buffer[] = [];
      let bytes = 0;
      let status = -1;
      stream.on("response", (headers) => {
        // A trailers-only response carries the status in the headers.
        if (headers["grpc-status"] !== undefined) status = Number(headers["grpc-status"]);
      });
      stream.on("data", (chunk: Buffer) => {
        bytes += chunk.length;
        if (keepBody) chunks.push(chunk);
      });
      stream.on("trailers", (headers: Record<string, string | string[] | undefined>) => {
        status = Number(headers["grpc-status"] ?? -1);
      });
      stream.on("error", () => undefined);
      stream.on("close", () => {
        resolve({ status, body: keepBody ? Buffer.concat(chunks) : undefined, bytes });
      });
      stream.end(frame);
    });
  }

  /** Ends the session stream cleanly and closes the connection. */
  async close(): Promise<void> {
    const session = this.session;
    if (session === undefined) return;
    this.sessionStream?.end();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        session.destroy();
        resolve();
      }, 2_000);
      session.close(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
