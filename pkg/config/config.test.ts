import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError, envName, formatHelp, parseBytes, parseDuration, parseHostPort, parseOptions } from "./index.js";

const specs = {
  addr: { name: "mirror-addr", description: "d", parse: parseHostPort, default: "127.0.0.1:5050" },
  upstream: { name: "upstream", description: "d", parse: (s: string) => s.toUpperCase(), repeatable: true },
  verbose: { name: "verbose", description: "d", parse: (s: string) => s === "true", boolean: true },
  timeout: { name: "timeout", description: "d", parse: parseDuration },
} as const;

describe("parseOptions", () => {
  it("reads flags in both forms, repeatable flags and booleans", () => {
    const { options, positionals } = parseOptions(
      specs,
      ["--mirror-addr", "0.0.0.0:80", "--upstream=a", "--upstream", "b", "--verbose", "pos"],
      {},
    );
    assert.deepEqual(options.addr, { host: "0.0.0.0", port: 80 });
    assert.deepEqual(options.upstream, ["A", "B"]);
    assert.equal(options.verbose, true);
    assert.equal(options.timeout, undefined);
    assert.deepEqual(positionals, ["pos"]);
  });
  it("falls back to SHOAL_* variables, then defaults; flags win", () => {
    const env = { SHOAL_MIRROR_ADDR: "[::1]:99", SHOAL_UPSTREAM: "x, y", SHOAL_TIMEOUT: "1m30s" };
    const fromEnv = parseOptions(specs, [], env).options;
    assert.deepEqual(fromEnv.addr, { host: "::1", port: 99 });
    assert.deepEqual(fromEnv.upstream, ["X", "Y"]);
    assert.equal(fromEnv.timeout, 90_000);
    assert.deepEqual(parseOptions(specs, ["--mirror-addr=1.2.3.4:5"], env).options.addr, { host: "1.2.3.4", port: 5 });
    assert.deepEqual(parseOptions(specs, [], {}).options.addr, { host: "127.0.0.1", port: 5050 });
  });
  it("names the flag and the variable in every error", () => {
    const cases: [string[], Record<string, string>, RegExp][] = [
      [["--nope"], {}, /unknown flag --nope/],
      [["--mirror-addr"], {}, /--mirror-addr needs a value/],
      [["--mirror-addr", "nohost"], {}, /invalid --mirror-addr \(SHOAL_MIRROR_ADDR\) "nohost" from flag: expected HOST:PORT/],
      [[], { SHOAL_TIMEOUT: "10 parsecs" }, /invalid --timeout \(SHOAL_TIMEOUT\) "10 parsecs" from environment/],
      [["--mirror-addr=a:1", "--mirror-addr=b:2"], {}, /--mirror-addr given more than once/],
    ];
    for (const [argv, env, pattern] of cases) {
      assert.throws(
        () => parseOptions(specs, argv, env),
        (error: unknown) => error instanceof ConfigError && pattern.test(error.message),
      );
    }
  });
  it("documents every flag with its variable in --help", () => {
    const help = formatHelp("x", "y", specs);
    for (const spec of Object.values(specs)) {
      assert.match(help, new RegExp(`--${spec.name}`));
      assert.match(help, new RegExp(envName(spec.name)));
    }
    assert.equal(parseOptions(specs, ["--help"], {}).help, true);
  });
});

describe("value parsers", () => {
  it("parses sizes, durations and addresses", () => {
    assert.equal(parseBytes("0"), 0);
    assert.equal(parseBytes("512MiB"), 512 * 1024 * 1024);
    assert.equal(parseBytes("1.5GB"), 1.5e9);
    assert.equal(parseBytes("200mbit"), 25e6);
    assert.throws(() => parseBytes("12 apples"), /expected a size/);
    assert.equal(parseDuration("500ms"), 500);
    assert.equal(parseDuration("2h"), 7_200_000);
    assert.throws(() => parseDuration("10"), /expected a duration/);
    assert.throws(() => parseHostPort("host:70000"), /port 0-65535/);
    assert.deepEqual(parseHostPort(":8080"), { host: "0.0.0.0", port: 8080 });
  });
});
