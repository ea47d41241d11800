import { randomBytes } from "node:crypto";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { type LabelSelector, parseLabelSelector } from "../label-selector.js";
import {
  type ApiRequestKind,
  type ApiVerb,
  type ModeledResource,
  type RecordedApiRequest,
  type Route,
  distinctKinds,
  modeled,
  parseRoute,
} from "./api-routes.js";
import { type NodeFixture, type PodFixture, nodeObject, podObject } from "./fixtures.js";
import { type ApiObject, ObjectStore, type WatchEventType, type WatchSink, clone } from "./object-store.js";
import { ApiStatusError, statuses } from "./status.js";
import { type ServiceAccountTokenRequest, TokenAuthority } from "./token-reviews.js";
import { validateCreate, validateUpdate } from "./validation.js";

/** Real API servers send a bookmark about once a minute; client-node gives up on a watch silent for 30 s. */
export const DEFAULT_BOOKMARK_INTERVAL_MS = 10_000;
const MAX_BODY_BYTES = 1024 * 1024;

export interface KubeApiDoubleOptions {
  /** Bearer token clients must send; random by default. */
  readonly token?: string;
  readonly bookmarkIntervalMs?: number;
  /**
   * Also serve on this Unix socket (same API, same state): reachable from other network namespaces,
   * which 127.0.0.1 is not, through a forwarder there.
   */
  readonly socketPath?: string;
}

export interface FailureMatch {
  readonly verb?: ApiVerb;
  readonly resource?: string;
}

/** How an injected failure answers: a Status with this code, or a connection reset. */
export type FailureResponse = { readonly status: number; readonly reason?: string } | "reset";

export interface InjectedFailure {
  readonly hits: number;
  remove(): void;
}

interface OpenWatch {
  readonly sink: WatchSink;
  readonly response: ServerResponse;
  readonly kind: ModeledResource;
  readonly bookmarks: boolean;
}

interface FailureRule {
  readonly match: FailureMatch;
  readonly response: FailureResponse;
  remaining: number;
  hits: number;
}

/**
 * A Kubernetes API server double on 127.0.0.1, speaking the wire protocol for exactly what Shoal uses;
 * see README.md for what it models and what it does not. Driven in tests by the real client-node
 * through kubeConfig(). Test controls change objects (each change is a new resourceVersion and a watch
 * event), compact history, drop watch connections, inject failures and read the request log.
 */
export class KubeApiDouble {
  /** "event": a watch from a compacted resourceVersion gets 200 + an ERROR event (410), as kube-apiserver does; "status": HTTP 410. */
  goneAs: "event" | "status" = "event";
  private readonly store = new ObjectStore();
  private readonly watches = new Set<OpenWatch>();
  private readonly log: RecordedApiRequest[] = [];
  private readonly failures = new Set<FailureRule>();
  private readonly tokens = new TokenAuthority();
  private readonly bookmarkTimer: NodeJS.Timeout;

  private constructor(
    private readonly server: Server,
    private readonly socketServer: Server | undefined,
    readonly token: string,
    bookmarkIntervalMs: number,
  ) {
    this.bookmarkTimer = setInterval(() => {
      this.sendBookmarks();
    }, bookmarkIntervalMs);
    this.bookmarkTimer.unref();
  }

  static async start(options: KubeApiDoubleOptions = {}): Promise<KubeApiDouble> {
    const ref: { instance?: KubeApiDouble } = {};
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      if (ref.instance === undefined) res.writeHead(503).end();
      else ref.instance.handle(req, res);
    };
    const listen = (server: Server, where: { port: number; host: string } | { path: string }): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(where, () => {
          server.off("error", reject);
          resolve();
        });
      });
    const server = createServer(handler);
    await listen(server, { port: 0, host: "127.0.0.1" });
    let socketServer: Server | undefined;
    if (options.socketPath !== undefined) {
      socketServer = createServer(handler);
      try {
        await listen(socketServer, { path: options.socketPath });
      } catch (error: unknown) {
        server.close();
        throw error;
      }
    }
    ref.instance = new KubeApiDouble(
      server,
      socketServer,
      options.token ?? randomBytes(16).toString("hex"),
      options.bookmarkIntervalMs ?? DEFAULT_BOOKMARK_INTERVAL_MS,
    );
    return ref.instance;
  }

  get url(): string {
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  /** A client-node KubeConfig pointing at this double with its token. */
  kubeConfig(): KubeConfig {
    const config = new KubeConfig();
    config.loadFromString(this.kubeconfigYaml());
    return config;
  }

  /** The same as a kubeconfig file's text (JSON is YAML), for --kubeconfig. */
  kubeconfigYaml(): string {
    return JSON.stringify({
      apiVersion: "v1",
      kind: "Config",
      // client-node 2.x refuses plain HTTP unless TLS verification is off; the double speaks HTTP on loopback.
      clusters: [{ name: "double", cluster: { server: this.url, "insecure-skip-tls-verify": true } }],
      users: [{ name: "shoal", user: { token: this.token } }],
      contexts: [{ name: "double", context: { cluster: "double", user: "shoal" } }],
      "current-context": "double",
    });
  }

  // ---- test controls -------------------------------------------------------------------------

  get resourceVersion(): number {
    return this.store.resourceVersion;
  }

  putPod(fixture: PodFixture): ApiObject {
    return this.store.upsert(modeled("pods"), podObject(fixture));
  }

  /** Changes a stored Pod (a MODIFIED event). */
  updatePod(namespace: string, name: string, mutate: (pod: ApiObject) => void): ApiObject {
    return this.mutate(modeled("pods"), namespace, name, mutate);
  }

  setPodReady(namespace: string, name: string, ready: boolean): ApiObject {
    return this.updatePod(namespace, name, (pod) => {
      (pod.status as { conditions: unknown[] }).conditions = [{ type: "Ready", status: ready ? "True" : "False" }];
    });
  }

  setPodIP(namespace: string, name: string, ip: string | undefined): ApiObject {
    return this.updatePod(namespace, name, (pod) => {
      const status = pod.status as Record<string, unknown>;
      if (ip === undefined) {
        delete status.podIP;
        delete status.podIPs;
      } else {
        status.podIP = ip;
        status.podIPs = [{ ip }];
      }
    });
  }

  /** Graceful deletion's first step: deletionTimestamp is set, the Pod still exists. */
  markPodTerminating(namespace: string, name: string): ApiObject {
    return this.updatePod(namespace, name, (pod) => {
      pod.metadata.deletionTimestamp = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    });
  }

  deletePod(namespace: string, name: string): void {
    this.store.delete(modeled("pods"), namespace, name);
  }

  putNode(fixture: NodeFixture): ApiObject {
    return this.store.upsert(modeled("nodes"), nodeObject(fixture));
  }

  updateNode(name: string, mutate: (node: ApiObject) => void): ApiObject {
    return this.mutate(modeled("nodes"), undefined, name, mutate);
  }

  deleteNode(name: string): void {
    this.store.delete(modeled("nodes"), undefined, name);
  }

  /** Creates or replaces a Secret; `data` values are raw (encoded to base64 as the API stores them). */
  putSecret(secret: { namespace: string; name: string; type?: string; data: Record<string, string | Buffer> }): ApiObject {
    const data = Object.fromEntries(Object.entries(secret.data).map(([key, value]) => [key, Buffer.from(value).toString("base64")]));
    return this.store.upsert(modeled("secrets"), {
      metadata: { name: secret.name, namespace: secret.namespace },
      type: secret.type ?? "Opaque",
      data,
    });
  }

  deleteSecret(namespace: string, name: string): void {
    this.store.delete(modeled("secrets"), namespace, name);
  }

  /**
   * A ServiceAccount token as the kubelet gets one for a projected volume (TokenRequest): bound to
   * `pod` (which must exist: its uid and node are taken now), for `audiences`, expiring after
   * `expirationSeconds`. TokenReview then authenticates it as the API server would.
   */
  serviceAccountToken(request: {
    namespace: string;
    serviceAccount: string;
    pod?: string;
    audiences?: readonly string[];
    expirationSeconds?: number;
  }): string {
    let pod: ServiceAccountTokenRequest["pod"];
    if (request.pod !== undefined) {
      const found = this.store.get(modeled("pods"), request.namespace, request.pod);
      if (found === undefined) throw new Error(`pod ${request.namespace}/${request.pod} does not exist`);
      pod = {
        name: request.pod,
        uid: found.metadata.uid ?? "",
        nodeName: (found.spec as { nodeName?: string } | undefined)?.nodeName ?? "",
      };
    }
    return this.tokens.issue({
      namespace: request.namespace,
      serviceAccount: request.serviceAccount,
      ...(pod === undefined ? {} : { pod }),
      ...(request.audiences === undefined ? {} : { audiences: request.audiences }),
      ...(request.expirationSeconds === undefined ? {} : { expirationSeconds: request.expirationSeconds }),
    });
  }

  /** The stored object (a copy), or undefined. */
  object(
    resource: "pods" | "nodes" | "leases" | "events" | "secrets" | "imageprefetches",
    namespace: string | undefined,
    name: string,
  ): ApiObject | undefined {
    const found = this.store.get(modeled(resource), namespace, name);
    return found === undefined ? undefined : clone(found);
  }

  /**
   * Creates or updates an ImagePrefetch as a user's `kubectl apply` would (not logged as a request): a
   * create gets generation 1 and no status; an update keeps the status and counts spec changes.
   */
  putImagePrefetch(object: ApiObject): ApiObject {
    const kind = modeled("imageprefetches");
    const body = clone(object);
    if (this.store.get(kind, body.metadata.namespace, body.metadata.name) === undefined) {
      delete body.status;
      body.metadata.generation = 1;
      return this.store.create(kind, body);
    }
    return this.store.update(kind, this.withSubresourceRules(kind, body, undefined));
  }

  deleteImagePrefetch(namespace: string, name: string): void {
    this.store.delete(modeled("imageprefetches"), namespace, name);
  }

  /** Every stored ImagePrefetch, copies. */
  imagePrefetches(namespace?: string): ApiObject[] {
    return this.store.list({ resource: "imageprefetches", namespace, selector: parseLabelSelector("") });
  }

  /** Creates or replaces a Lease as some other client would (e.g. a holder that is not running). */
  putLease(lease: ApiObject): ApiObject {
    return this.store.upsert(modeled("leases"), lease);
  }

  /** Events created so far, oldest first. */
  events(namespace?: string): ApiObject[] {
    return this.store
      .list({ resource: "events", namespace, selector: parseLabelSelector("") })
      .sort((a, b) => Number(a.metadata.resourceVersion) - Number(b.metadata.resourceVersion));
  }

  /** Forgets history: resuming a watch from a resourceVersion before now is 410 Gone. */
  compact(): void {
    this.store.compact();
  }

  /** Destroys every open watch connection (as a network failure or an API server crash would). */
  dropWatches(resource?: string): number {
    let dropped = 0;
    for (const watch of [...this.watches]) {
      if (resource !== undefined && watch.kind.resource !== resource) continue;
      this.closeWatch(watch);
      watch.response.destroy();
      dropped++;
    }
    return dropped;
  }

  /** Ends every open watch cleanly (as the API server does at a watch's timeout). */
  endWatches(resource?: string): number {
    let ended = 0;
    for (const watch of [...this.watches]) {
      if (resource !== undefined && watch.kind.resource !== resource) continue;
      this.closeWatch(watch);
      watch.response.end();
      ended++;
    }
    return ended;
  }

  openWatches(resource?: string): number {
    return [...this.watches].filter((w) => resource === undefined || w.kind.resource === resource).length;
  }

  /** Sends a BOOKMARK at the current resourceVersion on every watch that asked for bookmarks. */
  sendBookmarks(): void {
    for (const watch of this.watches) {
      if (!watch.bookmarks) continue;
      const { kind } = watch;
      writeEvent(watch.response, "BOOKMARK", {
        kind: kind.kind,
        apiVersion: kind.group === "" ? kind.version : `${kind.group}/${kind.version}`,
        metadata: { resourceVersion: String(this.store.resourceVersion) },
      });
    }
  }

  /** Answers matching requests (after authentication) with a failure, `times` times (default: until removed). */
  failRequests(match: FailureMatch, response: FailureResponse, times = Number.POSITIVE_INFINITY): InjectedFailure {
    const rule: FailureRule = { match, response, remaining: times, hits: 0 };
    this.failures.add(rule);
    return {
      get hits() {
        return rule.hits;
      },
      remove: () => this.failures.delete(rule),
    };
  }

  /** Every request received, in order. */
  requests(): readonly RecordedApiRequest[] {
    return [...this.log];
  }

  /** Distinct (verb, apiGroup, resource, namespaced) of the requests received, sorted. */
  distinctRequests(): ApiRequestKind[] {
    return distinctKinds(this.log);
  }

  async close(): Promise<void> {
    clearInterval(this.bookmarkTimer);
    for (const watch of [...this.watches]) {
      this.closeWatch(watch);
      watch.response.destroy();
    }
    for (const server of [this.server, this.socketServer]) {
      if (server === undefined) continue;
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        server.closeAllConnections();
      });
    }
  }

  /** The kubeconfig's text for a client that reaches the double at `server` (e.g. a forwarder in another namespace). */
  kubeconfigYamlFor(server: string): string {
    const config = JSON.parse(this.kubeconfigYaml()) as { clusters: { cluster: { server: string } }[] };
    for (const cluster of config.clusters) cluster.cluster.server = server;
    return JSON.stringify(config);
  }

  // ---- the API -------------------------------------------------------------------------------

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://double");
    let route: Route;
    try {
      route = parseRoute(req.method ?? "GET", url);
    } catch (error: unknown) {
      this.log.push({ verb: "unknown", apiGroup: "", resource: url.pathname, namespace: undefined, name: undefined, status: 0 });
      this.fail(res, error, this.log.at(-1));
      return;
    }
    const resource = route.subresource === undefined ? route.kind.resource : `${route.kind.resource}/${route.subresource}`;
    const entry: RecordedApiRequest = {
      verb: route.verb,
      apiGroup: route.kind.group,
      resource,
      namespace: route.namespace,
      name: route.name,
      status: 0,
    };
    this.log.push(entry);
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      this.fail(res, statuses.unauthorized(), entry);
      return;
    }
    const failure = this.injectedFailure(route);
    if (failure === "reset") {
      entry.status = 0;
      req.socket.destroy();
      return;
    }
    if (failure !== undefined) {
      this.fail(res, new ApiStatusError(failure.status, failure.reason ?? "InternalError", `injected failure (${failure.status})`), entry);
      return;
    }
    this.serve(route, url, req, res, entry).catch((error: unknown) => {
      this.fail(res, error, entry);
    });
  }

  private async serve(route: Route, url: URL, req: IncomingMessage, res: ServerResponse, entry: RecordedApiRequest): Promise<void> {
    const { kind, namespace, name } = route;
    const send = (code: number, body: unknown): void => {
      entry.status = code;
      res.writeHead(code, { "content-type": "application/json" }).end(JSON.stringify(body));
    };
    switch (route.verb) {
      case "watch":
        this.watch(route, url, res, entry);
        return;
      case "list": {
        const selector = selectorOf(url);
        const rv = url.searchParams.get("resourceVersion") ?? "";
        if (url.searchParams.get("resourceVersionMatch") === "Exact") {
          if (/^\d+$/.test(rv) && Number(rv) < this.store.oldestResourceVersion)
            throw statuses.expired(Number(rv), this.store.oldestResourceVersion);
          if (rv !== String(this.store.resourceVersion))
            throw statuses.badRequest("the double serves resourceVersionMatch=Exact only at the current resourceVersion");
        }
        const items = this.store.list({ resource: kind.resource, namespace, selector }).map((o) => {
          const { kind: _kind, apiVersion: _apiVersion, ...rest } = o;
          return rest;
        });
        send(200, {
          kind: `${kind.kind}List`,
          apiVersion: apiVersionOf(kind),
          metadata: { resourceVersion: String(this.store.resourceVersion) },
          items,
        });
        return;
      }
      case "get": {
        const found = this.store.get(kind, namespace, name ?? "");
        if (found === undefined) throw statuses.notFound(kind.resource, kind.group, name ?? "");
        send(200, found);
        return;
      }
      case "create": {
        if (kind.resource === "tokenreviews") {
          // Not an object to store: the API server answers with the review (no name needed).
          const review = await readObject(req, false);
          validateCreate(kind, review);
          const podUid = (ns: string, pod: string): string | undefined => this.store.get(modeled("pods"), ns, pod)?.metadata.uid;
          send(201, {
            kind: "TokenReview",
            apiVersion: "authentication.k8s.io/v1",
            metadata: {},
            spec: review.spec,
            status: this.tokens.review(review, podUid),
          });
          return;
        }
        const body = await readObject(req);
        if (body.metadata.namespace !== undefined && body.metadata.namespace !== "" && body.metadata.namespace !== namespace) {
          throw statuses.badRequest("the namespace of the provided object does not match the namespace sent on the request");
        }
        if (namespace !== undefined) body.metadata.namespace = namespace;
        if ((body.metadata.name as string | undefined) === undefined || body.metadata.name === "") {
          const generate = body.metadata.generateName;
          if (typeof generate !== "string" || generate === "")
            throw statuses.invalid(kind.resource, kind.group, "", "metadata.name: Required value: name or generateName is required");
          body.metadata.name = `${generate}${randomBytes(3).toString("hex").slice(0, 5)}`;
        }
        delete body.metadata.resourceVersion;
        validateCreate(kind, body);
        if (kind.statusSubresource === true) {
          // The API server drops the status of a create when the status subresource is on.
          delete body.status;
          body.metadata.generation = 1;
        }
        send(201, this.store.create(kind, body));
        return;
      }
      case "update": {
        const body = await readObject(req);
        if (body.metadata.name !== name)
          throw statuses.badRequest(`the name of the object (${body.metadata.name}) does not match the name on the URL (${String(name)})`);
        if (body.metadata.namespace !== undefined && body.metadata.namespace !== namespace) {
          throw statuses.badRequest("the namespace of the provided object does not match the namespace sent on the request");
        }
        if (namespace !== undefined) body.metadata.namespace = namespace;
        const expected = body.metadata.resourceVersion;
        if (expected === undefined || expected === "")
          throw statuses.invalid(
            kind.resource,
            kind.group,
            name,
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
          );
        validateUpdate(kind, body);
        send(
          200,
          this.store.update(
            kind,
            kind.statusSubresource === true ? this.withSubresourceRules(kind, body, route.subresource) : body,
            expected,
          ),
        );
        return;
      }
      case "delete":
        send(200, this.store.delete(kind, namespace, name ?? ""));
        return;
      case "patch":
      case "deletecollection":
        throw statuses.methodNotAllowed(route.verb);
    }
  }

  /**
   * An update under the status subresource's rules: `/status` changes only the status; the resource
   * itself keeps the stored status, and a changed spec increments metadata.generation.
   */
  private withSubresourceRules(kind: ModeledResource, body: ApiObject, subresource: string | undefined): ApiObject {
    const current = this.store.get(kind, body.metadata.namespace, body.metadata.name);
    if (current === undefined) throw statuses.notFound(kind.resource, kind.group, body.metadata.name);
    if (subresource === "status") {
      const next = clone(current);
      next.metadata.resourceVersion = body.metadata.resourceVersion;
      if (body.status === undefined) delete next.status;
      else next.status = body.status;
      return next;
    }
    const next = clone(body);
    if (current.status === undefined) delete next.status;
    else next.status = clone(current.status);
    const generation = typeof current.metadata.generation === "number" ? current.metadata.generation : 1;
    next.metadata.generation = JSON.stringify(body.spec) === JSON.stringify(current.spec) ? generation : generation + 1;
    return next;
  }

  private watch(route: Route, url: URL, res: ServerResponse, entry: RecordedApiRequest): void {
    const selector = selectorOf(url);
    const rvParam = url.searchParams.get("resourceVersion") ?? "";
    if (rvParam !== "" && rvParam !== "0" && !/^\d+$/.test(rvParam))
      throw statuses.badRequest(`invalid resourceVersion ${JSON.stringify(rvParam)}`);
    if (url.searchParams.has("fieldSelector")) throw statuses.badRequest("fieldSelector is not modeled by the double");
    const fromRv = rvParam === "" || rvParam === "0" ? undefined : Number(rvParam);
    const oldest = this.store.oldestResourceVersion;
    if (fromRv !== undefined && fromRv < oldest && this.goneAs === "status") throw statuses.expired(fromRv, oldest);
    entry.status = 200;
    res.writeHead(200, { "content-type": "application/json", "cache-control": "no-cache" });
    // The client treats the watch as open once the headers arrive, even before the first event.
    res.flushHeaders();
    const sink: WatchSink = {
      resource: route.kind.resource,
      namespace: route.namespace,
      selector,
      send: (type, object) => {
        writeEvent(res, type, object);
      },
    };
    const subscribed = this.store.subscribe(sink, fromRv);
    if (subscribed === "gone") {
      writeEvent(res, "ERROR", statuses.expired(fromRv ?? 0, oldest).body);
      res.end();
      return;
    }
    for (const event of subscribed.replay) writeEvent(res, event.type, event.object);
    const watch: OpenWatch = { sink, response: res, kind: route.kind, bookmarks: url.searchParams.get("allowWatchBookmarks") === "true" };
    this.watches.add(watch);
    const timeoutSeconds = Number(url.searchParams.get("timeoutSeconds") ?? "0");
    const timer =
      timeoutSeconds > 0
        ? setTimeout(() => {
            this.endWatch(watch);
          }, timeoutSeconds * 1000)
        : undefined;
    res.on("close", () => {
      clearTimeout(timer);
      this.closeWatch(watch);
    });
  }

  private endWatch(watch: OpenWatch): void {
    this.closeWatch(watch);
    watch.response.end();
  }

  private closeWatch(watch: OpenWatch): void {
    this.store.unsubscribe(watch.sink);
    this.watches.delete(watch);
  }

  private injectedFailure(route: Route): FailureResponse | undefined {
    for (const rule of this.failures) {
      if (rule.match.verb !== undefined && rule.match.verb !== route.verb) continue;
      const resource = route.subresource === undefined ? route.kind.resource : `${route.kind.resource}/${route.subresource}`;
      if (rule.match.resource !== undefined && rule.match.resource !== resource) continue;
      rule.hits++;
      if (--rule.remaining <= 0) this.failures.delete(rule);
      return rule.response;
    }
    return undefined;
  }

  private fail(res: ServerResponse, error: unknown, entry: RecordedApiRequest | undefined): void {
    const status =
      error instanceof ApiStatusError
        ? error
        : new ApiStatusError(500, "InternalError", error instanceof Error ? error.message : String(error));
    if (entry !== undefined) entry.status = status.code;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(status.code, { "content-type": "application/json" }).end(JSON.stringify(status.body));
  }

  private mutate(kind: ModeledResource, namespace: string | undefined, name: string, change: (object: ApiObject) => void): ApiObject {
    const current = this.store.get(kind, namespace, name);
    if (current === undefined) throw new Error(`${kind.resource} ${namespace ?? ""}/${name} does not exist`);
    const next = clone(current);
    change(next);
    return this.store.update(kind, next);
  }
}

function writeEvent(res: ServerResponse, type: WatchEventType | "BOOKMARK" | "ERROR", object: unknown): void {
  if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify({ type, object })}\n`);
}

function selectorOf(url: URL): LabelSelector {
  if (url.searchParams.has("fieldSelector")) throw statuses.badRequest("fieldSelector is not modeled by the double");
  try {
    return parseLabelSelector(url.searchParams.get("labelSelector") ?? "");
  } catch (error: unknown) {
    throw statuses.badRequest(`unable to parse requirement: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function apiVersionOf(kind: ModeledResource): string {
  return kind.group === "" ? kind.version : `${kind.group}/${kind.version}`;
}

async function readObject(req: IncomingMessage, needsMetadata = true): Promise<ApiObject> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new ApiStatusError(413, "RequestEntityTooLarge", "request body too large");
    chunks.push(chunk);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw statuses.badRequest("the request body is not valid JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw statuses.badRequest("the request body is not an object");
  const object = parsed as { metadata?: unknown };
  if (!needsMetadata && object.metadata === undefined) object.metadata = {};
  if (typeof object.metadata !== "object" || object.metadata === null) throw statuses.badRequest("the object has no metadata");
  return parsed as ApiObject;
}
