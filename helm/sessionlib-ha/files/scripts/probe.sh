#!/bin/sh
# The probes of the Redis pod, one mode each, with the pod's auth and TLS:
#   redis-alive      Redis answers at all (LOADING and MASTERDOWN count: busy, not dead)
#   redis-ready      Redis is master, or a replica whose link is up and whose sync is done,
#                    so a rolling update moves on only once the data has arrived
#   sentinel-alive   Sentinel answers PING
#   sentinel-ready   SENTINEL CKQUORUM: enough sentinels are reachable to fail over
set -eu
SCRIPT_NAME=probe
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

: "${REDIS_PORT:=6379}"
: "${SENTINEL_PORT:=26379}"
: "${MASTER_NAME:=mymaster}"

case ${1:-} in
    redis-alive)
        reply=$(local_redis PING 2>&1) || true
        case $reply in
            PONG* | LOADING* | MASTERDOWN*) exit 0 ;;
        esac
        ;;
    redis-ready)
        info=$(local_redis INFO replication 2>&1 | tr -d '\r') || true
        case $info in
            *role:master*) exit 0 ;;
            *role:slave*master_link_status:up*)
                case $info in
                    *master_sync_in_progress:0*) exit 0 ;;
                esac
                reply="replica still syncing"
                ;;
            *role:slave*) reply="replica link to master is down" ;;
            *) reply=$info ;;
        esac
        ;;
    sentinel-alive)
        reply=$(local_sentinel PING 2>&1) || true
        [ "$reply" != PONG ] || exit 0
        ;;
    sentinel-ready)
        reply=$(local_sentinel SENTINEL CKQUORUM "$MASTER_NAME" 2>&1) || true
        case $reply in
            OK*) exit 0 ;;
        esac
        ;;
    *)
        echo "usage: $0 redis-alive|redis-ready|sentinel-alive|sentinel-ready" >&2
        exit 2
        ;;
esac
echo "${1} failed: ${reply:-no answer}" >&2
exit 1
