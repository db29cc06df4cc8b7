#!/usr/bin/env bash
# Installs the servers the benchmarks compare Tributary with, from Debian's packages,
# idempotently: a peer already installed is left as it is. Never install peers by hand,
# so every machine runs the benchmarks against the same thing.
#
# Only Redis so far (redis-server, for Streams). The bench harness starts each peer itself
# on 127.0.0.1 with its own temp dir and stops it by PID; the distribution's service is
# not used, so it is stopped and disabled where systemd runs it.
set -euo pipefail

sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages) for the benchmarks"
  # policy-rc.d answer 101: the package must not start its own service on install.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_ tee /usr/sbin/policy-rc.d >/dev/null
    $sudo_ chmod +x /usr/sbin/policy-rc.d
    trap '$sudo_ rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo_ apt-get update -qq && $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi

if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  $sudo_ systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

echo "peers: $(redis-server --version | head -n1)"
