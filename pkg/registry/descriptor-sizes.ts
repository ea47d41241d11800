import { type Digest, isDigest } from "../oci/index.js";

/**
 * Descriptors remembered, least recently used first out: a node runs a few hundred images of a few dozen
 * layers each, and an entry costs ~150 bytes.
 */
export const MAX_REMEMBERED_DESCRIPTORS = 16_384;

/**
 * The sizes manifests give the blobs they name (config, layers, the manifests of an index). A manifest
 * this agent verified against its digest is the best evidence of a blob's size it has; what peers and the
 * tracker claim is believed only where it agrees.
 */
export class DescriptorSizes {
  private readonly sizes = new Map<Digest, number>();

  /** Records the descriptors of a verified manifest or index; anything else (or malformed JSON) is ignored. */
  learn(body: Uint8Array): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("utf8"));
    } catch {
      return;
    }
    if (typeof parsed !== "object" || parsed === null) return;
    const manifest = parsed as { config?: unknown; layers?: unknown; manifests?: unknown };
    for (const candidate of [manifest.config, ...asArray(manifest.layers), ...asArray(manifest.manifests)]) this.remember(candidate);
  }

  /** The size a manifest gave `digest`, or undefined when no manifest this agent saw named it. */
  get(digest: Digest): number | undefined {
    const size = this.sizes.get(digest);
    if (size !== undefined) {
      this.sizes.delete(digest);
      this.sizes.set(digest, size);
    }
    return size;
  }

  get size(): number {
    return this.sizes.size;
  }

  private remember(candidate: unknown): void {
    if (typeof candidate !== "object" || candidate === null) return;
    const { digest, size } = candidate as { digest?: unknown; size?: unknown };
    if (typeof digest !== "string" || !isDigest(digest) || typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) return;
    this.sizes.delete(digest);
    this.sizes.set(digest, size);
    for (const oldest of this.sizes.keys()) {
      if (this.sizes.size <= MAX_REMEMBERED_DESCRIPTORS) break;
      this.sizes.delete(oldest);
    }
  }
}

function asArray(value: unknown): readonly unknown[] {
  return Array.isArray(value) ? value : [];
}
