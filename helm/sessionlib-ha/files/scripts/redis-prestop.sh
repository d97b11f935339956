#!/bin/sh
# preStop hook of the Redis container: when this node is master, hand the role to a replica
# before the pod stops, so clients see a planned switch of about a second instead of
# down-after-milliseconds of silence plus an unplanned failover.
#
# 1. Not master, or no replica connected: nothing to hand over; exit 0.
# 2. Pause writes here (CLIENT PAUSE WRITE), so the replica that is promoted has every write
#    this master acknowledged; reads go on.
# 3. SENTINEL FAILOVER on the first sentinel that accepts it, other pods' sentinels first
#    (this pod's own is being stopped too).
# 4. Wait until the sentinels name another master, then make this node its replica at once
#    (Sentinel would only do that about 10 s later) and lift the pause: paused writers get
#    READONLY, which sessionlib retries on the new master.
# Exits non-zero, which Kubernetes reports as a FailedPreStopHook event, if this node is
# still master at the deadline.
set -eu
SCRIPT_NAME=redis-prestop
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

: "${ANNOUNCE_HOST:?ANNOUNCE_HOST (the DNS name of this pod) is required}"
: "${REDIS_PORT:=6379}"
: "${SENTINELS:?SENTINELS (host:port ...) is required}"
: "${MASTER_NAME:=mymaster}"
: "${PRESTOP_TIMEOUT_SECONDS:=30}"

role=$(local_redis ROLE 2>/dev/null | head -n 1) || role=""
if [ "$role" != master ]; then
    log "this node is ${role:-not answering}, not master: nothing to hand over"
    exit 0
fi
replicas=$(local_redis INFO replication | tr -d '\r' | sed -n 's/^connected_slaves://p')
if [ "${replicas:-0}" -eq 0 ]; then
    log "master without a connected replica: no one to hand over to"
    exit 0
fi

deadline=$(($(date +%s) + PRESTOP_TIMEOUT_SECONDS))
# Every step from here on is best effort: the pod stops at the end of the grace period
# whatever happens, and an aborted hook must not leave writes paused until then.
local_redis CLIENT PAUSE $((PRESTOP_TIMEOUT_SECONDS * 1000)) WRITE >/dev/null ||
    log "could not pause writes; handing over without the pause"

# Other pods' sentinels first, this pod's own last.
ordered=""
for sentinel in $SENTINELS; do
    if [ "$(host_of "$sentinel")" = "$ANNOUNCE_HOST" ]; then
        own="${own:-} $sentinel"
    else
        ordered="$ordered $sentinel"
    fi
done
asked=""
for sentinel in $ordered ${own:-}; do
    reply=$(redis_cli "$(host_of "$sentinel")" "$(port_of "$sentinel")" \
        SENTINEL FAILOVER "$MASTER_NAME" 2>&1) || true
    case $reply in
        OK*)
            log "failover of $MASTER_NAME started by the sentinel at $sentinel"
            asked=$sentinel
            break
            ;;
        INPROG*)
            log "a failover of $MASTER_NAME is already in progress ($sentinel)"
            asked=$sentinel
            break
            ;;
        *) log "sentinel at $sentinel did not start a failover: ${reply:-no answer}" ;;
    esac
done

new_master=""
if [ -n "$asked" ]; then
    while [ "$(date +%s)" -lt "$deadline" ]; do
        named=$(sentinel_master)
        if [ -n "$named" ] && ! is_me "$named"; then
            new_master=$named
            break
        fi
        sleep 0.2
    done
fi

if [ -n "$new_master" ]; then
    if local_redis REPLICAOF "$(host_of "$new_master")" "$(port_of "$new_master")" >/dev/null; then
        log "handed over to $new_master; this node is now its replica"
    else
        log "handed over to $new_master, but could not make this node its replica"
    fi
fi
local_redis CLIENT UNPAUSE >/dev/null || true

role=$(local_redis ROLE 2>/dev/null | head -n 1) || role=""
if [ "$role" = master ]; then
    log "still master after ${PRESTOP_TIMEOUT_SECONDS}s: stopping without a handover"
    exit 1
fi
exit 0
