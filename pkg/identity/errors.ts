export type IdentityErrorCode =
  /** Malformed DER, PEM, certificate or certificate request. */
  | "ERR_IDENTITY_MALFORMED"
  /** A certificate request whose signature does not verify with its own key (no proof of possession). */
  | "ERR_IDENTITY_CSR_INVALID"
  /** Options or material that cannot work (a CA certificate that is no CA, a key that does not match). */
  | "ERR_IDENTITY_CONFIG"
  /** The caller's proof of who it is (a token) was refused, or names another workload. */
  | "ERR_IDENTITY_REFUSED"
  /** The issuer could not be reached or could not answer now (retry later). */
  | "ERR_IDENTITY_UNAVAILABLE"
  /** No certificate is held (yet, or any more: it expired). */
  | "ERR_IDENTITY_NO_CERTIFICATE"
  /** The caller's AbortSignal fired. */
  | "ERR_IDENTITY_ABORTED";

/** Why the issuer refused a request; a bounded set (a metric label). */
export type IssuanceRefusal = "token_invalid" | "pod_unknown" | "pod_mismatch" | "csr_invalid";

export class IdentityError extends Error {
  override readonly name = "IdentityError";
  /** With ERR_IDENTITY_REFUSED: why, for metrics and Events. */
  readonly refusal: IssuanceRefusal | undefined;
  constructor(
    readonly code: IdentityErrorCode,
    message: string,
    options?: { cause?: unknown; refusal?: IssuanceRefusal },
  ) {
    super(message, options);
    this.refusal = options?.refusal;
  }
}

export function isIdentityError(error: unknown, code?: IdentityErrorCode): error is IdentityError {
  return error instanceof IdentityError && (code === undefined || error.code === code);
}
