#!/usr/bin/env bash
# Builds the shoal image from the repository's Dockerfile with podman on a machine that reaches only
# Debian's package mirror and the npm registry (no image registry):
#   1. debian:bookworm-slim: mmdebstrap from this machine's apt sources, slimmed as the official one.
#   2. node:24-bookworm: that plus the Node 24 binary of the `node` npm package and npm.
#   3. the e2e tools image (docker-registry, skopeo, catatonit) for the container suites.
#   4. the Dockerfile, unchanged, with `podman build --pull=never`.
# Base images are built once (again with --rebuild-bases, or when the Node version changes); the
# shoal image is rebuilt every time (podman's layer cache makes an unchanged tree quick). Prints the
# image's size and layers. Needs root (mmdebstrap, rootful podman), podman, mmdebstrap, and
# `npm ci` done in the repository (the Node binary comes from node_modules).
#
#   e2e/image/build.sh [--rebuild-bases] [--tag NAME:TAG]
# Environment: SHOAL_IMAGE (default localhost/shoal:<package.json version>), CONTAINERS_CONF as for
# every podman command (see e2e/containers/README.md).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$REPO_ROOT/e2e/image"
VERSION=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$REPO_ROOT/package.json")
TAG=${SHOAL_IMAGE:-localhost/shoal:$VERSION}
REBUILD_BASES=false
# The names the Dockerfile's FROM lines use; podman resolves them to these local images (--pull=never).
DEBIAN_BASE=docker.io/library/debian:bookworm-slim
NODE_BASE=docker.io/library/node:24-bookworm
TOOLS_IMAGE=${SHOAL_E2E_TOOLS_IMAGE:-localhost/shoal-e2e-tools:bookworm}
# npm in the build base: the npm 11 line that Node 24 ships.
NPM_VERSION=11.6.2
NODE_BIN="$REPO_ROOT/node_modules/node/bin/node"
CACHE_DIR="$REPO_ROOT/.cache/image"

while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild-bases) REBUILD_BASES=true ;;
    --tag) TAG=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[image] %s\n' "$*" >&2; }
fail() { printf '[image] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (mmdebstrap and rootful podman)"
command -v podman >/dev/null || fail "podman is not installed (apt-get install podman runc netavark aardvark-dns iptables catatonit mmdebstrap)"
command -v mmdebstrap >/dev/null || fail "mmdebstrap is not installed"
[ -x "$NODE_BIN" ] || fail "$NODE_BIN missing: run npm ci first"
NODE_VERSION=$("$NODE_BIN" --version)
case "$NODE_VERSION" in v24.*) ;; *) fail "node_modules/node is $NODE_VERSION, expected v24" ;; esac

WORK=$(mktemp -d /tmp/shoal-image-build.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SECONDS=0

needs_base() { # NAME [LABEL VALUE]: true when the image is missing, outdated or bases are rebuilt
  $REBUILD_BASES && return 0
  podman image exists "$1" || return 0
  [ $# -lt 3 ] && return 1
  [ "$(podman image inspect --format "{{ index .Labels \"$2\" }}" "$1")" != "$3" ]
}

# --- 1. debian:bookworm-slim --------------------------------------------------------------------
if needs_base "$DEBIAN_BASE"; then
  sources=()
  [ -s /etc/apt/sources.list ] && sources+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && sources+=("$f"); done
  [ ${#sources[@]} -gt 0 ] || fail "no apt sources in /etc/apt: mmdebstrap needs this machine's Debian mirror"
  log "building $DEBIAN_BASE with mmdebstrap from ${sources[*]}"
  # As the official slim image: merged /usr without the usrmerge package (which pulls in perl), no
  # man pages, docs (copyright files stay), info or locales, no apt lists or logs.
  mmdebstrap --variant=apt --quiet --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --aptopt='Acquire::Languages "none"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/apt "$1"/var/log/*.log' \
    bookworm - "${sources[@]}" 2>"$WORK/mmdebstrap.log" \
    | podman import --quiet --change 'CMD ["bash"]' - "$DEBIAN_BASE" >/dev/null \
    || { tail -20 "$WORK/mmdebstrap.log" >&2; fail "mmdebstrap | podman import failed"; }
fi

# --- 2. node:24-bookworm ----------------------------------------------------------------------------
if needs_base "$NODE_BASE" org.shoal.node-version "$NODE_VERSION"; then
  log "building $NODE_BASE (Node $NODE_VERSION, npm $NPM_VERSION)"
  ctx="$WORK/node"
  mkdir -p "$ctx/npm" "$ctx/ca" "$CACHE_DIR"
  cp "$NODE_BIN" "$ctx/node"
  tarball="$CACHE_DIR/npm-$NPM_VERSION.tgz"
  if [ ! -s "$tarball" ]; then
    (cd "$WORK" && npm pack "npm@$NPM_VERSION" --silent >/dev/null) || fail "npm pack npm@$NPM_VERSION failed"
    mv "$WORK/npm-$NPM_VERSION.tgz" "$tarball"
  fi
  tar -xzf "$tarball" -C "$ctx/npm" --strip-components=1
  # This machine's npm registry and CA file, so `npm ci` in the build stage reaches what npm here
  # reaches (e.g. through a TLS-intercepting egress proxy). Nothing else of the npm config.
  : >"$ctx/npmrc"
  registry=$(npm config get registry 2>/dev/null || true)
  [ -n "$registry" ] && echo "registry=$registry" >>"$ctx/npmrc"
  cafile=$(npm config get cafile 2>/dev/null || true)
  if [ -n "$cafile" ] && [ "$cafile" != null ] && [ -f "$cafile" ]; then
    cp "$cafile" "$ctx/ca/ca.pem"
    echo "cafile=/usr/local/share/shoal-build-ca/ca.pem" >>"$ctx/npmrc"
  fi
  podman build --quiet --pull=never --network=host --label "org.shoal.node-version=$NODE_VERSION" \
    -f "$HERE/node.Containerfile" -t "$NODE_BASE" "$ctx" >"$WORK/node.log" 2>&1 \
    || { tail -20 "$WORK/node.log" >&2; fail "podman build of $NODE_BASE failed"; }
fi

# --- 3. e2e tools image -------------------------------------------------------------------------
if needs_base "$TOOLS_IMAGE"; then
  log "building $TOOLS_IMAGE"
  podman build --quiet --pull=never --network=host -f "$REPO_ROOT/e2e/containers/tools.Containerfile" \
    -t "$TOOLS_IMAGE" "$WORK" >"$WORK/tools.log" 2>&1 \
    || { tail -20 "$WORK/tools.log" >&2; fail "podman build of $TOOLS_IMAGE failed"; }
fi

# --- 4. the Dockerfile ------------------------------------------------------------------------------
log "building $TAG from Dockerfile"
# --network=host: the build stage's `npm ci` reaches the npm registry as npm on this machine does.
podman build --pull=never --network=host --layers -f "$REPO_ROOT/Dockerfile" -t "$TAG" "$REPO_ROOT" >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; fail "podman build of Dockerfile failed"; }
# No `podman image prune` here: the build stage's untagged layers are the cache of the next build.

# --- report -----------------------------------------------------------------------------------------
size=$(podman image inspect --format '{{.Size}}' "$TAG")
base_size=$(podman image inspect --format '{{.Size}}' "$DEBIAN_BASE")
awk -v tag="$TAG" -v size="$size" -v base="$DEBIAN_BASE" -v base_size="$base_size" -v s="$SECONDS" \
  'BEGIN { printf "image %s: %d bytes (%.1f MB); base %s %.1f MB; built in %d s\n", tag, size, size / 1e6, base, base_size / 1e6, s }'
echo "layers (newest first):"
podman history --format '  {{.Size | printf "%-10s"}} {{.CreatedBy}}' "$TAG" | grep -v '^  0 B ' | cut -c1-150
