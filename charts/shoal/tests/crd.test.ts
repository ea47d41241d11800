// The ImagePrefetch CRD the chart installs (crds/): a valid apiextensions.k8s.io/v1 object with a
// structural schema, printer columns that point at fields the schema has, and a schema that accepts what
// users and the controller write and rejects what the controller would refuse.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Ajv, type ValidateFunction } from "ajv";
import { CustomResourceDefinition } from "kubernetes-models/apiextensions.k8s.io/v1";
import { parseAllDocuments } from "yaml";
import { InvalidSpec, parsePrefetchSpec } from "../../../pkg/controller/index.js";
import { buildStatus, withCondition } from "../../../pkg/controller/prefetch-status.js";
import { type Digest, digestOf } from "../../../pkg/oci/index.js";
import { type K8sObject, template } from "./render.js";
import { unknownFields } from "./k8s-schemas.js";

interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema | boolean;
  oneOf?: Schema[];
  anyOf?: Schema[];
  allOf?: Schema[];
  not?: Schema;
  [keyword: string]: unknown;
}

async function crd(): Promise<K8sObject> {
  const result = await template({}, ["--include-crds"]);
  assert.ok(result.ok, result.stderr);
  const objects = parseAllDocuments(result.stdout)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
  const found = objects.filter((o) => o.kind === "CustomResourceDefinition");
  assert.equal(found.length, 1, "the chart ships one CRD");
  return found[0]!;
}

function versionOf(object: K8sObject): { schema: Schema; columns: { name: string; jsonPath: string }[] } {
  const version = (
    object.spec as {
      versions: { name: string; schema: { openAPIV3Schema: Schema }; additionalPrinterColumns: { name: string; jsonPath: string }[] }[];
    }
  ).versions[0]!;
  return { schema: version.schema.openAPIV3Schema, columns: version.additionalPrinterColumns };
}

/** Kubernetes' structural schema rules: a type everywhere, none inside value validations (oneOf, anyOf, not…). */
function structuralProblems(schema: Schema, path: string, insideJunctor = false): string[] {
  const problems: string[] = [];
  if (!insideJunctor && schema.type === undefined && schema["x-kubernetes-int-or-string"] !== true) problems.push(`${path}: no type`);
  if (insideJunctor)
    for (const field of ["type", "description", "default", "additionalProperties", "properties", "items"])
      if (schema[field] !== undefined) problems.push(`${path}: ${field} inside a value validation`);
  if (schema.properties !== undefined && schema.additionalProperties !== undefined)
    problems.push(`${path}: properties and additionalProperties together`);
  for (const [name, child] of Object.entries(schema.properties ?? {}))
    problems.push(...structuralProblems(child, `${path}.${name}`, insideJunctor));
  if (schema.items !== undefined) problems.push(...structuralProblems(schema.items, `${path}[]`, insideJunctor));
  if (typeof schema.additionalProperties === "object")
    problems.push(...structuralProblems(schema.additionalProperties, `${path}.*`, insideJunctor));
  for (const junctor of ["oneOf", "anyOf", "allOf"] as const)
    for (const [i, child] of (schema[junctor] ?? []).entries())
      problems.push(...structuralProblems(child, `${path}.${junctor}[${i}]`, true));
  if (schema.not !== undefined) problems.push(...structuralProblems(schema.not, `${path}.not`, true));
  return problems;
}

/** The schema node a printer column's JSONPath reads, or undefined (filters like [?(@.type=="Ready")] step into items). */
function nodeAt(schema: Schema, jsonPath: string): Schema | undefined {
  let node: Schema | undefined = {
    type: "object",
    properties: { ...schema.properties, metadata: { type: "object", properties: { creationTimestamp: { type: "string" } } } },
  };
  // Filters such as [?(@.type=="Ready")] contain dots: reduce them to [] before splitting.
  for (const part of jsonPath
    .replace(/\[[^\]]*\]/g, "[]")
    .replace(/^\./, "")
    .split(".")) {
    const list = part.endsWith("[]");
    node = node?.properties?.[list ? part.slice(0, -2) : part];
    if (list) node = node?.items;
  }
  return node;
}

function validator(schema: Schema): ValidateFunction {
  // Kubernetes' OpenAPI dialect: its x-kubernetes-* keywords and int64 are not JSON Schema's; date-time is RFC 3339.
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addFormat("date-time", /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/);
  ajv.addFormat("int64", true);
  return ajv.compile(schema);
}

function object(spec: unknown, status?: unknown): unknown {
  return {
    apiVersion: "shoal.dev/v1alpha1",
    kind: "ImagePrefetch",
    metadata: { name: "web", namespace: "apps" },
    spec,
    ...(status === undefined ? {} : { status }),
  };
}

function controllerAccepts(spec: unknown): boolean {
  try {
    parsePrefetchSpec(spec);
    return true;
  } catch (error) {
    if (error instanceof InvalidSpec) return false;
    throw error;
  }
}

const VALID_SPECS: unknown[] = [
  { images: ["ghcr.io/acme/web:v2"] },
  {
    images: ["nginx:1.27", `registry.example:5000/team/api@sha256:${"a".repeat(64)}`],
    target: { seedsPerZone: 2, zones: ["eu-west-1a", "eu-west-1b"] },
  },
  {
    images: ["ghcr.io/acme/web:v2"],
    platforms: ["linux/amd64", "linux/arm64/v8"],
    target: { nodeSelector: { "node.kubernetes.io/instance-type": "g5.xlarge" } },
    pullSecrets: ["regcred"],
  },
  { images: ["ghcr.io/acme/web:v2"], schedule: { startAt: "2026-01-02T03:04:05Z" }, ttl: "24h" },
];

/** Specs the schema itself refuses (the controller refuses them too). */
const INVALID_SPECS: [string, unknown][] = [
  ["no images", { images: [] }],
  ["both targets", { images: ["nginx"], target: { seedsPerZone: 1, nodeSelector: { a: "b" } } }],
  ["no target kind", { images: ["nginx"], target: {} }],
  ["zones with nodeSelector", { images: ["nginx"], target: { nodeSelector: { a: "b" }, zones: ["z"] } }],
  ["zero seeds", { images: ["nginx"], target: { seedsPerZone: 0 } }],
  ["fractional seeds", { images: ["nginx"], target: { seedsPerZone: 1.5 } }],
  ["bare architecture", { images: ["nginx"], platforms: ["amd64"] }],
  ["secret name", { images: ["nginx"], pullSecrets: ["Bad_Name"] }],
  ["ttl words", { images: ["nginx"], ttl: "1 day" }],
  ["startAt date only", { images: ["nginx"], schedule: { startAt: "2026-01-02" } }],
];

describe("ImagePrefetch CRD (crds/imageprefetches.yaml)", () => {
  it("is a valid apiextensions.k8s.io/v1 CRD: namespaced shoal.dev/v1alpha1 with a status subresource and a structural schema", async () => {
    const definition = await crd();
    new CustomResourceDefinition(definition as never).validate();
    assert.deepEqual(unknownFields(definition, "V1CustomResourceDefinition", "CustomResourceDefinition"), []);
    assert.equal(definition.metadata.name, "imageprefetches.shoal.dev");
    const spec = definition.spec as {
      group: string;
      scope: string;
      names: { kind: string; plural: string };
      versions: { name: string; served: boolean; storage: boolean; subresources?: { status?: object } }[];
    };
    assert.deepEqual(
      [spec.group, spec.scope, spec.names.kind, spec.names.plural],
      ["shoal.dev", "Namespaced", "ImagePrefetch", "imageprefetches"],
    );
    assert.deepEqual(
      spec.versions.map((v) => [v.name, v.served, v.storage, v.subresources?.status !== undefined]),
      [["v1alpha1", true, true, true]],
    );
    const { schema } = versionOf(definition);
    assert.deepEqual(structuralProblems(schema, "openAPIV3Schema"), []);
    const undocumented = Object.entries(schema.properties?.spec?.properties ?? {})
      .filter(([, s]) => typeof s.description !== "string")
      .map(([k]) => k);
    assert.deepEqual(undocumented, [], "every spec field is documented (kubectl explain)");
  });

  it("has printer columns for `kubectl get imageprefetch` that read fields the schema has", async () => {
    const { schema, columns } = versionOf(await crd());
    assert.deepEqual(
      columns.map((c) => c.name),
      ["Ready", "Seeded", "Reason", "Image-Bytes", "From-Origin", "Age"],
    );
    for (const column of columns)
      assert.ok(nodeAt(schema, column.jsonPath) !== undefined, `${column.name}: ${column.jsonPath} is not in the schema`);
  });

  it("accepts the documented specs and rejects what the controller refuses, as the controller's own parser does", async () => {
    const validate = validator(versionOf(await crd()).schema);
    for (const spec of VALID_SPECS) {
      assert.ok(validate(object(spec)), `${JSON.stringify(spec)}: ${JSON.stringify(validate.errors)}`);
      assert.ok(controllerAccepts(spec), `the controller refuses ${JSON.stringify(spec)}`);
    }
    for (const [what, spec] of INVALID_SPECS) {
      assert.equal(validate(object(spec)), false, `the schema accepts ${what}: ${JSON.stringify(spec)}`);
      assert.equal(controllerAccepts(spec), false, `the controller accepts ${what}`);
    }
  });

  it("accepts the status the controller writes", async () => {
    const validate = validator(versionOf(await crd()).schema);
    const digest = (s: string): Digest => digestOf(s);
    let conditions = withCondition([], "Resolved", { status: "True", reason: "Resolved", message: "ok" }, "2026-01-02T03:04:05Z", 3);
    conditions = withCondition(conditions, "Ready", { status: "False", reason: "Seeding", message: "1/2" }, "2026-01-02T03:04:06Z", 3);
    conditions = withCondition(
      conditions,
      "Failed",
      { status: "True", reason: "SeedFailed", message: "node-2: auth: refused" },
      "2026-01-02T03:04:06Z",
      3,
    );
    const status = buildStatus({
      generation: 3,
      startTime: "2026-01-02T03:04:05Z",
      readyTime: undefined,
      images: [
        {
          text: "ghcr.io/acme/web:v2",
          registry: "ghcr.io",
          repository: "acme/web",
          digest: digest("index"),
          mediaType: "application/vnd.oci.image.index.v1+json",
          platforms: [{ platform: "linux/amd64", digest: digest("amd64") }],
          manifests: [{ digest: digest("index"), mediaType: "application/vnd.oci.image.index.v1+json", body: new Uint8Array(10) }],
          blobs: [{ digest: digest("layer"), size: 123_456_789_012 }],
          bytes: 123_456_789_022,
        },
      ],
      plan: {
        zones: [
          { zone: "a", target: 1, agents: 3, seeds: [] },
          { zone: "", target: 1, agents: 1, seeds: [] },
        ],
        seeds: [],
        zonesWithoutAgents: [],
        nodesWithoutAgent: [],
      },
      seeds: [
        { node: "node-1", zone: "a", state: "Seeded", bytesFromOrigin: 5, bytesFromPeers: 0 },
        { node: "node-2", zone: "", state: "Failed", message: "auth: refused", bytesFromOrigin: 0, bytesFromPeers: 0 },
      ],
      conditions,
    });
    assert.ok(validate(object({ images: ["ghcr.io/acme/web:v2"] }, status)), JSON.stringify(validate.errors));
    assert.equal(
      validate(
        object(
          { images: ["x"] },
          { ...status, conditions: [{ type: "Ready", status: "Maybe", reason: "x", lastTransitionTime: "2026-01-02T03:04:05Z" }] },
        ),
      ),
      false,
      "condition statuses are an enum",
    );
  });
});
