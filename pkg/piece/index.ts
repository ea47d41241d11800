export * from "./bitmap.js";
export * from "./piece.js";
export * from "./piece-hashes.js";
