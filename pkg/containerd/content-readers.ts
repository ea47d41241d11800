import { type FileHandle, open } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { type Digest, digestAlgorithm, digestHex } from "../oci/index.js";
import { type BlobReader, StoreError } from "../store/index.js";
import type { ContainerdClient } from "./containerd-client.js";

/**
 * Reads of one blob through containerd's content API (Read calls over the socket), for nodes where the
 * content directory is not mounted. Each read is one call of at most the caller's buffer.
 */
export function apiReader(client: Pick<ContainerdClient, "read">, digest: Digest, size: number): BlobReader {
  let closed = false;
  return {
    size,
    read: async (target, position) => {
      if (closed) throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `reader of ${digest} is closed`);
      checkBounds(digest, size, target, position);
      try {
        await client.read(digest, target, position);
      } catch (error: unknown) {
        throw new StoreError("ERR_STORE_IO", `reading ${digest} from containerd failed`, { cause: error });
      }
    },
    close: () => {
      closed = true;
      return Promise.resolve();
    },
  };
}

/**
 * Reads straight from containerd's content directory (`<dir>/blobs/<alg>/<hex>`, a read-only mount): no
 * copy through containerd's process. Undefined when the file cannot be opened or is not the size
 * containerd reports (the caller then reads through the API). Committed blob files are immutable, and an
 * open file keeps its bytes even if garbage collection unlinks it.
 */
export async function fileReader(
  contentDir: string,
  digest: Digest,
  size: number,
  logger: Logger | undefined,
): Promise<BlobReader | undefined> {
  const path = join(contentDir, "blobs", digestAlgorithm(digest), digestHex(digest));
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (error: unknown) {
    logger?.debug({ err: error, path }, "content file not readable; reading through containerd's API");
    return undefined;
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile() || stat.size !== size) {
      logger?.debug(
        { path, size: stat.size, expected: size },
        "content file is not the blob containerd reports; reading through containerd's API",
      );
      await handle.close();
      return undefined;
    }
  } catch (error: unknown) {
    await handle.close().catch(() => undefined);
    logger?.debug({ err: error, path }, "content file not readable; reading through containerd's API");
    return undefined;
  }
  let closing: Promise<void> | undefined;
  return {
    size,
    read: async (target, position) => {
      if (closing !== undefined) throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `reader of ${digest} is closed`);
      checkBounds(digest, size, target, position);
      let filled = 0;
      try {
        while (filled < target.byteLength) {
          const { bytesRead } = await handle.read(target, filled, target.byteLength - filled, position + filled);
          if (bytesRead === 0) throw new Error(`${path} ended at ${position + filled}, before ${position + target.byteLength}`);
          filled += bytesRead;
        }
      } catch (error: unknown) {
        throw new StoreError("ERR_STORE_IO", `reading ${digest} from containerd's content directory failed`, { cause: error });
      }
    },
    close: () => {
      closing ??= handle.close();
      return closing;
    },
  };
}

function checkBounds(digest: Digest, size: number, target: Uint8Array, position: number): void {
  if (!Number.isSafeInteger(position) || position < 0 || position + target.byteLength > size) {
    throw new StoreError(
      "ERR_STORE_INVALID_ARGUMENT",
      `bytes ${position}..${position + target.byteLength - 1} are outside ${digest} (${size} bytes)`,
    );
  }
}
