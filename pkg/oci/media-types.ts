export const MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const MEDIA_TYPE_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar";
export const MEDIA_TYPE_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
export const MEDIA_TYPE_OCI_EMPTY = "application/vnd.oci.empty.v1+json";
export const MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const MEDIA_TYPE_OCTET_STREAM = "application/octet-stream";

/** What a mirror asks for when its client sent no Accept header: every manifest type we understand. */
export const ALL_MANIFEST_MEDIA_TYPES: readonly string[] = [
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_MANIFEST,
  MEDIA_TYPE_DOCKER_MANIFEST_LIST,
  MEDIA_TYPE_DOCKER_MANIFEST,
];

export function isIndexMediaType(mediaType: string): boolean {
  return mediaType === MEDIA_TYPE_OCI_INDEX || mediaType === MEDIA_TYPE_DOCKER_MANIFEST_LIST;
}

/** Best-effort media type of a manifest body when the upstream sent none: its own `mediaType` field. */
export function sniffManifestMediaType(body: Uint8Array): string | undefined {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(body).toString("utf8"));
    if (typeof parsed === "object" && parsed !== null && "mediaType" in parsed && typeof parsed.mediaType === "string") {
      return parsed.mediaType;
    }
    if (typeof parsed === "object" && parsed !== null && "manifests" in parsed) return MEDIA_TYPE_OCI_INDEX;
    if (typeof parsed === "object" && parsed !== null && "layers" in parsed) return MEDIA_TYPE_OCI_MANIFEST;
  } catch {
    // Not JSON: the caller keeps whatever the upstream said.
  }
  return undefined;
}
