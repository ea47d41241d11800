import { ConfigError } from "./errors.js";
import { parseBoolean } from "./values.js";

/** One option: a flag `--name`, an environment variable, a parser, a default and a description for --help. */
export interface OptionSpec<T> {
  readonly name: string;
  readonly description: string;
  /** Turns the raw string into a value; throws an Error whose message says what was expected. */
  readonly parse: (raw: string) => T;
  /** Shown in --help and used when neither flag nor environment variable is set. */
  readonly default?: string;
  /** May be given several times; the environment variable then takes a comma-separated list. */
  readonly repeatable?: boolean;
  /** A flag without a value (`--json`); `--name=false` still works. */
  readonly boolean?: boolean;
  /** JSON-schema type for generated schemas (values.schema.json). */
  readonly schemaType?: "string" | "integer" | "number" | "boolean";
  /** The only values accepted, for generated schemas (the parser stays the authority). */
  readonly schemaEnum?: readonly string[];
  /** ECMA-262 pattern a string value must match, for generated schemas (the parser stays the authority). */
  readonly schemaPattern?: string;
}

export type OptionSpecs = Readonly<Record<string, OptionSpec<unknown>>>;

/** The parsed values: one per spec, an array for repeatable ones, undefined when unset with no default. */
export type ParsedOptions<S extends OptionSpecs> = {
  [K in keyof S]: S[K] extends OptionSpec<infer T>
    ? S[K]["repeatable"] extends true
      ? T[]
      : S[K]["default"] extends string
        ? T
        : T | undefined
    : never;
};

/** `mirror-addr` → `SHOAL_MIRROR_ADDR`. */
export function envName(flag: string): string {
  return `SHOAL_${flag.toUpperCase().replace(/-/g, "_")}`;
}

export interface ParseResult<S extends OptionSpecs> {
  readonly options: ParsedOptions<S>;
  /** Arguments that are not flags, in order. */
  readonly positionals: string[];
  readonly help: boolean;
}

/**
 * Parses `--name value`, `--name=value` and boolean `--name` flags, falling back to SHOAL_* environment
 * variables and then defaults. Flags win over the environment. Every error names the flag and variable.
 */
export function parseOptions<S extends OptionSpecs>(
  specs: S,
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): ParseResult<S> {
  const byFlag = new Map<string, [string, OptionSpec<unknown>]>();
  for (const [key, spec] of Object.entries(specs)) byFlag.set(spec.name, [key, spec]);
  const raw = new Map<string, string[]>();
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("--")) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const flag = arg.slice(2, eq < 0 ? undefined : eq);
    const entry = byFlag.get(flag);
    if (entry === undefined) throw new ConfigError("ERR_CONFIG_UNKNOWN_FLAG", `unknown flag --${flag} (see --help)`);
    const [key, spec] = entry;
    let value: string;
    if (eq >= 0) value = arg.slice(eq + 1);
    else if (spec.boolean === true) value = "true";
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new ConfigError("ERR_CONFIG_MISSING_VALUE", `flag --${flag} needs a value`);
      value = next;
      i++;
    }
    const values = raw.get(key) ?? [];
    if (values.length > 0 && spec.repeatable !== true)
      throw new ConfigError("ERR_CONFIG_INVALID_VALUE", `flag --${flag} given more than once`);
    values.push(value);
    raw.set(key, values);
  }
  const options: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(specs)) {
    let values = raw.get(key);
    let origin = "flag";
    const fromEnv = env[envName(spec.name)];
    if (values === undefined && fromEnv !== undefined && fromEnv !== "") {
      values =
        spec.repeatable === true
          ? fromEnv
              .split(",")
              .map((v) => v.trim())
              .filter((v) => v !== "")
          : [fromEnv];
      origin = "environment";
    }
    if (values === undefined && spec.default !== undefined) {
      values = spec.repeatable === true ? (spec.default === "" ? [] : spec.default.split(",")) : [spec.default];
      origin = "default";
    }
    const parsed = (values ?? []).map((value) => {
      try {
        return spec.boolean === true && value !== "" ? parseBoolean(value) : spec.parse(value);
      } catch (cause) {
        const why = cause instanceof Error ? cause.message : String(cause);
        throw new ConfigError(
          "ERR_CONFIG_INVALID_VALUE",
          `invalid --${spec.name} (${envName(spec.name)}) ${JSON.stringify(value)} from ${origin}: ${why}`,
          { cause },
        );
      }
    });
    options[key] = spec.repeatable === true ? parsed : parsed[0];
  }
  return { options: options as ParsedOptions<S>, positionals, help };
}

/** The --help text for a command: usage line, then one block per option with its variable and default. */
export function formatHelp(usage: string, summary: string, specs: OptionSpecs): string {
  const lines = [`Usage: ${usage}`, "", summary, "", "Options (every flag also reads the environment variable shown):"];
  for (const spec of Object.values(specs)) {
    const value = spec.boolean === true ? "" : " VALUE";
    lines.push(`  --${spec.name}${value}${spec.repeatable === true ? " (repeatable)" : ""}`);
    lines.push(`      ${spec.description}`);
    lines.push(`      env ${envName(spec.name)}${spec.default !== undefined && spec.default !== "" ? `, default ${spec.default}` : ""}`);
  }
  lines.push("  --help", "      Show this help.");
  return lines.join("\n");
}
