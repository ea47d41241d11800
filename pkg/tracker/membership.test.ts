import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { hostOfPeer, normalizeHost } from "./membership.js";

describe("peer addresses", () => {
  it("takes the host out of grpc-js peer strings", () => {
    assert.equal(hostOfPeer("10.0.0.7:51234"), "10.0.0.7");
    assert.equal(hostOfPeer("::1:51234"), "::1");
    assert.equal(hostOfPeer("::ffff:10.0.0.7:51234"), "10.0.0.7");
    assert.equal(hostOfPeer("[fd00::1]:80"), "fd00::1");
    assert.equal(hostOfPeer("unknown"), undefined);
    assert.equal(normalizeHost("[FD00::1]"), "fd00::1");
  });
});
