import { randomBytes } from "node:crypto";
import { type FileHandle, mkdir, open, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Writable } from "node:stream";
import { type Digest, MEDIA_TYPE_OCI_INDEX, digestAlgorithm, digestHex } from "../../pkg/oci/index.js";

export const OCI_LAYOUT_VERSION = "1.0.0";
/** Partially written blobs live here, inside the layout so that the final rename stays on one file system. */
const TEMP_DIR = ".shoal-fetch-tmp";

/** A descriptor as index.json records it. */
export interface LayoutDescriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly artifactType?: string;
  readonly platform?: Readonly<Record<string, unknown>>;
  readonly annotations?: Readonly<Record<string, string>>;
}

/**
 * Writes an OCI image layout (image-spec image-layout.md): `oci-layout`, `blobs/<alg>/<hex>`, and
 * `index.json` last, so a directory whose index.json names an entry holds all of it. A blob appears
 * under its digest only once complete and verified: it is written to a temp file and renamed.
 */
export class LayoutWriter {
  private tempCounter = 0;

  private constructor(readonly dir: string) {}

  /** Creates `dir`, or opens an existing layout to add to; refuses a non-empty directory that is no layout. */
  static async open(dir: string): Promise<LayoutWriter> {
    const entries: string[] = await readdir(dir).catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw error;
    });
    if (entries.length > 0 && !entries.includes("oci-layout")) {
      throw new Error(`${dir} is neither empty nor an OCI image layout (it has no oci-layout file)`);
    }
    await mkdir(join(dir, TEMP_DIR), { recursive: true });
    await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: OCI_LAYOUT_VERSION }));
    return new LayoutWriter(dir);
  }

  blobPath(digest: Digest): string {
    return join(this.dir, "blobs", digestAlgorithm(digest), digestHex(digest));
  }

  /**
   * A sink for one blob's bytes. Whoever writes must `end()` it only after the digest is verified (as
   * pullImage does); `destroy()` discards the temp file.
   */
  blobSink(digest: Digest): Writable {
    return new BlobFileSink(this.tempPath(digest), this.blobPath(digest));
  }

  /** A small blob (a manifest) whose digest the caller has verified. */
  async writeBlob(digest: Digest, body: Uint8Array): Promise<void> {
    await mkdir(join(this.dir, "blobs", digestAlgorithm(digest)), { recursive: true });
    const temp = this.tempPath(digest);
    await writeFile(temp, body);
    await rename(temp, this.blobPath(digest));
  }

  /**
   * Adds `entry` to index.json. A tagged entry replaces the one with the same ref name (fetching a tag
   * again updates it) and an untagged entry for the same manifest; an untagged entry is added only if
   * no entry names that manifest yet.
   */
  async addToIndex(entry: LayoutDescriptor): Promise<void> {
    const path = join(this.dir, "index.json");
    let manifests: { digest?: unknown; annotations?: Record<string, unknown> }[] = [];
    const existing = await readFile(path, "utf8").catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    });
    if (existing !== undefined) {
      const parsed = parseIndex(existing);
      if (parsed === undefined) throw new Error(`${path} is not an OCI image index`);
      manifests = parsed as typeof manifests;
    }
    const name = entry.annotations?.[REF_NAME_ANNOTATION];
    if (name === undefined) {
      if (manifests.some((m) => m.digest === entry.digest)) return;
    } else {
      manifests = manifests.filter((m) => {
        const otherName = m.annotations?.[REF_NAME_ANNOTATION];
        return otherName !== name && !(otherName === undefined && m.digest === entry.digest);
      });
    }
    manifests.push(entry);
    const temp = join(this.dir, TEMP_DIR, `index-${process.pid}-${randomBytes(4).toString("hex")}.json`);
    await writeFile(temp, JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_INDEX, manifests }, null, 2));
    await rename(temp, path);
  }

  /** Removes the temp dir (and whatever a failed transfer left in it). */
  async close(): Promise<void> {
    await rm(join(this.dir, TEMP_DIR), { recursive: true, force: true });
  }

  private tempPath(digest: Digest): string {
    return join(this.dir, TEMP_DIR, `${digestHex(digest).slice(0, 16)}-${process.pid}-${this.tempCounter++}.tmp`);
  }
}

/** The annotation an OCI layout's index.json names tags with (image-spec annotations.md). */
export const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";

function parseIndex(text: string): unknown[] | undefined {
  try {
    const parsed = JSON.parse(text) as { manifests?: unknown };
    return Array.isArray(parsed.manifests) ? (parsed.manifests as unknown[]) : undefined;
  } catch {
    return undefined; // reported by the caller, naming the file
  }
}

/** Writes to a temp file; `end()` (after verification) makes it durable and renames it to its digest path. */
class BlobFileSink extends Writable {
  private handle: FileHandle | undefined;
  private position = 0;
  private renamed = false;

  constructor(
    private readonly temp: string,
    private readonly final: string,
  ) {
    super();
  }

  // Writable holds writes back until construction is done, so the sink can be handed out synchronously.
  override _construct(callback: (error?: Error | null) => void): void {
    mkdir(dirname(this.final), { recursive: true })
      .then(() => open(this.temp, "wx"))
      .then((handle) => {
        this.handle = handle;
        callback();
      }, callback);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.writeAll(chunk).then(() => {
      callback();
    }, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    const finish = async (): Promise<void> => {
      const handle = this.requireHandle();
      // datasync before rename: after a crash the name never points at a file whose data did not make it.
      await handle.datasync();
      await handle.close();
      this.handle = undefined;
      await rename(this.temp, this.final);
      this.renamed = true;
    };
    finish().then(() => {
      callback();
    }, callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const cleanup = async (): Promise<void> => {
      await this.handle?.close();
      this.handle = undefined;
      if (!this.renamed) await rm(this.temp, { force: true });
    };
    cleanup().then(
      () => {
        callback(error);
      },
      (cleanupError: unknown) => {
        callback(error ?? (cleanupError instanceof Error ? cleanupError : new Error(String(cleanupError))));
      },
    );
  }

  private async writeAll(chunk: Buffer): Promise<void> {
    const handle = this.requireHandle();
    for (let offset = 0; offset < chunk.length;) {
      const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset, this.position);
      offset += bytesWritten;
      this.position += bytesWritten;
    }
  }

  private requireHandle(): FileHandle {
    if (this.handle === undefined) throw new Error(`${this.temp} is not open`);
    return this.handle;
  }
}
