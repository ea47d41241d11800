export * from "./agent-metrics.js";
export * from "./controller-metrics.js";
export * from "./metrics-server.js";
export * from "./proc-stats.js";
export * from "./containerd-metrics.js";
export * from "./identity-metrics.js";
export * from "./machine-cpu.js";
export * from "./process-metrics.js";
