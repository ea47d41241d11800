// npm run bench:rotation — certificate rotation under load: a controller with Kubernetes membership
// against the API double (TokenReview, Pods, the CA Secret), N agents in process holding certificates
// it issues with a short lifetime (they renew after two thirds of it), all pulling a fresh blob at once,
// round after round, for a fixed time. Prints rounds, transfers and failed transfers, certificates per
// agent, origin copies per blob and CPU-s/GB of the process. Asserts nothing.
import { CA_SECRET, TestCluster } from "../../pkg/controller/testing/test-cluster.js";
import { digestOf } from "../../pkg/oci/index.js";
import { procStats } from "../../pkg/metrics/index.js";
import { benchOptions, bytesFlag, durationFlag, integerFlag } from "./bench-flags.js";

const USAGE = `Usage: npm run bench:rotation -- [flags]

Certificate rotation under load: a controller with Kubernetes membership against the API double, N agents
in process holding short-lived certificates it issues, all pulling a fresh blob at once, round after
round, for a fixed time.

  --agents N           agents (1-200; default 8)
  --duration D         how long to pull (1s to 24h; default 5m)
  --lifetime D         the certificates' lifetime; agents renew after two thirds of it (10s to 30 days; default 2m)
  --blob-size SIZE     each round's blob (1KiB to 1GiB; default 8MiB)
  --help`;

const HOUR_MS = 3_600_000;
const options = benchOptions(USAGE, { agents: "8", duration: "5m", lifetime: "2m", "blob-size": "8MiB" }, (flags) => ({
  agentCount: integerFlag("agents", flags.agents, 1, 200),
  durationMs: durationFlag("duration", flags.duration, 1_000, 24 * HOUR_MS),
  lifetimeMs: durationFlag("lifetime", flags.lifetime, 10_000, 30 * 24 * HOUR_MS),
  blobSize: bytesFlag("blob-size", flags["blob-size"], 1024, 1024 ** 3),
  // As given, for the report.
  text: { duration: flags.duration ?? "", lifetime: flags.lifetime ?? "", blobSize: flags["blob-size"] ?? "" },
}));

async function main(): Promise<void> {
  const { agentCount, durationMs, lifetimeMs, blobSize } = options;
  const cluster = await TestCluster.start();
  try {
    const replica = await cluster.startReplica("controller-a", {
      certificates: {
        caSecret: CA_SECRET,
        issuerListen: { host: "127.0.0.1", port: 0 },
        lifetimeMs,
        tokenAudience: "shoal",
        retryInitialMs: 200,
      },
    });
    const names = Array.from({ length: agentCount }, (_, i) => ({ pod: `agent-${i + 1}`, node: `node-${i + 1}`, ip: `127.0.1.${i + 1}` }));
    for (const n of names) cluster.addAgentPod(n.pod, n.node, n.ip);
    while (replica.controller.ready() !== true) await new Promise((r) => setTimeout(r, 50));
    await cluster.forwarder.probe();
    await cluster.issuerForwarder.probe();
    const agents = await Promise.all(names.map((n) => cluster.startAgent(n.pod, n.node, n.ip)));
    const certificates = agents.map(() => new Set<string>());
    agents.forEach((agent, i) => {
      const seen = certificates[i];
      agent.certificate.subscribe((m) => seen?.add(m.certificatePem));
    });
    await Promise.all(agents.map((a) => a.certificate.whenReady(AbortSignal.timeout(30_000))));
    agents.forEach((a, i) => {
      const current = a.material;
      if (current !== undefined) certificates[i]?.add(current.certificatePem);
    });
    while (!agents.every((a) => a.tracker.connected)) await new Promise((r) => setTimeout(r, 50));
    console.error(
      `${agentCount} agents with certificates of ${options.text.lifetime}; pulling ${options.text.blobSize} blobs for ${options.text.duration}…`,
    );
    const before = await procStats(process.pid);
    const started = Date.now();
    let rounds = 0;
    let transfers = 0;
    let failures = 0;
    let bytes = 0;
    const originBefore = cluster.origin.blobBytesServed;
    while (Date.now() - started < durationMs) {
      const blob = await cluster.origin.addBlob({ size: blobSize + rounds, seed: `rotation-${rounds}` });
      const results = await Promise.allSettled(
        agents.map((a) => a.pull(cluster.origin.host, "bench/rotation", blob.digest, AbortSignal.timeout(120_000))),
      );
      for (const result of results) {
        transfers++;
        if (result.status === "rejected" || digestOf(result.value.bytes) !== blob.digest) {
          failures++;
          console.error(`round ${rounds}: ${result.status === "rejected" ? String(result.reason) : "digest mismatch"}`);
        } else bytes += result.value.bytes.length;
      }
      rounds++;
      // The in-process stores are in memory: keep them bounded (each agent withdraws the blob).
      await Promise.all(agents.map((a) => a.forget(blob.digest)));
    }
    const elapsed = (Date.now() - started) / 1000;
    const after = await procStats(process.pid);
    const originCopies =
      (cluster.origin.blobBytesServed - originBefore) / Array.from({ length: rounds }, (_, r) => blobSize + r).reduce((a, b) => a + b, 0);
    const perAgent = certificates.map((s) => s.size);
    const issued = await replica.metrics.registry.getSingleMetricAsString("shoal_identity_certificates_issued_total");
    console.log(
      `rounds ${rounds} in ${elapsed.toFixed(0)} s, transfers ${transfers}, failed ${failures}, ${(bytes / 1e9).toFixed(2)} GB pulled`,
    );
    console.log(
      `certificates per agent (first + rotations): ${perAgent.join(" ")}; ${
        issued
          .split("\n")
          .find((l) => !l.startsWith("#"))
          ?.trim() ?? ""
      }`,
    );
    console.log(
      `origin copies per blob: ${originCopies.toFixed(3)}; process CPU ${((after.cpuSeconds - before.cpuSeconds) / (bytes / 1e9)).toFixed(2)} CPU-s/GB (controller, ${agentCount} agents and the origin in one process), peak RSS ${(after.peakRssBytes / 1e6).toFixed(0)} MB`,
    );
  } finally {
    await cluster.close();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
