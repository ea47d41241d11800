/** Tokens are refreshed this long before the registry says they expire. */
const EXPIRY_MARGIN_MS = 10_000;
/** Docker's token spec: a token without expires_in is valid for 60 s. */
export const DEFAULT_TOKEN_LIFETIME_MS = 60_000;
const MAX_ENTRIES = 4096;

/** Bearer tokens per (registry, scope), kept until shortly before they expire. */
export class TokenCache {
  private readonly entries = new Map<string, { token: string; expiresAtMs: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  get(registry: string, scope: string): string | undefined {
    const key = `${registry} ${scope}`;
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAtMs - EXPIRY_MARGIN_MS <= this.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry.token;
  }

  set(registry: string, scope: string, token: string, lifetimeMs: number): void {
    if (this.entries.size >= MAX_ENTRIES) {
      // Oldest insertion first: Map iteration order.
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
    this.entries.set(`${registry} ${scope}`, { token, expiresAtMs: this.now() + lifetimeMs });
  }

  delete(registry: string, scope: string): void {
    this.entries.delete(`${registry} ${scope}`);
  }
}
