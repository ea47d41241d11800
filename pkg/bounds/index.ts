export * from "./bounds.js";
