// The "At scale" chart: last, p99 and median node time as a ratio to the P2P bound against N (log
// scale). Plain SVG, no dependencies.

export interface ChartPoint {
  readonly nodes: number;
  readonly last: number;
  readonly p99: number;
  readonly p50: number;
}

const WIDTH = 640;
const HEIGHT = 360;
const LEFT = 56;
const RIGHT = 150;
const TOP = 28;
const BOTTOM = 44;

const SERIES = [
  { key: "last", label: "last node", color: "#c0392b" },
  { key: "p99", label: "p99 node", color: "#e67e22" },
  { key: "p50", label: "median node", color: "#2980b9" },
] as const;

export function renderScaleChart(points: readonly ChartPoint[], title: string): string {
  const sorted = [...points].sort((a, b) => a.nodes - b.nodes);
  const minN = Math.max(1, sorted[0]?.nodes ?? 1);
  const maxN = Math.max(minN * 10, sorted[sorted.length - 1]?.nodes ?? 10);
  const maxRatio = Math.max(2, Math.ceil(Math.max(...sorted.map((p) => p.last)) + 0.5));
  const plotW = WIDTH - LEFT - RIGHT;
  const plotH = HEIGHT - TOP - BOTTOM;
  const x = (n: number): number => LEFT + ((Math.log10(n) - Math.log10(minN)) / (Math.log10(maxN) - Math.log10(minN))) * plotW;
  const y = (ratio: number): number => TOP + plotH - (ratio / maxRatio) * plotH;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${LEFT}" y="18" font-size="13">${escape(title)}</text>`,
  ];
  for (let r = 0; r <= maxRatio; r++) {
    out.push(
      `<line x1="${LEFT}" x2="${LEFT + plotW}" y1="${y(r)}" y2="${y(r)}" stroke="#eee"/>`,
      `<text x="${LEFT - 8}" y="${y(r) + 4}" text-anchor="end">${r}×</text>`,
    );
  }
  for (let decade = Math.ceil(Math.log10(minN)); 10 ** decade <= maxN; decade++) {
    const n = 10 ** decade;
    out.push(
      `<line x1="${x(n)}" x2="${x(n)}" y1="${TOP}" y2="${TOP + plotH}" stroke="#eee"/>`,
      `<text x="${x(n)}" y="${TOP + plotH + 16}" text-anchor="middle">${n.toLocaleString("en-US")}</text>`,
    );
  }
  out.push(`<text x="${LEFT + plotW / 2}" y="${HEIGHT - 8}" text-anchor="middle">nodes (N)</text>`);
  out.push(
    `<text x="14" y="${TOP + plotH / 2}" transform="rotate(-90 14 ${TOP + plotH / 2})" text-anchor="middle">time / P2P bound</text>`,
  );
  out.push(`<line x1="${LEFT}" x2="${LEFT + plotW}" y1="${y(1)}" y2="${y(1)}" stroke="#27ae60" stroke-dasharray="4 3"/>`);
  SERIES.forEach((series, s) => {
    const coords = sorted.map((p) => `${x(p.nodes).toFixed(1)},${y(p[series.key]).toFixed(1)}`);
    out.push(`<polyline fill="none" stroke="${series.color}" stroke-width="2" points="${coords.join(" ")}"/>`);
    for (const c of coords) {
      const [cx, cy] = c.split(",");
      out.push(`<circle cx="${cx}" cy="${cy}" r="3" fill="${series.color}"/>`);
    }
    const ly = TOP + 10 + s * 18;
    out.push(
      `<line x1="${LEFT + plotW + 12}" x2="${LEFT + plotW + 32}" y1="${ly}" y2="${ly}" stroke="${series.color}" stroke-width="2"/>`,
      `<text x="${LEFT + plotW + 38}" y="${ly + 4}">${series.label}</text>`,
    );
  });
  const ly = TOP + 10 + SERIES.length * 18;
  out.push(
    `<line x1="${LEFT + plotW + 12}" x2="${LEFT + plotW + 32}" y1="${ly}" y2="${ly}" stroke="#27ae60" stroke-dasharray="4 3"/>`,
    `<text x="${LEFT + plotW + 38}" y="${ly + 4}">P2P bound</text>`,
  );
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
