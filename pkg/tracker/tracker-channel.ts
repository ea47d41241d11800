import { type ChannelCredentials, type ChannelOptions, credentials } from "@grpc/grpc-js";
import { type IdentitySource, checkServer } from "../identity/index.js";
import { TrackerError } from "./errors.js";

/** The client pings the tracker this often, so a vanished tracker is noticed within ~15 s. */
export const CLIENT_KEEPALIVE_TIME_MS = 10_000;
export const CLIENT_KEEPALIVE_TIMEOUT_MS = 5_000;
/** The TLS server name agents send (SNI); certificates are checked by role, not by this name. */
const TLS_SERVER_NAME = "shoal-controller";

/** How an agent's channel to the tracker is secured and kept alive. */
export interface TrackerChannelOptions {
  /** Fixed channel credentials (tests); insecure when neither this nor `tls` is given. */
  readonly credentials?: ChannelCredentials;
  /**
   * This agent's certificate: the tracker is reached over mutual TLS and must present a controller
   * certificate of the trust bundle. Each connection presents the certificate current when it is made.
   */
  readonly tls?: IdentitySource;
  readonly keepaliveTimeMs?: number;
  readonly keepaliveTimeoutMs?: number;
}

/** TLS with this agent's current certificate, the given credentials, or plaintext. Throws without a certificate. */
export function trackerCredentials(options: TrackerChannelOptions): ChannelCredentials {
  const identity = options.tls;
  if (identity === undefined) return options.credentials ?? credentials.createInsecure();
  const material = identity.current();
  if (material === undefined) throw new TrackerError("ERR_TRACKER_UNAVAILABLE", "this agent holds no certificate yet");
  return credentials.createSsl(Buffer.from(material.trustBundlePem), Buffer.from(material.keyPem), Buffer.from(material.certificatePem), {
    checkServerIdentity: checkServer({ role: "controller" }),
  });
}

/** The options of a channel to the tracker: keepalive pings, and the TLS server name with TLS. */
export function trackerChannelOptions(options: TrackerChannelOptions): ChannelOptions {
  return {
    // The controller's certificate is checked for its role, not a host name: agents may dial the
    // tracker by Service name or by address. A fixed TLS server name also avoids SNI with an IP.
    ...(options.tls === undefined ? {} : { "grpc.ssl_target_name_override": TLS_SERVER_NAME }),
    "grpc.keepalive_time_ms": options.keepaliveTimeMs ?? CLIENT_KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": options.keepaliveTimeoutMs ?? CLIENT_KEEPALIVE_TIMEOUT_MS,
    "grpc.keepalive_permit_without_calls": 1,
  };
}
