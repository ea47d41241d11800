import type { BlobReader, BlobStore } from "../../store/index.js";

export interface StallingOptions {
  readonly pieceSize: number;
  /** How long the first read of piece `index` waits. */
  readonly delayMs: (index: number) => number;
}

/**
 * A store whose positional reads of complete blobs (what the peer server serves from) wait before the
 * first read of each piece, then run at full speed: a peer whose calls go silent for a while (a busy
 * machine, a slow disk) and then deliver. Everything else passes through.
 */
export function stallingStore(store: BlobStore, options: StallingOptions): BlobStore {
  return new Proxy(store, {
    get(target, property, receiver) {
      if (property === "openReader") {
        return async (...args: Parameters<BlobStore["openReader"]>): Promise<BlobReader> =>
          stalling(await target.openReader(...args), options);
      }
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

function stalling(reader: BlobReader, options: StallingOptions): BlobReader {
  return {
    size: reader.size,
    read: async (target, position) => {
      if (position % options.pieceSize === 0) {
        const delayMs = options.delayMs(position / options.pieceSize);
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
      await reader.read(target, position);
    },
    close: () => reader.close(),
  };
}
