// npm run bench:peer — one blob from one agent process to another over the peer protocol (PeerServer →
// PeerClient, every piece's SHA-256 checked against precomputed hashes), with requests multiplexed on one
// Exchange stream and as one ReadPieces call each (--modes), in plaintext and with mutual
// TLS (certificates of a throwaway CA, as agents hold them) in the same run, beside Node's HTTP/1.1
// streaming the same file into SHA-256 between the same two processes. Throughput, CPU-seconds per GB and peak RSS
// of both sides, median of --runs. Prints figures; asserts nothing.
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, readFile, writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { type Server as HttpServer, Agent as HttpAgent, createServer, get as httpGet } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { benchOptions, bytesFlag, integerFlag, listFlag } from "./bench-flags.js";
import { writeRandomBlob } from "../../pkg/imagegen/index.js";
import { parseDigest, type Digest } from "../../pkg/oci/index.js";
import { PeerClient, PeerServer } from "../../pkg/peer/index.js";
import { choosePieceSize, pieceCount, sameHash } from "../../pkg/piece/index.js";
import { type CertificateFiles, FileIdentity, ThrowawayPki } from "../../pkg/identity/index.js";
import { DiskBlobStore } from "../../pkg/store/index.js";
import { makeTempDir, removeTempDir } from "../support/process.js";
import { procStats, type ProcStats } from "../../pkg/metrics/index.js";
import { AGENT_V8_FLAGS, SHOAL_NODE_FLAGS, applyV8Flags } from "../../pkg/config/index.js";

const MODES = ["exchange", "calls"] as const;
type Mode = (typeof MODES)[number];
const MB = 1e6;
const GB = 1e9;
const SHA256_BYTES = 32;
/** Read size of the HTTP baseline's file stream (the store reads 256 KiB; 1 MiB was faster here). */
const HTTP_READ_BYTES = 1024 * 1024;

const KINDS = ["peer", "peer-tls", "http"] as const;
const USAGE = `Usage: npm run bench:peer -- [flags]

One blob between two agent processes over the peer protocol (every request on one Exchange stream, or each
its own ReadPieces call), in plaintext and over mutual TLS, beside Node's HTTP/1.1 streaming the same file
into SHA-256: throughput, CPU-seconds per GB on both sides, peak RSS.

  --size SIZE             the blob (1MiB to 64GiB; default 1GiB)
  --runs N                transfers per kind, the median is reported (1-100; default 3)
  --pieces-per-call N     pieces per request (1-1024; default 16)
  --calls-in-flight N     requests in flight (1-64; default 2)
  --modes LIST            exchange,calls or one of them (default both)
  --window SIZE           the client's receive window per call (64KiB to 1GiB; default 16MiB)
  --kinds LIST            from peer,peer-tls,http (default all three)
  --cpu-prof-dir DIR      write CPU profiles of both processes (the transfers only)
  --node-args ARGS        extra Node flags for both processes, e.g. --trace-gc
  --json FILE             write the result as JSON
  --help`;

/** The main process reads the flags; its two children get --role and --config (the checked values). */
const values = benchOptions(
  USAGE,
  {
    role: "main",
    config: "{}",
    size: "1GiB",
    runs: "3",
    "pieces-per-call": "16",
    "calls-in-flight": "2",
    window: "16MiB",
    "cpu-prof-dir": undefined,
    "node-args": "",
    kinds: KINDS.join(","),
    modes: MODES.join(","),
    json: undefined,
  },
  (flags) => ({
    role: flags.role ?? "main",
    config: flags.config ?? "{}",
    sizeText: flags.size ?? "",
    size: bytesFlag("size", flags.size, 1024 * 1024, 64 * 1024 ** 3),
    runs: integerFlag("runs", flags.runs, 1, 100),
    piecesPerCall: integerFlag("pieces-per-call", flags["pieces-per-call"], 1, 1024),
    callsInFlight: integerFlag("calls-in-flight", flags["calls-in-flight"], 1, 64),
    windowBytes: bytesFlag("window", flags.window, 64 * 1024, 1024 ** 3),
    "cpu-prof-dir": flags["cpu-prof-dir"],
    "node-args": flags["node-args"] ?? "",
    kinds: listFlag("kinds", flags.kinds, KINDS),
    modes: listFlag("modes", flags.modes, MODES),
    json: flags.json,
  }),
);

interface BenchConfig {
  readonly file: string;
  readonly digest: string;
  readonly size: number;
  readonly storeDir: string;
  readonly hashesFile: string;
  readonly piecesPerCall: number;
  readonly callsInFlight: number;
  readonly windowBytes: number;
  /** Certificate files of the serving and the downloading agent (one throwaway CA). */
  readonly tls: { readonly server: CertificateFiles; readonly client: CertificateFiles };
}

function fileIdentity(files: CertificateFiles): Promise<FileIdentity> {
  return FileIdentity.open({
    certificateFile: files.cert,
    keyFile: files.key,
    trustBundleFile: files.ca,
    logger: pino({ level: "warn" }),
    refreshIntervalMs: 3_600_000,
  });
}

type Reply = Record<string, unknown>;

/**
 * Serves and answers one JSON command per stdin line (child processes). With --cpu-prof-dir, the CPU
 * profile covers the commands only, not the set-up (blob import, start-up).
 */
async function serveCommands(handle: (command: string) => Promise<Reply | undefined>): Promise<void> {
  const profiler = values["cpu-prof-dir"] === undefined ? undefined : new Session();
  let profiling = false;
  try {
    for await (const line of createInterface({ input: process.stdin })) {
      const { cmd } = JSON.parse(line) as { cmd: string };
      if (cmd === "start") {
        if (profiler !== undefined && !profiling) {
          profiler.connect();
          await profiler.post("Profiler.enable");
          await profiler.post("Profiler.start");
          profiling = true;
        }
        process.stdout.write(`${JSON.stringify({ started: true })}\n`);
        continue;
      }
      // A failed transfer is answered, not thrown: the main process reports it instead of waiting for a reply.
      const reply = await handle(cmd).catch((error: unknown) => ({ error: error instanceof Error ? error.message : String(error) }));
      if (reply === undefined) return;
      process.stdout.write(`${JSON.stringify(reply)}\n`);
    }
  } finally {
    if (profiler !== undefined && profiling) {
      const { profile } = await profiler.post("Profiler.stop");
      await writeFile(join(values["cpu-prof-dir"] ?? ".", `${values.role}.cpuprofile`), JSON.stringify(profile));
      profiler.disconnect();
    }
  }
}

/** The uploading agent: the blob in a DiskBlobStore behind a PeerServer, and the same file behind node:http. */
async function serverRole(config: BenchConfig): Promise<void> {
  const digest = parseDigest(config.digest);
  const store = await DiskBlobStore.open({ dir: config.storeDir, verifyStartDelayMs: 3_600_000 });
  const partial = await store.openPartial(digest, config.size, { pieceSize: choosePieceSize(config.size) });
  for await (const chunk of createReadStream(config.file, { highWaterMark: 4 * 1024 * 1024 })) await partial.append(chunk as Buffer);
  await partial.commit();
  const peer = await PeerServer.start({ host: "127.0.0.1", port: 0, store, logger: pino({ level: "warn" }) });
  const serverIdentity = await fileIdentity(config.tls.server);
  const peerTls = await PeerServer.start({ host: "127.0.0.1", port: 0, store, logger: pino({ level: "warn" }), tls: serverIdentity });
  const http: HttpServer = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(config.size) });
    pipeline(createReadStream(config.file, { highWaterMark: HTTP_READ_BYTES }), res).catch((error: unknown) => {
      console.error("http baseline:", error);
    });
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const httpPort = (http.address() as AddressInfo).port;
  process.stdout.write(`${JSON.stringify({ peer: peer.address, peerTls: peerTls.address, http: `http://127.0.0.1:${httpPort}/blob` })}\n`);
  await serveCommands((cmd) => Promise.resolve(cmd === "exit" ? undefined : { error: `unknown command ${cmd}` }));
  await peer.close();
  await peerTls.close();
  serverIdentity.close();
  http.closeAllConnections();
  await new Promise((resolve) => http.close(resolve));
  await store.close();
}

/** The downloading agent: PeerClient with per-piece SHA-256 checks; and the HTTP baseline. */
async function clientRole(config: BenchConfig, servers: { peer: string; peerTls: string; http: string }): Promise<void> {
  const digest = parseDigest(config.digest);
  const hashes = await readFile(config.hashesFile);
  const pieceSize = choosePieceSize(config.size);
  const count = pieceCount(config.size, pieceSize);
  const clientIdentity = await fileIdentity(config.tls.client);
  const clients = new Map<string, PeerClient>();
  for (const mode of MODES) {
    const exchange = mode === "exchange";
    const logger = pino({ level: "warn" });
    clients.set(`peer/${mode}`, new PeerClient({ logger, streamWindowBytes: config.windowBytes, exchange }));
    clients.set(`peer-tls/${mode}`, new PeerClient({ logger, streamWindowBytes: config.windowBytes, tls: clientIdentity, exchange }));
  }
  const agent = new HttpAgent({ keepAlive: true });
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
  await serveCommands(async (cmd) => {
    const client = clients.get(cmd);
    if (client !== undefined) {
      const address = cmd.startsWith("peer-tls/") ? servers.peerTls : servers.peer;
      return peerDownload(client, address, digest, pieceSize, count, hashes, config);
    }
    if (cmd === "http") return httpDownload(agent, servers.http, digest);
    return undefined;
  });
  for (const client of clients.values()) client.close();
  clientIdentity.close();
  agent.destroy();
}

async function peerDownload(
  client: PeerClient,
  address: string,
  digest: Digest,
  pieceSize: number,
  count: number,
  hashes: Buffer,
  config: BenchConfig,
): Promise<Reply> {
  const batches: number[][] = [];
  for (let first = 0; first < count; first += config.piecesPerCall) {
    batches.push(Array.from({ length: Math.min(config.piecesPerCall, count - first) }, (_, i) => first + i));
  }
  let nextBatch = 0;
  let bytes = 0;
  // The first failed call stops the others (a refused stream, a bad piece): the run fails as a whole.
  const failed = new AbortController();
  const signal = AbortSignal.any([AbortSignal.timeout(600_000), failed.signal]);
  const started = performance.now();
  const worker = async (): Promise<void> => {
    for (let batch = batches[nextBatch++]; batch !== undefined; batch = batches[nextBatch++]) {
      for await (const piece of client.readPieces(address, { digest, pieceSize, pieces: batch, waitMs: 0 }, signal)) {
        // The client hashed the piece while it arrived, as the swarm uses it.
        const matches = sameHash(piece.sha256, hashes.subarray(piece.index * SHA256_BYTES, (piece.index + 1) * SHA256_BYTES));
        bytes += piece.data.length;
        piece.release();
        if (!matches) throw new Error(`piece ${piece.index} does not match its hash`);
      }
    }
  };
  await Promise.all(
    Array.from({ length: config.callsInFlight }, () =>
      worker().catch((error: unknown) => {
        failed.abort(error);
        throw error;
      }),
    ),
  );
  return { seconds: (performance.now() - started) / 1000, bytes };
}

async function httpDownload(agent: HttpAgent, url: string, digest: Digest): Promise<Reply> {
  const started = performance.now();
  const hash = createHash("sha256");
  let bytes = 0;
  await new Promise<void>((resolve, reject) => {
    httpGet(url, { agent }, (res) => {
      res.on("data", (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
      });
      res.on("end", resolve);
      res.on("error", reject);
    }).on("error", reject);
  });
  if (`sha256:${hash.digest("hex")}` !== digest) throw new Error("HTTP baseline: digest mismatch");
  return { seconds: (performance.now() - started) / 1000, bytes };
}

/** A child process spoken to in JSON lines. */
class Child {
  private readonly lines: AsyncIterator<string>;
  constructor(readonly process: ChildProcess) {
    if (process.stdout === null) throw new Error("child without stdout");
    this.lines = createInterface({ input: process.stdout })[Symbol.asyncIterator]();
  }

  static start(role: string, config: BenchConfig, extra: Reply = {}): Child {
    const script = fileURLToPath(import.meta.url);
    const profile = values["cpu-prof-dir"] === undefined ? [] : ["--cpu-prof-dir", values["cpu-prof-dir"]];
    const nodeArgs = values["node-args"].split(" ").filter((arg) => arg !== "");
    const child = spawn(
      process.execPath,
      // As agents run: the image's Node flags, then the bench's own (which can override them).
      [...SHOAL_NODE_FLAGS, ...nodeArgs, script, "--role", role, ...profile, "--config", JSON.stringify({ ...config, ...extra })],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    return new Child(child);
  }

  get pid(): number {
    if (this.process.pid === undefined) throw new Error("child did not start");
    return this.process.pid;
  }

  async read(): Promise<Reply> {
    for (;;) {
      const next = await this.lines.next();
      if (next.done === true) throw new Error(`child ${this.pid} exited`);
      // Anything else a child prints (--trace-gc and the like) is passed on.
      if (next.value.startsWith("{")) return JSON.parse(next.value) as Reply;
      console.error(`[${this.pid}] ${next.value}`);
    }
  }

  async request(cmd: string): Promise<Reply> {
    this.process.stdin?.write(`${JSON.stringify({ cmd })}\n`);
    return this.read();
  }

  async exit(): Promise<void> {
    const exited = new Promise((resolve) => this.process.once("exit", resolve));
    this.process.stdin?.end(`${JSON.stringify({ cmd: "exit" })}\n`);
    await exited;
  }
}

/** Resets a process's peak RSS (VmHWM) so each run reports its own peak (Linux clear_refs). */
async function resetPeakRss(pid: number): Promise<void> {
  await writeFile(`/proc/${pid}/clear_refs`, "5").catch(() => undefined);
}

interface RunFigures {
  readonly seconds: number;
  readonly bytes: number;
  readonly server: SideFigures;
  readonly client: SideFigures;
}

interface SideFigures {
  readonly cpuSeconds: number;
  /** RSS when the transfer started; the peak is reset to it just before (clear_refs). */
  readonly rssBeforeBytes: number;
  readonly peakRssBytes: number;
}

async function measure(kind: string, server: Child, client: Child): Promise<RunFigures> {
  await Promise.all([resetPeakRss(server.pid), resetPeakRss(client.pid)]);
  const before: ProcStats[] = await Promise.all([procStats(server.pid), procStats(client.pid)]);
  const reply = await client.request(kind);
  const after: ProcStats[] = await Promise.all([procStats(server.pid), procStats(client.pid)]);
  if (typeof reply.seconds !== "number" || typeof reply.bytes !== "number") throw new Error(`${kind} run failed: ${JSON.stringify(reply)}`);
  const side = (i: number): RunFigures["server"] => ({
    cpuSeconds: (after[i]?.cpuSeconds ?? 0) - (before[i]?.cpuSeconds ?? 0),
    rssBeforeBytes: before[i]?.rssBytes ?? 0,
    peakRssBytes: after[i]?.peakRssBytes ?? 0,
  });
  return { seconds: reply.seconds, bytes: reply.bytes, server: side(0), client: side(1) };
}

function summarize(runs: RunFigures[]): Reply {
  const median = (pick: (r: RunFigures) => number): number => {
    const sorted = runs.map(pick).sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
  };
  const gb = (runs[0]?.bytes ?? 0) / GB;
  return {
    throughputMBps: (runs[0]?.bytes ?? 0) / median((r) => r.seconds) / MB,
    seconds: median((r) => r.seconds),
    serverCpuSecondsPerGB: median((r) => r.server.cpuSeconds) / gb,
    clientCpuSecondsPerGB: median((r) => r.client.cpuSeconds) / gb,
    totalCpuSecondsPerGB: median((r) => r.server.cpuSeconds + r.client.cpuSeconds) / gb,
    serverPeakRssMB: Math.max(...runs.map((r) => r.server.peakRssBytes)) / MB,
    clientPeakRssMB: Math.max(...runs.map((r) => r.client.peakRssBytes)) / MB,
    serverRssBeforeMB: Math.min(...runs.map((r) => r.server.rssBeforeBytes)) / MB,
    clientRssBeforeMB: Math.min(...runs.map((r) => r.client.rssBeforeBytes)) / MB,
    runs,
  };
}

/** SHA-256 of every piece, concatenated: what the tracker would publish. */
async function pieceHashes(file: string, size: number, pieceSize: number): Promise<Buffer> {
  const handle = await open(file, "r");
  try {
    const buffer = Buffer.allocUnsafe(pieceSize);
    const hashes: Buffer[] = [];
    for (let position = 0; position < size; position += pieceSize) {
      const { bytesRead } = await handle.read(buffer, 0, Math.min(pieceSize, size - position), position);
      hashes.push(createHash("sha256").update(buffer.subarray(0, bytesRead)).digest());
    }
    return Buffer.concat(hashes);
  } finally {
    await handle.close();
  }
}

async function main(): Promise<void> {
  const { size, runs } = values;
  const work = await makeTempDir("bench-peer");
  const children: Child[] = [];
  try {
    console.error(`generating a ${values.sizeText} blob…`);
    const file = join(work, "blob");
    const blob = await writeRandomBlob({ file, seed: "bench-peer", bytes: size });
    const pieceSize = choosePieceSize(size);
    const pki = await ThrowawayPki.create(join(work, "pki"), "bench CA");
    const tls = {
      server: await pki.issue({ role: "agent", name: "server", ips: ["127.0.0.1"] }),
      client: await pki.issue({ role: "agent", name: "client", ips: ["127.0.0.1"] }),
    };
    const hashesFile = join(work, "piece-hashes");
    await writeFile(hashesFile, await pieceHashes(file, size, pieceSize));
    const config: BenchConfig = {
      file,
      digest: blob.digest,
      size,
      storeDir: join(work, "store"),
      hashesFile,
      piecesPerCall: values.piecesPerCall,
      callsInFlight: values.callsInFlight,
      windowBytes: values.windowBytes,
      tls,
    };
    console.error("starting the serving agent (puts the blob into its store)…");
    const server = Child.start("server", config);
    children.push(server);
    const addresses = await server.read();
    const client = Child.start("client", config, { servers: addresses });
    children.push(client);
    await client.read();
    await Promise.all([server.request("start"), client.request("start")]);
    const kinds: readonly string[] = values.kinds;
    const modes: readonly Mode[] = values.modes;
    // Every transfer is a peer kind in a mode ("peer/exchange", "peer-tls/calls"), or "http"; run in turns.
    const transfers = [
      ...modes.flatMap((mode) => ["peer", "peer-tls"].filter((kind) => kinds.includes(kind)).map((kind) => `${kind}/${mode}`)),
      ...(kinds.includes("http") ? ["http"] : []),
    ];
    const runsOf = new Map<string, RunFigures[]>(transfers.map((transfer) => [transfer, []]));
    for (let run = 0; run < runs; run++) {
      for (const transfer of transfers) runsOf.get(transfer)?.push(await measure(transfer, server, client));
    }
    const summaries = new Map([...runsOf].map(([transfer, figures]) => [transfer, summarize(figures)]));
    const http = summaries.get("http");
    const result = {
      blobBytes: size,
      pieceSize,
      piecesPerCall: config.piecesPerCall,
      callsInFlight: config.callsInFlight,
      streamWindowBytes: config.windowBytes,
      transfers: Object.fromEntries(summaries),
      peerToHttpThroughput: Object.fromEntries(
        modes.flatMap((mode) => {
          const peer = summaries.get(`peer/${mode}`);
          return peer === undefined || http === undefined ? [] : [[mode, Number(peer.throughputMBps) / Number(http.throughputMBps)]];
        }),
      ),
    };
    const line = (name: string, r: Reply): string =>
      `${name.padEnd(28)} ${Number(r.throughputMBps).toFixed(0).padStart(6)} MB/s   CPU s/GB server ${Number(r.serverCpuSecondsPerGB).toFixed(2)} client ${Number(r.clientCpuSecondsPerGB).toFixed(2)} total ${Number(r.totalCpuSecondsPerGB).toFixed(2)}   peak RSS server ${Number(r.serverPeakRssMB).toFixed(0)} MB (from ${Number(r.serverRssBeforeMB).toFixed(0)}) client ${Number(r.clientPeakRssMB).toFixed(0)} MB (from ${Number(r.clientRssBeforeMB).toFixed(0)})`;
    console.log(
      `blob ${(size / 2 ** 20).toFixed(0)} MiB, ${pieceSize / 2 ** 20} MiB pieces, ${config.piecesPerCall} pieces/request, ${config.callsInFlight} requests in flight; median of ${runs} runs`,
    );
    const names: Record<string, string> = {
      "peer/exchange": "peer, Exchange stream",
      "peer/calls": "peer, ReadPieces calls",
      "peer-tls/exchange": "peer, mTLS, Exchange stream",
      "peer-tls/calls": "peer, mTLS, ReadPieces calls",
      http: "HTTP/1.1 (SHA-256 stream)",
    };
    for (const [transfer, summary] of summaries) console.log(line(names[transfer] ?? transfer, summary));
    for (const [mode, ratio] of Object.entries(result.peerToHttpThroughput))
      console.log(`peer (${mode}) / HTTP throughput: ${ratio.toFixed(2)}×`);
    for (const mode of modes) {
      const plain = summaries.get(`peer/${mode}`);
      const tls = summaries.get(`peer-tls/${mode}`);
      if (plain === undefined || tls === undefined) continue;
      const ratio = Number(tls.throughputMBps) / Number(plain.throughputMBps);
      console.log(
        `${mode}: TLS / plaintext throughput ${ratio.toFixed(2)}×, TLS adds ${(Number(tls.totalCpuSecondsPerGB) - Number(plain.totalCpuSecondsPerGB)).toFixed(2)} CPU-s/GB (both ends)`,
      );
    }
    if (values.json !== undefined) await writeFile(values.json, `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    for (const child of children.reverse()) await child.exit().catch(() => undefined);
    await removeTempDir(work);
  }
}

async function childMain(): Promise<void> {
  // Both ends are agents, with the V8 flags an agent sets on itself.
  applyV8Flags(AGENT_V8_FLAGS);
  const config = JSON.parse(values.config) as BenchConfig & { servers?: { peer: string; peerTls: string; http: string } };
  if (values.role === "server") await serverRole(config);
  else if (config.servers !== undefined) await clientRole(config, config.servers);
  else throw new Error(`unknown role ${values.role}`);
}

(values.role === "main" ? main() : childMain()).catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
