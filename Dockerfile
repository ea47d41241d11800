# syntax=docker/dockerfile:1
# The one `shoal` image: agent, controller and `shoal configure` (the chart runs all three from it).
#   docker build -t shoal:0.1.0 .

# Build: compile TypeScript. pkg/gen (generated from proto/) is committed, so no buf/protoc here.
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
RUN node node_modules/typescript/bin/tsc -p tsconfig.json \
 && find dist -name '*.test.js' -delete -o -name '*.test.js.map' -delete

# Runtime: production dependencies and the compiled cmd/ and pkg/ only.
FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force \
 && rm -rf /root/.npm /tmp/*
COPY --from=build /src/dist/cmd ./dist/cmd
COPY --from=build /src/dist/pkg ./dist/pkg
# Non-root by default (agent, controller). Nothing is written outside mounted volumes, so the root
# filesystem can be read-only: logs go to stdout, the store to --data-dir. The chart runs the
# `shoal configure` init container as root, because the node's runtime configuration is root's.
USER 65532:65532
ENTRYPOINT ["node", "/app/dist/cmd/shoal/main.js"]
CMD ["--help"]
