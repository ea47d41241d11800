#!/usr/bin/env bash
# Podman's Docker-compatible API for the container suites (testcontainers), as root.
#
#   eval "$(e2e/containers/podman-service.sh start DIR)"   # prints the exports to eval
#   e2e/containers/podman-service.sh stop DIR              # also on failure: see .ci/run's trap
#
# start: writes DIR/containers.conf (runc: crun fails on this host's hybrid cgroups; rlimits within
# the hard limits, since Podman's defaults need CAP_SYS_RESOURCE), starts `podman system service`
# on DIR/podman.sock, keeps its PID in DIR/podman.pid, waits until the API answers, and prints
# CONTAINERS_CONF, DOCKER_HOST, TESTCONTAINERS_RYUK_DISABLED (no Ryuk image here; stop cleans up
# instead) and TESTCONTAINERS_HOST_OVERRIDE (this machine has /.dockerenv: without the override
# testcontainers dials the bridge gateway instead of loopback).
# stop: removes every container and network labelled org.testcontainers=true (testcontainers labels
# what it creates; the suites label their own networks so too), stops the service by its PID.
set -euo pipefail

LABEL=org.testcontainers=true
NETWORK_LABEL=$LABEL
START_TIMEOUT_S=30

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

case "$cmd" in
  start)
    mkdir -p "$dir"
    nofile=$(ulimit -Hn)
    [ "$nofile" = unlimited ] && nofile=1048576
    cat >"$dir/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]

[engine]
runtime = "runc"

[network]
network_backend = "netavark"
EOF
    export CONTAINERS_CONF="$dir/containers.conf"
    sock="$dir/podman.sock"
    podman system service --time=0 "unix://$sock" >"$dir/podman-service.log" 2>&1 &
    echo $! >"$dir/podman.pid"
    for _ in $(seq 1 $((START_TIMEOUT_S * 10))); do
      if [ -S "$sock" ] && podman --url "unix://$sock" version >/dev/null 2>&1; then
        printf 'export CONTAINERS_CONF=%q\n' "$dir/containers.conf"
        printf 'export DOCKER_HOST=%q\n' "unix://$sock"
        echo 'export TESTCONTAINERS_RYUK_DISABLED=true'
        echo 'export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1'
        exit 0
      fi
      kill -0 "$(cat "$dir/podman.pid")" 2>/dev/null || break
      sleep 0.1
    done
    echo "podman system service did not answer on $sock:" >&2
    tail -20 "$dir/podman-service.log" >&2 || true
    exit 1
    ;;
  stop)
    export CONTAINERS_CONF="$dir/containers.conf"
    if command -v podman >/dev/null; then
      ids=$(podman ps -aq --filter "label=$LABEL" 2>/dev/null || true)
      # shellcheck disable=SC2086
      [ -n "$ids" ] && podman rm -f -t 0 $ids >/dev/null 2>&1 || true
      nets=$(podman network ls -q --filter "label=$NETWORK_LABEL" 2>/dev/null || true)
      # shellcheck disable=SC2086
      [ -n "$nets" ] && podman network rm -f $nets >/dev/null 2>&1 || true
    fi
    if [ -f "$dir/podman.pid" ]; then
      pid=$(cat "$dir/podman.pid")
      if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
      fi
      rm -f "$dir/podman.pid"
    fi
    ;;
  *) usage ;;
esac
