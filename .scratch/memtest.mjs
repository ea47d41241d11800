import { pino } from "pino";
import { MemoryTracker } from "/work/wt-scale/dist/pkg/tracker/index.js";
import { buildWorkload, inventoryOf, agentIdentity } from "/work/wt-scale/dist/e2e/bench/tracker-load/workload.js";
import { SessionRequest } from "/work/wt-scale/dist/pkg/gen/tracker/v1/tracker.js";
import { announcementFromWire } from "/work/wt-scale/dist/pkg/tracker/wire.js";
import { grpcMessages } from "/work/wt-scale/dist/e2e/bench/tracker-load/grpc-h2.js";
const K = Number(process.argv[2] ?? 100);
const w = buildWorkload(1);
globalThis.gc?.(); const base = process.memoryUsage();
const t = new MemoryTracker({ logger: pino({ level: "silent" }) });
let total = 0, pieces = 0;
for (let i = 0; i < K; i++) {
  const s = t.register(agentIdentity(i));
  for (const rank of inventoryOf(i, 1)) {
    const frame = w.catalogue[rank].announce;
    const req = SessionRequest.decode(Buffer.from(grpcMessages(frame)[0]));
    s.announce(announcementFromWire(req.kind.value)); total++;
  }
}
globalThis.gc?.(); const after = process.memoryUsage();
const snap = t.snapshot();
console.log({ K, holdings: total, blobs: snap.blobs.length, hashes: snap.blobs.reduce((a,b)=>a+b.knownHashes,0), heapMB: ((after.heapUsed-base.heapUsed)/1e6).toFixed(1), extMB: ((after.external + after.arrayBuffers - base.external - base.arrayBuffers)/1e6).toFixed(1), rssMB: (after.rss/1e6).toFixed(0), catalogueMB: (w.catalogue.reduce((a,b)=>a+b.announce.length,0)/1e6).toFixed(1) });
