export * from "./layout-registry.js";
