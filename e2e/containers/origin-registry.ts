// The origin: Debian's docker-registry in a container of the tools image on the pod network, under a
// name the pods resolve through their /etc/hosts (no network alias: with one, Podman attaches the
// container to its default network too, and its counters would be split over two interfaces).
// Images are pushed from the host with skopeo
// to its address. What it sends is measured two ways: its interface's transmitted bytes (kernel
// counter of its network namespace: everything, headers included) and the body bytes of the blob
// GETs it logs (e2e/support's parser of its "response completed" lines).
import { randomBytes } from "node:crypto";
import type { Readable } from "node:stream";
import { GenericContainer, type StartedTestContainer } from "testcontainers";
import type { GeneratedImageLayout } from "../../pkg/imagegen/index.js";
import { HarnessError } from "../support/errors.js";
import { parseBlobGet } from "../support/docker-registry.js";
import { debugLog, runCommand } from "../support/process.js";
import { skopeoPushLayout } from "../support/skopeo.js";
import type { PodNetwork } from "./network.js";
import { containerState, interfaceCounters } from "./runtime.js";

export const ORIGIN_PORT = 5000;
const TC_TIMEOUT_MS = 10_000;
const START_TIMEOUT_MS = 30_000;
/** The registry logs a request just after its response; wait this long without new lines before counting. */
const LOG_SETTLE_MS = 200;

export interface OriginMark {
  readonly txBytes: number;
  readonly logLine: number;
}

export class OriginRegistry {
  private readonly lines: string[] = [];
  private partial = "";
  /** The container's followed log (closed by stop(): podman does not always end it when the container goes). */
  private logStream: Readable | undefined;

  private constructor(
    readonly container: StartedTestContainer,
    /** The DNS name agents use, e.g. `origin.shoal.test`. */
    readonly name: string,
    readonly ip: string,
  ) {}

  static async start(network: PodNetwork, image: string, name: string): Promise<OriginRegistry> {
    const config = [
      "version: 0.1",
      "log:",
      "  level: info",
      "  formatter: json",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      "    rootdirectory: /var/lib/registry",
      "  maintenance:",
      "    uploadpurging:",
      "      enabled: false",
      "http:",
      `  addr: 0.0.0.0:${ORIGIN_PORT}`,
      `  secret: ${randomBytes(16).toString("hex")}`,
    ].join("\n");
    const ref: { origin?: OriginRegistry; early: string[]; stream?: Readable } = { early: [] };
    const container = await new GenericContainer(image)
      .withName(`${network.name}-origin`)
      .withNetworkMode(network.name)
      .withCopyContentToContainer([{ content: `${config}\n`, target: "/etc/shoal-origin/config.yml" }])
      .withCommand(["docker-registry", "serve", "/etc/shoal-origin/config.yml"])
      .withLogConsumer((stream: Readable) => {
        ref.stream = stream;
        stream.on("data", (chunk: Buffer | string) => {
          if (ref.origin === undefined) ref.early.push(chunk.toString());
          else ref.origin.consume(chunk.toString());
        });
      })
      .withStartupTimeout(START_TIMEOUT_MS)
      .start();
    const origin = new OriginRegistry(container, name, container.getIpAddress(network.name));
    ref.origin = origin;
    origin.logStream = ref.stream;
    for (const chunk of ref.early) origin.consume(chunk);
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!origin.lines.some((l) => l.includes('"msg":"listening on '))) {
      if (Date.now() > deadline)
        throw new HarnessError(
          "ERR_HARNESS_START",
          `docker-registry in ${container.getName()} did not start:\n${origin.lines.slice(-20).join("\n")}`,
        );
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return origin;
  }

  /** `NAME:PORT`, the registry as image references and the agents' --upstream name it. */
  get host(): string {
    return `${this.name}:${ORIGIN_PORT}`;
  }

  /** Pushes a generated layout from the host (skopeo to the container's address) as `repo:tag`. */
  async push(layout: GeneratedImageLayout, repo: string, tag: string): Promise<void> {
    await skopeoPushLayout({ layoutDir: layout.dir, tag, destination: `${this.ip}:${ORIGIN_PORT}/${repo}:${tag}` });
  }

  /** Limits what the origin sends (tbf on its interface, set from the host in its namespace). */
  async shapeEgress(bytesPerSecond: number): Promise<void> {
    const { pid } = await containerState(this.container.getId());
    const rate = `${Math.round((bytesPerSecond * 8) / 1000)}kbit`;
    await runCommand(
      "nsenter",
      ["-t", String(pid), "-n", "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "256kb", "latency", "50ms"],
      { timeoutMs: TC_TIMEOUT_MS },
    );
    debugLog(`containers: origin egress limited to ${rate}`);
  }

  async mark(): Promise<OriginMark> {
    await this.settle();
    return { txBytes: await this.txBytes(), logLine: this.lines.length };
  }

  /** Bytes its interface sent since `mark` (all traffic: blob bodies, manifests, HTTP and TCP/IP headers). */
  async egressSince(mark: OriginMark): Promise<number> {
    await this.settle();
    return (await this.txBytes()) - mark.txBytes;
  }

  /** Body bytes of successful blob GETs logged since `mark`. */
  async blobBytesSince(mark: OriginMark): Promise<number> {
    await this.settle();
    return this.lines.slice(mark.logLine).reduce((sum, line) => sum + (parseBlobGet(line)?.bytes ?? 0), 0);
  }

  private async txBytes(): Promise<number> {
    const { pid } = await containerState(this.container.getId());
    return (await interfaceCounters(pid)).txBytes;
  }

  private async settle(): Promise<void> {
    let count = -1;
    while (count !== this.lines.length) {
      count = this.lines.length;
      await new Promise((resolve) => setTimeout(resolve, LOG_SETTLE_MS));
    }
  }

  /** Stops and removes the container at once, and closes its log stream. */
  async stop(): Promise<void> {
    try {
      await this.container.stop({ timeout: 0 });
    } finally {
      this.logStream?.destroy();
    }
  }

  private consume(chunk: string): void {
    const text = this.partial + chunk;
    const end = text.lastIndexOf("\n");
    if (end < 0) {
      this.partial = text;
      return;
    }
    this.partial = text.slice(end + 1);
    for (const line of text.slice(0, end).split("\n")) if (line.trim() !== "") this.lines.push(line.trim());
  }
}
