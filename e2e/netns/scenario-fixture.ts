// Shared set-up of the netns scenario tests: a small cluster (CI sizes) and a generated image on the origin.
import assert from "node:assert/strict";
import { join } from "node:path";
import { type GeneratedImageLayout, generateImageLayout } from "../../pkg/imagegen/index.js";
import { makeTempDir, removeTempDir } from "../support/process.js";
import { type ClusterNode, type ClusterOptions, NetnsCluster } from "./cluster.js";
import { type NodePullResult } from "./pull-round.js";
import { namespacesWithPrefix } from "./topology.js";

/** A positive integer from the environment (figures at full size), else the CI size. */
function sizeFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return value;
}

/** SHOAL_E2E_SCENARIO_NODES and SHOAL_E2E_SCENARIO_MIB run the scenarios at other sizes (for figures). */
export const SCENARIO_NODES = sizeFromEnv("SHOAL_E2E_SCENARIO_NODES", 4);
export const SCENARIO_IMAGE_BYTES = sizeFromEnv("SHOAL_E2E_SCENARIO_MIB", 32) * 1024 * 1024;
export const SCENARIO_LAYERS = 3;
/** Node links (up and down) and the origin's egress. */
export const SCENARIO_LINK_BYTES_PER_SECOND = 300e6 / 8;
/** Generous against the ~1 s bound: 2 shared cores, 4 containerds, 4 agents. */
export const SCENARIO_PULL_TIMEOUT_MS = 120_000;
/** Origin egress allowed per image distributed (kernel counter: payload plus ~0.2% headers). */
export const ORIGIN_COPIES_LIMIT = 1.05;

/** Why the suite cannot run here, or false. */
export const skipReason: string | false =
  process.platform !== "linux" ? "network namespaces need Linux" : process.getuid?.() !== 0 ? "network namespaces need root" : false;

export interface Scenario {
  readonly cluster: NetnsCluster;
  readonly layout: GeneratedImageLayout;
  /** `HOST:PORT/netns/app:TAG` on the origin. */
  readonly ref: string;
  /** F: manifest + config + layers, what one node pulls. */
  readonly imageBytes: number;
  /** Stops everything, then checks nothing with the run's prefix is left. */
  readonly teardown: () => Promise<void>;
}

export async function startScenario(tag: string, options: Partial<ClusterOptions> = {}): Promise<Scenario> {
  const work = await makeTempDir("netns-image");
  let cluster: NetnsCluster | undefined;
  try {
    cluster = await NetnsCluster.start({
      nodes: SCENARIO_NODES,
      nodeUploadBytesPerSecond: SCENARIO_LINK_BYTES_PER_SECOND,
      nodeDownloadBytesPerSecond: SCENARIO_LINK_BYTES_PER_SECOND,
      originBytesPerSecond: SCENARIO_LINK_BYTES_PER_SECOND,
      ...options,
    });
    const layout = await generateImageLayout({
      dir: join(work, tag),
      seed: `e2e-netns-${tag}`,
      layers: SCENARIO_LAYERS,
      totalBytes: SCENARIO_IMAGE_BYTES,
      tag,
    });
    const ref = await cluster.pushImage(layout, "netns/app");
    await removeTempDir(work);
    for (const node of cluster.nodes) await cluster.useAgentMirror(node);
    const image = layout.images[0];
    assert.ok(image, "the generated layout has an image");
    const owned = cluster;
    return {
      cluster: owned,
      layout,
      ref,
      imageBytes: image.imageBytes,
      teardown: async () => {
        await owned.destroy();
        assert.deepEqual(await namespacesWithPrefix(owned.topology.prefix), [], "no namespace of this run is left");
      },
    };
  } catch (error) {
    await cluster?.destroy().catch(() => undefined);
    await removeTempDir(work);
    throw error;
  }
}

/**
 * The origin's interface sent the image at least once (less means the counter is wrong) and at most
 * ORIGIN_COPIES_LIMIT times: `sent` bytes for an image of `imageBytes`.
 */
export function assertOriginSentAboutOnce(sent: number, imageBytes: number): void {
  assert.ok(sent >= imageBytes, `the origin sent ${sent} bytes, less than the ${imageBytes}-byte image: the counter is wrong`);
  assert.ok(
    sent <= ORIGIN_COPIES_LIMIT * imageBytes,
    `the origin sent ${(sent / imageBytes).toFixed(3)} × F (${sent} bytes for F = ${imageBytes})`,
  );
}

/** Every result succeeded with the expected digest (containerd verified each blob on the way in). */
export function assertAllPulled(results: readonly NodePullResult[], digest: string): void {
  for (const r of results) {
    assert.equal(r.error, undefined, `${r.node}: ${r.error ?? ""}`);
    assert.equal(r.digest, digest, `${r.node} has the image`);
  }
}

export function nodesExcept(nodes: readonly ClusterNode[], ...excluded: readonly (ClusterNode | undefined)[]): ClusterNode[] {
  return nodes.filter((n) => !excluded.includes(n));
}
