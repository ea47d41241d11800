import { randomBytes } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";

export interface BearerAuthOptions {
  /** The `service` the challenge names and /token insists on. */
  readonly service: string;
  /** When set, /token demands these Basic credentials; otherwise it hands out anonymous tokens. */
  readonly username?: string;
  readonly password?: string;
  /** Lifetime reported as `expires_in` and enforced against the fake's clock. */
  readonly tokenTtlSeconds?: number;
  /** Defaults to the fake's own `/token`. */
  readonly realm?: string;
}

export interface BasicAuthOptions {
  readonly username: string;
  readonly password: string;
  readonly realm?: string;
}

/** Docker Hub's token lifetime. */
export const DEFAULT_TOKEN_TTL_SECONDS = 300;
const DEFAULT_BASIC_REALM = "fake-upstream";

interface IssuedToken {
  readonly scopes: readonly string[];
  readonly expiresAtMs: number;
}

/** The answer to a request: go ahead, or 401 with this WWW-Authenticate. */
export type AuthDecision = { readonly ok: true } | { readonly ok: false; readonly challenge: string };

export interface TokenResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: unknown;
}

type Mode =
  | { readonly kind: "none" }
  | { readonly kind: "basic"; readonly options: BasicAuthOptions }
  | { readonly kind: "bearer"; readonly options: BearerAuthOptions; readonly realm: string };

/** The authentication a fake upstream demands, and the tokens its /token endpoint has issued. */
export class FakeAuth {
  private mode: Mode = { kind: "none" };
  private readonly tokens = new Map<string, IssuedToken>();

  constructor(
    private readonly defaultRealm: string,
    private readonly clockMs: () => number,
  ) {}

  get isBearer(): boolean {
    return this.mode.kind === "bearer";
  }

  none(): void {
    this.mode = { kind: "none" };
  }

  basic(options: BasicAuthOptions): void {
    this.mode = { kind: "basic", options };
  }

  bearer(options: BearerAuthOptions): void {
    this.mode = { kind: "bearer", options, realm: options.realm ?? this.defaultRealm };
  }

  /** Forgets every issued token, as a registry does when it rotates its signing key. */
  revokeTokens(): void {
    this.tokens.clear();
  }

  /** `name` is the repository the request is about, undefined for `/v2/` itself. */
  authorize(headers: IncomingHttpHeaders, name: string | undefined): AuthDecision {
    const mode = this.mode;
    if (mode.kind === "none") return { ok: true };
    const authorization = headers.authorization ?? "";
    if (mode.kind === "basic") {
      const credentials = parseBasic(authorization);
      if (credentials?.username === mode.options.username && credentials.password === mode.options.password) {
        return { ok: true };
      }
      return { ok: false, challenge: `Basic realm="${mode.options.realm ?? DEFAULT_BASIC_REALM}"` };
    }
    const token = /^Bearer (\S+)$/i.exec(authorization)?.[1];
    const issued = token === undefined ? undefined : this.tokens.get(token);
    if (issued !== undefined && this.clockMs() < issued.expiresAtMs && (name === undefined || grantsPull(issued.scopes, name))) {
      return { ok: true };
    }
    const scope = name === undefined ? "" : `,scope="repository:${name}:pull"`;
    return { ok: false, challenge: `Bearer realm="${mode.realm}",service="${mode.options.service}"${scope}` };
  }

  /** Answers `GET /token?service=..&scope=..` the way distribution's token servers do. */
  issueToken(headers: IncomingHttpHeaders, query: URLSearchParams): TokenResponse {
    const mode = this.mode;
    if (mode.kind !== "bearer") return { status: 404, headers: {}, body: { details: "no token service" } };
    const { options } = mode;
    if (query.get("service") !== options.service) {
      return { status: 400, headers: {}, body: { details: `unknown service ${JSON.stringify(query.get("service"))}` } };
    }
    if (options.username !== undefined || options.password !== undefined) {
      const credentials = parseBasic(headers.authorization ?? "");
      if (credentials?.username !== (options.username ?? "") || credentials.password !== (options.password ?? "")) {
        return {
          status: 401,
          headers: { "www-authenticate": `Basic realm="${mode.realm}"` },
          body: { details: "incorrect username or password" },
        };
      }
    }
    const ttlSeconds = options.tokenTtlSeconds ?? DEFAULT_TOKEN_TTL_SECONDS;
    const issuedAtMs = this.clockMs();
    const token = `fake-${randomBytes(16).toString("hex")}`;
    // Several scopes may come as repeated parameters or space-separated in one.
    const scopes = query
      .getAll("scope")
      .flatMap((scope) => scope.split(" "))
      .filter((scope) => scope !== "");
    this.tokens.set(token, { scopes, expiresAtMs: issuedAtMs + ttlSeconds * 1000 });
    return {
      status: 200,
      headers: {},
      body: { token, access_token: token, expires_in: ttlSeconds, issued_at: new Date(issuedAtMs).toISOString() },
    };
  }
}

function parseBasic(authorization: string): { username: string; password: string } | undefined {
  const encoded = /^Basic (\S+)$/i.exec(authorization)?.[1];
  if (encoded === undefined) return undefined;
  const decoded = Buffer.from(encoded, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) return undefined;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Whether any `repository:<name>:<actions>` scope grants pull (or `*`) on `name`. */
function grantsPull(scopes: readonly string[], name: string): boolean {
  return scopes.some((scope) => {
    const actionsAt = scope.lastIndexOf(":");
    if (!scope.startsWith("repository:") || actionsAt <= "repository:".length) return false;
    if (scope.slice("repository:".length, actionsAt) !== name) return false;
    return scope
      .slice(actionsAt + 1)
      .split(",")
      .some((action) => action === "pull" || action === "*");
  });
}
