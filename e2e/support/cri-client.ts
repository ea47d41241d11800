// The kubelet's pull path: CRI `runtime.v1.ImageService/PullImage` over containerd's socket. Only
// the two fields used are encoded (PullImageRequest.image = 1 → ImageSpec.image = 1; the response's
// image_ref = 1), so no copy of cri-api's proto is needed for this one call.
import { Client, type ServiceError, credentials } from "@grpc/grpc-js";

const PULL_IMAGE = "/runtime.v1.ImageService/PullImage";
export const CRI_PULL_TIMEOUT_MS = 120_000;

function varint(value: number): Buffer {
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

/** A length-delimited field (wire type 2). */
function field(number: number, payload: Buffer): Buffer {
  return Buffer.concat([varint((number << 3) | 2), varint(payload.length), payload]);
}

/** The first length-delimited field `number` of a message, as UTF-8. */
function readStringField(message: Buffer, number: number): string | undefined {
  let offset = 0;
  const readVarint = (): number => {
    let result = 0;
    let shift = 1;
    for (;;) {
      const byte = message[offset++];
      if (byte === undefined) throw new Error("truncated varint");
      result += (byte & 0x7f) * shift;
      if ((byte & 0x80) === 0) return result;
      shift *= 0x80;
    }
  };
  while (offset < message.length) {
    const tag = readVarint();
    const wireType = tag & 7;
    if (wireType === 0) readVarint();
    else if (wireType === 2) {
      const length = readVarint();
      const value = message.subarray(offset, offset + length);
      offset += length;
      if (tag >> 3 === number) return value.toString("utf8");
    } else if (wireType === 1) offset += 8;
    else if (wireType === 5) offset += 4;
    else throw new Error(`unsupported wire type ${wireType}`);
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
    const request = field(1, field(1, Buffer.from(image, "utf8")));
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
    });
    const ref = readStringField(response, 1);
    if (ref === undefined || ref === "") throw new Error(`CRI PullImage ${image}: no image_ref in the response`);
    return ref;
  } finally {
    if (onAbort !== undefined) signal?.removeEventListener("abort", onAbort);
    client.close();
  }
}
