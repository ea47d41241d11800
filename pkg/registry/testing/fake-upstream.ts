import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import {
  type Digest,
  MEDIA_TYPE_OCI_MANIFEST,
  MEDIA_TYPE_OCTET_STREAM,
  digestOf,
  isDigest,
  parseRangeHeader,
  sniffManifestMediaType,
} from "../../oci/index.js";
import { type BodyShaping, writeBody } from "./body-writer.js";
import { type BodySource, type SeededContent, bytesSource, digestOfSeeded, seededSource } from "./content-source.js";
import { type BasicAuthOptions, type BearerAuthOptions, FakeAuth } from "./fake-auth.js";
import { type MutableRecordedRequest, type RecordedRequest, type RequestMatcher, classify, matches } from "./recorded-request.js";

export type { BodyShaping } from "./body-writer.js";
export type { BasicAuthOptions, BearerAuthOptions } from "./fake-auth.js";
export type { RecordedRequest, RequestKind, RequestMatcher } from "./recorded-request.js";

export interface FakeUpstreamOptions {
  /** Wall clock (ms since the epoch) for token issue and expiry; inject one to expire tokens without waiting. */
  readonly clockMs?: () => number;
}

export interface ContentRef {
  readonly digest: Digest;
  readonly size: number;
}

export type Behaviour =
  /** Answer with this status and an OCI error body; 429 and 503 usually come with Retry-After. */
  | { readonly kind: "status"; readonly status: number; readonly retryAfterSeconds?: number }
  /** Read the request, then never answer (until close()). */
  | { readonly kind: "hang" }
  /** Destroy the connection without answering. */
  | { readonly kind: "reset" }
  /**
   * Redirect to another fake: blob requests to its `/_storage/<digest>?signature=..` (the blob is
   * shared with it), anything else to the same path and query there.
   */
  | { readonly kind: "redirect"; readonly to: FakeUpstream; readonly status?: 301 | 302 | 303 | 307 | 308 }
  /** Answer normally but mangle or pace the body. */
  | ({ readonly kind: "body" } & BodyShaping);

export interface ScriptOptions {
  /** Apply to this many matching requests, then step aside; default: every matching request. */
  readonly times?: number;
}

export interface Script {
  readonly hits: number;
  readonly remaining: number;
  remove(): void;
}

interface BlobEntry extends ContentRef {
  readonly source: BodySource;
}

interface ManifestEntry extends ContentRef {
  readonly bytes: Uint8Array;
  readonly mediaType: string;
}

interface Repository {
  readonly tags: Map<string, Digest>;
  readonly manifests: Map<Digest, ManifestEntry>;
}

interface ScriptEntry {
  readonly matcher: RequestMatcher;
  readonly behaviour: Behaviour;
  hits: number;
  remaining: number;
}

const ERROR_CODE_BY_STATUS: Readonly<Record<number, string>> = {
  401: "UNAUTHORIZED",
  403: "DENIED",
  404: "NOT_FOUND",
  429: "TOOMANYREQUESTS",
};

/**
 * A scriptable upstream OCI registry on 127.0.0.1: serves the pull API from what tests add to it,
 * demands Basic or Bearer auth when told, and misbehaves on request in the ways real registries,
 * CDNs and networks do. Scripts are consulted in the order they were added, after authentication
 * (a 401 challenge consumes none).
 */
export class FakeUpstream {
  readonly url: string;
  readonly host: string;
  private readonly auth: FakeAuth;
  private readonly closing = new AbortController();
  private readonly blobs = new Map<string, BlobEntry>();
  private readonly repositories = new Map<string, Repository>();
  private readonly scripts: ScriptEntry[] = [];
  private readonly recorded: MutableRecordedRequest[] = [];
  private readonly failures: unknown[] = [];
  private bytesServed = 0;
  private closed: Promise<void> | undefined;

  private constructor(
    private readonly server: Server,
    options: FakeUpstreamOptions,
  ) {
    const { port } = server.address() as AddressInfo;
    this.host = `127.0.0.1:${port}`;
    this.url = `http://${this.host}`;
    this.auth = new FakeAuth(`${this.url}/token`, options.clockMs ?? Date.now);
    server.on("request", (req: IncomingMessage, res: ServerResponse) => {
      this.handle(req, res).catch((error: unknown) => {
        this.failures.push(error);
        if (res.headersSent) res.destroy();
        else res.writeHead(500).end(String(error));
      });
    });
  }

  static async start(options: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
    // No request timeout: a hanging request must hang until the test closes the fake.
    const server = createServer({ requestTimeout: 0 });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return new FakeUpstream(server, options);
  }

  get requests(): readonly RecordedRequest[] {
    return this.recorded;
  }

  /** Blob body bytes (blob and storage requests) handed to sockets, over the fake's lifetime. */
  get blobBytesServed(): number {
    return this.bytesServed;
  }

  get tokenRequests(): number {
    return this.recorded.filter((request) => request.kind === "token").length;
  }

  /** Errors the fake itself hit while answering; a test can assert there were none. */
  get errors(): readonly unknown[] {
    return this.failures;
  }

  /** Adds a blob every repository serves. Seeded content is generated per request, never held. */
  async addBlob(content: Uint8Array | SeededContent): Promise<ContentRef> {
    const entry: BlobEntry =
      content instanceof Uint8Array
        ? { digest: digestOf(content), size: content.byteLength, source: bytesSource(Buffer.from(content)) }
        : { digest: await digestOfSeeded(content), size: content.size, source: seededSource(content) };
    this.blobs.set(entry.digest, entry);
    return { digest: entry.digest, size: entry.size };
  }

  /** Adds a manifest to `name`, tagged `tag` when given; the media type defaults to the body's own. */
  addManifest(name: string, tag: string | undefined, body: object | Uint8Array, mediaType?: string): ContentRef {
    const bytes = body instanceof Uint8Array ? Buffer.from(body) : Buffer.from(JSON.stringify(body));
    const entry: ManifestEntry = {
      digest: digestOf(bytes),
      size: bytes.byteLength,
      bytes,
      mediaType: mediaType ?? sniffManifestMediaType(bytes) ?? MEDIA_TYPE_OCI_MANIFEST,
    };
    this.repository(name).manifests.set(entry.digest, entry);
    if (tag !== undefined) this.setTag(name, tag, entry.digest);
    return { digest: entry.digest, size: entry.size };
  }

  /** Points `tag` at a manifest already in `name`, e.g. to move a tag between two pulls. */
  setTag(name: string, tag: string, digest: Digest): void {
    const repository = this.repository(name);
    if (!repository.manifests.has(digest)) throw new Error(`fake upstream: ${name} has no manifest ${digest}`);
    repository.tags.set(tag, digest);
  }

  requireBearer(options: BearerAuthOptions): void {
    this.auth.bearer(options);
  }

  requireBasic(options: BasicAuthOptions): void {
    this.auth.basic(options);
  }

  allowAnonymous(): void {
    this.auth.none();
  }

  /** Invalidates every issued token, so the next request with a cached one gets 401. */
  revokeTokens(): void {
    this.auth.revokeTokens();
  }

  script(matcher: RequestMatcher, behaviour: Behaviour, options: ScriptOptions = {}): Script {
    const entry: ScriptEntry = { matcher, behaviour, hits: 0, remaining: options.times ?? Number.POSITIVE_INFINITY };
    this.scripts.push(entry);
    const scripts = this.scripts;
    return {
      get hits() {
        return entry.hits;
      },
      get remaining() {
        return entry.remaining;
      },
      remove() {
        const at = scripts.indexOf(entry);
        if (at >= 0) scripts.splice(at, 1);
      },
    };
  }

  clearScripts(): void {
    this.scripts.length = 0;
  }

  /** Stops listening and destroys every connection, hanging and stalled ones included. Idempotent. */
  close(): Promise<void> {
    this.closed ??= new Promise<void>((resolve) => {
      this.closing.abort();
      // close() fails only when the server is not listening, which is the state we want anyway.
      this.server.close(() => {
        resolve();
      });
      this.server.closeAllConnections();
    });
    return this.closed;
  }

  private repository(name: string): Repository {
    let repository = this.repositories.get(name);
    if (repository === undefined) {
      repository = { tags: new Map(), manifests: new Map() };
      this.repositories.set(name, repository);
    }
    return repository;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.url);
    const record: MutableRecordedRequest = {
      method: req.method ?? "GET",
      path: url.pathname,
      query: url.searchParams,
      headers: req.headers,
      ...classify(url.pathname),
      receivedAtMs: performance.now(),
      status: undefined,
      bodyBytes: 0,
    };
    this.recorded.push(record);
    const gone = new AbortController();
    res.on("close", () => {
      gone.abort();
    });
    const signal = AbortSignal.any([this.closing.signal, gone.signal]);
    const reply: Reply = { req, res, record, signal, shaping: {} };

    if (record.kind !== "token" && record.kind !== "storage") {
      const decision = this.auth.authorize(req.headers, record.name);
      if (!decision.ok) {
        await this.sendError(reply, 401, "authentication required", { "www-authenticate": decision.challenge });
        return;
      }
    }
    const behaviour = this.takeScript(record);
    switch (behaviour?.kind) {
      case "hang":
        return;
      case "reset":
        req.socket.destroy();
        return;
      case "status": {
        const headers: OutgoingHttpHeaders = {};
        if (behaviour.retryAfterSeconds !== undefined) headers["retry-after"] = String(behaviour.retryAfterSeconds);
        await this.sendError(reply, behaviour.status, `scripted ${behaviour.status}`, headers);
        return;
      }
      case "redirect":
        await this.redirect(reply, behaviour.to, behaviour.status ?? 307);
        return;
      case "body":
        reply.shaping = behaviour;
        break;
      case undefined:
        break;
    }
    await this.serve(reply);
  }

  private takeScript(record: RecordedRequest): Behaviour | undefined {
    const entry = this.scripts.find((script) => script.remaining > 0 && matches(script.matcher, record));
    if (entry === undefined) return undefined;
    entry.hits += 1;
    entry.remaining -= 1;
    return entry.behaviour;
  }

  private async serve(reply: Reply): Promise<void> {
    const { req, record } = reply;
    if (record.kind === "token") {
      if (req.method !== "GET") return this.sendError(reply, 405, "token endpoint takes GET");
      const answer = this.auth.issueToken(req.headers, record.query);
      const body = bytesSource(Buffer.from(JSON.stringify(answer.body)));
      return this.send(reply, answer.status, { "content-type": "application/json", ...answer.headers }, body);
    }
    if (req.method !== "GET" && req.method !== "HEAD") return this.sendError(reply, 405, "this fake is pull-only");
    switch (record.kind) {
      case "base":
        return this.send(reply, 200, { "content-type": "application/json" }, bytesSource(Buffer.from("{}")));
      case "manifest":
        return this.serveManifest(reply, record.name ?? "", record.reference ?? "");
      case "blob":
      case "storage":
        return this.serveBlob(reply, record.reference ?? "");
      case "other":
        return this.sendError(reply, 404, "no such route", {}, "NOT_FOUND");
    }
  }

  private async serveManifest(reply: Reply, name: string, reference: string): Promise<void> {
    const repository = this.repositories.get(name);
    const digest = isDigest(reference) ? reference : repository?.tags.get(reference);
    const manifest = digest === undefined ? undefined : repository?.manifests.get(digest);
    if (manifest === undefined) return this.sendError(reply, 404, `manifest unknown to ${name}`, {}, "MANIFEST_UNKNOWN");
    const headers = { "content-type": manifest.mediaType, "docker-content-digest": manifest.digest, etag: `"${manifest.digest}"` };
    return this.send(reply, 200, headers, bytesSource(manifest.bytes));
  }

  private async serveBlob(reply: Reply, digest: string): Promise<void> {
    const blob = this.blobs.get(digest);
    if (blob === undefined) return this.sendError(reply, 404, "blob unknown to registry", {}, "BLOB_UNKNOWN");
    const headers: OutgoingHttpHeaders = {
      "content-type": MEDIA_TYPE_OCTET_STREAM,
      "docker-content-digest": blob.digest,
      "accept-ranges": "bytes",
      etag: `"${blob.digest}"`,
    };
    let range;
    try {
      range = parseRangeHeader(reply.req.headers.range, blob.size);
    } catch {
      headers["content-range"] = `bytes */${blob.size}`;
      return this.sendError(reply, 416, "range not satisfiable", headers, "BLOB_UNKNOWN");
    }
    if (range === undefined) return this.send(reply, 200, headers, blob.source);
    headers["content-range"] = `bytes ${range.start}-${range.end}/${blob.size}`;
    return this.send(reply, 206, headers, blob.source, range.start, range.end + 1);
  }

  private async redirect(reply: Reply, target: FakeUpstream, status: number): Promise<void> {
    const { record } = reply;
    let location = `${target.url}${reply.req.url ?? "/"}`;
    if (record.kind === "blob") {
      const blob = this.blobs.get(record.reference ?? "");
      if (blob === undefined) return this.sendError(reply, 404, "blob unknown to registry", {}, "BLOB_UNKNOWN");
      target.blobs.set(blob.digest, blob);
      location = `${target.url}/_storage/${blob.digest}?signature=${randomBytes(8).toString("hex")}`;
    }
    return this.send(reply, status, { location }, undefined);
  }

  private async sendError(
    reply: Reply,
    status: number,
    message: string,
    headers: OutgoingHttpHeaders = {},
    code = ERROR_CODE_BY_STATUS[status] ?? "UNKNOWN",
  ): Promise<void> {
    const body = Buffer.from(JSON.stringify({ errors: [{ code, message, detail: null }] }));
    return this.send({ ...reply, shaping: {} }, status, { ...headers, "content-type": "application/json" }, bytesSource(body));
  }

  /** Sends headers and [start, end) of `source` (HEAD: headers only), shaped as the reply says. */
  private async send(
    reply: Reply,
    status: number,
    headers: OutgoingHttpHeaders,
    source: BodySource | undefined,
    start = 0,
    end = source?.size ?? 0,
  ): Promise<void> {
    const { req, res, record, shaping } = reply;
    const length = end - start;
    if (shaping.chunked !== true) headers["content-length"] = length;
    record.status = status;
    res.writeHead(status, headers);
    if (req.method === "HEAD" || source === undefined) {
      res.end();
      return;
    }
    const countsAsBlob = record.kind === "blob" || record.kind === "storage";
    await writeBody(res, source.chunks(start, end), length, shaping, reply.signal, (bytes) => {
      record.bodyBytes += bytes;
      if (countsAsBlob) this.bytesServed += bytes;
    });
  }
}

interface Reply {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly record: MutableRecordedRequest;
  readonly signal: AbortSignal;
  shaping: BodyShaping;
}
