export * from "./config.js";
export * from "./errors.js";
export { Network, type FlowEnds } from "./network.js";
export { seededRandom, deriveSeed } from "./random.js";
export { Simulation, simulate, type SimResult } from "./simulation.js";
