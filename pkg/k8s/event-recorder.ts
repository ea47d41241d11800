import { CoreV1Api, CoreV1Event, type KubeConfig, V1EventSource, V1ObjectMeta, V1ObjectReference } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { toK8sError } from "./errors.js";
import { model } from "./models.js";
import { withSignal } from "./request-options.js";

/** Events waiting to be sent beyond this many are dropped (oldest first): the API may be down. */
export const MAX_PENDING_EVENTS = 256;
/** Each create gets this long. */
export const EVENT_REQUEST_TIMEOUT_MS = 10_000;
/** The API server rejects longer messages. */
const MAX_MESSAGE_LENGTH = 1024;

/** The object an Event is about (core/v1 ObjectReference). */
export interface InvolvedObject {
  readonly kind: string;
  readonly apiVersion: string;
  readonly name: string;
  /** Absent for cluster-scoped objects, whose Events go to the "default" namespace. */
  readonly namespace?: string;
  readonly uid?: string;
}

/** A Pod as the object of an Event; `namespace` when the Pod's metadata names none. */
export function podReference(
  pod: { readonly metadata?: { name?: string; namespace?: string; uid?: string } },
  namespace: string,
): InvolvedObject {
  return {
    kind: "Pod",
    apiVersion: "v1",
    namespace: pod.metadata?.namespace ?? namespace,
    name: pod.metadata?.name ?? "",
    ...(pod.metadata?.uid === undefined ? {} : { uid: pod.metadata.uid }),
  };
}

export type EventType = "Normal" | "Warning";

export interface EventRecorderOptions {
  readonly kubeConfig: KubeConfig;
  /** source.component and reportingComponent, e.g. "shoal-controller". */
  readonly component: string;
  /** source.host and reportingInstance: this replica (pod name). */
  readonly instance: string;
  readonly logger: Logger;
  readonly wallClock?: () => number;
  readonly requestTimeoutMs?: number;
}

/**
 * Records core/v1 Events. record() never blocks and never throws: Events are queued and created one at
 * a time in the background; a failure is logged and the Event dropped, because an Event is a
 * notification for people, not state anything depends on. Each record() creates its own Event
 * (count 1); client-go's aggregation of repeats into one Event is not done (it would need patch rights).
 */
export class EventRecorder {
  private readonly api: CoreV1Api;
  private readonly queue: CoreV1Event[] = [];
  private readonly wallClock: () => number;
  private draining: Promise<void> | undefined;
  private sequence = 0;
  private closed = false;
  private readonly abort = new AbortController();

  constructor(private readonly options: EventRecorderOptions) {
    this.api = options.kubeConfig.makeApiClient(CoreV1Api);
    this.wallClock = options.wallClock ?? Date.now;
  }

  record(object: InvolvedObject, type: EventType, reason: string, message: string): void {
    if (this.closed) return;
    const atMs = this.wallClock();
    const at = new Date(atMs);
    const namespace = object.namespace ?? "default";
    // client-go names Events <object>.<unix nanoseconds in hex>; the sequence keeps names unique within a millisecond.
    const name = `${object.name}.${(BigInt(atMs) * 1_000_000n + BigInt(this.sequence++ % 1_000_000)).toString(16)}`;
    this.queue.push(
      model(CoreV1Event, {
        apiVersion: "v1",
        kind: "Event",
        metadata: model(V1ObjectMeta, { name, namespace }),
        involvedObject: model(V1ObjectReference, {
          kind: object.kind,
          apiVersion: object.apiVersion,
          name: object.name,
          ...(object.namespace === undefined ? {} : { namespace: object.namespace }),
          ...(object.uid === undefined ? {} : { uid: object.uid }),
        }),
        type,
        reason,
        message: message.length > MAX_MESSAGE_LENGTH ? `${message.slice(0, MAX_MESSAGE_LENGTH - 3)}...` : message,
        source: model(V1EventSource, { component: this.options.component, host: this.options.instance }),
        reportingComponent: this.options.component,
        reportingInstance: this.options.instance,
        count: 1,
        firstTimestamp: at,
        lastTimestamp: at,
      }),
    );
    if (this.queue.length > MAX_PENDING_EVENTS) {
      const dropped = this.queue.shift();
      this.options.logger.warn({ reason: dropped?.reason, object: dropped?.involvedObject.name }, "event dropped: too many pending");
    }
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
    });
  }

  /** Sends what is queued (within `timeoutMs`), then stops recording. */
  async close(timeoutMs = EVENT_REQUEST_TIMEOUT_MS): Promise<void> {
    this.closed = true;
    const timer = setTimeout(() => {
      this.abort.abort();
    }, timeoutMs);
    try {
      await this.draining;
    } finally {
      clearTimeout(timer);
    }
  }

  private async drain(): Promise<void> {
    for (let event = this.queue.shift(); event !== undefined; event = this.queue.shift()) {
      if (this.abort.signal.aborted) {
        this.queue.length = 0;
        return;
      }
      const namespace = event.metadata.namespace ?? "default";
      const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.options.requestTimeoutMs ?? EVENT_REQUEST_TIMEOUT_MS)]);
      try {
        await this.api.createNamespacedEvent({ namespace, body: event }, withSignal(signal));
        this.options.logger.debug({ reason: event.reason, object: event.involvedObject.name }, "event recorded");
      } catch (error: unknown) {
        this.options.logger.warn(
          { err: toK8sError(error, `create event ${event.reason} for ${event.involvedObject.kind} ${event.involvedObject.name}`) },
          "event not recorded",
        );
      }
    }
  }
}
