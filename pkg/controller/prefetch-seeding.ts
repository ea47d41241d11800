import type { V1Node } from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { Informer } from "../k8s/index.js";
import type { MemoryTracker, PrefetchReport } from "../tracker/index.js";
import { planSeeds } from "./prefetch-planner.js";
import { describeImages } from "./prefetch-publisher.js";
import type { PrefetchSpec } from "./prefetch-spec.js";
import { type SeedView, seedingConditions, withCondition } from "./prefetch-status.js";
import type { PrefetchWork } from "./prefetch-work.js";

/**
 * A seed whose agent sends no report this long after its assignment (it reports every second while it
 * works) is counted as failed and tried again later: the message was lost, or the agent is older than
 * the controller and ignores assignments.
 */
export const REPORT_DEADLINE_MS = 30_000;

export interface PrefetchSeederOptions {
  readonly tracker: MemoryTracker;
  readonly nodes: Informer<V1Node>;
  readonly logger: Logger;
  /** How long a seed may stay silent after its assignment (REPORT_DEADLINE_MS). */
  readonly reportDeadlineMs?: number;
  /** Wall clock (Unix ms). */
  readonly now: () => number;
  /** The same clock as an RFC 3339 time without fractions, for conditions. */
  readonly iso: () => string;
  /** The wait before try number `attempts` (the reconciler's backoff). */
  readonly backoff: (attempts: number) => number;
  /** Reconcile `work` again at `atMs` (the reconciler keeps one timer per work, the earliest). */
  readonly wakeAt: (work: PrefetchWork, atMs: number) => void;
  /** Reconcile the resource `key` again soon. */
  readonly enqueue: (key: string) => void;
}

/**
 * The seeding half of reconciling an ImagePrefetch whose images are resolved: picks the seeds (planSeeds),
 * sends the assignment over their tracker sessions to those that lack the content, cancels it where a
 * seed is no longer chosen, follows their reports, and counts a seed that stays silent past the report
 * deadline, or reports a failure, as failed until its backoff ends.
 */
export class PrefetchSeeder {
  constructor(private readonly options: PrefetchSeederOptions) {}

  /** Plans the seeds, assigns the content to those that lack it, and returns their states. */
  seed(work: PrefetchWork, spec: PrefetchSpec): SeedView[] {
    const { tracker } = this.options;
    const images = work.images ?? [];
    const holdsAll = (agentId: string): boolean => [...work.digests].every((d) => tracker.holdsComplete(agentId, d));
    const now = this.options.now();
    const recentlyFailed = new Set([...work.seedFailures].filter(([, f]) => f.retryAtMs > now).map(([node]) => node));
    const plan = planSeeds({
      target: spec.target,
      agents: tracker.agentIdentities(),
      nodes: this.options.nodes.list().map((n) => ({ name: n.metadata?.name ?? "", labels: n.metadata?.labels ?? {} })),
      holdsAll,
      previous: work.previousSeeds,
      failed: recentlyFailed,
      salt: work.uid,
    });
    work.plan = plan;
    const chosen = new Set(plan.seeds.map((s) => s.agentId));
    for (const [agentId, { id }] of work.assigned) {
      if (chosen.has(agentId)) continue;
      tracker.sendCommand(agentId, { kind: "prefetch-cancel", id });
      work.assigned.delete(agentId);
    }
    const assignment = work.assignment;
    const views: SeedView[] = [];
    for (const seed of plan.seeds) {
      work.previousSeeds.add(seed.nodeName);
      const bytes = work.bytes.get(seed.nodeName) ?? { origin: 0, peers: 0 };
      const base = { node: seed.nodeName, zone: seed.zone, bytesFromOrigin: bytes.origin, bytesFromPeers: bytes.peers };
      if (holdsAll(seed.agentId)) {
        work.seedFailures.delete(seed.nodeName);
        // Done with it: should it lose content later, it is sent the assignment again.
        work.assigned.delete(seed.agentId);
        views.push({ ...base, state: "Seeded" });
        continue;
      }
      const failure = work.seedFailures.get(seed.nodeName);
      if (failure !== undefined && failure.retryAtMs > now) {
        this.options.wakeAt(work, failure.retryAtMs);
        views.push({ ...base, state: "Failed", message: `${failure.code}: ${failure.message}` });
        continue;
      }
      const assigned = work.assigned.get(seed.agentId);
      const silentSince = assigned?.reportAtMs ?? assigned?.atMs;
      if (
        assigned !== undefined &&
        silentSince !== undefined &&
        now - silentSince >= (this.options.reportDeadlineMs ?? REPORT_DEADLINE_MS)
      ) {
        const attempts = (failure?.attempts ?? 0) + 1;
        const message = `its agent sent no progress report for ${Math.round((now - silentSince) / 1000)} s (an agent older than the controller ignores assignments)`;
        work.seedFailures.set(seed.nodeName, { code: "no_report", message, attempts, retryAtMs: now + this.options.backoff(attempts) });
        tracker.sendCommand(seed.agentId, { kind: "prefetch-cancel", id: assigned.id });
        work.assigned.delete(seed.agentId);
        this.options.logger.warn({ prefetch: work.key, node: seed.nodeName }, "seed sent no report");
        this.options.enqueue(work.key);
        views.push({ ...base, state: "Failed", message: `no_report: ${message}` });
        continue;
      }
      if (assigned !== undefined) this.options.wakeAt(work, (silentSince ?? now) + (this.options.reportDeadlineMs ?? REPORT_DEADLINE_MS));
      if (assignment !== undefined && assigned?.id !== assignment.id) {
        if (tracker.sendCommand(seed.agentId, { kind: "prefetch", assignment })) {
          work.assigned.set(seed.agentId, { id: assignment.id, atMs: now, reportAtMs: undefined });
          this.options.wakeAt(work, now + (this.options.reportDeadlineMs ?? REPORT_DEADLINE_MS));
          this.options.logger.info(
            { prefetch: work.key, node: seed.nodeName, zone: seed.zone, assignment: assignment.id },
            "seed assigned",
          );
        }
      }
      views.push({ ...base, state: work.assigned.has(seed.agentId) ? "Seeding" : "Pending" });
    }
    const { ready, failed } = seedingConditions(plan, views, spec.target.kind);
    if (ready.status === "True") work.readyTime ??= this.options.iso();
    work.conditions = withCondition(
      work.conditions,
      "Resolved",
      { status: "True", reason: "Resolved", message: describeImages(images) },
      this.options.iso(),
      work.generation,
    );
    work.conditions = withCondition(work.conditions, "Ready", ready, this.options.iso(), work.generation);
    work.conditions = withCondition(work.conditions, "Failed", failed, this.options.iso(), work.generation);
    return views;
  }

  /** A seed's progress report: its byte counts, and on failure when to try it again. */
  report(work: PrefetchWork, agentId: string, report: PrefetchReport): void {
    const agent = this.options.tracker.agentIdentities().find((a) => a.agentId === agentId);
    if (agent === undefined) return;
    const node = agent.nodeName;
    work.reports.set(node, report);
    const assigned = work.assigned.get(agentId);
    if (assigned !== undefined) assigned.reportAtMs = this.options.now();
    const bytes = work.bytes.get(node) ?? { origin: 0, peers: 0 };
    work.bytes.set(node, { origin: Math.max(bytes.origin, report.bytesFromOrigin), peers: Math.max(bytes.peers, report.bytesFromPeers) });
    if (report.state === "failed") {
      const attempts = (work.seedFailures.get(node)?.attempts ?? 0) + 1;
      const code = report.error?.code ?? "failed";
      const message = report.error?.message ?? "";
      work.seedFailures.set(node, { code, message, attempts, retryAtMs: this.options.now() + this.options.backoff(attempts) });
      work.assigned.delete(agentId);
      this.options.logger.warn({ prefetch: work.key, node, code, message }, "seed failed");
    }
    this.options.enqueue(work.key);
  }

  /** Cancels every assignment of `work` (a deleted resource, or a new generation). */
  cancelAll(work: PrefetchWork): void {
    for (const [agentId, { id }] of work.assigned) this.options.tracker.sendCommand(agentId, { kind: "prefetch-cancel", id });
    work.assigned.clear();
  }
}
