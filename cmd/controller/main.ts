import { pino } from "pino";
import { ConfigError, formatHelp, parseOptions } from "../../pkg/config/index.js";
import { startController } from "./controller.js";
import type { KubernetesSettings } from "./kubernetes-settings.js";
import { controllerOptionSpecs, validateControllerOptions } from "./options.js";

const SUMMARY =
  "Runs the controller: the tracker agents announce their blobs to and look holders up in, and that grants the origin fetch of each blob to one agent at a time.";

/** `shoal controller`: parse flags/env, start, stop gracefully on SIGTERM/SIGINT. Returns the exit code. */
export async function controllerMain(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  let parsed;
  let kubernetes: KubernetesSettings | undefined;
  try {
    parsed = parseOptions(controllerOptionSpecs, argv, env);
    if (parsed.help) {
      console.log(formatHelp("shoal controller [flags]", SUMMARY, controllerOptionSpecs));
      return 0;
    }
    if (parsed.positionals.length > 0)
      throw new ConfigError("ERR_CONFIG_UNKNOWN_FLAG", `unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    validateControllerOptions(parsed.options);
    // The Kubernetes client (tens of MB of heap) is loaded only for --membership kubernetes.
    if (parsed.options.membership === "kubernetes")
      kubernetes = (await import("./kubernetes-settings.js")).resolveKubernetesSettings(parsed.options, env);
  } catch (error) {
    console.error(`shoal controller: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }
  const options = parsed.options;
  const logger = pino({ level: options.logLevel, base: { component: "controller" } });
  let controller;
  try {
    controller = await startController(options, logger, kubernetes);
  } catch (error) {
    logger.fatal({ err: error }, "controller failed to start");
    console.error(`shoal controller: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
  const running = controller;
  await new Promise<void>((resolve) => {
    const onSignal = (signal: string): void => {
      logger.info({ signal }, "stopping");
      process.off("SIGTERM", onSignal);
      process.off("SIGINT", onSignal);
      running.stop().then(resolve, (error: unknown) => {
        logger.error({ err: error }, "unclean stop");
        resolve();
      });
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
  return 0;
}
