import { createServer } from "node:net";

export const LOOPBACK_HOST = "127.0.0.1";

/**
 * A TCP port that was free on `host` a moment ago: bind port 0, read the port, release it.
 * For daemons that cannot bind port 0 and report it. Another process can take the port in
 * between, so callers retry their start on "address already in use".
 */
export async function getFreePort(host: string = LOOPBACK_HOST): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port: 0, exclusive: true }, resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve, reject) => {
    server.close((error) => {
      if (error) reject(error);
      else resolve();
    });
  });
  if (address === null || typeof address === "string") throw new Error("unreachable: a TCP server has a port");
  return address.port;
}
