import assert from "node:assert/strict";
import { connect, constants as h2, type IncomingHttpHeaders } from "node:http2";
import { after, before, describe, it } from "node:test";
import { credentials, Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { PeerServiceClient, ReadPiecesResponse, type StatResponse } from "../gen/peer/v1/peer.js";
import type { Digest } from "../oci/index.js";
import { sha256Of } from "../piece/index.js";
import type { DiskBlobStore } from "../store/index.js";
import { frameMessage } from "./grpc-wire.js";
import { PEER_METHODS } from "./peer-service.js";
import type { PeerServer } from "./peer-server.js";
import { MiB, PeerFixture, pieceOf, putBlob, testBytes } from "./testing/peer-fixture.js";

// PeerService is served on node:http2 with Shoal's own gRPC framing. These tests call it with grpc-js and
// its generated client, a gRPC implementation that shares no code with the server: it is gRPC on the wire.

describe("PeerServer speaks gRPC: the generated grpc-js client", () => {
  const fixture = new PeerFixture();
  let store: DiskBlobStore;
  let server: PeerServer;
  let client: InstanceType<typeof PeerServiceClient>;
  const blob = testBytes(2.5 * MiB);
  let digest: Digest;

  before(async () => {
    store = await fixture.store();
    digest = await putBlob(store, blob);
    server = await fixture.server({ store });
    client = new PeerServiceClient(server.address, credentials.createInsecure());
  });
  after(async () => {
    client.close();
    await fixture.close();
  });

  it("Stat: a complete blob, and NOT_FOUND with a message for an unknown one", async () => {
    const stat = await new Promise<StatResponse>((resolve, reject) => {
      client.stat({ digest }, (error, response) => {
        if (error) reject(error);
        else resolve(response);
      });
    });
    assert.deepEqual(
      { ...stat, bitmap: [...stat.bitmap], pieceHashes: stat.pieceHashes.map((h) => h.toString("hex")) },
      {
        complete: true,
        size: blob.length,
        pieceSize: MiB,
        bitmap: [],
        pieceHashes: [0, 1, 2].map((i) => sha256Of(pieceOf(blob, MiB, i)).toString("hex")),
        holders: [],
      },
    );
    const missing = await new Promise<ServiceError>((resolve) => {
      client.stat({ digest: `sha256:${"0".repeat(64)}` }, (error) => {
        if (error) resolve(error);
      });
    });
    assert.equal(missing.code, status.NOT_FOUND);
    assert.match(missing.details, /not held here/);
  });

  it("ReadPieces: every chunk decodes with the generated codec and the pieces are byte-exact", async () => {
    const call = client.readPieces({ digest, pieceSize: MiB, pieces: [2, 0], waitMs: 0 });
    const chunks: ReadPiecesResponse[] = [];
    for await (const chunk of call as AsyncIterable<ReadPiecesResponse>) chunks.push(chunk);
    const joined = (index: number): Buffer => Buffer.concat(chunks.filter((c) => c.piece === index).map((c) => c.data));
    assert.deepEqual([...new Set(chunks.map((c) => c.piece))], [2, 0]);
    assert.ok(joined(2).equals(pieceOf(blob, MiB, 2)));
    assert.ok(joined(0).equals(pieceOf(blob, MiB, 0)));
  });

  it("ReadPieces: errors arrive as gRPC statuses with their messages", async () => {
    const call = client.readPieces({ digest, pieceSize: 4096, pieces: [0], waitMs: 0 });
    const error = await new Promise<ServiceError>((resolve) => {
      call.on("error", resolve);
      call.on("data", () => undefined);
    });
    assert.equal(error.code, status.INVALID_ARGUMENT);
    assert.match(error.details, /piece size 4096 does not match/);
  });

  it("an unknown method is UNIMPLEMENTED; a request that is not gRPC gets an HTTP error", async () => {
    const unknown = await new Promise<ServiceError>((resolve) => {
      client.makeUnaryRequest(
        "/peer.v1.PeerService/Nope",
        (x: Buffer) => x,
        (x: Buffer) => x,
        Buffer.alloc(0),
        new Metadata(),
        (error) => {
          if (error) resolve(error);
        },
      );
    });
    assert.equal(unknown.code, status.UNIMPLEMENTED);
    const session = connect(`http://${server.address}`);
    try {
      const statusOf = (headers: Record<string, string>): Promise<number> =>
        new Promise((resolve, reject) => {
          const stream = session.request(headers);
          stream.on("response", (h) => {
            resolve(Number(h[h2.HTTP2_HEADER_STATUS]));
          });
          stream.on("error", reject);
          stream.end();
          stream.resume();
        });
      assert.equal(await statusOf({ ":method": "GET", ":path": PEER_METHODS.stat }), 405);
      assert.equal(await statusOf({ ":method": "POST", ":path": PEER_METHODS.stat, "content-type": "text/plain" }), 415);
    } finally {
      session.close();
    }
  });

  it("a request that is not one well-formed message is refused with a status, not a crash", async () => {
    const session = connect(`http://${server.address}`);
    try {
      const trailersOf = (body: Buffer): Promise<string | undefined> =>
        new Promise((resolve, reject) => {
          const stream = session.request({
            ":method": "POST",
            ":path": PEER_METHODS.readPieces,
            "content-type": "application/grpc",
            te: "trailers",
          });
          let code: string | undefined;
          const record = (h: IncomingHttpHeaders): void => {
            if (typeof h["grpc-status"] === "string") code = h["grpc-status"];
          };
          stream.on("response", record);
          stream.on("trailers", record);
          stream.on("close", () => {
            resolve(code);
          });
          stream.on("error", reject);
          stream.resume();
          stream.end(body);
        });
      assert.equal(
        await trailersOf(Buffer.concat([frameMessage(Buffer.alloc(0)), frameMessage(Buffer.alloc(0))])),
        String(status.INVALID_ARGUMENT),
        "two messages",
      );
      assert.equal(await trailersOf(Buffer.from([0, 0, 0, 0, 9, 1])), String(status.INVALID_ARGUMENT), "truncated message");
      assert.equal(await trailersOf(Buffer.from([1, 0, 0, 0, 0])), String(status.RESOURCE_EXHAUSTED), "compressed without negotiation");
      assert.equal(await trailersOf(Buffer.from([0, 0, 2, 0, 0])), String(status.RESOURCE_EXHAUSTED), "over the request size limit");
      assert.equal(await trailersOf(frameMessage(Buffer.from([0xff, 0xff]))), String(status.INVALID_ARGUMENT), "not protobuf");
    } finally {
      session.close();
    }
  });
});
