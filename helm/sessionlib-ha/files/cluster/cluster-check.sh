#!/bin/sh
# Says whether the Redis Cluster is whole, for a person in a pod (`sh cluster-check.sh`, see
# NOTES.txt) and for the tests: this node's CLUSTER INFO summary, then `redis-cli --cluster
# check` (every slot served, every node agreeing on the slot map, no slot half-moved), with
# the pod's auth and TLS. Exits non-zero when either finds a problem.
set -eu
SCRIPT_NAME=cluster-check
# shellcheck source=../scripts/lib.sh
. "$(dirname "$0")/lib.sh"

: "${REDIS_PORT:=6379}"

host=${LOCAL_HOST:-127.0.0.1}
local_redis CLUSTER INFO | tr -d '\r' |
    grep -E '^cluster_(state|slots_assigned|slots_ok|slots_pfail|slots_fail|known_nodes|size):'
REDIS_CLI_TIMEOUT=60 redis_cli "$host" "$REDIS_PORT" --cluster check "$host:$REDIS_PORT"
