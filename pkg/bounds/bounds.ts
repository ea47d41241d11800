// The least time to distribute F bytes to N nodes (docs/architecture.md, "The bounds: what fast means").

export interface LinkRates {
  /** u_s: the origin's upload, bytes/s; 0 = uncapped. */
  readonly originBytesPerSecond: number;
  /** u: each node's upload, bytes/s; 0 = uncapped. */
  readonly uploadBytesPerSecond: number;
  /** d: each node's download, bytes/s; 0 = uncapped. */
  readonly downloadBytesPerSecond: number;
}

export interface DistributionBounds {
  /** max(F/u_s, F/d, N·F/(u_s + N·u)), seconds. */
  readonly p2pSeconds: number;
  /** max(N·F/u_s, F/d), seconds. */
  readonly clientServerSeconds: number;
}

function transferSeconds(bytes: number, bytesPerSecond: number): number {
  return bytesPerSecond > 0 ? bytes / bytesPerSecond : 0;
}

/** The least time to get F bytes to each of N nodes, peer-to-peer and client-server. */
export function distributionBounds(imageBytes: number, nodes: number, rates: LinkRates): DistributionBounds {
  const { originBytesPerSecond: us, uploadBytesPerSecond: u, downloadBytesPerSecond: d } = rates;
  const F = imageBytes;
  const swarmUpload = us > 0 && u > 0 ? (nodes * F) / (us + nodes * u) : 0;
  return {
    p2pSeconds: Math.max(transferSeconds(F, us), transferSeconds(F, d), swarmUpload),
    clientServerSeconds: Math.max(transferSeconds(nodes * F, us), transferSeconds(F, d)),
  };
}
