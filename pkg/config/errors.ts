export type ConfigErrorCode = "ERR_CONFIG_UNKNOWN_FLAG" | "ERR_CONFIG_INVALID_VALUE" | "ERR_CONFIG_MISSING_VALUE";

/** A configuration problem; the message always names the flag and its environment variable. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(
    readonly code: ConfigErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
