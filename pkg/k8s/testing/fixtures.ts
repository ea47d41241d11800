import type { ApiObject } from "./object-store.js";

/** The labels the controller's default --agent-selector picks. */
export const AGENT_LABELS: Readonly<Record<string, string>> = { "app.kubernetes.io/name": "shoal", "app.kubernetes.io/component": "agent" };
export const ZONE_LABEL = "topology.kubernetes.io/zone";

export interface PodFixture {
  readonly name: string;
  readonly namespace?: string;
  readonly nodeName: string;
  /** status.podIP (and podIPs); none while the Pod has no sandbox yet. */
  readonly ip?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly phase?: "Pending" | "Running" | "Succeeded" | "Failed";
  readonly ready?: boolean;
  /** spec.serviceAccountName; default "default", as admission sets it. */
  readonly serviceAccount?: string;
}

/** A Pod as the API server would store it (agent labels and namespace "shoal" unless given). */
export function podObject(fixture: PodFixture): ApiObject {
  const ready = fixture.ready ?? true;
  return {
    metadata: { name: fixture.name, namespace: fixture.namespace ?? "shoal", labels: { ...(fixture.labels ?? AGENT_LABELS) } },
    spec: {
      nodeName: fixture.nodeName,
      serviceAccountName: fixture.serviceAccount ?? "default",
      containers: [{ name: "agent", image: "shoal:test" }],
    },
    status: {
      phase: fixture.phase ?? "Running",
      ...(fixture.ip === undefined ? {} : { podIP: fixture.ip, podIPs: [{ ip: fixture.ip }] }),
      conditions: [{ type: "Ready", status: ready ? "True" : "False" }],
    },
  };
}

export interface NodeFixture {
  readonly name: string;
  /** topology.kubernetes.io/zone; no label when absent. */
  readonly zone?: string;
  readonly labels?: Readonly<Record<string, string>>;
}

export function nodeObject(fixture: NodeFixture): ApiObject {
  return {
    metadata: {
      name: fixture.name,
      labels: {
        "kubernetes.io/hostname": fixture.name,
        ...(fixture.zone === undefined ? {} : { [ZONE_LABEL]: fixture.zone }),
        ...fixture.labels,
      },
    },
    spec: {},
    status: { conditions: [{ type: "Ready", status: "True" }] },
  };
}
