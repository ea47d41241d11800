import type { Logger } from "pino";
import type { ControllerMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import type { BlobClaims } from "./blob-claims.js";
import { BlobWatchers, type RoundChanges, type Scheduler } from "./blob-watchers.js";
import { changeFor, type WatchView } from "./notice-delta.js";
import type { AgentIdentity, BlobChange } from "./tracker.js";

/** A session as notices reach it: who it is and its load (a change lists holders so), and where its notices go. */
export interface NoticeTarget {
  readonly identity: AgentIdentity;
  readonly activeUploads: number;
  /** Undefined: the session takes no notices. */
  readonly onNotice: ((digest: Digest, change: BlobChange | undefined) => boolean) | undefined;
}

export interface NoticeDeliveryOptions<A extends NoticeTarget> {
  readonly logger: Logger;
  readonly metrics: ControllerMetrics | undefined;
  readonly now: () => number;
  readonly schedule: Scheduler;
  /** BlobWatchers' defaults when absent. */
  readonly intervalMs?: number;
  readonly perBlobPerSecond?: number;
  /** Notices carry the change when it can be told exactly (notice-delta.ts); false: every notice says "look it up". */
  readonly deltas: boolean;
  /** Holders per lookup answer: a change never lists more than a lookup would. */
  readonly maxLookupHolders: number;
  /** The agent's session; undefined without one. */
  readonly agent: (agentId: string) => A | undefined;
  /** The blob's claims now; undefined when nobody holds it. */
  readonly claims: (digest: Digest) => BlobClaims<A> | undefined;
  /** The blob's origin grantee now. */
  readonly grantee: (digest: Digest) => string | undefined;
}

/**
 * The tracker's watchers (blob-watchers.ts), wired to deliver: each notice goes to the watcher's session
 * with what changed (notice-delta.ts) when that can be told exactly, else as "look it up". A notice the
 * session dropped leaves the watcher's view stale (later notices say "look it up" until its next lookup);
 * one delivered with a change moves its view on. Notices and watches are counted in `metrics`.
 */
export function noticeWatchers<A extends NoticeTarget>(options: NoticeDeliveryOptions<A>): BlobWatchers<WatchView<A>> {
  const { metrics } = options;
  return new BlobWatchers<WatchView<A>>({
    now: options.now,
    schedule: options.schedule,
    ...(options.intervalMs === undefined ? {} : { intervalMs: options.intervalMs }),
    ...(options.perBlobPerSecond === undefined ? {} : { perBlobPerSecond: options.perBlobPerSecond }),
    deliver: (agentId, digest, view, changes) => deliver(options, agentId, digest, view, changes),
    ...(metrics === undefined
      ? {}
      : {
          onNotice: (delivered: boolean) => {
            (delivered ? metrics.noticesSent : metrics.noticesDropped).inc();
          },
          onWatches: (count: number) => {
            metrics.watches.set(count);
          },
        }),
  });
}

/** Hands a notice to the agent's session, with the change when it can be told exactly; false when it was dropped. */
function deliver<A extends NoticeTarget>(
  options: NoticeDeliveryOptions<A>,
  agentId: string,
  digest: Digest,
  view: WatchView<A>,
  changes: RoundChanges,
): boolean {
  const agent = options.agent(agentId);
  if (agent?.onNotice === undefined) return false;
  const change = options.deltas
    ? changeFor({
        watcher: agentId,
        claims: options.claims(digest),
        grantee: options.grantee(digest),
        view,
        changes,
        maxLookupHolders: options.maxLookupHolders,
        agent: options.agent,
      })
    : undefined;
  let delivered: boolean;
  try {
    delivered = agent.onNotice(digest, change);
  } catch (error: unknown) {
    options.logger.warn({ err: error, agentId }, "notice not delivered");
    delivered = false;
  }
  if (!delivered) view.stale = true;
  else if (change !== undefined) {
    view.hashesTold = view.claim?.knownHashes ?? 0;
    options.metrics?.noticeDeltas.inc();
  }
  return delivered;
}
