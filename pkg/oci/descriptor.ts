import type { Digest } from "./digest.js";
import type { Platform } from "./platform.js";

/** An OCI content descriptor (image-spec descriptor.md), as written into manifests and indexes. */
export interface Descriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly platform?: Platform;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** The annotation an OCI layout's index.json uses to name a tag (image-spec annotations.md). */
export const ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name";
