export type ContainerdErrorCode =
  /** The socket is missing, refuses connections, or containerd did not answer in time. */
  | "ERR_CONTAINERD_UNAVAILABLE"
  /** The agent may not use the socket (file permissions) or containerd refused the call. */
  | "ERR_CONTAINERD_DENIED"
  | "ERR_CONTAINERD_NOT_FOUND"
  /** containerd answered with a status the agent does not expect. */
  | "ERR_CONTAINERD_FAILED"
  /** containerd's answer does not make sense (e.g. a read shorter than asked for). */
  | "ERR_CONTAINERD_PROTOCOL"
  | "ERR_CONTAINERD_ABORTED"
  | "ERR_CONTAINERD_CLOSED";

export class ContainerdError extends Error {
  override readonly name = "ContainerdError";
  constructor(
    readonly code: ContainerdErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isContainerdError(error: unknown, code?: ContainerdErrorCode): error is ContainerdError {
  return error instanceof ContainerdError && (code === undefined || error.code === code);
}
