#!/usr/bin/env bash
# Installs the Debian packages the kit runs on when they are missing.
# As root on Debian/Ubuntu it uses apt-get; elsewhere it says what to install and fails.
set -euo pipefail

# binary -> Debian package that ships it
declare -A wanted=(
  [redis-server]=redis-server
  [redis-sentinel]=redis-sentinel
  [redis-cli]=redis-tools
)
# Optional extras: installed when possible, never fatal (`--with-optional`).
declare -A optional=(
  [promtool]=prometheus
  [prometheus-redis-exporter]=prometheus-redis-exporter
  [ip]=iproute2
  [docker-compose]=docker-compose
  # The master endpoint of `make up-local HAPROXY=1` (Debian installs it under /usr/sbin).
  [haproxy]=haproxy
)

# `--with-bench` adds what `make bench` needs: wrk, the HTTP load generator (required then).
# `--with-docker` adds what `make test-compose` needs: Debian's engine and debootstrap.
with_optional=false
for arg in "$@"; do
  case "$arg" in
    --with-optional) with_optional=true ;;
    --with-bench) wanted[wrk]=wrk ;;
    --with-docker) wanted[dockerd]=docker.io; wanted[debootstrap]=debootstrap ;;
    *) echo "error: unknown option $arg (known: --with-optional --with-bench --with-docker)" >&2
       exit 2 ;;
  esac
done

missing=()
for bin in "${!wanted[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${wanted[$bin]}")
done
missing_optional=()
if $with_optional; then
  for bin in "${!optional[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || missing_optional+=("${optional[$bin]}")
  done
fi

if [[ ${#missing[@]} -eq 0 && ${#missing_optional[@]} -eq 0 ]]; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]} ${missing_optional[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ ${#missing_optional[@]} -gt 0 ]]; then
    apt-get install -y -qq --no-install-recommends "${missing_optional[@]}" >/dev/null \
      || echo "note: optional packages not installed: ${missing_optional[*]}"
  fi
  # Debian's packages start their own instances on 6379/26379 where an init system
  # runs; the kit starts its own processes, so those are left alone.
  exit 0
fi

if [[ ${#missing[@]} -gt 0 ]]; then
  cat >&2 <<MSG
error: missing required programs (Debian packages: ${missing[*]}).
Install them, then run make again:
  Debian/Ubuntu:  sudo apt-get install redis-server redis-sentinel redis-tools
  Fedora:         sudo dnf install redis        (ships redis-sentinel)
  macOS:          brew install redis            (ships redis-sentinel)
MSG
  exit 1
fi
