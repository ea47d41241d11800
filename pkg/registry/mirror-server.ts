import { type Server, createServer } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Logger } from "pino";
import type { Mirror } from "./mirror.js";
import { rawOciError } from "./oci-errors.js";

/** Request headers larger than this are refused with 431 (containerd's are well under 4 KiB). */
export const MAX_HEADER_BYTES = 16 * 1024;
/** A client must send its request headers within this time (slowloris guard). */
export const DEFAULT_REQUEST_HEADERS_TIMEOUT_MS = 10_000;
/** How often Node checks connections for that timeout (its default, 30 s, would let one linger that long). */
const CONNECTIONS_CHECK_INTERVAL_MS = 1_000;
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

export interface MirrorServerOptions {
  readonly host: string;
  readonly port: number;
  readonly mirror: Mirror;
  readonly logger: Logger;
  readonly headersTimeoutMs?: number;
}

/** The HTTP listener in front of a Mirror. */
export class MirrorServer {
  private constructor(private readonly server: Server) {}

  static async start(options: MirrorServerOptions): Promise<MirrorServer> {
    const headersTimeoutMs = options.headersTimeoutMs ?? DEFAULT_REQUEST_HEADERS_TIMEOUT_MS;
    const server = createServer(
      {
        maxHeaderSize: MAX_HEADER_BYTES,
        headersTimeout: headersTimeoutMs,
        requestTimeout: 0,
        keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
        connectionsCheckingInterval: Math.min(CONNECTIONS_CHECK_INTERVAL_MS, headersTimeoutMs),
      },
      options.mirror.handle,
    );
    server.on("clientError", (error: NodeJS.ErrnoException, socket: Socket) => {
      // Errors before a request was parsed (oversized or malformed headers) still get an OCI error body.
      if (socket.writable && !socket.destroyed) {
        const tooLarge = error.code === "HPE_HEADER_OVERFLOW";
        // Node reports a headersTimeout as ERR_HTTP_REQUEST_TIMEOUT: a slow client, not a malformed one.
        const timedOut = error.code === "ERR_HTTP_REQUEST_TIMEOUT";
        socket.end(
          tooLarge
            ? rawOciError(431, "Request Header Fields Too Large", "UNSUPPORTED", `request headers exceed ${MAX_HEADER_BYTES} bytes`)
            : timedOut
              ? rawOciError(408, "Request Timeout", "UNSUPPORTED", `request headers did not arrive within ${headersTimeoutMs} ms`)
              : rawOciError(400, "Bad Request", "UNSUPPORTED", "malformed HTTP request"),
        );
      } else {
        socket.destroy();
      }
      options.logger.debug({ err: error }, "bad client request");
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port, options.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    return new MirrorServer(server);
  }

  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** Stops accepting, lets running responses finish for up to `graceMs`, then cuts the rest. */
  async close(graceMs = 0): Promise<void> {
    const closed = new Promise<void>((resolve) => {
      this.server.close(() => {
        resolve();
      });
    });
    this.server.closeIdleConnections();
    const timer = setTimeout(() => {
      this.server.closeAllConnections();
    }, graceMs);
    await closed;
    clearTimeout(timer);
  }
}
