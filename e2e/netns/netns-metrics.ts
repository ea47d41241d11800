// Prometheus text from an agent's /metrics, fetched from inside its network namespace (the test process
// cannot reach the namespaces' addresses).
import { IP_BINARY, runCommand } from "../support/process.js";

const SCRAPE_TIMEOUT_MS = 15_000;

export interface Sample {
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export async function scrapeInNetns(netns: string, metricsUrl: string, signal?: AbortSignal): Promise<string> {
  const script = `fetch(${JSON.stringify(`${metricsUrl}/metrics`)}).then((r) => r.text()).then((t) => process.stdout.write(t))`;
  const { stdout } = await runCommand(IP_BINARY, ["netns", "exec", netns, process.execPath, "-e", script], {
    timeoutMs: SCRAPE_TIMEOUT_MS,
    ...(signal === undefined ? {} : { signal }),
  });
  return stdout;
}

/** Every sample of one metric in a Prometheus text exposition. */
export function samples(exposition: string, name: string): Sample[] {
  const found: Sample[] = [];
  for (const line of exposition.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)$/.exec(line);
    if (match?.[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1] ?? ""] = pair[2] ?? "";
    found.push({ labels, value: Number(match[3]) });
  }
  return found;
}
