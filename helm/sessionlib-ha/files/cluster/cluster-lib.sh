# shellcheck shell=sh
# Redis Cluster mode of the chart's Redis pods (redis.mode cluster): the cluster lines of the
# config, and the keeper that creates the cluster once, re-forms it after restarts, adds new
# shards and forgets removed nodes. Sourced after lib.sh (logging, redis_cli with the pod's
# auth and TLS, render_acl, tls_directives), never run on its own.
#
# The environment, beside lib.sh's (ANNOUNCE_HOST, REDIS_PORT, passwords, TLS_*, LOCAL_HOST):
#   REDIS_NODES              every cluster node as host:port (pod DNS names), in pod order
#   CLUSTER_REPLICAS         replicas per shard: pod N is in shard N / (1 + CLUSTER_REPLICAS),
#                            and the first pod of a shard is the one it starts with as master
#   CLUSTER_BUS_PORT         the cluster bus port, the same on every pod; unset, every node's
#                            bus port is its own port + 10000, Redis' default (compose's
#                            host-network mode, where all nodes share one address)
#   CLUSTER_NODE_TIMEOUT_MS  cluster-node-timeout
#   CLUSTER_KEEPER_INTERVAL_SECONDS  how often the keeper looks (2)
#
# Why a keeper and names: Redis Cluster nodes talk to each other by IP only, and keep those
# IPs in nodes.conf. A pod that comes back on a new IP reaches its peers at their old IPs and
# they learn its new one from its packets; but after every pod restarted at once, every IP in
# every nodes.conf is stale and the cluster never re-forms by itself (the failure Bitnami's
# chart is known for). Every node announces its pod name (cluster-announce-hostname), which
# nodes.conf keeps, so the keeper resolves each peer's name and meets it again at its IP now.

# cluster_directives: the lines that turn the shared redis.conf into a cluster node, appended
# after the template like the TLS lines. The first block is exactly what the local topology
# appends (deploy/local/configs.py, cluster_directives; tests/helm compares them), then what
# only a pod needs: its name as the address clients and peers are given.
cluster_directives() {
    cat <<EOF

# --- Redis Cluster (cluster mode) ---
cluster-enabled yes
cluster-config-file nodes.conf
cluster-port $(bus_port_of "$ANNOUNCE_HOST:$REDIS_PORT")
cluster-node-timeout $CLUSTER_NODE_TIMEOUT_MS
cluster-require-full-coverage no
EOF
    if [ "${TLS_ENABLED:-false}" = true ]; then
        echo "tls-cluster yes"
    fi
    cat <<EOF
cluster-announce-hostname $ANNOUNCE_HOST
cluster-preferred-endpoint-type hostname
EOF
}

# one_line: the words of the input on one line, separated by single spaces.
one_line() {
    tr -s ' \n' '  ' | sed 's/^ //; s/ $//'
}

# resolve HOST: the IP the name resolves to now, or nothing.
resolve() {
    getent hosts "$1" 2>/dev/null | awk 'NR == 1 { print $1 }'
}

# ordinal_of HOST:PORT: the node's position in REDIS_NODES (0-based), or nothing.
ordinal_of() {
    printf '%s\n' "$REDIS_NODES" | tr -s ' ' '\n' |
        awk -v node="$1" '$0 == node { print NR - 1; exit }'
}

# node_at ORDINAL: host:port of the node at that position of REDIS_NODES.
node_at() {
    printf '%s\n' "$REDIS_NODES" | tr -s ' ' '\n' | awk -v n="$1" 'NR == n + 1 { print; exit }'
}

# bus_port_of HOST:PORT: the node's cluster bus port (see CLUSTER_BUS_PORT above).
bus_port_of() {
    echo "${CLUSTER_BUS_PORT:-$(($(port_of "$1") + 10000))}"
}

shard_size() {
    echo $((1 + CLUSTER_REPLICAS))
}

# cluster_view [HOST PORT]: CLUSTER NODES of a node (the local one by default), one line per
# node it knows: "id ip port bus host flags master link slots" with "-" for an empty field
# and slots counted. Nothing when the node does not answer.
cluster_view() {
    redis_cli "${1:-${LOCAL_HOST:-127.0.0.1}}" "${2:-$REDIS_PORT}" CLUSTER NODES 2>/dev/null |
        tr -d '\r' | awk '
        NF >= 8 && $1 ~ /^[0-9a-f]+$/ {
            address = $2
            at = index(address, "@")
            hostport = substr(address, 1, at - 1)
            rest = substr(address, at + 1)
            comma = index(rest, ",")
            bus = comma ? substr(rest, 1, comma - 1) : rest
            host = comma ? substr(rest, comma + 1) : ""
            sub(/,.*/, "", host)
            colon = match(hostport, /:[0-9]+$/)
            ip = substr(hostport, 1, colon - 1)
            port = substr(hostport, colon + 1)
            slots = 0
            for (i = 9; i <= NF; i++) {
                if ($i ~ /^\[/) continue
                n = split($i, range, "-")
                slots += n == 2 ? range[2] - range[1] + 1 : 1
            }
            print $1, (ip == "" ? "-" : ip), port, bus, (host == "" ? "-" : host), $3, $4, $8,
                slots
        }'
}

# cluster_field HOST PORT FIELD: one field of a node's CLUSTER INFO, or nothing.
cluster_field() {
    redis_cli "$1" "$2" CLUSTER INFO 2>/dev/null | tr -d '\r' |
        awk -F: -v field="$3" '$1 == field { print $2 }'
}

# meet HOST:PORT: introduce the node by its name's IP now (CLUSTER MEET takes IPs only). A
# node that is known already under another IP gets its address updated by the handshake.
meet() {
    _ip=$(resolve "$(host_of "$1")")
    [ -n "$_ip" ] || return 1
    local_redis CLUSTER MEET "$_ip" "$(port_of "$1")" "$(bus_port_of "$1")" >/dev/null
}

# slot_range SHARD SHARDS: "first last" of the slots one master starts with, split evenly as
# `redis-cli --cluster create` (and the local topology) splits them.
slot_range() {
    awk -v i="$1" -v n="$2" 'BEGIN {
        per = 16384 / n
        first = i == 0 ? 0 : int(i * per + 0.5)
        last = i == n - 1 ? 16383 : int((i + 1) * per + 0.5) - 1
        print first, last
    }'
}

# create_cluster: the first install, run by pod 0 only. Only when every node answers, knows
# no peer yet and holds no key: so a cluster is never created twice, and never over data
# (a node that lost nodes.conf but kept keys would have them in the wrong slots). Each
# shard's first pod gets its slots and a distinct config epoch, then pod 0 meets everyone;
# each replica then follows its shard's master by itself (adopt_shard). A creation cut short
# is taken up again the same way: slots already assigned are kept.
create_cluster() {
    _total=$(echo "$REDIS_NODES" | wc -w)
    for _node in $REDIS_NODES; do
        _known=$(cluster_field "$(host_of "$_node")" "$(port_of "$_node")" cluster_known_nodes)
        [ -n "$_known" ] || return 1
        [ "$_known" -eq 1 ] || return 1
        _keys=$(redis_cli "$(host_of "$_node")" "$(port_of "$_node")" DBSIZE 2>/dev/null) ||
            return 1
        if [ "${_keys:-0}" -gt 0 ]; then
            log "not creating a cluster: $_node knows no peer but holds $_keys keys"
            return 1
        fi
    done
    _shards=$((_total / $(shard_size)))
    log "every node answers and none is in a cluster: creating one of $_shards shards"
    _shard=0
    while [ "$_shard" -lt "$_shards" ]; do
        _master=$(node_at $((_shard * $(shard_size))))
        _host=$(host_of "$_master") _port=$(port_of "$_master")
        if [ "$(cluster_field "$_host" "$_port" cluster_slots_assigned)" = 0 ]; then
            # shellcheck disable=SC2046 # "first last", split on purpose
            redis_cli "$_host" "$_port" CLUSTER ADDSLOTSRANGE $(slot_range "$_shard" "$_shards") \
                >/dev/null || return 1
            redis_cli "$_host" "$_port" CLUSTER SET-CONFIG-EPOCH $((_shard + 1)) >/dev/null || :
        fi
        _shard=$((_shard + 1))
    done
    for _node in $REDIS_NODES; do
        is_me "$_node" || meet "$_node" || return 1
    done
    log "created: slots assigned to each shard's first pod, every node met"
}

# join_cluster: a node that knows no peer (a new shard's pod after a scale-out, a pod that
# lost its volume) meets a node that is in the cluster already.
join_cluster() {
    for _node in $REDIS_NODES; do
        is_me "$_node" && continue
        _known=$(cluster_field "$(host_of "$_node")" "$(port_of "$_node")" cluster_known_nodes)
        if [ "${_known:-0}" -gt 1 ] && meet "$_node"; then
            log "joining the cluster through $_node"
            return 0
        fi
    done
    return 1
}

# remeet_moved VIEW: meet again every peer whose pod name resolves to another IP than the one
# this node holds for it (pods came back on new IPs, above all after all of them restarted).
# A node learns its own IP only from a MEET it receives: when this pod moved, a peer is asked
# to meet it.
remeet_moved() {
    _departed=$(departed_nodes "$1" | awk '{ print $1 }' | one_line)
    printf '%s\n' "$1" | while read -r _id _ip _port _bus _host _flags _rest; do
        case $_flags in *handshake*) continue ;; esac
        case " $_departed " in *" $_id "*) continue ;; esac
        [ "$_host" != - ] || continue
        _now=$(resolve "$_host")
        [ -n "$_now" ] && [ "$_now" != "$_ip" ] || continue
        case $_flags in
            *myself*) ask_peer_to_meet_me "$_now" ;;
            *)
                log "meeting $_host again at $_now (known at $_ip)"
                local_redis CLUSTER MEET "$_now" "$_port" "$_bus" >/dev/null || :
                ;;
        esac
    done
}

# ask_peer_to_meet_me IP: the first other node that answers meets this one at IP.
ask_peer_to_meet_me() {
    for _peer in $REDIS_NODES; do
        is_me "$_peer" && continue
        if redis_cli "$(host_of "$_peer")" "$(port_of "$_peer")" CLUSTER MEET "$1" "$REDIS_PORT" \
            "$(bus_port_of "$ANNOUNCE_HOST:$REDIS_PORT")" >/dev/null 2>&1; then
            log "this pod is at $1 now: $_peer meets it there"
            return 0
        fi
    done
}

# adopt_shard VIEW: a master without slots replicates its shard: the shard's master that
# serves slots (this pod came back empty after its replica took over), or else the shard's
# first pod (a new shard, or the first install). The first pod of a new shard stays an empty
# master until the keeper of pod 0 moves slots onto it.
adopt_shard() {
    _mine=$(printf '%s\n' "$1" | awk '$6 ~ /myself/')
    case $_mine in *master*) ;; *) return 0 ;; esac
    [ "$(printf '%s\n' "$_mine" | awk '{ print $9 }')" -eq 0 ] || return 0
    _ordinal=$(ordinal_of "$ANNOUNCE_HOST:$REDIS_PORT")
    _first=$((_ordinal / $(shard_size) * $(shard_size)))
    # Nodes are told apart by name and port: in compose's host-network mode they share one.
    _peers=$(for _o in $(seq "$_first" $((_first + CLUSTER_REPLICAS))); do
        [ "$_o" -eq "$_ordinal" ] || node_at "$_o"
    done)
    _peers=$(printf '%s\n' "$_peers" | one_line)
    _target=$(printf '%s\n' "$1" | awk -v peers="$_peers" -v first="$(node_at "$_first")" '
        BEGIN { n = split(peers, list, " "); for (i = 1; i <= n; i++) shard[list[i]] = 1 }
        { node = $5 ":" $3 }
        (node in shard) && $6 ~ /master/ && $6 !~ /fail|handshake|noaddr/ {
            if ($9 > 0) serving = $1
            else if (node == first) empty = $1
        }
        END { print serving ? serving : empty }')
    [ -n "$_target" ] || return 0
    if local_redis CLUSTER REPLICATE "$_target" >/dev/null 2>&1; then
        log "replicating $_target, the master of this pod's shard"
    fi
}

# The one mover of slots in this pod at a time: the keeper's rebalance and cluster-drain.sh
# both take this lock (a directory, made atomically, with the holder's pid), so neither ever
# "fixes" the slots the other is moving. Both run in pod 0 only. A holder that is gone leaves
# a stale lock, which the next taker removes.
slot_lock() {
    printf '%s/slots.lock\n' "${CONFIG_DIR:-/config}"
}

# take_slot_lock PID: hold the lock for PID, or fail while a live process holds it.
take_slot_lock() {
    _lock=$(slot_lock)
    if ! mkdir "$_lock" 2>/dev/null; then
        _holder=$(cat "$_lock/pid" 2>/dev/null) || _holder=""
        # An empty pid: its taker is writing it right now.
        if [ -z "$_holder" ] || kill -0 "$_holder" 2>/dev/null; then return 1; fi
        rm -rf "$_lock"
        mkdir "$_lock" 2>/dev/null || return 1
    fi
    echo "$1" >"$_lock/pid"
}

release_slot_lock() {
    rm -rf "$(slot_lock)"
}

# cluster_check_report: `redis-cli --cluster check` through the local node; fails when it
# finds a problem (a slot not served or half-moved, nodes that disagree on the slot map).
cluster_check_report() {
    REDIS_CLI_TIMEOUT=60 redis_cli "${LOCAL_HOST:-127.0.0.1}" "$REDIS_PORT" \
        --cluster check "${LOCAL_HOST:-127.0.0.1}:$REDIS_PORT" 2>&1
}

# wait_cluster_agrees SECONDS: until `--cluster check` passes (just after a failover or a
# slot move the nodes need a moment to agree on the slot map), or fail after SECONDS.
wait_cluster_agrees() {
    _until=$(($(date +%s) + $1))
    until cluster_check_report >/dev/null; do
        [ "$(date +%s)" -lt "$_until" ] || return 1
        sleep 1
    done
}

# rebalance_slots VIEW PID: run by pod 0's keeper while the cluster is ok (PID, the server's,
# holds the slot lock meanwhile). When a master holds less than 90% of an even share of the
# slots (a new shard, or a rebalance cut short), first close any slot left half-moved
# (`--cluster fix`), then even the slots out (`--cluster rebalance
# --cluster-use-empty-masters`). Only once every such master has its replicas linked: with
# min-replicas-to-write it refuses the keys moved to it otherwise.
rebalance_slots() {
    _short=$(printf '%s\n' "$1" | awk '
        $6 ~ /master/ && $6 !~ /fail|handshake|noaddr/ {
            masters++; slots[$1] = $9; address[$1] = $2 ":" $3
        }
        END { for (id in slots) if (slots[id] < 0.9 * 16384 / masters) print address[id] }')
    [ -n "$_short" ] || return 0
    for _node in $_short; do
        _linked=$(redis_cli "$(host_of "$_node")" "$(port_of "$_node")" INFO replication \
            2>/dev/null | tr -d '\r' | sed -n 's/^connected_slaves://p')
        if [ "${_linked:-0}" -lt "${MIN_REPLICAS_TO_WRITE:-1}" ]; then
            return 0
        fi
    done
    take_slot_lock "$2" || return 0
    move_slots_to_short_masters "$_short"
    release_slot_lock
}

# move_slots_to_short_masters ADDRESSES: with the slot lock held, close half-moved slots, or
# else even the slots out onto the masters at ADDRESSES.
move_slots_to_short_masters() {
    _entry="${LOCAL_HOST:-127.0.0.1}:$REDIS_PORT"
    if ! _check=$(cluster_check_report); then
        case $_check in
            *"open slot"* | *migrating* | *importing*)
                log "closing slots left half-moved before rebalancing"
                REDIS_CLI_TIMEOUT=600 redis_cli "${LOCAL_HOST:-127.0.0.1}" "$REDIS_PORT" \
                    --cluster fix "$_entry" >&2 || :
                ;;
        esac
        # Anything else (nodes that do not agree on the slot map yet) settles by itself.
        return 0
    fi
    log "moving slots onto $(printf '%s\n' "$1" | one_line), which hold less than an even share"
    REDIS_CLI_TIMEOUT=3600 redis_cli "${LOCAL_HOST:-127.0.0.1}" "$REDIS_PORT" \
        --cluster rebalance "$_entry" --cluster-use-empty-masters >&2 || :
}

# departed_nodes VIEW: "id host slots" of each failed node that is no pod any more (after a
# scale-in), or whose pod name and port another node now answers for (a pod that lost its
# volume and joined anew with a new id). Name and port, since in compose's host-network mode
# every node has the name 127.0.0.1.
departed_nodes() {
    printf '%s\n' "$1" | awk -v nodes="$REDIS_NODES" '
        BEGIN { n = split(nodes, list, " "); for (i = 1; i <= n; i++) pod[list[i]] = 1 }
        { line[NR] = $0; node = $5 ":" $3; if ($6 !~ /fail/) alive[node] = 1 }
        END {
            for (i = 1; i <= NR; i++) {
                split(line[i], f, " ")
                node = f[5] ":" f[3]
                failed = f[6] ~ /(^|,)fail(,|$)/ && f[6] !~ /myself/
                if (failed && (!(node in pod) || (node in alive))) print f[1], f[5], f[9]
            }
        }'
}

# forget_departed VIEW: every keeper, while the cluster is ok. Each departed node is forgotten
# on every node, so it counts towards no majority (a new pod 0 may never hear of it: nodes do
# not gossip about a failed node without slots, so every keeper looks). Never one that still
# serves slots: its sessions would be gone; the keeper says so instead.
forget_departed() {
    departed_nodes "$1" | while read -r _id _host _slots; do
        if [ "$_slots" -gt 0 ]; then
            log "not forgetting failed node $_id ($_host): it still serves $_slots slots." \
                "Bring its pod back, or fail its shard over to a replica first"
            continue
        fi
        log "forgetting failed node $_id ($_host) on every node"
        for _node in $REDIS_NODES; do
            redis_cli "$(host_of "$_node")" "$(port_of "$_node")" CLUSTER FORGET "$_id" \
                >/dev/null 2>&1 || :
        done
    done
}

# keep_cluster SERVER_PID: the keeper, beside redis-server for as long as it runs.
keep_cluster() {
    # A failed command must never end the keeper (the start script runs with set -e): each
    # step is tried again at the next round.
    set +e
    _ordinal=$(ordinal_of "$ANNOUNCE_HOST:$REDIS_PORT")
    [ -n "$_ordinal" ] || die "$ANNOUNCE_HOST:$REDIS_PORT is not in REDIS_NODES"
    _said=0
    while kill -0 "$1" 2>/dev/null; do
        sleep "${CLUSTER_KEEPER_INTERVAL_SECONDS:-2}"
        _view=$(cluster_view)
        [ -n "$_view" ] || continue
        if [ "$(printf '%s\n' "$_view" | wc -l)" -le 1 ]; then
            if [ "$_ordinal" -eq 0 ] && create_cluster; then continue; fi
            join_cluster && continue
            if [ $(($(date +%s) - _said)) -ge 30 ]; then
                _said=$(date +%s)
                log "waiting: no cluster yet, and pod 0 creates it once every node answers"
            fi
            continue
        fi
        remeet_moved "$_view"
        adopt_shard "$_view"
        [ "$(cluster_field "${LOCAL_HOST:-127.0.0.1}" "$REDIS_PORT" cluster_state)" = ok ] ||
            continue
        forget_departed "$_view"
        if [ "$_ordinal" -eq 0 ]; then rebalance_slots "$_view" "$1"; fi
    done
}
