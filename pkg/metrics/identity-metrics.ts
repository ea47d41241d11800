import { Counter, Gauge, type Registry } from "prom-client";

/** Reasons a TLS connection is refused (pkg/identity RefusalReason); pre-created so rates start at 0. */
const REFUSAL_REASONS = ["no_certificate", "untrusted", "expired", "not_authorized", "no_local_certificate", "handshake"] as const;

/**
 * Workload identity metrics, shared by the agent and the controller: this process's certificate, its
 * rotations, and connections its TLS listeners refused. With `issuer`, also what the controller's
 * certificate issuer signed and refused.
 */
export class IdentityMetrics {
  readonly certificateExpiry: Gauge;
  readonly rotations: Counter;
  readonly rotationFailures: Counter;
  readonly tlsHandshakesRefused: Counter<"listener" | "reason">;
  readonly certificatesIssued: Counter | undefined;
  readonly issuanceRefused: Counter<"reason"> | undefined;

  constructor(registry: Registry, options: { listeners: readonly string[]; issuer?: boolean }) {
    this.certificateExpiry = new Gauge({
      name: "shoal_identity_certificate_expiry_timestamp_seconds",
      help: "When this process's current TLS certificate expires (Unix seconds); 0 without one.",
      registers: [registry],
    });
    this.rotations = new Counter({
      name: "shoal_identity_rotations_total",
      help: "TLS certificates obtained by this process (the first one, and each rotation or reload).",
      registers: [registry],
    });
    this.rotationFailures = new Counter({
      name: "shoal_identity_rotation_failures_total",
      help: "Failed attempts to obtain or renew this process's certificate (each is retried).",
      registers: [registry],
    });
    this.tlsHandshakesRefused = new Counter({
      name: "shoal_tls_handshakes_refused_total",
      help: "Connections refused by a TLS listener, by listener (peer, tracker, issuer) and reason (no_certificate, untrusted, expired, not_authorized, no_local_certificate, handshake).",
      labelNames: ["listener", "reason"] as const,
      registers: [registry],
    });
    for (const listener of options.listeners) for (const reason of REFUSAL_REASONS) this.tlsHandshakesRefused.inc({ listener, reason }, 0);
    if (options.issuer === true) {
      this.certificatesIssued = new Counter({
        name: "shoal_identity_certificates_issued_total",
        help: "Workload certificates the controller's issuer signed (agents' and its own).",
        registers: [registry],
      });
      this.issuanceRefused = new Counter({
        name: "shoal_identity_issuance_refused_total",
        help: "Certificate requests refused by the issuer, by reason (token_invalid, pod_unknown, pod_mismatch, csr_invalid, unavailable).",
        labelNames: ["reason"] as const,
        registers: [registry],
      });
    }
  }

  /** Records a newly obtained certificate. */
  certificateObtained(notAfter: Date): void {
    this.rotations.inc();
    this.certificateExpiry.set(notAfter.getTime() / 1000);
  }
}
