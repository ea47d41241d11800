export * from "./errors.js";
export {
  type WorkloadIdentity,
  type WorkloadRole,
  identityUri,
  parseIdentityUri,
  identityOfCertificate,
  describeIdentity,
  identityHasAddress,
  normalizeAddress,
} from "./workload-identity.js";
export {
  CertificateAuthority,
  type IssuedCertificate,
  type IssueOptions,
  generateKey,
  BACKDATE_MS,
  MIN_CERTIFICATE_LIFETIME_MS,
} from "./certificate-authority.js";
export {
  createCertificateRequest,
  parseCertificateRequest,
  type ParsedCertificateRequest,
  parseCertificates,
  toPem,
  MAX_CSR_BYTES,
} from "./x509.js";
export { type TlsMaterial, type IdentitySource, StaticIdentity, materialFromPem, leafOf } from "./tls-material.js";
export {
  TLS_MIN_VERSION,
  TLS_CIPHERS,
  secureContextOptions,
  clientTlsOptions,
  checkServer,
  peerIdentityOf,
  type ExpectedServer,
} from "./tls-options.js";
export { TlsListener, type TlsListenerOptions, type RefusalReason, REFUSAL_REASONS, HANDSHAKE_TIMEOUT_MS } from "./tls-listener.js";
export {
  CertificateManager,
  type CertificateManagerOptions,
  type CertificateIssuer,
  DEFAULT_RENEW_AT_FRACTION,
} from "./certificate-manager.js";
export { FileIdentity, type FileIdentityOptions, DEFAULT_FILE_REFRESH_MS } from "./file-identity.js";
export { IssuerServer, type IssuerServerOptions, type WorkloadAuthenticator } from "./issuer-server.js";
export { GrpcCertificateIssuer, type GrpcCertificateIssuerOptions } from "./issuer-client.js";
export { LocalIssuer } from "./local-issuer.js";
export { ThrowawayPki, type CertificateFiles, tlsArgs } from "./throwaway-pki.js";
