import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { describe, it } from "node:test";
import type { SessionResponse } from "../gen/tracker/v1/tracker.js";
import { noticeWriter } from "./notice-writer.js";
import { testDigest } from "./testing/helpers.js";

/** A stream whose buffer fills after `room` writes until the test drains it. */
class FakeStream extends EventEmitter {
  readonly written: SessionResponse[] = [];
  constructor(private room: number) {
    super();
  }
  write(response: SessionResponse): boolean {
    this.written.push(response);
    this.room--;
    return this.room > 0;
  }
  drain(room: number): void {
    this.room = room;
    this.emit("drain");
  }
}

describe("noticeWriter", () => {
  it("writes notices while the stream drains, drops them while it does not, and writes again after 'drain'", () => {
    const stream = new FakeStream(2);
    const write = noticeWriter(stream);
    const d = testDigest("slow reader");
    assert.deepEqual([write(d), write(d), write(d), write(d)], [true, true, false, false]);
    assert.equal(stream.written.length, 2, "nothing queued past the full buffer");
    assert.deepEqual(stream.written[0], { kind: { $case: "blobChanged", value: { digest: d } } });
    stream.drain(5);
    assert.equal(write(d), true);
    assert.equal(stream.written.length, 3);
  });
});
