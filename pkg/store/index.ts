export * from "./blob-store.js";
export * from "./errors.js";
export * from "./tag-store.js";
export { DiskBlobStore, type DiskBlobStoreOptions } from "./disk-blob-store.js";
export { MemoryBlobStore, type MemoryBlobStoreOptions } from "./memory-blob-store.js";
export { DiskTagStore, type DiskTagStoreOptions } from "./disk-tag-store.js";
export { MemoryTagStore } from "./memory-tag-store.js";
export { FIRST_READ_CHUNK_BYTES, READ_CHUNK_BYTES, recycleReadChunk } from "./read-chunks.js";
