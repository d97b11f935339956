#!/bin/sh
# Starts this pod's Redis Cluster node (redis.mode cluster): renders the shared template
# deploy/redis/redis.conf with the pod's identity, without a replicaof line (the cluster
# assigns roles), plus the cluster lines (cluster-lib.sh), and execs redis-server. nodes.conf
# lives beside the data, on the pod's volume, so a restarted pod is the same node to the others.
#
# Beside the server runs the keeper (cluster-lib.sh, keep_cluster), for as long as it does:
# - pod 0 creates the cluster once, when every node answers and none is in a cluster yet;
# - a node that knows no peer (a new shard's pod, a pod that lost its volume) joins;
# - every node meets again, by the IP its pod name resolves to now, each peer it holds at
#   another IP: so a cluster whose pods all came back on new IPs re-forms;
# - a master without slots replicates its shard (the first pod of the shard, or the one that
#   took over while it was gone);
# - pod 0 moves slots onto a new shard once its replicas are linked;
# - every node forgets failed nodes that are no pod any more, or whose pod name a new node
#   answers for (never one that still serves slots).
set -eu
SCRIPT_NAME=cluster-start
# shellcheck source=../scripts/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=cluster-lib.sh
. "$(dirname "$0")/cluster-lib.sh"

: "${ANNOUNCE_HOST:?ANNOUNCE_HOST (the DNS name of this pod) is required}"
: "${REDIS_PORT:=6379}"
: "${REDIS_NODES:?REDIS_NODES (host:port ...) is required}"
: "${CLUSTER_REPLICAS:?CLUSTER_REPLICAS (replicas per shard) is required}"
: "${CLUSTER_NODE_TIMEOUT_MS:=5000}"
: "${TEMPLATE_DIR:=/opt/sessionlib/templates}"
: "${CONFIG_DIR:=/config}"
: "${DATA_DIR:=/data}"
: "${MIN_REPLICAS_TO_WRITE:=1}"
: "${MIN_REPLICAS_MAX_LAG:=10}"

[ -n "$(ordinal_of "$ANNOUNCE_HOST:$REDIS_PORT")" ] ||
    die "$ANNOUNCE_HOST:$REDIS_PORT is not one of REDIS_NODES"

# Rendered files hold passwords (masterauth): readable by this user only, from the start.
umask 077
mkdir -p "$CONFIG_DIR" "$DATA_DIR"
config="$CONFIG_DIR/redis.conf"
auth=""
if acl_enabled; then
    # The ACL users (default off), and this node's login to its master as "replica": a
    # cluster replica syncs like any other.
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
    REPLICATION_DIRECTIVES="" \
    AUTH_DIRECTIVES="$auth" \
    sh "$(dirname "$0")/render-config.sh" "$TEMPLATE_DIR/redis.conf" >"$config.new"
cluster_directives >>"$config.new"
append_server_extras "$config.new" "$REDIS_PORT" redis.extraConfig
chmod 600 "$config.new"
mv "$config.new" "$config"

if [ -s "$DATA_DIR/nodes.conf" ]; then
    log "starting with the kept nodes.conf: rejoining the cluster"
else
    log "starting without nodes.conf: a new node until it joins or pod 0 creates the cluster"
fi
# A slot lock left by this container's previous run (the redis-config emptyDir outlives a
# container restart) belongs to nobody now; its pid (1, in a container) would look alive.
release_slot_lock
# The keeper outlives this shell: exec keeps the PID, so $$ is redis-server's from here.
keep_cluster $$ &
exec "${REDIS_SERVER:-redis-server}" "$config"
