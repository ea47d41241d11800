import { pino } from "pino";
import { GrpcTrackerClient, type GrpcTrackerClientOptions } from "../grpc-tracker-client.js";
import { LocalTracker } from "../local-tracker.js";
import { MemoryTracker } from "../memory-tracker.js";
import { TrackerServer } from "../tracker-server.js";
import type { AgentIdentity, Tracker } from "../tracker.js";
import type { TrackerHarness, TrackerHarnessOptions } from "./harness.js";

/** How long a harness waits for an agent's first session. */
const CONNECT_TIMEOUT_MS = 5_000;

/** Client settings that make the gRPC suite quick: fast heartbeats, short backoff, a short lookup deadline. */
export const FAST_CLIENT_OPTIONS = {
  heartbeatIntervalMs: 50,
  sessionGraceMs: 500,
  lookupTimeoutMs: 1_000,
  initialBackoffMs: 50,
  maxBackoffMs: 250,
} as const satisfies Partial<GrpcTrackerClientOptions>;

/** LocalTrackers over one MemoryTracker. */
export function localHarness(options: TrackerHarnessOptions): Promise<TrackerHarness & { readonly tracker: MemoryTracker }> {
  const logger = pino({ level: "silent" });
  const tracker = new MemoryTracker({ logger, grantStallTimeoutMs: options.grantStallTimeoutMs });
  const agents: Tracker[] = [];
  return Promise.resolve({
    tracker,
    agent(identity: AgentIdentity) {
      const agent = new LocalTracker({ tracker, identity, logger });
      agents.push(agent);
      return Promise.resolve(agent);
    },
    async close() {
      for (const agent of agents) await agent.close();
    },
  });
}

/** GrpcTrackerClients ↔ a TrackerServer on 127.0.0.1:0 that can be restarted on the same port or stopped. */
export async function grpcHarness(
  options: TrackerHarnessOptions,
): Promise<TrackerHarness & { readonly address: string; tracker(): MemoryTracker }> {
  const logger = pino({ level: "silent" });
  const newTracker = (): MemoryTracker => new MemoryTracker({ logger, grantStallTimeoutMs: options.grantStallTimeoutMs });
  let tracker = newTracker();
  let server: TrackerServer | undefined = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker, logger });
  const port = server.port;
  const address = `127.0.0.1:${port}`;
  const clients: GrpcTrackerClient[] = [];
  return {
    address,
    tracker: () => tracker,
    async agent(identity: AgentIdentity) {
      const client = new GrpcTrackerClient({ address, identity, logger, ...FAST_CLIENT_OPTIONS });
      clients.push(client);
      await client.whenConnected(AbortSignal.timeout(CONNECT_TIMEOUT_MS));
      return client;
    },
    async restartTracker() {
      await server?.close();
      tracker = newTracker();
      server = await TrackerServer.start({ host: "127.0.0.1", port, tracker, logger });
    },
    async stopTracker() {
      await server?.close();
      server = undefined;
    },
    async close() {
      for (const client of clients) await client.close();
      await server?.close();
    },
  };
}
