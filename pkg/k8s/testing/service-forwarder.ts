import { type Server, type Socket, connect, createServer } from "node:net";

export interface ServiceBackend {
  /** host:port of the replica's tracker. */
  readonly target: string;
  /** Its readiness endpoint (`http://…/readyz`). */
  readonly readyUrl: string;
}

export interface ServiceForwarderOptions {
  /** The replicas behind the Service; asked again on every probe, so replicas may come and go. */
  readonly backends: () => readonly ServiceBackend[];
  /** How often readiness is probed (a kubelet probe period plus endpoint propagation, shortened). */
  readonly probeIntervalMs?: number;
}

/**
 * A readiness-aware TCP forwarder standing in for a ClusterIP Service: new connections go to a replica
 * whose /readyz answered 200 at the last probe (round robin), and fail at once when there is none, as
 * a Service without ready endpoints does. Established connections are left alone when readiness
 * changes, as kube-proxy leaves them. The client's source address is kept, as kube-proxy keeps it: each
 * client gets its own listening endpoint (endpointFor) and its connections are re-originated from that
 * address, so a tracker behind it sees the "pod IP".
 */
export class ServiceForwarder {
  private readonly listeners = new Set<Server>();
  private readonly sockets = new Set<Socket>();
  private readonly timer: NodeJS.Timeout;
  private ready: ServiceBackend[] = [];
  private next = 0;
  private probing = false;
  private closed = false;

  private constructor(private readonly options: ServiceForwarderOptions) {
    this.timer = setInterval(() => {
      void this.probe();
    }, options.probeIntervalMs ?? 100);
  }

  static async start(options: ServiceForwarderOptions): Promise<ServiceForwarder> {
    const forwarder = new ServiceForwarder(options);
    await forwarder.probe();
    return forwarder;
  }

  /** Targets that were ready at the last probe. */
  get readyTargets(): string[] {
    return this.ready.map((b) => b.target);
  }

  /** host:port a client at `sourceAddress` dials; its connections reach the replica from `sourceAddress`. */
  async endpointFor(sourceAddress: string): Promise<string> {
    return await this.listen((client) => {
      this.forward(client, sourceAddress);
    });
  }

  /**
   * The pod network rather than the Service: host:port on which a client at `sourceAddress` reaches
   * `target` (one replica, e.g. the leader a follower named) directly, whatever its readiness.
   */
  async directEndpointFor(sourceAddress: string, target: string): Promise<string> {
    return await this.listen((client) => {
      this.connectTo(client, target, sourceAddress);
    });
  }

  private async listen(onConnection: (client: Socket) => void): Promise<string> {
    const server = createServer(onConnection);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.listeners.add(server);
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("forwarder has no TCP address");
    return `127.0.0.1:${address.port}`;
  }

  /** Probes readiness now (tests call it to skip the wait for the next probe). */
  async probe(): Promise<void> {
    if (this.probing || this.closed) return;
    this.probing = true;
    try {
      const backends = this.options.backends();
      const results = await Promise.all(
        backends.map(async (backend) => {
          try {
            const response = await fetch(backend.readyUrl, { signal: AbortSignal.timeout(1_000) });
            await response.body?.cancel();
            return response.status === 200;
          } catch {
            return false;
          }
        }),
      );
      this.ready = backends.filter((_, i) => results[i] === true);
    } finally {
      this.probing = false;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    for (const socket of this.sockets) socket.destroy();
    await Promise.all(
      [...this.listeners].map(
        (server) =>
          new Promise<void>((resolve) => {
            server.close(() => {
              resolve();
            });
          }),
      ),
    );
  }

  private forward(client: Socket, sourceAddress: string): void {
    this.track(client);
    const backend = this.ready.length === 0 ? undefined : this.ready[this.next++ % this.ready.length];
    if (backend === undefined) {
      client.resetAndDestroy();
      return;
    }
    this.connectTo(client, backend.target, sourceAddress);
  }

  private connectTo(client: Socket, target: string, sourceAddress: string): void {
    this.track(client);
    const colon = target.lastIndexOf(":");
    const upstream = connect({ host: target.slice(0, colon), port: Number(target.slice(colon + 1)), localAddress: sourceAddress });
    this.track(upstream);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
  }
}
