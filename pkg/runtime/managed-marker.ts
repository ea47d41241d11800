/**
 * First line of every file `shoal configure` writes. A file that starts with it is Shoal's own,
 * even when the backup state that records it is gone, so a backup is never taken of it.
 */
export const MANAGED_MARKER = "# Managed by shoal configure.";

export function isManaged(content: Buffer | string): boolean {
  return content.toString("utf8", 0, MANAGED_MARKER.length) === MANAGED_MARKER;
}

/** TOML basic string: JSON string syntax is valid TOML for the ASCII values written here. */
export function tomlString(value: string): string {
  return JSON.stringify(value);
}
