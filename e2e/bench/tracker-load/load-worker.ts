// One load-generator process: holds the sessions of a slice of the simulated agents, announces their
// inventories, then plays a cold rollout on command and reports what it measured. Started by
// tracker-bench.ts with child_process.fork; talks to it only through IPC messages.
import { LookupResponse } from "../../../pkg/gen/tracker/v1/tracker.js";
import { digestOf } from "../../../pkg/oci/index.js";
import { announceRequest } from "../../../pkg/tracker/index.js";
import { SessionRequest } from "../../../pkg/gen/tracker/v1/tracker.js";
import { createPublicKey } from "node:crypto";
import { CertificateAuthority, generateKey } from "../../../pkg/identity/index.js";
import { AgentConnection, type AgentTls, grpcFrame, grpcMessages } from "./grpc-h2.js";
import { buildWorkload, inventoryOf, lookupFrame, registerFrame, agentAddress, agentIdentity } from "./workload.js";
import type { BenchCa, WorkerCommand, WorkerReport, RolloutPlan } from "./protocol.js";
import { runStorm } from "./storm.js";

/** A lookup answered later than this would have failed at the agent (its lookup deadline). */
const LOOKUP_DEADLINE_MS = 2_000;
/** Scheduler step of the rollout: sends due in a step go out together. */
const STEP_MS = 10;
/** Sessions opened at once while connecting. */
const CONNECT_CONCURRENCY = 64;
/** Lookups whose answers are decoded and checked (the rest are only timed). */
const CHECKED_LOOKUPS = 200;
/** The simulated agents' certificates outlive any run. */
const CERTIFICATE_LIFETIME_MS = 24 * 3_600_000;

const send = (report: WorkerReport): void => {
  process.send?.(report);
};

interface Download {
  readonly agent: number;
  readonly connection: AgentConnection;
  readonly layer: number;
  readonly lookup: Buffer;
  outstanding: boolean;
  stage: number;
}

let agents: { index: number; connection: AgentConnection }[] = [];
let seed = 1;
/** Each agent's certificate when the tracker speaks mutual TLS. */
const certificates = new Map<number, AgentTls>();

/** Certificates for `indexes` from the cluster CA: role agent, its node name, its pod IP, as the controller issues them. */
function issueCertificates(indexes: readonly number[], ca: BenchCa): void {
  const authority = CertificateAuthority.fromPem(ca.certificatePem, ca.keyPem);
  for (const index of indexes) {
    const key = generateKey();
    const issued = authority.issue({
      publicKey: createPublicKey(key),
      identity: { role: "agent", name: agentIdentity(index).nodeName, ips: [agentAddress(index)] },
      lifetimeMs: CERTIFICATE_LIFETIME_MS,
    });
    certificates.set(index, {
      keyPem: key.export({ type: "pkcs8", format: "pem" }).toString(),
      certificatePem: issued.certificatePem,
      caPem: ca.certificatePem,
    });
  }
}

async function connectAll(indexes: readonly number[], port: number): Promise<void> {
  const workload = buildWorkload(seed);
  const signal = AbortSignal.timeout(600_000);
  let next = 0;
  const opened: { index: number; connection: AgentConnection }[] = [];
  const connectOne = async (index: number): Promise<void> => {
    const connection = new AgentConnection(port, agentAddress(index), certificates.get(index));
    await connection.open(registerFrame(index), signal);
    for (const rank of inventoryOf(index, seed)) {
      const blob = workload.catalogue[rank];
      // Backed up: wait for the stream to drain, as the agent's client does, instead of dropping.
      while (blob !== undefined && !connection.send(blob.announce)) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    // A blob only this agent holds, announced last: once a lookup sees it, the inventory is in.
    const sentinel = digestOf(`tracker-bench sentinel ${index}`);
    while (
      !connection.send(
        grpcFrame(SessionRequest.encode(announceRequest({ digest: sentinel, size: 1024, pieceSize: 1 << 20, complete: true })).finish()),
      )
    )
      await new Promise((resolve) => setTimeout(resolve, 5));
    for (let attempt = 0; ; attempt++) {
      const answer = await connection.unary("Lookup", lookupFrame(index, sentinel, false), true, LOOKUP_DEADLINE_MS);
      const message = answer.status === 0 && answer.body !== undefined ? grpcMessages(answer.body)[0] : undefined;
      if (message !== undefined && LookupResponse.decode(message).size > 0) break;
      if (attempt > 600)
        throw new Error(`agent ${index}: inventory not visible at the tracker after ${attempt} lookups (status ${answer.status})`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    opened.push({ index, connection });
  };
  await Promise.all(
    Array.from({ length: CONNECT_CONCURRENCY }, async () => {
      while (next < indexes.length) {
        const index = indexes[next++];
        if (index !== undefined) await connectOne(index);
      }
    }),
  );
  agents = opened;
}

async function rollout(plan: RolloutPlan): Promise<WorkerReport> {
  const workload = buildWorkload(seed);
  const active = agents.filter((a) => (a.index * 2_654_435_761) % 1_000 < plan.activeFraction * 1_000);
  const downloads: Download[] = [];
  for (const { index, connection } of active) {
    for (let layer = 0; layer < Math.min(plan.concurrentLayers, workload.layers.length); layer++) {
      const digest = workload.layers[layer]?.digest;
      if (digest !== undefined)
        downloads.push({ agent: index, connection, layer, lookup: lookupFrame(index, digest, false), outstanding: false, stage: 0 });
    }
  }
  const latencies: number[] = [];
  let lookups = 0;
  let lookupErrors = 0;
  let lateLookups = 0;
  let deferredLookups = 0;
  let announces = 0;
  let skippedAnnounces = 0;
  let heartbeats = 0;
  let responseBytes = 0;
  let checked = 0;
  let holdersSeen = 0;
  const inflight = new Set<Promise<void>>();
  const lookupPerStep = (downloads.length * STEP_MS) / plan.lookupIntervalMs;
  const announcePerStep = (downloads.length * STEP_MS) / plan.announceIntervalMs;
  const heartbeatPerStep = (agents.length * STEP_MS) / plan.heartbeatIntervalMs;
  let lookupCredit = 0;
  let announceCredit = 0;
  let heartbeatCredit = 0;
  let lookupCursor = 0;
  let announceCursor = 0;
  let heartbeatCursor = 0;
  const started = performance.now();
  const end = started + plan.durationMs;
  for (let step = 0; performance.now() < end; step++) {
    lookupCredit += lookupPerStep;
    announceCredit += announcePerStep;
    heartbeatCredit += heartbeatPerStep;
    for (; lookupCredit >= 1 && downloads.length > 0; lookupCredit--) {
      const download = downloads[lookupCursor++ % downloads.length];
      if (download === undefined) continue;
      // An agent waits for its lookup before the next one: a slow tracker slows the askers down.
      if (download.outstanding) {
        deferredLookups++;
        continue;
      }
      download.outstanding = true;
      const keep = checked < CHECKED_LOOKUPS;
      if (keep) checked++;
      const t0 = performance.now();
      const call = download.connection.unary("Lookup", download.lookup, keep, LOOKUP_DEADLINE_MS * 5).then((result) => {
        const ms = performance.now() - t0;
        download.outstanding = false;
        inflight.delete(call);
        lookups++;
        responseBytes += result.bytes;
        if (result.status !== 0) {
          lookupErrors++;
          return;
        }
        latencies.push(ms);
        if (ms > LOOKUP_DEADLINE_MS) lateLookups++;
        const message = result.body === undefined ? undefined : grpcMessages(result.body)[0];
        if (message !== undefined) holdersSeen += LookupResponse.decode(message).holders.length;
      });
      inflight.add(call);
    }
    for (; announceCredit >= 1 && downloads.length > 0; announceCredit--) {
      const download = downloads[announceCursor++ % downloads.length];
      const layer = download === undefined ? undefined : workload.layers[download.layer];
      if (download === undefined || layer === undefined) continue;
      const frame = layer.progress[download.stage % layer.progress.length];
      if (frame !== undefined && download.connection.send(frame)) {
        announces++;
        download.stage++;
      } else skippedAnnounces++;
    }
    for (; heartbeatCredit >= 1 && agents.length > 0; heartbeatCredit--) {
      const agent = agents[heartbeatCursor++ % agents.length];
      if (agent?.connection.send(workload.heartbeat) === true) heartbeats++;
    }
    const wait = started + (step + 1) * STEP_MS - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
  const elapsedMs = performance.now() - started;
  // Answers still on their way are waited for (bounded), so their latency counts.
  await Promise.race([Promise.all(inflight), new Promise((resolve) => setTimeout(resolve, LOOKUP_DEADLINE_MS * 5))]);
  return {
    type: "result",
    elapsedMs,
    latencies,
    lookups,
    lookupErrors,
    lateLookups,
    deferredLookups,
    announces,
    skippedAnnounces,
    heartbeats,
    responseBytes,
    checkedLookups: checked,
    holdersSeen,
    downloads: downloads.length,
    cpuSeconds: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6,
  };
}

let onKilled: ((atMs: number) => void) | undefined;
/** Where the tracker Service routes (storm): the Ready replica's port. */
let routePort: number | undefined;
const killed = new Promise<number>((resolve) => {
  onKilled = resolve;
});

process.on("message", (command: WorkerCommand) => {
  const run = async (): Promise<void> => {
    if (command.type === "killed") {
      onKilled?.(command.atMs);
    } else if (command.type === "route") {
      routePort = command.port;
    } else if (command.type === "storm") {
      routePort = command.plan.port;
      const { report, connections } = await runStorm(
        agents,
        buildWorkload(seed),
        command.plan,
        killed,
        (index) => certificates.get(index),
        () => routePort,
      );
      // The connections are the new leader's now: close them with the others.
      agents = connections.map((connection, i) => ({ index: i, connection }));
      send(report);
    } else if (command.type === "connect") {
      seed = command.seed;
      if (command.ca !== undefined) issueCertificates(command.agents, command.ca);
      await connectAll(command.agents, command.port);
      send({ type: "connected", sessions: agents.length });
    } else if (command.type === "rollout") {
      send(await rollout(command.plan));
    } else {
      await Promise.all(agents.map((a) => a.connection.close()));
      send({ type: "closed" });
      process.disconnect();
    }
  };
  run().catch((error: unknown) => {
    send({ type: "failed", message: error instanceof Error ? error.message : String(error) });
  });
});
