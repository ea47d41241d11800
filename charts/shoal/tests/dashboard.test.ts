// The Grafana dashboard's queries are real PromQL over real series: Debian's Prometheus scrapes a
// running `shoal controller` and two `shoal agent` processes after pulls through both agents (the
// second takes the image from the first: peer traffic), and every panel target must parse and
// return data. Also the dashboard's static shape: stable uid, ${datasource} everywhere.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { pullImage } from "../../../pkg/client/index.js";
import { generateImageLayout } from "../../../pkg/imagegen/index.js";
import { DockerRegistry } from "../../../e2e/support/docker-registry.js";
import { getFreePort } from "../../../e2e/support/ports.js";
import { makeTempDir, removeTempDir } from "../../../e2e/support/process.js";
import { ShoalAgent } from "../../../e2e/support/shoal-agent.js";
import { ShoalController } from "../../../e2e/support/shoal-controller.js";
import { skopeoPushLayout } from "../../../e2e/support/skopeo.js";
import { Prometheus } from "./prometheus.js";
import { CHART_DIR } from "./render.js";

export const DASHBOARD_FILE = join(CHART_DIR, "dashboards", "shoal.json");
export const DASHBOARD_UID = "shoal-overview";
const IMAGE_BYTES = 6 * 1024 * 1024;
/** Two images do not fit: pulling the second evicts the first (store panels get data). */
const STORE_QUOTA = "10MiB";
const PULL_TIMEOUT_MS = 60_000;
const SETUP_TIMEOUT_MS = 120_000;
/** What Grafana would put in for its variables: windows that cover the whole test run. */
const GRAFANA_VARIABLES: Record<string, string> = {
  $__rate_interval: "5m",
  $__interval: "15s",
  $__range: "1h",
  $namespace: ".*",
};

interface Target {
  readonly expr: string;
  readonly refId: string;
  readonly datasource?: { readonly uid?: string };
}

interface Panel {
  readonly id: number;
  readonly type: string;
  readonly title: string;
  readonly datasource?: { readonly type?: string; readonly uid?: string };
  readonly targets?: readonly Target[];
  readonly gridPos: { readonly x: number; readonly y: number; readonly w: number; readonly h: number };
}

interface Dashboard {
  readonly uid: string;
  readonly title: string;
  readonly panels: readonly Panel[];
  readonly templating: { readonly list: readonly { readonly name: string; readonly type: string; readonly query?: unknown }[] };
}

async function loadDashboard(): Promise<Dashboard> {
  return JSON.parse(await readFile(DASHBOARD_FILE, "utf8")) as Dashboard;
}

function targets(dashboard: Dashboard): { panel: Panel; target: Target }[] {
  return dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => ({ panel, target })));
}

/** The expression as Grafana sends it: its variables replaced. */
export function substitute(expr: string): string {
  let result = expr;
  // Longest names first: $__rate_interval before $__interval.
  for (const name of Object.keys(GRAFANA_VARIABLES).sort((a, b) => b.length - a.length))
    result = result.split(name).join(GRAFANA_VARIABLES[name]);
  return result;
}

/** Metric names a /metrics exposition declares (# TYPE), with the histogram series names. */
function declaredNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const match of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name = "", type] = match;
    names.add(name);
    if (type === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) names.add(`${name}${suffix}`);
  }
  return names;
}

describe("Grafana dashboard", () => {
  it("has a stable uid, a ${datasource} variable used by every panel and target, and a layout that fits", async () => {
    const dashboard = await loadDashboard();
    assert.equal(dashboard.uid, DASHBOARD_UID);
    const datasource = dashboard.templating.list.find((v) => v.name === "datasource");
    assert.deepEqual([datasource?.type, datasource?.query], ["datasource", "prometheus"]);
    const ids = new Set<number>();
    for (const panel of dashboard.panels) {
      assert.ok(!ids.has(panel.id), `panel id ${panel.id} is unique`);
      ids.add(panel.id);
      assert.ok(panel.gridPos.x >= 0 && panel.gridPos.x + panel.gridPos.w <= 24, `${panel.title} fits in 24 columns`);
      if (panel.type === "row") continue;
      assert.equal(panel.datasource?.uid, "${datasource}", `${panel.title} uses the datasource variable`);
      assert.ok((panel.targets ?? []).length > 0, `${panel.title} has queries`);
      for (const target of panel.targets ?? []) assert.equal(target.datasource?.uid, "${datasource}", `${panel.title} ${target.refId}`);
    }
    const titles = dashboard.panels.map((p) => p.title.toLowerCase()).join("|");
    for (const topic of [
      "origin offload",
      "bytes served by source",
      "latency",
      "peers known",
      "store fill",
      "evictions",
      "tracker lookups and grants",
      "errors",
    ])
      assert.ok(titles.includes(topic), `a panel on ${topic}`);
  });

  describe("every panel query against Prometheus scraping a controller and two agents after pulls", () => {
    let work: string | undefined;
    let origin: DockerRegistry | undefined;
    let controller: ShoalController | undefined;
    const agents: ShoalAgent[] = [];
    let prometheus: Prometheus | undefined;

    before(async () => {
      const signal = AbortSignal.timeout(SETUP_TIMEOUT_MS);
      work = await makeTempDir("dashboard");
      origin = await DockerRegistry.start();
      // A mirrored registry nobody listens on: pulls from it fail upstream (error panels get data).
      const deadRegistry = `127.0.0.1:${await getFreePort()}`;
      controller = await ShoalController.start();
      for (const [i, host] of ["127.0.0.31", "127.0.0.32"].entries()) {
        agents.push(
          await ShoalAgent.start({
            host,
            tracker: controller.trackerAddress,
            nodeName: `node-${i}`,
            upstreams: [`${origin.host}=${origin.url}`, `${deadRegistry}=http://${deadRegistry}`],
            extraArgs: ["--store-quota", STORE_QUOTA, "--upstream-connect-timeout", "1s"],
          }),
        );
      }
      const targetsToScrape = [controller.metricsUrl, ...agents.map((a) => a.metricsUrl)].map((url) => new URL(url).host);
      prometheus = await Prometheus.start(targetsToScrape, signal);
      await prometheus.waitForTargets(targetsToScrape.length, 30_000, signal);
      const pull = async (agent: ShoalAgent, tag: string, registry = origin?.host ?? ""): Promise<string> =>
        (
          await pullImage({
            baseUrl: agent.mirrorUrl,
            ns: registry,
            name: "dashboard/app",
            reference: tag,
            signal: AbortSignal.timeout(PULL_TIMEOUT_MS),
          })
        ).digest;
      const [first, second] = agents;
      assert.ok(first && second);
      for (const tag of ["one", "two"]) {
        const layout = await generateImageLayout({
          dir: join(work, tag),
          seed: `dashboard-${tag}`,
          layers: 3,
          totalBytes: IMAGE_BYTES,
          tag,
        });
        await skopeoPushLayout({ layoutDir: layout.dir, tag, destination: `${origin.host}/dashboard/app:${tag}` });
        assert.equal(await pull(first, tag), layout.root.digest, "from the origin");
        await sleep(500); // the first agent's announce reaches the tracker
        assert.equal(await pull(second, tag), layout.root.digest, "from the first agent");
        assert.equal(await pull(second, tag), layout.root.digest, "from the local store");
      }
      await assert.rejects(pull(first, "gone", deadRegistry), "the dead registry fails the pull");
      // A few scrapes after the last pull, so every counter has moved inside the rate windows.
      await sleep(3_000);
    });

    after(async () => {
      await prometheus?.stop().catch(() => undefined);
      await Promise.all(agents.map((a) => a.stop().catch(() => undefined)));
      await controller?.stop().catch(() => undefined);
      await origin?.stop().catch(() => undefined);
      if (work !== undefined) await removeTempDir(work);
    });

    it("the pulls went origin → peer → local and evicted the first image", async () => {
      assert.ok(prometheus);
      const bySource = await prometheus.query("sum by (source) (shoal_blob_bytes_served_total)");
      const bytes = new Map(bySource.result.map((s) => [s.metric.source ?? "", Number(s.value[1])]));
      for (const source of ["origin", "peer", "local"])
        assert.ok((bytes.get(source) ?? 0) > 0, `bytes served from ${source}: ${JSON.stringify([...bytes])}`);
      const evicted = await prometheus.query("sum(shoal_store_evictions_total)");
      assert.ok(Number(evicted.result[0]?.value[1] ?? 0) > 0, "the quota evicted blobs");
    });

    it("every metric a panel uses is exported by an agent or the controller", async () => {
      const dashboard = await loadDashboard();
      const declared = new Set<string>();
      for (const process of [controller, ...agents]) {
        assert.ok(process);
        for (const name of declaredNames(await (await fetch(`${process.metricsUrl}/metrics`)).text())) declared.add(name);
      }
      const used = new Set(
        targets(dashboard).flatMap(({ target }) => [...target.expr.matchAll(/\bshoal_[a-zA-Z0-9_]+/g)].map((m) => m[0])),
      );
      assert.ok(used.size > 20, `the dashboard uses ${used.size} metrics`);
      assert.deepEqual(
        [...used].filter((name) => !declared.has(name)).sort(),
        [],
        "metrics the dashboard queries that no Shoal process exports",
      );
    });

    it("every panel target parses and returns data", async () => {
      assert.ok(prometheus);
      const dashboard = await loadDashboard();
      const failures: string[] = [];
      for (const { panel, target } of targets(dashboard)) {
        const expr = substitute(target.expr);
        assert.ok(!expr.includes("$"), `${panel.title} ${target.refId}: a Grafana variable is left in ${expr}`);
        const answer = await prometheus.query(expr);
        if (answer.status !== "success") failures.push(`${panel.title} ${target.refId}: ${answer.error ?? answer.status} in ${expr}`);
        else if (answer.result.length === 0) failures.push(`${panel.title} ${target.refId}: no data for ${expr}`);
      }
      assert.deepEqual(failures, []);
    });
  });
});
