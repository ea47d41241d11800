import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { LEADER_ADDRESS_METADATA, type RedirectDecision, decideRedirect, parseLeaderAddress } from "./leader-redirect.js";

/** The reason of a refusal, or a string saying it was none (so a wrong kind fails the match). */
function reasonOf(decision: RedirectDecision): string {
  return decision.kind === "refuse" ? decision.reason : `not a refusal: ${decision.kind}`;
}

function trailers(...values: (string | Buffer)[]): Metadata {
  const metadata = new Metadata();
  for (const value of values) {
    if (typeof value === "string") metadata.add(LEADER_ADDRESS_METADATA, value);
    else metadata.add(`${LEADER_ADDRESS_METADATA}-bin`, value);
  }
  return metadata;
}

const FIRST = { redirectsInARow: 0, maxRedirects: 1, current: "10.96.0.10:7000" };

describe("leader address", () => {
  it("accepts IPv4 and IPv6 literals with a port, normalised", () => {
    assert.deepEqual(parseLeaderAddress("10.1.2.3:7000"), { address: "10.1.2.3:7000" });
    assert.deepEqual(parseLeaderAddress("[fd00::1]:7000"), { address: "[fd00::1]:7000" });
  });

  it("refuses names, missing or bad ports, unspecified hosts, garbage and oversized values", () => {
    for (const bad of [
      "shoal-controller:7000",
      "10.1.2.3",
      "10.1.2.3:0",
      "10.1.2.3:65536",
      "10.1.2.3:70000",
      "0.0.0.0:7000",
      "[::]:7000",
      "fd00::1:7000",
      "999.1.2.3:7000",
      "",
      "a".repeat(200),
      "10.1.2.3:7000\n",
      " 10.1.2.3:7000",
    ]) {
      const parsed = parseLeaderAddress(bad);
      assert.ok("invalid" in parsed, `${JSON.stringify(bad)} refused`);
    }
  });
});

describe("redirect decision", () => {
  it("follows UNAVAILABLE naming a leader, registered session (hand-over) or not", () => {
    assert.deepEqual(decideRedirect(status.UNAVAILABLE, trailers("10.1.2.3:7000"), FIRST), { kind: "follow", address: "10.1.2.3:7000" });
  });

  it("ignores other codes and answers without the metadata", () => {
    assert.deepEqual(decideRedirect(status.PERMISSION_DENIED, trailers("10.1.2.3:7000"), FIRST), { kind: "none" });
    assert.deepEqual(decideRedirect(status.UNAVAILABLE, new Metadata(), FIRST), { kind: "none" });
    assert.deepEqual(decideRedirect(status.UNAVAILABLE, undefined, FIRST), { kind: "none" });
  });

  it("refuses garbage, several addresses, the address just dialed and a second redirect in a row, naming why", () => {
    const garbage = decideRedirect(status.UNAVAILABLE, trailers("not an address"), FIRST);
    assert.match(reasonOf(garbage), /is not IP:port/);
    const several = decideRedirect(status.UNAVAILABLE, trailers("10.1.2.3:7000", "10.1.2.4:7000"), FIRST);
    assert.match(reasonOf(several), /2 leader addresses/);
    const self = decideRedirect(status.UNAVAILABLE, trailers("10.96.0.10:7000"), FIRST);
    assert.match(reasonOf(self), /the address just dialed/);
    const second = decideRedirect(status.UNAVAILABLE, trailers("10.1.2.3:7000"), { ...FIRST, redirectsInARow: 1 });
    assert.match(reasonOf(second), /already followed 1 redirect/);
  });
});
