export * from "./abort.js";
export * from "./atomic-file.js";
export * from "./backoff.js";
export * from "./own-pauses.js";
