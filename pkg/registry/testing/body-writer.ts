import { once } from "node:events";
import type { ServerResponse } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";

/** How a fake mangles or paces one response body. Everything off means "send it normally". */
export interface BodyShaping {
  /** Egress rate of the body, enforced by a token bucket; unset means as fast as the socket drains. */
  readonly bytesPerSecond?: number;
  /** Send this many body bytes (after headers announcing the full length), then close the connection. */
  readonly truncateAfterBytes?: number;
  /** Send this many body bytes, then nothing more until the client or close() ends the connection. */
  readonly stallAfterBytes?: number;
  /** Flip the last byte of the body: same length, wrong digest. */
  readonly corrupt?: boolean;
  /** Send no Content-Length; Node then uses chunked transfer-encoding. */
  readonly chunked?: boolean;
}

/** The bucket holds this much time's worth of bytes, so pacing is smooth at every rate. */
const BUCKET_DEPTH_MS = 50;
const MAX_BURST_BYTES = 64 * 1024;

/** Paces bytes to a rate; the balance may go negative, which is then slept off. */
class TokenBucket {
  private tokens: number;
  private refilledAtMs = performance.now();
  readonly burstBytes: number;

  constructor(private readonly bytesPerSecond: number) {
    this.burstBytes = Math.max(1, Math.min(MAX_BURST_BYTES, Math.floor((bytesPerSecond * BUCKET_DEPTH_MS) / 1000)));
    this.tokens = this.burstBytes;
  }

  async take(bytes: number, signal: AbortSignal): Promise<void> {
    const now = performance.now();
    this.tokens = Math.min(this.burstBytes, this.tokens + ((now - this.refilledAtMs) * this.bytesPerSecond) / 1000);
    this.refilledAtMs = now;
    this.tokens -= bytes;
    if (this.tokens < 0) await sleep((-this.tokens * 1000) / this.bytesPerSecond, undefined, { signal });
  }
}

/**
 * Writes `length` bytes from `chunks` to `res` as `shaping` says, honouring backpressure, and ends
 * the response unless told to truncate or stall. Returns quietly once `signal` aborts (client gone
 * or fake closing). `onBytes` hears of every byte handed to the socket.
 */
export async function writeBody(
  res: ServerResponse,
  chunks: Iterable<Uint8Array>,
  length: number,
  shaping: BodyShaping,
  signal: AbortSignal,
  onBytes: (bytes: number) => void,
): Promise<void> {
  const limit = Math.min(length, shaping.truncateAfterBytes ?? length, shaping.stallAfterBytes ?? length);
  const bucket = shaping.bytesPerSecond === undefined ? undefined : new TokenBucket(shaping.bytesPerSecond);
  const pieceBytes = bucket?.burstBytes ?? Number.POSITIVE_INFINITY;
  let sent = 0;
  try {
    for (const chunk of chunks) {
      if (sent >= limit) break;
      let rest = chunk.subarray(0, limit - sent);
      while (rest.byteLength > 0) {
        if (signal.aborted) return;
        let piece = rest.subarray(0, pieceBytes);
        rest = rest.subarray(piece.byteLength);
        if (shaping.corrupt === true && sent + piece.byteLength === length) piece = flipLastByte(piece);
        // take() rejects if the signal aborts while it sleeps.
        await bucket?.take(piece.byteLength, signal);
        sent += piece.byteLength;
        onBytes(piece.byteLength);
        if (sent === limit && limit < length) {
          // Wait until the last bytes reach the socket so the client is sure to see exactly `limit`.
          await new Promise<void>((resolve) =>
            res.write(piece, () => {
              resolve();
            }),
          );
        } else if (!res.write(piece)) {
          await once(res, "drain", { signal });
        }
      }
    }
  } catch (error: unknown) {
    if (signal.aborted) return;
    throw error;
  }
  if (limit === length) {
    res.end();
    return;
  }
  // Make sure the client at least has the headers, even when no body byte was sent.
  if (sent === 0) res.flushHeaders();
  if (shaping.truncateAfterBytes !== undefined && limit === shaping.truncateAfterBytes) {
    // destroySoon closes after the queued bytes are flushed: the client sees a short body, then EOF.
    res.socket?.destroySoon();
  }
  // Otherwise stall: leave the connection open and silent until the client or close() ends it.
}

function flipLastByte(piece: Uint8Array): Uint8Array {
  const copy = Buffer.from(piece);
  const last = copy.byteLength - 1;
  copy[last] = (copy[last] ?? 0) ^ 0xff;
  return copy;
}
