/** Stable codes for what pkg/runtime refuses or cannot do. Node problems go in the report, not here. */
export type RuntimeErrorCode =
  /** A node path is relative, has `..`, or resolves outside the host root. */
  | "ERR_RUNTIME_PATH_INVALID"
  /** A symlink chain under the host root is too long or loops. */
  | "ERR_RUNTIME_SYMLINK_LOOP"
  /** The backup state file exists but cannot be used. */
  | "ERR_RUNTIME_STATE_INVALID";

/** The option a path error is about, so that the CLI can name its flag. */
export type RuntimeOptionField = "hostRoot" | "containerdConfig" | "hostsDir" | "crioRegistriesDir" | "stateDir";

export class RuntimeConfigError extends Error {
  override readonly name = "RuntimeConfigError";
  readonly field: RuntimeOptionField | undefined;
  constructor(
    readonly code: RuntimeErrorCode,
    message: string,
    options?: { cause?: unknown; field?: RuntimeOptionField },
  ) {
    super(message, options);
    this.field = options?.field;
  }
}

export function isRuntimeConfigError(error: unknown, code?: RuntimeErrorCode): error is RuntimeConfigError {
  return error instanceof RuntimeConfigError && (code === undefined || error.code === code);
}

/** `ENOENT` and friends from node:fs, without an unsafe cast at every call site. */
export function errnoCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}
