import {
  ALL_MANIFEST_MEDIA_TYPES,
  type Digest,
  digestAlgorithm,
  digestOf,
  isDigest,
  isIndexMediaType,
  parseDigest,
  sniffManifestMediaType,
} from "../oci/index.js";
import {
  type BasicCredentials,
  MAX_MANIFEST_BYTES,
  RegistryError,
  type UpstreamClient,
  header,
  isRegistryError,
  readLimitedBytes,
} from "../registry/index.js";
import { MAX_PREFETCH_MANIFEST_BYTES } from "../tracker/index.js";
import { PrefetchFailure } from "./errors.js";
import type { PrefetchImageSpec } from "./prefetch-spec.js";

export interface ResolvedManifest {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly body: Uint8Array;
}

export interface ResolvedImage {
  readonly text: string;
  readonly registry: string;
  readonly repository: string;
  /** What the reference resolved to: the index, or the manifest. */
  readonly digest: Digest;
  readonly mediaType: string;
  readonly platforms: readonly { readonly platform: string; readonly digest: Digest }[];
  /** The index (if any) and the chosen platform manifests, with their exact bytes. */
  readonly manifests: readonly ResolvedManifest[];
  /** Configs and layers of the chosen manifests, each once. */
  readonly blobs: readonly { readonly digest: Digest; readonly size: number }[];
  /** Manifest and blob bytes: what one node pulls. */
  readonly bytes: number;
}

/** A descriptor as found in a manifest's JSON, platform fields not yet checked. */
interface ParsedDescriptor {
  readonly digest: Digest;
  readonly size: number;
  readonly mediaType: string;
  readonly platform?: { readonly os?: unknown; readonly architecture?: unknown; readonly variant?: unknown };
}

/**
 * Resolves image references for ImagePrefetch on the controller: the tag to a digest (once; later
 * reconciles pass the digest in), the index to the requested platforms' manifests, and those to their
 * configs and layers. Only manifests are fetched (a few KiB); blobs are the seeds' business. Failures
 * become PrefetchFailure with the reason the status shows.
 */
export class PrefetchResolver {
  constructor(private readonly upstream: UpstreamClient) {}

  async resolve(
    image: PrefetchImageSpec,
    platforms: readonly string[],
    credentials: BasicCredentials | undefined,
    knownDigest: Digest | undefined,
    signal: AbortSignal,
  ): Promise<ResolvedImage> {
    const { registry, repository } = image.reference;
    if (!this.upstream.knows(registry)) {
      throw new PrefetchFailure(
        "RegistryNotMirrored",
        `${image.text}: registry ${registry} is not one the agents mirror (the controller's --upstream list)`,
      );
    }
    const reference = knownDigest ?? image.reference.digest ?? image.reference.tag ?? "latest";
    const top = await this.fetch(image, reference, credentials, signal);
    if (image.reference.digest !== undefined && top.digest !== image.reference.digest) {
      throw new PrefetchFailure("ManifestInvalid", `${image.text}: ${registry} answered with ${top.digest}, not the digest asked for`);
    }
    const manifests: ResolvedManifest[] = [top];
    const chosen: { platform: string; digest: Digest }[] = [];
    let leaves: { descriptor: ParsedDescriptor | undefined; manifest: ResolvedManifest }[];
    if (isIndexMediaType(top.mediaType)) {
      const entries = descriptorsOf(parse(image, top), "manifests", image);
      leaves = [];
      for (const platform of platforms) {
        const entry = entries.find((d) => matchesPlatform(d, platform));
        if (entry === undefined) {
          const available = entries
            .map(platformOf)
            .filter((p) => p !== "")
            .join(", ");
          throw new PrefetchFailure(
            "PlatformNotFound",
            `${image.text} has no manifest for ${platform} (it has: ${available === "" ? "none" : available})`,
          );
        }
        if (chosen.some((c) => c.digest === entry.digest)) continue;
        if (isIndexMediaType(entry.mediaType))
          throw new PrefetchFailure("ManifestInvalid", `${image.text}: an index inside an index is not supported`);
        const manifest = await this.fetch(image, entry.digest, credentials, signal);
        if (manifest.digest !== entry.digest)
          throw new PrefetchFailure("ManifestInvalid", `${image.text}: manifest ${entry.digest} came back as ${manifest.digest}`);
        chosen.push({ platform, digest: entry.digest });
        manifests.push(manifest);
        leaves.push({ descriptor: entry, manifest });
      }
    } else {
      leaves = [{ descriptor: undefined, manifest: top }];
    }
    const blobs = new Map<Digest, number>();
    for (const { manifest } of leaves) {
      const json = parse(image, manifest);
      const config = json.config === undefined ? [] : [descriptor(json.config, image)];
      for (const d of [...config, ...descriptorsOf(json, "layers", image)]) blobs.set(d.digest, d.size);
    }
    const manifestBytes = manifests.reduce((n, m) => n + m.body.length, 0);
    let bytes = manifestBytes;
    for (const size of blobs.values()) bytes += size;
    return {
      text: image.text,
      registry,
      repository,
      digest: top.digest,
      mediaType: top.mediaType,
      platforms: chosen,
      manifests,
      blobs: [...blobs].map(([digest, size]) => ({ digest, size })),
      bytes,
    };
  }

  /** GETs a manifest, verified against the digest asked for or the one the registry declares. */
  private async fetch(
    image: PrefetchImageSpec,
    reference: string,
    credentials: BasicCredentials | undefined,
    signal: AbortSignal,
  ): Promise<ResolvedManifest> {
    const { registry, repository } = image.reference;
    let body: Buffer;
    let headers: Readonly<Record<string, string | string[] | undefined>>;
    try {
      const response = await this.upstream.request(registry, {
        method: "GET",
        path: `/v2/${repository}/manifests/${reference}`,
        name: repository,
        headers: { accept: ALL_MANIFEST_MEDIA_TYPES.join(", ") },
        signal,
        credentials,
      });
      headers = response.headers;
      if (response.status === 404) {
        response.body.destroy();
        throw new PrefetchFailure("ReferenceNotFound", `${image.text}: ${registry} has no manifest ${repository}:${reference}`);
      }
      if (response.status !== 200) {
        response.body.destroy();
        throw new PrefetchFailure(
          "RegistryUnavailable",
          `${image.text}: ${registry} answered HTTP ${response.status} for the manifest ${reference}`,
        );
      }
      body = await readLimitedBytes(response.body, MAX_MANIFEST_BYTES);
    } catch (error: unknown) {
      throw failureOf(image, error);
    }
    const declared = header(headers, "docker-content-digest");
    const expected = isDigest(reference) ? parseDigest(reference) : declared !== undefined && isDigest(declared) ? declared : undefined;
    const digest = digestOf(body, expected === undefined ? "sha256" : digestAlgorithm(expected));
    if (expected !== undefined && digest !== expected)
      throw new PrefetchFailure("ManifestInvalid", `${image.text}: the manifest ${reference} does not match its digest ${expected}`);
    const contentType = header(headers, "content-type");
    const mediaType =
      contentType !== undefined && ALL_MANIFEST_MEDIA_TYPES.includes(contentType)
        ? contentType
        : (sniffManifestMediaType(body) ?? contentType ?? "");
    if (!ALL_MANIFEST_MEDIA_TYPES.includes(mediaType))
      throw new PrefetchFailure(
        "ManifestInvalid",
        `${image.text}: ${reference} is not an image manifest or index (${mediaType || "no media type"})`,
      );
    return { digest, mediaType, body };
  }
}

/** The manifest bytes of every image together must fit in one assignment message. */
export function checkManifestBudget(images: readonly ResolvedImage[]): void {
  const total = images.reduce((n, i) => n + i.manifests.reduce((m, x) => m + x.body.length, 0), 0);
  if (total > MAX_PREFETCH_MANIFEST_BYTES) {
    throw new PrefetchFailure(
      "ManifestsTooLarge",
      `the manifests of these images take ${total} bytes; one ImagePrefetch may carry at most ${MAX_PREFETCH_MANIFEST_BYTES}: split it`,
    );
  }
}

function failureOf(image: PrefetchImageSpec, error: unknown): Error {
  if (error instanceof PrefetchFailure) return error;
  if (error instanceof DOMException && (error.name === "AbortError" || error.name === "TimeoutError")) return error;
  const registry = image.reference.registry;
  if (isRegistryError(error, "ERR_UPSTREAM_AUTH")) {
    return new PrefetchFailure("AuthFailed", `${image.text}: ${error.message} (check spec.pullSecrets)`, { cause: error });
  }
  if (isRegistryError(error, "ERR_REGISTRY_UNKNOWN"))
    return new PrefetchFailure("RegistryNotMirrored", `${image.text}: ${error.message}`, { cause: error });
  if (isRegistryError(error, "ERR_UPSTREAM_TOO_LARGE"))
    return new PrefetchFailure("ManifestInvalid", `${image.text}: a manifest is larger than ${MAX_MANIFEST_BYTES} bytes`, { cause: error });
  const detail = error instanceof RegistryError || error instanceof Error ? error.message : String(error);
  return new PrefetchFailure("RegistryUnavailable", `${image.text}: cannot reach ${registry}: ${detail}`, { cause: error });
}

function parse(image: PrefetchImageSpec, manifest: ResolvedManifest): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(manifest.body).toString("utf8"));
  } catch (cause: unknown) {
    throw new PrefetchFailure("ManifestInvalid", `${image.text}: manifest ${manifest.digest} is not JSON`, { cause });
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw new PrefetchFailure("ManifestInvalid", `${image.text}: manifest ${manifest.digest} is not an object`);
  return json as Record<string, unknown>;
}

function descriptorsOf(json: Record<string, unknown>, field: "manifests" | "layers", image: PrefetchImageSpec): ParsedDescriptor[] {
  const list = json[field] ?? [];
  if (!Array.isArray(list)) throw new PrefetchFailure("ManifestInvalid", `${image.text}: ${field} is not a list`);
  return list.map((entry) => descriptor(entry, image));
}

function descriptor(value: unknown, image: PrefetchImageSpec): ParsedDescriptor {
  const v = (typeof value === "object" && value !== null ? value : {}) as Record<string, unknown>;
  if (
    typeof v.digest !== "string" ||
    !isDigest(v.digest) ||
    typeof v.size !== "number" ||
    !Number.isSafeInteger(v.size) ||
    v.size < 0 ||
    typeof v.mediaType !== "string"
  ) {
    throw new PrefetchFailure("ManifestInvalid", `${image.text}: a descriptor without a valid digest, size or mediaType`);
  }
  const platform = typeof v.platform === "object" && v.platform !== null ? (v.platform as ParsedDescriptor["platform"]) : undefined;
  return { digest: v.digest, size: v.size, mediaType: v.mediaType, ...(platform === undefined ? {} : { platform }) };
}

function platformOf(d: ParsedDescriptor): string {
  const p = d.platform;
  if (typeof p?.os !== "string" || typeof p.architecture !== "string") return "";
  return typeof p.variant === "string" && p.variant !== "" ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/** `os/arch` matches any variant; `os/arch/variant` only that one. */
function matchesPlatform(d: ParsedDescriptor, wanted: string): boolean {
  const [os, architecture, variant] = wanted.split("/");
  const p = d.platform;
  return p !== undefined && p.os === os && p.architecture === architecture && (variant === undefined || p.variant === variant);
}
