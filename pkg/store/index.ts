export * from "./bitmap.js";
export * from "./blob-store.js";
export * from "./errors.js";
export * from "./piece.js";
export * from "./tag-store.js";
