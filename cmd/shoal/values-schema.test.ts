import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { type OptionSpecs, parseBytes, parseDuration, parseHostPort } from "../../pkg/config/index.js";
import { agentOptionSpecs } from "../agent/options.js";
import { controllerOptionSpecs } from "../controller/options.js";
import {
  DURATION_PATTERN,
  HOST_PORT_PATTERN,
  type JsonSchema,
  SIZE_PATTERN,
  VALUES_SCHEMA_PATH,
  buildValuesSchema,
  formatValuesSchema,
  generateValuesSchema,
  optionSchema,
} from "./values-schema.js";

function child(schema: JsonSchema, ...path: string[]): JsonSchema {
  let node = schema;
  for (const key of path) {
    const properties = node.properties as Record<string, JsonSchema> | undefined;
    const next = properties?.[key];
    assert.ok(next, `schema has ${path.join(".")}`);
    node = next;
  }
  return node;
}

function accepts(parse: (raw: string) => unknown, raw: string): boolean {
  try {
    parse(raw);
    return true;
  } catch {
    return false;
  }
}

describe("values.schema.json", () => {
  it("is the generated one (regenerate with `npm run chart:schema`)", async () => {
    const committed = await readFile(VALUES_SCHEMA_PATH, "utf8");
    const generated = formatValuesSchema(await generateValuesSchema());
    assert.ok(
      committed === generated,
      `${VALUES_SCHEMA_PATH} differs from the schema generated from the option specs: run \`npm run chart:schema\` and commit it`,
    );
  });

  it("lists exactly the CLI's options in agent.config and controller.config and refuses any other key", () => {
    const schema = buildValuesSchema({ agent: agentOptionSpecs, controller: controllerOptionSpecs });
    const cases: [string, OptionSpecs][] = [
      ["agent", agentOptionSpecs],
      ["controller", controllerOptionSpecs],
    ];
    for (const [component, specs] of cases) {
      const config = child(schema, component, "config");
      assert.equal(config.additionalProperties, false);
      const names = Object.keys(config.properties as Record<string, unknown>).sort();
      assert.deepEqual(
        names,
        Object.values(specs)
          .map((s) => s.name)
          .sort(),
      );
    }
    assert.equal(schema.additionalProperties, false, "a misspelt top-level key fails too");
    assert.equal(child(schema, "agent", "configure", "config").additionalProperties, false);
  });

  it("describes each option's kind: lists, booleans, enums, sizes, durations, addresses", () => {
    assert.deepEqual(
      child(buildValuesSchema({ agent: agentOptionSpecs, controller: controllerOptionSpecs }), "agent", "config", "upstream").type,
      "array",
    );
    const log = optionSchema(agentOptionSpecs.logLevel);
    assert.deepEqual(log.enum, ["trace", "debug", "info", "warn", "error", "fatal"]);
    assert.match(String(log.description), /SHOAL_LOG_LEVEL; default info/);
    assert.equal(optionSchema(agentOptionSpecs.maxUploads).type, "integer");
    assert.equal(optionSchema(agentOptionSpecs.storeQuota).pattern, SIZE_PATTERN);
    assert.equal(optionSchema(agentOptionSpecs.responseStartTimeout).pattern, DURATION_PATTERN);
    assert.equal(optionSchema(agentOptionSpecs.mirrorAddr).pattern, HOST_PORT_PATTERN);
    assert.equal(optionSchema(agentOptionSpecs.storeHighWatermark).type, "number");
    assert.equal(optionSchema({ name: "json", description: "d", parse: () => true, boolean: true }).type, "boolean");
    const membership = optionSchema(controllerOptionSpecs.membership).enum;
    assert.ok(
      Array.isArray(membership) && membership.includes("open") && membership.includes("static"),
      "the enum is the parser's own list",
    );
  });

  it("accepts with its patterns what the CLI's parsers accept (same grammar, sampled)", () => {
    const cases: [string, (raw: string) => unknown, string[]][] = [
      [DURATION_PATTERN, parseDuration, ["10s", "500ms", "1m30s", "2h", "1.5s", "10", "s", "10 s", "-1s", "1d", "", "10sec"]],
      [
        SIZE_PATTERN,
        parseBytes,
        ["0", "512MiB", "20GiB", "1.5GB", "100mbit", "20Gi", "7k", "10 MB", "12 apples", "GiB", "-1", "1.2.3", "5 b", "3Tb", "4kbit"],
      ],
      [HOST_PORT_PATTERN, parseHostPort, ["127.0.0.1:5050", ":80", "[::1]:9150", "host:1", "nohost", "a:b:1", "[::1]", "host:123456"]],
    ];
    for (const [pattern, parse, samples] of cases) {
      const regex = new RegExp(pattern);
      for (const sample of samples) {
        const parses = accepts(parse, sample);
        // (The host-port pattern accepts ports up to 99999; the CLI names a bigger port at start.)
        assert.equal(
          regex.test(sample),
          parses,
          `pattern ${pattern} and the CLI disagree on ${JSON.stringify(sample)} (CLI: ${parses ? "accepts" : "refuses"})`,
        );
      }
    }
  });
});
