// Asks a tracker who holds a blob, as an observer agent that holds a session but announces nothing and
// never asks for the origin grant: how tests wait for an announcement or a withdrawal to reach the
// tracker instead of sleeping.
import { pino } from "pino";
import type { Digest } from "../../pkg/oci/index.js";
import { GrpcTrackerClient } from "../../pkg/tracker/index.js";
import { waitUntil } from "./process.js";

const SESSION_TIMEOUT_MS = 10_000;

export class TrackerProbe {
  private constructor(private readonly client: GrpcTrackerClient) {}

  static async open(trackerAddress: string): Promise<TrackerProbe> {
    const client = new GrpcTrackerClient({
      address: trackerAddress,
      identity: { agentId: "e2e-observer", nodeName: "e2e-observer", zone: "", peerAddress: "127.0.0.1:9" },
      logger: pino({ level: "silent" }),
    });
    try {
      await waitUntil(() => Promise.resolve(client.connected), { timeoutMs: SESSION_TIMEOUT_MS, what: "the observer's tracker session" });
    } catch (error) {
      await client.close();
      throw error;
    }
    return new TrackerProbe(client);
  }

  /** Node names of the agents the tracker lists as holders (complete or partial) of `digest`. */
  async holders(digest: string): Promise<string[]> {
    const result = await this.client.lookup(digest as Digest, { wantOriginGrant: false });
    return result.holders.map((holder) => holder.nodeName);
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
