import { createHash } from "node:crypto";
import { readdir, rmdir } from "node:fs/promises";
import { dirname } from "node:path";
import type { Logger } from "pino";
import { writeFileAtomic } from "../util/index.js";
import { modeIfExists, readIfExists, removeFile } from "./atomic-file.js";
import { RuntimeConfigError, errnoCode } from "./errors.js";
import type { HostRoot } from "./host-root.js";
import { isManaged } from "./managed-marker.js";
import type { FileChange, Problem, RuntimeKind } from "./report.js";

/** In the state dir: which files Shoal wrote and where the originals are. */
export const STATE_FILE = "state.json";
/** In the state dir: originals, under their node path (`backups/etc/containerd/certs.d/docker.io/hosts.toml`). */
export const BACKUP_DIR = "backups";
const STATE_SCHEMA_VERSION = 1;

/** One file Shoal owns on the node. */
export interface ManagedEntry {
  /** Node path, symlinks resolved. */
  readonly path: string;
  readonly runtime: RuntimeKind;
  /** What was there before Shoal first wrote it. */
  readonly original: "absent" | "backup";
  /** Node path of the copy of the original (original = "backup"). */
  readonly backup?: string;
  /** Permission bits of the original, restored with it. */
  readonly mode?: number;
  /** SHA-256 (hex) of what Shoal last wrote: a file with other content was changed by someone else. */
  readonly writtenSha256: string;
  /** Directories created for the file, outermost first; removed on restore when empty. */
  readonly createdDirs: readonly string[];
}

/** A file as `shoal configure` wants it. */
export interface DesiredFile {
  /** Node path, symlinks resolved. */
  readonly path: string;
  readonly runtime: RuntimeKind;
  readonly content: string;
}

export interface ApplyOutcome {
  readonly changes: FileChange[];
  readonly problems: Problem[];
}

interface Context {
  readonly dryRun: boolean;
  readonly signal: AbortSignal;
  readonly logger: Logger;
}

function sha256(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * The files Shoal owns on a node and the backups of what they replaced, persisted in the state
 * dir. The first backup of a file is kept for good: later runs never back up Shoal's own file.
 */
export class ManagedFiles {
  private readonly entries: Map<string, ManagedEntry>;

  private constructor(
    private readonly root: HostRoot,
    /** Node path of the state dir, symlinks resolved. */
    readonly stateDir: string,
    entries: readonly ManagedEntry[],
  ) {
    this.entries = new Map(entries.map((e) => [e.path, e]));
  }

  /** Reads the state; an absent file is an empty state. Throws ERR_RUNTIME_STATE_INVALID when it is unusable. */
  static async load(root: HostRoot, stateDir: string, signal: AbortSignal): Promise<ManagedFiles> {
    const file = `${stateDir}/${STATE_FILE}`;
    let text: Buffer | undefined;
    try {
      text = await readIfExists(await root.locate(file), signal);
    } catch (cause) {
      throw new RuntimeConfigError("ERR_RUNTIME_STATE_INVALID", `cannot read ${file} (${errnoCode(cause) ?? String(cause)})`, { cause });
    }
    if (text === undefined) return new ManagedFiles(root, stateDir, []);
    let doc: unknown;
    try {
      doc = JSON.parse(text.toString("utf8"));
    } catch (cause) {
      throw new RuntimeConfigError("ERR_RUNTIME_STATE_INVALID", `${file} is not valid JSON`, { cause });
    }
    const entries = (doc as { schemaVersion?: unknown; entries?: unknown } | null)?.entries;
    if (
      (doc as { schemaVersion?: unknown } | null)?.schemaVersion !== STATE_SCHEMA_VERSION ||
      !Array.isArray(entries) ||
      !entries.every(isEntry)
    ) {
      throw new RuntimeConfigError("ERR_RUNTIME_STATE_INVALID", `${file} is not a shoal configure state (schema ${STATE_SCHEMA_VERSION})`);
    }
    return new ManagedFiles(root, stateDir, entries);
  }

  get size(): number {
    return this.entries.size;
  }

  paths(): string[] {
    return [...this.entries.keys()].sort();
  }

  /**
   * Makes every desired file exist with its content, backing up originals first; restores files
   * Shoal owns that are no longer desired (e.g. `_default` dropped from --registries).
   */
  async apply(desired: readonly DesiredFile[], context: Context): Promise<ApplyOutcome> {
    const changes: FileChange[] = [];
    const problems: Problem[] = [];
    const writes: { file: DesiredFile; entry: ManagedEntry }[] = [];
    // Phase 1: decide, and copy originals into the state dir, before touching any runtime file.
    for (const file of desired) {
      context.signal.throwIfAborted();
      const where = await this.root.locate(file.path);
      const current = await readIfExists(where, context.signal);
      const entry = this.entries.get(file.path);
      const wantedSha = sha256(file.content);
      if (current !== undefined && sha256(current) === wantedSha) {
        changes.push({ path: file.path, action: "unchanged", runtime: file.runtime, ...(entry?.backup ? { backup: entry.backup } : {}) });
        if (entry !== undefined && entry.writtenSha256 !== wantedSha) this.entries.set(file.path, { ...entry, writtenSha256: wantedSha });
        if (entry === undefined) {
          // Shoal's file without a record (state dir lost): own it, with nothing to restore but absence.
          problems.push(adopted(file));
          this.entries.set(file.path, {
            path: file.path,
            runtime: file.runtime,
            original: "absent",
            writtenSha256: wantedSha,
            createdDirs: [],
          });
        }
        continue;
      }
      if (entry !== undefined) {
        if (current !== undefined && sha256(current) !== entry.writtenSha256 && !isManaged(current)) {
          problems.push({
            code: "MANAGED_FILE_MODIFIED",
            severity: "warning",
            runtime: file.runtime,
            file: file.path,
            message: `${file.path} was changed since shoal configure wrote it; it is replaced again (the original from before Shoal stays in ${entry.backup ?? "no backup: there was none"})`,
          });
        }
        const next = { ...entry, writtenSha256: wantedSha };
        writes.push({ file, entry: next });
        changes.push({
          path: file.path,
          action: current === undefined ? "created" : "updated",
          runtime: file.runtime,
          ...(entry.backup ? { backup: entry.backup } : {}),
        });
        continue;
      }
      if (current === undefined || isManaged(current)) {
        if (current !== undefined) problems.push(adopted(file));
        writes.push({
          file,
          entry: { path: file.path, runtime: file.runtime, original: "absent", writtenSha256: wantedSha, createdDirs: [] },
        });
        changes.push({ path: file.path, action: current === undefined ? "created" : "updated", runtime: file.runtime });
        continue;
      }
      const backup = `${this.stateDir}/${BACKUP_DIR}${file.path}`;
      const mode = await modeIfExists(where);
      if (!context.dryRun) {
        await this.root.makeDirs(dirname(backup));
        await writeFileAtomic(await this.root.locate(backup), current, { mode: 0o600, signal: context.signal });
      }
      writes.push({
        file,
        entry: {
          path: file.path,
          runtime: file.runtime,
          original: "backup",
          backup,
          ...(mode !== undefined ? { mode } : {}),
          writtenSha256: wantedSha,
          createdDirs: [],
        },
      });
      changes.push({ path: file.path, action: "updated", runtime: file.runtime, backup });
    }
    const wanted = new Set(desired.map((d) => d.path));
    const stale = [...this.entries.values()].filter((e) => !wanted.has(e.path));
    if (context.dryRun) {
      for (const entry of stale)
        changes.push({
          path: entry.path,
          action: entry.original === "absent" ? "removed" : "restored",
          runtime: entry.runtime,
          ...(entry.backup ? { backup: entry.backup } : {}),
        });
      return { changes, problems };
    }
    // Phase 2: record the intent (backups are safe on disk now), then write the runtime files.
    for (const { entry } of writes) this.entries.set(entry.path, entry);
    await this.save(context.signal);
    for (const { file, entry } of writes) {
      try {
        const createdDirs = await this.root.makeDirs(dirname(file.path));
        if (createdDirs.length > 0) this.entries.set(entry.path, { ...entry, createdDirs: [...entry.createdDirs, ...createdDirs] });
        await writeFileAtomic(await this.root.locate(file.path), file.content, { signal: context.signal });
        context.logger.info({ path: file.path, runtime: file.runtime }, "wrote runtime configuration");
      } catch (error) {
        context.signal.throwIfAborted();
        problems.push(writeFailed(file.path, file.runtime, "write", error));
        const index = changes.findIndex((c) => c.path === file.path);
        if (index >= 0) changes.splice(index, 1);
      }
    }
    const restored = await this.restoreEntries(stale, context);
    await this.save(context.signal);
    return { changes: [...changes, ...restored.changes], problems: [...problems, ...restored.problems] };
  }

  /** Puts every original back and forgets what was restored; files changed by others are kept. */
  async restoreAll(context: Context): Promise<ApplyOutcome> {
    const outcome = await this.restoreEntries([...this.entries.values()], context);
    if (!context.dryRun) await this.save(context.signal);
    return outcome;
  }

  private async restoreEntries(entries: readonly ManagedEntry[], context: Context): Promise<ApplyOutcome> {
    const changes: FileChange[] = [];
    const problems: Problem[] = [];
    const emptiedDirs: string[] = [];
    for (const entry of [...entries].sort((a, b) => a.path.localeCompare(b.path))) {
      context.signal.throwIfAborted();
      const where = await this.root.locate(entry.path);
      const backupAt = entry.backup === undefined ? undefined : await this.root.locate(entry.backup);
      const withBackup = entry.backup ? { backup: entry.backup } : {};
      try {
        const current = await readIfExists(where, context.signal);
        const original = backupAt === undefined ? undefined : await readIfExists(backupAt, context.signal);
        if (entry.original === "backup" && original === undefined) {
          problems.push({
            code: "STATE_INVALID",
            severity: "error",
            runtime: entry.runtime,
            file: entry.path,
            message: `the backup ${entry.backup ?? ""} of ${entry.path} is missing: the file is left as it is`,
          });
          continue;
        }
        const ours = current === undefined || sha256(current) === entry.writtenSha256 || isManaged(current);
        const alreadyOriginal = original !== undefined && current !== undefined && original.equals(current);
        if (!ours && !alreadyOriginal) {
          problems.push({
            code: "MANAGED_FILE_MODIFIED",
            severity: "warning",
            runtime: entry.runtime,
            file: entry.path,
            message: `${entry.path} was changed since shoal configure wrote it, so it is kept${entry.backup ? `; the original from before Shoal is in ${entry.backup}` : ""}`,
          });
          changes.push({ path: entry.path, action: "kept", runtime: entry.runtime, ...withBackup });
          continue;
        }
        if (original === undefined) {
          if (!context.dryRun) await removeFile(where);
          changes.push({ path: entry.path, action: "removed", runtime: entry.runtime });
        } else {
          if (!context.dryRun && !alreadyOriginal) {
            await this.root.makeDirs(dirname(entry.path));
            await writeFileAtomic(where, original, { ...(entry.mode !== undefined ? { mode: entry.mode } : {}), signal: context.signal });
          }
          changes.push({ path: entry.path, action: "restored", runtime: entry.runtime, ...withBackup });
        }
        if (context.dryRun) continue;
        context.logger.info({ path: entry.path, original: entry.original }, "restored runtime configuration");
        if (backupAt !== undefined) await removeFile(backupAt);
        emptiedDirs.push(...entry.createdDirs);
        this.entries.delete(entry.path);
      } catch (error) {
        context.signal.throwIfAborted();
        problems.push(writeFailed(entry.path, entry.runtime, "restore", error));
      }
    }
    if (!context.dryRun) {
      // Deepest first, and only when empty: another file may still live there.
      for (const dir of [...new Set(emptiedDirs)].sort((a, b) => b.length - a.length)) await this.removeDirIfEmpty(dir);
      await this.pruneBackupDirs();
    }
    return { changes, problems };
  }

  /** Writes the state file, or removes it when nothing is managed any more. */
  private async save(signal: AbortSignal): Promise<void> {
    const file = `${this.stateDir}/${STATE_FILE}`;
    if (this.entries.size === 0) {
      await removeFile(await this.root.locate(file));
      return;
    }
    await this.root.makeDirs(this.stateDir);
    const entries = [...this.entries.values()].sort((a, b) => a.path.localeCompare(b.path));
    await writeFileAtomic(await this.root.locate(file), `${JSON.stringify({ schemaVersion: STATE_SCHEMA_VERSION, entries }, null, 2)}\n`, {
      mode: 0o600,
      signal,
    });
  }

  private async removeDirIfEmpty(nodeDir: string): Promise<boolean> {
    try {
      await rmdir(await this.root.locate(nodeDir));
      return true;
    } catch (error) {
      const code = errnoCode(error);
      if (code === "ENOTEMPTY" || code === "EEXIST" || code === "ENOENT" || code === "ENOTDIR") return false;
      throw error;
    }
  }

  /** Removes directories under backups/ left empty by restored files, and backups/ itself. */
  private async pruneBackupDirs(): Promise<void> {
    const top = `${this.stateDir}/${BACKUP_DIR}`;
    const visit = async (dir: string): Promise<void> => {
      let names: string[];
      try {
        names = await readdir(await this.root.locate(dir));
      } catch (error) {
        if (errnoCode(error) === "ENOENT" || errnoCode(error) === "ENOTDIR") return;
        throw error;
      }
      for (const name of names) await visit(`${dir}/${name}`);
      await this.removeDirIfEmpty(dir);
    };
    await visit(top);
  }
}

function adopted(file: DesiredFile): Problem {
  return {
    code: "MANAGED_FILE_ADOPTED",
    severity: "info",
    runtime: file.runtime,
    file: file.path,
    message: `${file.path} was written by shoal configure but has no backup record (state dir lost?): it is treated as Shoal's, and --restore will remove it`,
  };
}

function writeFailed(path: string, runtime: RuntimeKind, what: "write" | "restore", error: unknown): Problem {
  const reason = errnoCode(error) ?? (error instanceof Error ? error.message : String(error));
  return { code: "WRITE_FAILED", severity: "error", runtime, file: path, message: `cannot ${what} ${path} (${reason})` };
}

function isEntry(value: unknown): value is ManagedEntry {
  if (typeof value !== "object" || value === null) return false;
  const e = value as Partial<Record<keyof ManagedEntry, unknown>>;
  return (
    typeof e.path === "string" &&
    e.path.startsWith("/") &&
    !e.path.split("/").includes("..") &&
    (e.runtime === "containerd" || e.runtime === "crio") &&
    (e.original === "absent" ||
      (e.original === "backup" && typeof e.backup === "string" && e.backup.startsWith("/") && !e.backup.split("/").includes(".."))) &&
    typeof e.writtenSha256 === "string" &&
    Array.isArray(e.createdDirs) &&
    e.createdDirs.every((d) => typeof d === "string" && d.startsWith("/") && !d.split("/").includes(".."))
  );
}
