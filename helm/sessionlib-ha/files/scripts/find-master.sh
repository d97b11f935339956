#!/bin/sh
# Prints host:port of the current master: what most of the sentinels that answer name, else a
# Redis node that runs as master; nothing (exit 1) when there is neither. The start scripts
# decide with the same functions; this is the answer on its own, for a person in a pod
# (`sh find-master.sh`) and for the tests.
set -eu
SCRIPT_NAME=find-master
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

: "${SENTINELS:?SENTINELS (host:port ...) is required}"
: "${REDIS_NODES:?REDIS_NODES (host:port ...) is required}"
: "${MASTER_NAME:=mymaster}"

master=$(sentinel_master)
if [ -n "$master" ]; then
    log "sentinels name $master as master of $MASTER_NAME"
else
    master=$(live_master)
    [ -n "$master" ] || die "no sentinel answers and no Redis node runs as master"
    log "no sentinel answered; $master runs as master"
fi
printf '%s\n' "$master"
