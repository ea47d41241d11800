import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import { Agent, type Dispatcher } from "undici";
import { DOCKER_HUB } from "../../oci/index.js";
import { RegistryError } from "../errors.js";
import { type BasicCredentials, basicAuthorization } from "./credentials.js";
import { DEFAULT_TOKEN_LIFETIME_MS, TokenCache } from "./token-cache.js";
import { parseChallenge } from "./www-authenticate.js";

export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
export const DEFAULT_HEADERS_TIMEOUT_MS = 15_000;
/** A body that sends nothing for this long is a stalled transfer. */
export const DEFAULT_BODY_STALL_TIMEOUT_MS = 30_000;
const KEEP_ALIVE_TIMEOUT_MS = 30_000;
const MAX_REDIRECTS = 5;
const MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024;
const MAX_TOKEN_LIFETIME_MS = 24 * 3600 * 1000;
/** Docker Hub's API host: `docker.io` in references is served by this host. */
const DOCKER_HUB_API = "https://registry-1.docker.io";

export interface UpstreamClientOptions {
  /** Registry host (as in image references) → base URL. Registries not listed are refused. */
  readonly upstreams: ReadonlyMap<string, string>;
  readonly credentials?: ReadonlyMap<string, BasicCredentials>;
  readonly connectTimeoutMs?: number;
  readonly headersTimeoutMs?: number;
  readonly bodyStallTimeoutMs?: number;
  readonly userAgent?: string;
  readonly logger?: Logger;
}

export interface UpstreamRequest {
  readonly method: "GET" | "HEAD";
  /** Path below the registry's base URL, starting with `/v2/`. */
  readonly path: string;
  /** Repository the request is about: the Bearer token scope is `repository:<name>:pull`. */
  readonly name: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal;
  /**
   * Credentials for this request only (an ImagePrefetch's pull secret), instead of the client's own for
   * the registry. Tokens obtained with them are cached apart, so no other request ever uses them.
   */
  readonly credentials?: BasicCredentials | undefined;
}

export interface UpstreamResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Must be consumed or destroyed by the caller. */
  readonly body: Readable & { dump?: () => Promise<void> };
  /** Final URL after redirects. */
  readonly url: URL;
}

/** Default base URL of a registry host when none is configured: HTTPS, Docker Hub mapped to its API host. */
export function defaultUpstreamUrl(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : `https://${registry}`;
}

/**
 * HTTP client for upstream registries: keep-alive pools, the Bearer token flow with a token cache,
 * Basic credentials, redirects followed without forwarding Authorization to another origin, and
 * timeouts on connect, on headers and on a stalled body.
 */
export class UpstreamClient {
  private readonly agent: Agent;
  private readonly tokens = new TokenCache();
  private readonly bases = new Map<string, URL>();

  constructor(private readonly options: UpstreamClientOptions) {
    for (const [registry, url] of options.upstreams) this.bases.set(registry, new URL(url));
    this.agent = new Agent({
      connect: { timeout: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS },
      headersTimeout: options.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS,
      bodyTimeout: options.bodyStallTimeoutMs ?? DEFAULT_BODY_STALL_TIMEOUT_MS,
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    });
  }

  /** Whether requests for this registry host can be served. */
  knows(registry: string): boolean {
    return this.bases.has(registry);
  }

  async request(registry: string, request: UpstreamRequest): Promise<UpstreamResponse> {
    const base = this.bases.get(registry);
    if (base === undefined) throw new RegistryError("ERR_REGISTRY_UNKNOWN", `registry ${registry} is not mirrored by this agent`);
    const scope = `repository:${request.name}:pull`;
    // The cache key of tokens: per-request credentials get their own entries.
    const cacheScope = request.credentials === undefined ? scope : `${scope} as ${credentialTag(request.credentials)}`;
    let url = new URL(joinPath(base, request.path));
    let authorization = this.tokenAuthorization(registry, cacheScope);
    let triedAuth = false;
    for (let hop = 0; hop <= MAX_REDIRECTS;) {
      // Credentials go only to the registry's own origin, never to a redirect target such as blob storage.
      const sameOrigin = url.origin === base.origin;
      const headers: Record<string, string> = { "user-agent": this.options.userAgent ?? "shoal", ...request.headers };
      if (sameOrigin && authorization !== undefined) headers.authorization = authorization;
      const response = await this.dispatch(url, request.method, headers, request.signal);
      if (response.statusCode === 401 && sameOrigin && !triedAuth) {
        await discard(response.body);
        triedAuth = true;
        authorization = await this.authenticate(
          registry,
          scope,
          cacheScope,
          response.headers["www-authenticate"],
          request.credentials ?? this.options.credentials?.get(registry),
          request.signal,
        );
        if (authorization === undefined)
          throw new RegistryError("ERR_UPSTREAM_AUTH", `${registry} requires credentials this agent does not have`, { status: 401 });
        continue;
      }
      const location = header(response.headers, "location");
      if (response.statusCode >= 300 && response.statusCode < 400 && location !== undefined) {
        await discard(response.body);
        url = new URL(location, url);
        if (url.protocol !== "https:" && url.protocol !== "http:") {
          throw new RegistryError("ERR_UPSTREAM_PROTOCOL", `${registry} redirected to a non-HTTP URL`);
        }
        hop++;
        continue;
      }
      if (response.statusCode === 401 || response.statusCode === 403) {
        await discard(response.body);
        if (sameOrigin) this.tokens.delete(registry, cacheScope);
        throw new RegistryError("ERR_UPSTREAM_AUTH", `${registry} refused access to ${request.name} (HTTP ${response.statusCode})`, {
          status: response.statusCode,
        });
      }
      return { status: response.statusCode, headers: response.headers, body: response.body, url };
    }
    throw new RegistryError("ERR_UPSTREAM_PROTOCOL", `${registry}: more than ${MAX_REDIRECTS} redirects`);
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  private tokenAuthorization(registry: string, scope: string): string | undefined {
    const token = this.tokens.get(registry, scope);
    // Without a cached token the first request goes unauthenticated; the 401 challenge says what to send.
    return token === undefined ? undefined : `Bearer ${token}`;
  }

  /** Answers a 401 challenge: a Bearer token from the realm, or Basic credentials. */
  private async authenticate(
    registry: string,
    scope: string,
    cacheScope: string,
    challengeHeader: unknown,
    credentials: BasicCredentials | undefined,
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const challenge = parseChallenge(typeof challengeHeader === "string" ? challengeHeader : undefined);
    if (challenge?.scheme === "basic") return credentials === undefined ? undefined : basicAuthorization(credentials);
    const realm = challenge?.params.get("realm");
    if (challenge === undefined || realm === undefined) return undefined;
    const tokenUrl = new URL(realm);
    if (tokenUrl.protocol !== "https:" && tokenUrl.protocol !== "http:") {
      throw new RegistryError("ERR_UPSTREAM_PROTOCOL", `${registry}: token realm is not an HTTP URL`);
    }
    const service = challenge.params.get("service");
    if (service !== undefined) tokenUrl.searchParams.set("service", service);
    tokenUrl.searchParams.set("scope", challenge.params.get("scope") ?? scope);
    const headers: Record<string, string> = { "user-agent": this.options.userAgent ?? "shoal", accept: "application/json" };
    if (credentials !== undefined) headers.authorization = basicAuthorization(credentials);
    const response = await this.dispatch(tokenUrl, "GET", headers, signal);
    const text = await readLimited(response.body, MAX_TOKEN_RESPONSE_BYTES);
    if (response.statusCode !== 200) {
      throw new RegistryError("ERR_UPSTREAM_AUTH", `${registry}: token endpoint answered HTTP ${response.statusCode}`, {
        status: response.statusCode,
      });
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (cause) {
      throw new RegistryError("ERR_UPSTREAM_PROTOCOL", `${registry}: token response is not JSON`, { cause });
    }
    const fields = typeof body === "object" && body !== null ? (body as Record<string, unknown>) : {};
    const token =
      typeof fields.token === "string" ? fields.token : typeof fields.access_token === "string" ? fields.access_token : undefined;
    if (token === undefined || token === "") throw new RegistryError("ERR_UPSTREAM_PROTOCOL", `${registry}: token response has no token`);
    const lifetimeMs =
      typeof fields.expires_in === "number" && fields.expires_in > 0
        ? Math.min(fields.expires_in * 1000, MAX_TOKEN_LIFETIME_MS)
        : DEFAULT_TOKEN_LIFETIME_MS;
    this.tokens.set(registry, cacheScope, token, lifetimeMs);
    this.options.logger?.debug({ registry, scope, lifetimeMs }, "obtained upstream token");
    return `Bearer ${token}`;
  }

  private async dispatch(
    url: URL,
    method: "GET" | "HEAD",
    headers: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<Dispatcher.ResponseData> {
    let response: Dispatcher.ResponseData;
    try {
      response = await this.agent.request({ origin: url.origin, path: url.pathname + url.search, method, headers, signal });
    } catch (cause) {
      throw toUpstreamError(url, cause);
    }
    // Readers see body errors through their own reads; this listener only keeps an abort that arrives
    // after a body was destroyed or dropped from becoming an uncaught exception.
    response.body.on("error", () => undefined);
    return response;
  }
}

/** Maps undici/network failures to stable codes, keeping the original as `cause`. */
export function toUpstreamError(url: URL, cause: unknown): Error {
  if (cause instanceof RegistryError) return cause;
  const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : "";
  const name = cause instanceof Error ? cause.name : "";
  if (name === "AbortError" || code === "ABORT_ERR" || code === "UND_ERR_ABORTED")
    return cause instanceof Error ? cause : new Error("aborted");
  if (code === "UND_ERR_CONNECT_TIMEOUT" || code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") {
    return new RegistryError(
      "ERR_UPSTREAM_TIMEOUT",
      `${url.host}: ${code === "UND_ERR_BODY_TIMEOUT" ? "transfer stalled" : "no response in time"}`,
      { cause },
    );
  }
  return new RegistryError("ERR_UPSTREAM_NETWORK", `${url.host}: ${cause instanceof Error ? cause.message : "request failed"}`, { cause });
}

/** A short fingerprint of credentials for cache keys; never logged, never the secret itself. */
function credentialTag(credentials: BasicCredentials): string {
  return createHash("sha256").update(`${credentials.username}\0${credentials.password}`).digest("hex").slice(0, 32);
}

function joinPath(base: URL, path: string): string {
  const prefix = base.pathname.endsWith("/") ? base.pathname.slice(0, -1) : base.pathname;
  return `${base.origin}${prefix}${path}`;
}

export function header(headers: Readonly<Record<string, string | string[] | undefined>>, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

async function discard(body: Readable & { dump?: () => Promise<void> }): Promise<void> {
  try {
    if (body.dump) await body.dump();
    else body.destroy();
  } catch {
    // The connection is dropped instead of reused; nothing else depends on this body.
  }
}

/** Reads a small body as text, refusing more than `limit` bytes. */
export async function readLimited(body: Readable, limit: number): Promise<string> {
  return (await readLimitedBytes(body, limit)).toString("utf8");
}

export async function readLimitedBytes(body: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      body.destroy();
      throw new RegistryError("ERR_UPSTREAM_TOO_LARGE", `response larger than ${limit} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
