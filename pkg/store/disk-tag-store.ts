import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Logger } from "pino";
import { StoreError } from "./errors.js";
import { ioError, errnoCode } from "./store-helpers.js";
import { isStoredTag, TagRecords } from "./tag-records.js";
import type { TagRecord, TagStore } from "./tag-store.js";
import { isAtomicWriteTemp, writeFileAtomic } from "../util/index.js";

/** Changes are written at most this long after they happen (and at flush/close). */
export const TAG_FLUSH_DELAY_MS = 1000;
const TAGS_FILE = "tags.json";
const FILE_VERSION = 1;

export interface DiskTagStoreOptions {
  readonly dir: string;
  readonly logger?: Logger | undefined;
  readonly flushDelayMs?: number | undefined;
  /** Bound on remembered tags (default MAX_TAG_RECORDS); the oldest `seenAt` is dropped first. */
  readonly maxRecords?: number | undefined;
}

/**
 * TagStore persisted as one JSON file, `<dir>/tags.json`, loaded at open. Writes are debounced and atomic
 * (temporary file, fsync, rename). A corrupt file is logged and replaced, never fatal: losing the fallback
 * tags only matters while the upstream is down.
 */
export class DiskTagStore implements TagStore {
  private readonly records: TagRecords;
  private readonly root: string;
  private readonly path: string;
  private timer: NodeJS.Timeout | undefined;
  private dirty = false;
  private writing: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(private readonly options: DiskTagStoreOptions) {
    this.records = new TagRecords(options.maxRecords);
    this.root = resolve(options.dir);
    this.path = join(this.root, TAGS_FILE);
  }

  static async open(options: DiskTagStoreOptions): Promise<DiskTagStore> {
    const store = new DiskTagStore(options);
    await store.load();
    // A corrupt or partly malformed file is rewritten soon rather than left to be reported at every start.
    if (store.dirty) store.scheduleWrite();
    return store;
  }

  get(registry: string, name: string, tag: string): TagRecord | undefined {
    return this.records.get(registry, name, tag);
  }

  set(registry: string, name: string, tag: string, record: TagRecord): void {
    if (this.closed) throw new StoreError("ERR_STORE_CLOSED", "tag store closed");
    this.records.set(registry, name, tag, record);
    this.dirty = true;
    this.scheduleWrite();
  }

  private scheduleWrite(): void {
    if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.flush().catch((error: unknown) => {
          this.options.logger?.error({ err: error }, "writing tags failed; retrying at the next change or flush");
        });
      }, this.options.flushDelayMs ?? TAG_FLUSH_DELAY_MS);
      // Pending writes never keep the process alive; close() flushes them.
      this.timer.unref();
    }
  }

  /** Writes pending changes now (after any write in progress). */
  flush(): Promise<void> {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const run = this.writing.then(() => this.writeNow());
    this.writing = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.flush();
  }

  private async writeNow(): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    const body = JSON.stringify({ version: FILE_VERSION, tags: this.records.values() });
    try {
      // Temporary files go next to tags.json: the blob store owns (and empties) its own tmp/.
      await writeFileAtomic(this.path, body, { tmpDir: this.root, syncDir: true });
    } catch (error: unknown) {
      this.dirty = true;
      throw ioError(`writing ${this.path}`, error);
    }
  }

  private async load(): Promise<void> {
    const { logger } = this.options;
    const root = this.root;
    try {
      await mkdir(root, { recursive: true });
      // Temporary files of a process killed mid-write.
      for (const name of await readdir(root)) {
        if (isAtomicWriteTemp(name)) await rm(join(root, name), { force: true });
      }
    } catch (error: unknown) {
      throw ioError(`opening tag store in ${root}`, error);
    }
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (error: unknown) {
      if (errnoCode(error) === "ENOENT") return;
      throw ioError(`reading ${this.path}`, error);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error: unknown) {
      logger?.warn({ err: error, path: this.path }, "tag file is corrupt; starting empty and replacing it");
      this.dirty = true;
      return;
    }
    const tags =
      typeof parsed === "object" && parsed !== null && "tags" in parsed && Array.isArray(parsed.tags)
        ? (parsed.tags as unknown[])
        : undefined;
    if (tags === undefined) {
      logger?.warn({ path: this.path }, "tag file has an unknown format; starting empty and replacing it");
      this.dirty = true;
      return;
    }
    let skipped = 0;
    for (const tag of tags) {
      if (isStoredTag(tag)) this.records.set(tag.registry, tag.name, tag.tag, tag);
      else skipped++;
    }
    if (skipped > 0) {
      logger?.warn({ path: this.path, skipped }, "skipped malformed tag records");
      this.dirty = true;
    }
  }
}
