import { join } from "node:path";
import type { Logger } from "pino";
import { ContainerdContentSource } from "../../pkg/containerd/index.js";
import type { AgentMetrics } from "../../pkg/metrics/index.js";
import { type BlobStore, CompositeBlobStore, ExternalPieceHashes } from "../../pkg/store/index.js";
import type { AgentOptions } from "./options.js";

/** Piece hashes of containerd-held blobs, under --data-dir (beside the store's own directories). */
export const CONTAINERD_PIECES_DIR = "containerd-pieces";

/**
 * The store the agent serves from: with --containerd-content (the default), its own store layered over
 * containerd's content store, so the node keeps one copy of each blob; without it, its own store alone.
 * containerd being absent or away never fails the start: the source logs it and keeps trying.
 */
export async function servedStore(own: BlobStore, options: AgentOptions, metrics: AgentMetrics, logger: Logger): Promise<BlobStore> {
  if (!options.containerdContent) {
    logger.info("containerd content store not used (--containerd-content=false): blobs are served from the agent's own store");
    return own;
  }
  const log = logger.child({ component: "containerd" });
  const source = await ContainerdContentSource.start({
    socket: options.containerdAddress,
    namespace: options.containerdNamespace,
    contentDir: options.containerdContentDir,
    logger: log,
    onConnectionChange: (connected) => {
      metrics.containerd.connected.set(connected ? 1 : 0);
    },
  });
  try {
    const pieceHashes = await ExternalPieceHashes.open({ dir: join(options.dataDir, CONTAINERD_PIECES_DIR), logger: log });
    // Only a complete listing tells which records are stale; without one, keep them all.
    if (source.isConnected) {
      const removed = await pieceHashes.retainOnly(new Set(source.list().map((blob) => blob.digest)));
      if (removed > 0) log.info({ removed }, "dropped piece hashes of blobs containerd no longer holds");
    }
    const store = await CompositeBlobStore.open({
      own,
      external: source,
      pieceHashes,
      hashBytesPerSecond: options.containerdHashRate,
      logger: log,
      onExternalBytes: (bytes) => {
        metrics.containerd.servedBytes.inc(bytes);
      },
      onOwnCopyDropped: (blob) => {
        metrics.containerd.ownCopiesDropped.inc();
        metrics.containerd.ownBytesDropped.inc(blob.size);
      },
    });
    metrics.containerd.bindUsage(() => store.externalUsage());
    return store;
  } catch (error: unknown) {
    await source.close();
    throw error;
  }
}
