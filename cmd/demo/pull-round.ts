import { Writable } from "node:stream";
import { pullImage } from "../../pkg/client/index.js";
import { TokenBucket } from "../../pkg/throttle/index.js";
import { type ProgressView, formatMB } from "../shoal/progress-view.js";

export interface PullTarget {
  readonly name: string;
  /** The node's agent mirror, or the origin itself for client-server pulls. */
  readonly baseUrl: string;
  /** `?ns=` as containerd sends it to a mirror; none when pulling from the registry itself. */
  readonly ns?: string;
}

export interface PullRoundOptions {
  readonly targets: readonly PullTarget[];
  readonly repository: string;
  readonly reference: string;
  /** Per node; 0 = uncapped. */
  readonly downloadBytesPerSecond: number;
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
  readonly view?: ProgressView;
}

export interface PullOutcome {
  readonly name: string;
  /** From the common start of the round. */
  readonly seconds: number;
  readonly bytes: number;
  readonly digestsVerified: number;
}

/**
 * Every target pulls the image at the same moment, as containerd does (manifest, config, layers;
 * every digest verified). Each node's puller drains its responses through its own token bucket: that
 * is the node's downlink (d). It caps what the node *receives*; the agent's uploads to other agents
 * are capped by the agent itself (--upload-rate), the origin's egress by the origin.
 * The first failure, or the timeout, stops the whole round with an error naming the node.
 */
export async function pullRound(options: PullRoundOptions): Promise<PullOutcome[]> {
  const round = new AbortController();
  const timeout = AbortSignal.timeout(options.timeoutMs);
  const signal = AbortSignal.any([options.signal, timeout, round.signal]);
  const started = performance.now();
  const received = options.targets.map(() => 0);
  try {
    return await Promise.all(
      options.targets.map(async (target, i): Promise<PullOutcome> => {
        const bucket = options.downloadBytesPerSecond > 0 ? new TokenBucket(options.downloadBytesPerSecond) : undefined;
        try {
          const result = await pullImage({
            baseUrl: target.baseUrl,
            ...(target.ns === undefined ? {} : { ns: target.ns }),
            name: options.repository,
            reference: options.reference,
            signal,
            sink: () =>
              new Writable({
                write(chunk: Buffer, _encoding, callback) {
                  const counted = (): void => {
                    received[i] = (received[i] ?? 0) + chunk.length;
                    options.view?.update(i, received[i]);
                    callback();
                  };
                  if (bucket === undefined) counted();
                  else bucket.take(chunk.length, signal).then(counted, callback);
                },
              }),
          });
          options.view?.complete(i);
          return {
            name: target.name,
            seconds: (performance.now() - started) / 1000,
            bytes: result.bytes,
            digestsVerified: result.descriptors.length,
          };
        } catch (error) {
          options.view?.fail(i);
          round.abort(error);
          if (options.signal.aborted) throw options.signal.reason;
          if (timeout.aborted) {
            throw new Error(
              `${target.name} did not finish within ${(options.timeoutMs / 1000).toFixed(0)} s (it had received ${formatMB(received[i] ?? 0)}); see --timeout`,
            );
          }
          throw new Error(`${target.name}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
        }
      }),
    );
  } finally {
    options.view?.stop();
  }
}
