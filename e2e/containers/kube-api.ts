// The Kubernetes API for the controller containers: the repository's API double (pkg/k8s/testing,
// plain HTTP on loopback) behind a TLS endpoint on the pod network's gateway, and a service account
// directory (token, ca.crt, namespace) as the kubelet mounts it. The controller then runs its
// in-cluster configuration unchanged: KUBERNETES_SERVICE_HOST/PORT, the token, verified TLS.
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { type Server, type Socket, connect } from "node:net";
import { join } from "node:path";
import { createServer as createTlsServer } from "node:tls";
import { KubeApiDouble } from "../../pkg/k8s/testing/index.js";
import { HarnessError } from "../support/errors.js";
import { runCommand } from "../support/process.js";
import { splice } from "./kube-proxy.js";

const OPENSSL_TIMEOUT_MS = 30_000;
/** Watches stay open; bookmarks keep client-node's 30 s watch silence timeout from firing. */
const BOOKMARK_INTERVAL_MS = 5_000;

export class KubeApiEndpoint {
  private constructor(
    readonly double: KubeApiDouble,
    private readonly server: Server,
    private readonly sockets: Set<Socket>,
    readonly host: string,
    readonly port: number,
    /** Mounted read-only at /var/run/secrets/kubernetes.io/serviceaccount. */
    readonly serviceAccountDir: string,
  ) {}

  /** Starts the double and its TLS endpoint on `host` (the pod network's gateway); files go to `dir`. */
  static async start(host: string, namespace: string, dir: string): Promise<KubeApiEndpoint> {
    const double = await KubeApiDouble.start({ bookmarkIntervalMs: BOOKMARK_INTERVAL_MS });
    try {
      const tlsDir = join(dir, "tls");
      await mkdir(tlsDir, { recursive: true });
      const key = join(tlsDir, "apiserver.key");
      const cert = join(tlsDir, "apiserver.crt");
      // A self-signed serving certificate for the gateway address: the pods' ca.crt.
      await runCommand(
        "openssl",
        [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-nodes",
          "-days",
          "1",
          "-subj",
          "/CN=kube-apiserver",
          "-addext",
          `subjectAltName=IP:${host},DNS:kubernetes.default.svc`,
          "-keyout",
          key,
          "-out",
          cert,
        ],
        { timeoutMs: OPENSSL_TIMEOUT_MS },
      );
      const serviceAccountDir = join(dir, "serviceaccount");
      await mkdir(serviceAccountDir, { recursive: true });
      await writeFile(join(serviceAccountDir, "token"), double.token);
      await writeFile(join(serviceAccountDir, "ca.crt"), await readFile(cert));
      await writeFile(join(serviceAccountDir, "namespace"), namespace);
      // Readable by the controller's non-root uid, as the kubelet's projected volume is.
      for (const file of ["token", "ca.crt", "namespace"]) await chmod(join(serviceAccountDir, file), 0o644);
      await chmod(serviceAccountDir, 0o755);
      const target = new URL(double.url);
      const sockets = new Set<Socket>();
      const server = createTlsServer({ key: await readFile(key), cert: await readFile(cert) }, (client) => {
        const upstream = connect({ host: target.hostname, port: Number(target.port) });
        for (const socket of [client, upstream]) {
          sockets.add(socket);
          socket.on("close", () => sockets.delete(socket));
        }
        splice(client, upstream);
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, host, () => {
          server.off("error", reject);
          resolve();
        });
      });
      const address = server.address();
      if (address === null || typeof address === "string")
        throw new HarnessError("ERR_HARNESS_START", "the API endpoint has no TCP address");
      return new KubeApiEndpoint(double, server, sockets, host, address.port, serviceAccountDir);
    } catch (error) {
      await double.close();
      throw error;
    }
  }

  /** The variables the kubelet sets in every container for the `kubernetes` Service. */
  get serviceEnv(): Record<string, string> {
    return {
      KUBERNETES_SERVICE_HOST: this.host,
      KUBERNETES_SERVICE_PORT: String(this.port),
      KUBERNETES_SERVICE_PORT_HTTPS: String(this.port),
    };
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => {
      this.server.close(() => {
        resolve();
      });
    });
    await this.double.close();
  }
}
