import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

export interface HealthCheck {
  /** Liveness: false only when the process should be restarted. */
  readonly live: () => boolean;
  /** Readiness: whether traffic should be sent here now; the string says why not. */
  readonly ready: () => true | string;
}

export interface MetricsServerOptions {
  readonly host: string;
  readonly port: number;
  readonly registry: Registry;
  readonly health: HealthCheck;
}

/** Serves /metrics (Prometheus text format), /healthz and /readyz. */
export class MetricsServer {
  private constructor(private readonly server: Server) {}

  static async start(options: MetricsServerOptions): Promise<MetricsServer> {
    const server = createServer((req, res) => {
      handle(options, req, res).catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
        res.end(error instanceof Error ? error.message : "internal error");
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port, options.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    return new MetricsServer(server);
  }

  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => {
        resolve();
      });
      this.server.closeAllConnections();
    });
  }
}

async function handle(options: MetricsServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? "/").split("?")[0];
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD" }).end();
    return;
  }
  if (path === "/metrics") {
    const body = await options.registry.metrics();
    res.writeHead(200, { "content-type": options.registry.contentType }).end(req.method === "HEAD" ? undefined : body);
  } else if (path === "/healthz") {
    const live = options.health.live();
    res.writeHead(live ? 200 : 503, { "content-type": "text/plain" }).end(live ? "ok\n" : "unhealthy\n");
  } else if (path === "/readyz") {
    const ready = options.health.ready();
    res.writeHead(ready === true ? 200 : 503, { "content-type": "text/plain" }).end(ready === true ? "ok\n" : `not ready: ${ready}\n`);
  } else {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  }
}
