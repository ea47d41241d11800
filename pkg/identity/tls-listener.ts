import type { Socket } from "node:net";
import { type Server as TlsServer, type TLSSocket, createServer } from "node:tls";
import type { Logger } from "pino";
import { IdentityError } from "./errors.js";
import type { IdentitySource, TlsMaterial } from "./tls-material.js";
import { TLS_CIPHERS, TLS_MIN_VERSION, peerIdentityOf, secureContextOptions } from "./tls-options.js";
import { type WorkloadIdentity, describeIdentity } from "./workload-identity.js";

/** A handshake must finish within this; a silent or slow client does not hold a socket. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** How close() lets accepted connections wind down before cutting them. */
const DEFAULT_CLOSE_GRACE_MS = 1_000;

/** Why a connection was refused; a bounded set (a metric label). */
export type RefusalReason =
  /** The client sent no certificate. */
  | "no_certificate"
  /** Its certificate does not chain to the trust bundle (another CA, self-signed, a bad signature). */
  | "untrusted"
  /** Its certificate has expired or is not valid yet. */
  | "expired"
  /** Its certificate names no workload identity, or one this listener does not admit. */
  | "not_authorized"
  /** This side has no certificate yet (an agent waiting for its first one). */
  | "no_local_certificate"
  /** Anything else: no common protocol or cipher, not TLS at all, a handshake timeout. */
  | "handshake";

export const REFUSAL_REASONS: readonly RefusalReason[] = [
  "no_certificate",
  "untrusted",
  "expired",
  "not_authorized",
  "no_local_certificate",
  "handshake",
];

export interface TlsListenerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** This side's certificate, rotated in place: new handshakes use the newest. */
  readonly identity: IdentitySource;
  /** "require": a client without a certificate from the trust bundle fails the handshake. */
  readonly clientCertificates: "require" | "none";
  /** After the chain verified: whether the client's identity may connect here (true or the reason). */
  readonly authorize?: (peer: WorkloadIdentity) => true | string;
  /** Each accepted connection, with the client's verified identity (undefined when none was asked for). */
  readonly onConnection: (socket: TLSSocket, peer: WorkloadIdentity | undefined) => void;
  /** Each refused connection (for a metric). */
  readonly onRefused?: (reason: RefusalReason) => void;
  /** ALPN protocols offered; gRPC and the peer protocol need "h2". */
  readonly alpnProtocols?: readonly string[];
  readonly logger: Logger;
  /** For log lines: which listener this is ("peer", "tracker", "issuer"). */
  readonly name: string;
}

/**
 * A TLS (1.3) listener that hands authenticated connections to a protocol server (node:http2's, or
 * grpc-js's through a connection injector), so every server of Shoal shares one place that checks
 * client certificates, counts refused handshakes by reason and rotates its own certificate without a
 * restart (setSecureContext: new handshakes use the new one; open connections keep going).
 */
export class TlsListener {
  private readonly sockets = new Set<Socket>();
  private readonly unsubscribe: () => void;
  private closing: Promise<void> | undefined;
  private boundPort = 0;

  private constructor(
    private readonly server: TlsServer,
    private readonly options: TlsListenerOptions,
  ) {
    this.unsubscribe = options.identity.subscribe((material) => {
      this.apply(material);
    });
  }

  static async start(options: TlsListenerOptions): Promise<TlsListener> {
    const material = options.identity.current();
    const server = createServer({
      ...(material === undefined ? { minVersion: TLS_MIN_VERSION, ciphers: TLS_CIPHERS } : secureContextOptions(material)),
      requestCert: options.clientCertificates === "require",
      // The chain is checked in accept() instead of by node:tls, which would cut the connection without
      // saying why; either way the client gets no byte of the protocol.
      rejectUnauthorized: false,
      ALPNProtocols: [...(options.alpnProtocols ?? ["h2"])],
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      honorCipherOrder: true,
    });
    const listener = new TlsListener(server, options);
    server.on("connection", (socket: Socket) => {
      listener.sockets.add(socket);
      socket.once("close", () => listener.sockets.delete(socket));
    });
    server.on("secureConnection", (socket: TLSSocket) => {
      listener.accept(socket);
    });
    server.on("tlsClientError", (error: Error & { code?: string }, socket: TLSSocket) => {
      listener.refuse(classify(error, listener.options.identity.current() !== undefined), error.message, socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port, options.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", (error) => {
      options.logger.error({ err: error, listener: options.name }, "TLS listener error");
    });
    const address = server.address();
    listener.boundPort = typeof address === "object" && address !== null ? address.port : options.port;
    return listener;
  }

  get port(): number {
    return this.boundPort;
  }

  /** Stops accepting; connections still open after `graceMs` are cut. */
  close(graceMs = DEFAULT_CLOSE_GRACE_MS): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.unsubscribe();
      const timer = setTimeout(() => {
        for (const socket of this.sockets) socket.destroy();
      }, graceMs);
      timer.unref();
      this.server.close(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return this.closing;
  }

  /** Cuts every connection at once (tests: a peer that vanishes). */
  destroyConnections(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  private apply(material: TlsMaterial): void {
    try {
      // Throws for material OpenSSL cannot use; the previous certificate then stays in place.
      this.server.setSecureContext(secureContextOptions(material));
    } catch (error: unknown) {
      this.options.logger.error(
        { err: new IdentityError("ERR_IDENTITY_CONFIG", "new TLS material refused", { cause: error }), listener: this.options.name },
        "certificate not applied",
      );
    }
  }

  private accept(socket: TLSSocket): void {
    let peer: WorkloadIdentity | undefined;
    if (this.options.clientCertificates === "require") {
      if (!socket.authorized) {
        const presented = socket.getPeerX509Certificate() !== undefined;
        const code = String(socket.authorizationError);
        this.refuse(!presented ? "no_certificate" : /EXPIRED|NOT_YET_VALID/.test(code) ? "expired" : "untrusted", code, socket);
        socket.destroy();
        return;
      }
      peer = peerIdentityOf(socket);
      const verdict = peer === undefined ? "its certificate names no workload identity" : (this.options.authorize?.(peer) ?? true);
      if (verdict !== true) {
        this.refuse("not_authorized", peer === undefined ? verdict : `${describeIdentity(peer)}: ${verdict}`, socket);
        socket.destroy();
        return;
      }
    }
    this.options.onConnection(socket, peer);
  }

  private refuse(reason: RefusalReason, detail: string, socket: TLSSocket | undefined): void {
    this.options.onRefused?.(reason);
    this.options.logger.debug({ listener: this.options.name, reason, detail, remoteAddress: socket?.remoteAddress }, "connection refused");
  }
}

/** Why a handshake failed before any certificate was looked at (OpenSSL's error, server side). */
function classify(error: Error & { code?: string }, haveCertificate: boolean): RefusalReason {
  const text = `${error.code ?? ""} ${error.message}`.toLowerCase();
  if (!haveCertificate && /no shared cipher|no suitable signature|certificate/i.test(text) && !/peer/.test(text))
    return "no_local_certificate";
  return "handshake";
}
