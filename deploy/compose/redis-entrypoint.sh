#!/bin/sh
# Entrypoint of the Redis containers in docker-compose.ha.yml: renders the shared templates in
# deploy/redis/ from environment variables and starts the node through the image's own
# docker-entrypoint.sh (which drops root). One script for three jobs:
#
#   redis-entrypoint.sh redis               a Redis node      (REDIS_* variables)
#   redis-entrypoint.sh sentinel            a Sentinel        (SENTINEL_* variables)
#   redis-entrypoint.sh exporter-passwords  the password file redis_exporter reads, then exit
#   redis-entrypoint.sh tls-files           the TLS variant's client certificates, copied for
#                                           the services' and the exporter's users, then exit
#
# Both servers use the ACL users of deploy/redis/users.acl and sentinel-users.acl (default
# off), with one password per user in ADMIN_PASSWORD, SESSIONLIB_PASSWORD, REPLICA_PASSWORD,
# SENTINEL_PASSWORD and EXPORTER_PASSWORD. With TLS_SOURCE_DIR (deploy/compose/tls.yml) they
# speak TLS only, on the same ports, replication and Sentinel's links included.
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

# Everything written here holds a password or a key, and Redis writes its config back with the
# mode this umask allows (it keeps the umask it starts with): readable by its owner only, the
# redis user, to whom the image's docker-entrypoint.sh hands /data.
umask 077

# Sentinel writes auth-pass and sentinel-pass back unquoted when it rewrites its config, so a
# password with white space, quotes or a backslash would leave a config it cannot read again.
plain_password() {
	eval "_value=\${$1:-}"
	# shellcheck disable=SC2154 # set by the eval above
	case $_value in
	*[[:space:]\"\'\\]*) die "$1 must not contain white space, quotes or backslashes" ;;
	esac
}

# Redis and Sentinel rewrite their own config as the topology changes (CONFIG REWRITE after a
# failover, learned replicas and sentinels), so a config already in the volume is kept: a node
# restarted after a failover comes back with the role Sentinel gave it, not its first one.
# Only its login lines are renewed from this start's AUTH_DIRECTIVES, so passwords changed in
# .env take effect when compose recreates the container. Changing ports or switching TLS on
# or off needs fresh volumes (`deploy/compose/ha.sh down -v`).
# render_once TEMPLATE OUT: render on the first start (TLS_DIRECTIVES appended), else renew.
render_once() {
	if [ -s "$2" ]; then
		echo "redis-entrypoint: keeping $2 from an earlier start, with this start's logins"
		grep -v -E '^(aclfile|masteruser|masterauth|requirepass) |^sentinel (auth-user|auth-pass|sentinel-user|sentinel-pass) ' \
			"$2" >"$2.new" || true
		printf '%s\n' "$AUTH_DIRECTIVES" >>"$2.new"
		mv "$2.new" "$2"
	else
		render "$1" "$2"
		[ -z "$TLS_DIRECTIVES" ] || printf '\n%s\n' "$TLS_DIRECTIVES" >>"$2"
	fi
}

# tls_setup PORT: with TLS_SOURCE_DIR (the read-only mount of the host's certificates), this
# server's certificate, key and CA copied into $data/tls, where the redis user can read them
# (the host's key belongs to the host's user, mode 0600), and TLS_DIRECTIVES set to the lines
# that make it speak TLS only on PORT: mutual TLS for every client, and replication and
# Sentinel's links over TLS too, as in the local topology's secure mode.
tls_setup() {
	TLS_DIRECTIVES=
	[ -n "${TLS_SOURCE_DIR:-}" ] || return 0
	mkdir -p "$data/tls"
	for file in ca.crt server.crt server.key; do
		cp "$TLS_SOURCE_DIR/$file" "$data/tls/$file.new"
		mv "$data/tls/$file.new" "$data/tls/$file"
	done
	TLS_DIRECTIVES="# --- TLS (deploy/compose/tls.yml) ---
port 0
tls-port $1
tls-cert-file $(quote "$data/tls/server.crt")
tls-key-file $(quote "$data/tls/server.key")
tls-ca-cert-file $(quote "$data/tls/ca.crt")
tls-auth-clients yes
tls-replication yes"
}

redis_node() {
	need REDIS_PORT REDIS_ANNOUNCE_HOST
	conf=$data/redis.conf
	BIND=${REDIS_BIND:-0.0.0.0}
	PORT=$REDIS_PORT
	# Redundant while the default user is off, and a guard if it ever is not.
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
	render_acl "$templates/users.acl" "$data/users.acl"
	# A replica logs in to its master as "replica" (every node may become one).
	AUTH_DIRECTIVES="aclfile $(quote "$data/users.acl")
masteruser replica
masterauth $(quote "$REPLICA_PASSWORD")"
	tls_setup "$REDIS_PORT"
	export BIND PORT PROTECTED_MODE ANNOUNCE_IP ANNOUNCE_PORT DIR MIN_REPLICAS_TO_WRITE \
		MIN_REPLICAS_MAX_LAG REPLICATION_DIRECTIVES AUTH_DIRECTIVES
	render_once "$templates/redis.conf" "$conf"
	[ -n "${SESSIONLIB_RENDER_ONLY:-}" ] && exit 0
	exec docker-entrypoint.sh redis-server "$conf"
}

sentinel_node() {
	need SENTINEL_PORT SENTINEL_ANNOUNCE_HOST SENTINEL_MONITOR_HOST SENTINEL_MONITOR_PORT
	plain_password SENTINEL_PASSWORD
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
	render_acl "$templates/sentinel-users.acl" "$data/users.acl"
	# This sentinel logs in as "sentinel" to the Redis nodes (auth-user/auth-pass) and to the
	# other sentinels (sentinel-user/sentinel-pass); its own clients log in as their users.
	AUTH_DIRECTIVES="aclfile $(quote "$data/users.acl")
sentinel auth-user $MASTER_NAME sentinel
sentinel auth-pass $MASTER_NAME $SENTINEL_PASSWORD
sentinel sentinel-user sentinel
sentinel sentinel-pass $SENTINEL_PASSWORD"
	tls_setup "$SENTINEL_PORT"
	export BIND PORT PROTECTED_MODE ANNOUNCE_IP ANNOUNCE_PORT RESOLVE_HOSTNAMES \
		ANNOUNCE_HOSTNAMES DIR MASTER_NAME MASTER_HOST MASTER_PORT QUORUM DOWN_AFTER_MS \
		FAILOVER_TIMEOUT_MS AUTH_DIRECTIVES
	render_once "$templates/sentinel.conf" "$conf"
	[ -n "${SESSIONLIB_RENDER_ONLY:-}" ] && exit 0
	exec docker-entrypoint.sh redis-server "$conf" --sentinel
}

# redis_exporter scrapes nodes and sentinels as the "exporter" user; its --redis.password-file
# maps each target URI to a password (the same one for all). The exporter image has no shell,
# so this one-shot container writes the file into a volume the exporter mounts read-only,
# readable by the exporter's user only.
exporter_passwords() {
	need EXPORTER_REDIS_TARGETS EXPORTER_SENTINEL_TARGETS EXPORTER_PASSWORD
	out=${EXPORTER_PASSWORD_FILE:-/secrets/redis-passwords.json}
	quoted=$(quote "$EXPORTER_PASSWORD")
	{
		separator='{'
		for target in $EXPORTER_REDIS_TARGETS $EXPORTER_SENTINEL_TARGETS; do
			printf '%s%s: %s' "$separator" "$(quote "$target")" "$quoted"
			separator=', '
		done
		printf '}\n'
	} >"$out.new"
	give_to "${EXPORTER_UID:-}" "$out.new"
	mv "$out.new" "$out"
	echo "redis-entrypoint: wrote the exporter's password map for" \
		"$EXPORTER_REDIS_TARGETS $EXPORTER_SENTINEL_TARGETS"
}

# give_to UID PATH...: the files (mode 0600 from the umask) handed to the user that reads them;
# no UID (the tests, run as that user already) leaves them as they are.
give_to() {
	_uid=$1
	shift
	[ -z "$_uid" ] || chown "$_uid:$_uid" "$@"
}

# The TLS variant's client side: the CA and the client certificate from TLS_SOURCE_DIR, one
# private copy for the services' user (APP_UID) and one for the exporter's (EXPORTER_UID), in
# the volume both mount read-only.
tls_files() {
	need TLS_SOURCE_DIR
	out=${TLS_FILES_DIR:-/tls}
	for owner in "app:${APP_UID:-}" "exporter:${EXPORTER_UID:-}"; do
		directory=$out/${owner%%:*}
		mkdir -p "$directory"
		for file in ca.crt client.crt client.key; do
			cp "$TLS_SOURCE_DIR/$file" "$directory/$file.new"
			mv "$directory/$file.new" "$directory/$file"
		done
		give_to "${owner#*:}" "$directory" "$directory/ca.crt" "$directory/client.crt" \
			"$directory/client.key"
	done
	echo "redis-entrypoint: copied the client certificates for the services and the exporter"
}

case "${1:-}" in
redis) redis_node ;;
sentinel) sentinel_node ;;
exporter-passwords) exporter_passwords ;;
tls-files) tls_files ;;
*) die "usage: redis-entrypoint.sh redis|sentinel|exporter-passwords|tls-files" ;;
esac
