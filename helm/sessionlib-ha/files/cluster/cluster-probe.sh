#!/bin/sh
# The readiness probe of a Redis Cluster pod (liveness and startup use probe.sh redis-alive):
#   cluster-ready   this node sees the cluster ok (every slot served, a majority of masters
#                   reachable), and it is a master, or a replica whose link is up and whose
#                   sync is done: so a rolling update moves on only once the node is back in
#                   the cluster with its data.
set -eu
SCRIPT_NAME=cluster-probe
# shellcheck source=../scripts/lib.sh
. "$(dirname "$0")/lib.sh"

: "${REDIS_PORT:=6379}"

case ${1:-} in
    cluster-ready)
        state=$(local_redis CLUSTER INFO 2>&1 | tr -d '\r' | sed -n 's/^cluster_state://p') ||
            true
        if [ "$state" != ok ]; then
            reply="cluster_state is ${state:-unknown}"
        else
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
        fi
        ;;
    *)
        echo "usage: $0 cluster-ready" >&2
        exit 2
        ;;
esac
echo "${1} failed: ${reply:-no answer}" >&2
exit 1
