#!/usr/bin/env node
import { agentMain } from "../agent/main.js";
import { configureMain } from "../configure/main.js";
import { controllerMain } from "../controller/main.js";
import { demoMain } from "../demo/main.js";
import { fetchMain } from "../fetch/main.js";
import { VERSION } from "./version.js";

const COMMANDS: Record<string, { summary: string; run: (argv: readonly string[], env: NodeJS.ProcessEnv) => Promise<number> }> = {
  agent: { summary: "Run the node agent (registry mirror for containerd).", run: agentMain },
  controller: { summary: "Run the controller (tracker: who holds which blob, origin grants).", run: controllerMain },
  fetch: { summary: "Pull an OCI artifact (image, model, build) through the local agent into a directory.", run: fetchMain },
  configure: { summary: "Point the node's container runtime (containerd, CRI-O) at the agent; --restore undoes it.", run: configureMain },
  demo: { summary: "Run a Shoal swarm on this machine: embedded origin, tracker, N agents, P2P vs client-server.", run: demoMain },
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
  return await command.run(rest, process.env);
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
