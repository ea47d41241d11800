import { randomUUID } from "node:crypto";
import type { LabelSelector } from "../label-selector.js";
import { statuses } from "./status.js";

/** An object as JSON, the way the API server stores and sends it. */
export interface ApiObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    labels?: Record<string, string>;
    [field: string]: unknown;
  };
  [field: string]: unknown;
}

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";

export interface ResourceKind {
  /** Plural, lower-case: "pods". */
  readonly resource: string;
  /** "" for the core group. */
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly namespaced: boolean;
}

interface HistoryEntry {
  readonly rv: number;
  readonly resource: string;
  readonly type: WatchEventType;
  readonly object: ApiObject;
  /** The state before a MODIFIED, so a selector watch can tell an object leaving or entering its set. */
  readonly previous: ApiObject | undefined;
}

export interface WatchFilter {
  readonly resource: string;
  readonly namespace: string | undefined;
  readonly selector: LabelSelector;
}

export interface WatchSink extends WatchFilter {
  send(type: WatchEventType, object: ApiObject): void;
}

/**
 * Objects of every resource under one resourceVersion counter, like etcd's revision: each write takes
 * the next number, which becomes the object's resourceVersion and its history entry's position. The
 * history feeds watches that resume from a resourceVersion; compact() forgets it, after which resuming
 * from an older version is 410 Gone.
 */
export class ObjectStore {
  private rv = 1000;
  private compactedRv = 1000;
  private readonly objects = new Map<string, Map<string, ApiObject>>();
  private readonly history: HistoryEntry[] = [];
  private readonly sinks = new Set<WatchSink>();

  get resourceVersion(): number {
    return this.rv;
  }

  /** Watches from a resourceVersion below this are 410 Gone. */
  get oldestResourceVersion(): number {
    return this.compactedRv;
  }

  get(kind: ResourceKind, namespace: string | undefined, name: string): ApiObject | undefined {
    return this.bucket(kind.resource).get(keyOf(namespace, name));
  }

  list(filter: WatchFilter): ApiObject[] {
    return [...this.bucket(filter.resource).values()].filter((o) => passes(filter, o)).map(clone);
  }

  create(kind: ResourceKind, object: ApiObject): ApiObject {
    const key = keyOf(object.metadata.namespace, object.metadata.name);
    if (this.bucket(kind.resource).has(key)) throw statuses.alreadyExists(kind.resource, kind.group, object.metadata.name);
    const stored = this.stamp(kind, clone(object));
    stored.metadata.uid = object.metadata.uid ?? randomUUID();
    stored.metadata.creationTimestamp = object.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, "Z");
    this.bucket(kind.resource).set(key, stored);
    this.record(kind.resource, "ADDED", stored, undefined);
    return clone(stored);
  }

  /**
   * Replaces an object. With `expectedRv` (the body's metadata.resourceVersion) a different stored
   * version is 409 Conflict: optimistic concurrency. uid and creationTimestamp are kept.
   */
  update(kind: ResourceKind, object: ApiObject, expectedRv?: string): ApiObject {
    const key = keyOf(object.metadata.namespace, object.metadata.name);
    const current = this.bucket(kind.resource).get(key);
    if (current === undefined) throw statuses.notFound(kind.resource, kind.group, object.metadata.name);
    if (expectedRv !== undefined && expectedRv !== current.metadata.resourceVersion)
      throw statuses.conflict(kind.resource, kind.group, object.metadata.name);
    const stored = this.stamp(kind, clone(object));
    stored.metadata.uid = current.metadata.uid;
    stored.metadata.creationTimestamp = current.metadata.creationTimestamp;
    this.bucket(kind.resource).set(key, stored);
    this.record(kind.resource, "MODIFIED", stored, current);
    return clone(stored);
  }

  /** Creates or replaces (test controls). */
  upsert(kind: ResourceKind, object: ApiObject): ApiObject {
    return this.get(kind, object.metadata.namespace, object.metadata.name) === undefined
      ? this.create(kind, object)
      : this.update(kind, object);
  }

  delete(kind: ResourceKind, namespace: string | undefined, name: string): ApiObject {
    const key = keyOf(namespace, name);
    const current = this.bucket(kind.resource).get(key);
    if (current === undefined) throw statuses.notFound(kind.resource, kind.group, name);
    this.bucket(kind.resource).delete(key);
    // The DELETED event carries the last state at the deletion's own resourceVersion.
    const gone = clone(current);
    gone.metadata.resourceVersion = String(++this.rv);
    this.record(kind.resource, "DELETED", gone, current);
    return clone(gone);
  }

  /** Forgets all history up to now: resuming a watch from an older resourceVersion is 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv;
    this.history.length = 0;
  }

  /**
   * What a watch from `fromRv` missed, as the watcher sees it through its filter, or "gone" when that
   * position was compacted away. Registers `sink` for later events in the same step, so nothing falls
   * between replay and live delivery.
   */
  subscribe(sink: WatchSink, fromRv: number | undefined): { readonly replay: { type: WatchEventType; object: ApiObject }[] } | "gone" {
    let replay: { type: WatchEventType; object: ApiObject }[];
    if (fromRv === undefined) {
      replay = this.list(sink).map((object) => ({ type: "ADDED" as const, object }));
    } else {
      if (fromRv < this.compactedRv) return "gone";
      replay = [];
      for (const entry of this.history) {
        if (entry.rv <= fromRv || entry.resource !== sink.resource) continue;
        const event = project(sink, entry);
        if (event !== undefined) replay.push(event);
      }
    }
    this.sinks.add(sink);
    return { replay };
  }

  unsubscribe(sink: WatchSink): void {
    this.sinks.delete(sink);
  }

  private stamp(kind: ResourceKind, object: ApiObject): ApiObject {
    object.apiVersion = kind.group === "" ? kind.version : `${kind.group}/${kind.version}`;
    object.kind = kind.kind;
    object.metadata.resourceVersion = String(++this.rv);
    if (!kind.namespaced) delete object.metadata.namespace;
    return object;
  }

  private record(resource: string, type: WatchEventType, object: ApiObject, previous: ApiObject | undefined): void {
    const entry: HistoryEntry = { rv: Number(object.metadata.resourceVersion), resource, type, object, previous };
    this.history.push(entry);
    for (const sink of [...this.sinks]) {
      if (sink.resource !== resource) continue;
      const event = project(sink, entry);
      if (event !== undefined) sink.send(event.type, event.object);
    }
  }

  private bucket(resource: string): Map<string, ApiObject> {
    let bucket = this.objects.get(resource);
    if (bucket === undefined) {
      bucket = new Map();
      this.objects.set(resource, bucket);
    }
    return bucket;
  }
}

/**
 * A history entry as one watcher sees it: a MODIFIED that moves an object out of the watcher's
 * selector is a DELETED (of the previous state at the new resourceVersion), one that moves it in an ADDED.
 */
function project(filter: WatchFilter, entry: HistoryEntry): { type: WatchEventType; object: ApiObject } | undefined {
  const now = passes(filter, entry.object);
  const previous = entry.previous;
  const before = previous !== undefined && passes(filter, previous);
  if (entry.type === "ADDED") return now ? { type: "ADDED", object: clone(entry.object) } : undefined;
  if (entry.type === "DELETED") return now || before ? { type: "DELETED", object: clone(entry.object) } : undefined;
  if (now && before) return { type: "MODIFIED", object: clone(entry.object) };
  if (now) return { type: "ADDED", object: clone(entry.object) };
  if (before) {
    const gone = clone(previous);
    gone.metadata.resourceVersion = entry.object.metadata.resourceVersion;
    return { type: "DELETED", object: gone };
  }
  return undefined;
}

function passes(filter: WatchFilter, object: ApiObject): boolean {
  if (filter.namespace !== undefined && object.metadata.namespace !== filter.namespace) return false;
  return filter.selector.matches(object.metadata.labels);
}

function keyOf(namespace: string | undefined, name: string): string {
  return namespace === undefined || namespace === "" ? name : `${namespace}/${name}`;
}

export function clone<T>(value: T): T {
  return structuredClone(value);
}
