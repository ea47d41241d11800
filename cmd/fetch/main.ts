import { PullError, pullImage } from "../../pkg/client/index.js";
import type { Descriptor } from "../../pkg/oci/index.js";
import { ConfigError, formatHelp, parseOptions } from "../../pkg/config/index.js";
import { OciError, isIndexMediaType } from "../../pkg/oci/index.js";
import { ProgressView, formatMB } from "../shoal/progress-view.js";
import { LayoutWriter, type LayoutDescriptor, REF_NAME_ANNOTATION } from "./layout-writer.js";
import { type FetchOptions, fetchOptionSpecs } from "./options.js";
import { type ImageReference, formatImageReference, parseImageReference } from "../../pkg/oci/index.js";

const USAGE = "shoal fetch REF --to DIR [flags]";
const SUMMARY = [
  "Pulls an OCI artifact (an image, or any artifact: a model, a build, a bundle) through the node's Shoal agent",
  "into DIR as an OCI image layout (oci-layout, index.json, blobs/sha256/…), verifying every digest. REF is",
  "[REGISTRY/]REPOSITORY[:TAG][@DIGEST]; the agent must mirror REGISTRY. Made for init containers.",
].join("\n");
const EXIT_SIGINT = 130;
/** Connection-level failures (Node's and undici's codes): the agent, not the artifact, is the problem. */
const NETWORK_ERROR_CODES = /^(ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|UND_ERR_CONNECT_TIMEOUT)$/;
/** The agent was reached but went quiet or dropped the connection mid-transfer. */
const STALL_ERROR_CODES = /^(ECONNRESET|EPIPE|UND_ERR_SOCKET|UND_ERR_HEADERS_TIMEOUT|UND_ERR_BODY_TIMEOUT)$/;

/** `shoal fetch`. Returns the exit code: 0 done, 1 failed, 2 bad usage, 130 interrupted. */
export async function fetchMain(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  let options: FetchOptions;
  let ref: ImageReference;
  let to: string;
  try {
    const parsed = parseOptions(fetchOptionSpecs, argv, env);
    if (parsed.help) {
      console.log(formatHelp(USAGE, SUMMARY, fetchOptionSpecs));
      return 0;
    }
    options = parsed.options;
    const [raw, ...extra] = parsed.positionals;
    if (raw === undefined) throw new ConfigError("ERR_CONFIG_MISSING_VALUE", `expected a reference: ${USAGE}`);
    if (extra.length > 0) throw new ConfigError("ERR_CONFIG_UNKNOWN_FLAG", `unexpected argument ${JSON.stringify(extra[0])}`);
    if (options.to === undefined)
      throw new ConfigError("ERR_CONFIG_MISSING_VALUE", "--to DIR (SHOAL_TO) is required: the directory to write the layout into");
    to = options.to;
    try {
      ref = parseImageReference(raw);
    } catch (error) {
      throw new Error(`invalid reference ${JSON.stringify(raw)}: ${error instanceof Error ? error.message : String(error)}`, {
        cause: error,
      });
    }
  } catch (error) {
    console.error(`shoal fetch: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }

  const controller = new AbortController();
  const onSignal = (): void => {
    controller.abort(new Error("interrupted"));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const signal = AbortSignal.any([controller.signal, AbortSignal.timeout(options.timeout)]);
  let writer: LayoutWriter | undefined;
  const name = formatImageReference(ref);
  const view = new ProgressView(process.stderr, [name], 0, false);
  try {
    writer = await LayoutWriter.open(to);
    const layout = writer;
    const manifests: { descriptor: Descriptor; body: Buffer }[] = [];
    const received = new Map<string, number>();
    let receivedTotal = 0;
    const result = await pullImage({
      baseUrl: options.agent,
      ns: ref.registry,
      name: ref.repository,
      reference: ref.digest ?? ref.tag ?? "latest",
      ...(options.platform ? { platform: options.platform } : {}),
      signal,
      sink: (descriptor) => layout.blobSink(descriptor.digest),
      onManifest: (descriptor, body) => {
        manifests.push({ descriptor, body });
        if (!isIndexMediaType(descriptor.mediaType)) view.setTotal(0, blobBytes(body));
      },
      onProgress: (descriptor, bytes) => {
        receivedTotal += bytes - (received.get(descriptor.digest) ?? 0);
        received.set(descriptor.digest, bytes);
        view.update(0, receivedTotal);
      },
    });
    view.complete(0);
    view.stop();
    const manifest = manifests.at(-1);
    if (manifest === undefined) throw new Error("the pull returned no manifest");
    await writer.writeBlob(manifest.descriptor.digest, manifest.body);
    await writer.addToIndex(indexEntry(manifest, manifests.length > 1 ? manifests[0] : undefined, ref));
    const blobs = result.descriptors.length - manifests.length;
    console.log(
      `fetched ${name} (${manifest.descriptor.digest}) into ${to}: manifest and ${blobs} blob${blobs === 1 ? "" : "s"}, ${formatMB(result.bytes)} in ${result.seconds.toFixed(1)} s, every digest verified`,
    );
    return 0;
  } catch (error) {
    view.fail(0);
    view.stop();
    if (controller.signal.aborted) return EXIT_SIGINT;
    console.error(`shoal fetch: ${describeFailure(error, ref, options, signal)}`);
    return 1;
  } finally {
    await writer?.close().catch(() => undefined);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/** Sum of config and layer sizes of a manifest: the progress total. */
function blobBytes(body: Buffer): number {
  try {
    const manifest = JSON.parse(body.toString("utf8")) as { config?: { size?: unknown }; layers?: { size?: unknown }[] };
    const sizes = [manifest.config, ...(Array.isArray(manifest.layers) ? manifest.layers : [])].map((d) =>
      typeof d?.size === "number" ? d.size : 0,
    );
    return sizes.reduce((sum, size) => sum + size, 0);
  } catch {
    return 0; // pullImage reports an unusable manifest itself
  }
}

/**
 * The index.json entry: the manifest that was fetched (for a multi-platform image, the chosen
 * platform's manifest with its `platform`, so the layout holds everything it names), the tag as
 * `org.opencontainers.image.ref.name`, and the artifact type when the manifest declares one.
 */
function indexEntry(
  manifest: { descriptor: Descriptor; body: Buffer },
  index: { body: Buffer } | undefined,
  ref: ImageReference,
): LayoutDescriptor {
  const parsed = JSON.parse(manifest.body.toString("utf8")) as { artifactType?: unknown };
  let platform: Record<string, unknown> | undefined;
  if (index !== undefined) {
    const entries = (JSON.parse(index.body.toString("utf8")) as { manifests?: { digest?: unknown; platform?: unknown }[] }).manifests ?? [];
    const chosen = entries.find((e) => e.digest === manifest.descriptor.digest)?.platform;
    if (typeof chosen === "object" && chosen !== null) platform = chosen as Record<string, unknown>;
  }
  return {
    mediaType: manifest.descriptor.mediaType,
    digest: manifest.descriptor.digest,
    size: manifest.descriptor.size,
    ...(typeof parsed.artifactType === "string" ? { artifactType: parsed.artifactType } : {}),
    ...(platform ? { platform } : {}),
    ...(ref.tag !== undefined ? { annotations: { [REF_NAME_ANNOTATION]: ref.tag } } : {}),
  };
}

/** One line a person can act on: which part failed and what to check; never a stack trace. */
function describeFailure(error: unknown, ref: ImageReference, options: FetchOptions, signal: AbortSignal): string {
  if (signal.aborted) return `gave up after ${(options.timeout / 1000).toFixed(0)} s (--timeout)`;
  const what = formatImageReference(ref);
  if (error instanceof PullError) {
    if (error.code === "ERR_PULL_STATUS" && / HTTP 404 /.test(error.message)) {
      return `${what}: not found through the agent at ${options.agent} (does the agent mirror ${ref.registry}? does the tag or digest exist?): ${error.message}`;
    }
    return `${what}: ${error.message}`;
  }
  if (error instanceof OciError) return `${what}: ${error.message}`;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && NETWORK_ERROR_CODES.test(code))
    return `cannot reach the agent at ${options.agent} (${code}): is it running, and is --agent right?`;
  if (typeof code === "string" && STALL_ERROR_CODES.test(code))
    return `the agent at ${options.agent} stopped answering (${code}) while fetching ${what}`;
  return error instanceof Error ? error.message : String(error);
}
