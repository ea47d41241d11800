import { request } from "node:http";

/**
 * Status code of a plain-HTTP GET, or undefined when nothing answers (refused, reset, timeout).
 * No connection pooling (agent: false), so probing leaves no keep-alive socket behind.
 */
export async function probeHttpStatus(url: string, timeoutMs: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = request(url, { method: "GET", agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.once("end", () => {
        resolve(res.statusCode);
      });
      res.once("error", () => {
        resolve(undefined);
      });
    });
    req.once("timeout", () => {
      req.destroy();
    });
    req.once("error", () => {
      resolve(undefined);
    });
    req.end();
  });
}
