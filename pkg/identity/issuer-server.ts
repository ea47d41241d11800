import { Server, ServerCredentials, type ServerUnaryCall, type sendUnaryData, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type IssueCertificateRequest, type IssueCertificateResponse, IdentityServiceService } from "../gen/identity/v1/identity.js";
import type { IdentityMetrics } from "../metrics/index.js";
import type { CertificateAuthority } from "./certificate-authority.js";
import { IdentityError, isIdentityError } from "./errors.js";
import { TlsListener } from "./tls-listener.js";
import type { IdentitySource } from "./tls-material.js";
import { type WorkloadIdentity, describeIdentity, normalizeAddress } from "./workload-identity.js";
import { parseCertificateRequest } from "./x509.js";

/** A token is a few KiB at most (a JWT); anything larger is refused before it is looked at. */
const MAX_TOKEN_BYTES = 16 * 1024;
/** Authenticating one request (a TokenReview) may take this long. */
const AUTHENTICATE_TIMEOUT_MS = 10_000;

/** Decides who a request comes from: the controller checks Kubernetes tokens; tests may do anything. */
export interface WorkloadAuthenticator {
  /**
   * The identity to certify for whoever presents `token` from `remoteAddress`. Throws
   * ERR_IDENTITY_REFUSED (with a `refusal`) when the token is invalid or names another workload, and
   * ERR_IDENTITY_UNAVAILABLE when it cannot decide now.
   */
  authenticate(
    request: { readonly token: string; readonly remoteAddress: string | undefined },
    signal: AbortSignal,
  ): Promise<WorkloadIdentity>;
}

export interface IssuerServerOptions {
  readonly host: string;
  readonly port: number;
  /** The controller's own certificate (agents check it names a controller). */
  readonly tls: IdentitySource;
  readonly authenticator: WorkloadAuthenticator;
  /** The CA to sign with; undefined while it is not loaded (requests are then UNAVAILABLE). */
  readonly ca: () => CertificateAuthority | undefined;
  readonly lifetimeMs: number;
  readonly metrics?: IdentityMetrics | undefined;
  readonly logger: Logger;
  /** Why this replica does not issue now, or true (e.g. not the leader). Always issuing when absent. */
  readonly serving?: () => true | string;
}

/**
 * The controller's certificate issuer: IdentityService (identity.proto) over TLS with the controller's
 * certificate, without client certificates (callers have none yet). Each request carries a certificate
 * request for the caller's key and a token; the authenticator says which workload the token proves,
 * and the certificate names exactly that, whatever the request asked for.
 */
export class IssuerServer {
  private constructor(
    private readonly server: Server,
    private readonly listener: TlsListener,
    private readonly options: IssuerServerOptions,
  ) {}

  static async start(options: IssuerServerOptions): Promise<IssuerServer> {
    const server = new Server();
    const injector = server.createConnectionInjector(ServerCredentials.createInsecure());
    const { metrics } = options;
    const listener = await TlsListener.start({
      host: options.host,
      port: options.port,
      identity: options.tls,
      clientCertificates: "none",
      onConnection: (socket) => {
        injector.injectConnection(socket);
      },
      onRefused:
        metrics === undefined
          ? undefined
          : (reason) => {
              metrics.tlsHandshakesRefused.inc({ listener: "issuer", reason });
            },
      logger: options.logger,
      name: "issuer",
    });
    const instance = new IssuerServer(server, listener, options);
    server.addService(IdentityServiceService, {
      issueCertificate: (
        call: ServerUnaryCall<IssueCertificateRequest, IssueCertificateResponse>,
        callback: sendUnaryData<IssueCertificateResponse>,
      ) => {
        instance.issue(call).then(
          (response) => {
            callback(null, response);
          },
          (error: unknown) => {
            callback(instance.toStatus(error));
          },
        );
      },
    });
    options.logger.info({ host: options.host, port: listener.port, lifetimeMs: options.lifetimeMs }, "certificate issuer listening");
    return instance;
  }

  get port(): number {
    return this.listener.port;
  }

  async close(): Promise<void> {
    const closed = this.listener.close();
    await new Promise<void>((resolve) => {
      this.server.tryShutdown(() => {
        resolve();
      });
    });
    await closed;
  }

  private async issue(call: ServerUnaryCall<IssueCertificateRequest, IssueCertificateResponse>): Promise<IssueCertificateResponse> {
    const { options } = this;
    const serving = options.serving?.() ?? true;
    if (serving !== true) throw new IdentityError("ERR_IDENTITY_UNAVAILABLE", serving);
    const ca = options.ca();
    if (ca === undefined) throw new IdentityError("ERR_IDENTITY_UNAVAILABLE", "the controller has not loaded its CA yet");
    const { token, certificateRequest } = call.request;
    if (token === "" || Buffer.byteLength(token) > MAX_TOKEN_BYTES) {
      throw new IdentityError("ERR_IDENTITY_REFUSED", `a token of 1 to ${MAX_TOKEN_BYTES} bytes is required`, { refusal: "token_invalid" });
    }
    let request;
    try {
      request = parseCertificateRequest(certificateRequest);
    } catch (error: unknown) {
      throw new IdentityError("ERR_IDENTITY_REFUSED", error instanceof Error ? error.message : String(error), {
        cause: error,
        refusal: "csr_invalid",
      });
    }
    const remoteAddress = remoteHost(call.getPeer());
    const signal = AbortSignal.timeout(AUTHENTICATE_TIMEOUT_MS);
    const identity = await options.authenticator.authenticate({ token, remoteAddress }, signal);
    const issued = ca.issue({ publicKey: request.publicKey, identity, lifetimeMs: options.lifetimeMs });
    options.metrics?.certificatesIssued?.inc();
    options.logger.info(
      { identity: describeIdentity(identity), remoteAddress, notAfter: issued.notAfter.toISOString() },
      "certificate issued",
    );
    return { certificateChain: issued.certificatePem, trustBundle: ca.certificatePem };
  }

  /** IdentityError → gRPC status, counted; anything else is a bug, logged and INTERNAL. */
  private toStatus(error: unknown): { code: status; details: string } {
    if (isIdentityError(error)) {
      if (error.code === "ERR_IDENTITY_REFUSED") {
        this.options.metrics?.issuanceRefused?.inc({ reason: error.refusal ?? "token_invalid" });
        this.options.logger.warn({ reason: error.refusal, details: error.message }, "certificate request refused");
        return { code: error.refusal === "csr_invalid" ? status.INVALID_ARGUMENT : status.PERMISSION_DENIED, details: error.message };
      }
      this.options.metrics?.issuanceRefused?.inc({ reason: "unavailable" });
      return { code: status.UNAVAILABLE, details: error.message };
    }
    this.options.logger.error({ err: error }, "certificate issuance failed");
    return { code: status.INTERNAL, details: "internal issuer error" };
  }
}

/** The host of a grpc-js peer string (`10.0.0.1:5000`, `[::1]:5000`). */
function remoteHost(peer: string): string | undefined {
  const colon = peer.lastIndexOf(":");
  if (colon < 0) return undefined;
  return normalizeAddress(peer.slice(0, colon));
}
