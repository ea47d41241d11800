import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ContainerdError } from "./errors.js";
import { GC_EXPIRE_LABEL, type LeaseClient, LeaseKeeper, READER_LEASE_LABEL } from "./lease-keeper.js";

/** containerd's lease calls, recorded. */
class FakeLeases implements LeaseClient {
  readonly calls: string[] = [];
  readonly labels = new Map<string, Record<string, string>>();
  failCreate = false;
  private deleted: (() => void) | undefined;

  createLease(id: string, labels: Readonly<Record<string, string>>): Promise<void> {
    this.calls.push(`create ${id}`);
    if (this.failCreate) return Promise.reject(new ContainerdError("ERR_CONTAINERD_UNAVAILABLE", "down"));
    this.labels.set(id, { ...labels });
    return Promise.resolve();
  }

  addLeaseResource(id: string, digest: string): Promise<void> {
    this.calls.push(`add ${id} ${digest}`);
    return Promise.resolve();
  }

  deleteLease(id: string): Promise<void> {
    this.calls.push(`delete ${id}`);
    this.deleted?.();
    return Promise.resolve();
  }

  nextDelete(): Promise<void> {
    return new Promise((resolve) => (this.deleted = resolve));
  }
}

const DIGEST = `sha256:${"a".repeat(64)}`;

describe("LeaseKeeper", () => {
  it("one lease per blob, shared by its readers, deleted after the last one; labelled to expire", async () => {
    const client = new FakeLeases();
    let released = 0;
    const keeper = new LeaseKeeper({ client, lingerMs: 0, now: () => Date.parse("2026-01-01T00:00:00Z"), onReleased: () => released++ });
    const first = await keeper.hold(DIGEST);
    const second = await keeper.hold(DIGEST);
    assert.equal(first.fresh, true);
    assert.equal(second.fresh, false, "the second reader shares the lease");
    const id = client.calls[0]?.split(" ")[1] ?? "";
    assert.deepEqual(client.calls, [`create ${id}`, `add ${id} ${DIGEST}`]);
    assert.deepEqual(client.labels.get(id), { [READER_LEASE_LABEL]: "true", [GC_EXPIRE_LABEL]: "2026-01-01T01:00:00.000Z" });
    first.release();
    first.release();
    assert.equal(keeper.size, 1, "a release counts once; the other reader still holds it");
    const deleted = client.nextDelete();
    second.release();
    await deleted;
    assert.equal(client.calls.at(-1), `delete ${id}`);
    assert.equal(keeper.size, 0);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(released, 1);
  });

  it("a lease outlives its last reader by the linger, and a reader within it reuses the lease", async () => {
    const client = new FakeLeases();
    const keeper = new LeaseKeeper({ client, lingerMs: 60_000 });
    (await keeper.hold(DIGEST)).release();
    const again = await keeper.hold(DIGEST);
    assert.equal(again.fresh, false);
    assert.equal(client.calls.filter((c) => c.startsWith("create")).length, 1);
    again.release();
    assert.equal(
      client.calls.some((c) => c.startsWith("delete")),
      false,
      "still lingering",
    );
    await keeper.releaseAll();
    assert.equal(client.calls.filter((c) => c.startsWith("delete")).length, 1, "shutdown deletes it");
  });

  it("a lease containerd refuses fails every reader waiting for it, and the next one tries again", async () => {
    const client = new FakeLeases();
    client.failCreate = true;
    const keeper = new LeaseKeeper({ client, lingerMs: 0 });
    const results = await Promise.allSettled([keeper.hold(DIGEST), keeper.hold(DIGEST)]);
    assert.deepEqual(
      results.map((r) => r.status),
      ["rejected", "rejected"],
    );
    assert.equal(keeper.size, 0);
    client.failCreate = false;
    const hold = await keeper.hold(DIGEST);
    assert.equal(hold.fresh, true);
    hold.release();
  });

  it("a reader whose signal fires while the lease is being made gives up its share", async () => {
    const client = new FakeLeases();
    const keeper = new LeaseKeeper({ client, lingerMs: 0 });
    const controller = new AbortController();
    controller.abort();
    const deleted = client.nextDelete();
    await assert.rejects(
      keeper.hold(DIGEST, controller.signal),
      (error: unknown) => error instanceof ContainerdError && error.code === "ERR_CONTAINERD_ABORTED",
    );
    await deleted;
    assert.equal(keeper.size, 0);
  });
});
