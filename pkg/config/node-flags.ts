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

/**
 * Environment every `shoal` process is started with, beside SHOAL_NODE_FLAGS (the image's ENV; the demo
 * and test harnesses add it to the children's environment).
 *
 * MALLOC_MMAP_THRESHOLD_: glibc serves allocations from this size up (piece and message buffers of a
 * MiB, read chunks) with mmap, and gives them back to the kernel when freed. By default it raises the
 * threshold to the largest block freed so far, so after the first freed 1 MiB buffer every later one comes
 * from the malloc heap, which it never shrinks past a block still in use: in `npm start` an agent's heap
 * kept 69 MB resident after its pull while 16 MB of buffers were live. Fixing the threshold at glibc's
 * own initial value (128 KiB) keeps RSS with what is in use (peak RSS 10–20 MB lower per agent); the
 * pools in pkg/peer reuse buffers, so the extra mmap calls are few. Other C libraries ignore it.
 */
export const SHOAL_NODE_ENV: Readonly<Record<string, string>> = { MALLOC_MMAP_THRESHOLD_: "131072" };
