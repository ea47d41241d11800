// The work every byte an agent pulls needs, measured on its own in one Node process, with nothing of
// Shoal's protocol, scheduling or store around it: what `npm run bench:floor` reports. Each stage does an
// agent's share of one kind of per-byte work on `sizeBytes` bytes and is charged the CPU of this process
// (all its threads: getrusage), so the stages add up to a floor under the agent's CPU-seconds per GB.
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { type FileHandle, open, readFile, unlink } from "node:fs/promises";
import { createServer as createTcpServer, type AddressInfo, type Server as TcpServer, type Socket } from "node:net";
import { join } from "node:path";
import { once } from "node:events";
import {
  type ClientHttp2Session,
  connect as http2Connect,
  constants as http2Constants,
  createServer as createHttp2Server,
} from "node:http2";
import { connect as tlsConnect, createServer as createTlsServer, type SecureContextOptions, type TLSSocket } from "node:tls";
import { type CertificateFiles, TLS_CIPHERS, TLS_MIN_VERSION, ThrowawayPki } from "../../pkg/identity/index.js";
import { CONNECTION_WINDOW_BYTES, STREAM_WINDOW_BYTES } from "../../pkg/peer/index.js";
import { raceSignal } from "../../pkg/util/index.js";

/** Bytes per write, hash update and read: the store's and the peer protocol's piece-sized units. */
export const FLOOR_CHUNK_BYTES = 1024 * 1024;
/** Buffers the hand-over to the runtime cycles through (each reused once its socket write completed). */
const SERVE_RING_BUFFERS = 4;
/**
 * Default warm-up of the transfer stages. A fresh Node process's first ~256 MiB over a new connection cost
 * it about twice the CPU per byte of the next (V8 compiling the stream code, the process's memory growing
 * into fresh pages): measured with bare sockets, docs/benchmarks.md, "December 5 (eighth session)".
 */
export const DEFAULT_FLOOR_WARM_UP_BYTES = 256 * 1024 * 1024;
/** A step (a handshake, a connection, a transfer) not done after this long plus its bytes' time at
 * FLOOR_MIN_BYTES_PER_SECOND has failed: a stuck socket, a reader that died. */
export const FLOOR_STEP_TIMEOUT_MS = 60_000;
/** The slowest a transfer step may be before it counts as stuck (far below loopback speed). */
export const FLOOR_MIN_BYTES_PER_SECOND = 10_000_000;

export const FLOOR_STAGES = ["sha256Twice", "storeWrite", "tlsSendReceive", "handToRuntime"] as const;
export type FloorStage = (typeof FLOOR_STAGES)[number];

/** What each stage stands for, as the benchmark prints it. */
export const FLOOR_STAGE_LABELS: Readonly<Record<FloorStage, string>> = {
  sha256Twice: "SHA-256 twice (piece check, blob digest)",
  storeWrite: "store write (page cache) and datasync",
  tlsSendReceive: "mutual TLS 1.3: receive once, send once",
  handToRuntime: "read back, hand to the runtime (TCP)",
};

/** The transport the peer protocol needs in place of bare TLS: not in the sum, printed beside it. */
export const FLOOR_HTTP2_LABEL = "HTTP/2 over that TLS: receive once, send once";

export interface StageFigures {
  /** Bytes the stage moved: its checks fail the stage unless this is the size asked for. */
  readonly bytes: number;
  readonly cpuSeconds: number;
  readonly seconds: number;
  readonly cpuSecondsPerGB: number;
  readonly throughputMBps: number;
}

export interface FloorRun {
  /** Each stage's work on `sizeBytes`; for the two transfers, after their warm-up on the same connection. */
  readonly stages: Readonly<Record<FloorStage, StageFigures>>;
  /** The transfers' warm-ups, measured apart: the first bytes on a connection (of a fresh process, in run 1). */
  readonly warmUp: Readonly<Record<"tlsSendReceive" | "handToRuntime" | "http2SendReceive", StageFigures>>;
  /** The stages' CPU-seconds per GB added up. */
  readonly sumCpuSecondsPerGB: number;
  /**
   * The TLS stage's bytes carried as the peer protocol carries pieces, over HTTP/2 on the same kind of
   * connection (gRPC runs on it): after its warm-up, like the other transfers. Not one of the stages.
   */
  readonly http2SendReceive: StageFigures;
  /** The sum with `http2SendReceive` in place of `tlsSendReceive`: the floor under Shoal's transport. */
  readonly sumWithHttp2CpuSecondsPerGB: number;
  /** The TLS stage's protocol and cipher suite, as negotiated (e.g. "TLSv1.3 TLS_AES_128_GCM_SHA256"). */
  readonly tlsCipher: string;
}

export interface FloorOptions {
  readonly sizeBytes: number;
  /** Sent ahead on each transfer's connection, and measured apart (at most `sizeBytes`). */
  readonly warmUpBytes: number;
  /** A directory of the caller's: the stages' file, certificates and the TLS material go here. */
  readonly dir: string;
}

function cpuSecondsNow(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

async function measure(sizeBytes: number, work: () => Promise<number>): Promise<StageFigures> {
  const cpuBefore = cpuSecondsNow();
  const started = performance.now();
  const bytes = await work();
  const seconds = (performance.now() - started) / 1000;
  const cpuSeconds = cpuSecondsNow() - cpuBefore;
  if (bytes !== sizeBytes) throw new Error(`the stage moved ${bytes} bytes, not ${sizeBytes}`);
  return { bytes, cpuSeconds, seconds, cpuSecondsPerGB: cpuSeconds / (bytes / 1e9), throughputMBps: bytes / 1e6 / seconds };
}

/** `sizeBytes` bytes hashed twice: the piece's SHA-256 as it arrives, and the blob's running digest. */
function sha256Twice(chunk: Buffer, sizeBytes: number): number {
  let hashed = 0;
  for (let pass = 0; pass < 2; pass++) {
    const hash = createHash("sha256");
    hashed = 0;
    while (hashed < sizeBytes) {
      const length = Math.min(chunk.byteLength, sizeBytes - hashed);
      hash.update(chunk.subarray(0, length));
      hashed += length;
    }
    hash.digest();
  }
  return hashed;
}

/** Positional writes of `sizeBytes` into a new file, then one datasync (as a blob's publication does). */
async function storeWrite(chunk: Buffer, sizeBytes: number, file: string): Promise<number> {
  const handle = await open(file, "wx");
  let written = 0;
  try {
    while (written < sizeBytes) {
      const length = Math.min(chunk.byteLength, sizeBytes - written);
      const { bytesWritten } = await handle.write(chunk, 0, length, written);
      if (bytesWritten === 0) throw new Error(`writing ${file} stopped at ${written} of ${sizeBytes} bytes`);
      written += bytesWritten;
    }
    await handle.datasync();
  } finally {
    await handle.close();
  }
  return written;
}

/** `promise`, or a rejection naming `what` once FLOOR_STEP_TIMEOUT_MS plus `bytes` at the slowest rate passed. */
function withTimeout<T>(promise: Promise<T>, what: string, bytes = 0): Promise<T> {
  const limitMs = FLOOR_STEP_TIMEOUT_MS + Math.ceil((bytes / FLOOR_MIN_BYTES_PER_SECOND) * 1000);
  return raceSignal(promise, AbortSignal.timeout(limitMs), () => new Error(`${what} did not finish within ${limitMs} ms`));
}

/** A stage's first failure from any of its event handlers (`fail`), for its steps to race (`failed`). */
function failureLatch(): { readonly fail: (error: Error) => void; readonly failed: Promise<never> } {
  let fail: (error: Error) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => {
    fail = reject;
  });
  // Errors after the stage ended (sockets destroyed in `finally`) have nobody waiting for them.
  failed.catch(() => undefined);
  return { fail, failed };
}

/** Starts `server` on an ephemeral loopback port; resolves with the port. */
async function listenOnLoopback(server: TcpServer): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as AddressInfo).port;
}

async function closeServer(server: TcpServer): Promise<void> {
  if (!server.listening) return;
  await new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
}

/** Writes `sizeBytes` of `chunk` to `socket`, honouring backpressure. */
async function sendAll(socket: Socket, chunk: Buffer, sizeBytes: number): Promise<void> {
  for (let sent = 0; sent < sizeBytes;) {
    const length = Math.min(chunk.byteLength, sizeBytes - sent);
    if (!socket.write(chunk.subarray(0, length))) await once(socket, "drain");
    sent += length;
  }
}

/** A transfer stage's figures: after its warm-up on the same connection, and of the warm-up itself. */
interface TransferFigures {
  readonly steady: StageFigures;
  readonly warmUp: StageFigures;
}

/** Both ends' certificates and the agents' TLS settings, for the transfer stages of one run. */
interface FloorTlsMaterial {
  readonly server: SecureContextOptions;
  readonly client: SecureContextOptions;
}

/** Issues a server's and a client's agent certificate from a throwaway CA under `dir`. */
async function floorTlsMaterial(dir: string): Promise<FloorTlsMaterial> {
  const pki = await ThrowawayPki.create(join(dir, "pki"), "bench:floor CA");
  const material = async (files: CertificateFiles): Promise<SecureContextOptions> => ({
    cert: await readFile(files.cert),
    key: await readFile(files.key),
    ca: await readFile(files.ca),
    minVersion: TLS_MIN_VERSION,
    ciphers: TLS_CIPHERS,
  });
  return {
    server: await material(await pki.issue({ role: "agent", name: "floor-server", ips: ["127.0.0.1"] })),
    client: await material(await pki.issue({ role: "agent", name: "floor-client", ips: ["127.0.0.1"] })),
  };
}

/**
 * Both ends of one mutual-TLS connection over loopback in this process, with the agents' TLS settings: each
 * byte encrypted and sent once and received and decrypted once, which is an agent's share of a swarm (it
 * receives what it pulls, and uploads about as much to its peers). `warmUpBytes` go first on the same
 * connection and are measured apart.
 */
async function tlsSendReceive(
  chunk: Buffer,
  sizeBytes: number,
  warmUpBytes: number,
  material: FloorTlsMaterial,
): Promise<TransferFigures & { readonly cipher: string }> {
  let received = 0;
  let target = Number.POSITIVE_INFINITY;
  let arrived: () => void = () => undefined;
  const { fail, failed } = failureLatch();
  /** Resolves once `bytes` more than now have arrived. */
  const receive = (bytes: number): Promise<void> => {
    target = received + bytes;
    return Promise.race([
      new Promise<void>((resolve) => {
        arrived = resolve;
      }),
      failed,
    ]);
  };
  let serverSide: TLSSocket | undefined;
  const server = createTlsServer({ ...material.server, requestCert: true, rejectUnauthorized: true }, (socket) => {
    serverSide = socket;
    socket.on("data", (data: Buffer) => {
      received += data.byteLength;
      if (received >= target) {
        target = Number.POSITIVE_INFINITY;
        arrived();
      }
    });
    socket.on("error", fail);
  });
  server.on("tlsClientError", fail);
  let client: TLSSocket | undefined;
  try {
    const port = await listenOnLoopback(server);
    client = tlsConnect({ ...material.client, host: "127.0.0.1", port });
    client.on("error", fail);
    await withTimeout(Promise.race([once(client, "secureConnect"), failed]), "the TLS handshake");
    const connected = client;
    const cipher = `${client.getProtocol() ?? "?"} ${client.getCipher().standardName}`;
    // Certificates and the handshake are once per connection, and not measured.
    const transfer = (bytes: number) => () => {
      const before = received;
      return withTimeout(Promise.all([sendAll(connected, chunk, bytes), receive(bytes)]), "the TLS transfer", bytes).then(
        () => received - before,
      );
    };
    const warmUp = await measure(warmUpBytes, transfer(warmUpBytes));
    const steady = await measure(sizeBytes, transfer(sizeBytes));
    return { steady, warmUp, cipher };
  } finally {
    client?.destroy();
    serverSide?.destroy();
    await closeServer(server);
  }
}

/**
 * The TLS stage's transfer carried as the peer protocol carries pieces: Node's http2 on a mutual-TLS
 * connection, the server (fed the TLS server's sockets, as the peer server is) writing `chunk`-sized
 * messages on a response stream, and the client reading it with the agents' receive windows. The gap to
 * the bare TLS stage is what HTTP/2 costs per byte here: Node sends 16 KiB DATA frames, and each one is
 * 9 bytes more than a TLS record holds, so it reaches JavaScript in two parts. The warm-up is a stream of
 * its own on the same connection, measured apart.
 */
async function http2SendReceive(
  chunk: Buffer,
  sizeBytes: number,
  warmUpBytes: number,
  material: FloorTlsMaterial,
): Promise<TransferFigures> {
  const { fail, failed } = failureLatch();
  const h2 = createHttp2Server({ settings: { enablePush: false } });
  h2.on("stream", (stream, headers) => {
    const bytes = Number(headers["x-floor-bytes"]);
    stream.on("error", fail);
    stream.respond({ [http2Constants.HTTP2_HEADER_STATUS]: 200 });
    void (async () => {
      // A stream closed under it (the client gave up, the stage ended) ends the loop too.
      for (let sent = 0; sent < bytes && !stream.closed;) {
        const length = Math.min(chunk.byteLength, bytes - sent);
        if (!stream.write(chunk.subarray(0, length))) await Promise.race([once(stream, "drain"), once(stream, "close"), failed]);
        sent += length;
      }
      if (!stream.closed) stream.end();
    })().catch(fail);
  });
  h2.on("sessionError", fail);
  const serverSockets = new Set<TLSSocket>();
  const server = createTlsServer({ ...material.server, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ["h2"] }, (socket) => {
    serverSockets.add(socket);
    socket.on("error", fail);
    h2.emit("connection", socket);
  });
  server.on("tlsClientError", fail);
  let session: ClientHttp2Session | undefined;
  try {
    const port = await listenOnLoopback(server);
    session = http2Connect(`https://127.0.0.1:${port}`, {
      ...material.client,
      settings: { initialWindowSize: STREAM_WINDOW_BYTES, enablePush: false },
    });
    session.on("error", fail);
    await withTimeout(Promise.race([once(session, "connect"), failed]), "the HTTP/2 connection");
    session.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
    const connected = session;
    // The connection is once per peer pair, and not measured; each transfer is one stream of `bytes`.
    const transfer = (bytes: number) => () => {
      const stream = connected.request({ ":method": "POST", ":path": "/floor", "x-floor-bytes": String(bytes) }, { endStream: true });
      let received = 0;
      stream.on("data", (data: Buffer) => {
        received += data.byteLength;
      });
      // 'end' rejects on the stream's 'error'.
      return withTimeout(Promise.race([once(stream, "end"), failed]), "the HTTP/2 transfer", bytes).then(() => received);
    };
    const warmUp = await measure(warmUpBytes, transfer(warmUpBytes));
    const steady = await measure(sizeBytes, transfer(sizeBytes));
    return { steady, warmUp };
  } finally {
    session?.destroy();
    for (const socket of serverSockets) socket.destroy();
    h2.close();
    await closeServer(server);
  }
}

/** A child process that reads everything from a TCP connection, discards it and prints the byte count. */
function startDiscardingReader(port: number): ChildProcess {
  const script = `
const socket = require("node:net").connect(${port}, "127.0.0.1");
let bytes = 0;
socket.on("data", (data) => { bytes += data.length; });
socket.on("end", () => { process.stdout.write(String(bytes)); });
socket.on("error", (error) => { console.error(error.message); process.exit(1); });
`;
  return spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
}

/**
 * Reads the stored file back (from the page cache, as the mirror serves a cached blob) into a few reused
 * buffers and writes it to a loopback TCP connection: the least an agent does to hand each byte to its
 * runtime. The reader is another process, so its CPU is not this stage's. The file's first `warmUpBytes`
 * go first on the same connection and are measured apart (as handed to the kernel: the reader counts
 * every byte at the end).
 */
export async function handToRuntime(sizeBytes: number, warmUpBytes: number, file: string): Promise<TransferFigures> {
  const server = createTcpServer();
  const port = await listenOnLoopback(server);
  const reader = startDiscardingReader(port);
  const handle = await open(file, "r");
  let output = "";
  reader.stdout?.on("data", (data: Buffer) => {
    output += data.toString();
  });
  const exited = once(reader, "exit");
  // Awaited at the end, or raced below; marked handled meanwhile (a reader that cannot start emits 'error').
  exited.catch(() => undefined);
  const died = exited.then(([code]: unknown[]) => {
    throw new Error(`the runtime's reader exited with ${String(code)} before it had read everything`);
  });
  died.catch(() => undefined);
  try {
    const [socket] = (await withTimeout(Promise.race([once(server, "connection"), died]), "the runtime's connection")) as [Socket];
    // A reader that goes away fails the write in progress (its callback); without a listener the socket's
    // 'error' event would end this process instead.
    socket.on("error", () => undefined);
    // Starting the reader's process is not per byte, and not measured.
    const warmUp = await measure(warmUpBytes, async () => {
      await withTimeout(sendFile(socket, handle, warmUpBytes), "the hand-over's warm-up", warmUpBytes);
      return warmUpBytes;
    });
    const steady = await measure(sizeBytes, async () => {
      await withTimeout(sendFile(socket, handle, sizeBytes), "the hand-over", sizeBytes);
      socket.end();
      const [code] = (await withTimeout(exited, "the runtime's reader")) as [number | null];
      if (code !== 0) throw new Error(`the runtime's reader exited with ${String(code)}`);
      return Number(output.trim()) - warmUpBytes;
    });
    return { steady, warmUp };
  } finally {
    reader.kill();
    await handle.close();
    await closeServer(server);
  }
}

/** The file's first `sizeBytes` into `socket` through a few reused buffers; resolves once all are written. */
async function sendFile(socket: Socket, handle: FileHandle, sizeBytes: number): Promise<void> {
  const ring = Array.from({ length: SERVE_RING_BUFFERS }, () => Buffer.allocUnsafeSlow(FLOOR_CHUNK_BYTES));
  const inFlight: Promise<void>[] = Array.from({ length: SERVE_RING_BUFFERS }, () => Promise.resolve());
  let slot = 0;
  for (let position = 0; position < sizeBytes;) {
    await inFlight[slot];
    const buffer = ring[slot];
    if (buffer === undefined) throw new Error("no buffer");
    const { bytesRead } = await handle.read(buffer, 0, Math.min(FLOOR_CHUNK_BYTES, sizeBytes - position), position);
    if (bytesRead === 0) throw new Error(`the file ended at ${position} of ${sizeBytes} bytes`);
    const written = new Promise<void>((resolve, reject) => {
      socket.write(buffer.subarray(0, bytesRead), (error) => {
        if (error) reject(error);
        else resolve();
      });
    });
    // Awaited when its buffer comes round again, or at the end; marked handled meanwhile.
    written.catch(() => undefined);
    inFlight[slot] = written;
    if (socket.writableNeedDrain) await once(socket, "drain");
    position += bytesRead;
    slot = (slot + 1) % SERVE_RING_BUFFERS;
  }
  await Promise.all(inFlight);
}

/** One run of every stage, in order; the stage's file is removed before it returns, also on failure. */
export async function measureFloor(options: FloorOptions): Promise<FloorRun> {
  const { sizeBytes, dir } = options;
  const warmUpBytes = Math.min(options.warmUpBytes, sizeBytes);
  const chunk = randomFillSync(Buffer.allocUnsafeSlow(Math.min(FLOOR_CHUNK_BYTES, sizeBytes)));
  const file = join(dir, "floor-blob");
  try {
    const sha = await measure(sizeBytes, () => Promise.resolve(sha256Twice(chunk, sizeBytes)));
    const write = await measure(sizeBytes, () => storeWrite(chunk, sizeBytes, file));
    const material = await floorTlsMaterial(dir);
    const tls = await tlsSendReceive(chunk, sizeBytes, warmUpBytes, material);
    const http2 = await http2SendReceive(chunk, sizeBytes, warmUpBytes, material);
    const hand = await handToRuntime(sizeBytes, warmUpBytes, file);
    const stages = { sha256Twice: sha, storeWrite: write, tlsSendReceive: tls.steady, handToRuntime: hand.steady };
    const sumCpuSecondsPerGB = FLOOR_STAGES.reduce((sum, stage) => sum + stages[stage].cpuSecondsPerGB, 0);
    return {
      stages,
      warmUp: { tlsSendReceive: tls.warmUp, handToRuntime: hand.warmUp, http2SendReceive: http2.warmUp },
      sumCpuSecondsPerGB,
      http2SendReceive: http2.steady,
      sumWithHttp2CpuSecondsPerGB: sumCpuSecondsPerGB - tls.steady.cpuSecondsPerGB + http2.steady.cpuSecondsPerGB,
      tlsCipher: tls.cipher,
    };
  } finally {
    await unlink(file).catch(() => undefined);
  }
}
