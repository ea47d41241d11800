import { readFile, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { syncDir } from "../util/index.js";
import { errnoCode } from "./errors.js";

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
