// Pulls one image with containerd on several nodes from a common start, timing each node.
import { setTimeout as delay } from "node:timers/promises";
import type { Containerd } from "../support/containerd.js";
import { describeError } from "../support/process.js";
import type { ClusterNode } from "./cluster.js";
import type { NetnsTopology } from "./topology.js";

export interface NodePullResult {
  readonly node: string;
  /** From the common start until `ctr images pull` or CRI PullImage returned (fetched, verified, unpacked). */
  readonly seconds: number;
  /** The image's digest as containerd recorded it; undefined if the pull failed. */
  readonly digest: string | undefined;
  readonly error: string | undefined;
}

export interface PullRoundOptions {
  /** `--plain-http` and no mirror: straight from the registry in the reference. */
  readonly direct?: boolean;
  /** An empty hosts dir, for direct pulls (containerd's own one may hold a mirror). */
  readonly directHostsDir?: string;
  /**
   * Pull as the kubelet does, through the CRI plugin (containerds started with `cri`): the daemon fetches
   * itself. Its hosts dir decides mirror or direct (`direct` and `directHostsDir` are ctr's).
   */
  readonly cri?: boolean;
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** Called as each node finishes (successfully or not), in finishing order. */
  readonly onFinished?: (result: NodePullResult) => void | Promise<void>;
}

/** Pulls `ref` on every given node at once; never throws for a failed pull, reports it instead. */
export async function pullRound(nodes: readonly ClusterNode[], ref: string, options: PullRoundOptions): Promise<NodePullResult[]> {
  const start = performance.now();
  return Promise.all(
    nodes.map(async (node): Promise<NodePullResult> => {
      const result = await pullOne(node, ref, start, options);
      await options.onFinished?.(result);
      return result;
    }),
  );
}

async function pullOne(node: ClusterNode, ref: string, start: number, options: PullRoundOptions): Promise<NodePullResult> {
  const name = node.endpoint.name;
  const containerd = node.containerd;
  if (containerd === undefined) return { node: name, seconds: 0, digest: undefined, error: "no containerd" };
  try {
    if (options.cri === true) {
      await containerd.criPull(ref, { timeoutMs: options.timeoutMs, signal: options.signal });
    } else {
      await containerd.pull(ref, {
        plainHttp: options.direct === true,
        hostsDir: options.direct === true ? options.directHostsDir : undefined,
        timeoutMs: options.timeoutMs,
        signal: options.signal,
      });
    }
    const seconds = (performance.now() - start) / 1000;
    return { node: name, seconds, digest: await imageDigest(containerd, ref, options.signal), error: undefined };
  } catch (error) {
    return { node: name, seconds: (performance.now() - start) / 1000, digest: undefined, error: describeError(error) };
  }
}

/** The digest containerd recorded for `ref` (it verified every blob against it while pulling). */
export async function imageDigest(containerd: Containerd, ref: string, signal?: AbortSignal): Promise<string | undefined> {
  return (await containerd.listImages({ signal })).find((image) => image.ref === ref)?.digest;
}

/** Polls the nodes' received bytes (kernel counters) until they reach `bytes` above `baseline`. */
export async function waitForNodesReceived(
  topology: NetnsTopology,
  baseline: readonly { rx: number }[],
  bytes: number,
  options: { readonly timeoutMs: number; readonly intervalMs?: number; readonly signal?: AbortSignal },
): Promise<{ tx: number; rx: number }[]> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    const now = await topology.nodeCounters(options.signal);
    const received = now.reduce((sum, c, i) => sum + c.rx - (baseline[i]?.rx ?? 0), 0);
    if (received >= bytes || Date.now() >= deadline) return now;
    await delay(options.intervalMs ?? 100, undefined, { signal: options.signal });
  }
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return 0;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}
