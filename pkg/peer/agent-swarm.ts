import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { IdentitySource } from "../identity/index.js";
import type { AgentMetrics } from "../metrics/index.js";
import type { BlobFetcher } from "../registry/index.js";
import type { BlobStore } from "../store/index.js";
import type { AgentIdentity, Tracker } from "../tracker/index.js";
import { InventorySync } from "./inventory.js";
import { KnownPeers } from "./known-peers.js";
import { TrackerManifestPeers } from "./manifest-peers.js";
import { PeerClient, type PeerClientOptions } from "./peer-client.js";
import { PeerServer } from "./peer-server.js";
import { SwarmFetcher } from "./swarm-fetcher.js";
import type { SwarmTuning } from "./swarm-tuning.js";

/** How often the agent's upload load is handed to the tracker for its heartbeats. */
const LOAD_REPORT_INTERVAL_MS = 1_000;

export interface AgentSwarmOptions {
  readonly store: BlobStore;
  /** Fetches from the origin registry (the OriginFetcher): used when granted, stalled or without a tracker. */
  readonly origin: BlobFetcher;
  /** Where the peer server listens; port 0 picks one. */
  readonly listen: { readonly host: string; readonly port: number };
  /** The address other agents reach the peer server at; default the listen host and the bound port. */
  readonly advertise?: { readonly host: string; readonly port: number } | undefined;
  readonly nodeName: string;
  /** topology.kubernetes.io/zone, "" when unknown (the tracker may know it: it says so in lookups). */
  readonly zone: string;
  /** The tracker session for this agent's identity (a GrpcTrackerClient, or a LocalTracker in tests). */
  readonly tracker: (identity: AgentIdentity) => Tracker;
  readonly uploadBytesPerSecond?: number | undefined;
  readonly maxConcurrentUploads?: number | undefined;
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
  readonly tuning?: Partial<SwarmTuning> | undefined;
  readonly peerClient?: Omit<PeerClientOptions, "logger" | "metrics"> | undefined;
  /** Agent id; a fresh UUID by default (unique per process start). */
  readonly agentId?: string | undefined;
  /** Whether the swarm scheduler knows this agent's zone ("self"), only the tracker does, or neither (tests). */
  readonly zoneKnowledge?: "self" | "tracker" | "none" | undefined;
  /** Tests: wraps the store the peer server reads from (e.g. to corrupt what this node serves). */
  readonly servedStore?: ((store: BlobStore) => BlobStore) | undefined;
  readonly closeGraceMs?: number | undefined;
  /**
   * This agent's certificate (issued or from files): the peer server and client then speak mutual TLS
   * with agents of the same trust bundle only. Plain HTTP/2 without (local development).
   */
  readonly tls?: IdentitySource | undefined;
}

/**
 * An agent's peer-to-peer side, assembled in one place for `shoal agent` and for the agents tests start
 * in process: the peer server and client, the tracker session, the swarm fetcher (the mirror's
 * BlobFetcher), manifests from peers, and the inventory sync that announces the store.
 */
export class AgentSwarm {
  private constructor(
    readonly agentId: string,
    /** host:port other agents fetch pieces from. */
    readonly peerAddress: string,
    readonly peerServer: PeerServer,
    readonly peerClient: PeerClient,
    readonly tracker: Tracker,
    readonly fetcher: SwarmFetcher,
    readonly manifestPeers: TrackerManifestPeers,
    readonly inventory: InventorySync,
    private readonly closers: readonly (() => Promise<void>)[],
  ) {}

  static async start(options: AgentSwarmOptions): Promise<AgentSwarm> {
    const { store, metrics, logger } = options;
    const closers: (() => Promise<void>)[] = [];
    const close = async (): Promise<void> => {
      for (const closer of closers) await closer().catch(() => undefined);
    };
    try {
      const knownPeers = new KnownPeers();
      const peerServer = await PeerServer.start({
        ...options.listen,
        store: options.servedStore === undefined ? store : options.servedStore(store),
        uploadBytesPerSecond: options.uploadBytesPerSecond,
        maxConcurrentUploads: options.maxConcurrentUploads,
        metrics,
        logger: logger.child({ component: "peer-server" }),
        closeGraceMs: options.closeGraceMs,
        knownHolders: (digest) => knownPeers.holdersOf(digest),
        tls: options.tls,
      });
      closers.unshift(() => peerServer.close());
      const port = Number(peerServer.address.split(":").at(-1));
      const advertised = options.advertise ?? { host: options.listen.host, port };
      const peerAddress = `${hostForAddress(advertised.host)}:${advertised.port}`;
      const agentId = options.agentId ?? randomUUID();
      const tracker = options.tracker({ agentId, nodeName: options.nodeName, zone: options.zone, peerAddress });
      closers.unshift(() => tracker.close());
      // The tracker ranks holders by load: report the upload streams in each heartbeat.
      const loadTimer = setInterval(() => {
        tracker.setActiveUploads(peerServer.activeUploads);
      }, LOAD_REPORT_INTERVAL_MS).unref();
      closers.unshift(() => {
        clearInterval(loadTimer);
        return Promise.resolve();
      });
      const peerClient = new PeerClient({
        ...options.peerClient,
        logger: logger.child({ component: "peer-client" }),
        metrics,
        tls: options.tls,
      });
      closers.unshift(() => {
        peerClient.close();
        return Promise.resolve();
      });
      // The swarm scheduler needs the id and zone the tracker knows this agent by (zone preference, byte counts).
      const knowledge = options.zoneKnowledge ?? "self";
      const self = knowledge === "none" ? undefined : { agentId, zone: knowledge === "self" ? options.zone : "" };
      const fetcher = new SwarmFetcher({
        store,
        tracker,
        pieces: peerClient,
        origin: options.origin,
        knownPeers,
        metrics,
        self,
        logger: logger.child({ component: "swarm" }),
        ...(options.tuning === undefined ? {} : { tuning: options.tuning }),
      });
      closers.unshift(() => fetcher.close());
      const manifestPeers = new TrackerManifestPeers({
        tracker,
        pieces: peerClient,
        metrics,
        logger: logger.child({ component: "manifest-peers" }),
      });
      const inventory = new InventorySync({ store, tracker, logger: logger.child({ component: "inventory" }) });
      await inventory.start();
      closers.unshift(() => inventory.stop());
      return new AgentSwarm(agentId, peerAddress, peerServer, peerClient, tracker, fetcher, manifestPeers, inventory, closers);
    } catch (error) {
      await close();
      throw error;
    }
  }

  /** Stops everything (inventory, fetcher, client, tracker session, peer server), in that order. */
  async close(): Promise<void> {
    for (const closer of this.closers) await closer().catch(() => undefined);
  }
}

/** IPv6 literals need brackets in host:port. */
function hostForAddress(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}
