#!/bin/sh
# Runs beside this pod's Sentinel (started by sentinel-start.sh) and makes it forget sentinels
# that are gone for good. Sentinel never forgets a peer by itself: one that disappeared still
# counts as a voter, so after a scale-down (or the upgrade from random ids) the remaining
# sentinels would need votes that nobody can give, and a failover could become impossible.
#
# A known sentinel is stale when its id belongs to no address in SENTINELS (ids derive from
# the address, sentinel_id in lib.sh), a known sentinel or replica when it has been down for
# STALE_SENTINEL_SECONDS, or when it is down yet answers at its name (it moved to a new IP,
# see stale_peers). Then this sentinel runs SENTINEL RESET, which drops every peer and replica it knows and
# relearns the live ones within seconds (hello messages, INFO). Pods reset one after another,
# RESET_STAGGER_SECONDS apart in the order of SENTINELS, as the Redis docs advise, so the
# sentinels never all forget at once.
set -eu
SCRIPT_NAME="sentinel-janitor"
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

: "${ANNOUNCE_HOST:?ANNOUNCE_HOST (the DNS name of this pod) is required}"
: "${SENTINEL_PORT:=26379}"
: "${SENTINELS:?SENTINELS (host:port ...) is required}"
: "${MASTER_NAME:=mymaster}"
: "${STALE_SENTINEL_SECONDS:=300}"
: "${RESET_STAGGER_SECONDS:=30}"
: "${JANITOR_INTERVAL_SECONDS:=10}"
: "${MOVED_AFTER_SECONDS:=10}"
[ $# -eq 1 ] || die "usage: $0 SENTINEL_PID (the sentinel process to look after)"
sentinel_pid=$1

me="$ANNOUNCE_HOST:$SENTINEL_PORT"
expected=""
ordinal=0
position=0
for sentinel in $SENTINELS; do
    expected="$expected $(sentinel_id "$sentinel")"
    [ "$sentinel" = "$me" ] && ordinal=$position
    position=$((position + 1))
done

# known_peers KIND: "<id> <name> <ms down>" for each peer of KIND (sentinels or replicas) this
# sentinel knows, one a line; the name is host:port as announced, the time 0 when it is up.
known_peers() {
    local_sentinel SENTINEL "$1" "$MASTER_NAME" 2>/dev/null | awk '
        function emit() { if (name != "") print (id == "" ? "-" : id), name, down + 0 }
        key == "" { key = $0; next }
        {
            if (key == "name") { emit(); name = $0; id = ""; down = 0 }
            else if (key == "runid") id = $0
            else if (key == "s-down-time") down = $0
            key = ""
        }
        END { emit() }'
}

is_expected() {
    case " $expected " in
        *" $1 "*) return 0 ;;
    esac
    return 1
}

# answers NAME: whether a Redis or Sentinel answers PING at host:port NAME, resolved afresh.
answers() {
    [ "$(redis_cli "$(host_of "$1")" "$(port_of "$1")" PING 2>/dev/null)" = PONG ]
}

# stale_peers: "<name> (<why>)" for each peer to forget, one a line. Besides the dead, a peer
# that has been down for MOVED_AFTER_SECONDS yet answers at its name has moved: Sentinel
# resolves a name once, when it learns the peer, and keeps dialling the old IP of a pod that
# was rescheduled (recreated pods get new IPs behind the same DNS name).
stale_peers() {
    for kind in sentinels replicas; do
        known_peers "$kind" | while read -r id name down_ms; do
            if [ "$kind" = sentinels ] && ! is_expected "$id"; then
                echo "$name (an id of no pod)"
            elif [ "$down_ms" -gt $((STALE_SENTINEL_SECONDS * 1000)) ]; then
                echo "$name (down for $((down_ms / 1000))s)"
            elif [ "$down_ms" -gt $((MOVED_AFTER_SECONDS * 1000)) ] && answers "$name"; then
                echo "$name (moved: answers at its name, Sentinel dials an old IP)"
            fi
        done
    done
}

while kill -0 "$sentinel_pid" 2>/dev/null; do
    sleep "$JANITOR_INTERVAL_SECONDS"
    stale=$(stale_peers) || stale=""
    [ -n "$stale" ] || continue
    wait_seconds=$((ordinal * RESET_STAGGER_SECONDS))
    log "stale: $(printf '%s' "$stale" | tr '\n' ';') resetting in ${wait_seconds}s (pod $ordinal)"
    sleep "$wait_seconds"
    stale=$(stale_peers) || stale=""
    [ -n "$stale" ] || continue
    if local_sentinel SENTINEL RESET "$MASTER_NAME" >/dev/null; then
        log "SENTINEL RESET: forgot $(printf '%s' "$stale" | tr '\n' ';')"
    fi
    # Let the peers and replicas be relearnt before judging again.
    sleep "$RESET_STAGGER_SECONDS"
done
