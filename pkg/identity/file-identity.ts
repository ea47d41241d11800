import { readFile } from "node:fs/promises";
import type { Logger } from "pino";
import { IdentityError } from "./errors.js";
import { type IdentitySource, type TlsMaterial, materialFromPem } from "./tls-material.js";
import { describeIdentity } from "./workload-identity.js";

/** How often the files are read again: a certificate renewed on disk is picked up within this. */
export const DEFAULT_FILE_REFRESH_MS = 30_000;
/** Key, certificate and bundle files are small; a hung filesystem must not hold a reload forever. */
const READ_TIMEOUT_MS = 5_000;

export interface FileIdentityOptions {
  readonly certificateFile: string;
  readonly keyFile: string;
  readonly trustBundleFile: string;
  readonly logger: Logger;
  readonly refreshIntervalMs?: number;
  /** Each new material read (for the expiry metric). */
  readonly onLoaded?: (material: TlsMaterial) => void;
  /** A reload that failed (the previous material stays). */
  readonly onFailure?: (error: unknown) => void;
}

/**
 * TLS material from files (bring your own: certificates from cert-manager, or made with openssl as
 * docs/operations.md shows), read again periodically: a renewed certificate is used for new
 * connections without a restart, and one that cannot be read keeps the previous material in place.
 */
export class FileIdentity implements IdentitySource {
  private readonly listeners = new Set<(material: TlsMaterial) => void>();
  private readonly timer: NodeJS.Timeout;
  private fingerprint: string;

  private constructor(
    private material: TlsMaterial,
    private readonly options: FileIdentityOptions,
  ) {
    this.fingerprint = material.certificatePem + material.trustBundlePem;
    this.timer = setInterval(() => {
      void this.reload();
    }, options.refreshIntervalMs ?? DEFAULT_FILE_REFRESH_MS);
    this.timer.unref();
  }

  /** Reads and checks the files; throws ERR_IDENTITY_CONFIG naming the file that is wrong. */
  static async open(options: FileIdentityOptions): Promise<FileIdentity> {
    const material = await read(options);
    options.onLoaded?.(material);
    options.logger.info(
      { identity: describeIdentity(material.identity), notAfter: material.notAfter.toISOString(), certificate: options.certificateFile },
      "certificate loaded from files",
    );
    return new FileIdentity(material, options);
  }

  current(): TlsMaterial | undefined {
    return this.material.notAfter.getTime() > Date.now() ? this.material : undefined;
  }

  subscribe(listener: (material: TlsMaterial) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Reads the files now; resolves whether the material changed. */
  async reload(): Promise<boolean> {
    let material: TlsMaterial;
    try {
      material = await read(this.options);
    } catch (error: unknown) {
      this.options.onFailure?.(error);
      this.options.logger.warn({ err: error }, "certificate files not reloaded; the previous certificate stays in use");
      return false;
    }
    const fingerprint = material.certificatePem + material.trustBundlePem;
    if (fingerprint === this.fingerprint) return false;
    this.fingerprint = fingerprint;
    this.material = material;
    this.options.onLoaded?.(material);
    this.options.logger.info(
      { identity: describeIdentity(material.identity), notAfter: material.notAfter.toISOString() },
      "certificate reloaded from files",
    );
    for (const listener of [...this.listeners]) listener(material);
    return true;
  }

  close(): void {
    clearInterval(this.timer);
  }
}

async function read(options: FileIdentityOptions): Promise<TlsMaterial> {
  const signal = AbortSignal.timeout(READ_TIMEOUT_MS);
  const text = async (file: string, what: string): Promise<string> => {
    try {
      return await readFile(file, { encoding: "utf8", signal });
    } catch (error: unknown) {
      throw new IdentityError(
        "ERR_IDENTITY_CONFIG",
        `cannot read the ${what} ${file}: ${error instanceof Error ? error.message : String(error)}`,
        { cause: error },
      );
    }
  };
  const [certificatePem, keyPem, trustBundlePem] = await Promise.all([
    text(options.certificateFile, "certificate"),
    text(options.keyFile, "key"),
    text(options.trustBundleFile, "trust bundle (CA certificates)"),
  ]);
  try {
    return materialFromPem({ certificatePem, keyPem, trustBundlePem });
  } catch (error: unknown) {
    const message = error instanceof Error ? error.message : String(error);
    throw new IdentityError(
      "ERR_IDENTITY_CONFIG",
      `${options.certificateFile}, ${options.keyFile}, ${options.trustBundleFile}: ${message}`,
      { cause: error },
    );
  }
}
