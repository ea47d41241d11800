import type { Logger } from "pino";
import type { ControllerMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import type { ChargedAgent } from "./blob-ledger.js";
import { TrackerError } from "./errors.js";
import type { NoticeTarget } from "./notice-delivery.js";
import type { AgentCommand } from "./prefetch.js";
import type { BoundSession } from "./session-access.js";
import type { AgentIdentity, BlobChange } from "./tracker.js";
import type { RegisterOptions, SessionCloseReason } from "./tracker-session.js";

/** One agent with a session, as the tracker keeps it. */
export interface AgentRecord extends ChargedAgent, NoticeTarget, BoundSession {
  /** As the membership identified it; updateZone() may change the zone. */
  identity: AgentIdentity;
  /** Names this session: a handle whose token is not the current one belongs to an ended session. */
  readonly token: object;
  /** The certificate identity the session is bound to (undefined without TLS). */
  readonly principal: string | undefined;
  readonly onClose: ((reason: SessionCloseReason) => void) | undefined;
  readonly onCommand: ((command: AgentCommand) => void) | undefined;
  readonly onNotice: ((digest: Digest, change: BlobChange | undefined) => boolean) | undefined;
  activeUploads: number;
  readonly blobs: Set<Digest>;
  /** Controller memory charged to this agent (MEMORY_BUDGET_PER_AGENT_BYTES, blob-ledger.ts): its holder entries and the records it created. */
  chargedBytes: number;
}

/**
 * The agents with a session, by agent id and by node (the "same node" ranking tier), and the calls into
 * their sessions (commands, the close callback). The tracker decides who registers and what a session's
 * end drops; this only keeps the records.
 */
export class AgentSessions {
  private readonly byId = new Map<string, AgentRecord>();
  /** Node name → agents registered from it (usually one). */
  private readonly byNode = new Map<string, Set<string>>();

  constructor(
    private readonly logger: Logger,
    private readonly metrics: ControllerMetrics | undefined,
  ) {}

  /** Sessions open now. */
  get size(): number {
    return this.byId.size;
  }

  get(agentId: string): AgentRecord | undefined {
    return this.byId.get(agentId);
  }

  /** The agent's record; throws ERR_TRACKER_NOT_REGISTERED (counted) when it has no session. */
  require(agentId: string): AgentRecord {
    const agent = this.byId.get(agentId);
    if (agent !== undefined) return agent;
    this.metrics?.requestsRejected.inc({ reason: "not_registered" });
    throw new TrackerError("ERR_TRACKER_NOT_REGISTERED", `agent ${JSON.stringify(agentId.slice(0, 128))} has no session with the tracker`);
  }

  /** The agents registered from `nodeName`. */
  onNode(nodeName: string): Iterable<string> {
    return this.byNode.get(nodeName) ?? [];
  }

  values(): IterableIterator<AgentRecord> {
    return this.byId.values();
  }

  /** Records a new session of `agentId` (none may be open), registered as `identity`; returns its token. */
  open(agentId: string, identity: AgentIdentity, options: RegisterOptions): object {
    const token = {};
    this.byId.set(agentId, {
      identity,
      token,
      principal: options.principal,
      onClose: options.onClose,
      onCommand: options.onCommand,
      onNotice: options.onNotice,
      activeUploads: 0,
      blobs: new Set(),
      chargedBytes: 0,
    });
    let onNode = this.byNode.get(identity.nodeName);
    if (onNode === undefined) {
      onNode = new Set();
      this.byNode.set(identity.nodeName, onNode);
    }
    onNode.add(agentId);
    this.metrics?.agents.set(this.byId.size);
    return token;
  }

  /** Takes the agent's session out; returns its record (undefined: it had none). */
  remove(agentId: string): AgentRecord | undefined {
    const agent = this.byId.get(agentId);
    if (agent === undefined) return undefined;
    this.byId.delete(agentId);
    const onNode = this.byNode.get(agent.identity.nodeName);
    onNode?.delete(agentId);
    if (onNode?.size === 0) this.byNode.delete(agent.identity.nodeName);
    this.metrics?.agents.set(this.byId.size);
    return agent;
  }

  /** Hands `command` to the agent's session; false when it has none, takes no commands, or the hand-over failed. */
  sendCommand(agentId: string, command: AgentCommand): boolean {
    const agent = this.byId.get(agentId);
    if (agent?.onCommand === undefined) return false;
    try {
      agent.onCommand(command);
      return true;
    } catch (error: unknown) {
      this.logger.warn({ err: error, agentId }, "command not delivered");
      return false;
    }
  }

  /** Tells a removed session the tracker ended it (`reason`); a callback that throws is logged. */
  ended(agentId: string, agent: AgentRecord, reason: SessionCloseReason): void {
    if (agent.onClose === undefined) return;
    try {
      agent.onClose(reason);
    } catch (error: unknown) {
      this.logger.error({ err: error, agentId }, "session close callback failed");
    }
  }
}
