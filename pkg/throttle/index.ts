export * from "./throttle-stream.js";
export * from "./token-bucket.js";
