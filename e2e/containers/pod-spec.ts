// What the kubelet makes of a rendered container spec: the command line after $(VAR) expansion, the
// environment (ConfigMaps, Downward API), user, read-only root, capabilities, mounts, memory limit,
// probes and preStop hook. Only the fields the chart uses are modelled; anything else is an error,
// so a chart change the harness does not understand fails loudly instead of being ignored.
import { HarnessError } from "../support/errors.js";

export interface EnvVarSpec {
  readonly name: string;
  readonly value?: string;
  readonly valueFrom?: { readonly fieldRef?: { readonly fieldPath: string } };
}

export interface ProbeSpec {
  readonly httpGet?: { readonly path: string; readonly port: number | string };
  readonly periodSeconds?: number;
  readonly failureThreshold?: number;
  readonly timeoutSeconds?: number;
}

export interface SecurityContextSpec {
  readonly runAsUser?: number;
  readonly runAsGroup?: number;
  readonly runAsNonRoot?: boolean;
  readonly readOnlyRootFilesystem?: boolean;
  readonly allowPrivilegeEscalation?: boolean;
  readonly capabilities?: { readonly drop?: readonly string[]; readonly add?: readonly string[] };
}

export interface ContainerSpec {
  readonly name: string;
  readonly image: string;
  readonly command?: readonly string[];
  readonly args?: readonly string[];
  readonly env?: readonly EnvVarSpec[];
  readonly envFrom?: readonly { readonly configMapRef?: { readonly name: string } }[];
  readonly ports?: readonly { readonly name?: string; readonly containerPort: number; readonly hostPort?: number }[];
  readonly startupProbe?: ProbeSpec;
  readonly readinessProbe?: ProbeSpec;
  readonly livenessProbe?: ProbeSpec;
  readonly securityContext?: SecurityContextSpec;
  readonly volumeMounts?: readonly { readonly name: string; readonly mountPath: string; readonly readOnly?: boolean }[];
  readonly resources?: { readonly limits?: { readonly memory?: string } };
  readonly lifecycle?: { readonly preStop?: { readonly exec?: { readonly command: readonly string[] } } };
}

export interface ProjectionSpec {
  readonly serviceAccountToken?: { readonly audience?: string; readonly expirationSeconds?: number; readonly path: string };
  readonly configMap?: { readonly name: string; readonly items?: readonly { readonly key: string; readonly path: string }[] };
}

export interface VolumeSpec {
  readonly name: string;
  readonly hostPath?: { readonly path: string; readonly type?: string };
  readonly emptyDir?: { readonly sizeLimit?: string };
  readonly projected?: { readonly sources: readonly ProjectionSpec[] };
}

export interface PodSpec {
  readonly containers: readonly ContainerSpec[];
  readonly initContainers?: readonly ContainerSpec[];
  readonly volumes?: readonly VolumeSpec[];
  readonly securityContext?: SecurityContextSpec;
  readonly terminationGracePeriodSeconds?: number;
  readonly automountServiceAccountToken?: boolean;
  readonly serviceAccountName?: string;
  readonly hostNetwork?: boolean;
}

/** What the kubelet knows about the pod when it starts its containers. */
export interface DownwardValues {
  readonly podName: string;
  readonly namespace: string;
  readonly podIP: string;
  readonly hostIP: string;
  readonly nodeName: string;
}

export interface ResolvedProbe {
  readonly path: string;
  readonly port: number;
  readonly periodSeconds: number;
  readonly failureThreshold: number;
  readonly timeoutSeconds: number;
}

export interface ResolvedContainer {
  readonly name: string;
  readonly image: string;
  /** The image's ENTRYPOINT replaced (`command`), or undefined to keep it. */
  readonly entrypoint: readonly string[] | undefined;
  /** The image's CMD replaced (`args`), or undefined to keep it. */
  readonly cmd: readonly string[] | undefined;
  readonly env: Readonly<Record<string, string>>;
  /** `uid:gid`, or undefined for the image's USER. */
  readonly user: string | undefined;
  readonly readOnlyRootFilesystem: boolean;
  readonly noNewPrivileges: boolean;
  readonly capDrop: readonly string[];
  readonly capAdd: readonly string[];
  readonly mounts: readonly { readonly volume: string; readonly target: string; readonly readOnly: boolean }[];
  readonly memoryLimitBytes: number | undefined;
  readonly ports: ReadonlyMap<string, number>;
  readonly startupProbe: ResolvedProbe | undefined;
  readonly readinessProbe: ResolvedProbe | undefined;
  readonly livenessProbe: ResolvedProbe | undefined;
  readonly preStop: readonly string[] | undefined;
}

const FIELD_PATHS: Readonly<Record<string, (d: DownwardValues) => string>> = {
  "metadata.name": (d) => d.podName,
  "metadata.namespace": (d) => d.namespace,
  "status.podIP": (d) => d.podIP,
  "status.hostIP": (d) => d.hostIP,
  "spec.nodeName": (d) => d.nodeName,
};

function unsupported(what: string): HarnessError {
  return new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `the container harness does not model ${what}`);
}

/**
 * Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`, and a
 * reference to an undefined variable stays as written.
 */
export function expandVariables(text: string, env: Readonly<Record<string, string>>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (match, name: string | undefined) => {
    if (name === undefined) return "$";
    return Object.hasOwn(env, name) ? (env[name] ?? "") : match;
  });
}

const QUANTITY_UNITS: Readonly<Record<string, number>> = {
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
  Ti: 1024 ** 4,
};

/** A memory quantity (`512Mi`, `1Gi`, `2e9`, `128M`) in bytes. */
export function parseQuantity(value: string): number {
  const match = /^(\d+(?:\.\d+)?(?:e\d+)?)([kMGT]i?)?$/.exec(value);
  const unit = QUANTITY_UNITS[match?.[2] ?? ""];
  if (match === null || unit === undefined) throw unsupported(`the quantity ${JSON.stringify(value)}`);
  return Math.round(Number(match[1]) * unit);
}

function resolveProbe(probe: ProbeSpec | undefined, ports: ReadonlyMap<string, number>, container: string): ResolvedProbe | undefined {
  if (probe === undefined) return undefined;
  if (probe.httpGet === undefined) throw unsupported(`a non-HTTP probe (container ${container})`);
  const { port } = probe.httpGet;
  const number = typeof port === "number" ? port : ports.get(port);
  if (number === undefined)
    throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `container ${container}: probe port ${port} is not one of its ports`);
  // Kubernetes' defaults.
  return {
    path: probe.httpGet.path,
    port: number,
    periodSeconds: probe.periodSeconds ?? 10,
    failureThreshold: probe.failureThreshold ?? 3,
    timeoutSeconds: probe.timeoutSeconds ?? 1,
  };
}

/**
 * Resolves one container of a pod as the kubelet would: `env` after `envFrom`, each value expanded
 * against what came before it; `command`/`args` expanded against the whole environment; the pod's
 * security context under the container's.
 */
export function resolveContainer(
  container: ContainerSpec,
  pod: PodSpec,
  downward: DownwardValues,
  configMaps: ReadonlyMap<string, Readonly<Record<string, string>>>,
  serviceEnv: Readonly<Record<string, string>> = {},
): ResolvedContainer {
  const env: Record<string, string> = { ...serviceEnv };
  for (const source of container.envFrom ?? []) {
    if (source.configMapRef === undefined) throw unsupported(`an envFrom source other than configMapRef (container ${container.name})`);
    const data = configMaps.get(source.configMapRef.name);
    if (data === undefined)
      throw new HarnessError(
        "ERR_HARNESS_INVALID_ARGUMENT",
        `container ${container.name}: ConfigMap ${source.configMapRef.name} was not rendered`,
      );
    Object.assign(env, data);
  }
  for (const entry of container.env ?? []) {
    if (entry.valueFrom !== undefined) {
      const path = entry.valueFrom.fieldRef?.fieldPath;
      const read = path === undefined ? undefined : FIELD_PATHS[path];
      if (read === undefined) throw unsupported(`env ${entry.name} from ${JSON.stringify(entry.valueFrom)}`);
      env[entry.name] = read(downward);
    } else {
      env[entry.name] = expandVariables(entry.value ?? "", env);
    }
  }
  const security = { ...pod.securityContext, ...container.securityContext };
  const uid = security.runAsUser;
  if (security.runAsNonRoot === true && (uid === undefined || uid === 0)) {
    // The kubelet refuses such a container; with an image USER it would check that, which we do not model.
    throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `container ${container.name}: runAsNonRoot without a non-zero runAsUser`);
  }
  const ports = new Map<string, number>();
  for (const port of container.ports ?? []) if (port.name !== undefined) ports.set(port.name, port.containerPort);
  const expand = (args: readonly string[] | undefined): readonly string[] | undefined => args?.map((arg) => expandVariables(arg, env));
  const memory = container.resources?.limits?.memory;
  return {
    name: container.name,
    image: container.image,
    entrypoint: expand(container.command),
    cmd: expand(container.args),
    env,
    user: uid === undefined ? undefined : `${uid}:${security.runAsGroup ?? uid}`,
    readOnlyRootFilesystem: security.readOnlyRootFilesystem === true,
    noNewPrivileges: security.allowPrivilegeEscalation === false,
    capDrop: security.capabilities?.drop ?? [],
    capAdd: security.capabilities?.add ?? [],
    mounts: (container.volumeMounts ?? []).map((m) => ({ volume: m.name, target: m.mountPath, readOnly: m.readOnly === true })),
    memoryLimitBytes: memory === undefined ? undefined : parseQuantity(memory),
    ports,
    startupProbe: resolveProbe(container.startupProbe, ports, container.name),
    readinessProbe: resolveProbe(container.readinessProbe, ports, container.name),
    livenessProbe: resolveProbe(container.livenessProbe, ports, container.name),
    // Exec hooks get no $(VAR) expansion in Kubernetes.
    preStop: container.lifecycle?.preStop?.exec?.command,
  };
}
