import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST, digestOf } from "../../oci/index.js";
import { FakeUpstream, seededBytes, seededChunks } from "./index.js";

const MANIFEST = { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, config: {}, layers: [] };

interface OciErrorBody {
  errors: { code: string; message: string }[];
}

async function errorCode(res: Response): Promise<string | undefined> {
  const body = (await res.json()) as OciErrorBody;
  return body.errors[0]?.code;
}

function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
}

/** Parses `Bearer realm="..",service="..",scope=".."` into its parameters. */
function challengeParams(header: string | null): Record<string, string> {
  assert.ok(header !== null && header.startsWith("Bearer "), `expected a Bearer challenge, got ${String(header)}`);
  return Object.fromEntries([...header.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1] ?? "", m[2] ?? ""]));
}

async function sha256OfBody(res: Response): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of res.body! as AsyncIterable<Uint8Array>) hash.update(chunk);
  return `sha256:${hash.digest("hex")}`;
}

describe("FakeUpstream pull API", () => {
  let up: FakeUpstream;
  const layer = Buffer.from("layer bytes 0123456789abcdefghijklmnopqrstuvwxyz");
  before(async () => {
    up = await FakeUpstream.start();
  });
  after(() => up.close());

  it("answers /v2/ with 200 for GET and HEAD", async () => {
    const get = await fetch(`${up.url}/v2/`);
    assert.equal(get.status, 200);
    assert.deepEqual(await get.json(), {});
    assert.equal((await fetch(`${up.url}/v2/`, { method: "HEAD" })).status, 200);
    assert.equal(up.host, new URL(up.url).host);
  });

  it("serves manifests by tag and digest with media type, digest and length", async () => {
    const ref = up.addManifest("library/app", "v1", MANIFEST);
    const bytes = Buffer.from(JSON.stringify(MANIFEST));
    assert.equal(ref.digest, digestOf(bytes));
    for (const reference of ["v1", ref.digest]) {
      const res = await fetch(`${up.url}/v2/library/app/manifests/${reference}`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("content-type"), MEDIA_TYPE_OCI_MANIFEST);
      assert.equal(res.headers.get("docker-content-digest"), ref.digest);
      assert.equal(res.headers.get("content-length"), String(ref.size));
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), bytes);
    }
    const head = await fetch(`${up.url}/v2/library/app/manifests/v1`, { method: "HEAD" });
    assert.equal(head.headers.get("content-length"), String(ref.size));
    assert.equal((await head.arrayBuffer()).byteLength, 0);
  });

  it("keeps the media type given, raw bytes as given, and moves tags", async () => {
    const raw = Buffer.from('{"schemaVersion":2,  "manifests":[]}');
    const index = up.addManifest("multi", "latest", raw, MEDIA_TYPE_OCI_INDEX);
    const docker = up.addManifest("multi", undefined, { schemaVersion: 2, layers: [] }, MEDIA_TYPE_DOCKER_MANIFEST);
    const first = await fetch(`${up.url}/v2/multi/manifests/latest`);
    assert.equal(first.headers.get("content-type"), MEDIA_TYPE_OCI_INDEX);
    assert.deepEqual(Buffer.from(await first.arrayBuffer()), raw);
    assert.equal((await fetch(`${up.url}/v2/multi/manifests/${docker.digest}`)).headers.get("content-type"), MEDIA_TYPE_DOCKER_MANIFEST);
    up.setTag("multi", "latest", docker.digest);
    const moved = await fetch(`${up.url}/v2/multi/manifests/latest`);
    assert.equal(moved.headers.get("docker-content-digest"), docker.digest);
    assert.notEqual(index.digest, docker.digest);
    assert.throws(() => {
      up.setTag("multi", "x", digestOf("nothing"));
    });
  });

  it("answers unknown manifests and blobs with 404 and OCI error codes", async () => {
    const ref = up.addManifest("only-here", "v1", MANIFEST);
    const unknownTag = await fetch(`${up.url}/v2/only-here/manifests/v2`);
    assert.equal(unknownTag.status, 404);
    assert.equal(await errorCode(unknownTag), "MANIFEST_UNKNOWN");
    // Manifests belong to their repository.
    const otherRepo = await fetch(`${up.url}/v2/elsewhere/manifests/${ref.digest}`);
    assert.equal(otherRepo.status, 404);
    assert.equal(await errorCode(otherRepo), "MANIFEST_UNKNOWN");
    const blob = await fetch(`${up.url}/v2/only-here/blobs/${digestOf("absent")}`);
    assert.equal(blob.status, 404);
    assert.equal(await errorCode(blob), "BLOB_UNKNOWN");
    assert.equal((await fetch(`${up.url}/v2/only-here/manifests/v1`, { method: "PUT", body: "x" })).status, 405);
  });

  it("serves blobs whole and by range", async () => {
    const { digest, size } = await up.addBlob(layer);
    const whole = await fetch(`${up.url}/v2/any/repo/blobs/${digest}`);
    assert.equal(whole.status, 200);
    assert.equal(whole.headers.get("accept-ranges"), "bytes");
    assert.equal(whole.headers.get("docker-content-digest"), digest);
    assert.equal(whole.headers.get("content-length"), String(size));
    assert.deepEqual(Buffer.from(await whole.arrayBuffer()), layer);

    const part = await fetch(`${up.url}/v2/any/repo/blobs/${digest}`, { headers: { range: "bytes=5-9" } });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get("content-range"), `bytes 5-9/${size}`);
    assert.equal(part.headers.get("content-length"), "5");
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), layer.subarray(5, 10));

    const suffix = await fetch(`${up.url}/v2/any/repo/blobs/${digest}`, { headers: { range: "bytes=-4" } });
    assert.deepEqual(Buffer.from(await suffix.arrayBuffer()), layer.subarray(size - 4));

    const beyond = await fetch(`${up.url}/v2/any/repo/blobs/${digest}`, { headers: { range: `bytes=${size}-` } });
    assert.equal(beyond.status, 416);
    assert.equal(beyond.headers.get("content-range"), `bytes */${size}`);
    await beyond.arrayBuffer();
  });

  it("counts blob body bytes only, and records every request", async () => {
    const fresh = await FakeUpstream.start();
    after(() => fresh.close());
    const { digest, size } = await fresh.addBlob(layer);
    fresh.addManifest("r", "t", MANIFEST);
    await (await fetch(`${fresh.url}/v2/r/manifests/t`)).arrayBuffer();
    await (await fetch(`${fresh.url}/v2/r/blobs/${digest}`, { method: "HEAD" })).arrayBuffer();
    assert.equal(fresh.blobBytesServed, 0);
    await (await fetch(`${fresh.url}/v2/r/blobs/${digest}?ns=docker.io`, { headers: { authorization: "Bearer abc" } })).arrayBuffer();
    await (await fetch(`${fresh.url}/v2/r/blobs/${digest}`, { headers: { range: "bytes=0-2" } })).arrayBuffer();
    assert.equal(fresh.blobBytesServed, size + 3);

    const [manifest, head, get, ranged] = fresh.requests;
    assert.equal(fresh.requests.length, 4);
    assert.deepEqual([manifest?.kind, manifest?.name, manifest?.reference, manifest?.status], ["manifest", "r", "t", 200]);
    assert.equal(head?.method, "HEAD");
    assert.equal(head.bodyBytes, 0);
    assert.equal(get?.path, `/v2/r/blobs/${digest}`);
    assert.equal(get.query.get("ns"), "docker.io");
    assert.equal(get.headers.authorization, "Bearer abc");
    assert.equal(get.bodyBytes, size);
    assert.equal(ranged?.status, 206);
    assert.ok(ranged.receivedAtMs >= manifest!.receivedAtMs);
    assert.deepEqual(fresh.errors, []);
  });

  it("streams large seeded blobs whose bytes match the digest computed at addBlob", async () => {
    const content = { size: 48 * 1024 * 1024 + 7, seed: "large" };
    const { digest, size } = await up.addBlob(content);
    assert.equal(size, content.size);
    const res = await fetch(`${up.url}/v2/big/blobs/${digest}`);
    assert.equal(res.headers.get("content-length"), String(content.size));
    assert.equal(await sha256OfBody(res), digest);
    // A range at an offset that is neither block- nor chunk-aligned.
    const start = 3 * 64 * 1024 - 5;
    const part = await fetch(`${up.url}/v2/big/blobs/${digest}`, { headers: { range: `bytes=${start}-${start + 99}` } });
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), seededBytes("large", start, 100));
    assert.notEqual((await up.addBlob({ size: 1024, seed: "other" })).digest, (await up.addBlob({ size: 1024, seed: "large" })).digest);
  });
});

describe("seeded content", () => {
  it("is the same bytes whatever offset it is generated from", () => {
    const whole = Buffer.concat([...seededChunks("s", 0, 200_000)]);
    assert.equal(whole.byteLength, 200_000);
    for (const [start, length] of [
      [0, 1],
      [17, 100],
      [65_530, 20],
      [131_071, 68_929],
    ] as const) {
      assert.deepEqual(seededBytes("s", start, length), whole.subarray(start, start + length), `at ${start}`);
    }
    assert.notDeepEqual(seededBytes("t", 0, 32), whole.subarray(0, 32));
  });
});

describe("FakeUpstream basic auth", () => {
  it("challenges with Basic and admits only the right credentials", async (t) => {
    const up = await FakeUpstream.start();
    t.after(() => up.close());
    up.requireBasic({ username: "u", password: "p", realm: "fake" });
    up.addManifest("app", "v1", MANIFEST);
    const anonymous = await fetch(`${up.url}/v2/app/manifests/v1`);
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.headers.get("www-authenticate"), 'Basic realm="fake"');
    assert.equal(await errorCode(anonymous), "UNAUTHORIZED");
    const wrong = await fetch(`${up.url}/v2/app/manifests/v1`, { headers: { authorization: basic("u", "x") } });
    assert.equal(wrong.status, 401);
    await wrong.arrayBuffer();
    const right = await fetch(`${up.url}/v2/app/manifests/v1`, { headers: { authorization: basic("u", "p") } });
    assert.equal(right.status, 200);
    await right.arrayBuffer();
    up.allowAnonymous();
    assert.equal((await fetch(`${up.url}/v2/`)).status, 200);
  });
});

describe("FakeUpstream bearer auth", () => {
  async function token(up: FakeUpstream, params: string, authorization?: string): Promise<Response> {
    return fetch(`${up.url}/token?${params}`, authorization === undefined ? {} : { headers: { authorization } });
  }

  it("runs the challenge / token / retry flow with scoped tokens", async (t) => {
    const up = await FakeUpstream.start();
    t.after(() => up.close());
    up.requireBearer({ service: "fake.registry" });
    up.addManifest("org/app", "v1", MANIFEST);
    up.addManifest("org/other", "v1", MANIFEST);

    const base = await fetch(`${up.url}/v2/`);
    assert.equal(base.status, 401);
    assert.deepEqual(challengeParams(base.headers.get("www-authenticate")), { realm: `${up.url}/token`, service: "fake.registry" });
    await base.arrayBuffer();

    const challenged = await fetch(`${up.url}/v2/org/app/manifests/v1`);
    assert.equal(challenged.status, 401);
    const params = challengeParams(challenged.headers.get("www-authenticate"));
    assert.deepEqual(params, { realm: `${up.url}/token`, service: "fake.registry", scope: "repository:org/app:pull" });
    await challenged.arrayBuffer();

    const wrongService = await token(up, "service=nope&scope=repository:org/app:pull");
    assert.equal(wrongService.status, 400);
    await wrongService.arrayBuffer();

    const issued = await token(up, new URLSearchParams({ service: params.service, scope: params.scope }).toString());
    assert.equal(issued.status, 200);
    const body = (await issued.json()) as { token: string; access_token: string; expires_in: number; issued_at: string };
    assert.match(body.token, /^fake-/);
    assert.equal(body.access_token, body.token);
    assert.equal(body.expires_in, 300);
    assert.ok(!Number.isNaN(Date.parse(body.issued_at)));

    const bearer = { authorization: `Bearer ${body.token}` };
    const ok = await fetch(`${up.url}/v2/org/app/manifests/v1`, { headers: bearer });
    assert.equal(ok.status, 200);
    await ok.arrayBuffer();
    assert.equal((await fetch(`${up.url}/v2/`, { headers: bearer })).status, 200);
    const otherRepo = await fetch(`${up.url}/v2/org/other/manifests/v1`, { headers: bearer });
    assert.equal(otherRepo.status, 401, "a token is only good for the scopes it was issued for");
    await otherRepo.arrayBuffer();
    const forged = await fetch(`${up.url}/v2/org/app/manifests/v1`, { headers: { authorization: "Bearer fake-forged" } });
    assert.equal(forged.status, 401);
    await forged.arrayBuffer();

    assert.equal(up.tokenRequests, 2);
    up.revokeTokens();
    const revoked = await fetch(`${up.url}/v2/org/app/manifests/v1`, { headers: bearer });
    assert.equal(revoked.status, 401);
    await revoked.arrayBuffer();
  });

  it("checks Basic credentials at /token and expires tokens by its clock", async (t) => {
    let nowMs = Date.parse("2030-01-01T00:00:00Z");
    const up = await FakeUpstream.start({ clockMs: () => nowMs });
    t.after(() => up.close());
    up.requireBearer({ service: "svc", username: "u", password: "p", tokenTtlSeconds: 60 });
    up.addManifest("app", "v1", MANIFEST);
    const query = "service=svc&scope=repository:app:pull";

    const anonymous = await token(up, query);
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get("www-authenticate") ?? "", /^Basic /);
    await anonymous.arrayBuffer();
    const wrong = await token(up, query, basic("u", "nope"));
    assert.equal(wrong.status, 401);
    await wrong.arrayBuffer();

    const issued = await token(up, query, basic("u", "p"));
    assert.equal(issued.status, 200);
    const body = (await issued.json()) as { token: string; expires_in: number; issued_at: string };
    assert.equal(body.expires_in, 60);
    assert.equal(body.issued_at, "2030-01-01T00:00:00.000Z");
    const headers = { authorization: `Bearer ${body.token}` };
    nowMs += 59_000;
    const fresh = await fetch(`${up.url}/v2/app/manifests/v1`, { headers });
    assert.equal(fresh.status, 200);
    await fresh.arrayBuffer();
    nowMs += 1_000;
    const expired = await fetch(`${up.url}/v2/app/manifests/v1`, { headers });
    assert.equal(expired.status, 401);
    await expired.arrayBuffer();
    assert.equal(up.tokenRequests, 3);
  });

  it("does not spend scripts on 401 challenges", async (t) => {
    const up = await FakeUpstream.start();
    t.after(() => up.close());
    up.requireBearer({ service: "svc" });
    const script = up.script({ kind: "manifest" }, { kind: "status", status: 503 }, { times: 1 });
    await (await fetch(`${up.url}/v2/app/manifests/v1`)).arrayBuffer();
    assert.equal(script.hits, 0);
    const { token: issued } = (await (await token(up, "service=svc&scope=repository:app:pull")).json()) as { token: string };
    const res = await fetch(`${up.url}/v2/app/manifests/v1`, { headers: { authorization: `Bearer ${issued}` } });
    assert.equal(res.status, 503);
    await res.arrayBuffer();
    assert.equal(script.hits, 1);
  });
});
