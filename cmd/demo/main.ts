import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { ConfigError, formatHelp, parseOptions } from "../../pkg/config/index.js";
import { pullImage } from "../../pkg/client/index.js";
import { generateImageLayout } from "../../pkg/imagegen/index.js";
import { LayoutRegistry } from "../../pkg/origin/index.js";
import { startAgent } from "../agent/agent.js";
import { agentOptionSpecs } from "../agent/options.js";
import { demoOptionSpecs } from "./options.js";

const SUMMARY =
  "Runs Shoal on this machine with no cluster and no root: generates an image, serves it from an embedded origin registry, and pulls it through an agent, cold then warm.";
const REPO = "demo/app";
const TAG = "v1";
const MB = 1e6;

/** `shoal demo`. Returns the exit code. */
export async function demoMain(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  let parsed;
  try {
    parsed = parseOptions(demoOptionSpecs, argv, env);
    if (parsed.help) {
      console.log(formatHelp("shoal demo [flags]", SUMMARY, demoOptionSpecs));
      return 0;
    }
    if (parsed.positionals.length > 0) throw new ConfigError("ERR_CONFIG_UNKNOWN_FLAG", `unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
  } catch (error) {
    console.error(`shoal demo: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }
  const options = parsed.options;
  const work = options.workDir ?? (await mkdtemp(join(tmpdir(), "shoal-demo-")));
  const controller = new AbortController();
  const onSignal = (): void => {
    controller.abort(new Error("interrupted"));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const say = (line: string): void => {
    if (!options.json) console.log(line);
  };
  let origin: LayoutRegistry | undefined;
  let agent: Awaited<ReturnType<typeof startAgent>> | undefined;
  try {
    say(`generating a ${(options.imageSize / MB).toFixed(0)} MB image with ${options.layers} layers…`);
    const layout = await generateImageLayout({ dir: join(work, "image"), seed: "shoal-demo", layers: options.layers, totalBytes: options.imageSize, tag: TAG, signal: controller.signal });
    origin = await LayoutRegistry.start({ dir: layout.dir, ...(options.originRate > 0 ? { egressBytesPerSecond: options.originRate } : {}) });
    const agentOptions = parseOptions(agentOptionSpecs, ["--mirror-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--data-dir", join(work, "agent"), "--upstream", `${origin.host}=${origin.url}`], {}).options;
    agent = await startAgent(agentOptions, pino({ level: "warn" }));
    say(`origin ${origin.url} (egress cap ${options.originRate > 0 ? `${((options.originRate * 8) / MB).toFixed(0)} Mbit/s` : "none"}), agent mirror ${agent.mirrorUrl}`);
    const pulls = [];
    for (const phase of ["cold", "warm"] as const) {
      const originBefore = origin.bytesServed;
      const result = await pullImage({ baseUrl: agent.mirrorUrl, ns: origin.host, name: REPO, reference: TAG, signal: controller.signal });
      pulls.push({ phase, seconds: result.seconds, bytes: result.bytes, originBytes: origin.bytesServed - originBefore, digest: result.digest });
      say(`${phase.padEnd(5)} pull through the agent: ${(result.bytes / MB).toFixed(1)} MB in ${result.seconds.toFixed(2)} s, ${((origin.bytesServed - originBefore) / MB).toFixed(1)} MB from the origin, every digest verified`);
    }
    const total = pulls.reduce((sum, p) => sum + p.bytes, 0);
    const fromOrigin = pulls.reduce((sum, p) => sum + p.originBytes, 0);
    const result = { imageBytes: pulls[0]?.bytes ?? 0, pulls, originBytes: fromOrigin, offloadPercent: total === 0 ? 0 : (1 - fromOrigin / total) * 100 };
    if (options.json) console.log(JSON.stringify(result, null, 2));
    else say(`origin offload over both pulls: ${result.offloadPercent.toFixed(1)}%  (metrics: ${agent.metricsUrl}/metrics)`);
    return 0;
  } catch (error) {
    console.error(`shoal demo: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await agent?.stop(0).catch(() => undefined);
    await origin?.close().catch(() => undefined);
    if (options.workDir === undefined) await rm(work, { recursive: true, force: true });
  }
}
