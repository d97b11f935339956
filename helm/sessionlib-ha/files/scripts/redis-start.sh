#!/bin/sh
# Starts this pod's Redis node: renders the shared template deploy/redis/redis.conf with the
# pod's identity and its role, and execs redis-server. Rendered afresh at every start: the role
# Sentinel last gave a node may be stale by the time it comes back.
#
# The role, from what the sentinels say at start:
# - they name another node: start as its replica (a rolling restart, a rescheduled pod);
# - they name this node and it has its data: start as master (it was only gone briefly);
# - they name this node and its data is gone: stay down, so they see it down and promote a
#   replica, then start as that replica. Never as master while a peer that answers holds data
#   (its replicas would copy the empty set);
# - no sentinel answers (a cold start, a first install): start PARKED (lib.sh): serving
#   nothing, copying nothing, copied by nobody. A background loop then follows a node already
#   running as master, or the master the Redis nodes elect from their data (elect_master), or
#   the one the sentinels name once they run. So a cold start needs no particular pod to
#   come back, and the node with the most data becomes master.
set -eu
SCRIPT_NAME=redis-start
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

: "${ANNOUNCE_HOST:?ANNOUNCE_HOST (the DNS name of this pod) is required}"
: "${REDIS_PORT:=6379}"
: "${SENTINELS:?SENTINELS (host:port ...) is required}"
: "${REDIS_NODES:?REDIS_NODES (host:port ...) is required}"
: "${MASTER_NAME:=mymaster}"
: "${TEMPLATE_DIR:=/opt/sessionlib/templates}"
: "${CONFIG_DIR:=/config}"
: "${DATA_DIR:=/data}"
: "${MIN_REPLICAS_TO_WRITE:=1}"
: "${MIN_REPLICAS_MAX_LAG:=10}"
: "${COLD_START_WAIT_SECONDS:=30}"

# Rendered files hold passwords (masterauth): readable by this user only, from the start.
umask 077
acl=false
if acl_enabled; then acl=true; fi

has_data() {
    [ -n "$(ls -A "$DATA_DIR/appendonlydir" 2>/dev/null)" ] || [ -s "$DATA_DIR/dump.rdb" ]
}

# peers_hold_data: whether another Redis node that answers holds any key.
peers_hold_data() {
    for _node in $REDIS_NODES; do
        is_me "$_node" && continue
        _keys=$(node_summary "$_node" | awk '{ print $4 }')
        [ "${_keys:-0}" -gt 0 ] && return 0
    done
    return 1
}

# settle: run in the background while redis-server starts parked; ends once this node follows
# a master or was elected one, or when redis-server is gone.
settle() {
    _since=$(date +%s)
    _said=0
    while kill -0 "$server_pid" 2>/dev/null; do
        sleep 1
        _master=""
        _named=$(sentinel_master)
        if [ -n "$_named" ]; then
            # The sentinels are in charge: wait for the master they name to run (their
            # failover of this node, when it is the one they name).
            if ! is_me "$_named" && is_live_master "$_named"; then _master=$_named; fi
        else
            _master=$(live_master)
            [ -n "$_master" ] || _master=$(elect_master "$_since")
        fi
        if [ -n "$_master" ]; then
            if is_me "$_master"; then
                log "this node is master"
                return 0
            fi
            if follow_master "$_master"; then
                log "following $_master"
                return 0
            fi
        fi
        if [ $(($(date +%s) - _said)) -ge 10 ]; then
            _said=$(date +%s)
            log "parked: waiting for a master (sentinels name: ${_named:-nothing})"
        fi
    done
}

master=$(sentinel_master)
if [ -z "$master" ]; then
    log "no sentinel answers: starting parked until a master runs or the nodes elect one"
    replication="replicaof $(host_of "$PARKED_MASTER") $(port_of "$PARKED_MASTER")"
    parked=true
elif ! is_me "$master"; then
    log "sentinels name $master: starting as its replica"
    replication="replicaof $(host_of "$master") $(port_of "$master")"
    parked=false
elif has_data; then
    log "sentinels name this node, and it has its data: starting as master"
    replication=""
    parked=false
else
    # A master that comes back empty before the sentinels noticed it was gone is still
    # master to them, and its replicas would copy the empty data set. Staying down lets them
    # see it down at once and promote a replica; this node then starts as its replica.
    log "sentinels name this node but $DATA_DIR is empty: waiting for them to promote a" \
        "replica"
    said=$(date +%s)
    while :; do
        master=$(sentinel_master)
        if [ -n "$master" ] && ! is_me "$master" && is_live_master "$master"; then
            log "sentinels promoted $master: starting as its replica"
            replication="replicaof $(host_of "$master") $(port_of "$master")"
            break
        fi
        if ! peers_hold_data; then
            log "no Redis node that answers holds data either: starting as master"
            replication=""
            break
        fi
        if [ $(($(date +%s) - said)) -ge 10 ]; then
            said=$(date +%s)
            log "still waiting: sentinels name ${master:-nothing}, and a peer holds data"
        fi
        sleep 1
    done
    parked=false
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

# The settle loop outlives this shell: exec keeps the PID, so $$ is redis-server's from here.
server_pid=$$
if [ "$parked" = true ]; then settle & fi
exec "${REDIS_SERVER:-redis-server}" "$config"
