// The load generator's fail-over: its agents keep looking blobs up (blobs other agents hold, asking for
// the origin grant as an agent does before it would fetch), lose their sessions when the leader dies,
// reconnect as the agent's client does (capped exponential backoff with jitter, pkg/util's Backoff;
// an attempt goes where the tracker Service routes: the replica that is Ready, or nowhere),
// register at once saying how many blobs follow, and re-announce their inventory paced as the agent's
// client does (pkg/tracker's ReannouncePacing, with the spread the tracker answers with). Every loop is
// bounded by the plan's maxMs.
import { LookupResponse, SessionResponse } from "../../../pkg/gen/tracker/v1/tracker.js";
import { digestOf } from "../../../pkg/oci/index.js";
import { seededRandom } from "../../../pkg/sim/index.js";
import { ReannouncePacing, announceRequest } from "../../../pkg/tracker/index.js";
import { Backoff } from "../../../pkg/util/index.js";
import { SessionRequest } from "../../../pkg/gen/tracker/v1/tracker.js";
import { AgentConnection, type AgentTls, grpcFrame, grpcMessages } from "./grpc-h2.js";
import type { StormPlan, StormReport } from "./protocol.js";
import { type Workload, agentAddress, inventoryOf, lookupFrame, registerFrame } from "./workload.js";

/** The agent's lookup deadline: an answer later than this would have failed at the agent. */
const LOOKUP_DEADLINE_MS = 2_000;
/** Scheduler step of the lookup loop. */
const STEP_MS = 10;
/** Blobs each agent keeps looking up: held by other agents, not by itself. */
const LOOKUP_TARGETS = 8;
/**
 * How long one reconnect attempt may take until `registered`: grpc-js's connect timeout (20 s); the
 * agent's client then waits for `registered` as long as the stream lives. Shorter, a busy new leader
 * would see every slow handshake retried: more load exactly when it has the least to spare.
 */
const CONNECT_TIMEOUT_MS = 20_000;
/** How often an agent checks that the tracker has applied its whole re-announce (its sentinel is visible). */
const VISIBLE_POLL_MS = 500;

export interface StormAgent {
  readonly index: number;
  connection: AgentConnection;
}

interface AgentState {
  readonly index: number;
  connection: AgentConnection | undefined;
  readonly inventory: readonly number[];
  readonly targets: readonly Buffer[];
  readonly sentinel: Buffer;
  readonly sentinelLookup: Buffer;
  cursor: number;
  outstanding: boolean;
  registeredAtMs: number | undefined;
  sentAtMs: number | undefined;
  visibleAtMs: number | undefined;
  attempts: number;
}

/** Lookup targets of agent `index`: blobs of other agents' inventories that it does not hold itself. */
function targetsOf(index: number, agents: number, seed: number, own: ReadonlySet<number>): number[] {
  const random = seededRandom((seed * 31 + index * 7_919) >>> 0);
  const out: number[] = [];
  for (let k = 0; out.length < LOOKUP_TARGETS && k < LOOKUP_TARGETS * 8 && agents > 1; k++) {
    const other = (index + 1 + Math.floor(random() * (agents - 1))) % agents;
    const theirs = inventoryOf(other, seed).filter((rank) => !own.has(rank));
    const pick = theirs[Math.floor(random() * theirs.length)];
    if (pick !== undefined) out.push(pick);
  }
  return out;
}

/**
 * Plays the fail-over for `agents` (already connected with their inventories): lookups until `killed()`
 * resolves and the storm is over, reconnects, paced re-announces. Resolves with what it measured.
 */
export async function runStorm(
  agents: readonly StormAgent[],
  workload: Workload,
  plan: StormPlan,
  killed: Promise<number>,
  tlsFor: (index: number) => AgentTls | undefined,
  route: () => number | undefined,
): Promise<{ report: StormReport; connections: AgentConnection[] }> {
  const states: AgentState[] = agents.map(({ index, connection }) => {
    const inventory = inventoryOf(index, plan.seed);
    const own = new Set(inventory);
    const sentinelDigest = digestOf(`tracker-bench sentinel ${index}`);
    return {
      index,
      connection,
      inventory,
      targets: targetsOf(index, plan.agents, plan.seed, own).map((rank) =>
        lookupFrame(index, workload.catalogue[rank]?.digest ?? sentinelDigest, true),
      ),
      sentinel: grpcFrame(
        SessionRequest.encode(announceRequest({ digest: sentinelDigest, size: 1024, pieceSize: 1 << 20, complete: true })).finish(),
      ),
      sentinelLookup: lookupFrame(index, sentinelDigest, false),
      cursor: 0,
      outstanding: false,
      registeredAtMs: undefined,
      sentAtMs: undefined,
      visibleAtMs: undefined,
      attempts: 0,
    };
  });
  const report = {
    sentAtMs: [] as number[],
    latencies: [] as number[],
    results: [] as number[],
    unavailable: 0,
    late: 0,
  };
  const started = Date.now();
  const hardEnd = started + plan.baselineMs + plan.maxMs;
  let killedAtMs: number | undefined;
  void killed.then((at) => {
    killedAtMs = at;
  });
  const tasks: Promise<void>[] = [];
  const random = seededRandom((plan.seed * 104_729 + (agents[0]?.index ?? 0)) >>> 0);

  const lookup = (state: AgentState, frame: Buffer): void => {
    const connection = state.connection;
    if (connection === undefined || connection.sessionEnded) return;
    state.outstanding = true;
    const sentAt = Date.now();
    const t0 = performance.now();
    void connection.unary("Lookup", frame, true, LOOKUP_DEADLINE_MS * 5).then((answer) => {
      const ms = performance.now() - t0;
      state.outstanding = false;
      const message = answer.status === 0 && answer.body !== undefined ? grpcMessages(answer.body)[0] : undefined;
      if (message === undefined) {
        report.unavailable++;
        return;
      }
      const decoded = LookupResponse.decode(message);
      // 0 holders, 1 granted (the agent would fetch from the origin), 2 retry (rebuilding), 3 none.
      const result = decoded.holders.length > 0 ? 0 : decoded.origin?.granted === true ? 1 : decoded.retryAfterMs > 0 ? 2 : 3;
      report.sentAtMs.push(sentAt);
      report.latencies.push(ms);
      report.results.push(result);
      if (ms > LOOKUP_DEADLINE_MS) report.late++;
    });
  };

  /** After a lost session: reconnect with backoff, register at once, re-announce paced, wait until visible. */
  const recover = async (state: AgentState): Promise<void> => {
    const backoff = new Backoff({ ...plan.backoff, random });
    state.connection?.destroy();
    state.connection = undefined;
    while (Date.now() < hardEnd) {
      await sleep(backoff.next());
      let connection: AgentConnection | undefined;
      const port = route();
      state.attempts++;
      if (port !== undefined) {
        const attempt = new AgentConnection(port, agentAddress(state.index), tlsFor(state.index));
        try {
          await attempt.open(registerFrame(state.index, state.inventory.length + 1), AbortSignal.timeout(CONNECT_TIMEOUT_MS));
          connection = attempt;
        } catch {
          attempt.destroy();
        }
      }
      if (connection === undefined) continue;
      state.connection = connection;
      state.registeredAtMs = Date.now();
      const registered = connection.registered === undefined ? undefined : grpcMessages(connection.registered)[0];
      const response = registered === undefined ? undefined : SessionResponse.decode(registered);
      const spreadMs = response?.kind?.$case === "registered" ? response.kind.value.reannounceSpreadMs : 0;
      const pacing = new ReannouncePacing({ ...plan.pacing, random });
      const order = pacing.shuffle(state.inventory);
      const steps = pacing.plan(order.length, true, spreadMs);
      const base = Date.now();
      let at = 0;
      let intact = true;
      // Like the agent's client, a write waits for 'drain' as long as the session lives (the tracker pauses
      // sessions over its announce rate); only a session that ended sends the agent back to reconnecting.
      for (const step of steps) {
        await sleep(base + step.atMs - Date.now());
        for (let k = 0; k < step.blobs && intact; k++) {
          const blob = workload.catalogue[order[at++] ?? -1];
          if (blob !== undefined) intact = await connection.write(blob.announce, Math.max(0, hardEnd - Date.now()));
        }
        if (!intact) break;
      }
      if (intact) intact = await connection.write(state.sentinel, Math.max(0, hardEnd - Date.now()));
      if (!intact) {
        connection.destroy();
        state.connection = undefined;
        continue;
      }
      state.sentAtMs = Date.now();
      while (Date.now() < hardEnd && !connection.sessionEnded) {
        const answer = await connection.unary("Lookup", state.sentinelLookup, true, LOOKUP_DEADLINE_MS);
        const message = answer.status === 0 && answer.body !== undefined ? grpcMessages(answer.body)[0] : undefined;
        if (message !== undefined && LookupResponse.decode(message).size > 0) {
          state.visibleAtMs = Date.now();
          return;
        }
        await sleep(VISIBLE_POLL_MS);
      }
    }
  };

  for (const state of states) {
    const connection = state.connection;
    if (connection === undefined) continue;
    tasks.push(
      connection.whenEnded().then(async () => {
        if (Date.now() < hardEnd) await recover(state);
      }),
    );
  }

  // Lookups, spread evenly: each agent one per lookupIntervalMs, never two at once.
  const perStep = (states.length * STEP_MS) / plan.lookupIntervalMs;
  let credit = 0;
  let next = 0;
  for (let step = 0; Date.now() < hardEnd; step++) {
    credit += perStep;
    for (; credit >= 1 && states.length > 0; credit--) {
      const state = states[next++ % states.length];
      if (state === undefined || state.outstanding || state.targets.length === 0) continue;
      const frame = state.targets[state.cursor++ % state.targets.length];
      if (frame !== undefined) lookup(state, frame);
    }
    if (killedAtMs !== undefined) {
      const done = states.every((s) => s.visibleAtMs !== undefined && s.visibleAtMs >= (killedAtMs ?? 0));
      const lastVisible = Math.max(...states.map((s) => s.visibleAtMs ?? 0));
      if (done && Date.now() >= lastVisible + plan.tailMs) break;
    }
    const wait = started + (step + 1) * STEP_MS - Date.now();
    if (wait > 0) await sleep(wait);
  }
  await Promise.race([Promise.all(tasks), sleep(Math.max(0, hardEnd - Date.now()))]);
  const connections = states.map((s) => s.connection).filter((c): c is AgentConnection => c !== undefined);
  return {
    connections,
    report: {
      type: "storm",
      killedAtMs: killedAtMs ?? Number.NaN,
      registeredAtMs: states.map((s) => s.registeredAtMs ?? Number.NaN),
      sentAtMs: states.map((s) => s.sentAtMs ?? Number.NaN),
      visibleAtMs: states.map((s) => s.visibleAtMs ?? Number.NaN),
      attempts: states.reduce((sum, s) => sum + s.attempts, 0),
      lookupSentAtMs: report.sentAtMs,
      lookupLatencies: report.latencies,
      lookupResults: report.results,
      lookupsUnavailable: report.unavailable,
      lookupsLate: report.late,
      cpuSeconds: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6,
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}
