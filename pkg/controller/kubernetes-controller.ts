import type { V1Node, V1Pod } from "@kubernetes/client-node";
import { EventRecorder, type Informer, LeaderElector, isK8sError, nodeInformer, podInformer, podReference } from "../k8s/index.js";
import { type CertificateManager, IssuerServer } from "../identity/index.js";
import { MemoryTracker, TrackerServer } from "../tracker/index.js";
import type { SecretCertificateAuthority } from "./ca-secret.js";
import { certificateParts } from "./controller-certificates.js";
import { type KubernetesControllerOptions, validateControllerOptions } from "./controller-options.js";
import { ControllerError } from "./errors.js";
import { KubernetesMembership, type PeerDrop } from "./kubernetes-membership.js";
import { type PrefetchParts, startPrefetchParts } from "./prefetch-parts.js";
import { LEADER_ANNOTATION, advertisedAddress, leaderAnnotationValue, leaderFromAnnotation } from "./leader-address.js";

/** Events name this component as their source. */
export const EVENT_COMPONENT = "shoal-controller";
/** On stop, how long queued Events may take to be sent. */
const EVENT_FLUSH_MS = 2_000;
/**
 * On a graceful stop of the leader, how long it keeps serving after releasing the Lease while it waits
 * for a follower to take it, so that the agents it then sends on find a leader that serves. Without a
 * follower (a single replica) it ends sessions after this.
 */
export const HANDOVER_TIMEOUT_MS = 5_000;

/**
 * The controller with Kubernetes membership: informers on the agent Pods and on Nodes, the tracker and
 * its gRPC server, Lease leader election and Events. Every replica keeps its informers warm and its
 * server listening, and is Ready once synced, but only the leader serves: a follower refuses sessions
 * and lookups with UNAVAILABLE and the leader's address (from the Lease) in trailing metadata, and the
 * agent dials the leader directly. When leadership is lost the leader ends every session; agents
 * reconnect through the Service, are sent on to the new leader and re-announce their inventory there. A replica campaigns only once its informers have synced, so a
 * new leader never refuses agents for want of a Pod list.
 */
export class KubernetesController {
  private readonly abort = new AbortController();
  private stopping = false;
  /** Between releasing the Lease on stop and seeing a successor hold it: still serving the sessions it has. */
  private handingOver = false;
  private synced = false;
  private startup: Promise<void> | undefined;

  private constructor(
    readonly tracker: MemoryTracker,
    private readonly server: TrackerServer,
    private readonly pods: Informer<V1Pod>,
    private readonly nodes: Informer<V1Node>,
    private readonly membership: KubernetesMembership,
    private readonly elector: LeaderElector,
    private readonly recorder: EventRecorder,
    private readonly prefetch: PrefetchParts | undefined,
    private readonly options: KubernetesControllerOptions,
    private readonly ca: SecretCertificateAuthority,
    private readonly certificate: CertificateManager,
    private readonly issuer: IssuerServer,
  ) {}

  /** Validates the options, starts listening (not serving yet) and starts syncing and campaigning in the background. */
  static async start(options: KubernetesControllerOptions): Promise<KubernetesController> {
    const { logger, metrics, kubeConfig, namespace, identity } = options;
    const self = validateControllerOptions(options);
    const settings = options.certificates;
    const tracker = new MemoryTracker({
      logger: logger.child({ component: "tracker" }),
      ...(metrics === undefined ? {} : { metrics }),
      ...(options.grantStallTimeoutMs === undefined ? {} : { grantStallTimeoutMs: options.grantStallTimeoutMs }),
    });
    const restarts = (resource: string) => (reason: string) => metrics?.informerRestarts.inc({ resource, reason });
    const tuning = options.informerTuning ?? {};
    const pods = podInformer({
      ...tuning,
      kubeConfig,
      namespace,
      labelSelector: options.agentSelector,
      logger: logger.child({ component: "pod-informer" }),
      onRestart: restarts("pods"),
    });
    const nodes = nodeInformer({
      ...tuning,
      kubeConfig,
      logger: logger.child({ component: "node-informer" }),
      onRestart: restarts("nodes"),
    });
    const recorder = new EventRecorder({
      kubeConfig,
      component: EVENT_COMPONENT,
      instance: identity,
      logger: logger.child({ component: "events" }),
    });
    // Callbacks below are wired before the instance exists; they reach it through this.
    const ref: { instance?: KubernetesController } = {};
    const membership = new KubernetesMembership({
      pods,
      nodes,
      namespace,
      selector: options.agentSelector,
      logger: logger.child({ component: "membership" }),
      onDrop: (drop) => ref.instance?.onDrop(drop),
      onZoneChange: (agentIds, zone) => {
        for (const agentId of agentIds) tracker.updateZone(agentId, zone);
      },
    });
    const { ca, certificate, authenticator } = certificateParts({
      kubeConfig,
      namespace,
      identity,
      self,
      settings,
      metrics,
      logger,
      pods,
      recorder,
    });
    let server: TrackerServer;
    let issuer: IssuerServer;
    try {
      issuer = await IssuerServer.start({
        ...settings.issuerListen,
        tls: certificate,
        authenticator,
        ca: () => ca.current(),
        lifetimeMs: settings.lifetimeMs,
        metrics: metrics?.identity,
        logger: logger.child({ component: "issuer" }),
        // Any Ready replica issues: the CA key and the Pod informer are all it needs, and the issuer
        // Service routes to every Ready replica.
        serving: () => ref.instance?.ready() ?? "starting",
      });
    } catch (error: unknown) {
      membership.close();
      throw error;
    }
    try {
      server = await TrackerServer.start({
        ...options.listen,
        tracker,
        membership,
        ...(metrics === undefined ? {} : { metrics }),
        logger: logger.child({ component: "tracker-server" }),
        serving: () => ref.instance?.serving() ?? "starting",
        leaderAddress: () => ref.instance?.leaderAddress(),
        ...(options.trackerKeepaliveTimeMs === undefined ? {} : { keepaliveTimeMs: options.trackerKeepaliveTimeMs }),
        ...(options.trackerKeepaliveTimeoutMs === undefined ? {} : { keepaliveTimeoutMs: options.trackerKeepaliveTimeoutMs }),
        tls: certificate,
      });
    } catch (error: unknown) {
      membership.close();
      await issuer.close();
      throw error;
    }
    let advertised: string | undefined;
    try {
      advertised = advertisedAddress(options.advertiseHost ?? options.listen.host, server.port);
    } catch (error: unknown) {
      membership.close();
      await server.close();
      await issuer.close();
      throw error;
    }
    if (advertised === undefined)
      logger.warn(
        { listen: options.listen },
        "no address to advertise (set the advertise host to the pod IP): followers cannot send agents to the leader",
      );
    const elector = new LeaderElector({
      kubeConfig,
      namespace,
      name: options.leaseName,
      identity,
      ...(options.leaseDurationMs === undefined ? {} : { leaseDurationMs: options.leaseDurationMs }),
      ...(options.renewDeadlineMs === undefined ? {} : { renewDeadlineMs: options.renewDeadlineMs }),
      ...(options.retryPeriodMs === undefined ? {} : { retryPeriodMs: options.retryPeriodMs }),
      ...(options.candidatePeriodMs === undefined ? {} : { candidatePeriodMs: options.candidatePeriodMs }),
      ...(advertised === undefined ? {} : { holderAnnotations: { [LEADER_ANNOTATION]: leaderAnnotationValue(identity, advertised) } }),
      logger: logger.child({ component: "leader-election" }),
      onStartedLeading: () => ref.instance?.onStartedLeading(),
      onStoppedLeading: () => ref.instance?.onStoppedLeading(),
    });
    const prefetch = options.prefetch === undefined ? undefined : startPrefetchParts(options, options.prefetch, tracker, nodes, recorder);
    const instance = new KubernetesController(
      tracker,
      server,
      pods,
      nodes,
      membership,
      elector,
      recorder,
      prefetch,
      options,
      ca,
      certificate,
      issuer,
    );
    ref.instance = instance;
    ca.start();
    certificate.start();
    instance.startup = instance.syncThenCampaign();
    return instance;
  }

  /** host:port of the tracker. */
  get trackerAddress(): string {
    return this.server.address;
  }

  /** host:port of the certificate issuer. */
  get issuerAddress(): string {
    const host = this.options.certificates.issuerListen.host;
    const dial = host === "0.0.0.0" || host === "" ? "127.0.0.1" : host === "::" ? "::1" : host;
    return dial.includes(":") ? `[${dial}]:${this.issuer.port}` : `${dial}:${this.issuer.port}`;
  }

  get leading(): boolean {
    return this.elector.isLeader;
  }

  /** Why this replica does not serve the tracker now, or true. */
  serving(): true | string {
    if (this.handingOver) return true;
    if (this.stopping) return "controller shutting down";
    if (!this.elector.isLeader) {
      const leader = this.elector.observedLeader;
      return `this controller replica is not the leader${leader === "" ? "" : ` (the leader is ${leader})`}`;
    }
    if (!this.synced) return "agent Pods not loaded yet";
    return this.certificate.current() === undefined
      ? `no certificate yet (is the CA Secret ${this.options.namespace}/${this.options.certificates.caSecret} there and valid?)`
      : true;
  }

  /**
   * The leader's tracker address as the Lease names it, for agents that reach a follower; undefined
   * while this replica leads, when no leader is known, or when the Lease's note is not the holder's (a
   * leader of an older version leaves the previous holder's note in place).
   */
  leaderAddress(): string | undefined {
    if (this.elector.isLeader) return undefined;
    return leaderFromAnnotation(this.elector.observedAnnotation(LEADER_ANNOTATION), this.elector.observedLeader);
  }

  /**
   * /readyz: Ready once this replica can do its part, leader or not: informers synced, listening (it is
   * from start) and holding its certificate. The Service routes to every Ready replica; a follower
   * answers agents with the leader's address, so a rolling update can wait for a new replica to be Ready
   * and a PodDisruptionBudget counts every replica.
   */
  ready(): true | string {
    if (this.stopping) return "controller shutting down";
    if (!this.synced) return "agent Pods not loaded yet";
    return this.certificate.current() === undefined
      ? `no certificate yet (is the CA Secret ${this.options.namespace}/${this.options.certificates.caSecret} there and valid?)`
      : true;
  }

  /**
   * Stops; not Ready from the first moment. A leader with `releaseLease` (default) hands over: it
   * releases the Lease, keeps serving its sessions until a follower holds the Lease (at the follower's
   * next read, or HANDOVER_TIMEOUT_MS), then ends them naming the new leader, so agents go straight there
   * and no moment passes with no leader serving. `releaseLease: false` behaves like a crash as far as
   * the Lease is concerned: sessions end at once and the Lease expires.
   */
  async stop(options: { releaseLease?: boolean } = {}): Promise<void> {
    if (this.stopping) return;
    const release = options.releaseLease ?? true;
    const handOver = release && this.serving() === true;
    this.stopping = true;
    this.handingOver = handOver;
    this.abort.abort(new ControllerError("ERR_CONTROLLER_STOPPED", "controller stopped"));
    if (!handOver) this.server.endSessions("controller shutting down");
    await this.startup;
    await this.elector.stop({ release });
    if (handOver) {
      const startedAt = performance.now();
      const successor = await this.elector.awaitSuccessor(this.options.handoverTimeoutMs ?? HANDOVER_TIMEOUT_MS);
      this.handingOver = false;
      const leaderAddress = successor === "" ? undefined : this.leaderAddress();
      const ended = this.server.endSessions(
        successor === "" ? "controller shutting down" : `controller shutting down; ${successor} leads now`,
        leaderAddress,
      );
      this.options.metrics?.handoverSeconds.observe((performance.now() - startedAt) / 1000);
      this.options.logger.info(
        { successor, leaderAddress, sessionsEnded: ended, handoverMs: Math.round(performance.now() - startedAt) },
        successor === ""
          ? "no successor took the Lease in time: sessions ended"
          : "handed over: sessions ended, agents sent to the new leader",
      );
    }
    await this.server.close();
    await this.issuer.close();
    await this.certificate.close();
    await this.ca.stop();
    this.membership.close();
    await this.prefetch?.reconciler.stop();
    await Promise.all([this.pods.stop(), this.nodes.stop(), this.prefetch?.informer.stop()]);
    await this.prefetch?.upstream.close();
    await this.recorder.close(EVENT_FLUSH_MS);
    this.options.logger.info({ identity: this.options.identity }, "kubernetes controller stopped");
  }

  private async syncThenCampaign(): Promise<void> {
    const signal = this.abort.signal;
    this.pods.start();
    this.nodes.start();
    // Not waited for: without the CRD installed its list fails (and is retried) while the tracker still has to lead.
    this.prefetch?.informer.start();
    try {
      await Promise.all([this.pods.whenSynced(signal), this.nodes.whenSynced(signal)]);
    } catch (error: unknown) {
      if (signal.aborted || isK8sError(error, "ERR_K8S_CLOSED")) return;
      throw error;
    }
    this.synced = true;
    this.options.logger.info(
      { pods: this.pods.list().length, nodes: this.nodes.list().length },
      "agent Pods and Nodes loaded; campaigning for leadership",
    );
    this.elector.start();
  }

  private onStartedLeading(): void {
    this.options.metrics?.leader.set(1);
    this.options.metrics?.leadershipChanges.inc({ change: "acquired" });
    const lease = this.elector.leaseObject;
    this.recorder.record(
      {
        kind: "Lease",
        apiVersion: "coordination.k8s.io/v1",
        namespace: this.options.namespace,
        name: this.options.leaseName,
        ...(lease?.metadata?.uid === undefined ? {} : { uid: lease.metadata.uid }),
      },
      "Normal",
      "LeaderElected",
      `${this.options.identity} became leader and serves the tracker`,
    );
    this.prefetch?.reconciler.startLeading();
  }

  private onStoppedLeading(): void {
    this.prefetch?.reconciler.stopLeading();
    this.options.metrics?.leader.set(0);
    this.options.metrics?.leadershipChanges.inc({ change: "lost" });
    // A graceful stop ends the sessions itself once a successor serves (stop()).
    if (this.handingOver) return;
    const ended = this.server.endSessions("this controller replica is no longer the leader", this.leaderAddress());
    this.options.logger.warn({ sessionsEnded: ended }, "stopped leading: agent sessions ended so they reconnect to the new leader");
  }

  private onDrop(drop: PeerDrop): void {
    const dropped = drop.agentIds.filter((agentId) => this.tracker.disconnect(agentId));
    if (dropped.length === 0) return;
    this.options.metrics?.peersDropped.inc({ reason: drop.reason }, dropped.length);
    const pod = drop.pod;
    this.recorder.record(
      podReference(pod, this.options.namespace),
      drop.reason === "PodDeleted" ? "Normal" : "Warning",
      "PeerDropped",
      `agent ${dropped.join(", ")} on node ${pod.spec?.nodeName ?? "?"} dropped from the tracker: ${drop.reason}`,
    );
  }
}
