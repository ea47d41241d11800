export * from "./fake-upstream.js";
export { type SeededContent, seededBytes, seededChunks } from "./content-source.js";
