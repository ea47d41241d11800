import { pino } from "pino";
import { AGENT_V8_FLAGS, applyV8Flags, ConfigError, formatHelp, parseOptions } from "../../pkg/config/index.js";
import { startAgent } from "./agent.js";
import { agentOptionSpecs, validateAgentOptions } from "./options.js";

const SUMMARY = "Runs the node agent: a pull-through OCI registry mirror for containerd with a verified, content-addressed store.";

/** `shoal agent`: parse flags/env, start, stop gracefully on SIGTERM/SIGINT. Returns the exit code. */
export async function agentMain(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  let parsed;
  try {
    parsed = parseOptions(agentOptionSpecs, argv, env);
    if (parsed.help) {
      console.log(formatHelp("shoal agent [flags]", SUMMARY, agentOptionSpecs));
      return 0;
    }
    if (parsed.positionals.length > 0)
      throw new ConfigError("ERR_CONFIG_UNKNOWN_FLAG", `unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    validateAgentOptions(parsed.options);
  } catch (error) {
    console.error(`shoal agent: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }
  const options = parsed.options;
  applyV8Flags(AGENT_V8_FLAGS);
  const logger = pino({ level: options.logLevel, base: { component: "agent" } });
  let agent;
  try {
    agent = await startAgent(options, logger);
  } catch (error) {
    logger.fatal({ err: error }, "agent failed to start");
    console.error(`shoal agent: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
  const running = agent;
  await new Promise<void>((resolve) => {
    const onSignal = (signal: string): void => {
      logger.info({ signal }, "stopping");
      process.off("SIGTERM", onSignal);
      process.off("SIGINT", onSignal);
      running.stop(options.shutdownGrace).then(resolve, (error: unknown) => {
        logger.error({ err: error }, "unclean stop");
        resolve();
      });
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
  return 0;
}
