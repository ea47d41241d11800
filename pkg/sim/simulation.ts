import { pino } from "pino";
import { distributionBounds } from "../bounds/index.js";
import { type Digest, digestOf } from "../oci/index.js";
import type { PieceRequest, SwarmPeer } from "../peer/index.js";
import { type BlobChange, MemoryTracker } from "../tracker/index.js";
import { SimError } from "./errors.js";
import { GRANT_STALL_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS, type SimConfig, validateConfig } from "./config.js";
import { type FlowEnds, Network } from "./network.js";
import { deriveSeed, seededRandom } from "./random.js";
import { SimAgent } from "./sim-agent.js";
import type { World } from "./sim-world.js";

/** One transfer: a ReadPieces call from a peer, or the grantee's fetch from the origin. */
interface Call extends FlowEnds {
  readonly agent: SimAgent;
  readonly source: SimAgent | undefined;
  readonly pieces: readonly number[];
  readonly request: PieceRequest | undefined;
  readonly waitMs: number;
  /** The first byte can arrive from then on (one round trip after the request). */
  readonly startAtMs: number;
  position: number;
  /** Bytes of the current piece still to send; 0 = not started. */
  remaining: number;
  /** Bytes of the current piece already sent (wasted if the call is cut off). */
  sent: number;
  waitingSinceMs: number | undefined;
  ended: boolean;
}

export interface SimResult {
  readonly nodes: number;
  readonly blobBytes: number;
  readonly pieceBytes: number;
  /** Per node, seconds from the common start until it held the whole blob; undefined = not within the limit. */
  readonly completionSeconds: readonly (number | undefined)[];
  readonly lastSeconds: number | undefined;
  readonly p50Seconds: number | undefined;
  readonly p99Seconds: number | undefined;
  /** The P2P and client-server bounds for the uniform case (the first node's link stands for all). */
  readonly boundSeconds: number;
  readonly clientServerBoundSeconds: number;
  readonly ratioToBound: number | undefined;
  readonly originBytes: number;
  readonly originCopies: number;
  /** Bytes received and not kept: duplicates, pieces dropped for want of a hash, calls cut off. */
  readonly wastedBytes: number;
  readonly wastedFraction: number;
  readonly peerBytes: number;
  readonly lookups: number;
  readonly announces: number;
  /** BlobChanged notices the agents received. */
  readonly notices: number;
  /** Of them, notices whose change a download applied instead of a lookup. */
  readonly deltaNotices: number;
  readonly stalls: number;
  readonly simulatedSeconds: number;
  /** Wall-clock time the simulation took on this machine. */
  readonly wallSeconds: number;
}

/**
 * A discrete-time simulation of N agents pulling one blob at the same moment, driving the agent's real
 * PiecePicker (which pieces from whom) and the real MemoryTracker (holders, ranking, piece hashes,
 * origin grant) over a model of links (per-node upload and download, the origin's upload, latency,
 * zones). What is modelled and what is not: docs/benchmarks.md, "At scale".
 */
export class Simulation implements World<SimAgent> {
  readonly tracker: MemoryTracker;
  readonly digest: Digest = digestOf("shoal simulated blob");
  readonly pieceCount: number;
  readonly hashes: readonly Uint8Array[];
  readonly agents: readonly SimAgent[];
  private readonly network: Network;
  private readonly origin: number;
  private calls: Call[] = [];
  /** Agents due per tick index (a bucket queue; stale entries are skipped). */
  private readonly due = new Map<number, SimAgent[]>();
  /** Other timed work per tick index: the tracker's rounds of notices, and notices on their way. */
  private readonly events = new Map<number, { cancelled: boolean; run: () => void }[]>();
  private tick = 0;
  private nowMs = 0;
  private originBytes = 0;
  private done = 0;

  constructor(readonly config: SimConfig) {
    validateConfig(config);
    const n = config.nodes.length;
    this.origin = n;
    this.pieceCount = Math.ceil(config.blobBytes / config.pieceBytes);
    this.hashes = Array.from({ length: this.pieceCount }, (_, i) => Uint8Array.from({ length: 32 }, (_, b) => (i * 31 + b) & 0xff));
    this.tracker = new MemoryTracker({
      logger: pino({ level: "silent" }),
      now: () => this.nowMs,
      random: seededRandom(deriveSeed(config.seed, -1)),
      maxLookupHolders: config.maxLookupHolders,
      grantStallTimeoutMs: GRANT_STALL_TIMEOUT_MS,
      id: "sim",
      noticeIntervalMs: config.noticeIntervalMs,
      noticesPerBlobPerSecond: config.noticesPerBlobPerSecond,
      noticeDeltas: config.noticeDeltas,
      schedule: (task, delayMs) => this.at(this.nowMs + delayMs, task),
    });
    const up = new Float64Array(n + 1);
    const down = new Float64Array(n + 1);
    config.nodes.forEach((node, i) => {
      up[i] = node.uploadBytesPerSecond;
      down[i] = node.downloadBytesPerSecond;
    });
    up[n] = config.originBytesPerSecond;
    down[n] = 0;
    this.network = new Network(up, down);
    this.agents = config.nodes.map((node, i) => new SimAgent(i, node.zone, this, seededRandom(deriveSeed(config.seed, i))));
  }

  /** Runs until every node holds the blob or the time limit passes. */
  run(): SimResult {
    const started = performance.now();
    const { tickMs, timeLimitMs } = this.config;
    for (const agent of this.agents) agent.register();
    for (const agent of this.agents) agent.start(0);
    let nextHeartbeatMs = HEARTBEAT_INTERVAL_MS;
    while (this.done < this.agents.length && this.nowMs < timeLimitMs) {
      this.advance(tickMs);
      this.tick++;
      this.nowMs = this.tick * tickMs;
      this.runEvents();
      if (this.nowMs >= nextHeartbeatMs) {
        for (const agent of this.agents) agent.heartbeat();
        nextHeartbeatMs += HEARTBEAT_INTERVAL_MS;
      }
      this.runDue();
    }
    return this.result((performance.now() - started) / 1000);
  }

  openCall(agent: SimAgent, peer: SwarmPeer, request: PieceRequest, waitMs: number): boolean {
    const source = this.agents[Number(peer.agentId.slice("agent-".length))];
    // The tracker only knows the simulation's own agents: anything else is a bug here.
    if (source === undefined) throw new SimError("ERR_SIM_INTERNAL", `no simulated agent ${peer.agentId}`);
    if (source.uploads >= this.config.maxUploads) return false;
    source.uploads++;
    const oneWay = this.config.nodes[source.index]?.zone === agent.zone ? this.config.latencyMs : this.config.crossZoneLatencyMs;
    this.calls.push({
      agent,
      source,
      src: source.index,
      dst: agent.index,
      rate: 0,
      pieces: request.pieces,
      request,
      waitMs,
      startAtMs: this.nowMs + 2 * oneWay,
      position: 0,
      remaining: 0,
      sent: 0,
      waitingSinceMs: undefined,
      ended: false,
    });
    return true;
  }

  openOrigin(agent: SimAgent): void {
    const pieces: number[] = [];
    for (let i = 0; i < this.pieceCount; i++) if (agent.held[i] === 0) pieces.push(i);
    this.calls.push({
      agent,
      source: undefined,
      src: this.origin,
      dst: agent.index,
      rate: 0,
      pieces,
      request: undefined,
      waitMs: 0,
      startAtMs: this.nowMs + 2 * this.config.originLatencyMs,
      position: 0,
      remaining: 0,
      sent: 0,
      waitingSinceMs: undefined,
      ended: false,
    });
  }

  abortCalls(agent: SimAgent): void {
    for (const call of this.calls) if (call.agent === agent && !call.ended) this.end(call, false, true);
  }

  wake(agent: SimAgent, atMs: number): void {
    // Never the current tick: its turn is over (or under way), so "now" means the next one.
    const tick = Math.max(Math.ceil(atMs / this.config.tickMs - 1e-9), this.tick + 1);
    if (agent.wakeTick <= tick && agent.wakeTick >= this.tick) return;
    agent.wakeTick = tick;
    const bucket = this.due.get(tick);
    if (bucket === undefined) this.due.set(tick, [agent]);
    else bucket.push(agent);
  }

  completed(): void {
    this.done++;
  }

  notice(agent: SimAgent, change: BlobChange | undefined): void {
    // The controller sits one in-zone hop from every node.
    this.at(this.nowMs + this.config.latencyMs, () => {
      agent.notice(this.nowMs, change);
    });
  }

  /** Runs `task` at the first step at or after `atMs` (never the current one); returns its cancel function. */
  private at(atMs: number, task: () => void): () => void {
    const tick = Math.max(Math.ceil(atMs / this.config.tickMs - 1e-9), this.tick + 1);
    const event = { cancelled: false, run: task };
    const bucket = this.events.get(tick);
    if (bucket === undefined) this.events.set(tick, [event]);
    else bucket.push(event);
    return () => {
      event.cancelled = true;
    };
  }

  private runEvents(): void {
    const bucket = this.events.get(this.tick);
    if (bucket === undefined) return;
    this.events.delete(this.tick);
    for (const event of bucket) if (!event.cancelled) event.run();
  }

  /** One step of the network: which calls send, at what rate, and what arrives. */
  private advance(tickMs: number): void {
    const now = this.nowMs;
    const sending: Call[] = [];
    for (const call of this.calls) {
      if (call.ended || now < call.startAtMs) continue;
      if (call.remaining > 0 || this.nextPiece(call, now)) sending.push(call);
    }
    for (const call of this.calls) call.rate = 0;
    this.network.allocate(sending);
    const arrivals: { atMs: number; call: Call; piece: number }[] = [];
    for (const call of sending) {
      let budget = (call.rate * tickMs) / 1000;
      let spentMs = 0;
      let received = 0;
      while (budget > 0 && call.remaining > 0) {
        const take = Math.min(budget, call.remaining);
        call.remaining -= take;
        call.sent += take;
        budget -= take;
        received += take;
        spentMs = call.rate > 0 ? (received / call.rate) * 1000 : tickMs;
        if (call.remaining > 1e-6) break;
        call.remaining = 0;
        call.sent = 0;
        arrivals.push({ atMs: now + spentMs, call, piece: call.pieces[call.position] ?? -1 });
        call.position++;
        if (call.position >= call.pieces.length || !this.nextPiece(call, now)) break;
      }
      if (call.source === undefined) this.originBytes += received;
      if (call.request !== undefined && received > 0) call.agent.data(call.request, received, now + tickMs);
    }
    arrivals.sort((a, b) => a.atMs - b.atMs);
    for (const { atMs, call, piece } of arrivals) {
      if (call.ended) continue;
      call.agent.receive(piece, call.request, atMs);
      if (call.position >= call.pieces.length) this.end(call, false, false);
    }
    if (this.calls.some((c) => c.ended)) this.calls = this.calls.filter((c) => !c.ended);
  }

  /** Starts the call's next piece if its source can send it; a relay waits for it up to its wait; else the call fails. */
  private nextPiece(call: Call, now: number): boolean {
    const piece = call.pieces[call.position];
    if (piece === undefined) return false;
    if (call.source === undefined || call.source.serves(piece)) {
      call.remaining = Math.min(this.config.pieceBytes, this.config.blobBytes - piece * this.config.pieceBytes);
      call.waitingSinceMs = undefined;
      return true;
    }
    call.waitingSinceMs ??= now;
    if (call.waitMs === 0 || now - call.waitingSinceMs >= call.waitMs) this.end(call, true, false);
    return false;
  }

  /** Ends a call; `missing`: the source lacked a piece; `cut`: cancelled by its agent (bytes in flight wasted). */
  private end(call: Call, missing: boolean, cut: boolean): void {
    if (call.ended) return;
    call.ended = true;
    if (call.source !== undefined) call.source.uploads--;
    if (cut) call.agent.counters.wastedBytes += call.sent;
    if (call.request !== undefined && !cut) call.agent.callEnded(call.request, missing, this.nowMs);
  }

  private runDue(): void {
    const bucket = this.due.get(this.tick);
    if (bucket === undefined) return;
    this.due.delete(this.tick);
    for (const agent of bucket) {
      if (agent.wakeTick !== this.tick) continue;
      agent.wakeTick = Number.POSITIVE_INFINITY;
      agent.step(this.nowMs);
    }
  }

  private result(wallSeconds: number): SimResult {
    const { config } = this;
    const n = this.agents.length;
    const times = this.agents.map((a) => (a.completedAtMs === undefined ? undefined : a.completedAtMs / 1000));
    const finished = times.filter((t): t is number => t !== undefined).sort((a, b) => a - b);
    const all = finished.length === n;
    const quantile = (q: number): number | undefined => (all ? finished[Math.min(n - 1, Math.ceil(q * n) - 1)] : undefined);
    const first = config.nodes[0];
    const bounds = distributionBounds(config.blobBytes, n, {
      originBytesPerSecond: config.originBytesPerSecond,
      uploadBytesPerSecond: Number.isFinite(first?.uploadBytesPerSecond) ? (first?.uploadBytesPerSecond ?? 0) : 0,
      downloadBytesPerSecond: first?.downloadBytesPerSecond ?? 0,
    });
    const sum = (pick: (a: SimAgent) => number): number => this.agents.reduce((total, a) => total + pick(a), 0);
    const lastSeconds = all ? finished[n - 1] : undefined;
    const peerBytes = sum((a) => a.counters.bytesFromPeers);
    const wastedBytes = sum((a) => a.counters.wastedBytes);
    return {
      nodes: n,
      blobBytes: config.blobBytes,
      pieceBytes: config.pieceBytes,
      completionSeconds: times,
      lastSeconds,
      p50Seconds: quantile(0.5),
      p99Seconds: quantile(0.99),
      boundSeconds: bounds.p2pSeconds,
      clientServerBoundSeconds: bounds.clientServerSeconds,
      ratioToBound: lastSeconds === undefined ? undefined : lastSeconds / bounds.p2pSeconds,
      originBytes: this.originBytes,
      originCopies: this.originBytes / config.blobBytes,
      wastedBytes,
      wastedFraction: wastedBytes / Math.max(1, peerBytes + wastedBytes),
      peerBytes,
      lookups: sum((a) => a.counters.lookups),
      announces: sum((a) => a.counters.announces),
      notices: sum((a) => a.counters.notices),
      deltaNotices: sum((a) => a.counters.deltaNotices),
      stalls: sum((a) => a.counters.stalls),
      simulatedSeconds: this.nowMs / 1000,
      wallSeconds,
    };
  }
}

/** Runs one simulation. */
export function simulate(config: SimConfig): SimResult {
  return new Simulation(config).run();
}
