import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { Http2Session } from "node:http2";
import { describe, it } from "node:test";
import { PeerStatus } from "./grpc-status.js";
import { GrpcStatus } from "./grpc-wire.js";
import { SMALL_READ_BYTES, UploadSlots } from "./upload-slots.js";

/** A request big enough to take a slot (two 1 MiB pieces). */
const BIG = 2 * 1024 * 1024;

/** Only the identity of a session matters to UploadSlots: it keys the per-connection count. */
function session(): Http2Session {
  return new EventEmitter() as Http2Session;
}

function refusal(detail: RegExp): (error: unknown) => boolean {
  return (error: unknown) => error instanceof PeerStatus && error.code === GrpcStatus.RESOURCE_EXHAUSTED && detail.test(error.details);
}

describe("UploadSlots", () => {
  it("serves a small request (a config, a short blob) without a slot, also when every slot is taken", () => {
    const slots = new UploadSlots(4, undefined);
    const peer = session();
    const held = [slots.acquire(peer, BIG), slots.acquire(peer, BIG), slots.acquire(session(), BIG), slots.acquire(session(), BIG)];
    assert.throws(() => slots.acquire(session(), BIG), refusal(/upload cap reached/));
    assert.throws(() => slots.acquire(peer, SMALL_READ_BYTES + 1), refusal(/upload cap reached/), "just over the limit takes a slot");
    const small = slots.acquire(peer, 949);
    assert.equal(slots.inUse, 4, "a small request holds no slot");
    small();
    assert.equal(slots.inUse, 4, "and its release frees none");
    slots.acquire(session(), SMALL_READ_BYTES);
    for (const release of held) release();
    assert.equal(slots.inUse, 0);
  });

  it("serves at most 4 small requests per connection beside the slots; more take slots, then are refused", () => {
    const slots = new UploadSlots(4, undefined);
    const peer = session();
    const beside = Array.from({ length: 4 }, () => slots.acquire(peer, 949));
    assert.equal(slots.inUse, 0);
    slots.acquire(peer, 949);
    slots.acquire(peer, 949);
    assert.equal(slots.inUse, 2, "the fifth and sixth take the connection's slots");
    assert.throws(() => slots.acquire(peer, 949), refusal(/this connection holds 2 upload streams already/));
    beside[0]?.();
    beside[0]?.();
    slots.acquire(peer, 949);
    assert.equal(slots.inUse, 2, "a freed place beside the slots is taken again, once");
    assert.throws(() => slots.acquire(peer, 949), refusal(/holds 2/));
  });

  it("lets one connection hold a quarter of the slots, and the others the rest", () => {
    const slots = new UploadSlots(16, undefined);
    const greedy = session();
    const releases = Array.from({ length: 4 }, () => slots.acquire(greedy, BIG));
    assert.throws(() => slots.acquire(greedy, BIG), refusal(/this connection holds 4 upload streams already/));
    const others = Array.from({ length: 12 }, () => slots.acquire(session(), BIG));
    assert.equal(slots.inUse, 16);
    assert.throws(() => slots.acquire(session(), BIG), refusal(/upload cap reached \(16 streams\)/));
    for (const release of [...releases, ...others]) release();
    assert.equal(slots.inUse, 0);
  });

  it("frees a slot once however often its release is called", () => {
    const slots = new UploadSlots(4, undefined);
    const peer = session();
    const first = slots.acquire(peer, BIG);
    const second = slots.acquire(peer, BIG);
    assert.throws(() => slots.acquire(peer, BIG), refusal(/holds 2/), "a small cap still allows two per connection");
    first();
    first();
    assert.equal(slots.inUse, 1);
    slots.acquire(peer, BIG);
    assert.equal(slots.inUse, 2);
    second();
    assert.equal(slots.inUse, 1);
  });

  it("counts requests without a connection against the node-wide cap only", () => {
    const slots = new UploadSlots(2, undefined);
    slots.acquire(undefined, BIG);
    slots.acquire(undefined, BIG);
    assert.throws(() => slots.acquire(undefined, BIG), refusal(/upload cap reached/));
  });

  it("refuses a cap that is not a positive integer, naming the option", () => {
    for (const max of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => new UploadSlots(max, undefined), /maxConcurrentUploads must be a positive integer/);
    }
  });
});
