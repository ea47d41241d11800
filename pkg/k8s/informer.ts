import { type KubeConfig, type KubernetesObject, Watch } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { type Backoff, abortableDelay } from "../util/index.js";
import { apiBackoff } from "./backoff.js";
import { K8sError, apiStatusOf, toK8sError } from "./errors.js";

/** A watch that stayed open this long was healthy: the next failure starts the backoff from the beginning. */
const HEALTHY_WATCH_MS = 1_000;
/**
 * Asks the server to end each watch after this long (it then closes cleanly and the informer re-watches
 * from its resourceVersion), so a watch on a silently broken connection does not live for ever.
 */
export const WATCH_TIMEOUT_SECONDS = 300;

export type InformerEvent<T> =
  | { readonly type: "added"; readonly object: T }
  | { readonly type: "updated"; readonly object: T; readonly previous: T }
  | { readonly type: "deleted"; readonly object: T };

export interface ListResult<T> {
  readonly items: readonly T[];
  /** The list's resourceVersion: where the watch that follows starts. */
  readonly resourceVersion: string;
}

/** Why the informer started over: the watch position expired (410), a failure, or a clean end of a watch. */
export type RestartReason = "gone" | "error" | "closed";

export interface InformerOptions<T extends KubernetesObject> {
  /** For logs and metrics: "pods", "nodes". */
  readonly resource: string;
  readonly kubeConfig: KubeConfig;
  /** Path of the collection to watch, e.g. `/api/v1/namespaces/shoal/pods`. */
  readonly path: string;
  readonly labelSelector?: string;
  /** Lists the collection (same path and selector), e.g. with CoreV1Api.listNamespacedPod. */
  readonly list: (signal: AbortSignal) => Promise<ListResult<T>>;
  readonly logger: Logger;
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
  /** The wait between attempts; injectable so tests can observe and control it. */
  readonly delay?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Jitter source for the backoff. */
  readonly random?: () => number;
  /** Milliseconds clock (monotonic is best); injectable for tests. */
  readonly now?: () => number;
  readonly watchTimeoutSeconds?: number;
  readonly onRestart?: (reason: RestartReason) => void;
}

type WatchOutcome =
  | { readonly kind: "gone"; readonly healthy: boolean }
  | { readonly kind: "closed"; readonly healthy: boolean }
  | { readonly kind: "failed"; readonly healthy: boolean; readonly error: unknown };

/**
 * A cache of one collection kept current by list + watch, with client-go reflector semantics: list,
 * then watch from the list's resourceVersion (with bookmarks, which advance it without changes); a watch
 * that ends cleanly is resumed from the last resourceVersion seen; 410 Gone (as the HTTP status or as an
 * ERROR event) means that position expired, so the informer lists again and reconciles the cache with
 * the list, emitting the adds, updates and deletes it missed; failures are retried with capped
 * exponential backoff. Events are delivered synchronously, in order, after the cache is updated.
 *
 * Objects from lists are client-node model instances turned back into their JSON form, the same form
 * watch events carry, so every cached object has string timestamps whatever its origin.
 */
export class Informer<T extends KubernetesObject> {
  private readonly cache = new Map<string, T>();
  private readonly handlers = new Set<(event: InformerEvent<T>) => void>();
  private readonly syncWaiters = new Set<() => void>();
  private readonly abort = new AbortController();
  private readonly backoff: Backoff;
  private readonly logger: Logger;
  private readonly delay: (ms: number, signal: AbortSignal) => Promise<void>;
  private readonly now: () => number;
  private resourceVersion = "";
  private synced = false;
  private running: Promise<void> | undefined;

  constructor(private readonly options: InformerOptions<T>) {
    this.logger = options.logger;
    this.delay = options.delay ?? abortableDelay;
    this.now = options.now ?? (() => performance.now());
    this.backoff = apiBackoff({
      ...(options.initialBackoffMs === undefined ? {} : { initialDelayMs: options.initialBackoffMs }),
      ...(options.maxBackoffMs === undefined ? {} : { maxDelayMs: options.maxBackoffMs }),
      ...(options.random === undefined ? {} : { random: options.random }),
    });
  }

  /** Starts listing and watching; idempotent. */
  start(): void {
    if (this.abort.signal.aborted) throw new K8sError("ERR_K8S_CLOSED", `${this.options.resource} informer is stopped`);
    this.running ??= this.run();
  }

  /** Subscribes to changes; returns the unsubscribe function. */
  on(handler: (event: InformerEvent<T>) => void): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  /** The resourceVersion the next watch starts from. */
  get lastResourceVersion(): string {
    return this.resourceVersion;
  }

  /** The object with key `namespace/name` (or `name` for cluster-scoped objects). */
  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  /** Resolves after the first successful list; rejects when `signal` aborts or the informer stops. */
  async whenSynced(signal: AbortSignal): Promise<void> {
    while (!this.synced) {
      signal.throwIfAborted();
      if (this.abort.signal.aborted) throw new K8sError("ERR_K8S_CLOSED", `${this.options.resource} informer is stopped`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.syncWaiters.delete(done);
          signal.removeEventListener("abort", done);
          resolve();
        };
        this.syncWaiters.add(done);
        signal.addEventListener("abort", done, { once: true });
      });
    }
  }

  async stop(): Promise<void> {
    this.abort.abort(new K8sError("ERR_K8S_CLOSED", `${this.options.resource} informer stopped`));
    for (const wake of [...this.syncWaiters]) wake();
    await this.running;
  }

  /** A getter, not `signal.aborted`, so that the compiler does not assume it unchanged across awaits. */
  private get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    let needList = true;
    let relistedAfterGone = false;
    while (!signal.aborted) {
      let waitMs: number | undefined;
      try {
        if (needList) {
          const result = await this.options.list(signal);
          this.replace(result.items, result.resourceVersion);
          needList = false;
        }
        const outcome = await this.watchOnce(signal);
        if (this.stopped) break;
        if (outcome.healthy) {
          this.backoff.reset();
          relistedAfterGone = false;
        }
        if (outcome.kind === "gone") {
          this.logger.info(
            { resource: this.options.resource, resourceVersion: this.resourceVersion },
            "watch position expired (410 Gone): listing again",
          );
          this.options.onRestart?.("gone");
          needList = true;
          // The first relist is immediate; a watch that expires again at once waits like any failure.
          if (relistedAfterGone) waitMs = this.backoff.next();
          relistedAfterGone = true;
        } else if (outcome.kind === "closed") {
          this.options.onRestart?.("closed");
          if (!outcome.healthy) waitMs = this.backoff.next();
        } else {
          throw outcome.error;
        }
      } catch (error: unknown) {
        if (this.stopped) break;
        if (apiStatusOf(error)?.code === 410) needList = true;
        this.options.onRestart?.("error");
        waitMs = this.backoff.next();
        const failure = toK8sError(error, `${needList ? "list" : "watch"} ${this.options.resource}`);
        this.logger.warn({ resource: this.options.resource, err: failure, retryInMs: waitMs }, "informer retrying");
      }
      if (waitMs !== undefined) await this.delay(waitMs, signal).catch(() => undefined);
    }
  }

  /** One watch from the current resourceVersion, until it ends, expires or fails. */
  private watchOnce(signal: AbortSignal): Promise<WatchOutcome> {
    const startedAt = this.now();
    let events = 0;
    let opened = false;
    let settled = false;
    let controller: AbortController | undefined;
    const healthy = (): boolean => opened && (events > 0 || this.now() - startedAt >= HEALTHY_WATCH_MS);
    return new Promise<WatchOutcome>((resolve) => {
      const finish = (outcome: WatchOutcome): void => {
        if (settled) return;
        settled = true;
        signal.removeEventListener("abort", onAbort);
        controller?.abort();
        resolve(outcome);
      };
      const onAbort = (): void => {
        finish({ kind: "closed", healthy: false });
      };
      signal.addEventListener("abort", onAbort, { once: true });
      const query = {
        allowWatchBookmarks: true,
        resourceVersion: this.resourceVersion,
        timeoutSeconds: this.options.watchTimeoutSeconds ?? WATCH_TIMEOUT_SECONDS,
        ...(this.options.labelSelector === undefined || this.options.labelSelector === ""
          ? {}
          : { labelSelector: this.options.labelSelector }),
      };
      const onEvent = (type: string, object: unknown): void => {
        if (settled) return;
        events++;
        try {
          if (this.apply(type, object) === "gone") finish({ kind: "gone", healthy: healthy() });
        } catch (error: unknown) {
          finish({ kind: "failed", healthy: healthy(), error });
        }
      };
      const onDone = (error: unknown): void => {
        if (error === null || error === undefined) finish({ kind: "closed", healthy: healthy() });
        else if (apiStatusOf(error)?.code === 410) finish({ kind: "gone", healthy: false });
        // client-node aborts a watch that has been silent for 30 s; resuming it is routine.
        else if (opened && error instanceof Error && error.name === "TimeoutError") finish({ kind: "closed", healthy: true });
        else finish({ kind: "failed", healthy: healthy(), error });
      };
      new Watch(this.options.kubeConfig).watch(this.options.path, query, onEvent, onDone).then(
        (watchController) => {
          controller = watchController;
          // When done() already ran, the server refused the watch (non-200) or it could not connect.
          opened = !settled;
          if (settled) watchController.abort();
        },
        (error: unknown) => {
          finish({ kind: "failed", healthy: false, error });
        },
      );
    });
  }

  /** Applies one watch event to the cache; "gone" when the server says the position expired. */
  private apply(type: string, raw: unknown): "gone" | undefined {
    if (type === "ERROR") {
      const status = (raw ?? {}) as { code?: unknown; reason?: unknown; message?: unknown };
      const code = typeof status.code === "number" ? status.code : 0;
      if (code === 410) return "gone";
      const reason = typeof status.reason === "string" ? status.reason : "";
      const message = typeof status.message === "string" ? status.message : "";
      throw new K8sError("ERR_K8S_API", `watch ${this.options.resource}: ERROR event ${code} ${reason}: ${message}`, {
        status: { code, reason, message },
      });
    }
    const object = raw as T;
    const version = object.metadata?.resourceVersion;
    if (type === "BOOKMARK") {
      if (version !== undefined && version !== "") this.resourceVersion = version;
      return undefined;
    }
    const key = keyOf(object);
    if (key === undefined) return undefined;
    if (type === "ADDED" || type === "MODIFIED") {
      const previous = this.cache.get(key);
      this.cache.set(key, object);
      if (version !== undefined) this.resourceVersion = version;
      this.emit(previous === undefined ? { type: "added", object } : { type: "updated", object, previous });
    } else if (type === "DELETED") {
      this.cache.delete(key);
      if (version !== undefined) this.resourceVersion = version;
      this.emit({ type: "deleted", object });
    }
    return undefined;
  }

  /** Reconciles the cache with a full list: what vanished is deleted, what changed is updated. */
  private replace(items: readonly T[], resourceVersion: string): void {
    const fresh = new Map<string, T>();
    for (const item of items) {
      const plain = JSON.parse(JSON.stringify(item)) as T;
      const key = keyOf(plain);
      if (key !== undefined) fresh.set(key, plain);
    }
    const events: InformerEvent<T>[] = [];
    for (const [key, old] of this.cache) if (!fresh.has(key)) events.push({ type: "deleted", object: old });
    for (const [key, object] of fresh) {
      const previous = this.cache.get(key);
      if (previous === undefined) events.push({ type: "added", object });
      else if (previous.metadata?.resourceVersion !== object.metadata?.resourceVersion) events.push({ type: "updated", object, previous });
    }
    this.cache.clear();
    for (const [key, object] of fresh) this.cache.set(key, object);
    this.resourceVersion = resourceVersion;
    this.logger.debug({ resource: this.options.resource, items: fresh.size, resourceVersion, changes: events.length }, "listed");
    for (const event of events) this.emit(event);
    if (!this.synced) {
      this.synced = true;
      for (const wake of [...this.syncWaiters]) wake();
    }
  }

  private emit(event: InformerEvent<T>): void {
    for (const handler of [...this.handlers]) {
      try {
        handler(event);
      } catch (error: unknown) {
        this.logger.error({ err: error, resource: this.options.resource }, "informer handler failed");
      }
    }
  }
}

/** `namespace/name`, or `name` for cluster-scoped objects. */
export function keyOf(object: KubernetesObject): string | undefined {
  const name = object.metadata?.name;
  if (name === undefined || name === "") return undefined;
  const namespace = object.metadata?.namespace;
  return namespace === undefined || namespace === "" ? name : `${namespace}/${name}`;
}
