// Entry point of the hash worker thread (started by worker-content-hasher.ts): keeps one InlineContentHasher
// per open partial and answers each request in order.
import { parentPort } from "node:worker_threads";
import { InlineContentHasher } from "./content-hasher.js";
import type { HashWorkerReply, HashWorkerRequest } from "./worker-content-hasher.js";

const port = parentPort;
if (port === null) throw new Error("hash-worker.js runs only as a worker thread");

const hashers = new Map<number, { hasher: InlineContentHasher; staging: Uint8Array }>();

function answer(message: HashWorkerRequest & { seq: number }): HashWorkerReply {
  const state = hashers.get(message.id);
  if (state === undefined) return { seq: message.seq, error: `no hash state ${message.id}` };
  const { hasher, staging } = state;
  if (message.op === "update") {
    // Exact copies: a digest Buffer may be a view of a larger one, which would be cloned whole.
    const pieces = hasher
      .feed(message.position, staging.subarray(0, message.length), message.targets)
      .map(({ index, sha256 }) => ({ index, sha256: new Uint8Array(sha256) }));
    return { seq: message.seq, pieces };
  }
  hashers.delete(message.id);
  return { seq: message.seq, digest: hasher.finish() };
}

port.on("message", (message: HashWorkerRequest) => {
  switch (message.op) {
    case "open":
      hashers.set(message.id, { hasher: new InlineContentHasher(message.params), staging: new Uint8Array(message.staging) });
      return;
    case "close":
      hashers.delete(message.id);
      return;
    default: {
      let reply: HashWorkerReply;
      try {
        reply = answer(message);
      } catch (error: unknown) {
        reply = { seq: message.seq, error: error instanceof Error ? error.message : String(error) };
      }
      port.postMessage(reply);
    }
  }
});
