#!/bin/sh
# Prepares a scale-in to SHARDS shards: moves every slot off the masters in the pods that
# will go (pod ordinals from SHARDS * (1 + replicas per shard) on), onto the shards that stay
# (`redis-cli --cluster rebalance` with weight 0 for them), then checks that the scale-in loses
# nothing. A master left without slots becomes a replica of the one that took its last slot
# (Redis 7.0 replica migration), so the keeper never refills it. Run it in pod 0, beside the
# keeper that moves slots after a scale-out, so the two never move slots at once (a lock):
#   kubectl exec <release>-sessionlib-ha-redis-0 -c redis -- \
#       sh /opt/sessionlib/scripts/cluster-drain.sh SHARDS
# Then `helm upgrade` with redis.cluster.shards=SHARDS and redis.cluster.allowScaleIn=true.
# Exits non-zero, saying why, while a pod that goes still serves slots, or a pod that stays
# still replicates one that goes (it would be left without a master to follow).
set -eu
SCRIPT_NAME=cluster-drain
# shellcheck source=../scripts/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=cluster-lib.sh
. "$(dirname "$0")/cluster-lib.sh"

: "${ANNOUNCE_HOST:?ANNOUNCE_HOST (the DNS name of this pod) is required}"
: "${REDIS_PORT:=6379}"
: "${REDIS_NODES:?REDIS_NODES (host:port ...) is required}"
: "${CLUSTER_REPLICAS:?CLUSTER_REPLICAS (replicas per shard) is required}"

shards=${1:?usage: $0 SHARDS (the number of shards to keep)}
[ "$shards" -ge 3 ] || die "a cluster keeps at least 3 shards (masters) to fail over"
keep=$((shards * $(shard_size)))
# The names of the pods that go: ordinals keep and up.
going=$(printf '%s\n' "$REDIS_NODES" | tr -s ' ' '\n' |
    awk -v keep="$keep" 'NR > keep { sub(/:[0-9]+$/, ""); print }')
[ -n "$going" ] ||
    die "$shards shards is not fewer than the $(echo "$REDIS_NODES" | wc -w) pods that run"

[ "$(ordinal_of "$ANNOUNCE_HOST:$REDIS_PORT")" = 0 ] ||
    die "run this in pod 0, where the keeper that moves slots runs (the two take turns)"
waited=0
until take_slot_lock $$; do
    [ "$waited" -lt 600 ] || die "the keeper has been moving slots for 10 minutes: try again later"
    [ $((waited % 30)) -ne 0 ] || log "waiting for the keeper to finish moving slots"
    sleep 1
    waited=$((waited + 1))
done
trap release_slot_lock EXIT
host=${LOCAL_HOST:-127.0.0.1}
wait_cluster_agrees 60 || die "the cluster is not whole: $(cluster_check_report | tail -n 3)"
view=$(cluster_view)
# "id slots master-of-id host" of every node, marked going or staying.
weights=$(printf '%s\n' "$view" | awk -v going="$(printf '%s\n' "$going" | one_line)" '
    BEGIN { n = split(going, list, " "); for (i = 1; i <= n; i++) away[list[i]] = 1 }
    ($5 in away) && $6 ~ /master/ && $9 > 0 { printf " %s=0", $1 }')
if [ -n "$weights" ]; then
    log "moving the slots off the shards that go:$weights"
    # shellcheck disable=SC2086 # one --cluster-weight argument per node, on purpose
    REDIS_CLI_TIMEOUT=3600 redis_cli "$host" "$REDIS_PORT" --cluster rebalance \
        "$host:$REDIS_PORT" --cluster-weight $weights >&2 || die "the rebalance failed"
    view=$(cluster_view)
fi
problems=$(printf '%s\n' "$view" | awk -v going="$(printf '%s\n' "$going" | one_line)" '
    BEGIN { n = split(going, list, " "); for (i = 1; i <= n; i++) away[list[i]] = 1 }
    { host[$1] = $5; line[NR] = $0 }
    END {
        for (i = 1; i <= NR; i++) {
            split(line[i], f, " ")
            if ((f[5] in away) && f[9] > 0) print f[5] " still serves " f[9] " slots"
            if (!(f[5] in away) && f[7] != "-" && (host[f[7]] in away))
                print f[5] " (staying) replicates " host[f[7]] " (going):" \
                    " CLUSTER REPLICATE it to a staying master first"
        }
    }')
if [ -n "$problems" ]; then
    printf '%s\n' "$problems" | while read -r line; do log "not ready to scale in: $line"; done
    exit 1
fi
log "ready: the pods that go ($(printf '%s\n' "$going" | one_line)) serve no slots; upgrade with" \
    "redis.cluster.shards=$shards redis.cluster.allowScaleIn=true"
