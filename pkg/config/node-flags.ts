import { setFlagsFromString } from "node:v8";

/**
 * Node.js flags every `shoal` process is started with (the container image's entrypoint; `npm start`, for
 * the demo's own process; and the demo and test harnesses that start agents and controllers. Tests check
 * that the image and `npm start` use these).
 *
 * --max-semi-space-size=1: V8's young generation grows to 16 MiB semi-spaces under allocation pressure by
 * default; an agent moving gigabytes allocates steadily (I/O buffers, events), so its young generation sits
 * at the maximum. 2 MiB measured 60–100 MB less peak RSS per agent in `npm start` than the default, and no
 * more CPU (the objects that survive a scavenge are few, so more frequent scavenges cost little). 1 MiB
 * (the smallest the flag can set: it counts whole MiB) measured 2–14 MB less again (6 pairs in
 * alternation, highest agent 159–163 MB against 163–174 MB) and the same CPU per GB. Every socket read is a
 * fresh ArrayBuffer that dies young, and only a scavenge frees it, so scavenging twice as often should hold
 * about half as many dead ones (not measured directly). In `npm run bench:tracker` the controller's
 * figures with it stayed within that benchmark's wide spread (docs/benchmarks.md, "December 5 (fifth
 * session)"). V8 reads it only at start-up: it cannot be set from inside the process.
 *
 * --no-maglev: V8's middle compiler tier off; hot code goes from the baseline tier straight to TurboFan. An
 * agent's pulls mostly run in fresh processes' first minutes, when Maglev compiled much of the data path
 * that TurboFan then compiled again. Measured in alternation: agent CPU per GB lower in all 6 pairs of
 * `npm start` (by 0.1–0.9 CPU-s, 3 % on average) and in all 3 pairs of `npm run bench` (agent means
 * 15.3–16.9 against 16.7–17.4); peak RSS within the spread (bench means 1–6 MB higher, `npm start`'s
 * highest agent 18 MB lower to 7 MB higher; same section of docs/benchmarks.md).
 * Code that runs for long, the controller's included, ends in TurboFan either way.
 */
export const SHOAL_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=1", "--no-maglev"];

/**
 * Environment the controller is started with (the chart's controller container; the demo and test
 * harnesses add it to a controller's environment). The image sets none of it, and the agent runs without
 * it: glibc's allocator keeps its defaults there.
 *
 * MALLOC_MMAP_THRESHOLD_=131072 makes glibc serve every block from 128 KiB up with a fresh mmap and unmap
 * it when freed; by default the threshold rises to the largest block freed, and such blocks are reused
 * from its heap, which keeps its high-water mark.
 * - The agent: Node's TLS layer copies each batch of HTTP/2 frames it sends into one new block (one piece
 *   of 1 MiB or more per batch), so with the fixed threshold an agent uploading to peers mapped, faulted
 *   in, zeroed and unmapped fresh pages for every byte it sent: 4.2 CPU-s per GB copied on the benchmark
 *   VM against 0.35 for reused blocks (less where fresh pages are cheap). Without it, measured in
 *   alternation (docs/benchmarks.md, "December 5 (second session)"): the demo with 6 warm nodes on
 *   uncapped links, 10.9 against 13.0 agent CPU-s per GB (6 pairs, every pair lower), the same peak RSS;
 *   `npm start` defaults, 12.1–12.7 against 14.4–16.4 (2 pairs); `npm run bench`,
 *   10–22 % less agent CPU per GB (2 pairs). The price: an agent holds more anonymous memory once its
 *   pulls are over (means of 73 against 52 MB in `npm start`, 104 against 52 MB with 6 warm uncapped
 *   nodes), still below its peak (the chart's agent.env can set the threshold again).
 * - The controller: with the threshold, `npm run bench:tracker` at 1,000 agents answered 1,345–1,920
 *   lookups a second (p50 1.2–1.7 s) against 1,136–1,229 (p50 1.9–2.2 s) without, at the same total
 *   message rate (3 pairs), and held 612–673 MiB against 519–588 MiB. Lookups are what downloads wait
 *   for, so the controller keeps it. Other C libraries ignore the variable.
 */
export const CONTROLLER_NODE_ENV: Readonly<Record<string, string>> = { MALLOC_MMAP_THRESHOLD_: "131072" };

/** The environment variables a `shoal <command>` process is started with, beside the inherited ones. */
export function shoalNodeEnv(command: string): Readonly<Record<string, string>> {
  return command === "controller" ? CONTROLLER_NODE_ENV : {};
}

/**
 * V8 flags the agent sets on itself when it starts (applyV8Flags), after the process is up: V8 reads
 * them at every collection. Not on the command line, because the image's entrypoint (SHOAL_NODE_FLAGS)
 * also starts the controller, whose heap is a different shape.
 *
 * --heap-growing-percent=100: after each full collection, V8 lets the old generation grow to twice what
 * survived before it starts the next one. Left to itself, V8 picks a factor from its own speed against the
 * program's allocation rate, and for an agent moving data that came out at about 1.45: a 22 MB heap got a
 * 32 MB limit. V8 counts ArrayBuffer memory allocated since the last full collection against that limit,
 * and every socket read (TLS records from peers, the origin's response) is a fresh ArrayBuffer: an agent
 * receiving 200 MB/s allocates about 25 MB of them between two scavenges, so the 10 MB of slack started a
 * full collection every 100–150 ms, even though almost all of those buffers die young. Measured in
 * `npm start` with 2 nodes and a 1 GB image: 17 to 44 full collections per agent per pull before (1.5–2.6
 * CPU-s of V8's worker threads), 2 to 4 with the flag (0.8–1.1 CPU-s); peak RSS the same, or up to 16 MB
 * higher (docs/benchmarks.md, "December 5 (midday)").
 */
export const AGENT_V8_FLAGS: readonly string[] = ["--heap-growing-percent=100"];

/**
 * V8 flags `shoal demo` sets on itself. Its one process plays the origin and the six container runtimes that
 * pull through the agents, so it receives every node's copy of the image (1.2 GB in `npm start`) and checks
 * its digests, with a heap of 15–18 MB. Each 64 KiB socket read is a fresh ArrayBuffer, which V8 counts
 * against the old generation's limit (as in the agent, above), so with V8's own factor it ran a full
 * collection every 150–200 ms of the round (63 in one), and none of them found much to free.
 *
 * --heap-growing-percent=300: 21 full collections in that round; the demo process spent 3.8–4.6 CPU-s in
 * the round against 5.0–5.7 without, 3 pairs in alternation, and the agents the same (docs/benchmarks.md,
 * "December 5 (fifth session)"). That CPU is the harness's, not Shoal's, and on a 2-core machine the agents
 * wait for it. 100 (the agent's setting) took off a third of the collections and no CPU. With
 * SHOAL_NODE_FLAGS as well (`npm start` passes them; V8 reads the young generation's size only at
 * start-up), the process spent 0.2–1.3 CPU-s less of a round again, in every one of 8 pairs (4 of them
 * with the semi-space flag alone; "December 6 (ninth session)").
 */
export const DEMO_V8_FLAGS: readonly string[] = ["--heap-growing-percent=300"];

/** Sets V8 `flags` on this process (AGENT_V8_FLAGS, DEMO_V8_FLAGS), once, before it starts its work. */
export function applyV8Flags(flags: readonly string[]): void {
  for (const flag of flags) setFlagsFromString(flag);
}
