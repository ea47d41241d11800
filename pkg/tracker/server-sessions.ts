import { type Metadata, type ServerDuplexStream, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { SessionRequest, SessionResponse } from "../gen/tracker/v1/tracker.js";
import type { ControllerMetrics } from "../metrics/index.js";
import type { AnnounceGate } from "./announce-gate.js";
import { bindToCertificate, callerAccess, verifiedPeer } from "./caller-identity.js";
import { isTrackerError } from "./errors.js";
import { type Membership, hostOfPeer } from "./membership.js";
import type { MemoryTracker } from "./memory-tracker.js";
import { noticeWriter } from "./notice-writer.js";
import { validatePrefetchReport } from "./prefetch.js";
import { spreadForSessions } from "./reannounce-pacing.js";
import type { ServerEdge, StatusError } from "./server-edge.js";
import type { TrackerSession } from "./tracker-session.js";
import { validateAnnouncement, validateDigest, validateIdentity, validateTagRecord } from "./validation.js";
import { announcementFromWire, commandResponse, identityFromWire, prefetchReportFromWire, tagRecordFromWire } from "./wire.js";

export interface ServerSessionsOptions {
  readonly tracker: MemoryTracker;
  readonly membership: Membership | undefined;
  readonly metrics: ControllerMetrics | undefined;
  readonly logger: Logger;
  /** Paces announces over all sessions (announce-gate.ts). */
  readonly gate: AnnounceGate;
  readonly edge: ServerEdge;
  /** The server speaks mutual TLS: every session is bound to its agent's certificate. */
  readonly tls: boolean;
}

/**
 * The tracker server's Session streams: each one registers an agent with the MemoryTracker and carries
 * its announces, withdrawals, heartbeats, tags and prefetch reports up and commands and notices down.
 * Every input is checked at the edge; the stream ending, failing or being cancelled is the agent's
 * disconnect. Announces are paced by the gate (flow control holds a session over the rate).
 */
export class ServerSessions {
  private readonly open = new Set<(details?: string, metadata?: Metadata) => void>();
  private registered = 0;

  constructor(private readonly options: ServerSessionsOptions) {}

  /** Sessions registered and open now. */
  get count(): number {
    return this.registered;
  }

  /** Ends every open session with UNAVAILABLE and `details` (a default when absent) and `metadata`; returns how many. */
  endAll(details?: string, metadata?: Metadata): number {
    const open = [...this.open];
    for (const end of open) end(details, metadata);
    return open.length;
  }

  handle(call: ServerDuplexStream<SessionRequest, SessionResponse>): void {
    const { logger, edge, gate } = this.options;
    const remoteAddress = hostOfPeer(call.getPeer());
    let session: TrackerSession | undefined;
    let ended = false;
    /** Ends the call once: with OK (`undefined`), with an error status, or silently when it is already gone. */
    const end = (outcome: StatusError | "gone" | undefined): void => {
      if (ended) return;
      ended = true;
      this.open.delete(shutdown);
      if (session !== undefined) this.registered--;
      session?.close();
      if (outcome === "gone") return;
      if (outcome === undefined) call.end();
      else {
        logger.debug(
          { agentId: session?.identity.agentId, remoteAddress, code: status[outcome.code], details: outcome.details },
          "session ended",
        );
        call.emit("error", {
          code: outcome.code,
          details: outcome.details,
          ...(outcome.metadata === undefined ? {} : { metadata: outcome.metadata }),
        });
      }
    };
    const shutdown = (details = "tracker shutting down", metadata?: Metadata): void => {
      end({ code: status.UNAVAILABLE, details, ...(metadata === undefined ? {} : { metadata }) });
    };
    this.open.add(shutdown);
    const resume = (): void => {
      if (!ended) call.resume();
    };
    call.on("data", (request: SessionRequest) => {
      if (ended) return;
      try {
        session = this.onMessage(call, session, request, remoteAddress, end);
      } catch (error: unknown) {
        end(edge.toStatus(error));
        return;
      }
      // Over the announce rate: stop reading this session until the gate has room (flow control holds the agent).
      if (request.kind?.$case === "announce" && !gate.take(resume)) {
        this.options.metrics?.announcePauses.inc();
        call.pause();
      }
    });
    call.on("end", () => {
      end(undefined);
    });
    call.on("cancelled", () => {
      end("gone");
    });
    call.on("error", (error: unknown) => {
      if (!ended) logger.debug({ err: error, remoteAddress }, "session stream failed");
      end("gone");
    });
  }

  /** Applies one session message; returns the session (created by `register`). */
  private onMessage(
    call: ServerDuplexStream<SessionRequest, SessionResponse>,
    session: TrackerSession | undefined,
    request: SessionRequest,
    remoteAddress: string | undefined,
    end: (outcome: StatusError) => void,
  ): TrackerSession | undefined {
    const { tracker, edge } = this.options;
    const kind = request.kind;
    if (session === undefined) {
      if (kind?.$case !== "register") throw edge.rejected("the first message of a session must be register");
      edge.checkServing();
      const identity = edge.check(() => validateIdentity(identityFromWire(kind.value)));
      const peer = verifiedPeer(call, this.options.tls);
      if (peer !== undefined) bindToCertificate(identity, peer, this.options);
      const opened = tracker.register(identity, {
        ...callerAccess(this.options.membership, remoteAddress, peer),
        resumeBlobs: kind.value.resumeBlobs,
        onClose: (reason) => {
          end({
            code: status.UNAVAILABLE,
            details: reason === "superseded" ? "a newer session of this agent replaced this one" : "session dropped by the tracker",
          });
        },
        // Commands are few and small (an assignment per ImagePrefetch); grpc-js buffers them if the agent reads slowly.
        onCommand: (command) => {
          call.write(commandResponse(command));
        },
        ...(kind.value.acceptsNotices ? { onNotice: noticeWriter(call) } : {}),
      });
      // The more agents hold sessions, the wider those coming back after a fail-over spread their re-announce.
      const reannounceSpreadMs = spreadForSessions(tracker.sessionCount);
      call.write({ kind: { $case: "registered", value: { trackerId: tracker.id, reannounceSpreadMs, sendsNotices: true } } });
      this.registered++;
      return opened;
    }
    switch (kind?.$case) {
      case "register":
        throw edge.rejected("register sent twice in one session");
      case "announce": {
        // Malformed input ends the session (our client checks the same rules before sending); a conflict
        // with what other agents announced only refuses this one announcement.
        const announcement = edge.check(() => announcementFromWire(kind.value));
        edge.check(() => validateAnnouncement(announcement));
        try {
          session.announce(announcement);
        } catch (error: unknown) {
          if (!isTrackerError(error, "ERR_TRACKER_INVALID_ARGUMENT")) throw error;
          this.options.logger.warn({ agentId: session.identity.agentId, err: error }, "announce refused");
        }
        return session;
      }
      case "withdraw":
        session.withdraw(edge.check(() => validateDigest(kind.value.digest)));
        return session;
      case "heartbeat":
        session.heartbeat(kind.value.activeUploads);
        return session;
      case "tagSeen":
        session.publishTag(edge.check(() => validateTagRecord(tagRecordFromWire(kind.value))));
        return session;
      case "prefetchReport":
        session.prefetchReport(edge.check(() => validatePrefetchReport(prefetchReportFromWire(kind.value))));
        return session;
      case undefined:
        // A message kind from a newer agent: ignored so that agents can be upgraded before the tracker.
        return session;
    }
  }
}
