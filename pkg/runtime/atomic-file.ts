import { randomBytes } from "node:crypto";
import { open, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { errnoCode } from "./errors.js";

/** Mode of files written when there is no original to copy it from: world-readable config. */
export const DEFAULT_FILE_MODE = 0o644;

/** ENOENT, or ENOTDIR when a parent is a file: either way there is no such file. */
function isAbsent(error: unknown): boolean {
  const code = errnoCode(error);
  return code === "ENOENT" || code === "ENOTDIR";
}

/** A file's bytes, or undefined when it does not exist. */
export async function readIfExists(path: string, signal: AbortSignal): Promise<Buffer | undefined> {
  try {
    return await readFile(path, { signal });
  } catch (error) {
    if (isAbsent(error)) return undefined;
    throw error;
  }
}

/** Permission bits of a file, or undefined when it does not exist. */
export async function modeIfExists(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mode & 0o7777;
  } catch (error) {
    if (isAbsent(error)) return undefined;
    throw error;
  }
}

/**
 * Replaces `path` with `data` atomically: a temp file in the same directory, fsync, rename, fsync
 * of the directory. containerd re-reads hosts.toml on every pull, so it must never see half a file.
 */
export async function writeFileAtomic(path: string, data: string | Buffer, options: { mode?: number; signal: AbortSignal }): Promise<void> {
  options.signal.throwIfAborted();
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.shoal-${process.pid}-${randomBytes(4).toString("hex")}.tmp`);
  const handle = await open(temp, "wx", options.mode ?? DEFAULT_FILE_MODE);
  try {
    await handle.writeFile(data);
    // open() applies the umask; the mode must be exactly what was asked for (a restored original's).
    await handle.chmod(options.mode ?? DEFAULT_FILE_MODE);
    await handle.datasync();
  } catch (error) {
    await handle.close();
    await rm(temp, { force: true });
    throw error;
  }
  await handle.close();
  try {
    options.signal.throwIfAborted();
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  await syncDir(dir);
}

/** Removes a file; true when it was there. */
export async function removeFile(path: string): Promise<boolean> {
  try {
    await rm(path);
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return false;
    throw error;
  }
  await syncDir(dirname(path));
  return true;
}

/** Makes a rename or unlink in `dir` durable. Some file systems refuse fsync on a directory: ignore that. */
async function syncDir(dir: string): Promise<void> {
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
