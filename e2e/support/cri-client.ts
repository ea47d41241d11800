// The kubelet's pull path: CRI `runtime.v1.ImageService/PullImage` over containerd's socket. Only
// the two fields used are encoded (PullImageRequest.image = 1 → ImageSpec.image = 1; the response's
// image_ref = 1), with the protobuf wire helpers the peer codec uses, so no copy of cri-api's proto is needed
// for this one call.
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Client, type ServiceError, credentials } from "@grpc/grpc-js";

const PULL_IMAGE = "/runtime.v1.ImageService/PullImage";
export const CRI_PULL_TIMEOUT_MS = 120_000;

/** PullImageRequest{ image: ImageSpec{ image } }. */
function encodePullImageRequest(image: string): Uint8Array {
  return new BinaryWriter().tag(1, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(image).join().finish();
}

/** PullImageResponse.image_ref (field 1), or undefined. */
function decodeImageRef(message: Uint8Array): string | undefined {
  const reader = new BinaryReader(message);
  while (reader.pos < reader.len) {
    const [number, wireType] = reader.tag();
    if (number === 1 && wireType === WireType.LengthDelimited) return reader.string();
    reader.skip(wireType, number);
  }
  return undefined;
}

/**
 * Pulls `image` through containerd's CRI plugin (registry.config_path applies), as the kubelet does: the
 * daemon fetches, verifies and unpacks. Returns the image ref (the image id). Aborting `signal` cancels
 * the call.
 */
export async function criPullImage(
  socket: string,
  image: string,
  timeoutMs: number = CRI_PULL_TIMEOUT_MS,
  signal?: AbortSignal,
): Promise<string> {
  signal?.throwIfAborted();
  const client = new Client(`unix://${socket}`, credentials.createInsecure());
  let onAbort: (() => void) | undefined;
  try {
    const request = Buffer.from(encodePullImageRequest(image));
    const response = await new Promise<Buffer>((resolve, reject) => {
      const call = client.makeUnaryRequest(
        PULL_IMAGE,
        (b: Buffer) => b,
        (b: Buffer) => b,
        request,
        { deadline: Date.now() + timeoutMs },
        (error: ServiceError | null, value?: Buffer) => {
          if (error !== null) reject(new Error(`CRI PullImage ${image}: ${error.message}`, { cause: error }));
          else resolve(value ?? Buffer.alloc(0));
        },
      );
      onAbort = () => {
        call.cancel();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      if (signal?.aborted === true) onAbort();
    });
    const ref = decodeImageRef(response);
    if (ref === undefined || ref === "") throw new Error(`CRI PullImage ${image}: no image_ref in the response`);
    return ref;
  } finally {
    if (onAbort !== undefined) signal?.removeEventListener("abort", onAbort);
    client.close();
  }
}
