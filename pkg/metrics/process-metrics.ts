import { type Registry, collectDefaultMetrics } from "prom-client";

/**
 * How often the event loop delay monitor behind `shoal_nodejs_eventloop_lag_*` wakes the loop. prom-client's
 * default is 10 ms: 100 wake-ups a second on every node, also when Shoal has nothing to do. At 100 ms an
 * idle agent beside its controller used 5 and 6 CPU ticks (1/100 s) in 30 s instead of 10, and made 380
 * and 386 voluntary context switches instead of 3,012 (docs/benchmarks.md, "December 5 (fifth session)"). The
 * monitor measures how late its own timer fires, so it now samples the loop ten times a second instead of a
 * hundred: a stall that matters to a pull (hundreds of milliseconds) still shows, a stall of a few
 * milliseconds is caught less often.
 */
export const EVENT_LOOP_MONITORING_PRECISION_MS = 100;

/** The process-level metrics (CPU, RSS, heap, event loop lag) as `shoal_…`, on the agent's or controller's registry. */
export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry, prefix: "shoal_", eventLoopMonitoringPrecision: EVENT_LOOP_MONITORING_PRECISION_MS });
}
