#!/bin/sh
# preStop hook of a Redis Cluster pod: when this node is a master with a linked replica, that
# replica takes over first (CLUSTER FAILOVER, the manual failover: the master stops clients,
# the replica catches up with its offset, then takes the slots). Clients see a redirect to the
# new master instead of cluster-node-timeout of silence plus an election. Exits non-zero,
# which Kubernetes reports as a FailedPreStopHook event, if this node is still master at the
# deadline.
set -eu
SCRIPT_NAME=cluster-prestop
# shellcheck source=../scripts/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=cluster-lib.sh
. "$(dirname "$0")/cluster-lib.sh"

: "${REDIS_PORT:=6379}"
: "${PRESTOP_TIMEOUT_SECONDS:=30}"

view=$(cluster_view)
mine=$(printf '%s\n' "$view" | awk '$6 ~ /myself/ { print $1, $6, $9 }')
case $mine in
    *master*) ;;
    *)
        log "this node is ${mine:+not a master}${mine:-not answering}: nothing to hand over"
        exit 0
        ;;
esac
# shellcheck disable=SC2086 # split into its fields on purpose
set -- $mine
if [ "$3" -eq 0 ]; then
    log "master without slots: nothing to hand over"
    exit 0
fi
replica=$(printf '%s\n' "$view" | awk -v me="$1" '
    $7 == me && $6 !~ /fail|handshake|noaddr/ && $8 == "connected" { print $2 ":" $3; exit }')
if [ -z "$replica" ]; then
    log "master without a connected replica: no one to hand over to"
    exit 0
fi

deadline=$(($(date +%s) + PRESTOP_TIMEOUT_SECONDS))
if reply=$(redis_cli "$(host_of "$replica")" "$(port_of "$replica")" CLUSTER FAILOVER 2>&1); then
    log "asked the replica at $replica to take over: $reply"
fi
while [ "$(date +%s)" -lt "$deadline" ]; do
    role=$(local_redis ROLE 2>/dev/null | head -n 1) || role=""
    if [ "$role" = slave ]; then
        log "handed over to $replica; this node is now its replica"
        exit 0
    fi
    sleep 0.2
done
log "still master after ${PRESTOP_TIMEOUT_SECONDS}s: stopping without a handover"
exit 1
