// The chart as helm renders it: lint, every toggle on and off, every object valid for Kubernetes
// 1.27 (and the prometheus-operator CRDs), and the properties the design depends on.
import assert from "node:assert/strict";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CONTROLLER_NODE_ENV } from "../../../pkg/config/index.js";
import { validateObject } from "./k8s-schemas.js";
import { CHART_DIR, type K8sObject, NAMESPACE, RELEASE, at, lint, only, render, template } from "./render.js";

/** Every toggle on (and the settings that make optional rules render). */
const ALL_ON = {
  agent: {
    rbac: { createEvents: true },
    registryCredentials: { secretName: "regcred" },
    config: { "store-quota": "20GiB", "log-level": "debug" },
    configure: { strict: true },
  },
  controller: { podDisruptionBudget: { enabled: true }, config: { "grant-stall-timeout": "20s" } },
  serviceMonitor: { enabled: true, labels: { release: "kube-prometheus-stack" }, scrapeTimeout: "10s" },
  podMonitor: { enabled: true, labels: { release: "kube-prometheus-stack" } },
  dashboards: {
    configMap: { enabled: true, annotations: { grafana_folder: "Shoal" } },
    grafanaDashboard: { enabled: true, folder: "Shoal" },
  },
  networkPolicy: { enabled: true, nodeCIDRs: ["10.0.0.0/16"] },
  imagePullSecrets: [{ name: "pull" }],
  imagePrefetch: { pullSecretNamespaces: [{ namespace: "team-a", secretNames: ["regcred"] }] },
};

/** Every toggle off. */
const ALL_OFF = {
  agent: {
    configure: { enabled: false, restoreOnStop: false },
    containerd: { enabled: false },
    metricsService: { enabled: false },
    serviceAccount: { create: false },
    priorityClassName: "",
    tolerations: [],
  },
  controller: { rbac: { create: false }, serviceAccount: { create: false, name: "existing" }, podDisruptionBudget: { enabled: false } },
  dashboards: { configMap: { enabled: false }, grafanaDashboard: { enabled: false } },
  serviceMonitor: { enabled: false },
  podMonitor: { enabled: false },
  networkPolicy: { enabled: false },
  imagePrefetch: { enabled: false },
};

function withHostNetwork(values: Record<string, unknown>): Record<string, unknown> {
  return { ...values, agent: { ...(values.agent as Record<string, unknown> | undefined), hostNetwork: true } };
}

/** The flags the chart relies on `shoal configure` having. */
const CONFIGURE_FLAGS = [
  "mirror-url",
  "registries",
  "runtime",
  "host-root",
  "containerd-config",
  "hosts-dir",
  "crio-registries-dir",
  "state-dir",
  "restore",
  "strict",
  "dry-run",
];

/** `shoal configure`'s real flags, from values.schema.json (generated from its option specs). */
async function configureFlagsFromSchema(): Promise<string[]> {
  const schema = JSON.parse(await readFile(join(CHART_DIR, "values.schema.json"), "utf8")) as unknown;
  return Object.keys(at(schema, "properties", "agent", "properties", "configure", "properties", "config", "properties") ?? {});
}

interface Container {
  name: string;
  args?: string[];
  command?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports?: { name: string; containerPort: number; hostPort?: number }[];
  securityContext?: Record<string, unknown>;
  lifecycle?: Record<string, unknown>;
  startupProbe?: unknown;
  readinessProbe?: unknown;
  livenessProbe?: unknown;
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}

function podSpec(workload: K8sObject): Record<string, unknown> {
  const spec = at(workload, "spec", "template", "spec");
  assert.ok(spec && typeof spec === "object", `${workload.kind} has a pod template`);
  return spec as Record<string, unknown>;
}

function container(workload: K8sObject, name: string, init = false): Container {
  const list = podSpec(workload)[init ? "initContainers" : "containers"] as Container[] | undefined;
  const found = list?.find((c) => c.name === name);
  assert.ok(found, `${workload.kind} has ${init ? "init " : ""}container ${name}`);
  return found;
}

function flag(args: readonly string[] | undefined, name: string): string | undefined {
  const prefix = `--${name}=`;
  return args?.find((a) => a.startsWith(prefix))?.slice(prefix.length);
}

function parseSelector(selector: string): Record<string, string> {
  return Object.fromEntries(
    selector.split(",").map((pair) => {
      const [key, value, ...rest] = pair.split("=");
      assert.ok(key && value !== undefined && rest.length === 0, `--agent-selector term ${pair} is key=value`);
      return [key, value];
    }),
  );
}

function selects(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function podLabels(workload: K8sObject): Record<string, string> {
  return at(workload, "spec", "template", "metadata", "labels") as Record<string, string>;
}

describe("helm chart charts/shoal", () => {
  it("passes helm lint --strict with the defaults and with every toggle on", async () => {
    for (const values of [{}, ALL_ON, withHostNetwork(ALL_ON)]) {
      const result = await lint(values);
      assert.ok(result.ok, `helm lint --strict failed:\n${result.stdout}\n${result.stderr}`);
    }
  });

  it("renders only valid Kubernetes 1.27 objects with every toggle on, off, and with hostNetwork", async () => {
    const expectations: [string, object, string[]][] = [
      [
        "defaults",
        {},
        [
          "ConfigMap",
          "ConfigMap",
          "ConfigMap",
          "ConfigMap",
          "Secret",
          "DaemonSet",
          "Deployment",
          "Service",
          "Service",
          "Service",
          "ServiceAccount",
          "ServiceAccount",
          "Role",
          "RoleBinding",
          "ClusterRole",
          "ClusterRoleBinding",
          "PodDisruptionBudget",
          "NetworkPolicy",
          "NetworkPolicy",
        ],
      ],
      [
        "all on",
        ALL_ON,
        [
          "ConfigMap",
          "ConfigMap",
          "ConfigMap",
          "ConfigMap",
          "Secret",
          "DaemonSet",
          "Deployment",
          "Service",
          "Service",
          "Service",
          "ServiceAccount",
          "ServiceAccount",
          "Role",
          "Role",
          "Role",
          "RoleBinding",
          "RoleBinding",
          "RoleBinding",
          "ClusterRole",
          "ClusterRoleBinding",
          "PodDisruptionBudget",
          "ServiceMonitor",
          "PodMonitor",
          "GrafanaDashboard",
          "NetworkPolicy",
          "NetworkPolicy",
        ],
      ],
      ["all on, hostNetwork", withHostNetwork(ALL_ON), []],
      ["all off", ALL_OFF, ["ConfigMap", "ConfigMap", "ConfigMap", "Secret", "DaemonSet", "Deployment", "Service", "Service"]],
      ["all off, hostNetwork", withHostNetwork(ALL_OFF), []],
    ];
    for (const [label, values, kinds] of expectations) {
      const objects = await render(values);
      const problems = objects.flatMap(validateObject);
      assert.deepEqual(problems, [], `${label}: invalid objects`);
      if (kinds.length > 0) assert.deepEqual(objects.map((o) => o.kind).sort(), [...kinds].sort(), `${label}: the kinds rendered`);
      for (const object of objects) {
        if (!["ClusterRole", "ClusterRoleBinding"].includes(object.kind) && object.metadata.namespace === undefined)
          assert.fail(`${label}: ${object.kind}/${object.metadata.name} has no namespace`);
      }
    }
  });

  it("finds typos the schemas allow: the field walk reports an unknown field", () => {
    const objects: K8sObject = {
      apiVersion: "apps/v1",
      kind: "DaemonSet",
      metadata: { name: "x" },
      spec: {
        selector: { matchLabels: { a: "b" } },
        template: { metadata: { labels: { a: "b" } }, spec: { containers: [{ name: "c", image: "i", readinesProbe: {} }] } },
      },
    };
    assert.deepEqual(validateObject(objects), ["DaemonSet/x.spec.template.spec.containers[0].readinesProbe: unknown field of V1Container"]);
  });

  it("agent DaemonSet: node-critical, tolerates everything, one node at a time, probes, Downward API, hostPort, least privilege", async () => {
    const objects = await render({});
    const ds = only(objects, "DaemonSet");
    const pod = podSpec(ds);
    assert.equal(pod.priorityClassName, "system-node-critical");
    assert.deepEqual(pod.tolerations, [{ operator: "Exists" }]);
    assert.deepEqual(at(ds, "spec", "updateStrategy"), { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } });
    assert.equal(pod.hostNetwork, undefined);
    assert.equal(pod.automountServiceAccountToken, false, "the agent holds no API token by default");
    const agent = container(ds, "agent");
    assert.deepEqual(agent.args, ["agent"]);
    for (const probe of ["startupProbe", "readinessProbe"] as const)
      assert.deepEqual(at(agent, probe, "httpGet"), { path: "/readyz", port: "metrics" }, probe);
    assert.deepEqual(at(agent, "livenessProbe", "httpGet"), { path: "/healthz", port: "metrics" });
    const env = agent.env ?? [];
    const index = (name: string): number => env.findIndex((e) => e.name === name);
    assert.equal(env[index("SHOAL_NODE_NAME")]?.valueFrom?.fieldRef?.fieldPath, "spec.nodeName");
    assert.equal(env[index("POD_IP")]?.valueFrom?.fieldRef?.fieldPath, "status.podIP");
    assert.equal(env[index("SHOAL_PEER_ADVERTISE_ADDR")]?.value, "$(POD_IP):5052");
    assert.ok(index("POD_IP") < index("SHOAL_PEER_ADVERTISE_ADDR"), "$(POD_IP) is expanded only if defined earlier");
    assert.equal(index("MALLOC_MMAP_THRESHOLD_"), -1, "no allocator setting by default (pkg/config/node-flags.ts)");
    const ports = Object.fromEntries((agent.ports ?? []).map((p) => [p.name, p]));
    assert.deepEqual([ports.mirror?.containerPort, ports.mirror?.hostPort], [5050, 5050]);
    assert.equal(ports.peer?.hostPort, undefined, "peers reach the pod IP; only the mirror needs the node's port");
    assert.deepEqual(agent.securityContext, {
      runAsNonRoot: true,
      runAsUser: 65532,
      runAsGroup: 65532,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
    });
    const config = only(objects, "ConfigMap", "-agent").data as Record<string, string>;
    assert.equal(config.SHOAL_MIRROR_ADDR, "0.0.0.0:5050");
    assert.equal(config.SHOAL_METRICS_ADDR, "0.0.0.0:9150");
    assert.equal(config.SHOAL_PEER_ADDR, "0.0.0.0:5052");
    assert.equal(config.SHOAL_DATA_DIR, "/var/lib/shoal/data");
    assert.equal(config.SHOAL_UPSTREAM, "docker.io,ghcr.io,quay.io,registry.k8s.io,gcr.io,mcr.microsoft.com,public.ecr.aws");
    const dataVolume = (pod.volumes as { name: string; hostPath?: { path: string } }[]).find((v) => v.name === "data");
    assert.equal(dataVolume?.hostPath?.path, "/var/lib/shoal/data");
    assert.deepEqual(container(ds, "data-dir", true).command, ["chown", "-R", "65532:65532", "/var/lib/shoal/data"]);
  });

  it("agent.env adds variables to the agent container after the chart's own, which it may refer to", async () => {
    const extra = [
      { name: "MALLOC_MMAP_THRESHOLD_", value: "131072" },
      { name: "FROM_FIELD", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
    ];
    const objects = await render({ agent: { env: extra } });
    assert.deepEqual(objects.flatMap(validateObject), [], "every object valid for Kubernetes");
    const env = container(only(objects, "DaemonSet"), "agent").env ?? [];
    const names = env.map((e) => e.name);
    assert.deepEqual(env.slice(-extra.length), extra, "the entries as given, last");
    assert.ok(names.indexOf("POD_IP") < names.indexOf("MALLOC_MMAP_THRESHOLD_"), "after the chart's variables");
    const rejected = await template({ agent: { env: { MALLOC_MMAP_THRESHOLD_: "131072" } } });
    assert.equal(rejected.ok, false, "a map instead of a list of EnvVar is refused by the schema");
  });
  it("containerd's content store: socket directory and content directory mounted read-only, the socket's group, the flags; off, none of it", async () => {
    type Volume = { name: string; hostPath?: { path: string; type?: string } };
    type Mount = { name: string; mountPath: string; readOnly?: boolean };
    const on = only(await render({}), "DaemonSet");
    const mounts = (container(on, "agent") as { volumeMounts?: Mount[] }).volumeMounts ?? [];
    const volumes = podSpec(on).volumes as Volume[];
    assert.deepEqual(
      mounts.find((m) => m.name === "containerd-socket"),
      { name: "containerd-socket", mountPath: "/run/containerd", readOnly: true },
    );
    assert.deepEqual(
      mounts.find((m) => m.name === "containerd-content"),
      { name: "containerd-content", mountPath: "/var/lib/containerd/io.containerd.content.v1.content", readOnly: true },
    );
    assert.equal(volumes.find((v) => v.name === "containerd-socket")?.hostPath?.path, "/run/containerd");
    assert.deepEqual(at(on, "spec", "template", "spec", "securityContext", "supplementalGroups"), [0]);
    const config = only(await render({}), "ConfigMap", "-agent").data as Record<string, string>;
    assert.equal(config.SHOAL_CONTAINERD_CONTENT, "true");
    assert.equal(config.SHOAL_CONTAINERD_ADDRESS, "/run/containerd/containerd.sock");
    assert.equal(config.SHOAL_CONTAINERD_NAMESPACE, "k8s.io");
    assert.equal(config.SHOAL_CONTAINERD_CONTENT_DIR, "/var/lib/containerd/io.containerd.content.v1.content");

    const k3s = await render({ agent: { containerd: { socket: "/run/k3s/containerd/containerd.sock", contentDir: "" } } });
    const k3sMounts = (container(only(k3s, "DaemonSet"), "agent") as { volumeMounts?: Mount[] }).volumeMounts ?? [];
    assert.equal(k3sMounts.find((m) => m.name === "containerd-socket")?.mountPath, "/run/k3s/containerd");
    assert.equal(
      k3sMounts.find((m) => m.name === "containerd-content"),
      undefined,
      "no content directory: reads go through the socket",
    );
    assert.equal((only(k3s, "ConfigMap", "-agent").data as Record<string, string>).SHOAL_CONTAINERD_CONTENT_DIR, undefined);

    const offObjects = await render({ agent: { containerd: { enabled: false } } });
    const off = only(offObjects, "DaemonSet");
    assert.equal(
      ((container(off, "agent") as { volumeMounts?: Mount[] }).volumeMounts ?? []).some((m) => m.name.startsWith("containerd-")),
      false,
    );
    assert.equal(
      (podSpec(off).volumes as Volume[]).some((v) => v.name.startsWith("containerd-")),
      false,
    );
    assert.equal(at(off, "spec", "template", "spec", "securityContext", "supplementalGroups"), undefined);
    const offConfig = only(offObjects, "ConfigMap", "-agent").data as Record<string, string>;
    assert.equal(offConfig.SHOAL_CONTAINERD_CONTENT, "false");
    assert.equal(offConfig.SHOAL_CONTAINERD_ADDRESS, undefined);
  });

  it("agents dial the tracker Service, which selects only controller pods and routes to Ready ones (the leader)", async () => {
    const objects = await render({});
    const tracker = only(objects, "Service", "-tracker");
    const config = only(objects, "ConfigMap", "-agent").data as Record<string, string>;
    assert.equal(config.SHOAL_TRACKER, `${tracker.metadata.name}.${NAMESPACE}.svc.cluster.local:7070`);
    assert.deepEqual(at(tracker, "spec", "ports", 0), { name: "tracker", port: 7070, targetPort: "tracker", protocol: "TCP" });
    assert.equal(at(tracker, "spec", "publishNotReadyAddresses"), undefined, "not-Ready followers must get no tracker traffic");
    const selector = at(tracker, "spec", "selector") as Record<string, string>;
    assert.ok(selects(selector, podLabels(only(objects, "Deployment"))), "the tracker Service selects the controller pods");
    assert.ok(!selects(selector, podLabels(only(objects, "DaemonSet"))), "and not the agents");
    const controller = container(only(objects, "Deployment"), "controller");
    assert.ok(controller.ports?.some((p) => p.name === "tracker" && p.containerPort === 7070));
    assert.equal(at(only(objects, "Service", "-controller-metrics"), "spec", "publishNotReadyAddresses"), true, "every replica is scraped");
  });

  it("controller: 2 replicas, Kubernetes membership and leader election flags, --agent-selector matching the agent pods", async () => {
    const objects = await render({});
    const deployment = only(objects, "Deployment");
    assert.equal(at(deployment, "spec", "replicas"), 2);
    const controller = container(deployment, "controller");
    const args = controller.args;
    assert.equal(args?.[0], "controller");
    assert.equal(flag(args, "membership"), "kubernetes");
    assert.equal(flag(args, "namespace"), "$(POD_NAMESPACE)");
    assert.equal(flag(args, "identity"), "$(POD_NAME)");
    assert.equal(flag(args, "lease-duration"), "15s");
    assert.equal(flag(args, "renew-deadline"), "10s");
    assert.equal(flag(args, "retry-period"), "2s");
    assert.equal(flag(args, "candidate-period"), "1s");
    assert.equal(flag(args, "advertise-host"), "$(POD_IP)", "the leader names its pod IP on the Lease");
    assert.equal(flag(args, "lease-name"), `${RELEASE}-shoal-controller`);
    assert.equal(flag(args, "kubeconfig"), undefined, "in cluster: the service account");
    assert.equal(flag(args, "prefetch"), "true", "ImagePrefetch on by default");
    assert.deepEqual(
      args.filter((a) => a.startsWith("--upstream=")).map((a) => a.slice("--upstream=".length)),
      ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "gcr.io", "mcr.microsoft.com", "public.ecr.aws"],
      "the controller resolves where the agents mirror",
    );
    assert.equal(
      flag(container(only(await render({ imagePrefetch: { enabled: false } }), "Deployment"), "controller").args, "prefetch"),
      "false",
    );
    const fields = Object.fromEntries(
      (controller.env ?? []).flatMap((e) => (e.valueFrom ? [[e.name, e.valueFrom.fieldRef?.fieldPath]] : [])),
    );
    assert.deepEqual(fields, { POD_NAMESPACE: "metadata.namespace", POD_NAME: "metadata.name", POD_IP: "status.podIP" });
    const values = Object.fromEntries((controller.env ?? []).flatMap((e) => (e.valueFrom ? [] : [[e.name, e.value]])));
    assert.deepEqual(values, CONTROLLER_NODE_ENV, "the controller's own environment (pkg/config/node-flags.ts)");
    // Every synced replica is Ready, so the update rolls one replica at a time and the budget lets one go.
    assert.deepEqual(at(deployment, "spec", "strategy"), { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    const budget = only(objects, "PodDisruptionBudget");
    assert.equal(at(budget, "spec", "minAvailable"), 1);
    assert.deepEqual(at(budget, "spec", "selector", "matchLabels"), at(deployment, "spec", "selector", "matchLabels"));
    assert.ok(
      (await render({ controller: { replicas: 1 } })).every((o) => o.kind !== "PodDisruptionBudget"),
      "no budget that would block every drain of a single replica",
    );
    assert.ok((await render({ controller: { podDisruptionBudget: { enabled: false } } })).every((o) => o.kind !== "PodDisruptionBudget"));
    const selector = parseSelector(flag(args, "agent-selector") ?? "");
    assert.ok(
      selects(selector, podLabels(only(objects, "DaemonSet"))),
      `--agent-selector ${JSON.stringify(selector)} selects the agent pods`,
    );
    assert.ok(!selects(selector, podLabels(deployment)), "--agent-selector does not select controller pods");
    assert.ok(
      selects(at(only(objects, "DaemonSet"), "spec", "selector", "matchLabels") as Record<string, string>, selector),
      "it is at least as narrow as the DaemonSet's own selector",
    );
    assert.deepEqual(at(controller, "readinessProbe", "httpGet"), { path: "/readyz", port: "metrics" });
    const role = only(objects, "Role");
    const leaseRule = (role.rules as { resources: string[]; resourceNames?: string[] }[]).find((r) => r.resourceNames !== undefined);
    assert.deepEqual(leaseRule?.resourceNames, [flag(args, "lease-name")], "get/update only on the Lease the controller uses");
    const overriddenObjects = await render({ controller: { config: { "metrics-addr": "0.0.0.0:9999", "grant-stall-timeout": "5s" } } });
    const overridden = only(overriddenObjects, "Deployment");
    const overriddenArgs = container(overridden, "controller").args;
    assert.equal(flag(overriddenArgs, "metrics-addr"), "0.0.0.0:9999", "controller.config replaces a flag the chart sets");
    assert.equal(overriddenArgs?.filter((a) => a.startsWith("--metrics-addr=")).length, 1);
    assert.equal(flag(overriddenArgs, "grant-stall-timeout"), undefined, "options the chart does not set go to the ConfigMap");
    assert.deepEqual(only(overriddenObjects, "ConfigMap", "-controller").data, { SHOAL_GRANT_STALL_TIMEOUT: "5s" });
  });

  it("configure init container: only the flags `shoal configure` has, root without capabilities, node paths under --host-root", async () => {
    const objects = await render(ALL_ON);
    const ds = only(objects, "DaemonSet");
    const configure = container(ds, "configure", true);
    const known = await configureFlagsFromSchema();
    for (const name of CONFIGURE_FLAGS)
      assert.ok(known.includes(name), `shoal configure has --${name} (values.schema.json lists ${known.join(", ")})`);
    assert.equal(configure.args?.[0], "configure");
    for (const arg of configure.args.slice(1)) {
      const name = /^--([a-z-]+)=/.exec(arg)?.[1];
      assert.ok(name !== undefined && known.includes(name), `${arg} is a configure flag`);
    }
    assert.equal(flag(configure.args, "mirror-url"), "http://$(HOST_IP):5050");
    assert.equal(flag(configure.args, "registries"), "docker.io,ghcr.io,quay.io,registry.k8s.io,gcr.io,mcr.microsoft.com,public.ecr.aws");
    assert.equal(flag(configure.args, "runtime"), "auto");
    assert.equal(flag(configure.args, "host-root"), "/host");
    assert.equal(flag(configure.args, "strict"), "true");
    assert.equal(configure.env?.find((e) => e.name === "HOST_IP")?.valueFrom?.fieldRef?.fieldPath, "status.hostIP");
    assert.deepEqual(configure.securityContext, {
      runAsUser: 0,
      runAsNonRoot: false,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
    });
    const mounts = Object.fromEntries((configure.volumeMounts ?? []).map((m) => [m.mountPath, m.name]));
    const volumes = Object.fromEntries(
      (podSpec(ds).volumes as { name: string; hostPath?: { path: string } }[]).map((v) => [v.name, v.hostPath?.path]),
    );
    for (const nodePath of ["/etc/containerd", "/etc/containers", "/var/lib/shoal/configure"]) {
      const volume = mounts[`/host${nodePath}`];
      assert.ok(volume !== undefined, `${nodePath} is mounted at /host${nodePath}`);
      assert.equal(volumes[volume], nodePath);
    }
    // Uninstall: the restore-on-stop container's preStop restores with the same settings.
    const restore = container(ds, "restore-on-stop");
    assert.deepEqual(at(restore, "lifecycle", "preStop", "exec", "command"), [
      "node",
      "/app/dist/cmd/shoal/main.js",
      "configure",
      "--restore",
    ]);
    const restoreEnv = Object.fromEntries((restore.env ?? []).map((e) => [e.name, e.value]));
    for (const arg of configure.args.slice(1)) {
      const [, name, value] = /^--([a-z-]+)=(.*)$/.exec(arg) ?? [];
      assert.equal(restoreEnv[`SHOAL_${(name ?? "").toUpperCase().replace(/-/g, "_")}`], value, `restore uses the same ${name ?? arg}`);
    }
    assert.deepEqual(restore.volumeMounts, configure.volumeMounts);
    const agentMount = container(ds, "agent").volumeMounts?.find((m) => m.name === "configure-state");
    assert.deepEqual(
      agentMount,
      { name: "configure-state", mountPath: "/var/lib/shoal/configure", readOnly: true },
      "the agent can read the configure report, not change backups",
    );
  });

  it("hostNetwork: node network namespace, cluster DNS kept, ports equal host ports, mirror URL on the mirror port", async () => {
    const objects = await render({ agent: { hostNetwork: true, hostPort: 15050 } });
    const ds = only(objects, "DaemonSet");
    assert.equal(podSpec(ds).hostNetwork, true);
    assert.equal(podSpec(ds).dnsPolicy, "ClusterFirstWithHostNet");
    for (const port of container(ds, "agent").ports ?? []) assert.equal(port.hostPort, port.containerPort, port.name);
    assert.equal(flag(container(ds, "configure", true).args, "mirror-url"), "http://$(HOST_IP):5050");
    const hostPortMode = only(await render({ agent: { hostPort: 15050 } }), "DaemonSet");
    assert.equal(flag(container(hostPortMode, "configure", true).args, "mirror-url"), "http://$(HOST_IP):15050");
  });

  it("checksum/config changes with the agent configuration and only with it", async () => {
    const checksum = async (values: object): Promise<unknown> =>
      at(only(await render(values), "DaemonSet"), "spec", "template", "metadata", "annotations", "checksum/config");
    const base = await checksum({});
    assert.match(String(base), /^[a-f0-9]{64}$/);
    assert.notEqual(await checksum({ agent: { config: { "upload-rate": "500mbit" } } }), base);
    assert.notEqual(await checksum({ registries: ["docker.io"] }), base);
    assert.equal(await checksum({ controller: { replicas: 3 } }), base);
    const controllerChecksum = async (values: object): Promise<unknown> =>
      at(only(await render(values), "Deployment"), "spec", "template", "metadata", "annotations", "checksum/config");
    assert.notEqual(await controllerChecksum({ controller: { config: { "grant-stall-timeout": "30s" } } }), await controllerChecksum({}));
  });

  it("agent.config sets any agent option as its SHOAL_* variable: lists joined, big numbers exact, chart settings overridable", async () => {
    const objects = await render({
      agent: {
        config: {
          "store-quota": 20_000_000_000,
          "store-high-watermark": 0.95,
          "max-uploads": 8,
          upstream: ["a.example", "b.example=http://10.0.0.1:5000"],
          tracker: "tracker.elsewhere:7070",
          "node-name": "fixed",
        },
      },
    });
    const config = only(objects, "ConfigMap", "-agent").data as Record<string, string>;
    assert.equal(config.SHOAL_STORE_QUOTA, "20000000000");
    assert.equal(config.SHOAL_STORE_HIGH_WATERMARK, "0.95");
    assert.equal(config.SHOAL_MAX_UPLOADS, "8");
    assert.equal(config.SHOAL_UPSTREAM, "a.example,b.example=http://10.0.0.1:5000");
    assert.equal(config.SHOAL_TRACKER, "tracker.elsewhere:7070");
    assert.equal(config.SHOAL_NODE_NAME, "fixed");
    assert.equal(
      container(only(objects, "DaemonSet"), "agent").env?.find((e) => e.name === "SHOAL_NODE_NAME"),
      undefined,
      "the Downward API entry would override the ConfigMap",
    );
  });

  it("values.schema.json rejects a misspelt option, a wrong type and an unknown key with a message naming them", async () => {
    const cases: [object, RegExp][] = [
      [{ agent: { config: { "stor-quota": "20GiB" } } }, /agent\.config.*stor-quota/],
      [{ controller: { config: { "grant-stall-timout": "5s" } } }, /controller\.config.*grant-stall-timout/],
      [{ agent: { config: { "max-uploads": "many" } } }, /agent\.config\.max-uploads/],
      [{ agent: { config: { "log-level": "loud" } } }, /agent\.config\.log-level/],
      [{ agent: { config: { "response-start-timeout": "10" } } }, /agent\.config\.response-start-timeout/],
      [{ agnet: {} }, /agnet/],
      [{ agent: { configure: { runtime: "docker" } } }, /agent\.configure\.runtime/],
    ];
    for (const [values, message] of cases) {
      const result = await template(values);
      assert.equal(result.ok, false, `helm template accepted ${JSON.stringify(values)}`);
      assert.match(result.stderr, /values don't meet the specifications of the schema/);
      assert.match(result.stderr, message);
    }
  });

  it("ships the dashboard JSON unchanged in the ConfigMap (labelled for the sidecar) and the GrafanaDashboard", async () => {
    const json = await readFile(join(CHART_DIR, "dashboards", "shoal.json"), "utf8");
    const objects = await render({
      ...ALL_ON,
      dashboards: { configMap: { enabled: true, label: "my_dashboards", labelValue: "yes" }, grafanaDashboard: { enabled: true } },
    });
    const configMap = only(objects, "ConfigMap", "-dashboard");
    assert.equal(configMap.metadata.labels?.my_dashboards, "yes");
    assert.deepEqual(JSON.parse(at(configMap, "data", "shoal.json") as string), JSON.parse(json));
    const dashboard = only(objects, "GrafanaDashboard");
    assert.deepEqual(JSON.parse(at(dashboard, "spec", "json") as string), JSON.parse(json));
    assert.deepEqual(at(dashboard, "spec", "instanceSelector"), { matchLabels: { dashboards: "grafana" } });
    const defaults = only(await render({}), "ConfigMap", "-dashboard");
    assert.equal(defaults.metadata.labels?.grafana_dashboard, "1");
  });

  it("monitors and network policies select the right pods and ports", async () => {
    const objects = await render(ALL_ON);
    const serviceMonitor = only(objects, "ServiceMonitor");
    assert.equal(serviceMonitor.metadata.labels?.release, "kube-prometheus-stack");
    assert.equal(at(serviceMonitor, "spec", "endpoints", 0, "port"), "metrics");
    const monitored = objects.filter(
      (o) =>
        o.kind === "Service" &&
        selects(at(serviceMonitor, "spec", "selector", "matchLabels") as Record<string, string>, o.metadata.labels) &&
        ["agent", "controller"].includes(o.metadata.labels?.["app.kubernetes.io/component"] ?? ""),
    );
    assert.deepEqual(monitored.map((s) => s.metadata.name).sort(), [
      `${RELEASE}-shoal-agent-metrics`,
      `${RELEASE}-shoal-controller-metrics`,
    ]);
    const podMonitor = only(objects, "PodMonitor");
    const podSelector = at(podMonitor, "spec", "selector", "matchLabels") as Record<string, string>;
    assert.ok(selects(podSelector, podLabels(only(objects, "DaemonSet"))) && selects(podSelector, podLabels(only(objects, "Deployment"))));
    const agentPolicy = only(objects, "NetworkPolicy", "-agent");
    const rules = at(agentPolicy, "spec", "ingress") as { ports: { port: string }[]; from: Record<string, unknown>[] }[];
    const byPort = new Map(rules.map((r) => [r.ports[0]?.port ?? "", r.from]));
    assert.deepEqual(byPort.get("mirror"), [{ ipBlock: { cidr: "10.0.0.0/16" } }]);
    assert.ok(
      selects(at(byPort.get("peer"), 0, "podSelector", "matchLabels") as Record<string, string>, podLabels(only(objects, "DaemonSet"))),
      "peers: from agents",
    );
    assert.ok(byPort.get("metrics") !== undefined, "metrics: from monitoring");
    const controllerPolicy = only(objects, "NetworkPolicy", "-controller");
    const trackerRule = (at(controllerPolicy, "spec", "ingress") as { ports: { port: string }[]; from: unknown[] }[]).find(
      (r) => r.ports[0]?.port === "tracker",
    );
    assert.ok(
      selects(at(trackerRule, "from", 0, "podSelector", "matchLabels") as Record<string, string>, podLabels(only(objects, "DaemonSet"))),
      "tracker: from agents",
    );
  });

  it("identity: one generated CA (Secret for the controller, its certificate alone for the agents), projected audience-bound tokens, issuer flags and port, NetworkPolicy on by default", async () => {
    const objects = await render({});
    const secret = only(objects, "Secret", "-ca");
    assert.equal(secret.type, "kubernetes.io/tls");
    const data = secret.data as Record<string, string>;
    const caPem = Buffer.from(data["tls.crt"] ?? "", "base64").toString();
    const ca = new X509Certificate(caPem);
    assert.equal(ca.ca, true, "a CA certificate");
    assert.ok(ca.checkPrivateKey(createPrivateKey(Buffer.from(data["tls.key"] ?? "", "base64").toString())), "with its key");
    assert.equal(
      (only(objects, "ConfigMap", "-ca-bundle").data as Record<string, string>)["ca.crt"],
      caPem,
      "the bundle is the same CA, without its key",
    );
    // Agents: the token (for the controller's audience) and the bundle, never the Secret.
    const ds = only(objects, "DaemonSet");
    const volume = (podSpec(ds).volumes as { name: string; projected?: { sources: Record<string, unknown>[] }; secret?: unknown }[]).find(
      (v) => v.name === "identity",
    );
    assert.deepEqual(volume?.projected?.sources, [
      { serviceAccountToken: { audience: "shoal", expirationSeconds: 3600, path: "token" } },
      { configMap: { name: `${RELEASE}-shoal-ca-bundle`, items: [{ key: "ca.crt", path: "ca.crt" }] } },
    ]);
    assert.ok(
      !(podSpec(ds).volumes as { secret?: { secretName?: string } }[]).some((v) => v.secret?.secretName === secret.metadata.name),
      "the CA Secret is never mounted in agents",
    );
    const config = only(objects, "ConfigMap", "-agent").data as Record<string, string>;
    assert.equal(config.SHOAL_IDENTITY_ISSUER, `${RELEASE}-shoal-tracker.${NAMESPACE}.svc.cluster.local:7071`);
    assert.equal(config.SHOAL_TLS_CA, "/var/run/secrets/shoal/ca.crt");
    assert.equal(config.SHOAL_IDENTITY_TOKEN, "/var/run/secrets/shoal/token");
    const args = container(only(objects, "Deployment"), "controller").args ?? [];
    for (const flag of [
      `--ca-secret=${secret.metadata.name}`,
      "--issuer-listen=0.0.0.0:7071",
      "--cert-lifetime=24h",
      "--token-audience=shoal",
    ])
      assert.ok(args.includes(flag), flag);
    assert.ok((at(only(objects, "Service", "-tracker"), "spec", "ports") as { name: string }[]).some((p) => p.name === "issuer"));
    const issuerRule = (at(only(objects, "NetworkPolicy", "-controller"), "spec", "ingress") as { ports: { port: string }[] }[]).some((r) =>
      r.ports.some((p) => p.port === "issuer"),
    );
    assert.ok(issuerRule, "the issuer port is open to agents");
    // hostNetwork without node CIDRs: no NetworkPolicy (it would not apply to agents, and would lock them out of the controller).
    assert.equal((await render({ agent: { hostNetwork: true } })).filter((o) => o.kind === "NetworkPolicy").length, 0);
    // Bring your own CA: no Secret rendered, the bundle given, and a clear failure without one.
    const own = await render({ identity: { ca: { existingSecret: "my-ca", bundle: caPem } } });
    assert.equal(own.filter((o) => o.kind === "Secret").length, 0);
    assert.ok(container(only(own, "Deployment"), "controller").args?.includes("--ca-secret=my-ca"));
    const missing = await template({ identity: { ca: { existingSecret: "my-ca" } } });
    assert.equal(missing.ok, false);
    assert.match(missing.stderr, /identity\.ca\.bundle .* is required with identity\.ca\.existingSecret/);
  });
});
