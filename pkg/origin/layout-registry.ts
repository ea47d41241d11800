import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import {
  type Digest,
  MEDIA_TYPE_OCTET_STREAM,
  OciError,
  digestAlgorithm,
  digestHex,
  isIndexMediaType,
  parseDigest,
  parseMirrorPath,
  parseRangeHeader,
} from "../oci/index.js";
import { TokenBucket, throttleStream } from "../throttle/index.js";

const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface LayoutRegistryOptions {
  /** An OCI image layout directory (oci-layout, index.json, blobs/). */
  readonly dir: string;
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port?: number;
  /** Cap on the bytes/s of all response bodies together, to play a slow remote registry. */
  readonly egressBytesPerSecond?: number;
}

interface Descriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
}

/**
 * A read-only OCI registry serving one image layout directory under any repository name: tags from the
 * `org.opencontainers.image.ref.name` annotations of index.json, manifests and blobs by digest, Range.
 * The embedded origin of the demo and of tests that need no system registry.
 */
export class LayoutRegistry {
  /** Body bytes written to clients (manifests and blobs): what the origin "sent". */
  bytesServed = 0;
  private readonly bucket: TokenBucket | undefined;

  private constructor(
    private readonly dir: string,
    private readonly tags: ReadonlyMap<string, Descriptor>,
    private readonly manifests: ReadonlyMap<Digest, Descriptor>,
    egressBytesPerSecond: number | undefined,
    private server?: Server,
  ) {
    this.bucket = egressBytesPerSecond !== undefined && egressBytesPerSecond > 0 ? new TokenBucket(egressBytesPerSecond) : undefined;
  }

  static async start(options: LayoutRegistryOptions): Promise<LayoutRegistry> {
    const { tags, manifests } = await readLayout(options.dir);
    const registry = new LayoutRegistry(options.dir, tags, manifests, options.egressBytesPerSecond);
    const server = createServer((req, res) => {
      registry.handle(req, res).catch((error: unknown) => {
        if (res.headersSent) res.destroy();
        else sendError(res, error);
      });
    });
    registry.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    return registry;
  }

  /** `HOST:PORT`, the registry as written in image references. */
  get host(): string {
    const address = this.server?.address() as AddressInfo;
    return `${address.address.includes(":") ? `[${address.address}]` : address.address}:${address.port}`;
  }

  get url(): string {
    return `http://${this.host}`;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    await new Promise<void>((resolve) => {
      server.close(() => {
        resolve();
      });
      server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== "GET" && req.method !== "HEAD") {
      sendJson(res, 405, { errors: [{ code: "UNSUPPORTED", message: "read-only registry" }] });
      return;
    }
    const route = parseMirrorPath(new URL(req.url ?? "/", "http://origin.invalid").pathname, null);
    if (route.kind === "base") {
      sendJson(res, 200, {});
      return;
    }
    let descriptor: Descriptor | undefined;
    if (route.kind === "manifest") {
      descriptor = route.reference.kind === "tag" ? this.tags.get(route.reference.tag) : this.manifests.get(route.reference.digest);
      if (descriptor === undefined) {
        sendJson(res, 404, { errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown" }] });
        return;
      }
    } else {
      const path = this.blobPath(route.digest);
      const size = await stat(path).then(
        (s) => s.size,
        () => undefined,
      );
      if (size === undefined) {
        sendJson(res, 404, { errors: [{ code: "BLOB_UNKNOWN", message: "blob unknown" }] });
        return;
      }
      descriptor = { digest: route.digest, size, mediaType: MEDIA_TYPE_OCTET_STREAM };
    }
    const range = route.kind === "blob" ? parseRangeHeader(req.headers.range, descriptor.size) : undefined;
    const headers: Record<string, string | number> = {
      "content-type": descriptor.mediaType,
      "docker-content-digest": descriptor.digest,
      "docker-distribution-api-version": "registry/2.0",
      "accept-ranges": "bytes",
      "content-length": range ? range.end - range.start + 1 : descriptor.size,
    };
    if (range) headers["content-range"] = `bytes ${range.start}-${range.end}/${descriptor.size}`;
    res.writeHead(range ? 206 : 200, headers);
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    const controller = new AbortController();
    res.once("close", () => {
      controller.abort();
    });
    const file = createReadStream(this.blobPath(descriptor.digest), range ? { start: range.start, end: range.end } : {});
    file.on("data", (chunk: string | Buffer) => {
      this.bytesServed += chunk.length;
    });
    if (this.bucket) await pipeline(file, throttleStream(this.bucket, controller.signal), res);
    else await pipeline(file, res);
  }

  private blobPath(digest: Digest): string {
    return join(this.dir, "blobs", digestAlgorithm(digest), digestHex(digest));
  }
}

/** Reads index.json and walks nested indexes: tag → descriptor, and the media type of every manifest. */
async function readLayout(dir: string): Promise<{ tags: Map<string, Descriptor>; manifests: Map<Digest, Descriptor> }> {
  const tags = new Map<string, Descriptor>();
  const manifests = new Map<Digest, Descriptor>();
  const index = await readJson(join(dir, "index.json"));
  const visit = async (entries: unknown, tagged: boolean): Promise<void> => {
    if (!Array.isArray(entries)) throw new Error(`${dir}: an index without a manifests array`);
    for (const entry of entries as unknown[]) {
      const descriptor = toDescriptor(entry);
      if (manifests.has(descriptor.digest)) continue;
      manifests.set(descriptor.digest, descriptor);
      const annotations = (entry as { annotations?: Record<string, unknown> }).annotations;
      const tag = annotations?.[REF_NAME_ANNOTATION];
      if (tagged && typeof tag === "string") tags.set(tag, descriptor);
      if (isIndexMediaType(descriptor.mediaType)) {
        const child = await readJson(join(dir, "blobs", digestAlgorithm(descriptor.digest), digestHex(descriptor.digest)));
        await visit((child as { manifests?: unknown }).manifests, false);
      }
    }
  };
  await visit((index as { manifests?: unknown }).manifests, true);
  return { tags, manifests };
}

async function readJson(path: string): Promise<unknown> {
  const text = await readFile(path, "utf8");
  if (text.length > MAX_MANIFEST_BYTES) throw new Error(`${path}: larger than ${MAX_MANIFEST_BYTES} bytes`);
  return JSON.parse(text) as unknown;
}

function toDescriptor(entry: unknown): Descriptor {
  const e = entry as { mediaType?: unknown; digest?: unknown; size?: unknown };
  if (typeof e.mediaType !== "string" || typeof e.digest !== "string" || typeof e.size !== "number") {
    throw new Error("a descriptor without mediaType, digest or size");
  }
  return { mediaType: e.mediaType, digest: parseDigest(e.digest), size: e.size };
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(res.req.method === "HEAD" ? undefined : text);
}

function sendError(res: ServerResponse, error: unknown): void {
  if (error instanceof OciError) {
    const status = error.code === "ERR_OCI_RANGE_INVALID" ? 416 : 400;
    sendJson(res, status, { errors: [{ code: error.code.replace("ERR_OCI_", ""), message: error.message }] });
    return;
  }
  sendJson(res, 500, { errors: [{ code: "UNKNOWN", message: "internal error" }] });
}
