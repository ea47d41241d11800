export * from "./blob-writer.js";
export * from "./errors.js";
export * from "./keystream.js";
export * from "./layer.js";
export * from "./layout.js";
export * from "./random-blob.js";
export * from "./tar.js";
