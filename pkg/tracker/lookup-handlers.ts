import type { ServerUnaryCall, sendUnaryData } from "@grpc/grpc-js";
import type { LookupRequest, LookupResponse, ResolveTagRequest, ResolveTagResponse } from "../gen/tracker/v1/tracker.js";
import { callerAccess, verifiedPeer } from "./caller-identity.js";
import { TrackerError } from "./errors.js";
import { type Membership, hostOfPeer } from "./membership.js";
import type { MemoryTracker } from "./memory-tracker.js";
import type { ServerEdge } from "./server-edge.js";
import { validateAgentId, validateDigest, validateTagKey } from "./validation.js";
import { lookupResponse, tagRecordToWire } from "./wire.js";

/** Excluded holders one lookup may name; a swarm has far fewer bad peers than this. */
const MAX_EXCLUDED_AGENTS = 256;

/** What the unary handlers answer from, and check with. */
export interface LookupHandlersOptions {
  readonly tracker: MemoryTracker;
  readonly membership: Membership | undefined;
  readonly edge: ServerEdge;
  /** The server speaks mutual TLS: calls must come with the certificate of the agent's session. */
  readonly tls: boolean;
}

/**
 * The tracker server's unary calls, Lookup and ResolveTag: asked in an agent's name (which must hold a
 * session, bound to the caller's certificate with TLS), checked at the edge, answered from the tracker.
 */
export class LookupHandlers {
  constructor(private readonly options: LookupHandlersOptions) {}

  lookup(call: ServerUnaryCall<LookupRequest, LookupResponse>, callback: sendUnaryData<LookupResponse>): void {
    const { edge } = this.options;
    try {
      edge.checkServing();
      const agentId = edge.check(() => validateAgentId(call.request.agentId));
      const digest = edge.check(() => validateDigest(call.request.digest));
      const remoteAddress = hostOfPeer(call.getPeer());
      const excluded = edge.check(() => {
        if (call.request.excludedAgentIds.length > MAX_EXCLUDED_AGENTS)
          throw new TrackerError("ERR_TRACKER_INVALID_ARGUMENT", `more than ${MAX_EXCLUDED_AGENTS} excluded agents`);
        return call.request.excludedAgentIds.map(validateAgentId);
      });
      const expectedSize = edge.check(() => {
        const size = call.request.expectedSize;
        if (!Number.isSafeInteger(size) || size < 0)
          throw new TrackerError("ERR_TRACKER_INVALID_ARGUMENT", `expected size ${size} is not a byte count`);
        return size === 0 ? undefined : size;
      });
      const peer = verifiedPeer(call, this.options.tls);
      const result = this.options.tracker.lookup(
        agentId,
        digest,
        call.request.wantOriginGrant,
        callerAccess(this.options.membership, remoteAddress, peer),
        excluded,
        expectedSize,
      );
      callback(null, lookupResponse(result));
    } catch (error: unknown) {
      callback(edge.toStatus(error));
    }
  }

  resolveTag(call: ServerUnaryCall<ResolveTagRequest, ResolveTagResponse>, callback: sendUnaryData<ResolveTagResponse>): void {
    const { edge } = this.options;
    try {
      edge.checkServing();
      const agentId = edge.check(() => validateAgentId(call.request.agentId));
      const key = edge.check(() => validateTagKey(call.request));
      const remoteAddress = hostOfPeer(call.getPeer());
      const peer = verifiedPeer(call, this.options.tls);
      const record = this.options.tracker.resolveTag(agentId, key, callerAccess(this.options.membership, remoteAddress, peer));
      callback(null, record === undefined ? {} : { record: tagRecordToWire(record) });
    } catch (error: unknown) {
      callback(edge.toStatus(error));
    }
  }
}
