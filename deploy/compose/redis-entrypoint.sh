#!/bin/sh
# Entrypoint of the Redis containers in docker-compose.ha.yml: renders the shared templates in
# deploy/redis/ from environment variables and starts the node through the image's own
# docker-entrypoint.sh (which drops root). One script for three jobs:
#
#   redis-entrypoint.sh redis               a Redis node      (REDIS_* variables)
#   redis-entrypoint.sh sentinel            a Sentinel        (SENTINEL_* variables)
#   redis-entrypoint.sh exporter-passwords  the password file redis_exporter reads, then exit
#
# Only POSIX sh, awk and sed: the official redis image has no envsubst or Python, and the same
# script must run there and in the Debian-built stand-in the tests use.
set -eu

templates=${SESSIONLIB_TEMPLATE_DIR:-/opt/sessionlib/redis}
data=${SESSIONLIB_DATA_DIR:-/data}
entrypoint=redis-entrypoint

# die, need, quote, render: shared with the Prometheus entrypoint.
# shellcheck source=deploy/compose/render.sh
. "$(dirname "$0")/render.sh"

# Redis and Sentinel rewrite their own config as the topology changes (CONFIG REWRITE after a
# failover, learned replicas and sentinels), so a config already in the volume is kept: a node
# restarted after a failover comes back with the role Sentinel gave it, not its first one.
# Changing ports or passwords therefore needs fresh volumes (`deploy/compose/ha.sh down -v`).
render_once() {
	if [ -s "$2" ]; then
		echo "redis-entrypoint: keeping $2 from an earlier start"
	else
		render "$1" "$2"
	fi
}

redis_node() {
	need REDIS_PORT REDIS_ANNOUNCE_HOST REDIS_PASSWORD
	conf=$data/redis.conf
	BIND=${REDIS_BIND:-0.0.0.0}
	PORT=$REDIS_PORT
	# Redundant while a password is set (compose requires one), and a guard if it ever is not.
	PROTECTED_MODE=yes
	ANNOUNCE_IP=$REDIS_ANNOUNCE_HOST
	ANNOUNCE_PORT=$REDIS_PORT
	DIR=$(quote "$data")
	MIN_REPLICAS_TO_WRITE=${REDIS_MIN_REPLICAS_TO_WRITE:-1}
	MIN_REPLICAS_MAX_LAG=${REDIS_MIN_REPLICAS_MAX_LAG:-10}
	REPLICATION_DIRECTIVES=
	if [ -n "${REDIS_REPLICA_OF:-}" ]; then
		REPLICATION_DIRECTIVES="replicaof $REDIS_REPLICA_OF"
	fi
	password=$(quote "$REDIS_PASSWORD")
	AUTH_DIRECTIVES="requirepass $password
masterauth $password"
	export BIND PORT PROTECTED_MODE ANNOUNCE_IP ANNOUNCE_PORT DIR MIN_REPLICAS_TO_WRITE \
		MIN_REPLICAS_MAX_LAG REPLICATION_DIRECTIVES AUTH_DIRECTIVES
	render_once "$templates/redis.conf" "$conf"
	[ -n "${SESSIONLIB_RENDER_ONLY:-}" ] && exit 0
	exec docker-entrypoint.sh redis-server "$conf"
}

sentinel_node() {
	need SENTINEL_PORT SENTINEL_ANNOUNCE_HOST SENTINEL_MONITOR_HOST SENTINEL_MONITOR_PORT \
		SENTINEL_PASSWORD REDIS_PASSWORD
	conf=$data/sentinel.conf
	BIND=${SENTINEL_BIND:-0.0.0.0}
	PORT=$SENTINEL_PORT
	PROTECTED_MODE=yes
	ANNOUNCE_IP=$SENTINEL_ANNOUNCE_HOST
	ANNOUNCE_PORT=$SENTINEL_PORT
	RESOLVE_HOSTNAMES=${SENTINEL_RESOLVE_HOSTNAMES:-yes}
	ANNOUNCE_HOSTNAMES=${SENTINEL_ANNOUNCE_HOSTNAMES:-yes}
	DIR=$(quote "$data")
	MASTER_NAME=${SENTINEL_MASTER_NAME:-mymaster}
	MASTER_HOST=$SENTINEL_MONITOR_HOST
	MASTER_PORT=$SENTINEL_MONITOR_PORT
	QUORUM=${SENTINEL_QUORUM:-2}
	DOWN_AFTER_MS=${SENTINEL_DOWN_AFTER_MS:-3000}
	FAILOVER_TIMEOUT_MS=${SENTINEL_FAILOVER_TIMEOUT_MS:-10000}
	# auth-pass: how this sentinel logs in to the Redis nodes. requirepass: what clients (and
	# the other sentinels, which reuse their own requirepass towards peers) must send here.
	AUTH_DIRECTIVES="sentinel auth-pass $MASTER_NAME $(quote "$REDIS_PASSWORD")
requirepass $(quote "$SENTINEL_PASSWORD")"
	export BIND PORT PROTECTED_MODE ANNOUNCE_IP ANNOUNCE_PORT RESOLVE_HOSTNAMES \
		ANNOUNCE_HOSTNAMES DIR MASTER_NAME MASTER_HOST MASTER_PORT QUORUM DOWN_AFTER_MS \
		FAILOVER_TIMEOUT_MS AUTH_DIRECTIVES
	render_once "$templates/sentinel.conf" "$conf"
	[ -n "${SESSIONLIB_RENDER_ONLY:-}" ] && exit 0
	exec docker-entrypoint.sh redis-server "$conf" --sentinel
}

# redis_exporter scrapes nodes and sentinels, which have different passwords; its
# --redis.password-file maps each target URI to one. The exporter image has no shell, so this
# one-shot container writes the file into a volume the exporter mounts read-only.
exporter_passwords() {
	need EXPORTER_REDIS_TARGETS EXPORTER_SENTINEL_TARGETS REDIS_PASSWORD SENTINEL_PASSWORD
	out=${EXPORTER_PASSWORD_FILE:-/secrets/redis-passwords.json}
	quoted_redis=$(quote "$REDIS_PASSWORD")
	quoted_sentinel=$(quote "$SENTINEL_PASSWORD")
	{
		separator='{'
		for target in $EXPORTER_REDIS_TARGETS; do
			printf '%s%s: %s' "$separator" "$(quote "$target")" "$quoted_redis"
			separator=', '
		done
		for target in $EXPORTER_SENTINEL_TARGETS; do
			printf '%s%s: %s' "$separator" "$(quote "$target")" "$quoted_sentinel"
		done
		printf '}\n'
	} >"$out.new"
	# The exporter runs as an unprivileged user of its own image.
	chmod 0444 "$out.new"
	mv "$out.new" "$out"
	echo "redis-entrypoint: wrote the exporter's password map for" \
		"$EXPORTER_REDIS_TARGETS $EXPORTER_SENTINEL_TARGETS"
}

case "${1:-}" in
redis) redis_node ;;
sentinel) sentinel_node ;;
exporter-passwords) exporter_passwords ;;
*) die "usage: redis-entrypoint.sh redis|sentinel|exporter-passwords" ;;
esac
