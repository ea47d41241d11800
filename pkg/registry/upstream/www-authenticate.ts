export interface AuthChallenge {
  readonly scheme: "bearer" | "basic";
  readonly params: ReadonlyMap<string, string>;
}

/**
 * Parses the first Bearer or Basic challenge of a WWW-Authenticate header,
 * e.g. `Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull"`.
 */
export function parseChallenge(header: string | undefined): AuthChallenge | undefined {
  if (header === undefined) return undefined;
  const match = /^\s*(bearer|basic)\b(.*)$/is.exec(header);
  if (!match) return undefined;
  const scheme = (match[1] ?? "").toLowerCase() as "bearer" | "basic";
  const params = new Map<string, string>();
  const paramPattern = /([a-zA-Z_][a-zA-Z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g;
  for (const param of (match[2] ?? "").matchAll(paramPattern)) {
    const key = (param[1] ?? "").toLowerCase();
    const value = param[2] !== undefined ? param[2].replace(/\\(.)/g, "$1") : (param[3] ?? "");
    if (!params.has(key)) params.set(key, value);
  }
  return { scheme, params };
}
