/**
 * The links: every node has an upload and a download capacity, the origin an upload capacity, and every
 * transfer in progress is a flow from one sender to one receiver. Each step, rates are shared out by
 * progressive filling (max-min fairness): every flow grows at the same pace until its sender's upload or
 * its receiver's download is used up, then it is frozen and the rest keep growing. TCP does not share
 * exactly this way, but no flow is held below what both of its ends could give it, which is what the
 * bound assumes too. A few rounds of filling are exact for the common cases (one bottleneck per flow)
 * and close otherwise.
 */
export interface FlowEnds {
  /** Sender: a node index, or the origin's index (the number of nodes). */
  readonly src: number;
  readonly dst: number;
  /** Bytes per second this step; written by allocate(). */
  rate: number;
}

/** Progressive-filling rounds per step. */
const FILL_ROUNDS = 4;
/** Capacity below this fraction of a link is treated as used up. */
const SATURATED = 1e-9;

export class Network {
  private readonly upLeft: Float64Array;
  private readonly downLeft: Float64Array;
  private readonly upCount: Int32Array;
  private readonly downCount: Int32Array;

  /** `up`/`down`: per endpoint (nodes, then the origin at the last index), bytes per second; Infinity = uncapped. */
  constructor(
    private readonly up: Float64Array,
    private readonly down: Float64Array,
  ) {
    this.upLeft = new Float64Array(up.length);
    this.downLeft = new Float64Array(down.length);
    this.upCount = new Int32Array(up.length);
    this.downCount = new Int32Array(down.length);
  }

  /** Sets every flow's rate for this step. */
  allocate(flows: readonly FlowEnds[]): void {
    const { up, down, upLeft, downLeft, upCount, downCount } = this;
    upLeft.set(up);
    downLeft.set(down);
    let active = flows.length;
    const frozen = new Uint8Array(flows.length);
    for (const flow of flows) flow.rate = 0;
    for (let round = 0; round < FILL_ROUNDS && active > 0; round++) {
      upCount.fill(0);
      downCount.fill(0);
      for (let f = 0; f < flows.length; f++) {
        if (frozen[f] === 1) continue;
        const flow = flows[f] as FlowEnds;
        upCount[flow.src] = (upCount[flow.src] ?? 0) + 1;
        downCount[flow.dst] = (downCount[flow.dst] ?? 0) + 1;
      }
      // Shares are computed from the counts before any flow of this round takes its part.
      const increments = new Float64Array(flows.length);
      for (let f = 0; f < flows.length; f++) {
        if (frozen[f] === 1) continue;
        const flow = flows[f] as FlowEnds;
        increments[f] = Math.min(
          (upLeft[flow.src] ?? 0) / (upCount[flow.src] ?? 1),
          (downLeft[flow.dst] ?? 0) / (downCount[flow.dst] ?? 1),
        );
      }
      for (let f = 0; f < flows.length; f++) {
        if (frozen[f] === 1) continue;
        const flow = flows[f] as FlowEnds;
        const inc = increments[f] ?? 0;
        flow.rate += inc;
        upLeft[flow.src] = (upLeft[flow.src] ?? 0) - inc;
        downLeft[flow.dst] = (downLeft[flow.dst] ?? 0) - inc;
      }
      for (let f = 0; f < flows.length; f++) {
        if (frozen[f] === 1) continue;
        const flow = flows[f] as FlowEnds;
        if (usedUp(upLeft[flow.src] ?? 0, up[flow.src] ?? 0) || usedUp(downLeft[flow.dst] ?? 0, down[flow.dst] ?? 0)) {
          frozen[f] = 1;
          active--;
        }
      }
    }
  }
}

function usedUp(left: number, capacity: number): boolean {
  return Number.isFinite(capacity) && left <= SATURATED * capacity;
}
