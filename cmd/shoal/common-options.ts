import type { OptionSpecs } from "../../pkg/config/index.js";

const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function parseLogLevel(raw: string): LogLevel {
  if (!(LOG_LEVELS as readonly string[]).includes(raw)) throw new Error(`expected one of ${LOG_LEVELS.join(", ")}`);
  return raw as LogLevel;
}

/** Options every long-running command takes. */
export const commonOptionSpecs = {
  logLevel: {
    name: "log-level",
    description: "Log level: trace, debug, info, warn, error or fatal.",
    parse: parseLogLevel,
    default: "info",
    schemaEnum: LOG_LEVELS,
  },
} as const satisfies OptionSpecs;
