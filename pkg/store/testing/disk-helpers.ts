import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Digest } from "../../oci/index.js";
import { DiskBlobStore, type DiskBlobStoreOptions } from "../disk-blob-store.js";
import { encodePartialState } from "../partial-state.js";

/** Short state-save interval so crash tests need not wait a second. */
export const TEST_SAVE_INTERVAL_MS = 10;

const created: string[] = [];

export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "shoal-store-"));
  created.push(dir);
  return dir;
}

/** For an `after` hook: removes every directory tempDir created. */
export async function removeTempDirs(): Promise<void> {
  for (const dir of created.splice(0)) await rm(dir, { recursive: true, force: true });
}

/** A disk store for tests: fast state saves, and no background verification unless asked for. */
export function openStore(dir: string, options: Partial<DiskBlobStoreOptions> = {}): Promise<DiskBlobStore> {
  return DiskBlobStore.open({ dir, stateSaveIntervalMs: TEST_SAVE_INTERVAL_MS, verifyStartDelayMs: 60_000, ...options });
}

/** A state file as DiskPartialBackend writes it. */
export function stateOf(
  digest: Digest,
  size: number,
  pieceSize: number,
  appendOffset: number,
  held: readonly number[],
  mediaType: string | undefined,
): string {
  const bitmap = new Uint8Array(Math.ceil(Math.ceil(size / pieceSize) / 8));
  for (const index of held) bitmap[index >> 3] = (bitmap[index >> 3] ?? 0) | (0x80 >> (index & 7));
  return encodePartialState({ digest, size, pieceSize, appendOffset, bitmap, mediaType });
}

/** Flips one byte of a file in place, as bit rot or a stray writer would. */
export async function scribble(path: string, position: number): Promise<void> {
  const handle = await open(path, "r+");
  try {
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, position);
    byte[0] = (byte[0] ?? 0) ^ 0xff;
    await handle.write(byte, 0, 1, position);
  } finally {
    await handle.close();
  }
}
