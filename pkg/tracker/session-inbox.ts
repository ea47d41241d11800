import type { Logger } from "pino";
import type { BlobChanged, SessionResponse } from "../gen/tracker/v1/tracker.js";
import type { Digest } from "../oci/index.js";
import { NoticeListeners } from "./notice-listeners.js";
import { type PrefetchHandler, validatePrefetchAssignment } from "./prefetch.js";
import type { BlobChangeListener } from "./tracker.js";
import { commandFromWire, noticeFromWire } from "./wire.js";

export interface SessionInboxOptions {
  readonly logger: Logger;
  /** Called per BlobChanged notice received (GrpcTrackerClientOptions.onNotice). */
  readonly onNotice?: (kind: "delta" | "lookup" | "malformed") => void;
}

/**
 * What the tracker sends down a registered session, on the agent's side: BlobChanged notices, handed to
 * the downloads waiting on their digest (NoticeListeners), and commands, handed to the prefetch handler.
 * Malformed messages are logged and dropped; the session stays.
 */
export class SessionInbox {
  private readonly notices: NoticeListeners;
  private prefetchHandler: PrefetchHandler | undefined;

  constructor(private readonly options: SessionInboxOptions) {
    this.notices = new NoticeListeners(options.logger);
  }

  /** Calls `listener` on every notice of `digest` until the returned function is called. */
  watchBlob(digest: Digest, listener: BlobChangeListener): () => void {
    return this.notices.add(digest, listener);
  }

  /** Where prefetch assignments from the tracker go; without a handler they are ignored. */
  setPrefetchHandler(handler: PrefetchHandler | undefined): void {
    this.prefetchHandler = handler;
  }

  /**
   * A BlobChanged notice: handed to the downloads of its digest with its change, or without one (look it
   * up) when it carried none or a malformed one. One with a bad digest is dropped: nobody waits for it.
   */
  notice(notice: BlobChanged): void {
    let parsed: ReturnType<typeof noticeFromWire>;
    try {
      parsed = noticeFromWire(notice);
    } catch (error: unknown) {
      this.options.onNotice?.("malformed");
      this.options.logger.debug({ err: error }, "tracker notice with a malformed digest dropped");
      return;
    }
    if (parsed.malformed !== undefined) {
      this.options.onNotice?.("malformed");
      this.options.logger.debug(
        { digest: parsed.digest, reason: parsed.malformed },
        "tracker notice with a malformed change; looking the blob up instead",
      );
    } else this.options.onNotice?.(parsed.change === undefined ? "lookup" : "delta");
    this.notices.notify(parsed.digest, parsed.change);
  }

  /** A command from the tracker (prefetch); a malformed one is logged and dropped, the session stays. */
  command(response: SessionResponse): void {
    let command;
    try {
      command = commandFromWire(response);
      if (command?.kind === "prefetch") command = { kind: "prefetch" as const, assignment: validatePrefetchAssignment(command.assignment) };
    } catch (error: unknown) {
      this.options.logger.warn({ err: error }, "malformed command from the tracker ignored");
      return;
    }
    if (command === undefined) return;
    try {
      this.prefetchHandler?.onCommand(command);
    } catch (error: unknown) {
      this.options.logger.error({ err: error, command: command.kind }, "prefetch handler failed");
    }
  }

  /** The session ended: the prefetch handler forgets its assignments (the tracker assigns again). */
  sessionLost(): void {
    try {
      this.prefetchHandler?.onSessionLost();
    } catch (error: unknown) {
      this.options.logger.error({ err: error }, "prefetch handler failed");
    }
  }
}
