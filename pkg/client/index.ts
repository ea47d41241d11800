export * from "./errors.js";
export * from "./pull.js";
