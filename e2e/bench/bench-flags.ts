// Flags of the benchmark scripts: one parser, and values checked with messages that name the flag. A bad
// flag prints the message and the usage and exits with EXIT_USAGE; --help prints the usage.
import { parseArgs } from "node:util";
import { parseBytes, parseDuration } from "../../pkg/config/index.js";

export const EXIT_USAGE = 2;

export class BenchUsageError extends Error {
  override readonly name = "BenchUsageError";
  readonly code = "ERR_BENCH_USAGE";
}

/** String flags with their defaults (undefined: no default); every flag takes a value. */
export type FlagDefaults = Readonly<Record<string, string | undefined>>;
export type FlagValues = Readonly<Record<string, string | undefined>>;

/** Parses `argv` strictly: unknown flags, positionals and flags without a value are BenchUsageError. */
export function parseBenchFlags(argv: readonly string[], defaults: FlagDefaults): { values: FlagValues; help: boolean } {
  const options: Record<string, { type: "string"; default?: string } | { type: "boolean"; default: boolean }> = {
    help: { type: "boolean", default: false },
  };
  for (const [name, fallback] of Object.entries(defaults)) {
    options[name] = fallback === undefined ? { type: "string" } : { type: "string", default: fallback };
  }
  let parsed: Record<string, string | boolean | undefined>;
  try {
    ({ values: parsed } = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }));
  } catch (cause) {
    throw new BenchUsageError(cause instanceof Error ? cause.message : String(cause), { cause });
  }
  const values: Record<string, string | undefined> = {};
  for (const name of Object.keys(defaults)) {
    const value = parsed[name];
    // An empty value is refused unless empty is the flag's default (e.g. no extra Node flags).
    if (typeof value === "string" && value.trim() === "" && defaults[name] !== "") throw new BenchUsageError(`--${name} needs a value`);
    values[name] = typeof value === "string" ? value : undefined;
  }
  return { values, help: parsed.help === true };
}

/**
 * The command line of a benchmark script: `read` turns the flags into its options. On --help prints
 * `usage` and exits 0; on a bad flag prints the message and `usage` to stderr and exits EXIT_USAGE.
 */
export function benchOptions<T>(usage: string, defaults: FlagDefaults, read: (values: FlagValues) => T, argv = process.argv.slice(2)): T {
  try {
    const { values, help } = parseBenchFlags(argv, defaults);
    if (help) {
      process.stdout.write(`${usage}\n`);
      process.exit(0);
    }
    return read(values);
  } catch (error) {
    if (!(error instanceof BenchUsageError)) throw error;
    process.stderr.write(`error: ${error.message}\n\n${usage}\n`);
    process.exit(EXIT_USAGE);
  }
}

function required(flag: string, value: string | undefined): string {
  if (value === undefined) throw new BenchUsageError(`--${flag} needs a value`);
  return value;
}

/** An integer from min to max. */
export function integerFlag(flag: string, value: string | undefined, min: number, max: number): number {
  const text = required(flag, value);
  const parsed = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
    throw new BenchUsageError(`--${flag} must be an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return parsed;
}

/** A number above 0 and at most max. */
export function positiveFlag(flag: string, value: string | undefined, max: number): number {
  const text = required(flag, value);
  const parsed = Number(text);
  if (text.trim() === "" || !Number.isFinite(parsed) || parsed <= 0 || parsed > max) {
    throw new BenchUsageError(`--${flag} must be a number above 0 and at most ${max}, got ${JSON.stringify(text)}`);
  }
  return parsed;
}

/** `value` read by `parse` (whose errors name the problem), within [min, max]; `range` says the bounds in words. */
function parsedFlag(
  flag: string,
  value: string | undefined,
  parse: (text: string) => number,
  min: number,
  max: number,
  range: string,
): number {
  const text = required(flag, value);
  let parsed: number;
  try {
    parsed = parse(text);
  } catch (error) {
    throw new BenchUsageError(`--${flag}: ${error instanceof Error ? error.message : String(error)}, got ${JSON.stringify(text)}`);
  }
  if (parsed < min || parsed > max) throw new BenchUsageError(`--${flag} must be from ${range}, got ${JSON.stringify(text)}`);
  return parsed;
}

/** A size such as 64MiB or 1GiB, from min to max bytes. */
export function bytesFlag(flag: string, value: string | undefined, min: number, max: number): number {
  return parsedFlag(flag, value, parseBytes, min, max, `${min} to ${max} bytes`);
}

/** A duration such as 500ms, 10s or 5m, from minMs to maxMs; returns milliseconds. */
export function durationFlag(flag: string, value: string | undefined, minMs: number, maxMs: number): number {
  return parsedFlag(flag, value, parseDuration, minMs, maxMs, `${minMs} ms to ${maxMs} ms`);
}

/** A comma-separated list of at least one of `allowed`, each once, in the order given. */
export function listFlag<T extends string>(flag: string, value: string | undefined, allowed: readonly T[]): T[] {
  const names = required(flag, value)
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name !== "");
  if (names.length === 0) throw new BenchUsageError(`--${flag} must name at least one of ${allowed.join(", ")}`);
  const unknown = names.filter((name) => !(allowed as readonly string[]).includes(name));
  if (unknown.length > 0) {
    throw new BenchUsageError(`--${flag}: unknown ${unknown.map((u) => JSON.stringify(u)).join(", ")}; choose from ${allowed.join(", ")}`);
  }
  return [...new Set(names)] as T[];
}
