import { CoordinationV1Api, type KubeConfig, V1Lease, V1LeaseSpec, V1MicroTime, V1ObjectMeta } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { abortableDelay } from "../util/index.js";
import { K8sError, apiStatusOf, toK8sError } from "./errors.js";
import { model } from "./models.js";
import { withSignal } from "./request-options.js";

/** client-go's defaults (leaderelection.LeaderElectionConfig as kube-controller-manager uses it). */
export const LEASE_DURATION_MS = 15_000;
export const RENEW_DEADLINE_MS = 10_000;
export const RETRY_PERIOD_MS = 2_000;
/** Acquire attempts are spread over retryPeriod × [1, 1 + factor], as client-go's wait.JitterUntil does. */
export const ACQUIRE_JITTER_FACTOR = 1.2;

export interface LeaderElectionTimings {
  /** How long a holder that stopped renewing keeps the lease, as observed by each candidate on its own clock. */
  readonly leaseDurationMs: number;
  /** The leader gives up leading when it could not renew for this long. */
  readonly renewDeadlineMs: number;
  /** Between attempts to acquire or renew. */
  readonly retryPeriodMs: number;
}

export interface LeaderElectorOptions extends Partial<LeaderElectionTimings> {
  readonly kubeConfig: KubeConfig;
  readonly namespace: string;
  /** Name of the coordination.k8s.io/v1 Lease. */
  readonly name: string;
  /** This candidate, written as holderIdentity (the pod name). */
  readonly identity: string;
  readonly logger: Logger;
  /** Monotonic milliseconds: observedTime and deadlines. Injectable for tests. */
  readonly now?: () => number;
  /** Wall clock for the acquireTime/renewTime stamps written into the Lease. */
  readonly wallClock?: () => number;
  readonly delay?: (ms: number, signal: AbortSignal) => Promise<void>;
  readonly random?: () => number;
  readonly onStartedLeading?: () => void;
  /** Leadership ended: renewal failed past the deadline, someone else holds the Lease, or stop(). */
  readonly onStoppedLeading?: () => void;
  /** The holder observed in the Lease changed (this candidate included); not called for a released Lease. */
  readonly onNewLeader?: (identity: string) => void;
  /**
   * Annotations the leader writes on the Lease with every acquire and renewal (in the same write as
   * holderIdentity) and removes when it releases it: what followers need to know about the leader,
   * e.g. where it serves. Read back with observedAnnotation().
   */
  readonly holderAnnotations?: Readonly<Record<string, string>>;
  /**
   * Between a candidate's attempts while another replica holds the Lease (default: retryPeriodMs, as
   * client-go). An attempt on a held Lease is one read, no write; a shorter period lets a standby notice a
   * released Lease sooner, which is what bounds the hand-over time of a graceful leader shutdown.
   */
  readonly candidatePeriodMs?: number;
}

/** Throws K8sError ERR_K8S_CONFIG unless the timings can work (client-go's own checks). */
export function validateLeaderElectionTimings(timings: LeaderElectionTimings): void {
  const { leaseDurationMs, renewDeadlineMs, retryPeriodMs } = timings;
  for (const [name, value] of Object.entries(timings)) {
    if (!Number.isFinite(value) || value <= 0) throw new K8sError("ERR_K8S_CONFIG", `${name} must be above zero, got ${value}`);
  }
  if (leaseDurationMs % 1000 !== 0)
    throw new K8sError("ERR_K8S_CONFIG", `leaseDurationMs must be whole seconds (the Lease stores seconds), got ${leaseDurationMs}`);
  if (renewDeadlineMs >= leaseDurationMs)
    throw new K8sError("ERR_K8S_CONFIG", `renewDeadlineMs (${renewDeadlineMs}) must be below leaseDurationMs (${leaseDurationMs})`);
  if (renewDeadlineMs <= ACQUIRE_JITTER_FACTOR * retryPeriodMs) {
    throw new K8sError(
      "ERR_K8S_CONFIG",
      `renewDeadlineMs (${renewDeadlineMs}) must be above ${ACQUIRE_JITTER_FACTOR} × retryPeriodMs (${retryPeriodMs})`,
    );
  }
}

interface Observed {
  /** The Lease spec as last read or written, compared as JSON to notice any change. */
  readonly raw: string;
  readonly holder: string;
  /** When this candidate saw `raw` change, on its own clock: what expiry is measured from. */
  readonly atMs: number;
}

/**
 * Lease leader election with client-go's semantics. A candidate takes the Lease only when it is free
 * (no holder, e.g. released) or its record has not changed for leaseDurationSeconds as measured on the
 * candidate's own clock since it observed the record change, so clock skew between replicas does not
 * matter. Every write carries the resourceVersion read, so of two candidates writing at once one gets
 * 409 Conflict and loses. A change of holder increments leaseTransitions. The leader renews every
 * retryPeriod and stops leading if it has not renewed for renewDeadline (which is below the lease
 * duration, so it stops before anyone else may take over). stop() releases the Lease (holder cleared,
 * leaseDurationSeconds 1) so another candidate can take it at its next attempt.
 *
 * After losing leadership the elector becomes a candidate again (client-go processes usually exit).
 */
export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private readonly timings: LeaderElectionTimings;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly wallClock: () => number;
  private readonly delay: (ms: number, signal: AbortSignal) => Promise<void>;
  private readonly random: () => number;
  private readonly abort = new AbortController();
  private observed: Observed | undefined;
  private lease: V1Lease | undefined;
  private leading = false;
  private running: Promise<void> | undefined;

  constructor(private readonly options: LeaderElectorOptions) {
    this.timings = {
      leaseDurationMs: options.leaseDurationMs ?? LEASE_DURATION_MS,
      renewDeadlineMs: options.renewDeadlineMs ?? RENEW_DEADLINE_MS,
      retryPeriodMs: options.retryPeriodMs ?? RETRY_PERIOD_MS,
    };
    validateLeaderElectionTimings(this.timings);
    if (options.identity === "") throw new K8sError("ERR_K8S_CONFIG", "leader election identity must not be empty");
    const candidatePeriodMs = options.candidatePeriodMs;
    if (
      candidatePeriodMs !== undefined &&
      (!Number.isFinite(candidatePeriodMs) || candidatePeriodMs <= 0 || candidatePeriodMs > this.timings.retryPeriodMs)
    ) {
      throw new K8sError(
        "ERR_K8S_CONFIG",
        `candidatePeriodMs must be above zero and at most retryPeriodMs (${this.timings.retryPeriodMs}), got ${candidatePeriodMs}`,
      );
    }
    this.api = options.kubeConfig.makeApiClient(CoordinationV1Api);
    this.logger = options.logger;
    this.now = options.now ?? (() => performance.now());
    this.wallClock = options.wallClock ?? Date.now;
    this.delay = options.delay ?? abortableDelay;
    this.random = options.random ?? Math.random;
  }

  get identity(): string {
    return this.options.identity;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** The holder last seen in the Lease ("" when free or not read yet). */
  get observedLeader(): string {
    return this.observed?.holder ?? "";
  }

  /** An annotation of the Lease as last read or written (undefined when absent). */
  observedAnnotation(key: string): string | undefined {
    return this.lease?.metadata?.annotations?.[key];
  }

  /** The Lease as last read or written (for Events about it). */
  get leaseObject(): V1Lease | undefined {
    return this.lease;
  }

  /** Starts campaigning; idempotent. */
  start(): void {
    if (this.abort.signal.aborted) throw new K8sError("ERR_K8S_CLOSED", "leader elector is stopped");
    this.running ??= this.run();
  }

  /**
   * Stops campaigning and renewing. With `release` (the default: graceful shutdown) a leader clears the
   * Lease's holder so that another candidate takes over at once instead of after the lease duration.
   */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    this.abort.abort(new K8sError("ERR_K8S_CLOSED", "leader elector stopped"));
    await this.running;
    if (!this.leading) return;
    if (options.release ?? true) await this.release();
    this.setLeading(false);
  }

  /**
   * After stop(): reads the Lease every candidate period until another candidate holds it, and returns
   * that holder ("" when none took it before `timeoutMs`). A leader handing over keeps serving until
   * then, so that agents it sends on find a leader that serves. Never throws; errors count as "not yet".
   */
  async awaitSuccessor(timeoutMs: number): Promise<string> {
    const deadline = AbortSignal.timeout(Math.max(1, timeoutMs));
    // A function, not `deadline.aborted`, so that the compiler does not assume it unchanged across awaits.
    const expired = (): boolean => deadline.aborted;
    const periodMs = this.options.candidatePeriodMs ?? this.timings.retryPeriodMs;
    while (!expired()) {
      try {
        const current = await this.api.readNamespacedLease(
          { name: this.options.name, namespace: this.options.namespace },
          withSignal(deadline),
        );
        this.observe(current, this.now());
        const holder = current.spec?.holderIdentity ?? "";
        if (holder !== "" && holder !== this.identity) return holder;
      } catch (error: unknown) {
        if (expired()) break;
        this.logFailure(error, "read");
      }
      await this.delay(periodMs, deadline).catch(() => undefined);
    }
    return "";
  }

  /** A getter, not `signal.aborted`, so that the compiler does not assume it unchanged across awaits. */
  private get stopped(): boolean {
    return this.abort.signal.aborted;
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      if (!(await this.acquire(signal))) return;
      this.setLeading(true);
      await this.renewWhileLeading(signal);
      // On stop() the leader stays "leading" until stop() has released the Lease.
      if (this.stopped) return;
      this.setLeading(false);
    }
  }

  /** Tries every retryPeriod (jittered) until the Lease is ours; false when stopped first. */
  private async acquire(signal: AbortSignal): Promise<boolean> {
    this.logger.info({ lease: this.leaseRef(), identity: this.identity }, "attempting to acquire the leader lease");
    while (!signal.aborted) {
      if (await this.tryAcquireOrRenew(AbortSignal.any([signal, AbortSignal.timeout(this.timings.renewDeadlineMs)]))) return true;
      const periodMs = this.options.candidatePeriodMs ?? this.timings.retryPeriodMs;
      const waitMs = periodMs * (1 + this.random() * ACQUIRE_JITTER_FACTOR);
      await this.delay(waitMs, signal).catch(() => undefined);
    }
    return false;
  }

  /** Renews every retryPeriod; returns when a renewal could not succeed within renewDeadline, or on stop. */
  private async renewWhileLeading(signal: AbortSignal): Promise<void> {
    let renewedAtMs = this.now();
    while (!signal.aborted) {
      await this.delay(this.timings.retryPeriodMs, signal).catch(() => undefined);
      for (;;) {
        if (this.stopped) return;
        const remainingMs = renewedAtMs + this.timings.renewDeadlineMs - this.now();
        if (remainingMs <= 0) {
          this.logger.warn(
            { lease: this.leaseRef(), renewDeadlineMs: this.timings.renewDeadlineMs },
            "failed to renew the leader lease within the renew deadline",
          );
          return;
        }
        const attemptAtMs = this.now();
        if (await this.tryAcquireOrRenew(AbortSignal.any([signal, AbortSignal.timeout(Math.max(1, Math.ceil(remainingMs)))]))) {
          renewedAtMs = attemptAtMs;
          break;
        }
        // Someone else holds the Lease now (we read it): no point retrying until the deadline.
        if (this.observed !== undefined && this.observed.holder !== this.identity && this.observed.holder !== "") return;
        await this.delay(Math.min(this.timings.retryPeriodMs, Math.max(0, remainingMs)), signal).catch(() => undefined);
      }
    }
  }

  /** One read-modify-write of the Lease, as client-go's tryAcquireOrRenew. Never throws. */
  private async tryAcquireOrRenew(signal: AbortSignal): Promise<boolean> {
    const nowMs = this.now();
    const stamp = new V1MicroTime(this.wallClock());
    const durationSeconds = this.timings.leaseDurationMs / 1000;
    let current: V1Lease;
    try {
      current = await this.api.readNamespacedLease({ name: this.options.name, namespace: this.options.namespace }, withSignal(signal));
    } catch (error: unknown) {
      if (apiStatusOf(error)?.code !== 404) {
        this.logFailure(error, "read");
        return false;
      }
      const spec = model(V1LeaseSpec, {
        holderIdentity: this.identity,
        leaseDurationSeconds: durationSeconds,
        acquireTime: stamp,
        renewTime: stamp,
        leaseTransitions: 0,
      });
      const body = model(V1Lease, {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: model(V1ObjectMeta, { name: this.options.name, namespace: this.options.namespace, ...this.annotationsOver(undefined) }),
        spec,
      });
      try {
        const created = await this.api.createNamespacedLease({ namespace: this.options.namespace, body }, withSignal(signal));
        this.observe(created, nowMs);
        return true;
      } catch (createError: unknown) {
        // 409 AlreadyExists: another candidate created it first; it is theirs.
        if (apiStatusOf(createError)?.code !== 409) this.logFailure(createError, "create");
        return false;
      }
    }
    const record = current.spec ?? new V1LeaseSpec();
    this.observe(current, nowMs);
    const holder = record.holderIdentity ?? "";
    const observedAtMs = this.observed?.atMs ?? nowMs;
    const holderDurationMs = (record.leaseDurationSeconds ?? durationSeconds) * 1000;
    if (holder !== "" && holder !== this.identity && observedAtMs + holderDurationMs > nowMs) return false;
    const ours = holder === this.identity;
    const spec = model(
      V1LeaseSpec,
      {
        holderIdentity: this.identity,
        leaseDurationSeconds: durationSeconds,
        renewTime: stamp,
        acquireTime: ours && record.acquireTime !== undefined ? record.acquireTime : stamp,
        leaseTransitions: ours ? (record.leaseTransitions ?? 0) : (record.leaseTransitions ?? 0) + 1,
      },
      record,
    );
    try {
      const metadata = model(V1ObjectMeta, this.annotationsOver(current.metadata), current.metadata);
      const updated = await this.api.replaceNamespacedLease(
        { name: this.options.name, namespace: this.options.namespace, body: model(V1Lease, { metadata, spec }, current) },
        withSignal(signal),
      );
      this.observe(updated, nowMs);
      if (!ours)
        this.logger.info(
          { lease: this.leaseRef(), previousHolder: holder, transitions: spec.leaseTransitions },
          "acquired the leader lease",
        );
      return true;
    } catch (error: unknown) {
      // 409 Conflict: the Lease changed since we read it; whoever wrote it won this round.
      if (apiStatusOf(error)?.code !== 409) this.logFailure(error, "update");
      return false;
    }
  }

  /** Clears the holder if the Lease is still ours (client-go's release). */
  private async release(): Promise<void> {
    const signal = AbortSignal.timeout(this.timings.renewDeadlineMs);
    try {
      const current = await this.api.readNamespacedLease(
        { name: this.options.name, namespace: this.options.namespace },
        withSignal(signal),
      );
      if ((current.spec?.holderIdentity ?? "") !== this.identity) return;
      const stamp = new V1MicroTime(this.wallClock());
      const spec = model(
        V1LeaseSpec,
        {
          holderIdentity: "",
          leaseDurationSeconds: 1,
          acquireTime: stamp,
          renewTime: stamp,
          leaseTransitions: current.spec?.leaseTransitions ?? 0,
        },
        current.spec,
      );
      const ours = new Set(Object.keys(this.options.holderAnnotations ?? {}));
      const annotations = Object.fromEntries(Object.entries(current.metadata?.annotations ?? {}).filter(([key]) => !ours.has(key)));
      const metadata = model(V1ObjectMeta, { annotations }, current.metadata);
      const released = await this.api.replaceNamespacedLease(
        { name: this.options.name, namespace: this.options.namespace, body: model(V1Lease, { metadata, spec }, current) },
        withSignal(signal),
      );
      this.observe(released, this.now());
      this.logger.info({ lease: this.leaseRef() }, "released the leader lease");
    } catch (error: unknown) {
      this.logFailure(error, "release");
    }
  }

  /** The metadata fields that carry holderAnnotations over `metadata`'s own annotations (none without any). */
  private annotationsOver(metadata: V1ObjectMeta | undefined): { annotations?: Record<string, string> } {
    const own = this.options.holderAnnotations;
    if (own === undefined || Object.keys(own).length === 0) return {};
    return { annotations: { ...metadata?.annotations, ...own } };
  }

  private observe(lease: V1Lease, atMs: number): void {
    this.lease = lease;
    const spec = lease.spec ?? new V1LeaseSpec();
    const raw = JSON.stringify(spec);
    if (this.observed?.raw === raw) return;
    const holder = spec.holderIdentity ?? "";
    const previous = this.observed?.holder;
    this.observed = { raw, holder, atMs };
    if (holder !== "" && holder !== previous) {
      this.logger.info({ lease: this.leaseRef(), leader: holder }, "new leader observed");
      this.callback(() => this.options.onNewLeader?.(holder));
    }
  }

  private setLeading(leading: boolean): void {
    if (this.leading === leading) return;
    this.leading = leading;
    this.logger.info({ lease: this.leaseRef(), identity: this.identity }, leading ? "started leading" : "stopped leading");
    this.callback(() => (leading ? this.options.onStartedLeading?.() : this.options.onStoppedLeading?.()));
  }

  private callback(call: () => void): void {
    try {
      call();
    } catch (error: unknown) {
      this.logger.error({ err: error }, "leader election callback failed");
    }
  }

  private logFailure(error: unknown, what: string): void {
    if (this.abort.signal.aborted && what !== "release") return;
    this.logger.warn({ err: toK8sError(error, `${what} lease ${this.leaseRef()}`) }, "leader lease request failed");
  }

  private leaseRef(): string {
    return `${this.options.namespace}/${this.options.name}`;
  }
}
