#!/bin/sh
# Starts this pod's Redis node: asks the sentinels who is master (pod 0 when none answers),
# renders the shared template deploy/redis/redis.conf with that and the pod's identity, and
# execs redis-server. Rendered afresh at every start: the role Sentinel last gave a node may be
# stale by the time it comes back, the sentinels' answer is not.
set -eu
SCRIPT_NAME=redis-start
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

: "${ANNOUNCE_HOST:?ANNOUNCE_HOST (the DNS name of this pod) is required}"
: "${REDIS_PORT:=6379}"
: "${SENTINELS:?SENTINELS (host:port ...) is required}"
: "${FALLBACK_MASTER:?FALLBACK_MASTER (host:port of pod 0) is required}"
: "${MASTER_NAME:=mymaster}"
: "${TEMPLATE_DIR:=/opt/sessionlib/templates}"
: "${CONFIG_DIR:=/config}"
: "${DATA_DIR:=/data}"
: "${MIN_REPLICAS_TO_WRITE:=1}"
: "${MIN_REPLICAS_MAX_LAG:=10}"
: "${EMPTY_MASTER_WAIT_SECONDS:=60}"

# Rendered files hold passwords (masterauth): readable by this user only, from the start.
umask 077
acl=false
if acl_enabled; then acl=true; fi

has_data() {
    [ -n "$(ls -A "$DATA_DIR/appendonlydir" 2>/dev/null)" ] || [ -s "$DATA_DIR/dump.rdb" ]
}

# known_replicas: how many replicas the first sentinel that answers knows of the master.
known_replicas() {
    for _sentinel in $SENTINELS; do
        _count=$(redis_cli "$(host_of "$_sentinel")" "$(port_of "$_sentinel")" \
            SENTINEL master "$MASTER_NAME" 2>/dev/null |
            awk 'previous == "num-slaves" { print; exit } { previous = $0 }') || true
        if [ -n "$_count" ]; then
            printf '%s\n' "$_count"
            return 0
        fi
    done
    echo 0
}

master=$(current_master)

# The hard-learned Redis rule: a master that comes back empty (its volume lost, or no
# persistence) before the sentinels noticed it was gone is still master to them, and its
# replicas would copy the empty data set. So a node that is named master, has no data and
# has replicas that could take over waits for the failover instead of serving.
if is_me "$master" && ! has_data && [ "$(known_replicas)" -gt 0 ]; then
    log "named master but $DATA_DIR is empty: waiting up to ${EMPTY_MASTER_WAIT_SECONDS}s" \
        "for the sentinels to promote a replica, so nothing copies an empty data set"
    deadline=$(($(date +%s) + EMPTY_MASTER_WAIT_SECONDS))
    while is_me "$master" && [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 1
        master=$(sentinel_master)
        [ -n "$master" ] || master="$ANNOUNCE_HOST:$REDIS_PORT"
    done
    is_me "$master" && log "no failover happened; starting as master with an empty data set"
fi

if is_me "$master"; then
    log "starting as master"
    replication=""
else
    log "starting as replica of $master"
    replication="replicaof $(host_of "$master") $(port_of "$master")"
fi

mkdir -p "$CONFIG_DIR" "$DATA_DIR"
config="$CONFIG_DIR/redis.conf"
auth=""
if [ "$acl" = true ]; then
    # The ACL users (default off), and this node's login to its master as "replica".
    render_acl "$TEMPLATE_DIR/users.acl" "$CONFIG_DIR/users.acl"
    auth="aclfile $(config_quote "$CONFIG_DIR/users.acl")
masteruser replica
masterauth $(config_quote "$REPLICA_PASSWORD")"
fi

env \
    BIND="${BIND:-* -::*}" \
    PORT="$REDIS_PORT" \
    PROTECTED_MODE="${PROTECTED_MODE:-no}" \
    ANNOUNCE_IP="$ANNOUNCE_HOST" \
    ANNOUNCE_PORT="$REDIS_PORT" \
    DIR="$(config_quote "$DATA_DIR")" \
    MIN_REPLICAS_TO_WRITE="$MIN_REPLICAS_TO_WRITE" \
    MIN_REPLICAS_MAX_LAG="$MIN_REPLICAS_MAX_LAG" \
    REPLICATION_DIRECTIVES="$replication" \
    AUTH_DIRECTIVES="$auth" \
    sh "$(dirname "$0")/render-config.sh" "$TEMPLATE_DIR/redis.conf" >"$config.new"
append_server_extras "$config.new" "$REDIS_PORT" redis.extraConfig
# The config holds the password: readable by this user only.
chmod 600 "$config.new"
mv "$config.new" "$config"

exec "${REDIS_SERVER:-redis-server}" "$config"
