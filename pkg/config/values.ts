/** Parsers for the value kinds flags take. Each throws a plain Error whose message says what was expected. */

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export function parseHostPort(value: string): HostPort {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]*):(\d{1,5})$/.exec(value);
  const port = Number(match?.[2]);
  if (!match || port > 65535) throw new Error("expected HOST:PORT (IPv6 as [ADDR]:PORT), port 0-65535");
  const host = (match[1] ?? "").replace(/^\[(.*)\]$/, "$1");
  return { host: host === "" ? "0.0.0.0" : host, port };
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `500ms`, `10s`, `2m`, `1h`, `1m30s` → milliseconds. */
export function parseDuration(value: string): number {
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(value)) throw new Error("expected a duration such as 500ms, 10s, 2m or 1h");
  let total = 0;
  for (const part of value.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) total += Number(part[1]) * (DURATION_UNITS_MS[part[2] ?? "ms"] ?? 1);
  return Math.round(total);
}

const BYTE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  ki: 1024,
  kib: 1024,
  mi: 1024 ** 2,
  mib: 1024 ** 2,
  gi: 1024 ** 3,
  gib: 1024 ** 3,
  ti: 1024 ** 4,
  tib: 1024 ** 4,
};

/** `0`, `512MiB`, `20Gi`, `1.5GB`, `100mbit` (bits /8) → bytes. */
export function parseBytes(value: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(value.trim());
  const unit = (match?.[2] ?? "").toLowerCase();
  const bits = /^([kmgt]?)bit$/.exec(unit);
  const factor = bits ? (BYTE_UNITS[bits[1] ?? ""] ?? 1) / 8 : BYTE_UNITS[unit];
  if (!match || factor === undefined) throw new Error("expected a size such as 0, 512MiB, 20GiB or 1.5GB");
  return Math.round(Number(match[1]) * factor);
}

export function parseInteger(value: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(value) || Number(value) < min || Number(value) > max)
    throw new Error(`expected a whole number from ${min} to ${max}`);
  return Number(value);
}

export function parseFraction(value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n <= 0 || n > 1) throw new Error("expected a fraction in (0, 1], e.g. 0.9");
  return n;
}

export function parseBoolean(value: string): boolean {
  if (["true", "1", "yes", "on"].includes(value.toLowerCase())) return true;
  if (["false", "0", "no", "off"].includes(value.toLowerCase())) return false;
  throw new Error("expected true or false");
}
