import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { ImagegenError } from "../errors.js";
import { TAR_BLOCK_BYTES, type TarHeader, decodeTarHeader, tarPaddingBytes } from "../tar.js";

export interface TarEntry {
  readonly header: TarHeader;
  /** sha256 hex of the body. */
  readonly sha256: string;
  /** Byte offset of the body in the archive. */
  readonly offset: number;
}

const READ_CHUNK_BYTES = 1024 * 1024;

/**
 * Reads a whole tar archive from disk, streaming: checks every header checksum, that padding and
 * the end-of-archive blocks are zero, and that nothing but zeros follows. Bodies are hashed, not kept.
 */
export async function readTarEntries(file: string): Promise<TarEntry[]> {
  const handle = await open(file, "r");
  const invalid = (message: string): ImagegenError => new ImagegenError("ERR_IMAGEGEN_TAR_INVALID", `${file}: ${message}`);
  try {
    const { size } = await handle.stat();
    const readExactly = async (length: number, position: number): Promise<Buffer> => {
      const { buffer, bytesRead } = await handle.read(Buffer.alloc(length), 0, length, position);
      if (bytesRead !== length) throw invalid(`truncated at ${position + bytesRead}`);
      return buffer;
    };
    const entries: TarEntry[] = [];
    let position = 0;
    for (;;) {
      if (position + TAR_BLOCK_BYTES > size) throw invalid("no end-of-archive marker");
      const header = decodeTarHeader(await readExactly(TAR_BLOCK_BYTES, position));
      position += TAR_BLOCK_BYTES;
      if (header === undefined) break;
      const hash = createHash("sha256");
      for (let done = 0; done < header.size;) {
        const length = Math.min(READ_CHUNK_BYTES, header.size - done);
        hash.update(await readExactly(length, position + done));
        done += length;
      }
      entries.push({ header, sha256: hash.digest("hex"), offset: position });
      position += header.size;
      const padding = await readExactly(tarPaddingBytes(header.size), position);
      if (!padding.every((byte) => byte === 0)) throw invalid(`non-zero padding after ${header.path}`);
      position += padding.length;
    }
    // The second zero block, and any trailing blocks, must be zeros too.
    const rest = await readExactly(size - position, position);
    if (rest.length < TAR_BLOCK_BYTES || !rest.every((byte) => byte === 0)) throw invalid("bad end-of-archive marker");
    if (size % TAR_BLOCK_BYTES !== 0) throw invalid(`size ${size} is not a multiple of ${TAR_BLOCK_BYTES}`);
    return entries;
  } finally {
    await handle.close();
  }
}
