// npm run bench:tracker-budget — what one misbehaving session costs the controller. A real `shoal
// controller` process on loopback; one session registers and announces fresh blobs as fast as the
// stream takes them (each with `pieces` pieces and every piece hash) until the tracker ends it for
// being over its memory budget. Reports the controller's RSS before, after and at peak (/proc), the
// blobs accepted and the status. Prints figures; asserts nothing (the budget itself is tested in
// pkg/tracker/memory-tracker.test.ts).
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { type StatusObject, credentials } from "@grpc/grpc-js";
import { parseDigest } from "../../pkg/oci/index.js";
import { TrackerServiceClient } from "../../pkg/gen/tracker/v1/tracker.js";
import { announceRequests, registerRequest } from "../../pkg/tracker/index.js";
import { ShoalController } from "../support/shoal-controller.js";
import { benchOptions, integerFlag } from "./bench-flags.js";

const USAGE = `Usage: npm run bench:tracker-budget -- [flags]

One session that registers and announces fresh blobs as fast as the stream takes them, until the tracker
ends it for being over its memory budget; the controller's RSS before, after and at peak.

  --pieces LIST        comma-separated piece counts per blob, each from 1 to 65536 (default 1,2048,65536)
  --help`;
/** A bound on the announces sent whatever the tracker does. */
const MAX_ANNOUNCES = 200_000;
const SESSION_TIMEOUT_MS = 120_000;

async function statusKb(pid: number, field: "VmRSS" | "VmHWM"): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(text)?.[1] ?? Number.NaN);
}

async function run(pieces: number): Promise<void> {
  const controller = await ShoalController.start();
  const client = new TrackerServiceClient(controller.trackerAddress, credentials.createInsecure());
  try {
    const pid = controller.daemon.pid;
    const beforeKb = await statusKb(pid, "VmRSS");
    const call = client.session();
    call.on("data", () => undefined);
    call.on("error", () => undefined);
    const ended = new Promise<StatusObject>((resolve) => call.once("status", resolve));
    const session = { ended: false };
    void ended.then(() => {
      session.ended = true;
    });
    call.write(registerRequest({ agentId: "rogue", nodeName: "rogue", zone: "", peerAddress: "127.0.0.1:1" }));
    const pieceHashes = Array.from({ length: pieces }, (_, index) => ({ index, sha256: new Uint8Array(32).fill(index & 0xff) }));
    const deadline = Date.now() + SESSION_TIMEOUT_MS;
    let sent = 0;
    while (!session.ended && sent < MAX_ANNOUNCES && Date.now() < deadline) {
      const digest = parseDigest(`sha256:${createHash("sha256").update(`${pieces}-${sent}`).digest("hex")}`);
      let flowing = true;
      for (const request of announceRequests({ digest, size: pieces, pieceSize: 1, complete: true, pieceHashes }))
        flowing = call.write(request);
      sent++;
      if (!flowing) await Promise.race([new Promise((resolve) => call.once("drain", resolve)), ended]);
      else if (sent % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    if (!session.ended) call.cancel();
    const result = await ended;
    // Give the controller a moment to drop the session and collect before reading its RSS.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const afterKb = await statusKb(pid, "VmRSS");
    const peakKb = await statusKb(pid, "VmHWM");
    const accepted = /(\d+) blobs announced/.exec(result.details)?.[1] ?? "?";
    console.log(
      `${pieces} pieces a blob: ${sent} announces sent, ${accepted} accepted, status ${result.code}; ` +
        `controller RSS ${(beforeKb / 1024).toFixed(0)} MB before, ${(afterKb / 1024).toFixed(0)} MB after (+${((afterKb - beforeKb) / 1024).toFixed(0)}), peak ${(peakKb / 1024).toFixed(0)} MB`,
    );
  } finally {
    client.close();
    await controller.stop();
  }
}

async function main(): Promise<void> {
  const shapes = benchOptions(USAGE, { pieces: "1,2048,65536" }, (flags) =>
    (flags.pieces ?? "").split(",").map((count) => integerFlag("pieces", count.trim(), 1, 65_536)),
  );
  for (const pieces of shapes) await run(pieces);
}

await main();
