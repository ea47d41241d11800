// N node namespaces plus origin, cache and control namespaces, each attached by a veth pair to a
// bridge that lives in a namespace of its own, with tc tbf caps on the links. Nothing is created in
// the root namespace except the namespaces themselves.
import { randomBytes } from "node:crypto";
import { HarnessError } from "../support/errors.js";
import { debugLog, describeError } from "../support/process.js";
import { registerEmergencyCleanup } from "./emergency-cleanup.js";
import {
  type InterfaceCounter,
  addNetns,
  deleteNetns,
  deleteNetnsSync,
  ip,
  listNetns,
  netnsPids,
  processAlive,
  readCounter,
  shapeEgress,
} from "./ip.js";

export const MAX_NODES = 200;
/** Jumbo frames: the kernel's byte counters then exceed the payload by ~0.2% instead of ~4.5%. */
export const LINK_MTU = 9000;
/** The interface every endpoint namespace sees. */
export const ENDPOINT_IFNAME = "eth0";
const BRIDGE_IFNAME = "br0";
/** Third octet of 10.213.X.0/24 is picked at random; this many tries to find one unused here. */
const SUBNET_ATTEMPTS = 20;
const SUBNET_PREFIX = "10.213";
/** Host part of the fixed endpoints; node i (0-based) is FIRST_NODE_HOST + i. */
const ORIGIN_HOST = 2;
const CACHE_HOST = 3;
const CONTROL_HOST = 4;
const FIRST_NODE_HOST = 11;
/** Names this harness gives its namespaces: shoal-<pid>-<4 hex>-<role>. Stale cleanup touches only these. */
export const NETNS_NAME_PATTERN = /^shoal-(\d+)-[0-9a-f]{4}-[a-z0-9]+$/;

export interface TopologyOptions {
  readonly nodes: number;
  /** u: what each node can send (egress of its veth inside its namespace), bytes/s. */
  readonly nodeUploadBytesPerSecond: number;
  /** d: what each node can receive (egress of the bridge-side veth), bytes/s. */
  readonly nodeDownloadBytesPerSecond: number;
  /** u_s: the origin's egress, bytes/s. */
  readonly originBytesPerSecond: number;
  /** The pull-through cache's link, both ways; default the node's upload rate ("node-sized"). */
  readonly cacheBytesPerSecond?: number;
  readonly signal?: AbortSignal;
}

export type EndpointRole = "node" | "origin" | "cache" | "control";

export interface Endpoint {
  readonly role: EndpointRole;
  /** `node-1`…, `origin`, `cache`, `control`. */
  readonly name: string;
  readonly netns: string;
  /** IPv4 address on the bridge's subnet. */
  readonly address: string;
  /** Name of the veth end in the bridge namespace. */
  readonly bridgePort: string;
}

/** A live topology; `destroy()` deletes every namespace it created. */
export class NetnsTopology {
  private destroyed = false;

  private constructor(
    readonly prefix: string,
    readonly bridgeNetns: string,
    readonly origin: Endpoint,
    readonly cache: Endpoint,
    readonly control: Endpoint,
    readonly nodes: readonly Endpoint[],
    readonly options: TopologyOptions,
    private readonly unregister: () => void,
  ) {}

  static async create(options: TopologyOptions): Promise<NetnsTopology> {
    validate(options);
    const { signal } = options;
    await cleanupStaleNamespaces(signal);
    const prefix = `shoal-${process.pid}-${randomBytes(2).toString("hex")}-`;
    const subnet = await pickSubnet(signal);
    const endpoint = (role: EndpointRole, name: string, suffix: string, host: number): Endpoint => ({
      role,
      name,
      netns: `${prefix}${suffix}`,
      address: `${subnet}.${host}`,
      bridgePort: `p-${suffix}`,
    });
    const origin = endpoint("origin", "origin", "origin", ORIGIN_HOST);
    const cache = endpoint("cache", "cache", "cache", CACHE_HOST);
    const control = endpoint("control", "control", "ctl", CONTROL_HOST);
    const nodes = Array.from({ length: options.nodes }, (_, i) => endpoint("node", `node-${i + 1}`, `n${i + 1}`, FIRST_NODE_HOST + i));
    const bridgeNetns = `${prefix}br`;
    const all = [origin, cache, control, ...nodes];
    const created: string[] = [];
    const unregister = registerEmergencyCleanup({
      name: `namespaces ${prefix}*`,
      run: () => {
        for (const name of created) deleteNetnsSync(name);
      },
    });
    try {
      for (const name of [bridgeNetns, ...all.map((e) => e.netns)]) {
        created.push(name);
        await addNetns(name, signal);
      }
      await ip(["-n", bridgeNetns, "link", "add", BRIDGE_IFNAME, "type", "bridge"], signal);
      await ip(["-n", bridgeNetns, "link", "set", BRIDGE_IFNAME, "mtu", String(LINK_MTU), "up"], signal);
      for (const e of all) await attach(bridgeNetns, e, signal);
      for (const node of nodes) {
        await shapeEgress(node.netns, ENDPOINT_IFNAME, options.nodeUploadBytesPerSecond, signal);
        await shapeEgress(bridgeNetns, node.bridgePort, options.nodeDownloadBytesPerSecond, signal);
      }
      await shapeEgress(origin.netns, ENDPOINT_IFNAME, options.originBytesPerSecond, signal);
      const cacheRate = options.cacheBytesPerSecond ?? options.nodeUploadBytesPerSecond;
      await shapeEgress(cache.netns, ENDPOINT_IFNAME, cacheRate, signal);
      await shapeEgress(bridgeNetns, cache.bridgePort, cacheRate, signal);
      debugLog(`netns: topology ${prefix}* on ${subnet}.0/24 with ${nodes.length} nodes`);
      return new NetnsTopology(prefix, bridgeNetns, origin, cache, control, nodes, options, unregister);
    } catch (error) {
      for (const name of created.reverse()) await deleteNetns(name).catch(() => undefined);
      unregister();
      throw new HarnessError("ERR_HARNESS_START", `cannot build the netns topology ${prefix}*: ${describeError(error)}`, { cause: error });
    }
  }

  /** Every namespace of this topology, bridge first. */
  get namespaces(): string[] {
    return [this.bridgeNetns, ...[this.origin, this.cache, this.control, ...this.nodes].map((e) => e.netns)];
  }

  /** A kernel counter of the endpoint's own interface: tx_bytes is what it sent. */
  async counter(endpoint: Endpoint, counter: InterfaceCounter, signal?: AbortSignal): Promise<number> {
    return readCounter(endpoint.netns, ENDPOINT_IFNAME, counter, signal);
  }

  /** tx_bytes and rx_bytes of every node, read in parallel. */
  async nodeCounters(signal?: AbortSignal): Promise<{ tx: number; rx: number }[]> {
    return Promise.all(
      this.nodes.map(async (node) => ({
        tx: await this.counter(node, "tx_bytes", signal),
        rx: await this.counter(node, "rx_bytes", signal),
      })),
    );
  }

  /**
   * Deletes every namespace. Processes inside must have been stopped (a namespace with processes
   * in it disappears from the list but lives on until they exit). Idempotent.
   */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    const failures: string[] = [];
    for (const name of this.namespaces.reverse()) {
      await deleteNetns(name).catch((error: unknown) => failures.push(`${name}: ${describeError(error)}`));
    }
    this.unregister();
    if (failures.length > 0) throw new HarnessError("ERR_HARNESS_STOP", `cannot delete namespaces: ${failures.join("; ")}`);
  }
}

function validate(options: TopologyOptions): void {
  const fail = (message: string): never => {
    throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", message);
  };
  if (!Number.isInteger(options.nodes) || options.nodes < 1 || options.nodes > MAX_NODES)
    fail(`nodes must be an integer 1–${MAX_NODES}, got ${options.nodes}`);
  for (const [name, rate] of [
    ["nodeUploadBytesPerSecond", options.nodeUploadBytesPerSecond],
    ["nodeDownloadBytesPerSecond", options.nodeDownloadBytesPerSecond],
    ["originBytesPerSecond", options.originBytesPerSecond],
    ["cacheBytesPerSecond", options.cacheBytesPerSecond ?? options.nodeUploadBytesPerSecond],
  ] as const) {
    if (!(Number.isFinite(rate) && rate > 0)) fail(`${name} must be a positive number of bytes/s, got ${rate}`);
  }
}

/** A veth pair: one end a port of the bridge, the other `eth0` inside the endpoint's namespace. */
async function attach(bridgeNetns: string, e: Endpoint, signal?: AbortSignal): Promise<void> {
  await ip(["-n", bridgeNetns, "link", "add", e.bridgePort, "type", "veth", "peer", "name", ENDPOINT_IFNAME, "netns", e.netns], signal);
  await ip(["-n", bridgeNetns, "link", "set", e.bridgePort, "master", BRIDGE_IFNAME, "mtu", String(LINK_MTU), "up"], signal);
  await ip(["-n", e.netns, "link", "set", ENDPOINT_IFNAME, "mtu", String(LINK_MTU), "up"], signal);
  await ip(["-n", e.netns, "addr", "add", `${e.address}/24`, "dev", ENDPOINT_IFNAME], signal);
}

/**
 * 10.213.X with X unused by the root namespace's addresses and routes. Namespaces are isolated, so
 * overlapping runs would not collide anyway; this keeps addresses unambiguous in logs.
 */
async function pickSubnet(signal?: AbortSignal): Promise<string> {
  const used = `${await ip(["-o", "addr"], signal)}\n${await ip(["route"], signal)}`;
  for (let attempt = 0; attempt < SUBNET_ATTEMPTS; attempt++) {
    const candidate = `${SUBNET_PREFIX}.${1 + (randomBytes(1).readUInt8(0) % 254)}`;
    if (!used.includes(`${candidate}.`)) return candidate;
  }
  throw new HarnessError("ERR_HARNESS_START", `no unused ${SUBNET_PREFIX}.X.0/24 subnet found in ${SUBNET_ATTEMPTS} tries`);
}

/**
 * Deletes namespaces left by a crashed run of this harness: names matching NETNS_NAME_PATTERN whose
 * creating process is gone. Processes still inside them were started by that run; they are killed
 * by PID first. Returns the names deleted.
 */
export async function cleanupStaleNamespaces(signal?: AbortSignal): Promise<string[]> {
  const stale = (await listNetns(signal)).filter((name) => {
    const owner = NETNS_NAME_PATTERN.exec(name)?.[1];
    return owner !== undefined && Number(owner) !== process.pid && !processAlive(Number(owner));
  });
  for (const name of stale) {
    for (const pid of await netnsPids(name, signal).catch(() => [])) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Gone meanwhile.
      }
    }
    await deleteNetns(name, signal);
    debugLog(`netns: deleted stale namespace ${name}`);
  }
  return stale;
}

/** Namespaces whose names start with `prefix`: what a test checks is empty after teardown. */
export async function namespacesWithPrefix(prefix: string, signal?: AbortSignal): Promise<string[]> {
  return (await listNetns(signal)).filter((name) => name.startsWith(prefix));
}
