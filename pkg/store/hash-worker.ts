// Entry point of the hash worker thread (started by worker-content-hasher.ts): keeps one InlineContentHasher
// per open partial and answers each request in order.
import { parentPort } from "node:worker_threads";
import { InlineContentHasher } from "./content-hasher.js";
import type { HashWorkerReply, HashWorkerRequest } from "./worker-content-hasher.js";

const port = parentPort;
if (port === null) throw new Error("hash-worker.js runs only as a worker thread");

const hashers = new Map<number, InlineContentHasher>();

function answer(message: HashWorkerRequest & { seq: number }): HashWorkerReply {
  const hasher = hashers.get(message.id);
  if (hasher === undefined) return { seq: message.seq, error: `no hash state ${message.id}` };
  if (message.op === "update") {
    // Exact copies: a digest Buffer may be a view of a larger one, which would be cloned whole.
    const pieces = hasher
      .feed(message.position, new Uint8Array(message.memory, message.offset, message.length), message.targets)
      .map(({ index, sha256 }) => ({ index, sha256: new Uint8Array(sha256) }));
    return { seq: message.seq, pieces };
  }
  hashers.delete(message.id);
  return { seq: message.seq, digest: hasher.finish() };
}

port.on("message", (message: HashWorkerRequest) => {
  switch (message.op) {
    case "open":
      hashers.set(message.id, new InlineContentHasher(message.params));
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
