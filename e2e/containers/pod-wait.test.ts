// The harness's wait for an init container's exit, against Podman's race with the exiting process.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { waitForExit } from "./pod.js";

const RACE = new Error("(HTTP code 500) server error - read /proc/19145/cgroup: no such process");

/** A container whose wait() answers from `answers` in turn (an Error is thrown), counting the calls. */
function scripted(answers: readonly (Error | { StatusCode: number })[]): { wait(): Promise<unknown>; calls: number } {
  const container = {
    calls: 0,
    wait(): Promise<unknown> {
      const answer = answers[container.calls++];
      return answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer);
    },
  };
  return container;
}

describe("waitForExit", () => {
  it("waits again when Podman lost the race with the exiting process, and returns the exit status", async () => {
    const container = scripted([RACE, RACE, { StatusCode: 3 }]);
    assert.deepEqual(await waitForExit(container), { StatusCode: 3 });
    assert.equal(container.calls, 3);
  });

  it("passes any other failure on at once", async () => {
    const container = scripted([new Error("(HTTP code 404) no such container"), { StatusCode: 0 }]);
    await assert.rejects(waitForExit(container), /no such container/);
    assert.equal(container.calls, 1);
  });

  it("gives up after a few races in a row", async () => {
    const container = scripted([RACE, RACE, RACE, RACE, RACE, { StatusCode: 0 }]);
    await assert.rejects(waitForExit(container), /\/proc\/19145\/cgroup/);
    assert.equal(container.calls, 4);
  });
});
