#!/bin/sh
# preStop hook of the Sentinel container: stay up while this pod's Redis is still master, so
# the failover that the Redis container's hook starts runs with every sentinel present (one
# fewer could cost the majority when another pod is down too). Returns at once otherwise.
set -eu
SCRIPT_NAME=sentinel-prestop
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

: "${REDIS_PORT:=6379}"
: "${PRESTOP_TIMEOUT_SECONDS:=30}"

deadline=$(($(date +%s) + PRESTOP_TIMEOUT_SECONDS))
while [ "$(date +%s)" -lt "$deadline" ]; do
    role=$(local_redis ROLE 2>/dev/null | head -n 1) || role=""
    [ "$role" = master ] || exit 0
    sleep 0.5
done
log "local Redis still master after ${PRESTOP_TIMEOUT_SECONDS}s; stopping anyway"
