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

[ -z "${REDIS_PASSWORD:-}" ] || check_password REDIS_PASSWORD "$REDIS_PASSWORD"
[ -z "${SENTINEL_PASSWORD:-}" ] || check_password SENTINEL_PASSWORD "$SENTINEL_PASSWORD"

master=$(current_master)
wait_resolvable "$(host_of "$master")" "$RESOLVE_WAIT_SECONDS"

auth=""
if [ -n "${REDIS_PASSWORD:-}" ]; then
    auth="sentinel auth-pass $MASTER_NAME $(config_quote "$REDIS_PASSWORD")"
fi
if [ -n "${SENTINEL_PASSWORD:-}" ]; then
    # Sentinel also uses its own requirepass when it talks to the other sentinels, so every
    # sentinel of the set must have the same one.
    auth="$auth
requirepass $(config_quote "$SENTINEL_PASSWORD")"
fi

mkdir -p "$CONFIG_DIR"
config="$CONFIG_DIR/sentinel.conf"
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
