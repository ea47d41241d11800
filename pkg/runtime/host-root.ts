import { lstat, mkdir, readFile, readlink, realpath, stat } from "node:fs/promises";
import { join, posix } from "node:path";
import { RuntimeConfigError, errnoCode } from "./errors.js";

/** Linux's own limit (MAXSYMLINKS); a longer chain is a loop or an attack. */
export const MAX_SYMLINK_HOPS = 40;

/**
 * Validates a path as the node sees it (`/etc/containerd/certs.d`): absolute, no NUL, no `..`
 * segment. Returns it normalised, without a trailing slash.
 */
export function parseNodePath(raw: string): string {
  if (raw === "" || !raw.startsWith("/"))
    throw new RuntimeConfigError("ERR_RUNTIME_PATH_INVALID", "expected an absolute path as the node sees it, e.g. /etc/containerd");
  if (raw.includes("\0")) throw new RuntimeConfigError("ERR_RUNTIME_PATH_INVALID", "a path cannot contain NUL");
  // `..` is refused outright rather than normalised away: nobody writes it on purpose here.
  if (raw.split("/").includes("..")) throw new RuntimeConfigError("ERR_RUNTIME_PATH_INVALID", "a path must not contain '..'");
  const normalised = posix.normalize(raw).replace(/\/+$/, "");
  return normalised === "" ? "/" : normalised;
}

/** Whether node path `inner` is `outer` or lies below it. */
export function isWithin(inner: string, outer: string): boolean {
  return inner === outer || outer === "/" || inner.startsWith(`${outer}/`);
}

/**
 * The node's file system as mounted at `root` in this container (`--host-root`, e.g. /host).
 *
 * Node paths are resolved the way the node would resolve them: a symlink whose target is absolute
 * (`/etc/containerd/certs.d -> /data/certs`) means `<root>/data/certs`, not the container's /data,
 * and `..` stops at the root. So whatever the node's symlinks say, every file touched is inside root.
 */
export class HostRoot {
  private constructor(readonly root: string) {}

  static async open(root: string): Promise<HostRoot> {
    const field = "hostRoot";
    if (!root.startsWith("/"))
      throw new RuntimeConfigError("ERR_RUNTIME_PATH_INVALID", `host root ${JSON.stringify(root)} must be an absolute path`, { field });
    let real: string;
    try {
      real = await realpath(root);
      if (!(await stat(real)).isDirectory())
        throw new RuntimeConfigError("ERR_RUNTIME_PATH_INVALID", `host root ${root} is not a directory`, { field });
    } catch (error) {
      if (error instanceof RuntimeConfigError) throw error;
      throw new RuntimeConfigError("ERR_RUNTIME_PATH_INVALID", `host root ${root} cannot be used (${errnoCode(error) ?? String(error)})`, {
        cause: error,
        field,
      });
    }
    return new HostRoot(real);
  }

  /** Where a (resolved) node path is in this container. */
  containerPath(nodePath: string): string {
    return nodePath === "/" ? this.root : join(this.root, nodePath);
  }

  /**
   * Follows every symlink of `nodePath` inside the root and returns the node path it really names.
   * Components that do not exist yet are kept as they are (a file about to be created).
   */
  async resolve(nodePath: string): Promise<string> {
    const pending = parseNodePath(nodePath)
      .split("/")
      .filter((s) => s !== "");
    const resolved: string[] = [];
    let hops = 0;
    let missing = false;
    while (pending.length > 0) {
      const segment = pending.shift() ?? "";
      if (segment === "" || segment === ".") continue;
      if (segment === "..") {
        resolved.pop();
        continue;
      }
      if (missing) {
        resolved.push(segment);
        continue;
      }
      const here = join(this.root, ...resolved, segment);
      let isLink = false;
      try {
        isLink = (await lstat(here)).isSymbolicLink();
      } catch (error) {
        const code = errnoCode(error);
        if (code !== "ENOENT" && code !== "ENOTDIR") throw error;
        missing = true;
      }
      if (!isLink) {
        resolved.push(segment);
        continue;
      }
      if (++hops > MAX_SYMLINK_HOPS) {
        throw new RuntimeConfigError("ERR_RUNTIME_SYMLINK_LOOP", `too many symlinks resolving ${nodePath} under ${this.root}`);
      }
      const target = await readlink(here);
      if (target.startsWith("/")) resolved.length = 0;
      pending.unshift(...target.split("/"));
    }
    return `/${resolved.join("/")}`;
  }

  /** Container path of `nodePath` after resolving its symlinks inside the root. */
  async locate(nodePath: string): Promise<string> {
    return this.containerPath(await this.resolve(nodePath));
  }

  /**
   * Creates the node directory `nodeDir` and any missing parents, mode 0755. Returns the
   * node paths it created, outermost first, so that they can be removed again on restore.
   */
  async makeDirs(nodeDir: string): Promise<string[]> {
    const segments = (await this.resolve(nodeDir)).split("/").filter((s) => s !== "");
    const created: string[] = [];
    for (let i = 1; i <= segments.length; i++) {
      const node = `/${segments.slice(0, i).join("/")}`;
      try {
        await mkdir(this.containerPath(node), { mode: 0o755 });
        created.push(node);
      } catch (error) {
        if (errnoCode(error) !== "EEXIST") throw error;
      }
    }
    return created;
  }

  /** Whether the node path exists (following symlinks inside the root). */
  async exists(nodePath: string): Promise<boolean> {
    try {
      await stat(await this.locate(nodePath));
      return true;
    } catch (error) {
      const code = errnoCode(error);
      if (code === "ENOENT" || code === "ENOTDIR") return false;
      throw error;
    }
  }

  /** A node file's text, or undefined when it does not exist. */
  async readText(nodePath: string, signal: AbortSignal): Promise<string | undefined> {
    try {
      return await readFile(await this.locate(nodePath), { encoding: "utf8", signal });
    } catch (error) {
      const code = errnoCode(error);
      if (code === "ENOENT" || code === "ENOTDIR") return undefined;
      throw error;
    }
  }
}
