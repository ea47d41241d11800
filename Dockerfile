# syntax=docker/dockerfile:1
# The one `shoal` image: agent, controller and `shoal configure` (the chart runs all three from it).
#   docker build -t shoal:0.1.0 .
# Without Docker Hub (base images built from Debian packages, then this file with podman):
#   npm run image:build

# Build: compile TypeScript, then cut the runtime tree. pkg/gen (generated from proto/) is committed,
# so no buf/protoc here.
FROM node:24-bookworm AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: nothing needed for compiling has an install step (the `node` devDependency's
# would only fetch a second Node 24).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY proto ./proto
COPY pkg ./pkg
COPY cmd ./cmd
COPY e2e ./e2e
COPY charts ./charts
RUN node node_modules/typescript/bin/tsc -p tsconfig.json
# /out/deps: production dependencies without what Node never loads (type declarations, TypeScript
# sources, source maps, docs; ~45 of ~90 MB, mostly @kubernetes/client-node's generated models).
# /out/app: the compiled cmd/ and pkg/ without tests and maps, and package.json ("type": "module").
# /out/node: the Node binary without its debug symbols (127 -> 109 MB; JS stack traces and
# --cpu-prof are unaffected, only native frames in perf/gdb lose their names).
RUN npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
 && mkdir -p /out/deps /out/app/dist \
 && cp -a node_modules /out/deps/ \
 && cp -a package.json /out/app/ \
 && cp -a dist/cmd dist/pkg /out/app/dist/ \
 && find /out/deps -type f \( -name '*.ts' -o -name '*.mts' -o -name '*.cts' -o -name '*.map' \
      -o \( \( -iname '*.md' -o -iname '*.markdown' \) -not -iname 'licen[cs]e*' \) \) -delete \
 && find /out/app -type f \( -name '*.test.js' -o -name '*.map' \) -delete \
 && strip -o /out/node /usr/local/bin/node

# Runtime: Debian slim, the Node binary, production dependencies and the compiled code; no npm, no
# headers, no docs. The shell and coreutils stay: the chart runs `chown` (data-dir init container)
# and `sh`/`sleep` (restore-on-stop container) from this image. Layers from least to most often
# changed, so a code change ships one small layer.
FROM debian:bookworm-slim
ENV NODE_ENV=production
# NODE_ENV only: the agent runs with glibc's allocator defaults, and the chart gives the controller its
# own environment (CONTROLLER_NODE_ENV in pkg/config/node-flags.ts says why); the Dockerfile test checks.
COPY --from=build /out/node /usr/local/bin/node
COPY --from=build /out/deps /app
COPY --from=build /out/app /app
WORKDIR /app
# Non-root by default (agent, controller). Nothing is written outside mounted volumes, so the root
# filesystem can be read-only: logs go to stdout, the store to --data-dir. The chart runs the
# `shoal configure` init container as root, because the node's runtime configuration is root's.
USER 65532:65532
# The Node flags every shoal process runs with (pkg/config/node-flags.ts says why; the Dockerfile test
# keeps this list equal to it).
ENTRYPOINT ["node", "--max-semi-space-size=1", "--no-maglev", "/app/dist/cmd/shoal/main.js"]
CMD ["--help"]
