import type { BlobReader, BlobStore, PartialBlob } from "../../store/index.js";

/**
 * A store whose positional reads (what the peer server serves from) flip the first byte of every read,
 * for complete blobs and partials alike: a peer with a bad disk, or a bad actor. Everything else passes
 * through, so the node itself still holds and verifies correct bytes.
 */
export function corruptingStore(store: BlobStore): BlobStore {
  return new Proxy(store, {
    get(target, property, receiver) {
      if (property === "openReader") {
        return async (...args: Parameters<BlobStore["openReader"]>): Promise<BlobReader> => corrupting(await target.openReader(...args));
      }
      if (property === "getPartial") {
        return (...args: Parameters<BlobStore["getPartial"]>): PartialBlob | undefined => {
          const partial = target.getPartial(...args);
          return partial === undefined ? undefined : corruptingPartial(partial);
        };
      }
      return bound(target, property, receiver);
    },
  });
}

function corruptingPartial(partial: PartialBlob): PartialBlob {
  return new Proxy(partial, {
    get(target, property, receiver) {
      if (property === "openReader") return (): BlobReader => corrupting(target.openReader());
      return bound(target, property, receiver);
    },
  });
}

function corrupting(reader: BlobReader): BlobReader {
  return {
    size: reader.size,
    read: async (target, position) => {
      await reader.read(target, position);
      if (target.byteLength > 0) target[0] = (target[0] ?? 0) ^ 0xff;
    },
    close: () => reader.close(),
  };
}

function bound(target: object, property: string | symbol, receiver: unknown): unknown {
  const value: unknown = Reflect.get(target, property, receiver);
  return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
}
