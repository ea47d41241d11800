import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type ServiceError, Metadata, status } from "@grpc/grpc-js";
import { TrackerError, isTrackerError } from "./errors.js";
import { type UnarySessions, sessionCall } from "./tracker-unary.js";

/** Sessions named "s1", "s2", …: the current one until abandoned or replaced. */
class FakeSessions implements UnarySessions<string> {
  current = "s1";
  readonly abandoned: string[] = [];
  constructor(readonly callBudgetMs = 10_000) {}
  readyClient(): Promise<{ client: string; deadline: number }> {
    return Promise.resolve({ client: this.current, deadline: Date.now() + 1_000 });
  }
  isCurrent(client: string): boolean {
    return client === this.current;
  }
  abandon(client: string): void {
    if (client !== this.current) return;
    this.abandoned.push(client);
    this.current = `s${Number(this.current.slice(1)) + 1}`;
  }
}

/** What unaryCall rejects with when the call failed with `code`. */
function failure(code: status): TrackerError {
  const cause: ServiceError = Object.assign(new Error(status[code]), { code, details: status[code], metadata: new Metadata() });
  return new TrackerError(
    code === status.PERMISSION_DENIED ? "ERR_TRACKER_PERMISSION_DENIED" : "ERR_TRACKER_UNAVAILABLE",
    `lookup failed: ${status[code]}`,
    { cause },
  );
}

/** A call answering from `script` in turn (an error is thrown), recording the session of each attempt. */
function scripted(script: (string | TrackerError)[]): { call: (client: string) => Promise<string>; sessions: string[] } {
  const sessions: string[] = [];
  return {
    sessions,
    call: (client) => {
      sessions.push(client);
      const next = script.shift();
      return next instanceof TrackerError || next === undefined
        ? Promise.reject(next ?? new Error("unexpected call"))
        : Promise.resolve(next);
    },
  };
}

describe("sessionCall", () => {
  it("asks again on the same session after no answer, and keeps the session when it answers", async () => {
    const sessions = new FakeSessions();
    const s = scripted([failure(status.DEADLINE_EXCEEDED), "answer"]);
    assert.equal(await sessionCall(sessions, undefined, s.call), "answer");
    assert.deepEqual(s.sessions, ["s1", "s1"]);
    assert.deepEqual(sessions.abandoned, []);
  });

  it("abandons a session silent twice in a row and asks once on the next", async () => {
    const sessions = new FakeSessions();
    const s = scripted([failure(status.DEADLINE_EXCEEDED), failure(status.UNAVAILABLE), "answer"]);
    assert.equal(await sessionCall(sessions, undefined, s.call), "answer");
    assert.deepEqual(s.sessions, ["s1", "s1", "s2"]);
    assert.deepEqual(sessions.abandoned, ["s1"]);
  });

  it("asks no more than once on the next session", async () => {
    const sessions = new FakeSessions();
    const s = scripted([failure(status.DEADLINE_EXCEEDED), failure(status.DEADLINE_EXCEEDED), failure(status.DEADLINE_EXCEEDED)]);
    await assert.rejects(sessionCall(sessions, undefined, s.call), (e: unknown) => isTrackerError(e, "ERR_TRACKER_UNAVAILABLE"));
    assert.deepEqual(s.sessions, ["s1", "s1", "s2"]);
    assert.deepEqual(sessions.abandoned, ["s1"], "the new session is not judged on one call");
  });

  it("a call whose session was replaced meanwhile is asked on the new one, without judging either", async () => {
    const sessions = new FakeSessions();
    const s = scripted([failure(status.DEADLINE_EXCEEDED), "answer"]);
    const replacing = (client: string): Promise<string> => {
      sessions.current = "s2";
      return s.call(client);
    };
    assert.equal(await sessionCall(sessions, undefined, (client) => (client === "s1" ? replacing(client) : s.call(client))), "answer");
    assert.deepEqual(s.sessions, ["s1", "s2"]);
    assert.deepEqual(sessions.abandoned, []);
  });

  it("an answer that refuses is final", async () => {
    const sessions = new FakeSessions();
    const s = scripted([failure(status.PERMISSION_DENIED), "answer"]);
    await assert.rejects(sessionCall(sessions, undefined, s.call), (e: unknown) => isTrackerError(e, "ERR_TRACKER_PERMISSION_DENIED"));
    assert.deepEqual(s.sessions, ["s1"]);
  });

  it("asks nothing more once its budget is spent", async () => {
    const sessions = new FakeSessions(0);
    const s = scripted([failure(status.DEADLINE_EXCEEDED), "answer"]);
    await assert.rejects(sessionCall(sessions, undefined, s.call), (e: unknown) => isTrackerError(e, "ERR_TRACKER_UNAVAILABLE"));
    assert.deepEqual(s.sessions, ["s1"]);
    assert.deepEqual(sessions.abandoned, []);
  });
});
