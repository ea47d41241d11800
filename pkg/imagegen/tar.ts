import { ImagegenError } from "./errors.js";

/** Tar works in 512-byte blocks: every header, and every file body padded up to a multiple. */
export const TAR_BLOCK_BYTES = 512;
/** Two zero blocks end an archive. */
export const TAR_END_OF_ARCHIVE_BYTES = 2 * TAR_BLOCK_BYTES;
/** 11 octal digits in the ustar size field; larger files would need the GNU base-256 extension. */
export const TAR_MAX_FILE_BYTES = 8 ** 11 - 1;

export type TarEntryType = "file" | "directory";

export interface TarHeader {
  /** Path inside the archive; directories end with '/'. At most 255 bytes (ustar prefix + name). */
  readonly path: string;
  readonly type: TarEntryType;
  /** Body size in bytes; 0 for directories. */
  readonly size: number;
  /** Permission bits, e.g. 0o644. */
  readonly mode: number;
  /** Seconds since the epoch. Generated layers use a fixed value so they are reproducible. */
  readonly mtimeSeconds: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly uname?: string;
  readonly gname?: string;
}

// Offsets and widths of the POSIX ustar header (pax/ustar in POSIX.1-2001).
const FIELD = {
  name: [0, 100],
  mode: [100, 8],
  uid: [108, 8],
  gid: [116, 8],
  size: [124, 12],
  mtime: [136, 12],
  checksum: [148, 8],
  typeflag: [156, 1],
  magic: [257, 6],
  version: [263, 2],
  uname: [265, 32],
  gname: [297, 32],
  devmajor: [329, 8],
  devminor: [337, 8],
  prefix: [345, 155],
} as const satisfies Record<string, readonly [number, number]>;

const TYPEFLAG: Record<TarEntryType, string> = { file: "0", directory: "5" };
const ASCII_SPACE = 0x20;

/** Bytes of padding after a body of `size` bytes. */
export function tarPaddingBytes(size: number): number {
  return (TAR_BLOCK_BYTES - (size % TAR_BLOCK_BYTES)) % TAR_BLOCK_BYTES;
}

/** Bytes an entry takes in the archive: header, body and padding. */
export function tarEntryBytes(size: number): number {
  return TAR_BLOCK_BYTES + size + tarPaddingBytes(size);
}

/** Encodes one 512-byte ustar header with a correct checksum. */
export function encodeTarHeader(header: TarHeader): Buffer {
  if (header.type === "directory" && header.size !== 0) {
    throw new ImagegenError("ERR_IMAGEGEN_INVALID_OPTIONS", "a tar directory entry has no body");
  }
  if (!Number.isSafeInteger(header.size) || header.size < 0 || header.size > TAR_MAX_FILE_BYTES) {
    throw new ImagegenError("ERR_IMAGEGEN_INVALID_OPTIONS", `tar entry size ${header.size} out of range`);
  }
  const block = Buffer.alloc(TAR_BLOCK_BYTES);
  const { prefix, name } = splitPath(header.path);
  writeString(block, FIELD.name, name);
  writeOctal(block, FIELD.mode, header.mode);
  writeOctal(block, FIELD.uid, header.uid ?? 0);
  writeOctal(block, FIELD.gid, header.gid ?? 0);
  writeOctal(block, FIELD.size, header.size);
  writeOctal(block, FIELD.mtime, header.mtimeSeconds);
  writeString(block, FIELD.typeflag, TYPEFLAG[header.type]);
  writeString(block, FIELD.magic, "ustar\0");
  writeString(block, FIELD.version, "00");
  writeString(block, FIELD.uname, header.uname ?? "root");
  writeString(block, FIELD.gname, header.gname ?? "root");
  writeOctal(block, FIELD.devmajor, 0);
  writeOctal(block, FIELD.devminor, 0);
  writeString(block, FIELD.prefix, prefix);
  // The checksum is computed with its own field read as spaces, then written as 6 octal digits, NUL, space.
  block.fill(ASCII_SPACE, FIELD.checksum[0], FIELD.checksum[0] + FIELD.checksum[1]);
  const checksum = headerChecksum(block);
  block.write(`${checksum.toString(8).padStart(6, "0")}\0 `, FIELD.checksum[0], "ascii");
  return block;
}

/**
 * Decodes a ustar header block. Returns undefined for an all-zero block (end of archive).
 * Throws ERR_IMAGEGEN_TAR_INVALID on a bad checksum, magic or numeric field.
 */
export function decodeTarHeader(block: Uint8Array): TarHeader | undefined {
  if (block.length !== TAR_BLOCK_BYTES) {
    throw new ImagegenError("ERR_IMAGEGEN_TAR_INVALID", `tar header must be ${TAR_BLOCK_BYTES} bytes, got ${block.length}`);
  }
  const buffer = Buffer.from(block.buffer, block.byteOffset, block.byteLength);
  if (buffer.every((byte) => byte === 0)) return undefined;
  const stored = readOctal(buffer, FIELD.checksum, "checksum");
  const computed = headerChecksum(buffer, true);
  if (stored !== computed) {
    throw new ImagegenError("ERR_IMAGEGEN_TAR_INVALID", `tar header checksum ${stored} does not match computed ${computed}`);
  }
  const magic = readString(buffer, FIELD.magic);
  if (magic !== "ustar") throw new ImagegenError("ERR_IMAGEGEN_TAR_INVALID", `not a ustar header (magic ${JSON.stringify(magic)})`);
  const typeflag = readString(buffer, FIELD.typeflag);
  const type = typeflag === "5" ? "directory" : typeflag === "0" || typeflag === "" ? "file" : undefined;
  if (type === undefined) throw new ImagegenError("ERR_IMAGEGEN_TAR_INVALID", `unsupported tar entry type ${JSON.stringify(typeflag)}`);
  const prefix = readString(buffer, FIELD.prefix);
  const name = readString(buffer, FIELD.name);
  return {
    path: prefix === "" ? name : `${prefix}/${name}`,
    type,
    size: readOctal(buffer, FIELD.size, "size"),
    mode: readOctal(buffer, FIELD.mode, "mode"),
    mtimeSeconds: readOctal(buffer, FIELD.mtime, "mtime"),
    uid: readOctal(buffer, FIELD.uid, "uid"),
    gid: readOctal(buffer, FIELD.gid, "gid"),
    uname: readString(buffer, FIELD.uname),
    gname: readString(buffer, FIELD.gname),
  };
}

/** Sum of the header bytes; `checksumAsSpaces` reads the checksum field as spaces, as the format requires. */
function headerChecksum(block: Buffer, checksumAsSpaces = false): number {
  const [start, width] = FIELD.checksum;
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK_BYTES; i++) {
    sum += checksumAsSpaces && i >= start && i < start + width ? ASCII_SPACE : (block[i] ?? 0);
  }
  return sum;
}

/** ustar keeps paths longer than 100 bytes as prefix '/' name, split at a slash. */
function splitPath(path: string): { prefix: string; name: string } {
  const bytes = Buffer.byteLength(path);
  if (bytes === 0 || path.includes("\0")) throw new ImagegenError("ERR_IMAGEGEN_INVALID_OPTIONS", "invalid tar path");
  if (bytes <= FIELD.name[1]) return { prefix: "", name: path };
  // A directory's trailing slash belongs to the name part.
  for (let cut = path.lastIndexOf("/", path.length - 2); cut > 0; cut = path.lastIndexOf("/", cut - 1)) {
    const prefix = path.slice(0, cut);
    const name = path.slice(cut + 1);
    if (Buffer.byteLength(prefix) <= FIELD.prefix[1] && Buffer.byteLength(name) <= FIELD.name[1]) {
      return { prefix, name };
    }
  }
  throw new ImagegenError("ERR_IMAGEGEN_INVALID_OPTIONS", `tar path too long for ustar: ${path.slice(0, 80)}…`);
}

function writeString(block: Buffer, [offset, width]: readonly [number, number], value: string): void {
  if (Buffer.byteLength(value) > width) {
    throw new ImagegenError("ERR_IMAGEGEN_INVALID_OPTIONS", `tar field value ${JSON.stringify(value)} longer than ${width} bytes`);
  }
  block.write(value, offset, width, "utf8");
}

/** Octal digits, zero-padded, NUL-terminated: the form every tar reader accepts. */
function writeOctal(block: Buffer, [offset, width]: readonly [number, number], value: number): void {
  const digits = value.toString(8).padStart(width - 1, "0");
  if (!Number.isSafeInteger(value) || value < 0 || digits.length > width - 1) {
    throw new ImagegenError("ERR_IMAGEGEN_INVALID_OPTIONS", `tar numeric field value ${value} does not fit ${width - 1} octal digits`);
  }
  block.write(`${digits}\0`, offset, width, "ascii");
}

function readString(block: Buffer, [offset, width]: readonly [number, number]): string {
  const field = block.subarray(offset, offset + width);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? width : end).toString("utf8");
}

function readOctal(block: Buffer, field: readonly [number, number], what: string): number {
  // Readers must accept NUL- or space-terminated and space-padded values.
  const text = block
    .subarray(field[0], field[0] + field[1])
    .toString("ascii")
    .replace(/[\0 ]+$/, "")
    .replace(/^ +/, "");
  if (!/^[0-7]*$/.test(text)) {
    throw new ImagegenError("ERR_IMAGEGEN_TAR_INVALID", `tar ${what} field is not octal: ${JSON.stringify(text)}`);
  }
  return text === "" ? 0 : parseInt(text, 8);
}
