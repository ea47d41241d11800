// The distribution benchmark's chart: completion time per node, one bar per arm, with the P2P bound
// (and the client-server bound) drawn across. Plain SVG, no dependencies.

export interface ChartArm {
  readonly name: string;
  /** Per node, in node order; null for a node that did not finish. */
  readonly seconds: readonly (number | null)[];
}

export interface ChartInput {
  readonly title: string;
  readonly nodeNames: readonly string[];
  readonly arms: readonly ChartArm[];
  readonly p2pBoundSeconds: number;
  readonly clientServerBoundSeconds: number;
}

const WIDTH = 840;
const HEIGHT = 420;
const MARGIN = { top: 50, right: 180, bottom: 50, left: 60 };
const COLORS = ["#c0392b", "#e67e22", "#2471a3", "#7d3c98", "#1e8449"];
const TICKS = 6;

const escape = (text: string): string => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const fmt = (n: number): string => (Number.isInteger(n) ? String(n) : n.toFixed(1));

/** A round step (1, 2 or 5 × 10^k) that splits `max` into about TICKS intervals. */
export function tickStep(max: number): number {
  if (!(max > 0)) return 1;
  const raw = max / TICKS;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  return step ?? 10 * magnitude;
}

export function renderChart(input: ChartInput): string {
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const values = input.arms.flatMap((a) => a.seconds.filter((s): s is number => s !== null));
  const step = tickStep(Math.max(...values, input.p2pBoundSeconds, input.clientServerBoundSeconds, 1e-3) * 1.05);
  const top = step * Math.ceil((Math.max(...values, input.p2pBoundSeconds, input.clientServerBoundSeconds, 1e-3) * 1.05) / step);
  const y = (s: number): number => MARGIN.top + plotH - (s / top) * plotH;
  const groupW = plotW / Math.max(1, input.nodeNames.length);
  const barW = (groupW * 0.8) / Math.max(1, input.arms.length);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${WIDTH / 2}" y="24" text-anchor="middle" font-size="15">${escape(input.title)}</text>`,
  ];
  for (let t = 0; t <= top + 1e-9; t += step) {
    out.push(
      `<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/>`,
      `<text x="${MARGIN.left - 6}" y="${y(t) + 4}" text-anchor="end">${fmt(t)}</text>`,
    );
  }
  out.push(
    `<text transform="translate(16 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">seconds until the node has the image</text>`,
  );
  input.nodeNames.forEach((name, i) => {
    const x0 = MARGIN.left + i * groupW + groupW * 0.1;
    input.arms.forEach((arm, a) => {
      const seconds = arm.seconds[i] ?? null;
      const x = x0 + a * barW;
      const color = COLORS[a % COLORS.length] ?? "black";
      if (seconds === null) {
        out.push(`<text x="${x + barW / 2}" y="${y(0) - 4}" text-anchor="middle" fill="${color}">✗</text>`);
      } else {
        out.push(
          `<rect x="${x.toFixed(1)}" y="${y(seconds).toFixed(1)}" width="${(barW * 0.9).toFixed(1)}" height="${(y(0) - y(seconds)).toFixed(1)}" fill="${color}"><title>${escape(`${arm.name} ${name}: ${seconds.toFixed(2)} s`)}</title></rect>`,
        );
      }
    });
    out.push(
      `<text x="${MARGIN.left + i * groupW + groupW / 2}" y="${MARGIN.top + plotH + 18}" text-anchor="middle">${escape(name)}</text>`,
    );
  });
  const bound = (seconds: number, label: string, dash: string): void => {
    out.push(
      `<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${y(seconds)}" y2="${y(seconds)}" stroke="black" stroke-width="1.5" stroke-dasharray="${dash}"/>`,
      `<text x="${MARGIN.left + plotW + 6}" y="${y(seconds) + 4}">${escape(`${label} ${seconds.toFixed(1)} s`)}</text>`,
    );
  };
  bound(input.p2pBoundSeconds, "P2P bound", "6 4");
  bound(input.clientServerBoundSeconds, "client-server bound", "2 3");
  out.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${y(0)}" y2="${y(0)}" stroke="black"/>`);
  input.arms.forEach((arm, a) => {
    const ly = MARGIN.top + a * 18;
    out.push(
      `<rect x="${MARGIN.left + plotW + 10}" y="${ly + 40}" width="12" height="12" fill="${COLORS[a % COLORS.length] ?? "black"}"/>`,
      `<text x="${MARGIN.left + plotW + 28}" y="${ly + 50}">${escape(arm.name)}</text>`,
    );
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}
