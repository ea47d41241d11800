import { readFile } from "node:fs/promises";
import { parseRegistryHost } from "../../oci/index.js";

export interface BasicCredentials {
  readonly username: string;
  readonly password: string;
}

/**
 * Reads a Docker config JSON (`~/.docker/config.json` or a `kubernetes.io/dockerconfigjson` Secret):
 * `{"auths": {"<registry>": {"auth": base64("user:pass")} | {"username", "password"}}}`.
 * Keys may be bare hosts or URLs (`https://index.docker.io/v1/`); both map to the registry host.
 */
export async function loadDockerConfig(path: string, signal?: AbortSignal): Promise<Map<string, BasicCredentials>> {
  const text = await readFile(path, { encoding: "utf8", signal });
  return parseDockerConfig(text, path);
}

export function parseDockerConfig(text: string, source = "docker config"): Map<string, BasicCredentials> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new Error(`${source}: not valid JSON`, { cause });
  }
  const auths = isRecord(parsed) && isRecord(parsed.auths) ? parsed.auths : undefined;
  if (auths === undefined) throw new Error(`${source}: no "auths" object`);
  const result = new Map<string, BasicCredentials>();
  for (const [key, entry] of Object.entries(auths)) {
    if (!isRecord(entry)) continue;
    const host = registryOfKey(key);
    if (host === undefined) throw new Error(`${source}: cannot read registry ${JSON.stringify(key)}`);
    const credentials = credentialsOf(entry);
    if (credentials === undefined) throw new Error(`${source}: entry for ${host} has neither "auth" nor "username"/"password"`);
    result.set(host, credentials);
  }
  return result;
}

function registryOfKey(key: string): string | undefined {
  let host = key;
  if (/^[a-z]+:\/\//i.test(key)) {
    try {
      host = new URL(key).host;
    } catch {
      return undefined;
    }
  } else {
    host = key.split("/")[0] ?? "";
  }
  try {
    return parseRegistryHost(host);
  } catch {
    return undefined;
  }
}

function credentialsOf(entry: Record<string, unknown>): BasicCredentials | undefined {
  if (typeof entry.auth === "string" && entry.auth !== "") {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) return undefined;
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (typeof entry.username === "string" && typeof entry.password === "string") {
    return { username: entry.username, password: entry.password };
  }
  return undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function basicAuthorization(credentials: BasicCredentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
}
