import { type Server, type Socket, connect, createServer } from "node:net";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";

/** Which way a cut connection stops carrying bytes. */
export type BlackholeDirection = "both" | "to-target";

/** One proxied connection: its two sockets and whether each way still forwards. */
interface Link {
  readonly sockets: readonly Socket[];
  toTarget: boolean;
  fromTarget: boolean;
}

/**
 * A TCP proxy on 127.0.0.1 in front of `target` whose connections can be cut without a word:
 * `blackhole()` keeps every open connection open and silently drops what is sent on it from then on
 * (both ways, or only towards the target), as a link cut and restored does to a connection the other
 * side has forgotten meanwhile, or a network that loses one direction. Nothing is closed, so neither
 * side learns of it but by its own timers. Connections made after it pass (the network is back).
 */
export class BlackholeProxy {
  private readonly links = new Set<Link>();
  private readonly server: Server;
  private accepted = 0;

  private constructor(target: string) {
    const separator = target.lastIndexOf(":");
    const upstream = { host: target.slice(0, separator), port: Number(target.slice(separator + 1)) };
    this.server = createServer((client) => {
      this.forward(client, connect(upstream));
    });
  }

  static async start(target: string): Promise<BlackholeProxy> {
    const proxy = new BlackholeProxy(target);
    await new Promise<void>((resolve, reject) => {
      proxy.server.once("error", reject);
      proxy.server.listen(0, "127.0.0.1", () => {
        resolve();
      });
    });
    return proxy;
  }

  /** host:port to dial instead of the target. */
  get address(): string {
    const bound = this.server.address();
    return bound !== null && typeof bound === "object" ? `127.0.0.1:${bound.port}` : "";
  }

  /** Connections accepted so far. */
  get connections(): number {
    return this.accepted;
  }

  /** Every connection open now carries nothing more `direction`; later ones are not affected. */
  blackhole(direction: BlackholeDirection = "both"): void {
    for (const link of this.links) {
      link.toTarget = false;
      if (direction === "both") link.fromTarget = false;
    }
  }

  /** Stops listening and destroys every connection. */
  async close(): Promise<void> {
    for (const link of this.links) for (const socket of link.sockets) socket.destroy();
    await new Promise<void>((resolve) => {
      this.server.close(() => {
        resolve();
      });
    });
  }

  private forward(client: Socket, upstream: Socket): void {
    this.accepted++;
    const link: Link = { sockets: [client, upstream], toTarget: true, fromTarget: true };
    this.links.add(link);
    const done = (): void => {
      client.destroy();
      upstream.destroy();
      this.links.delete(link);
    };
    for (const socket of link.sockets) socket.on("error", () => undefined);
    pipeline(
      client,
      gate(() => link.toTarget),
      upstream,
    ).then(done, done);
    pipeline(
      upstream,
      gate(() => link.fromTarget),
      client,
    ).then(done, done);
  }
}

/** Passes chunks while `open()`, drops them (read, never written) once it is not. */
function gate(open: () => boolean): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      callback(null, open() ? chunk : undefined);
    },
  });
}
