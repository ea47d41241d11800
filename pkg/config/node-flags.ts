/**
 * Node.js flags every `shoal` process is started with (the container image's entrypoint, and the demo and
 * test harnesses that start agents and controllers; the Dockerfile test checks the image uses these).
 *
 * --max-semi-space-size: V8's young generation grows to 16 MiB semi-spaces under allocation pressure by
 * default; an agent moving gigabytes allocates steadily (I/O buffers, events), so its young generation sits
 * at the maximum. 2 MiB measured 60–100 MB less peak RSS per agent in `npm start` and no more CPU (the
 * objects that survive a scavenge are few, so more frequent scavenges cost little). V8 reads it only at
 * start-up: it cannot be set from inside the process.
 */
export const SHOAL_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=2"];
