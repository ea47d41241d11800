// The Helm chart's values.schema.json, generated from the option specs the CLI validates with, so
// `helm install` rejects what `shoal agent` / `shoal controller` would reject: unknown option names
// (typos) and values of the wrong kind. Run as a script it prints the schema, or with --write
// replaces charts/shoal/values.schema.json (`npm run chart:schema`).
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import {
  type OptionSpec,
  type OptionSpecs,
  envName,
  parseBytes,
  parseDuration,
  parseFraction,
  parseHostPort,
} from "../../pkg/config/index.js";
import { agentOptionSpecs } from "../agent/options.js";
import { controllerOptionSpecs } from "../controller/options.js";

export type JsonSchema = Readonly<Record<string, unknown>>;

/** The chart's schema file, relative to this module in dist/cmd/shoal/ (and to its source). */
export const VALUES_SCHEMA_PATH = fileURLToPath(new URL("../../../charts/shoal/values.schema.json", import.meta.url));

/** pkg/config's parseDuration grammar: `500ms`, `10s`, `1m30s`. */
export const DURATION_PATTERN = "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$";
/** pkg/config's parseBytes grammar: a number and an optional unit (k, KB, KiB, Gi, mbit…, any case). */
export const SIZE_PATTERN = "^[0-9]+(\\.[0-9]+)?\\s*([bB]|[kKmMgGtT]([iI]?[bB]?|[bB][iI][tT]))?$";
/** pkg/config's parseHostPort grammar: `HOST:PORT`, `[IPv6]:PORT`, `:PORT`. */
export const HOST_PORT_PATTERN = "^(\\[[0-9a-fA-F:.]+\\]|[^:\\[\\]]*):[0-9]{1,5}$";

/** Schemas of values parsed by pkg/config's shared parsers, recognised by identity. */
const PARSER_SCHEMAS = new Map<unknown, JsonSchema>([
  [parseDuration, { type: "string", pattern: DURATION_PATTERN }],
  [parseBytes, { type: ["string", "integer"], pattern: SIZE_PATTERN, minimum: 0 }],
  [parseHostPort, { type: "string", pattern: HOST_PORT_PATTERN }],
  [parseFraction, { type: "number", exclusiveMinimum: 0, maximum: 1 }],
]);

/** The value of one option in a `*.config` map: what its parser accepts, as far as JSON schema can say. */
export function optionSchema(spec: OptionSpec<unknown>): JsonSchema {
  let value: JsonSchema;
  if (spec.boolean === true || spec.schemaType === "boolean") value = { type: "boolean" };
  else if (spec.schemaEnum !== undefined) value = { type: "string", enum: [...spec.schemaEnum] };
  else if (spec.schemaPattern !== undefined) value = { type: "string", pattern: spec.schemaPattern };
  else if (spec.schemaType !== undefined) value = { type: spec.schemaType };
  else value = PARSER_SCHEMAS.get(spec.parse) ?? { type: "string" };
  const defaultText = spec.default !== undefined && spec.default !== "" ? `; default ${spec.default}` : "";
  const description = `${spec.description} (--${spec.name}, ${envName(spec.name)}${defaultText})`;
  if (spec.repeatable === true) return { description, type: "array", items: value };
  return { description, ...value };
}

/** A `*.config` map: exactly the options of one command, keyed by flag name; anything else is a typo. */
export function optionsSchema(specs: OptionSpecs, description: string): JsonSchema {
  const properties: Record<string, JsonSchema> = {};
  for (const spec of Object.values(specs).sort((a, b) => a.name.localeCompare(b.name))) properties[spec.name] = optionSchema(spec);
  return { type: "object", description, additionalProperties: false, properties };
}

export interface ComponentSpecs {
  readonly agent: OptionSpecs;
  readonly controller: OptionSpecs;
  /** `shoal configure`'s specs; absent until that command exists (agent.configure.config must then be empty). */
  readonly configure?: OptionSpecs;
}

const str = (description: string, extra: JsonSchema = {}): JsonSchema => ({ type: "string", description, ...extra });
const bool = (description: string): JsonSchema => ({ type: "boolean", description });
const int = (description: string, minimum = 0): JsonSchema => ({ type: "integer", minimum, description });
const port = (description: string): JsonSchema => ({ type: "integer", minimum: 1, maximum: 65535, description });
const duration = (description: string): JsonSchema => str(description, { pattern: DURATION_PATTERN });
/** Kubernetes objects handed through as they are (resources, affinity…): the API server validates them. */
const k8s = (description: string): JsonSchema => ({ type: "object", description });
const k8sList = (description: string): JsonSchema => ({ type: "array", items: { type: "object" }, description });
const labels = (description: string): JsonSchema => ({ type: "object", additionalProperties: { type: "string" }, description });
const obj = (description: string, properties: Record<string, JsonSchema>): JsonSchema => ({
  type: "object",
  description,
  additionalProperties: false,
  // values.yaml sets every key, so a missing one means the chart and this schema disagree.
  required: Object.keys(properties),
  properties,
});
const probe = (description: string): JsonSchema =>
  obj(description, { periodSeconds: int("Seconds between probes.", 1), failureThreshold: int("Failures in a row that count.", 1) });
const serviceAccount = (description: string): JsonSchema =>
  obj(description, {
    create: bool("Create the ServiceAccount."),
    name: str("Its name; empty means the chart's."),
    annotations: labels("Its annotations."),
  });
const monitor = (kind: string): JsonSchema =>
  obj(`A prometheus-operator ${kind}.`, {
    enabled: bool(`Create the ${kind}.`),
    labels: labels(`Labels of the ${kind}; kube-prometheus-stack selects by its release label (release: <its Helm release>).`),
    namespace: str("Its namespace; empty means the release namespace."),
    interval: duration("Scrape interval."),
    scrapeTimeout: str("Scrape timeout; empty means Prometheus' default.", { pattern: `^$|${DURATION_PATTERN}` }),
  });

/** The whole values.schema.json. Keys of values.yaml outside `*.config` are described here by hand. */
export function buildValuesSchema(specs: ComponentSpecs): JsonSchema {
  const configureConfig =
    specs.configure !== undefined
      ? optionsSchema(specs.configure, "Further `shoal configure` options by flag name.")
      : {
          type: "object",
          description: "Further `shoal configure` options (none until that command exists).",
          additionalProperties: false,
          properties: {},
        };
  return {
    $schema: "http://json-schema.org/draft-07/schema#",
    title: "Values of the shoal Helm chart",
    description: "Generated by cmd/shoal/values-schema.ts from the CLI's option specs (npm run chart:schema); do not edit.",
    type: "object",
    additionalProperties: false,
    properties: {
      global: { type: "object", description: "Values a parent chart passes to every subchart." },
      nameOverride: str("Replaces the chart name in resource names."),
      fullnameOverride: str("Replaces <release>-shoal in resource names."),
      commonLabels: labels("Labels added to every resource."),
      image: obj("The shoal image.", {
        repository: str("Image repository.", { minLength: 1 }),
        tag: str("Tag; empty means the chart's appVersion."),
        digest: str("sha256 digest; pins the image when set.", { pattern: "^$|^sha256:[a-f0-9]{64}$" }),
        pullPolicy: str("Pull policy.", { enum: ["Always", "IfNotPresent", "Never"] }),
      }),
      imagePullSecrets: k8sList("Secrets for pulling the image."),
      registries: {
        type: "array",
        description: "Registries mirrored: REGISTRY or REGISTRY=URL (agent --upstream; configure --registries).",
        items: { type: "string", minLength: 1 },
      },
      clusterDomain: str("DNS domain of the cluster.", { minLength: 1 }),
      identity: obj("Workload certificates and mutual TLS between agents and controllers.", {
        ca: obj("The CA that signs every certificate.", {
          existingSecret: str("A kubernetes.io/tls Secret (tls.crt, tls.key) of your own; empty: the chart generates the CA."),
          bundle: str("CA certificates (PEM) agents trust; required with existingSecret."),
          validityDays: int("Days the generated CA is valid.", 1),
        }),
        certificateLifetime: duration("Lifetime of issued certificates (controller --cert-lifetime)."),
        tokenAudience: str("Audience of the agents' projected ServiceAccount tokens.", { minLength: 1 }),
        tokenExpirationSeconds: int("Lifetime of those tokens; the kubelet refreshes them (at least 600).", 600),
      }),
      agent: obj("The node agent (DaemonSet).", {
        config: optionsSchema(specs.agent, "`shoal agent` options by flag name (shoal agent --help), as SHOAL_* variables."),
        ports: obj("Container ports.", {
          mirror: port("Registry mirror."),
          peer: port("Pieces for other agents (gRPC)."),
          metrics: port("/metrics, /healthz, /readyz."),
        }),
        hostPort: port("Node port forwarding to the mirror (not with hostNetwork)."),
        hostNetwork: bool("Run in the node's network namespace instead of using a hostPort."),
        dataDir: str("Node directory of the blob store (hostPath), mounted at the same path.", { pattern: "^/" }),
        runAsUser: int("User and group id of the agent; not root.", 1),
        registryCredentials: obj("Registry credentials.", {
          secretName: str("A kubernetes.io/dockerconfigjson Secret; empty means none."),
        }),
        containerd: obj("containerd's content store as a blob source (one copy per node); off on CRI-O nodes.", {
          enabled: bool("Serve and announce containerd's content, keep no second copy (--containerd-content)."),
          socket: str("containerd's socket on the node; its directory is mounted read-only.", { pattern: "^/" }),
          namespace: str("containerd namespace of the kubelet's images.", { pattern: "^[A-Za-z0-9]([A-Za-z0-9._-]{0,74}[A-Za-z0-9])?$" }),
          contentDir: str(
            "containerd's content directory on the node, mounted read-only for direct reads; empty reads through the socket.",
            { pattern: "^(/.*)?$" },
          ),
          socketGroup: int("Group that may use the socket, added to the pod's supplementalGroups."),
        }),
        resources: k8s("Resources of the agent container."),
        env: k8sList("Extra environment variables of the agent container (Kubernetes EnvVar list)."),
        priorityClassName: str("Priority class of the agent pods."),
        tolerations: k8sList("Tolerations of the agent pods."),
        nodeSelector: labels("Node selector of the agent pods."),
        affinity: k8s("Affinity of the agent pods."),
        podAnnotations: labels("Annotations of the agent pods."),
        podLabels: labels("Labels of the agent pods."),
        terminationGracePeriodSeconds: int("Seconds a stopping agent gets."),
        updateStrategy: obj("DaemonSet rolling update.", {
          maxUnavailable: { type: ["integer", "string"], description: "Nodes updated at once (number or percentage)." },
        }),
        probes: obj("Probes of the agent container.", {
          startup: probe("Startup probe on /readyz."),
          readiness: probe("Readiness probe on /readyz."),
          liveness: probe("Liveness probe on /healthz."),
        }),
        serviceAccount: serviceAccount("The agents' ServiceAccount."),
        rbac: obj("The agents' API permissions.", { createEvents: bool("Grant events create and mount the token.") }),
        metricsService: obj("Headless Service over the agents' metrics port.", { enabled: bool("Create it.") }),
        configure: obj("Node runtime configuration (`shoal configure`).", {
          enabled: bool("Run the configure init container."),
          runtime: str("Container runtime (--runtime).", { enum: ["auto", "containerd", "crio"] }),
          hostRoot: str("Mount point of the node directories (--host-root).", { pattern: "^/" }),
          hostPaths: {
            type: "array",
            description: "Node directories mounted read-write under hostRoot.",
            items: { type: "string", pattern: "^/" },
          },
          containerdConfig: str("containerd's config.toml (--containerd-config).", { pattern: "^/" }),
          hostsDir: str("containerd's hosts directory (--hosts-dir).", { pattern: "^/" }),
          crioRegistriesDir: str("CRI-O's registries.conf.d (--crio-registries-dir).", { pattern: "^/" }),
          stateDir: str("Backups and report (--state-dir), a node directory.", { pattern: "^/" }),
          strict: bool("Fail on a configuration problem (--strict)."),
          restoreOnStop: bool("Restore the runtime configuration when an agent pod stops."),
          config: configureConfig,
          resources: k8s("Resources of the configure containers."),
        }),
      }),
      controller: obj("The controller (tracker) Deployment.", {
        replicas: int("Replicas; one leads.", 1),
        config: optionsSchema(
          specs.controller,
          "`shoal controller` options by flag name (shoal controller --help), as SHOAL_* variables or flags.",
        ),
        ports: obj("Container ports.", {
          tracker: port("Tracker gRPC, also the Service port."),
          issuer: port("Certificate issuer (gRPC), also a Service port."),
          metrics: port("/metrics, /healthz, /readyz."),
        }),
        leaderElection: obj("Lease leader election.", {
          leaseName: str("Lease name; empty means <fullname>-controller."),
          leaseDuration: duration("Lease duration."),
          renewDeadline: duration("Renew deadline."),
          retryPeriod: duration("Retry period."),
          candidatePeriod: duration("How often a follower reads the Lease while another replica holds it (at most retryPeriod)."),
        }),
        resources: k8s("Resources of the controller container."),
        priorityClassName: str("Priority class of the controller pods."),
        nodeSelector: labels("Node selector of the controller pods."),
        tolerations: k8sList("Tolerations of the controller pods."),
        affinity: k8s("Affinity; empty means spread over nodes."),
        podAnnotations: labels("Annotations of the controller pods."),
        podLabels: labels("Labels of the controller pods."),
        podDisruptionBudget: obj("PodDisruptionBudget.", {
          enabled: bool("Create it."),
          minAvailable: { type: ["integer", "string"], description: "Pods that must stay available." },
        }),
        serviceAccount: serviceAccount("The controller's ServiceAccount."),
        rbac: obj("The controller's Role, ClusterRole and bindings.", { create: bool("Create them.") }),
      }),
      imagePrefetch: obj("ImagePrefetch reconciling.", {
        enabled: bool("Reconcile ImagePrefetch resources (controller --prefetch) and grant what that needs."),
        pullSecretNamespaces: {
          type: "array",
          description:
            "Namespaces whose Secrets ImagePrefetches may name: a Role granting `get` on Secrets there (only secretNames when given).",
          items: {
            type: "object",
            additionalProperties: false,
            required: ["namespace"],
            properties: {
              namespace: str("The namespace.", { pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" }),
              secretNames: {
                type: "array",
                description: "Only these Secrets; absent means every Secret there.",
                items: { type: "string", minLength: 1 },
              },
            },
          },
        },
      }),
      serviceMonitor: monitor("ServiceMonitor"),
      podMonitor: monitor("PodMonitor"),
      dashboards: obj("The Grafana dashboard.", {
        configMap: obj("As a ConfigMap for Grafana's sidecar.", {
          enabled: bool("Create it."),
          label: str("Label the sidecar selects by.", { minLength: 1 }),
          labelValue: str("Value of that label."),
          annotations: labels("Annotations, e.g. the sidecar's folder."),
          namespace: str("Its namespace; empty means the release namespace."),
        }),
        grafanaDashboard: obj("As a grafana-operator v5 GrafanaDashboard.", {
          enabled: bool("Create it."),
          instanceSelector: k8s("Selects the Grafana instances."),
          folder: str("Folder in Grafana."),
          resyncPeriod: duration("How often the operator re-applies it."),
          allowCrossNamespaceImport: bool("Let Grafana instances in other namespaces import it."),
        }),
      }),
      networkPolicy: obj("NetworkPolicies (ingress).", {
        enabled: bool("Create them."),
        nodeCIDRs: {
          type: "array",
          description: "CIDRs of node addresses.",
          items: { type: "string", pattern: "^[0-9a-fA-F:.]+/[0-9]{1,3}$" },
        },
        metricsFrom: k8sList("NetworkPolicyPeers allowed to scrape metrics."),
      }),
    },
  };
}

/** `shoal configure`'s option specs once cmd/configure/options.ts exists (an export named *OptionSpecs). */
export async function loadConfigureSpecs(): Promise<OptionSpecs | undefined> {
  let module: Record<string, unknown>;
  try {
    module = (await import(new URL("../configure/options.js", import.meta.url).href)) as Record<string, unknown>;
  } catch (error) {
    if (
      error instanceof Error &&
      "code" in error &&
      error.code === "ERR_MODULE_NOT_FOUND" &&
      error.message.includes("configure/options.js")
    )
      return undefined;
    throw error;
  }
  const found = Object.entries(module).find(([name]) => name.endsWith("OptionSpecs"));
  if (found === undefined) throw new Error("cmd/configure/options.ts exports no *OptionSpecs");
  return found[1] as OptionSpecs;
}

export async function generateValuesSchema(): Promise<JsonSchema> {
  const configure = await loadConfigureSpecs();
  return buildValuesSchema({ agent: agentOptionSpecs, controller: controllerOptionSpecs, ...(configure ? { configure } : {}) });
}

/** The file's exact text: two-space JSON and a final newline. */
export function formatValuesSchema(schema: JsonSchema): string {
  return `${JSON.stringify(schema, null, 2)}\n`;
}

if (import.meta.main) {
  const text = formatValuesSchema(await generateValuesSchema());
  if (process.argv.includes("--write")) {
    await writeFile(VALUES_SCHEMA_PATH, text);
    console.error(`wrote ${VALUES_SCHEMA_PATH}`);
  } else {
    process.stdout.write(text);
  }
}
