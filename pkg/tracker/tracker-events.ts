import type { Logger } from "pino";
import type { Digest } from "../oci/index.js";
import type { PrefetchReport } from "./prefetch.js";
import type { AgentIdentity } from "./tracker.js";

/**
 * What changed in the tracker, for observers such as the prefetch reconciler. `holding` fires only when
 * an agent's copy of a blob becomes complete or goes away, not for every piece.
 */
export type TrackerEvent =
  | { readonly type: "registered"; readonly identity: AgentIdentity }
  | { readonly type: "disconnected"; readonly agentId: string }
  | { readonly type: "holding"; readonly agentId: string; readonly digest: Digest; readonly complete: boolean }
  | { readonly type: "prefetch-report"; readonly agentId: string; readonly report: PrefetchReport };

/** The observers of a tracker's events (MemoryTracker.subscribe). */
export class TrackerObservers {
  private readonly listeners = new Set<(event: TrackerEvent) => void>();

  constructor(private readonly logger: Logger) {}

  /** Adds `listener`; returns the unsubscribe function. */
  subscribe(listener: (event: TrackerEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Observers run synchronously after the change; one that throws is logged and the others still run. */
  emit(event: TrackerEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (error: unknown) {
        this.logger.error({ err: error, event: event.type }, "tracker observer failed");
      }
    }
  }
}
