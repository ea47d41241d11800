import { type OptionSpecs, type ParsedOptions, parseBytes, parseInteger } from "../../pkg/config/index.js";

export const demoOptionSpecs = {
  imageSize: {
    name: "image-size",
    description: "Total size of the generated image's layers, e.g. 200MB.",
    parse: (raw: string) => {
      const bytes = parseBytes(raw);
      if (bytes < 64 * 1024 || bytes > 64 * 1024 ** 3) throw new Error("expected a size from 64KiB to 64GiB");
      return bytes;
    },
    default: "200MB",
  },
  layers: {
    name: "layers",
    description: "Number of layers of the generated image.",
    parse: (raw: string) => parseInteger(raw, 1, 64),
    default: "4",
  },
  originRate: {
    name: "origin-rate",
    description: "Egress cap of the embedded origin, to play a remote registry (e.g. 400mbit, 50MB); 0 = uncapped.",
    parse: parseBytes,
    default: "400mbit",
  },
  json: {
    name: "json",
    description: "Print a machine-readable result instead of the table.",
    parse: (raw: string) => raw === "true",
    boolean: true,
    default: "false",
  },
  workDir: {
    name: "work-dir",
    description: "Directory for the image and the agent's store; default a temp dir removed at the end.",
    parse: (raw: string) => raw,
  },
} as const satisfies OptionSpecs;

export type DemoOptions = ParsedOptions<typeof demoOptionSpecs>;
