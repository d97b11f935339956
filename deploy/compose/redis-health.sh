#!/bin/sh
# Healthchecks of the Redis containers in docker-compose.ha.yml; reads the container's own
# environment, so one command serves every node and needs no `$$` escaping in compose.
#
#   redis-health.sh redis      the node answers PING (not LOADING, password accepted) and is
#                              a master, or a replica whose link is up and whose sync is done,
#                              or a replica whose master does not answer at all; not a node
#                              still parked by redis-entrypoint.sh (its role not settled)
#   redis-health.sh sentinel   SENTINEL CKQUORUM: this sentinel sees enough peers to reach
#                              quorum and to authorise a failover
#
# A replica whose master is down is healthy: it holds its data and waits for Sentinel to fail
# the master over or for the master to come back, and nothing that depends on it should wait
# for its master too (a full restart after a failover deadlocked on exactly that).
# Both modes of the file listen on loopback inside the container (0.0.0.0 or 127.0.0.1).
# redis-cli logs in as the admin user with the password from REDISCLI_AUTH, so it never shows
# in a process list; in the TLS variant it presents the node's own certificate (mutual TLS).
set -eu

data=${SESSIONLIB_DATA_DIR:-/data}
cli() {
	if [ -n "${TLS_SOURCE_DIR:-}" ]; then
		set -- --tls --cacert "$data/tls/ca.crt" --cert "$data/tls/server.crt" \
			--key "$data/tls/server.key" "$@"
	fi
	# Bounded: redis-cli 7.0 has no connect timeout, and the healthcheck's own is 2 s.
	timeout 1 redis-cli --user admin "$@"
}

case "${1:-}" in
redis)
	cli -h 127.0.0.1 -p "$REDIS_PORT" ping | grep -q '^PONG'
	replication=$(cli -h 127.0.0.1 -p "$REDIS_PORT" info replication | tr -d '\r')
	case "$replication" in
	*role:master*) exit 0 ;;
	*master_link_status:up*master_sync_in_progress:0*) exit 0 ;;
	*role:slave*) ;;
	*) exit 1 ;;
	esac
	# Parked (redis-entrypoint.sh): its role is not settled yet.
	case "$replication" in
	*master_host:127.0.0.1*master_port:1[!0-9]* | *master_host:127.0.0.1*master_port:1) exit 1 ;;
	esac
	# A replica not (yet) in sync: healthy only when its master does not answer at all (a
	# LOADING or an error is an answer: then the link will come up, and that is worth the wait).
	master_host=$(printf '%s\n' "$replication" | sed -n 's/^master_host://p')
	master_port=$(printf '%s\n' "$replication" | sed -n 's/^master_port://p')
	reply=$(cli -h "$master_host" -p "$master_port" ping 2>&1) || true
	case "$reply" in
	"" | "Could not connect"*) exit 0 ;;
	*) exit 1 ;;
	esac
	;;
sentinel)
	cli -h 127.0.0.1 -p "$SENTINEL_PORT" \
		sentinel ckquorum "${SENTINEL_MASTER_NAME:-mymaster}" | grep -q '^OK'
	;;
*)
	echo "usage: redis-health.sh redis|sentinel" >&2
	exit 2
	;;
esac
