#!/bin/sh
# Starts this pod's Sentinel: finds the master, renders the shared template
# deploy/redis/sentinel.conf with it, and execs redis-sentinel. The other sentinels and the
# replicas are learnt again within seconds (hello messages, INFO), so nothing from an earlier
# run is carried over.
#
# The master: what the other sentinels name, once it runs as master; else a Redis node that
# runs as master; else, while no sentinel answers, the one the Redis nodes elect from their
# data (lib.sh, elect_master); else, after COLD_START_WAIT_SECONDS, what the sentinels name
# even though it is down (they are failing it over). Never a fixed pod: a pod that never comes
# back (its name no longer resolves) must not keep the sentinels from starting.
#
# Its id is derived from the pod's stable name, so a pod recreated with an empty /sentinel is
# the same voter to the others, not one more (a stale id would still count towards the
# majority a failover needs). sentinel-janitor.sh runs beside it and forgets sentinels that are
# gone for good (scale-down).
set -eu
SCRIPT_NAME=sentinel-start
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

: "${ANNOUNCE_HOST:?ANNOUNCE_HOST (the DNS name of this pod) is required}"
: "${SENTINEL_PORT:=26379}"
: "${SENTINELS:?SENTINELS (host:port ...) is required}"
: "${REDIS_NODES:?REDIS_NODES (host:port ...) is required}"
: "${MASTER_NAME:=mymaster}"
: "${QUORUM:?QUORUM is required}"
: "${DOWN_AFTER_MS:=5000}"
: "${FAILOVER_TIMEOUT_MS:=30000}"
: "${TEMPLATE_DIR:=/opt/sessionlib/templates}"
: "${CONFIG_DIR:=/sentinel}"
: "${RESOLVE_WAIT_SECONDS:=120}"
: "${COLD_START_WAIT_SECONDS:=30}"

# The rendered config holds passwords: readable by this user only, from the start.
umask 077
acl=false
if acl_enabled; then acl=true; fi

find_master() {
    _since=$(date +%s)
    _said=0
    while :; do
        _named=$(sentinel_master)
        if [ -n "$_named" ] && is_live_master "$_named"; then
            log "sentinels name $_named as master of $MASTER_NAME"
            printf '%s\n' "$_named"
            return 0
        fi
        _master=$(live_master)
        if [ -z "$_master" ] && [ -z "$_named" ]; then _master=$(elect_master "$_since"); fi
        if [ -n "$_master" ]; then
            log "$_master runs as master of $MASTER_NAME"
            printf '%s\n' "$_master"
            return 0
        fi
        if [ -n "$_named" ] && [ $(($(date +%s) - _since)) -ge "$COLD_START_WAIT_SECONDS" ]; then
            log "sentinels name $_named, which is down: monitoring it while they fail it over"
            printf '%s\n' "$_named"
            return 0
        fi
        if [ $(($(date +%s) - _said)) -ge 10 ]; then
            _said=$(date +%s)
            log "waiting for a master (sentinels name: ${_named:-nothing})"
        fi
        sleep 1
    done
}

master=$(find_master)
wait_resolvable "$(host_of "$master")" "$RESOLVE_WAIT_SECONDS"

mkdir -p "$CONFIG_DIR"
config="$CONFIG_DIR/sentinel.conf"
auth=""
if [ "$acl" = true ]; then
    # The ACL users of a sentinel (default off); this sentinel logs in to the Redis nodes
    # (auth-user) and to the other sentinels (sentinel-user) as "sentinel".
    render_acl "$TEMPLATE_DIR/sentinel-users.acl" "$CONFIG_DIR/users.acl"
    auth="aclfile $(config_quote "$CONFIG_DIR/users.acl")
sentinel auth-user $MASTER_NAME sentinel
sentinel auth-pass $MASTER_NAME $(config_quote "$SENTINEL_PASSWORD")
sentinel sentinel-user sentinel
sentinel sentinel-pass $(config_quote "$SENTINEL_PASSWORD")"
fi

env \
    BIND="${BIND:-* -::*}" \
    PORT="$SENTINEL_PORT" \
    PROTECTED_MODE="${PROTECTED_MODE:-no}" \
    ANNOUNCE_IP="$ANNOUNCE_HOST" \
    ANNOUNCE_PORT="$SENTINEL_PORT" \
    RESOLVE_HOSTNAMES="${RESOLVE_HOSTNAMES:-yes}" \
    ANNOUNCE_HOSTNAMES="${ANNOUNCE_HOSTNAMES:-yes}" \
    DIR="$(config_quote "$CONFIG_DIR")" \
    MASTER_NAME="$MASTER_NAME" \
    MASTER_HOST="$(host_of "$master")" \
    MASTER_PORT="$(port_of "$master")" \
    QUORUM="$QUORUM" \
    DOWN_AFTER_MS="$DOWN_AFTER_MS" \
    FAILOVER_TIMEOUT_MS="$FAILOVER_TIMEOUT_MS" \
    AUTH_DIRECTIVES="$auth" \
    sh "$(dirname "$0")/render-config.sh" "$TEMPLATE_DIR/sentinel.conf" >"$config.new"
append_server_extras "$config.new" "$SENTINEL_PORT" sentinel.extraConfig
printf 'sentinel myid %s\n' "$(sentinel_id "$ANNOUNCE_HOST:$SENTINEL_PORT")" >>"$config.new"
chmod 600 "$config.new"
mv "$config.new" "$config"

log "monitoring $MASTER_NAME at $master with quorum $QUORUM"
# The janitor outlives this shell: exec keeps the PID, which it watches.
sh "$(dirname "$0")/sentinel-janitor.sh" "$$" &
exec "${REDIS_SENTINEL:-redis-sentinel}" "$config"
