import { once } from "node:events";
import type { Writable } from "node:stream";
import { Agent } from "undici";
import {
  ALL_MANIFEST_MEDIA_TYPES,
  type Descriptor,
  type Digest,
  DigestVerifier,
  type Platform,
  digestAlgorithm,
  digestOf,
  isIndexMediaType,
  parseDigest,
  sniffManifestMediaType,
} from "../oci/index.js";
import { PullError } from "./errors.js";

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** containerd's default number of layers fetched at once. */
export const DEFAULT_PULL_CONCURRENCY = 3;

export interface PullOptions {
  /** Mirror or registry base URL, e.g. http://127.0.0.1:5050. */
  readonly baseUrl: string;
  /** Sent as `?ns=` (as containerd does); omit to pull from baseUrl's own namespace. */
  readonly ns?: string;
  readonly name: string;
  readonly reference: string;
  /** Which manifest of an index to pull; default linux/amd64, else the first. */
  readonly platform?: Platform;
  readonly concurrency?: number;
  readonly signal?: AbortSignal;
  /** Where a verified blob's bytes go; default: hashed and dropped. Called once per blob. */
  readonly sink?: (descriptor: Descriptor) => Writable | undefined;
  /**
   * Each manifest (the index, if any, then the chosen manifest) with its exact bytes, once its digest is
   * verified and before any of its blobs is fetched: what a caller writing a layout needs, and the sizes
   * it needs for a progress total.
   */
  readonly onManifest?: (descriptor: Descriptor, body: Buffer) => void;
  /** Bytes received so far for a blob (called per chunk). */
  readonly onProgress?: (descriptor: Descriptor, receivedBytes: number) => void;
  readonly dispatcher?: Agent;
}

export interface PullResult {
  /** Digest of what the reference resolved to (an index or a manifest). */
  readonly digest: Digest;
  /** Index (if any), manifest, config and layers, in pull order. */
  readonly descriptors: readonly Descriptor[];
  /** Body bytes received for all of them. */
  readonly bytes: number;
  readonly seconds: number;
}

/**
 * Pulls an image the way containerd does: resolve the reference, pick the platform from an index, then
 * fetch config and layers in parallel. Every digest is verified; a mismatch fails the pull.
 */
export async function pullImage(options: PullOptions): Promise<PullResult> {
  const started = performance.now();
  const dispatcher = options.dispatcher ?? new Agent({ keepAliveTimeout: 10_000 });
  const descriptors: Descriptor[] = [];
  let bytes = 0;
  try {
    let top = await fetchManifest(options, dispatcher, options.reference);
    const rootDigest = top.descriptor.digest;
    options.onManifest?.(top.descriptor, top.body);
    descriptors.push(top.descriptor);
    bytes += top.descriptor.size;
    if (isIndexMediaType(top.descriptor.mediaType)) {
      const chosen = choosePlatform(top.json, options.platform ?? { os: "linux", architecture: "amd64" });
      top = await fetchManifest(options, dispatcher, chosen.digest);
      if (top.descriptor.digest !== chosen.digest)
        throw new PullError("ERR_PULL_DIGEST_MISMATCH", `manifest ${chosen.digest} came back as ${top.descriptor.digest}`);
      options.onManifest?.(top.descriptor, top.body);
      descriptors.push(top.descriptor);
      bytes += top.descriptor.size;
    }
    const manifest = top.json as { config?: unknown; layers?: unknown };
    const blobs = [manifest.config, ...(Array.isArray(manifest.layers) ? (manifest.layers as unknown[]) : [])].map(toDescriptor);
    descriptors.push(...blobs);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < blobs.length) {
        const blob = blobs[next++];
        if (blob === undefined) continue;
        // Not `bytes += await …`: that reads `bytes` before the await and loses the other workers' sums.
        const received = await fetchBlob(options, dispatcher, blob);
        bytes += received;
      }
    };
    await Promise.all(Array.from({ length: Math.min(options.concurrency ?? DEFAULT_PULL_CONCURRENCY, blobs.length) }, worker));
    return { digest: rootDigest, descriptors, bytes, seconds: (performance.now() - started) / 1000 };
  } finally {
    if (options.dispatcher === undefined) await dispatcher.close();
  }
}

function url(options: PullOptions, kind: "manifests" | "blobs", reference: string): string {
  const query = options.ns === undefined ? "" : `?ns=${encodeURIComponent(options.ns)}`;
  return `${options.baseUrl}/v2/${options.name}/${kind}/${reference}${query}`;
}

async function fetchManifest(
  options: PullOptions,
  dispatcher: Agent,
  reference: string,
): Promise<{ descriptor: Descriptor; json: unknown; body: Buffer }> {
  const response = await dispatcher.request({
    ...originAndPath(url(options, "manifests", reference)),
    method: "GET",
    headers: { accept: ALL_MANIFEST_MEDIA_TYPES.join(", ") },
    signal: options.signal,
  });
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response.body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_MANIFEST_BYTES) {
      response.body.destroy();
      throw new PullError("ERR_PULL_TOO_LARGE", `manifest ${reference} is larger than ${MAX_MANIFEST_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  const body = Buffer.concat(chunks);
  if (response.statusCode !== 200)
    throw new PullError(
      "ERR_PULL_STATUS",
      `manifest ${options.name}:${reference}: HTTP ${response.statusCode} ${body.toString("utf8").slice(0, 200)}`,
    );
  const header = response.headers["docker-content-digest"];
  const declared = typeof header === "string" ? parseDigest(header) : undefined;
  const expected = reference.includes(":") ? parseDigest(reference) : declared;
  const digest = digestOf(body, expected ? digestAlgorithm(expected) : "sha256");
  if (expected !== undefined && digest !== expected)
    throw new PullError("ERR_PULL_DIGEST_MISMATCH", `manifest ${reference} does not match ${expected}`);
  const contentType = response.headers["content-type"];
  const mediaType = (typeof contentType === "string" ? contentType : undefined) ?? sniffManifestMediaType(body) ?? "";
  let json: unknown;
  try {
    json = JSON.parse(body.toString("utf8"));
  } catch (cause) {
    throw new PullError("ERR_PULL_INVALID_MANIFEST", `manifest ${reference} is not JSON`, { cause });
  }
  return { descriptor: { mediaType, digest, size: body.length }, json, body };
}

async function fetchBlob(options: PullOptions, dispatcher: Agent, descriptor: Descriptor): Promise<number> {
  const response = await dispatcher.request({
    ...originAndPath(url(options, "blobs", descriptor.digest)),
    method: "GET",
    signal: options.signal,
  });
  if (response.statusCode !== 200) {
    const text = await response.body.text().catch(() => "");
    throw new PullError("ERR_PULL_STATUS", `blob ${descriptor.digest}: HTTP ${response.statusCode} ${text.slice(0, 200)}`);
  }
  const verifier = new DigestVerifier(descriptor.digest);
  const sink = options.sink?.(descriptor);
  // A failing sink (a full disk) fails the pull. Listening also keeps the 'error' that follows an abort
  // or our own destroy() below from becoming an uncaught exception.
  let sinkError: Error | undefined;
  sink?.on("error", (error: Error) => {
    sinkError ??= error;
  });
  let received = 0;
  try {
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      verifier.update(chunk);
      received += chunk.length;
      options.onProgress?.(descriptor, received);
      if (sink) {
        if (sinkError !== undefined) throw sinkError;
        // `once` also rejects on 'error', which would otherwise leave this waiting for a drain that never comes.
        if (!sink.write(chunk)) await once(sink, "drain", { signal: options.signal });
      }
    }
  } catch (error) {
    sink?.destroy(error instanceof Error ? error : undefined);
    throw error;
  }
  const actual = verifier.finish();
  if (actual !== descriptor.digest || received !== descriptor.size) {
    const error = new PullError("ERR_PULL_DIGEST_MISMATCH", `blob ${descriptor.digest}: received ${received} bytes hashing to ${actual}`);
    sink?.destroy(error);
    throw error;
  }
  if (sink) {
    await new Promise<void>((resolve, reject) => {
      sink.end((error?: Error | null) => {
        if (error) reject(error);
        else resolve();
      });
    });
  }
  return received;
}

function choosePlatform(index: unknown, platform: Platform): Descriptor {
  const manifests = (index as { manifests?: unknown }).manifests;
  if (!Array.isArray(manifests) || manifests.length === 0) throw new PullError("ERR_PULL_INVALID_MANIFEST", "an index without manifests");
  const match = (manifests as { platform?: Partial<Platform> }[]).find(
    (m) => m.platform?.os === platform.os && m.platform.architecture === platform.architecture,
  );
  return toDescriptor(match ?? manifests[0]);
}

function toDescriptor(value: unknown): Descriptor {
  const v = value as Partial<Record<keyof Descriptor, unknown>> | undefined;
  if (typeof v?.digest !== "string" || typeof v.size !== "number" || typeof v.mediaType !== "string") {
    throw new PullError("ERR_PULL_INVALID_MANIFEST", "a descriptor without digest, size or mediaType");
  }
  return { digest: parseDigest(v.digest), size: v.size, mediaType: v.mediaType };
}

function originAndPath(target: string): { origin: string; path: string } {
  const u = new URL(target);
  return { origin: u.origin, path: u.pathname + u.search };
}
