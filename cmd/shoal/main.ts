#!/usr/bin/env node
import { VERSION } from "./version.js";

type CommandMain = (argv: readonly string[], env: NodeJS.ProcessEnv) => Promise<number>;

/**
 * Each command is loaded only when it runs: the agent on every node then never loads the controller's
 * Kubernetes client or the demo's image generator (memory and start-up time per node).
 */
const COMMANDS: Record<string, { summary: string; load: () => Promise<CommandMain> }> = {
  agent: {
    summary: "Run the node agent (registry mirror for containerd).",
    load: async () => (await import("../agent/main.js")).agentMain,
  },
  controller: {
    summary: "Run the controller (tracker: who holds which blob, origin grants).",
    load: async () => (await import("../controller/main.js")).controllerMain,
  },
  fetch: {
    summary: "Pull an OCI artifact (image, model, build) through the local agent into a directory.",
    load: async () => (await import("../fetch/main.js")).fetchMain,
  },
  prefetch: {
    summary: "Create an ImagePrefetch: seed images on N agents per zone before a rollout.",
    load: async () => (await import("../prefetch/main.js")).prefetchMain,
  },
  configure: {
    summary: "Point the node's container runtime (containerd, CRI-O) at the agent; --restore undoes it.",
    load: async () => (await import("../configure/main.js")).configureMain,
  },
  demo: {
    summary: "Run a Shoal swarm on this machine: embedded origin, tracker, N agents, P2P vs client-server.",
    load: async () => (await import("../demo/main.js")).demoMain,
  },
};

function usage(): string {
  const lines = ["Usage: shoal <command> [flags]", "", "Commands:"];
  for (const [name, command] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(12)} ${command.summary}`);
  lines.push("", "Run `shoal <command> --help` for the flags of a command.", "`shoal --version` prints the version.");
  return lines.join("\n");
}

async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "version") {
    console.log(VERSION);
    return 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    console.error(`shoal: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return 2;
  }
  const run = await command.load();
  return await run(rest, process.env);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(`shoal: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exitCode = 1;
  },
);
