import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import { HASH_WORKER_IDLE_MS, type HashThreadForTests, hashWorkerForTests, WorkerContentHasher } from "../worker-content-hasher.js";

/** How long a thread stays idle during these tests, so that the one left by earlier tests stops soon. */
const TEST_IDLE_MS = 20;
/** Bounds the wait for that thread to stop (a hang guard, not a timing assertion). */
const STOP_DEADLINE_MS = 5_000;

/**
 * Runs `body` once the process's hash thread has stopped, so that the next hasher starts a new one; with
 * `hold`, that thread is held at start-up (not online, and what is sent to it waits) until the body calls
 * releaseStart(). The thread's settings are restored afterwards, also when the body fails.
 */
export async function withNewHashThread(hold: boolean, body: (thread: HashThreadForTests) => Promise<void>): Promise<void> {
  const thread = hashWorkerForTests(TEST_IDLE_MS);
  try {
    // A hasher closed now starts the short idle timer of the thread left by earlier tests.
    new WorkerContentHasher({ algorithm: "sha256", size: 1, pieceSize: 1 }).close();
    const running = (): boolean => thread.running;
    for (let waited = 0; running() && waited < STOP_DEADLINE_MS; waited += TEST_IDLE_MS) await delay(TEST_IDLE_MS);
    assert.equal(running(), false, "the earlier thread stopped");
    thread.holdStart = hold;
    await body(thread);
  } finally {
    hashWorkerForTests(HASH_WORKER_IDLE_MS).releaseStart();
  }
}
