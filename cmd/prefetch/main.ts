import { setTimeout as sleep } from "node:timers/promises";
import { CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import { ConfigError, formatHelp, parseOptions } from "../../pkg/config/index.js";
import {
  type ImagePrefetchObject,
  type ImagePrefetchStatus,
  InvalidSpec,
  PREFETCH_API_VERSION,
  PREFETCH_GROUP,
  PREFETCH_KIND,
  PREFETCH_PLURAL,
  PREFETCH_VERSION,
  parsePrefetchSpec,
} from "../../pkg/controller/index.js";
import { loadKubeConfig, toK8sError, withSignal } from "../../pkg/k8s/index.js";
import { type PrefetchCliOptions, prefetchOptionSpecs } from "./options.js";

const USAGE = "shoal prefetch REF... [--seeds-per-zone N | --node-selector k=v] [flags]";
const SUMMARY = [
  "Creates an ImagePrefetch (shoal.dev/v1alpha1): the Shoal controller resolves each REF once, has N agents per",
  "zone (or every agent on matching nodes) fetch the images into their stores through the swarm, and reports",
  "progress in the resource's status. Run it before a rollout; the rollout's pulls then stay inside each zone.",
  "REF is [REGISTRY/]REPOSITORY[:TAG][@DIGEST]; the agents must mirror REGISTRY.",
].join("\n");
/** The object as this command sends it: plain JSON, not client-node's model classes. */
interface NewImagePrefetch {
  readonly apiVersion: string;
  readonly kind: string;
  metadata: { readonly name?: string; readonly generateName?: string; readonly namespace?: string };
  readonly spec: object;
}

/** How often --wait reads the resource. */
const POLL_INTERVAL_MS = 1_000;
const REQUEST_TIMEOUT_MS = 30_000;

/** `shoal prefetch`. Returns the exit code: 0 created (and Ready with --wait), 1 failed, 2 bad usage. */
export async function prefetchMain(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  let options: PrefetchCliOptions;
  let object: NewImagePrefetch;
  try {
    const parsed = parseOptions(prefetchOptionSpecs, argv, env);
    if (parsed.help) {
      console.log(formatHelp(USAGE, SUMMARY, prefetchOptionSpecs));
      return 0;
    }
    options = parsed.options;
    if (parsed.positionals.length === 0)
      throw new ConfigError("ERR_CONFIG_MISSING_VALUE", `expected at least one image reference: ${USAGE}`);
    object = prefetchObject(parsed.positionals, options);
  } catch (error: unknown) {
    console.error(`shoal prefetch: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }
  let kubeConfig: KubeConfig;
  try {
    kubeConfig = loadKubeConfig(options.kubeconfig === undefined ? { defaultLocations: true } : { file: options.kubeconfig });
  } catch (error: unknown) {
    console.error(`shoal prefetch: --kubeconfig: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }
  const namespace = options.namespace ?? kubeConfig.getContextObject(kubeConfig.getCurrentContext())?.namespace ?? "default";
  object.metadata = { ...object.metadata, namespace };
  if (options.dryRun) {
    console.log(JSON.stringify(object, null, 2));
    return 0;
  }
  const api = kubeConfig.makeApiClient(CustomObjectsApi);
  let name: string;
  try {
    const created = (await api.createNamespacedCustomObject(
      { group: PREFETCH_GROUP, version: PREFETCH_VERSION, plural: PREFETCH_PLURAL, namespace, body: object },
      withSignal(AbortSignal.timeout(REQUEST_TIMEOUT_MS)),
    )) as ImagePrefetchObject;
    name = created.metadata?.name ?? "";
  } catch (error: unknown) {
    console.error(`shoal prefetch: ${toK8sError(error, `create ImagePrefetch in namespace ${namespace}`).message}`);
    return 1;
  }
  console.log(`imageprefetch.${PREFETCH_GROUP}/${name} created in namespace ${namespace}`);
  if (!options.wait) return 0;
  return await waitForOutcome(api, namespace, name, options.timeout);
}

/** The resource the flags describe; its spec is checked here with the controller's own rules. */
export function prefetchObject(refs: readonly string[], options: PrefetchCliOptions): NewImagePrefetch {
  if (options.nodeSelector !== undefined && (options.seedsPerZone !== undefined || options.zones !== undefined)) {
    throw new ConfigError("ERR_CONFIG_INVALID_VALUE", "--node-selector cannot be combined with --seeds-per-zone or --zones");
  }
  const target =
    options.nodeSelector !== undefined
      ? { nodeSelector: options.nodeSelector }
      : { seedsPerZone: options.seedsPerZone ?? 1, ...(options.zones === undefined ? {} : { zones: options.zones }) };
  const spec = {
    images: [...refs],
    ...(options.platform.length === 0 ? {} : { platforms: options.platform }),
    target,
    ...(options.pullSecret.length === 0 ? {} : { pullSecrets: options.pullSecret }),
    ...(options.startAt === undefined ? {} : { schedule: { startAt: options.startAt } }),
    ...(options.ttl === undefined ? {} : { ttl: options.ttl }),
  };
  try {
    parsePrefetchSpec(spec);
  } catch (error: unknown) {
    if (!(error instanceof InvalidSpec)) throw error;
    // Messages name spec fields; say which flag or argument they come from.
    const message = error.message
      .replace(/^spec\.images\[(\d+)\]/, (_, i: string) => `argument ${Number(i) + 1}`)
      .replace(/^spec\.platforms/, "--platform");
    throw new ConfigError("ERR_CONFIG_INVALID_VALUE", message);
  }
  return {
    apiVersion: PREFETCH_API_VERSION,
    kind: PREFETCH_KIND,
    metadata: options.name === undefined ? { generateName: "prefetch-" } : { name: options.name },
    spec,
  };
}

/** Polls the resource until Ready (0), Failed or gone or the timeout (1), printing each change of progress. */
async function waitForOutcome(api: CustomObjectsApi, namespace: string, name: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    let status: ImagePrefetchStatus | undefined;
    try {
      const object = (await api.getNamespacedCustomObject(
        { group: PREFETCH_GROUP, version: PREFETCH_VERSION, plural: PREFETCH_PLURAL, namespace, name },
        withSignal(AbortSignal.timeout(REQUEST_TIMEOUT_MS)),
      )) as ImagePrefetchObject;
      status = object.status;
    } catch (error: unknown) {
      const failure = toK8sError(error, `get ImagePrefetch ${namespace}/${name}`);
      if (failure.status?.code === 404) {
        console.error(`shoal prefetch: ImagePrefetch ${namespace}/${name} was deleted`);
        return 1;
      }
      console.error(`shoal prefetch: ${failure.message}; retrying`);
    }
    const ready = status?.conditions?.find((c) => c.type === "Ready");
    const failed = status?.conditions?.find((c) => c.type === "Failed" && c.status === "True");
    const line = `${name}: ${ready?.reason ?? "Pending"} ${status?.progress ?? "0/0"}${(status?.zones ?? []).map((z) => ` ${z.zone === "" ? "(no zone)" : z.zone} ${z.seeded}/${z.target}`).join(",")}`;
    if (line !== last) console.log(line);
    last = line;
    if (ready?.status === "True") {
      const seconds =
        status?.readyTime !== undefined && status.startTime !== undefined
          ? (Date.parse(status.readyTime) - Date.parse(status.startTime)) / 1000
          : undefined;
      console.log(`${name}: Ready${seconds === undefined ? "" : ` after ${seconds.toFixed(0)} s`}; ${ready.message}`);
      return 0;
    }
    if (failed !== undefined) {
      console.error(`shoal prefetch: ${name} failed: ${failed.reason}: ${failed.message}`);
      return 1;
    }
    if (Date.now() >= deadline) {
      console.error(`shoal prefetch: ${name} not Ready after --timeout; last: ${ready?.reason ?? "no status"}: ${ready?.message ?? ""}`);
      return 1;
    }
    await sleep(POLL_INTERVAL_MS);
  }
}
