import { constants, type Dirent } from "node:fs";
import { lstat, mkdir, open, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { type DigestAlgorithm, type Digest, isDigest } from "../oci/index.js";
import type { BlobInfo } from "./blob-store.js";
import { DATA_SUFFIX, DIGEST_ALGORITHMS, type DiskLayout, META_SUFFIX, PIECES_SUFFIX, STATE_SUFFIX } from "./disk-layout.js";
import { decodePartialState, MAX_STATE_FILE_BYTES, type PartialStateRecord } from "./partial-state.js";
import { isValidMediaType } from "./store-helpers.js";

/** Media-type sidecars hold one short JSON object. */
const MAX_META_FILE_BYTES = 4096;

export interface RescannedBlob {
  readonly info: BlobInfo;
  readonly mtimeMs: number;
}

export interface RescanResult {
  readonly blobs: RescannedBlob[];
  readonly partials: PartialStateRecord[];
}

/**
 * Brings the store directory to a known state at start-up and reports what it holds. Complete blobs are
 * returned as found (their content is verified later); everything in tmp/, every name that is not ours
 * (including symlinks and directories where files belong), sidecars without a blob, and partials whose
 * state is unreadable or does not match their data file are removed.
 */
export async function rescan(layout: DiskLayout, logger: Logger | undefined): Promise<RescanResult> {
  await mkdir(layout.root, { recursive: true });
  const cleaner = new Cleaner(logger);
  for (const dir of [layout.blobsDir, layout.partialDir, layout.tmpDir]) await cleaner.ensureDir(dir);
  for (const entry of await readdir(layout.tmpDir)) await cleaner.remove(join(layout.tmpDir, entry), "temporary file");
  await cleaner.keepOnlyAlgorithmDirs(layout.blobsDir);
  await cleaner.keepOnlyAlgorithmDirs(layout.partialDir);
  const blobs: RescannedBlob[] = [];
  const partials: PartialStateRecord[] = [];
  for (const algorithm of DIGEST_ALGORITHMS) {
    const found = await scanBlobs(layout, algorithm, cleaner);
    blobs.push(...found);
    const complete = new Set(found.map((blob) => blob.info.digest));
    partials.push(...(await scanPartials(layout, algorithm, complete, cleaner)));
  }
  return { blobs, partials };
}

async function scanBlobs(layout: DiskLayout, algorithm: DigestAlgorithm, cleaner: Cleaner): Promise<RescannedBlob[]> {
  const dir = layout.blobDir(algorithm);
  const entries = await readdir(dir, { withFileTypes: true });
  const files = new Map<string, Dirent>();
  for (const entry of entries) files.set(entry.name, entry);
  const blobs: RescannedBlob[] = [];
  for (const entry of entries) {
    const path = join(dir, entry.name);
    const sidecar = [META_SUFFIX, PIECES_SUFFIX].find((suffix) => entry.name.endsWith(suffix));
    const blobName = sidecar === undefined ? entry.name : entry.name.slice(0, -sidecar.length);
    const digest = digestFromName(algorithm, blobName);
    if (!entry.isFile() || digest === undefined) {
      await cleaner.remove(path, "not a blob file");
      continue;
    }
    if (blobName !== entry.name) {
      if (files.get(blobName)?.isFile() !== true) await cleaner.remove(path, "sidecar without blob");
      continue;
    }
    const stats = await lstat(path);
    const meta = files.get(entry.name + META_SUFFIX)?.isFile() === true ? await readMediaType(path + META_SUFFIX, cleaner) : undefined;
    const info: BlobInfo = meta === undefined ? { digest, size: stats.size } : { digest, size: stats.size, mediaType: meta };
    blobs.push({ info, mtimeMs: stats.mtimeMs });
  }
  return blobs;
}

async function scanPartials(
  layout: DiskLayout,
  algorithm: DigestAlgorithm,
  complete: ReadonlySet<Digest>,
  cleaner: Cleaner,
): Promise<PartialStateRecord[]> {
  const dir = layout.partialAlgorithmDir(algorithm);
  const entries = await readdir(dir, { withFileTypes: true });
  const names = new Set(entries.filter((entry) => entry.isFile()).map((entry) => entry.name));
  const partials: PartialStateRecord[] = [];
  for (const entry of entries) {
    const path = join(dir, entry.name);
    const suffix = entry.name.endsWith(DATA_SUFFIX) ? DATA_SUFFIX : entry.name.endsWith(STATE_SUFFIX) ? STATE_SUFFIX : undefined;
    const digest = suffix === undefined ? undefined : digestFromName(algorithm, entry.name.slice(0, -suffix.length));
    if (!entry.isFile() || digest === undefined) {
      await cleaner.remove(path, "not a partial file");
      continue;
    }
    const hex = entry.name.slice(0, -(suffix ?? "").length);
    const dataPath = join(dir, hex + DATA_SUFFIX);
    const statePath = join(dir, hex + STATE_SUFFIX);
    if (suffix === DATA_SUFFIX) {
      if (!names.has(hex + STATE_SUFFIX)) await cleaner.remove(dataPath, "partial data without state");
      continue;
    }
    if (complete.has(digest)) {
      await cleaner.removeAll([dataPath, statePath], "partial of a complete blob");
      continue;
    }
    const state = names.has(hex + DATA_SUFFIX) ? await readState(statePath, digest) : undefined;
    const dataSize = state === undefined ? undefined : await fileSize(dataPath);
    if (state === undefined || dataSize !== state.size) {
      await cleaner.removeAll([dataPath, statePath], "partial state unreadable or not matching its data");
      continue;
    }
    partials.push(state);
  }
  return partials;
}

function digestFromName(algorithm: DigestAlgorithm, hex: string): Digest | undefined {
  const candidate = `${algorithm}:${hex}`;
  return isDigest(candidate) ? candidate : undefined;
}

async function readSmallFile(path: string, maxBytes: number): Promise<string | undefined> {
  // O_NOFOLLOW: a symlink planted in the store is never followed out of it.
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const buffer = Buffer.alloc(maxBytes + 1);
    const { bytesRead } = await handle.read(buffer, 0, buffer.byteLength, 0);
    return bytesRead > maxBytes ? undefined : buffer.subarray(0, bytesRead).toString("utf8");
  } finally {
    await handle.close();
  }
}

async function readMediaType(path: string, cleaner: Cleaner): Promise<string | undefined> {
  const text = await readSmallFile(path, MAX_META_FILE_BYTES);
  try {
    const value: unknown = JSON.parse(text ?? "");
    if (typeof value === "object" && value !== null && "mediaType" in value && isValidMediaType(value.mediaType)) return value.mediaType;
  } catch {
    // Handled below like any other unusable sidecar.
  }
  // The blob itself is intact (it is verified by content); only its Content-Type hint is lost.
  await cleaner.remove(path, "unreadable media-type sidecar");
  return undefined;
}

async function readState(path: string, digest: Digest): Promise<PartialStateRecord | undefined> {
  const text = await readSmallFile(path, MAX_STATE_FILE_BYTES);
  return text === undefined ? undefined : decodePartialState(text, digest);
}

async function fileSize(path: string): Promise<number | undefined> {
  const stats = await lstat(path);
  return stats.isFile() ? stats.size : undefined;
}

/** Removes what does not belong; a failure to remove is logged, not fatal (the name is ignored either way). */
class Cleaner {
  constructor(private readonly logger: Logger | undefined) {}

  async remove(path: string, why: string): Promise<void> {
    this.logger?.warn({ path, why }, "removing unexpected file from the store");
    try {
      // rm never follows a symlink: it removes the link itself.
      await rm(path, { recursive: true, force: true });
    } catch (error: unknown) {
      this.logger?.error({ err: error, path }, "could not remove file from the store");
    }
  }

  async removeAll(paths: readonly string[], why: string): Promise<void> {
    for (const path of paths) await this.remove(path, why);
  }

  async ensureDir(path: string): Promise<void> {
    const stats = await lstat(path).catch(() => undefined);
    if (stats !== undefined && !stats.isDirectory()) await this.remove(path, "expected a directory");
    await mkdir(path, { recursive: true });
  }

  async keepOnlyAlgorithmDirs(dir: string): Promise<void> {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (!entry.isDirectory() || !DIGEST_ALGORITHMS.includes(entry.name as DigestAlgorithm)) {
        await this.remove(join(dir, entry.name), "unknown entry");
      }
    }
    for (const algorithm of DIGEST_ALGORITHMS) await this.ensureDir(join(dir, algorithm));
  }
}
