import { createHash } from "node:crypto";
import { type Server as NetServer, type Socket, createServer } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { type Digest, digestOf } from "../../oci/index.js";
import { PieceBitmap } from "../../piece/index.js";
import type { AgentIdentity } from "../tracker.js";

export { sleep };

/** An identity for tests; the peer port is derived from the id so each agent's address differs. */
export function testIdentity(agentId: string, nodeName = `node-${agentId}`, zone = ""): AgentIdentity {
  let port = 20_000;
  for (const char of agentId) port = (port * 31 + char.charCodeAt(0)) % 40_000;
  return { agentId, nodeName, zone, peerAddress: `10.0.0.1:${port + 20_000}` };
}

export function testDigest(name: string): Digest {
  return digestOf(`blob ${name}`);
}

/** Bitmap bytes (PieceBitmap order) with `held` set. */
export function bitmapOf(pieces: number, held: readonly number[]): Uint8Array {
  const bitmap = new PieceBitmap(pieces);
  for (const index of held) bitmap.set(index);
  return bitmap.toBytes();
}

/** A stand-in SHA-256 for piece `index`; `variant` makes a conflicting one. */
export function pieceHash(index: number, variant = ""): Uint8Array {
  return new Uint8Array(createHash("sha256").update(`piece ${index}${variant}`).digest());
}

/** Retries `check` until it stops throwing or `timeoutMs` passes; then throws its last error. */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 3_000, intervalMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() >= deadline) throw error;
      await sleep(intervalMs);
    }
  }
}

/** A TCP server on loopback that accepts connections and never answers: a tracker (or leader) that hangs. */
export async function silentServer(): Promise<{ address: string; port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: NetServer = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const bound = server.address();
  if (bound === null || typeof bound !== "object") throw new Error("the silent server has no port");
  return {
    address: `127.0.0.1:${bound.port}`,
    port: bound.port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => {
          resolve();
        });
      }),
  };
}

/**
 * A clock and a timer queue moved by hand (the tracker's `now` and `schedule` options): `advance(ms)` runs
 * the timers due, in order, each at its own time.
 */
export function manualClock(startMs = 1_000): {
  now: () => number;
  schedule: (task: () => void, delayMs: number) => () => void;
  advance: (ms: number) => void;
  /** Timers scheduled and neither run nor cancelled. */
  pending: () => number;
} {
  let nowMs = startMs;
  const timers: { atMs: number; task: () => void; cancelled: boolean }[] = [];
  return {
    now: () => nowMs,
    schedule: (task, delayMs) => {
      const timer = { atMs: nowMs + delayMs, task, cancelled: false };
      timers.push(timer);
      return () => {
        timer.cancelled = true;
      };
    },
    advance(ms) {
      const until = nowMs + ms;
      for (;;) {
        const next = timers.filter((t) => !t.cancelled && t.atMs <= until).sort((a, b) => a.atMs - b.atMs)[0];
        if (next === undefined) break;
        timers.splice(timers.indexOf(next), 1);
        nowMs = next.atMs;
        next.task();
      }
      nowMs = until;
    },
    pending: () => timers.filter((t) => !t.cancelled).length,
  };
}
