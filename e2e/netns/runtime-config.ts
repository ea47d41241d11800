// How a node's containerd is pointed at a mirror. Kept to this one function on purpose: `shoal
// configure` (the node runtime configuration of DESIGN.md) will write these files instead, and the
// harness should then call it here and nowhere else.
import { type Containerd, writeHostsToml } from "../support/containerd.js";

/**
 * Makes `containerd` pull `registryHost` (e.g. `10.213.7.2:5000`) through `mirrorUrl`, falling back
 * to `serverUrl` (the registry itself) when the mirror fails, as a node's certs.d/hosts.toml does.
 */
export async function configureRegistryMirror(containerd: Containerd, registryHost: string, serverUrl: string, mirrorUrl: string): Promise<void> {
  await writeHostsToml(containerd.hostsDir, registryHost, { server: serverUrl, mirrors: [{ url: mirrorUrl }] });
}
