import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  type Digest,
  MEDIA_TYPE_OCI_CONFIG,
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_MANIFEST,
  OciError,
  digestHex,
  validateTag,
} from "../oci/index.js";
import { BlobWriter, checkAborted } from "./blob-writer.js";
import { ANNOTATION_REF_NAME, type Descriptor, type Platform, formatPlatform, parsePlatform } from "../oci/index.js";
import { ImagegenError } from "./errors.js";
import { GENERATED_MTIME_SECONDS, GENERATED_ROOT_DIR, type GeneratedLayer, writeLayer } from "./layer.js";

/** Upper bound on layers per image; overlay mounts of much deeper chains fail on many kernels. */
export const MAX_LAYERS = 128;
export const DEFAULT_TAG = "latest";
export const DEFAULT_PLATFORM = "linux/amd64";
export const OCI_LAYOUT_VERSION = "1.0.0";

const CREATED = new Date(GENERATED_MTIME_SECONDS * 1000).toISOString().replace(".000Z", "Z");
const DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface GenerateImageLayoutOptions {
  /** Layout directory; created if missing. Its oci-layout and index.json are replaced. */
  readonly dir: string;
  /** Every byte derives from this: same seed and options give a byte-identical layout. */
  readonly seed: string;
  /** Layers per platform image, 1–MAX_LAYERS. */
  readonly layers: number;
  /**
   * Target of the summed layer sizes of one platform image. Layers split it evenly; each is
   * block-aligned (up to 511 bytes short of its share) and never smaller than a minimal tar (~3 KiB).
   */
  readonly totalBytes: number;
  /** `os/arch[/variant]`; default ["linux/amd64"]. More than one produces an image index. */
  readonly platforms?: readonly string[];
  /**
   * With several platforms: how many of the top layers are identical across platforms (the rest
   * differ per platform, like a per-arch base under shared assets). Default floor(layers / 2).
   */
  readonly sharedLayers?: number;
  /** Written as org.opencontainers.image.ref.name in index.json; default "latest". */
  readonly tag?: string;
  /**
   * Keep the images index.json already names under other tags (several images in one layout, as the demo's
   * warm-up image beside the measured one); an entry with this tag is replaced. Default: index.json names
   * only this image.
   */
  readonly keepOtherTags?: boolean;
  readonly signal?: AbortSignal;
}

export interface GeneratedPlatformImage {
  readonly platform: Platform;
  /** As referenced from the image index (with `platform`), or from index.json for one platform. */
  readonly manifest: Descriptor;
  readonly config: Descriptor;
  readonly layers: readonly (GeneratedLayer & { readonly shared: boolean })[];
  readonly layerBytes: number;
  /** Manifest + config + layers: the bytes one pull of this platform fetches (besides the index). */
  readonly imageBytes: number;
}

export interface GeneratedImageLayout {
  readonly dir: string;
  readonly tag: string;
  /** What index.json names for the tag: the image index, or the manifest when there is one platform. */
  readonly root: Descriptor;
  /** The image index, when there is more than one platform. */
  readonly index: Descriptor | undefined;
  readonly images: readonly GeneratedPlatformImage[];
  /** Every blob in blobs/sha256, once each, in the order written. */
  readonly blobs: readonly Descriptor[];
  /** Sum of `blobs` sizes. */
  readonly totalBlobBytes: number;
}

/**
 * Writes a deterministic OCI image layout (image-spec image-layout.md): `oci-layout`, `index.json`
 * and `blobs/sha256/*`. Layers are uncompressed tars of incompressible data that containerd can
 * unpack; configs carry correct diff_ids. Streams everything, never holding a layer in memory.
 */
export async function generateImageLayout(options: GenerateImageLayoutOptions): Promise<GeneratedImageLayout> {
  const { dir, seed, signal } = options;
  const { tag, platforms, layerCount, sharedCount } = validateOptions(options);
  const blobsDir = join(dir, "blobs", "sha256");
  try {
    await mkdir(blobsDir, { recursive: true });
  } catch (cause) {
    throw new ImagegenError("ERR_IMAGEGEN_IO", `cannot create ${blobsDir}`, { cause });
  }
  const blobs: Descriptor[] = [];
  const share = Math.floor(options.totalBytes / layerCount);
  const targetBytes = (index: number): number => share + (index === 0 ? options.totalBytes - share * layerCount : 0);

  // Top layers shared by every platform are written once.
  const shared: GeneratedLayer[] = [];
  for (let index = layerCount - sharedCount; index < layerCount; index++) {
    const label = `shared/layer-${index}`;
    const layer = await writeLayer(blobsDir, seed, { label, directory: `layer-${index}`, targetBytes: targetBytes(index) }, signal);
    shared.push(layer);
    blobs.push(layer.descriptor);
  }

  const images: GeneratedPlatformImage[] = [];
  for (const platform of platforms) {
    const name = formatPlatform(platform).replaceAll("/", "-");
    const layers: (GeneratedLayer & { shared: boolean })[] = [];
    for (let index = 0; index < layerCount - sharedCount; index++) {
      const label = `${name}/layer-${index}`;
      const layer = await writeLayer(
        blobsDir,
        seed,
        { label, directory: `layer-${index}-${name}`, targetBytes: targetBytes(index) },
        signal,
      );
      layers.push({ ...layer, shared: false });
      blobs.push(layer.descriptor);
    }
    layers.push(...shared.map((layer) => ({ ...layer, shared: true })));

    const config = await writeJsonBlob(blobsDir, MEDIA_TYPE_OCI_CONFIG, imageConfig(platform, layers), signal);
    const manifestBody = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_OCI_MANIFEST,
      config,
      layers: layers.map((layer) => layer.descriptor),
    };
    const written = await writeJsonBlob(blobsDir, MEDIA_TYPE_OCI_MANIFEST, manifestBody, signal);
    blobs.push(config, written);
    const manifest = platforms.length > 1 ? { ...written, platform } : written;
    const layerBytes = layers.reduce((sum, layer) => sum + layer.descriptor.size, 0);
    images.push({ platform, manifest, config, layers, layerBytes, imageBytes: layerBytes + config.size + manifest.size });
  }

  let index: Descriptor | undefined;
  if (platforms.length > 1) {
    const body = { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_INDEX, manifests: images.map((image) => image.manifest) };
    index = await writeJsonBlob(blobsDir, MEDIA_TYPE_OCI_INDEX, body, signal);
    blobs.push(index);
  }
  const named = index ?? images[0]?.manifest;
  if (named === undefined) throw new Error("unreachable: at least one platform is validated");
  const root: Descriptor = {
    mediaType: named.mediaType,
    digest: named.digest,
    size: named.size,
    annotations: { [ANNOTATION_REF_NAME]: tag },
  };

  checkAborted(signal);
  const others = options.keepOtherTags === true ? await otherTagged(dir, tag) : [];
  await writeFileAtomically(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: OCI_LAYOUT_VERSION }));
  await writeFileAtomically(
    join(dir, "index.json"),
    JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_INDEX, manifests: [...others, root] }),
  );
  return { dir, tag, root, index, images, blobs, totalBlobBytes: blobs.reduce((sum, blob) => sum + blob.size, 0) };
}

/** The entries of the layout's index.json (if any) not tagged `tag`, as written there. */
async function otherTagged(dir: string, tag: string): Promise<unknown[]> {
  const path = join(dir, "index.json");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new ImagegenError("ERR_IMAGEGEN_IO", `cannot read ${path}`, { cause });
  }
  let manifests: unknown;
  try {
    manifests = (JSON.parse(text) as { manifests?: unknown }).manifests;
  } catch (cause) {
    throw new ImagegenError("ERR_IMAGEGEN_IO", `${path} is not JSON`, { cause });
  }
  if (!Array.isArray(manifests)) throw new ImagegenError("ERR_IMAGEGEN_IO", `${path} has no manifests array`);
  const entries: unknown[] = manifests;
  return entries.filter((entry: unknown) => {
    const annotations = typeof entry === "object" && entry !== null ? (entry as { annotations?: unknown }).annotations : undefined;
    const name =
      typeof annotations === "object" && annotations !== null ? (annotations as Record<string, unknown>)[ANNOTATION_REF_NAME] : undefined;
    return name !== tag;
  });
}

function validateOptions(options: GenerateImageLayoutOptions): {
  tag: string;
  platforms: Platform[];
  layerCount: number;
  sharedCount: number;
} {
  const invalid = (message: string): ImagegenError => new ImagegenError("ERR_IMAGEGEN_INVALID_OPTIONS", message);
  if (typeof options.dir !== "string" || options.dir === "") throw invalid("dir is required");
  if (typeof options.seed !== "string") throw invalid("seed must be a string");
  if (!Number.isInteger(options.layers) || options.layers < 1 || options.layers > MAX_LAYERS) {
    throw invalid(`layers must be an integer in 1..${MAX_LAYERS}, got ${options.layers}`);
  }
  if (!Number.isSafeInteger(options.totalBytes) || options.totalBytes < 0) {
    throw invalid(`totalBytes must be a non-negative integer, got ${options.totalBytes}`);
  }
  const platformNames = options.platforms ?? [DEFAULT_PLATFORM];
  if (platformNames.length === 0) throw invalid("platforms must not be empty");
  if (new Set(platformNames).size !== platformNames.length) throw invalid("platforms must not repeat");
  const platforms = platformNames.map((name) => {
    try {
      return parsePlatform(name);
    } catch (error: unknown) {
      throw new ImagegenError("ERR_IMAGEGEN_INVALID_OPTIONS", error instanceof Error ? error.message : `invalid platform ${name}`, {
        cause: error,
      });
    }
  });
  const multi = platforms.length > 1;
  const sharedCount = multi ? (options.sharedLayers ?? Math.floor(options.layers / 2)) : 0;
  if (!Number.isInteger(sharedCount) || sharedCount < 0 || sharedCount > options.layers) {
    throw invalid(`sharedLayers must be an integer in 0..${options.layers}, got ${sharedCount}`);
  }
  let tag: string;
  try {
    tag = validateTag(options.tag ?? DEFAULT_TAG);
  } catch (cause) {
    throw new ImagegenError("ERR_IMAGEGEN_INVALID_OPTIONS", cause instanceof OciError ? cause.message : "invalid tag", { cause });
  }
  return { tag, platforms, layerCount: options.layers, sharedCount };
}

function imageConfig(platform: Platform, layers: readonly GeneratedLayer[]): object {
  return {
    created: CREATED,
    architecture: platform.architecture,
    ...(platform.variant === undefined ? {} : { variant: platform.variant }),
    os: platform.os,
    config: {
      Env: [DEFAULT_PATH_ENV],
      WorkingDir: `/${GENERATED_ROOT_DIR}`,
      Labels: { "org.opencontainers.image.vendor": "shoal imagegen" },
    },
    rootfs: { type: "layers", diff_ids: layers.map((layer) => layer.diffId) },
    history: layers.map((layer) => ({
      created: CREATED,
      created_by: `shoal imagegen: ${layer.files.length} files, ${layer.descriptor.size} bytes`,
    })),
  };
}

/** Compact JSON, key order as written: the same value always serialises to the same bytes and digest. */
async function writeJsonBlob(blobsDir: string, mediaType: string, value: object, signal: AbortSignal | undefined): Promise<Descriptor> {
  const writer = await BlobWriter.open(blobsDir, signal);
  try {
    await writer.write(Buffer.from(JSON.stringify(value), "utf8"));
    const { digest, size } = await writer.commit((d: Digest) => join(blobsDir, digestHex(d)));
    return { mediaType, digest, size };
  } finally {
    await writer.discard();
  }
}

async function writeFileAtomically(path: string, content: string): Promise<void> {
  const temp = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(temp, content);
    await rename(temp, path);
  } catch (cause) {
    await rm(temp, { force: true });
    throw new ImagegenError("ERR_IMAGEGEN_IO", `cannot write ${path}`, { cause });
  }
}
