// Child process for the teardown tests: starts a one-node cluster, prints what it created as one JSON
// line, then waits to be signalled. Its signal handling is the harness's, which is what is tested.
import { setTimeout as delay } from "node:timers/promises";
import { NetnsCluster } from "../cluster.js";

/** Upper bound on the wait, so a test that forgets this process does not leave it forever. */
const HOLD_MS = 120_000;
const RATE_BYTES_PER_SECOND = 100e6 / 8;

const cluster = await NetnsCluster.start({
  nodes: 1,
  nodeUploadBytesPerSecond: RATE_BYTES_PER_SECOND,
  nodeDownloadBytesPerSecond: RATE_BYTES_PER_SECOND,
  originBytesPerSecond: RATE_BYTES_PER_SECOND,
});
process.stdout.write(`${JSON.stringify({ prefix: cluster.topology.prefix, pids: cluster.pids(), runDir: cluster.runDir })}\n`);
await delay(HOLD_MS);
await cluster.destroy();
