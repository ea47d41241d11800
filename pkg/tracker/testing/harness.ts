import type { AgentIdentity, Tracker } from "../tracker.js";

/** A tracker under test and a way to connect agents to it. */
export interface TrackerHarness {
  /** A connected agent-side Tracker for `identity`; the harness closes it in close(). */
  agent(identity: AgentIdentity): Promise<Tracker>;
  /** The tracker loses its state and comes back at the same address (a restart or fail-over). */
  restartTracker?(): Promise<void>;
  /** The tracker goes away and stays away. */
  stopTracker?(): Promise<void>;
  close(): Promise<void>;
}

export interface TrackerHarnessOptions {
  readonly grantStallTimeoutMs: number;
}

export type TrackerHarnessFactory = (options: TrackerHarnessOptions) => Promise<TrackerHarness>;

/** Stall timeout for the conformance tests: long enough for announces to cross gRPC, short enough to wait for. */
export const CONFORMANCE_STALL_TIMEOUT_MS = 600;

export async function withHarness(
  factory: TrackerHarnessFactory,
  fn: (harness: TrackerHarness) => Promise<void>,
  grantStallTimeoutMs = 60_000,
): Promise<void> {
  const harness = await factory({ grantStallTimeoutMs });
  try {
    await fn(harness);
  } finally {
    await harness.close();
  }
}
