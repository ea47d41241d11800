import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  DigestVerifier,
  OciError,
  digestOf,
  isDigest,
  parseDigest,
  parseMirrorPath,
  parseRangeHeader,
  parseReference,
  parseRegistryHost,
  validateRepositoryName,
} from "./index.js";

const SHA256_EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SHA512_EMPTY =
  "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

function code(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (error) {
    assert.ok(error instanceof OciError, `expected OciError, got ${String(error)}`);
    return error.code;
  }
}

describe("parseDigest", () => {
  const cases: [string, string | undefined][] = [
    [SHA256_EMPTY, undefined],
    [SHA512_EMPTY, undefined],
    ["sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", "ERR_OCI_DIGEST_INVALID"],
    ["sha256:abc", "ERR_OCI_DIGEST_INVALID"],
    ["sha256:" + "g".repeat(64), "ERR_OCI_DIGEST_INVALID"],
    ["md5:d41d8cd98f00b204e9800998ecf8427e", "ERR_OCI_DIGEST_UNSUPPORTED"],
    ["sha256", "ERR_OCI_DIGEST_INVALID"],
    ["", "ERR_OCI_DIGEST_INVALID"],
    ["sha256:../../etc/passwd", "ERR_OCI_DIGEST_INVALID"],
    ["sha256:" + "a".repeat(64) + "/..", "ERR_OCI_DIGEST_INVALID"],
    ["sha256:" + "a".repeat(300), "ERR_OCI_DIGEST_INVALID"],
  ];
  for (const [input, expected] of cases) {
    it(`${JSON.stringify(input.slice(0, 40))} → ${expected ?? "ok"}`, () => {
      assert.equal(
        code(() => parseDigest(input)),
        expected,
      );
      assert.equal(isDigest(input), expected === undefined);
    });
  }
  it("digestOf and DigestVerifier agree with known values", () => {
    assert.equal(digestOf(""), SHA256_EMPTY);
    assert.equal(digestOf("", "sha512"), SHA512_EMPTY);
    const verifier = new DigestVerifier(digestOf("hello world"));
    verifier.update(Buffer.from("hello "));
    verifier.update(Buffer.from("world"));
    assert.equal(verifier.finish(), verifier.expected);
    assert.equal(verifier.bytesSeen, 11);
  });
});

describe("names, tags and references", () => {
  const names: [string, boolean][] = [
    ["library/alpine", true],
    ["a", true],
    ["a/b/c-d/e__f/g.h", true],
    ["Upper/case", false],
    ["a//b", false],
    ["../etc", false],
    ["a/../b", false],
    ["-a", false],
    ["a-", false],
    ["a".repeat(256), false],
    ["", false],
  ];
  for (const [name, ok] of names) {
    it(`name ${JSON.stringify(name.slice(0, 30))} ${ok ? "valid" : "invalid"}`, () => {
      assert.equal(
        code(() => validateRepositoryName(name)),
        ok ? undefined : "ERR_OCI_NAME_INVALID",
      );
    });
  }
  it("tags and digests are told apart by ':'", () => {
    assert.deepEqual(parseReference("v1.2.3"), { kind: "tag", tag: "v1.2.3" });
    assert.deepEqual(parseReference(SHA256_EMPTY), { kind: "digest", digest: SHA256_EMPTY });
    assert.equal(
      code(() => parseReference(".hidden")),
      "ERR_OCI_TAG_INVALID",
    );
    assert.equal(
      code(() => parseReference("a".repeat(129))),
      "ERR_OCI_TAG_INVALID",
    );
    assert.equal(
      code(() => parseReference("sha256:nothex")),
      "ERR_OCI_DIGEST_INVALID",
    );
  });
});

describe("parseRegistryHost", () => {
  const cases: [string, string | undefined][] = [
    ["ghcr.io", "ghcr.io"],
    ["127.0.0.1:5000", "127.0.0.1:5000"],
    ["[::1]:5000", "[::1]:5000"],
    ["Index.Docker.IO", "docker.io"],
    ["registry-1.docker.io", "docker.io"],
    ["localhost", "localhost"],
    ["https://ghcr.io", undefined],
    ["user:pass@ghcr.io", undefined],
    ["ghcr.io/path", undefined],
    ["ghcr.io:99999", undefined],
    ["", undefined],
    ["evil.com#frag", undefined],
  ];
  for (const [input, expected] of cases) {
    it(`${JSON.stringify(input)} → ${expected ?? "invalid"}`, () => {
      if (expected === undefined)
        assert.equal(
          code(() => parseRegistryHost(input)),
          "ERR_OCI_REGISTRY_INVALID",
        );
      else assert.equal(parseRegistryHost(input), expected);
    });
  }
});

describe("parseMirrorPath", () => {
  it("parses the base, manifests and blobs", () => {
    assert.deepEqual(parseMirrorPath("/v2/", null), { kind: "base" });
    assert.deepEqual(parseMirrorPath("/v2", null), { kind: "base" });
    assert.deepEqual(parseMirrorPath("/v2/library/alpine/manifests/3.20", "docker.io"), {
      kind: "manifest",
      registry: "docker.io",
      name: "library/alpine",
      reference: { kind: "tag", tag: "3.20" },
    });
    assert.deepEqual(parseMirrorPath(`/v2/a/b/blobs/${SHA256_EMPTY}`, null), {
      kind: "blob",
      registry: undefined,
      name: "a/b",
      digest: SHA256_EMPTY,
    });
  });
  it("takes the registry from the first segment when there is no ns, with the port as host:port, %3A or _", () => {
    const expected = { kind: "manifest", registry: "127.0.0.1:5000", name: "team/app", reference: { kind: "tag", tag: "v1" } };
    assert.deepEqual(parseMirrorPath("/v2/127.0.0.1:5000/team/app/manifests/v1", null), expected);
    assert.deepEqual(parseMirrorPath("/v2/127.0.0.1%3A5000/team/app/manifests/v1", null), expected);
    assert.deepEqual(parseMirrorPath("/v2/127.0.0.1_5000/team/app/manifests/v1", null), expected);
    const local = parseMirrorPath("/v2/localhost_5000/app/manifests/v1", null);
    assert.equal(local.kind === "manifest" ? local.registry : "", "localhost:5000");
  });
  it("adds library/ for single-component Docker Hub names", () => {
    const route = parseMirrorPath("/v2/docker.io/alpine/manifests/latest", null);
    assert.equal(route.kind === "manifest" ? route.name : "", "library/alpine");
  });
  it("prefers ns over a first segment that looks like a host", () => {
    const route = parseMirrorPath("/v2/my.org/app/manifests/v1", "ghcr.io");
    assert.deepEqual(route.kind === "manifest" ? [route.registry, route.name] : [], ["ghcr.io", "my.org/app"]);
  });
  const bad: [string, string | null, string][] = [
    ["/v2/../../etc/passwd/blobs/x", null, "ERR_OCI_PATH_INVALID"],
    ["/v2/a/%2e%2e/b/manifests/v1", null, "ERR_OCI_PATH_INVALID"],
    ["/v2/a%2Fb/manifests/v1", null, "ERR_OCI_PATH_INVALID"],
    ["/v2/a/blobs/sha256:1234", null, "ERR_OCI_DIGEST_INVALID"],
    ["/v2/a/blobs/uploads", null, "ERR_OCI_PATH_INVALID"],
    ["/v2/a/tags/list", null, "ERR_OCI_PATH_INVALID"],
    ["/v2/A/manifests/v1", null, "ERR_OCI_NAME_INVALID"],
    ["/v2/a/manifests/v1", "http://evil.example", "ERR_OCI_REGISTRY_INVALID"],
    ["/v2/a/manifests/v1", "user:pw@ghcr.io", "ERR_OCI_REGISTRY_INVALID"],
    ["/v2/a/manifests/%E0%A4%A", null, "ERR_OCI_PATH_INVALID"],
    ["/etc/passwd", null, "ERR_OCI_PATH_INVALID"],
    ["/v2/" + "a/".repeat(1100) + "manifests/v1", null, "ERR_OCI_PATH_INVALID"],
  ];
  for (const [path, ns, expected] of bad) {
    it(`refuses ${JSON.stringify(path.slice(0, 50))}${ns === null ? "" : ` ns=${ns}`}`, () => {
      assert.equal(
        code(() => parseMirrorPath(path, ns)),
        expected,
      );
    });
  }
});

describe("parseRangeHeader", () => {
  const cases: [string | undefined, number, { start: number; end: number } | undefined | "invalid"][] = [
    [undefined, 100, undefined],
    ["bytes=0-9", 100, { start: 0, end: 9 }],
    ["bytes=90-", 100, { start: 90, end: 99 }],
    ["bytes=-10", 100, { start: 90, end: 99 }],
    ["bytes=-1000", 100, { start: 0, end: 99 }],
    ["bytes=50-5000", 100, { start: 50, end: 99 }],
    ["bytes=100-", 100, "invalid"],
    ["bytes=10-5", 100, "invalid"],
    ["bytes=0-1,5-6", 100, "invalid"],
    ["items=0-1", 100, "invalid"],
    ["bytes=-0", 100, "invalid"],
    ["bytes=-", 100, "invalid"],
    ["bytes=0-0", 0, "invalid"],
  ];
  for (const [header, size, expected] of cases) {
    it(`${String(header)} of ${size} → ${JSON.stringify(expected)}`, () => {
      if (expected === "invalid")
        assert.equal(
          code(() => parseRangeHeader(header, size)),
          "ERR_OCI_RANGE_INVALID",
        );
      else assert.deepEqual(parseRangeHeader(header, size), expected);
    });
  }
});
