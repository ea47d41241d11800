import { OciError } from "./errors.js";

/** The `platform` object of an OCI index entry. Field order is the spec's, so JSON output is stable. */
export interface Platform {
  readonly architecture: string;
  readonly os: string;
  readonly variant?: string;
}

// GOOS/GOARCH-style values: "linux", "amd64", "arm64", "v8", "ppc64le".
const COMPONENT = /^[a-z0-9_]{1,32}$/;

/** Parses `os/arch[/variant]`, e.g. `linux/amd64` or `linux/arm/v7`. */
export function parsePlatform(value: string): Platform {
  const parts = value.split("/");
  const [os, architecture, variant] = parts;
  if (
    parts.length < 2 ||
    parts.length > 3 ||
    !parts.every((part) => COMPONENT.test(part)) ||
    os === undefined ||
    architecture === undefined
  ) {
    throw new OciError("ERR_OCI_PLATFORM_INVALID", `invalid platform ${JSON.stringify(value)}: expected os/arch[/variant]`);
  }
  return variant === undefined ? { architecture, os } : { architecture, os, variant };
}

export function formatPlatform(platform: Platform): string {
  const base = `${platform.os}/${platform.architecture}`;
  return platform.variant === undefined ? base : `${base}/${platform.variant}`;
}
