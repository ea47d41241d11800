export * from "./digest.js";
export * from "./errors.js";
export * from "./media-types.js";
export * from "./path.js";
export * from "./range.js";
export * from "./reference.js";
export * from "./registry-host.js";
export * from "./image-reference.js";
