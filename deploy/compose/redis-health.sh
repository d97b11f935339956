#!/bin/sh
# Healthchecks of the Redis containers in docker-compose.ha.yml; reads the container's own
# environment, so one command serves every node and needs no `$$` escaping in compose.
#
#   redis-health.sh redis      the node answers PING (not LOADING, password accepted) and is
#                              a master or a replica whose link to its master is up
#   redis-health.sh sentinel   SENTINEL CKQUORUM: this sentinel sees enough peers to reach
#                              quorum and to authorise a failover
#
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
	redis-cli --user admin "$@"
}

case "${1:-}" in
redis)
	cli -h 127.0.0.1 -p "$REDIS_PORT" ping | grep -q '^PONG'
	replication=$(cli -h 127.0.0.1 -p "$REDIS_PORT" info replication)
	case "$replication" in
	*role:master* | *master_link_status:up*) ;;
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
