export * from "./errors.js";
export * from "./flags.js";
export * from "./values.js";
export * from "./node-flags.js";
