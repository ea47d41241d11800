import { distributionBounds } from "../../pkg/bounds/index.js";
import { type MachineFigures, cpuBoundNote, formatMachineFigures } from "../../pkg/metrics/index.js";
import { formatMB } from "../shoal/progress-view.js";

const GB = 1e9;

const MB = 1e6;

export interface NodeResult {
  readonly name: string;
  /** From the common start of the round until this node held the whole image. */
  readonly seconds: number;
  /** Body bytes the node's puller received (manifest, config, layers). */
  readonly bytes: number;
  readonly bytesFromOrigin: number;
  readonly bytesFromPeers: number;
  readonly bytesFromLocal: number;
  /** What the node's agent uploaded to the others. */
  readonly bytesToPeers: number;
  /** Peer bytes received beyond what the node needed (pieces received twice: hedged, endgame, relays). */
  readonly duplicatePeerBytes: number;
  /** Peer bytes received and not kept, by reason (already_held, unverifiable, bad, incomplete). */
  readonly wastedPeerBytes: Readonly<Record<string, number>>;
  /** CPU seconds the node's agent spent during the round (user + system, /proc); null where not measurable. */
  readonly agentCpuSeconds: number | null;
  /** The agent's peak resident set size (VmHWM) by the end of the round, bytes; null where not measurable. */
  readonly agentPeakRssBytes: number | null;
  /** Tracker lookups the agent made (shoal_tracker_lookups_total). */
  readonly trackerLookups: number;
  /** BlobChanged notices the agent received, and of them those that carried the change (no lookup needed). */
  readonly trackerNotices: number;
  readonly trackerNoticeDeltas: number;
  /** Manifests and blobs whose digest the puller checked: every one it fetched. */
  readonly digestsVerified: number;
  readonly complete: boolean;
}

export interface Rates {
  /** 0 = uncapped, here and below. */
  readonly originBytesPerSecond: number;
  readonly uploadBytesPerSecond: number;
  readonly downloadBytesPerSecond: number;
}

export interface DemoResult {
  readonly nodeCount: number;
  readonly layers: number;
  /** The agents pulled another image of the same size before the round (--warm-up); the figures are the round's. */
  readonly warmUp: boolean;
  readonly rates: Rates;
  /** F: bytes one node pulls (manifest, config, layers). */
  readonly imageBytes: number;
  /** What the origin sent during the P2P round. */
  readonly originBytes: number;
  /** 1 - originBytes / (N·F): the share of the pulled bytes the origin did not have to send. */
  readonly offloadPercent: number;
  /** Until the last node held the image. */
  readonly p2pSeconds: number;
  readonly clientServerSeconds: number | null;
  readonly clientServerOriginBytes: number | null;
  /** The P2P bound, max(F/u_s, F/d, N·F/(u_s + N·u)) (docs/architecture.md, "The bounds"). */
  readonly boundSeconds: number;
  /** max(N·F/u_s, F/d). */
  readonly clientServerBoundSeconds: number;
  /** All agents' CPU seconds during the round per GB pulled (N·F); null where not measurable. */
  readonly agentCpuSecondsPerGB: number | null;
  /**
   * The machine's CPU during the round (/proc/stat) and what the agents, the controller and this process
   * (`demo`: the origin and the pullers standing in for the runtimes) took of it; null without /proc.
   */
  readonly machine: MachineFigures | null;
  /** The tracker's lookups answered and notices sent during the round (the controller's /metrics). */
  readonly tracker: { readonly lookupsServed: number; readonly noticesSent: number; readonly noticeDeltas: number } | null;
  readonly nodes: readonly NodeResult[];
}

/** The distribution bounds (docs/architecture.md, "The bounds") for F bytes to N nodes. */
export function bounds(imageBytes: number, nodes: number, rates: Rates): { p2p: number; clientServer: number } {
  const b = distributionBounds(imageBytes, nodes, rates);
  return { p2p: b.p2pSeconds, clientServer: b.clientServerSeconds };
}

/** Peer bytes received beyond what the node needed: F minus what came from the origin and its own store. */
export function duplicatePeerBytes(
  imageBytes: number,
  bytes: { readonly origin: number; readonly peers: number; readonly local: number },
): number {
  return Math.max(0, bytes.peers - Math.max(0, imageBytes - bytes.origin - bytes.local));
}

/** CPU seconds per GB pulled, from every agent's CPU; null when any is unknown. */
export function cpuSecondsPerGB(nodes: readonly { readonly agentCpuSeconds: number | null }[], pulledBytes: number): number | null {
  if (pulledBytes <= 0 || nodes.some((n) => n.agentCpuSeconds === null)) return null;
  return nodes.reduce((total, n) => total + (n.agentCpuSeconds ?? 0), 0) / (pulledBytes / GB);
}

export function offloadPercent(originBytes: number, pulledBytes: number): number {
  return pulledBytes > 0 ? Math.max(0, (1 - originBytes / pulledBytes) * 100) : 0;
}

function rate(bytesPerSecond: number): string {
  return bytesPerSecond > 0 ? `${(bytesPerSecond / MB).toFixed(1)} MB/s (${((bytesPerSecond * 8) / MB).toFixed(0)} Mbit/s)` : "uncapped";
}

export function describeSetup(nodes: number, imageBytes: number, layers: number, rates: Rates): string {
  return [
    `${nodes} node${nodes === 1 ? "" : "s"} pull a ${formatMB(imageBytes)} image (${layers} layer${layers === 1 ? "" : "s"}) at the same moment`,
    `  origin egress u_s ${rate(rates.originBytesPerSecond)}; per node: upload u ${rate(rates.uploadBytesPerSecond)}, download d ${rate(rates.downloadBytesPerSecond)}`,
  ].join("\n");
}

function ratio(value: number, bound: number): string {
  return bound > 0 ? `${(value / bound).toFixed(2)}x` : "-";
}

/** The closing table: per node, then the swarm against client-server and the bounds. */
export function formatReport(result: DemoResult): string {
  const columns = ["node", "time", "from origin", "from peers", "duplicates", "from local", "sent to peers", "agent CPU", "peak RSS"];
  const cpu = (n: NodeResult): string => (n.agentCpuSeconds === null ? "-" : `${n.agentCpuSeconds.toFixed(1)} s`);
  const rss = (n: NodeResult): string => (n.agentPeakRssBytes === null ? "-" : formatMB(n.agentPeakRssBytes));
  const rows = result.nodes.map((n) => [
    n.name,
    `${n.seconds.toFixed(1)} s`,
    formatMB(n.bytesFromOrigin),
    formatMB(n.bytesFromPeers),
    formatMB(n.duplicatePeerBytes),
    formatMB(n.bytesFromLocal),
    formatMB(n.bytesToPeers),
    cpu(n),
    rss(n),
  ]);
  const sum = (pick: (n: NodeResult) => number): number => result.nodes.reduce((total, n) => total + pick(n), 0);
  const cpuTotal = result.nodes.every((n) => n.agentCpuSeconds !== null) ? `${sum((n) => n.agentCpuSeconds ?? 0).toFixed(1)} s` : "-";
  rows.push([
    "all",
    `${result.p2pSeconds.toFixed(1)} s`,
    formatMB(sum((n) => n.bytesFromOrigin)),
    formatMB(sum((n) => n.bytesFromPeers)),
    formatMB(sum((n) => n.duplicatePeerBytes)),
    formatMB(sum((n) => n.bytesFromLocal)),
    formatMB(sum((n) => n.bytesToPeers)),
    cpuTotal,
    "",
  ]);
  const lines = table([columns, ...rows], 1);
  const pulled = result.nodeCount * result.imageBytes;
  const duplicates = sum((n) => n.duplicatePeerBytes);
  if (duplicates > 0) {
    const reasons = new Map<string, number>();
    for (const n of result.nodes)
      for (const [reason, bytes] of Object.entries(n.wastedPeerBytes)) reasons.set(reason, (reasons.get(reason) ?? 0) + bytes);
    const why = [...reasons].filter(([, bytes]) => bytes > 0).map(([reason, bytes]) => `${reason.replace("_", " ")} ${formatMB(bytes)}`);
    lines.push(
      `  duplicates: peer bytes received beyond what a node needed, ${((100 * duplicates) / Math.max(1, pulled)).toFixed(1)}% of the bytes pulled${why.length > 0 ? ` (${why.join(", ")})` : ""}`,
    );
  }
  if (result.tracker !== null)
    lines.push(
      `  tracker: ${result.tracker.lookupsServed} lookups answered, ${result.tracker.noticesSent} notices sent (${result.tracker.noticeDeltas} carrying the change, so no lookup)`,
    );
  if (result.agentCpuSecondsPerGB !== null)
    lines.push(
      `  agent CPU: ${result.agentCpuSecondsPerGB.toFixed(1)} CPU-s per GB pulled (every agent's CPU during the round / N·F${result.warmUp ? "; agents warmed up by a pull of another image first" : ""})`,
    );
  if (result.machine !== null)
    lines.push(`  machine: ${formatMachineFigures(result.machine)} (demo: the origin and the pullers that stand in for the runtimes)`);
  const copies = result.imageBytes > 0 ? result.originBytes / result.imageBytes : 0;
  lines.push(
    "",
    `  origin sent ${formatMB(result.originBytes)} for ${result.nodeCount} x ${formatMB(result.imageBytes)} pulled (${copies.toFixed(2)} copies): origin offload ${result.offloadPercent.toFixed(1)}%`,
    "",
  );
  const comparison = [["", "time", "vs P2P bound", "origin sent"]];
  comparison.push([
    "P2P through the Shoal swarm",
    seconds(result.p2pSeconds),
    ratio(result.p2pSeconds, result.boundSeconds),
    formatMB(result.originBytes),
  ]);
  if (result.clientServerSeconds !== null) {
    comparison.push([
      "client-server, all from the origin",
      seconds(result.clientServerSeconds),
      ratio(result.clientServerSeconds, result.boundSeconds),
      formatMB(result.clientServerOriginBytes ?? pulled),
    ]);
  }
  comparison.push(["P2P bound", seconds(result.boundSeconds), ratio(result.boundSeconds, result.boundSeconds), ""]);
  comparison.push([
    "client-server bound",
    seconds(result.clientServerBoundSeconds),
    ratio(result.clientServerBoundSeconds, result.boundSeconds),
    "",
  ]);
  lines.push(...table(comparison, 1), "");
  const { originBytesPerSecond: us, uploadBytesPerSecond: u, downloadBytesPerSecond: d } = result.rates;
  lines.push(
    "  bounds (docs/architecture.md): P2P max(F/u_s, F/d, N·F/(u_s + N·u)), client-server max(N·F/u_s, F/d)",
    `  with F = ${formatMB(result.imageBytes)}, N = ${result.nodeCount}, u_s = ${shortRate(us)}, u = ${shortRate(u)}, d = ${shortRate(d)}`,
  );
  if (result.clientServerSeconds !== null && result.p2pSeconds > 0) {
    const speedup = result.clientServerSeconds / result.p2pSeconds;
    lines.push(
      "",
      `  the swarm finished ${speedup >= 1 ? `${speedup.toFixed(1)}x faster than` : `${(1 / speedup).toFixed(1)}x slower than`} client-server, with the origin sending ${copies.toFixed(2)} copies of the image instead of ${result.nodeCount}`,
    );
  }
  const cpuBound = result.machine === null ? undefined : cpuBoundNote(result.machine, result.nodeCount);
  if (cpuBound !== undefined) lines.push(`  the swarm's round: ${cpuBound}`);
  return lines.join("\n");
}

function seconds(value: number): string {
  return `${value.toFixed(1)} s`;
}

function shortRate(bytesPerSecond: number): string {
  return bytesPerSecond > 0 ? `${(bytesPerSecond / MB).toFixed(1)} MB/s` : "uncapped";
}

/** Left-aligns the first `leftColumns` columns, right-aligns the rest. */
function table(rows: readonly (readonly string[])[], leftColumns: number): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map(
    (row) =>
      `  ${row
        .map((cell, i) => (i < leftColumns ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
        .join("   ")
        .trimEnd()}`,
  );
}
