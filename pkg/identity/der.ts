import { IdentityError } from "./errors.js";

/**
 * The subset of ASN.1 DER (ITU-T X.690) that X.509 certificates and PKCS #10 requests need: a writer for
 * the types they use and a reader of tag-length-value nodes. Node's crypto parses certificates
 * (X509Certificate) and signs bytes, but builds neither certificates nor requests; this fills that gap
 * without a dependency. Everything here is checked against X509Certificate and, where installed, OpenSSL.
 */

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Lengths above this are not used by anything Shoal reads or writes (4 bytes of length). */
const MAX_LENGTH = 0xffff_ffff;

function lengthBytes(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  if (length > MAX_LENGTH) throw new RangeError(`DER length ${length} too large`);
  const bytes: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One tag-length-value. */
export function tlv(tag: number, content: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([tag]), lengthBytes(content.length), content]);
}

export function sequence(...items: readonly Uint8Array[]): Buffer {
  return tlv(TAG.SEQUENCE, Buffer.concat(items));
}

/** A SET OF with its elements sorted by their encodings, as DER requires. */
export function setOf(...items: readonly Buffer[]): Buffer {
  return tlv(TAG.SET, Buffer.concat([...items].sort((a, b) => Buffer.compare(a, b))));
}

/** A non-negative INTEGER from a number, bigint or unsigned big-endian bytes (minimal encoding). */
export function integer(value: number | bigint | Uint8Array): Buffer {
  let bytes: Buffer;
  if (typeof value === "number" || typeof value === "bigint") {
    let n = BigInt(value);
    if (n < 0n) throw new RangeError("only non-negative INTEGERs are written");
    const out: number[] = [];
    do {
      out.unshift(Number(n & 0xffn));
      n >>= 8n;
    } while (n > 0n);
    bytes = Buffer.from(out);
  } else {
    bytes = Buffer.from(value);
    let first = 0;
    while (first < bytes.length - 1 && bytes[first] === 0) first++;
    bytes = bytes.subarray(first);
    if (bytes.length === 0) bytes = Buffer.from([0]);
  }
  // A set high bit would read as negative: prefix a zero byte.
  if ((bytes[0] ?? 0) & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return tlv(TAG.INTEGER, bytes);
}

export function oid(dotted: string): Buffer {
  const parts = dotted.split(".").map((p) => {
    if (!/^\d+$/.test(p)) throw new RangeError(`bad OID ${dotted}`);
    return BigInt(p);
  });
  const [first, second, ...rest] = parts;
  if (first === undefined || second === undefined || first > 2n) throw new RangeError(`bad OID ${dotted}`);
  const out: number[] = [];
  for (const arc of [first * 40n + second, ...rest]) {
    const group: number[] = [Number(arc & 0x7fn)];
    for (let n = arc >> 7n; n > 0n; n >>= 7n) group.unshift(Number(n & 0x7fn) | 0x80);
    out.push(...group);
  }
  return tlv(TAG.OID, Buffer.from(out));
}

export function nullValue(): Buffer {
  return Buffer.from([TAG.NULL, 0]);
}

export function boolean(value: boolean): Buffer {
  return tlv(TAG.BOOLEAN, Buffer.from([value ? 0xff : 0]));
}

/** A BIT STRING of whole bytes (no unused bits): signatures, keys, extension values. */
export function bitString(bytes: Uint8Array): Buffer {
  return tlv(TAG.BIT_STRING, Buffer.concat([Buffer.from([0]), bytes]));
}

/** The KeyUsage form: `bits` MSB first, with the count of trailing unused bits as DER wants it minimal. */
export function namedBitString(bits: readonly number[]): Buffer {
  const top = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(top / 8) + 1);
  for (const bit of bits) bytes[Math.floor(bit / 8)] = (bytes[Math.floor(bit / 8)] ?? 0) | (0x80 >> (bit % 8));
  const unused = 7 - (top % 8);
  return tlv(TAG.BIT_STRING, Buffer.concat([Buffer.from([unused]), bytes]));
}

export function octetString(bytes: Uint8Array): Buffer {
  return tlv(TAG.OCTET_STRING, bytes);
}

export function utf8String(text: string): Buffer {
  return tlv(TAG.UTF8_STRING, Buffer.from(text, "utf8"));
}

/** RFC 5280: UTCTime through 2049, GeneralizedTime from 2050. Whole seconds, UTC. */
export function time(date: Date): Buffer {
  const iso = date.toISOString();
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  const year = date.getUTCFullYear();
  if (year < 1950 || year > 9999) throw new RangeError(`time ${iso} outside what X.509 can say`);
  return year < 2050 ? tlv(TAG.UTC_TIME, Buffer.from(digits.slice(2), "ascii")) : tlv(TAG.GENERALIZED_TIME, Buffer.from(digits, "ascii"));
}

/** [n] EXPLICIT: the inner encoding wrapped in a constructed context-specific tag. */
export function explicit(n: number, inner: Uint8Array): Buffer {
  return tlv(0xa0 | n, inner);
}

/** [n] IMPLICIT of a primitive value (e.g. a GeneralName's uniformResourceIdentifier). */
export function implicitPrimitive(n: number, content: Uint8Array): Buffer {
  return tlv(0x80 | n, content);
}

// ---- reading ---------------------------------------------------------------------------------

export interface DerNode {
  /** The identifier octet (class, constructed bit and tag number < 31). */
  readonly tag: number;
  readonly content: Buffer;
  /** The whole TLV. */
  readonly raw: Buffer;
}

function malformed(what: string): IdentityError {
  return new IdentityError("ERR_IDENTITY_MALFORMED", `malformed DER: ${what}`);
}

/** The node starting at `offset`; `raw` ends where its length says. */
export function readNode(buffer: Buffer, offset = 0): DerNode {
  const tag = buffer[offset];
  const first = buffer[offset + 1];
  if (tag === undefined || first === undefined) throw malformed("truncated header");
  if ((tag & 0x1f) === 0x1f) throw malformed("multi-byte tags are not used here");
  let length = first;
  let header = 2;
  if (first & 0x80) {
    const count = first & 0x7f;
    if (count === 0 || count > 4) throw malformed(`length of ${count} bytes`);
    length = 0;
    for (let i = 0; i < count; i++) {
      const byte = buffer[offset + 2 + i];
      if (byte === undefined) throw malformed("truncated length");
      length = length * 256 + byte;
    }
    if (length < 0x80) throw malformed("non-minimal length");
    header += count;
  }
  const end = offset + header + length;
  if (end > buffer.length) throw malformed(`a value of ${length} bytes runs past the end`);
  return { tag, content: buffer.subarray(offset + header, end), raw: buffer.subarray(offset, end) };
}

/** A whole buffer that must be exactly one node. */
export function readSingle(buffer: Buffer, expectedTag?: number): DerNode {
  const node = readNode(buffer);
  if (node.raw.length !== buffer.length) throw malformed("trailing bytes");
  if (expectedTag !== undefined && node.tag !== expectedTag)
    throw malformed(`expected tag 0x${expectedTag.toString(16)}, got 0x${node.tag.toString(16)}`);
  return node;
}

/** The nodes inside a constructed node, in order. */
export function children(node: DerNode): DerNode[] {
  if ((node.tag & 0x20) === 0) throw malformed(`tag 0x${node.tag.toString(16)} is not constructed`);
  const out: DerNode[] = [];
  for (let offset = 0; offset < node.content.length;) {
    const child = readNode(node.content, offset);
    out.push(child);
    offset += child.raw.length;
  }
  return out;
}

export function expectTag(node: DerNode | undefined, tag: number, what: string): DerNode {
  if (node?.tag !== tag)
    throw malformed(`${what}: expected tag 0x${tag.toString(16)}, got ${node === undefined ? "nothing" : `0x${node.tag.toString(16)}`}`);
  return node;
}

export function readOid(node: DerNode): string {
  expectTag(node, TAG.OID, "OID");
  const bytes = node.content;
  if (bytes.length === 0) throw malformed("empty OID");
  const arcs: bigint[] = [];
  let value = 0n;
  for (const byte of bytes) {
    value = (value << 7n) | BigInt(byte & 0x7f);
    if ((byte & 0x80) === 0) {
      arcs.push(value);
      value = 0n;
    }
  }
  if ((bytes[bytes.length - 1] ?? 0) & 0x80) throw malformed("OID ends inside an arc");
  const [head, ...rest] = arcs;
  if (head === undefined) throw malformed("empty OID");
  const first = head < 80n ? head / 40n : 2n;
  return [first, head - first * 40n, ...rest].join(".");
}

/** The bytes of a BIT STRING that has no unused bits (keys, signatures). */
export function readBitStringBytes(node: DerNode): Buffer {
  expectTag(node, TAG.BIT_STRING, "BIT STRING");
  if (node.content[0] !== 0) throw malformed("BIT STRING with unused bits");
  return node.content.subarray(1);
}
