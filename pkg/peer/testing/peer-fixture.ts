import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type MethodDefinition,
  Server,
  ServerCredentials,
  status,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServerWritableStream,
} from "@grpc/grpc-js";
import { pino, type Logger } from "pino";
import { PeerServiceService, type ReadPiecesRequest, type StatRequest, type StatResponse } from "../../gen/peer/v1/peer.js";
import { digestOf, type Digest } from "../../oci/index.js";
import { choosePieceSize, pieceSpan } from "../../piece/index.js";
import { DiskBlobStore, type BlobStore, type PartialBlob } from "../../store/index.js";
import { PeerClient, type PeerClientOptions } from "../peer-client.js";
import type { ReceivedPiece } from "../piece-source.js";
import { PeerServer, type PeerServerOptions } from "../peer-server.js";
import { encodeChunk } from "../wire-codec.js";

export const MiB = 1024 * 1024;
export const silentLogger: Logger = pino({ level: "silent" });

/**
 * Everything a peer test starts, closed in reverse by `close()` (call it in `finally`/`after`): temp dirs,
 * stores, servers and clients.
 */
export class PeerFixture {
  private readonly cleanups: (() => Promise<void> | void)[] = [];

  async store(): Promise<DiskBlobStore> {
    const dir = await mkdtemp(join(tmpdir(), "shoal-peer-"));
    this.cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const store = await DiskBlobStore.open({ dir, verifyStartDelayMs: 60_000 });
    this.cleanups.push(() => store.close());
    return store;
  }

  async server(options: Partial<PeerServerOptions> & { store: BlobStore }): Promise<PeerServer> {
    const server = await PeerServer.start({ host: "127.0.0.1", port: 0, logger: silentLogger, closeGraceMs: 500, ...options });
    this.cleanups.push(() => server.close());
    return server;
  }

  client(options: Partial<PeerClientOptions> = {}): PeerClient {
    const client = new PeerClient({ logger: silentLogger, ...options });
    this.cleanups.push(() => {
      client.close();
    });
    return client;
  }

  /** Registers extra cleanup (fake servers). */
  defer(cleanup: () => Promise<void> | void): void {
    this.cleanups.push(cleanup);
  }

  async close(): Promise<void> {
    for (const cleanup of this.cleanups.splice(0).reverse()) await cleanup();
  }
}

export function testBytes(size: number): Buffer {
  return randomBytes(size);
}

/** Puts `data` into the store as a complete blob. */
export async function putBlob(store: BlobStore, data: Buffer): Promise<Digest> {
  const digest = digestOf(data);
  const partial = await store.openPartial(digest, data.length, { pieceSize: choosePieceSize(data.length) });
  await partial.append(data);
  await partial.commit();
  return digest;
}

/** Opens a partial blob of `data` holding the pieces listed. */
export async function putPartial(store: BlobStore, data: Buffer, pieceSize: number, held: readonly number[]): Promise<PartialBlob> {
  const partial = await store.openPartial(digestOf(data), data.length, { pieceSize });
  for (const index of held) await writePiece(partial, data, index);
  return partial;
}

export async function writePiece(partial: PartialBlob, data: Buffer, index: number): Promise<void> {
  const span = pieceSpan(index, data.length, partial.pieceSize);
  await partial.writePiece(index, data.subarray(span.start, span.end));
}

export function pieceOf(data: Buffer, pieceSize: number, index: number): Buffer {
  const span = pieceSpan(index, data.length, pieceSize);
  return data.subarray(span.start, span.end);
}

export async function collect(pieces: AsyncIterable<ReceivedPiece>): Promise<ReceivedPiece[]> {
  const all: ReceivedPiece[] = [];
  for await (const piece of pieces) all.push(piece);
  return all;
}

/** Polls `condition` every few ms until it holds or `timeoutMs` passes; returns whether it held. */
export async function eventually(condition: () => boolean, timeoutMs = 2_000): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return true;
}

/** What a fake peer's ReadPieces handler gets: the request and a way to send raw chunk messages. */
export interface FakeCall {
  readonly request: ReadPiecesRequest;
  send(piece: number, offset: number, data: Uint8Array): void;
  end(): void;
  /** Ends the call with a gRPC status (e.g. status.NOT_FOUND). */
  fail(code: status, details: string): void;
}

/**
 * PeerService as grpc-js serves it in the fakes below: the generated definition, with ReadPieces responses
 * sent as already encoded messages, so a fake can send any bytes (malformed ones included).
 */
const fakePeerService = {
  stat: PeerServiceService.stat as MethodDefinition<StatRequest, StatResponse>,
  readPieces: {
    ...PeerServiceService.readPieces,
    responseSerialize: (message: Buffer): Buffer => message,
    responseDeserialize: (message: Buffer): Buffer => message,
  },
};

/**
 * Starts a PeerService on grpc-js (a gRPC implementation other than Shoal's own, so every fake also checks
 * that the client speaks plain gRPC) whose ReadPieces does whatever `handler` says: good, bad and silent peers.
 */
export async function startFakePeer(fixture: PeerFixture, handler: (call: FakeCall) => void): Promise<string> {
  const server = new Server();
  server.addService(fakePeerService, {
    stat: (_call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
      callback({ code: status.UNIMPLEMENTED });
    },
    readPieces: (call: ServerWritableStream<ReadPiecesRequest, Buffer>) => {
      handler({
        request: call.request,
        send: (piece, offset, data) => {
          call.write(encodeChunk(piece, offset, data));
        },
        end: () => {
          call.end();
        },
        fail: (code, details) => {
          call.emit("error", { code, details });
        },
      });
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => {
      if (error) reject(error);
      else resolve(bound);
    });
  });
  fixture.defer(() => {
    server.forceShutdown();
  });
  return `127.0.0.1:${port}`;
}
