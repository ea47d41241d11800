// kube-proxy for one pod: runs as a container in the pod's network namespace (node and this file
// only: no imports beyond node:), so connections it makes carry the pod's IP, as kube-proxy's DNAT
// keeps the client's source address (the tracker admits agents by their pod IP). Listens on the
// Service's port on loopback (the pod's /etc/hosts maps the Service name there) and sends each new
// connection to a backend whose readiness probe passed last time (the endpoints controller), round
// robin; none ready: the connection is refused at once, as a Service without endpoints does.
// Established connections are left alone when readiness changes, as with kube-proxy.
//
// pkg/k8s/testing's ServiceForwarder does the same in one process on loopback for many clients;
// here each pod needs its own, in its own namespace, on a fixed port.
//
// Configuration: SHOAL_E2E_SERVICES='[{"listen":"127.0.0.1:7070","backends":[{"target":"IP:PORT","readyUrl":"http://IP:PORT/readyz"}]}]'
import { type Socket, connect, createServer } from "node:net";
import { pathToFileURL } from "node:url";

interface Backend {
  readonly target: string;
  readonly readyUrl: string;
}

interface Service {
  readonly listen: string;
  readonly backends: readonly Backend[];
}

/** A kubelet probe period plus endpoint propagation, shortened. */
const PROBE_INTERVAL_MS = 500;
const PROBE_TIMEOUT_MS = 1_000;

function split(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(":");
  return { host: address.slice(0, colon), port: Number(address.slice(colon + 1)) };
}

function log(fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ time: Date.now(), component: "kube-proxy", ...fields }));
}

/** Joins two connections: bytes both ways, and either one's end or error ends the other. */
export function splice(a: Socket, b: Socket): void {
  a.on("error", () => b.destroy());
  b.on("error", () => a.destroy());
  a.on("close", () => b.destroy());
  b.on("close", () => a.destroy());
  a.pipe(b);
  b.pipe(a);
}

async function isReady(url: string): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    await response.body?.cancel();
    return response.status >= 200 && response.status < 400;
  } catch {
    return false;
  }
}

function serve(service: Service): void {
  let ready: Backend[] = [];
  let next = 0;
  let probing = false;
  const probe = async (): Promise<void> => {
    if (probing) return;
    probing = true;
    try {
      const results = await Promise.all(service.backends.map((b) => isReady(b.readyUrl)));
      const now = service.backends.filter((_, i) => results[i] === true);
      if (now.map((b) => b.target).join() !== ready.map((b) => b.target).join())
        log({ msg: "endpoints changed", listen: service.listen, ready: now.map((b) => b.target) });
      ready = now;
    } finally {
      probing = false;
    }
  };
  setInterval(() => void probe(), PROBE_INTERVAL_MS);
  void probe();
  const server = createServer((client: Socket) => {
    const backend = ready.length === 0 ? undefined : ready[next++ % ready.length];
    if (backend === undefined) {
      client.resetAndDestroy();
      return;
    }
    splice(client, connect(split(backend.target)));
  });
  const { host, port } = split(service.listen);
  server.listen(port, host, () => {
    log({ msg: "listening", listen: service.listen, backends: service.backends.map((b) => b.target) });
  });
}

function main(): void {
  const config = process.env.SHOAL_E2E_SERVICES;
  if (config === undefined) {
    console.error("kube-proxy: SHOAL_E2E_SERVICES is not set");
    process.exit(2);
  }
  for (const service of JSON.parse(config) as Service[]) serve(service);
  process.on("SIGTERM", () => process.exit(0));
}

// Run as the container's program; imported (for splice), it does nothing.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main();
