import { Gauge, type Registry } from "prom-client";

/** `shoal_build_info{version,node_version} 1`, registered by every Shoal process. */
export function registerBuildInfo(registry: Registry, version: string): void {
  new Gauge({
    name: "shoal_build_info",
    help: "Shoal version and Node.js runtime; always 1.",
    labelNames: ["version", "node_version"] as const,
    registers: [registry],
  }).set({ version, node_version: process.version }, 1);
}
