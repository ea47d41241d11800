import { Transform, type TransformCallback } from "node:stream";
import type { TokenBucket } from "./token-bucket.js";

/** A pass-through stream that lets each chunk go only when the bucket allows it. Backpressure is preserved. */
export function throttleStream(bucket: TokenBucket, signal?: AbortSignal): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      bucket.take(chunk.length, signal).then(
        () => {
          callback(null, chunk);
        },
        (error: unknown) => {
          callback(error instanceof Error ? error : new Error(String(error)));
        },
      );
    },
  });
}
