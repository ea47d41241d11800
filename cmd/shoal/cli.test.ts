import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { promisify } from "node:util";

const MAIN = fileURLToPath(new URL("./main.js", import.meta.url));
const run = promisify(execFile);

async function shoal(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env }, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

describe("shoal CLI", () => {
  it("lists its commands and refuses unknown ones", async () => {
    const help = await shoal(["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /agent/);
    assert.match(help.stdout, /demo/);
    assert.match(help.stdout, /fetch/);
    const unknown = await shoal(["frobnicate"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
  });

  it("agent --help documents every flag with its environment variable", async () => {
    const help = await shoal(["agent", "--help"]);
    assert.equal(help.code, 0);
    for (const flag of ["mirror-addr", "metrics-addr", "data-dir", "upstream", "default-upstream", "store-quota"]) {
      assert.match(help.stdout, new RegExp(`--${flag}`));
      assert.match(help.stdout, new RegExp(`SHOAL_${flag.toUpperCase().replace(/-/g, "_")}`));
    }
  });

  it("agent refuses bad configuration with exit code 2 and a message naming the option", async () => {
    const cases: [string[], Record<string, string>, RegExp][] = [
      [["--mirror-addr", "nope"], {}, /--mirror-addr \(SHOAL_MIRROR_ADDR\)/],
      [["--upstream", "ftp.example=ftp://x"], {}, /--upstream .*http:\/\/ or https:\/\//],
      [["--upstream", "r.example=https://user:pw@r.example"], {}, /credentials/],
      [[], { SHOAL_STORE_QUOTA: "much" }, /--store-quota \(SHOAL_STORE_QUOTA\) "much" from environment/],
      [["--store-low-watermark", "0.95"], {}, /--store-low-watermark .* must be below --store-high-watermark/],
      [
        ["--default-upstream", "b.example", "--upstream", "a.example"],
        {},
        /--default-upstream b.example is not one of the --upstream registries/,
      ],
      [["--bogus"], {}, /unknown flag --bogus/],
      [
        ["--tracker", "10.0.0.1:7070", "--peer-addr", "0.0.0.0:5052", "--peer-advertise-addr", "10.0.0.2:5052"],
        {},
        /would be plaintext on 10\.0\.0\.1, 0\.0\.0\.0, 10\.0\.0\.2: set --identity-issuer .* or --allow-insecure/,
      ],
      [["--identity-issuer", "10.0.0.1:7071"], {}, /--identity-issuer needs --tls-ca/],
      [["--tls-cert", "a.crt"], {}, /--tls-cert, --tls-key and --tls-ca go together/],
      [["--identity-issuer", "10.0.0.1:7071", "--tls-cert", "a", "--tls-key", "b", "--tls-ca", "c"], {}, /two ways to get a certificate/],
    ];
    for (const [args, env, pattern] of cases) {
      const result = await shoal(["agent", ...args], env);
      assert.equal(result.code, 2, `${args.join(" ")} → exit ${result.code}`);
      assert.match(result.stderr, pattern);
    }
  });

  it("agent reports a data dir it cannot create, naming the path, and exits 1", async () => {
    const work = await mkdtemp(join(tmpdir(), "shoal-cli-datadir-"));
    try {
      const file = join(work, "a-file");
      await writeFile(file, "not a directory");
      const result = await shoal([
        "agent",
        "--data-dir",
        join(file, "data"),
        "--mirror-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
      ]);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /a-file\/data/);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  it("demo runs a swarm on the embedded origin: each node pulls the whole image, the origin sends it about once; --work-dir keeps image and logs", async () => {
    const work = await mkdtemp(join(tmpdir(), "shoal-cli-demo-"));
    try {
      const result = await shoal([
        "demo",
        "--nodes",
        "2",
        "--image-size",
        "3MB",
        "--layers",
        "3",
        "--origin-rate",
        "0",
        "--upload-rate",
        "0",
        "--compare=false",
        "--json",
        "--work-dir",
        work,
      ]);
      assert.equal(result.code, 0, result.stderr);
      const json = JSON.parse(result.stdout) as {
        imageBytes: number;
        originBytes: number;
        clientServerSeconds: number | null;
        nodes: { name: string; bytes: number; complete: boolean; bytesFromOrigin: number; bytesFromPeers: number }[];
      };
      assert.ok(json.imageBytes > 3_000_000);
      assert.deepEqual(
        json.nodes.map((n) => [n.name, n.complete, n.bytes]),
        [
          ["node-1", true, json.imageBytes],
          ["node-2", true, json.imageBytes],
        ],
      );
      assert.ok(
        json.originBytes >= json.imageBytes && json.originBytes < 1.5 * json.imageBytes,
        `origin sent ${json.originBytes} for ${json.imageBytes}`,
      );
      assert.equal(json.clientServerSeconds, null, "--compare=false skips the client-server round");
      assert.match(await readFile(join(work, "logs", "node-1.log"), "utf8"), /"agent started"/);
      assert.match(await readFile(join(work, "image", "index.json"), "utf8"), /"org.opencontainers.image.ref.name":"v1"/);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});
