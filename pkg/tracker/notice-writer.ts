import type { Digest } from "../oci/index.js";
import type { SessionResponse } from "../gen/tracker/v1/tracker.js";
import type { BlobChange } from "./tracker.js";
import { noticeResponse } from "./wire.js";

/** What a notice is written to: a session's server stream (grpc-js ServerDuplexStream). */
export interface NoticeStream {
  /** False once the stream's buffer is full (the message is still queued). */
  write(response: SessionResponse): boolean;
  once(event: "drain", listener: () => void): unknown;
}

/**
 * Writes BlobChanged notices to a session's stream while it drains. Once a write fills the stream's buffer
 * (the agent reads slowly, or its connection is stuck), later notices are dropped until 'drain': the tracker
 * then sends that agent "look it up" instead of changes until its next lookup (the agent's next lookup has
 * it all), so dropping one costs the agent only its wait for its slow poll, and the tracker never queues notices without bound. Returns, per notice, whether it was
 * written (false: dropped, counted by the tracker).
 */
export function noticeWriter(stream: NoticeStream): (digest: Digest, change?: BlobChange) => boolean {
  let draining = true;
  return (digest, change) => {
    if (!draining) return false;
    if (!stream.write(noticeResponse(digest, change))) {
      draining = false;
      stream.once("drain", () => {
        draining = true;
      });
    }
    return true;
  };
}
