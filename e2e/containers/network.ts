// A bridge network of its own per suite: a known subnet (so the gateway, where the host answers, is
// known before any container starts) and the cleanup label.
import { randomBytes } from "node:crypto";
import { HarnessError } from "../support/errors.js";
import { debugLog, describeError } from "../support/process.js";
import { HARNESS_LABELS, dockerode } from "./runtime.js";

/** 10.214.X.0/24 (beside the netns suites' 10.213.X): X at random, retried when Podman has it already. */
const SUBNET_PREFIX = "10.214";
const CREATE_ATTEMPTS = 10;

export class PodNetwork {
  private constructor(
    readonly name: string,
    /** `10.214.X`: the first three octets. */
    readonly prefix: string,
  ) {}

  static async create(namePrefix: string): Promise<PodNetwork> {
    const api = await dockerode();
    const taken = new Set<string>();
    for (const network of await api.listNetworks())
      for (const config of network.IPAM?.Config ?? []) if (config.Subnet !== undefined) taken.add(config.Subnet);
    let lastError: unknown;
    for (let attempt = 0; attempt < CREATE_ATTEMPTS; attempt++) {
      const prefix = `${SUBNET_PREFIX}.${1 + (randomBytes(1).readUInt8(0) % 254)}`;
      if (taken.has(`${prefix}.0/24`)) continue;
      const name = `${namePrefix}-${randomBytes(3).toString("hex")}`;
      try {
        await api.createNetwork({
          Name: name,
          Driver: "bridge",
          IPAM: { Config: [{ Subnet: `${prefix}.0/24`, Gateway: `${prefix}.1` }] },
          Labels: { ...HARNESS_LABELS },
        });
        debugLog(`containers: network ${name} on ${prefix}.0/24`);
        return new PodNetwork(name, prefix);
      } catch (error) {
        lastError = error;
      }
    }
    throw new HarnessError("ERR_HARNESS_START", `cannot create a ${SUBNET_PREFIX}.X.0/24 network: ${describeError(lastError)}`);
  }

  /** Where the host answers on this network (the bridge's address). */
  get gateway(): string {
    return `${this.prefix}.1`;
  }

  /** Removes the network; containers still attached are removed first by whoever owns them. */
  async remove(): Promise<void> {
    await (await dockerode()).getNetwork(this.name).remove({ force: true });
  }

  /** Cuts a container off the network (its interface goes away; its network namespace stays). */
  async disconnect(containerId: string): Promise<void> {
    await (await dockerode()).getNetwork(this.name).disconnect({ Container: containerId, Force: true });
  }

  /** Attaches it again with the address it had, as a node whose link comes back. */
  async reconnect(containerId: string, ip: string): Promise<void> {
    await (
      await dockerode()
    )
      .getNetwork(this.name)
      .connect({ Container: containerId, EndpointConfig: { IPAMConfig: { IPv4Address: ip } } });
  }
}
