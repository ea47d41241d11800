import type { ApiObject } from "../../k8s/testing/index.js";
import {
  type Digest,
  MEDIA_TYPE_OCI_CONFIG,
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_LAYER,
  MEDIA_TYPE_OCI_MANIFEST,
  digestOf,
} from "../../oci/index.js";
import type { FakeUpstream } from "../../registry/testing/fake-upstream.js";
import type { Condition, ImagePrefetchStatus } from "../prefetch-types.js";
import { type ClusterAgent } from "./cluster-agent.js";
import type { TestCluster } from "./test-cluster.js";

/** Where the tests' ImagePrefetches live: not the controller's namespace, as in a real cluster. */
export const APPS = "apps";
export const REPO = "team/app";

export interface TestImage {
  /** `HOST/team/app:TAG` */
  readonly ref: string;
  readonly digest: Digest;
  readonly manifestDigests: readonly Digest[];
  readonly blobs: readonly { readonly digest: Digest; readonly size: number }[];
  readonly blobBytes: number;
}

/** An image on the fake origin: a manifest (or an index of two platforms) with a config and layers. */
export async function addImage(
  origin: FakeUpstream,
  seed: string,
  layerSizes: readonly number[],
  tag: string,
  options: { index?: boolean } = {},
): Promise<TestImage> {
  const config = await origin.addBlob(Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", seed })));
  const layers = [];
  for (const [i, size] of layerSizes.entries()) layers.push(await origin.addBlob({ size, seed: `${seed}-layer-${i}` }));
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_OCI_MANIFEST,
    config: { mediaType: MEDIA_TYPE_OCI_CONFIG, ...config },
    layers: layers.map((l) => ({ mediaType: MEDIA_TYPE_OCI_LAYER, ...l })),
  };
  const blobs = [config, ...layers];
  const blobBytes = blobs.reduce((n, b) => n + b.size, 0);
  if (options.index !== true) {
    const added = origin.addManifest(REPO, tag, manifest, MEDIA_TYPE_OCI_MANIFEST);
    return { ref: `${origin.host}/${REPO}:${tag}`, digest: added.digest, manifestDigests: [added.digest], blobs, blobBytes };
  }
  const amd = origin.addManifest(REPO, undefined, manifest, MEDIA_TYPE_OCI_MANIFEST);
  const armConfig = await origin.addBlob(Buffer.from(JSON.stringify({ architecture: "arm64", os: "linux", seed })));
  const arm = origin.addManifest(
    REPO,
    undefined,
    { ...manifest, config: { mediaType: MEDIA_TYPE_OCI_CONFIG, ...armConfig } },
    MEDIA_TYPE_OCI_MANIFEST,
  );
  const index = origin.addManifest(
    REPO,
    tag,
    {
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_OCI_INDEX,
      manifests: [
        { mediaType: MEDIA_TYPE_OCI_MANIFEST, ...amd, platform: { os: "linux", architecture: "amd64" } },
        { mediaType: MEDIA_TYPE_OCI_MANIFEST, ...arm, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
      ],
    },
    MEDIA_TYPE_OCI_INDEX,
  );
  return { ref: `${origin.host}/${REPO}:${tag}`, digest: index.digest, manifestDigests: [index.digest, amd.digest], blobs, blobBytes };
}

export function prefetchObject(name: string, spec: object): ApiObject {
  return { apiVersion: "shoal.dev/v1alpha1", kind: "ImagePrefetch", metadata: { name, namespace: APPS }, spec };
}

export function statusOf(cluster: TestCluster, name: string): ImagePrefetchStatus {
  return cluster.api.object("imageprefetches", APPS, name)?.status ?? {};
}

export function conditionOf(status: ImagePrefetchStatus, type: Condition["type"]): Condition | undefined {
  return status.conditions?.find((c) => c.type === type);
}

/** Events about one ImagePrefetch, oldest first, as `reason: message`. */
export function prefetchEvents(cluster: TestCluster, name: string): { type: string; reason: string; message: string }[] {
  return cluster.api
    .events(APPS)
    .filter(
      (e) =>
        (e.involvedObject as { kind?: string; name?: string }).kind === "ImagePrefetch" &&
        (e.involvedObject as { name?: string }).name === name,
    )
    .map((e) => ({ type: String(e.type), reason: String(e.reason), message: String(e.message) }));
}

/** Whether the agent's store holds every manifest and blob of the image. */
export async function holdsImage(agent: ClusterAgent, image: TestImage): Promise<boolean> {
  for (const digest of [...image.manifestDigests, ...image.blobs.map((b) => b.digest)])
    if ((await agent.store.stat(digest)) === undefined) return false;
  return true;
}

export const DOCKER_CONFIG = (registry: string, username: string, password: string): string =>
  JSON.stringify({ auths: { [registry]: { auth: Buffer.from(`${username}:${password}`).toString("base64") } } });

/** The digest the manifest of `body` has (for tests that add raw manifests). */
export function manifestDigest(body: object): Digest {
  return digestOf(JSON.stringify(body));
}
