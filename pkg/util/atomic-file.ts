import { randomBytes } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** Mode of files written when none is given: readable by all, writable by the owner. */
export const DEFAULT_FILE_MODE = 0o644;

/** Whether a file name is one of writeFileAtomic's temporary files (left behind by a process killed mid-write). */
export function isAtomicWriteTemp(name: string): boolean {
  return /^\..+\.\d+-[0-9a-f]{12}\.tmp$/.test(name);
}

export interface AtomicWriteOptions {
  /** Exact permission bits (the umask does not apply); DEFAULT_FILE_MODE by default. */
  readonly mode?: number;
  /** Where the temporary file is written: a directory on the same file system; the target's by default. */
  readonly tmpDir?: string;
  /** Also make the rename durable (fsync of the target's directory); on by default. */
  readonly syncDir?: boolean;
  readonly signal?: AbortSignal;
}

/**
 * Replaces `path` with `data` so that no reader ever sees half a file and a crash leaves the old or the
 * new one: a temporary file, fdatasync, rename, and (with `syncDir`) an fsync of the directory.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, options: AtomicWriteOptions = {}): Promise<void> {
  options.signal?.throwIfAborted();
  const mode = options.mode ?? DEFAULT_FILE_MODE;
  const temp = join(options.tmpDir ?? dirname(path), `.${basename(path)}.${process.pid}-${randomBytes(6).toString("hex")}.tmp`);
  const handle = await open(temp, "wx", mode);
  try {
    await handle.writeFile(data);
    // open() applies the umask; the mode must be exactly what was asked for (e.g. a restored original's).
    await handle.chmod(mode);
    await handle.datasync();
  } catch (error: unknown) {
    await handle.close();
    await rm(temp, { force: true });
    throw error;
  }
  await handle.close();
  try {
    options.signal?.throwIfAborted();
    await rename(temp, path);
  } catch (error: unknown) {
    await rm(temp, { force: true });
    throw error;
  }
  if (options.syncDir ?? true) await syncDir(dirname(path));
}

/** Makes a rename or unlink in `dir` durable. Some file systems refuse fsync on a directory: ignored there. */
export async function syncDir(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, "r");
    await handle.sync();
  } catch {
    // Durability of the rename is best effort; the rename itself already happened atomically.
  } finally {
    await handle?.close();
  }
}
