import { isIP } from "node:net";
import type { Logger } from "pino";
import { type OptionSpecs, parseBoolean } from "../../pkg/config/index.js";
import { FileIdentity } from "../../pkg/identity/index.js";
import type { IdentityMetrics } from "../../pkg/metrics/index.js";

function parseFile(raw: string): string {
  if (raw.trim() === "") throw new Error("expected a file path");
  return raw;
}

/** Certificate files (bring your own: cert-manager, openssl), shared by `shoal agent` and `shoal controller`. */
export const tlsFileOptionSpecs = {
  tlsCert: {
    name: "tls-cert",
    description:
      "Certificate file (PEM) naming this workload (URI SAN shoal://agent/<node> or shoal://controller/<name>); with --tls-key and --tls-ca, gRPC uses mutual TLS. Re-read when it changes.",
    parse: parseFile,
  },
  tlsKey: {
    name: "tls-key",
    description: "Private key file (PEM) of --tls-cert.",
    parse: parseFile,
  },
  tlsCa: {
    name: "tls-ca",
    description: "CA certificates (PEM) that peers' certificates must chain to (the trust bundle).",
    parse: parseFile,
  },
  allowInsecure: {
    name: "allow-insecure",
    description:
      "Allow plaintext gRPC on addresses other than loopback (anyone who reaches the port gets pieces and tracker answers). For trusted test networks only.",
    parse: parseBoolean,
    boolean: true,
    default: "false",
  },
} as const satisfies OptionSpecs;

/** 127.0.0.0/8, ::1, localhost: reachable from this machine only. */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  if (bare === "localhost" || bare === "::1") return true;
  return isIP(bare) === 4 && bare.startsWith("127.");
}

export interface TlsFiles {
  readonly tlsCert?: string | undefined;
  readonly tlsKey?: string | undefined;
  readonly tlsCa?: string | undefined;
}

/** --tls-cert, --tls-key and --tls-ca go together; true when they are given. */
export function validateTlsFiles(options: TlsFiles): boolean {
  const given = [options.tlsCert, options.tlsKey, options.tlsCa].filter((v) => v !== undefined).length;
  if (given !== 0 && given !== 3 && !(given === 1 && options.tlsCa !== undefined)) {
    throw new Error("--tls-cert, --tls-key and --tls-ca go together (SHOAL_TLS_CERT, SHOAL_TLS_KEY, SHOAL_TLS_CA)");
  }
  return options.tlsCert !== undefined;
}

/** The certificate files, loaded and watched, with the identity metrics fed. */
export async function openFileIdentity(
  options: Required<{ [K in keyof TlsFiles]: string }>,
  metrics: IdentityMetrics,
  logger: Logger,
): Promise<FileIdentity> {
  return await FileIdentity.open({
    certificateFile: options.tlsCert,
    keyFile: options.tlsKey,
    trustBundleFile: options.tlsCa,
    logger: logger.child({ component: "certificate" }),
    onLoaded: (material) => {
      metrics.certificateObtained(material.notAfter);
    },
    onFailure: () => {
      metrics.rotationFailures.inc();
    },
  });
}
