import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { renderChart, tickStep } from "./distribution-chart.js";
import { parseDistributionBenchArgs, svgBesideJson } from "./distribution-options.js";
import { distributionBounds } from "../../pkg/bounds/index.js";

describe("distribution bench flags", () => {
  it("has the issue's defaults", () => {
    const o = parseDistributionBenchArgs([]);
    assert.deepEqual(
      {
        nodes: o.nodes,
        imageMiB: o.imageMiB,
        layers: o.layers,
        nodeMbit: o.nodeMbit,
        originMbit: o.originMbit,
        arms: o.arms,
        json: o.json,
        svg: o.svg,
      },
      {
        nodes: 8,
        imageMiB: 256,
        layers: 4,
        nodeMbit: 200,
        originMbit: 200,
        arms: ["direct", "cache", "shoal"],
        json: undefined,
        svg: undefined,
      },
    );
  });

  it("puts the SVG next to the JSON unless told otherwise; keeps arms in canonical order", () => {
    const o = parseDistributionBenchArgs(["--json", "out/r.json", "--arms", "shoal,direct", "--nodes", "4"]);
    assert.equal(o.svg, "out/r.svg");
    assert.deepEqual(o.arms, ["direct", "shoal"]);
    assert.equal(o.nodes, 4);
    assert.equal(parseDistributionBenchArgs(["--json", "a.json", "--svg", "b.svg"]).svg, "b.svg");
    assert.equal(svgBesideJson("x/result"), "x/result.svg");
    assert.equal(parseDistributionBenchArgs([]).tls, true);
    assert.equal(parseDistributionBenchArgs(["--tls", "false"]).tls, false);
    assert.throws(() => parseDistributionBenchArgs(["--tls", "maybe"]), /--tls must be true or false/);
  });

  it("pulls as the kubelet does (CRI) unless told to use ctr", () => {
    assert.equal(parseDistributionBenchArgs([]).puller, "cri");
    assert.equal(parseDistributionBenchArgs(["--puller", "ctr"]).puller, "ctr");
    assert.throws(() => parseDistributionBenchArgs(["--puller", "crictl"]), /--puller must be one of cri, ctr, got "crictl"/);
  });

  it("serves from containerd's content store unless told not to", () => {
    assert.equal(parseDistributionBenchArgs([]).containerdContent, true);
    assert.equal(parseDistributionBenchArgs(["--containerd-content", "false"]).containerdContent, false);
  });

  it("names the flag in every rejection", () => {
    const cases: [string[], RegExp][] = [
      [["--nodes", "0"], /--nodes must be an integer from 1 to 64/],
      [["--nodes", "2.5"], /--nodes must be an integer/],
      [["--image-mib", "lots"], /--image-mib must be an integer/],
      [["--layers", "-1"], /--layers/],
      [["--node-mbit", "0"], /--node-mbit must be a number above 0/],
      [["--origin-mbit", ""], /--origin-mbit/],
      [["--arms", "direct,p2p"], /--arms: unknown arm "p2p"/],
      [["--arms", ","], /--arms must name at least one/],
      [["--json", ""], /--json needs a value/],
      [["--timeout", "0"], /--timeout/],
      [["--containerd-content", "maybe"], /--containerd-content must be true or false/],
      [["--bogus"], /bogus/],
    ];
    for (const [argv, message] of cases) assert.throws(() => parseDistributionBenchArgs(argv), message, argv.join(" "));
  });
});

describe("distribution bench chart and bounds", () => {
  it("computes the P2P and client-server bounds", () => {
    const MB = 1e6;
    // F = 100 MB, N = 4, u_s = 10 MB/s, u = d = 20 MB/s: P2P max(10, 5, 400/90) = 10; client-server max(40, 5) = 40.
    assert.deepEqual(
      distributionBounds(100 * MB, 4, { originBytesPerSecond: 10 * MB, uploadBytesPerSecond: 20 * MB, downloadBytesPerSecond: 20 * MB }),
      {
        p2pSeconds: 10,
        clientServerSeconds: 40,
      },
    );
    // Slow node uploads make the swarm term dominate: 8·100/(100 + 8·5) = 5.71.
    const swarm = distributionBounds(100 * MB, 8, {
      originBytesPerSecond: 100 * MB,
      uploadBytesPerSecond: 5 * MB,
      downloadBytesPerSecond: 100 * MB,
    });
    assert.equal(swarm.p2pSeconds.toFixed(2), "5.71");
  });

  it("draws a bar per node and arm, a missing bar for a failed node, and both bounds", () => {
    const svg = renderChart({
      title: "t <&>",
      nodeNames: ["node-1", "node-2"],
      arms: [
        { name: "direct", seconds: [10, 20] },
        { name: "shoal", seconds: [3, null] },
      ],
      p2pBoundSeconds: 2.5,
      clientServerBoundSeconds: 20,
    });
    assert.equal(svg.match(/<rect x=/g)?.length, 3 + 2, "three bars and two legend swatches");
    assert.match(svg, /P2P bound 2\.5 s/);
    assert.match(svg, /client-server bound 20\.0 s/);
    assert.match(svg, /t &lt;&amp;&gt;/);
    assert.match(svg, /✗/);
  });

  it("picks round tick steps", () => {
    assert.equal(tickStep(60), 10);
    assert.equal(tickStep(7), 2);
    assert.equal(tickStep(0), 1);
  });
});
