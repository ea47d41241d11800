import { Metadata, type ServiceError, credentials, status } from "@grpc/grpc-js";
import { IdentityServiceClient, type IssueCertificateResponse } from "../gen/identity/v1/identity.js";
import type { CertificateIssuer } from "./certificate-manager.js";
import { IdentityError } from "./errors.js";
import { checkServer } from "./tls-options.js";

/** The TLS server name sent to the issuer; its certificate is checked by role, not by this name. */
const ISSUER_SERVER_NAME = "shoal-controller";

export interface GrpcCertificateIssuerOptions {
  /** host:port of the controller's issuer (the tracker Service's issuer port). */
  readonly address: string;
  /**
   * The proof of who this agent is, read for every request (the kubelet refreshes the projected token
   * file well before it expires).
   */
  readonly token: () => Promise<string>;
  /** The CA certificates the controller's certificate must chain to (read for every request: it may rotate). */
  readonly trustBundle: () => Promise<string>;
}

/**
 * Asks the controller's IdentityService for certificates: TLS to a server that must present a
 * controller certificate of the trust bundle, a request signed with the new key, and the token.
 * Refusals are ERR_IDENTITY_REFUSED; everything else (unreachable, not leading, no CA) is
 * ERR_IDENTITY_UNAVAILABLE, which the CertificateManager retries.
 */
export class GrpcCertificateIssuer implements CertificateIssuer {
  constructor(private readonly options: GrpcCertificateIssuerOptions) {}

  async issue(csr: Buffer, signal: AbortSignal): Promise<{ certificatePem: string; trustBundlePem: string }> {
    const [token, trust] = await Promise.all([this.read(this.options.token, "token"), this.read(this.options.trustBundle, "trust bundle")]);
    const client = new IdentityServiceClient(
      this.options.address,
      credentials.createSsl(Buffer.from(trust), null, null, { checkServerIdentity: checkServer({ role: "controller" }) }),
      {
        "grpc.ssl_target_name_override": ISSUER_SERVER_NAME,
      },
    );
    try {
      const response = await new Promise<IssueCertificateResponse>((resolve, reject) => {
        const onAbort = (): void => {
          call.cancel();
        };
        const call = client.issueCertificate(
          { certificateRequest: csr, token: token.trim() },
          new Metadata(),
          { deadline: new Date(Date.now() + 30_000) },
          (error: ServiceError | null, answer) => {
            signal.removeEventListener("abort", onAbort);
            if (error === null) resolve(answer);
            else reject(issuerError(error, this.options.address, signal));
          },
        );
        signal.addEventListener("abort", onAbort, { once: true });
      });
      return { certificatePem: response.certificateChain, trustBundlePem: response.trustBundle };
    } finally {
      client.close();
    }
  }

  private async read(source: () => Promise<string>, what: string): Promise<string> {
    try {
      return await source();
    } catch (error: unknown) {
      throw new IdentityError(
        "ERR_IDENTITY_UNAVAILABLE",
        `cannot read the ${what}: ${error instanceof Error ? error.message : String(error)}`,
        { cause: error },
      );
    }
  }
}

function issuerError(error: ServiceError, address: string, signal: AbortSignal): IdentityError {
  if (signal.aborted)
    return new IdentityError("ERR_IDENTITY_UNAVAILABLE", `certificate request to ${address} timed out or was aborted`, { cause: error });
  const refused =
    error.code === status.PERMISSION_DENIED || error.code === status.UNAUTHENTICATED || error.code === status.INVALID_ARGUMENT;
  return new IdentityError(
    refused ? "ERR_IDENTITY_REFUSED" : "ERR_IDENTITY_UNAVAILABLE",
    `certificate request to ${address}: ${status[error.code]} ${error.details}`,
    { cause: error },
  );
}
