/** A fixed-size bit set of held pieces; bit i is piece i, most significant bit first in each byte. */
export class PieceBitmap {
  private readonly bits: Uint8Array;
  private held = 0;

  constructor(
    readonly length: number,
    bytes?: Uint8Array,
  ) {
    this.bits = new Uint8Array(Math.ceil(length / 8));
    if (bytes !== undefined) {
      if (bytes.length !== this.bits.length) throw new RangeError(`bitmap of ${bytes.length} bytes for ${length} pieces`);
      // Copy bit by bit: bits past `length` in the last byte are ignored rather than trusted.
      for (let i = 0; i < length; i++) if (((bytes[i >> 3] ?? 0) & (0x80 >> (i & 7))) !== 0) this.set(i);
    }
  }

  has(index: number): boolean {
    return index >= 0 && index < this.length && ((this.bits[index >> 3] ?? 0) & (0x80 >> (index & 7))) !== 0;
  }

  /** Sets bit `index`; returns false if it was already set. */
  set(index: number): boolean {
    if (index < 0 || index >= this.length) throw new RangeError(`piece ${index} out of range 0..${this.length - 1}`);
    if (this.has(index)) return false;
    const byte = index >> 3;
    this.bits[byte] = (this.bits[byte] ?? 0) | (0x80 >> (index & 7));
    this.held++;
    return true;
  }

  get count(): number {
    return this.held;
  }

  get complete(): boolean {
    return this.held === this.length;
  }

  /** First index not held, or `length` when complete. */
  firstMissing(): number {
    for (let i = 0; i < this.length; i++) if (!this.has(i)) return i;
    return this.length;
  }

  toBytes(): Uint8Array {
    return this.bits.slice();
  }
}
