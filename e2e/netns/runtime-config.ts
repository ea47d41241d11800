// How a node's containerd is pointed at a mirror. Kept to this one function on purpose: the harness
// writes a minimal hosts.toml of its own here, and if it is to use `shoal configure`'s writer
// (pkg/runtime) instead, this is the one place to change.
import { type Containerd, writeHostsToml } from "../support/containerd.js";

/**
 * Makes `containerd` pull `registryHost` (e.g. `10.213.7.2:5000`) through `mirrorUrl`, falling back
 * to `serverUrl` (the registry itself) when the mirror fails, as a node's certs.d/hosts.toml does.
 */
export async function configureRegistryMirror(
  containerd: Containerd,
  registryHost: string,
  serverUrl: string,
  mirrorUrl: string,
): Promise<void> {
  await writeHostsToml(containerd.hostsDir, registryHost, { server: serverUrl, mirror: mirrorUrl });
}
