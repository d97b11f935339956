#!/bin/sh
# Starts this pod's Sentinel: asks the other sentinels who is master (pod 0 when none
# answers), renders the shared template deploy/redis/sentinel.conf with that, and execs
# redis-sentinel. The other sentinels and the replicas are learnt again within seconds (hello
# messages, INFO), so nothing stale from an earlier run is carried over, except this
# sentinel's own id: keeping it spares the others a "-dup-sentinel" for the same address.
set -eu
SCRIPT_NAME=sentinel-start
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

: "${ANNOUNCE_HOST:?ANNOUNCE_HOST (the DNS name of this pod) is required}"
: "${SENTINEL_PORT:=26379}"
: "${SENTINELS:?SENTINELS (host:port ...) is required}"
: "${FALLBACK_MASTER:?FALLBACK_MASTER (host:port of pod 0) is required}"
: "${MASTER_NAME:=mymaster}"
: "${QUORUM:?QUORUM is required}"
: "${DOWN_AFTER_MS:=5000}"
: "${FAILOVER_TIMEOUT_MS:=30000}"
: "${TEMPLATE_DIR:=/opt/sessionlib/templates}"
: "${CONFIG_DIR:=/sentinel}"
: "${RESOLVE_WAIT_SECONDS:=120}"

# The rendered config holds passwords: readable by this user only, from the start.
umask 077
acl=false
if acl_enabled; then acl=true; fi

master=$(current_master)
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
myid=""
[ -f "$config" ] && myid=$(sed -n 's/^sentinel myid \([0-9a-f]\{40\}\)$/\1/p' "$config")

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
[ -z "$myid" ] || printf 'sentinel myid %s\n' "$myid" >>"$config.new"
chmod 600 "$config.new"
mv "$config.new" "$config"

log "monitoring $MASTER_NAME at $master with quorum $QUORUM"
exec "${REDIS_SENTINEL:-redis-sentinel}" "$config"
