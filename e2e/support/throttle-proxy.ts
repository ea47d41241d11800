import { type Server, type Socket, createConnection, createServer } from "node:net";
import { pipeline } from "node:stream/promises";
import { TokenBucket, throttleStream } from "../../pkg/throttle/index.js";

/**
 * A TCP proxy on 127.0.0.1 that caps the bytes/s flowing from the target to the clients (all
 * connections together), e.g. to play a slow origin in front of docker-registry.
 */
export class ThrottleProxy {
  private constructor(
    private readonly server: Server,
    /** Every open connection, both sides, so close() ends them all. */
    private readonly sockets: Set<Socket>,
  ) {}

  static async start(target: { host: string; port: number }, bytesPerSecond: number): Promise<ThrottleProxy> {
    const bucket = new TokenBucket(bytesPerSecond);
    const sockets = new Set<Socket>();
    const server = createServer((client) => {
      const upstream = createConnection(target);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
        s.on("error", () => undefined);
      }
      const done = (): void => {
        client.destroy();
        upstream.destroy();
      };
      pipeline(client, upstream).catch(done);
      pipeline(upstream, throttleStream(bucket), client).catch(done);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        resolve();
      });
    });
    return new ThrottleProxy(server, sockets);
  }

  get host(): string {
    const address = this.server.address();
    return typeof address === "object" && address !== null ? `127.0.0.1:${address.port}` : "";
  }

  get url(): string {
    return `http://${this.host}`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => {
      this.server.close(() => {
        resolve();
      });
    });
  }
}
