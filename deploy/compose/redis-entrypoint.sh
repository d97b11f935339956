#!/bin/sh
# Entrypoint of the Redis containers in docker-compose.ha.yml: renders the shared templates in
# deploy/redis/ from environment variables and starts the node through the image's own
# docker-entrypoint.sh (which drops root). One script for three jobs:
#
#   redis-entrypoint.sh redis               a Redis node      (REDIS_* variables), master or
#                                           replica as the sentinels say at this start
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

# A Sentinel rewrites its own config as it learns the topology (the current master with its
# config epoch, the replicas, the other sentinels), and that is the state it needs to agree with
# the others after a restart, so a sentinel's config already in the volume is kept. Only its
# login lines are renewed from this start's AUTH_DIRECTIVES, so passwords changed in .env take
# effect when compose recreates the container. (A Redis node's config is rendered afresh at
# every start instead: see redis_node.) Changing ports or switching TLS on or off needs fresh
# volumes (`deploy/compose/ha.sh down -v`).
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

# --- who is master now? ----------------------------------------------------------------------
# A node's role is decided at every start from what the running stack says, never taken from a
# config kept in the volume alone: after a failover that config names a master that may be
# down or be this node itself, and waiting for it is how the stack used to deadlock on restart.
# Every Redis and Sentinel container knows the whole topology: REDIS_NODES and SENTINEL_NODES,
# each "host:port ..." as the servers announce themselves (service names, or 127.0.0.1 with
# host networking). Without them (one container on its own) nobody is asked.

# admin_cli HOST PORT COMMAND...: one command to another server of the stack as the admin user,
# raw output, no errors; bounded in time (redis-cli 7.0 has no connect timeout), over mutual TLS
# with this server's own certificate in the TLS variant (after tls_setup). The password goes
# through the environment, never the command line.
admin_cli() {
	_host=$1 _port=$2
	shift 2
	if [ -n "$TLS_DIRECTIVES" ]; then
		set -- --tls --cacert "$data/tls/ca.crt" --cert "$data/tls/server.crt" \
			--key "$data/tls/server.key" "$@"
	fi
	REDISCLI_AUTH=$ADMIN_PASSWORD timeout "${PEER_TIMEOUT_SECONDS:-2}" \
		redis-cli --raw --user admin -h "$_host" -p "$_port" "$@" 2>/dev/null || true
}

# sentinel_views: the master each other sentinel names, "host:port", one line per answer.
sentinel_views() {
	for _sentinel in ${SENTINEL_NODES:-}; do
		[ "$_sentinel" != "$self" ] || continue
		admin_cli "${_sentinel%:*}" "${_sentinel##*:}" \
			sentinel get-master-addr-by-name "${SENTINEL_MASTER_NAME:-mymaster}" |
			awk 'NF { line[++n] = $0 }
				END { if (n == 2 && line[2] ~ /^[0-9]+$/) print line[1] ":" line[2] }'
	done
}

# most_named: the line of stdin given most often, as "COUNT LINE", nothing on no input. Ties go
# to the smaller line, so every server that asks the same sentinels picks the same one.
most_named() {
	sort | uniq -c | sort -k1,1nr -k2,2 | awk 'NR == 1 { print $1, $2 }'
}

# peer_roles: "RANK OFFSET KEYS host:port" for every other node of REDIS_NODES that answers,
# rank 2 for a master and 1 for a replica (not a parked one), best first: a master, else the
# replica furthest ahead. Redis 7.0 restarts its replication offset at 0 when it loads the
# append-only file, so after a restart the number of keys tells the replicas apart.
peer_roles() {
	for _node in ${REDIS_NODES:-}; do
		[ "$_node" != "$self" ] || continue
		admin_cli "${_node%:*}" "${_node##*:}" info replication keyspace | tr -d '\r' |
			awk -F: -v node="$_node" -v parked="$PARKED" '
				$1 == "role" { role = $2 }
				$1 == "master_host" { upstream = $2 }
				$1 == "master_port" { upstream = upstream ":" $2 }
				$1 == "master_repl_offset" { offset = $2 }
				/^db[0-9]+:keys=/ { split($2, field, /[=,]/); keys += field[2] }
				END {
					if (role == "master") print 2, offset + 0, keys + 0, node
					else if (role == "slave" && upstream != parked) print 1, offset + 0, keys + 0, node
				}'
	done | sort -k1,1nr -k2,2nr -k3,3nr -k4,4
}

# sentinel_choice COUNT: sets `master` (host:port; this node's own address means "be master")
# and `reason` when at least COUNT sentinels name the same master, asking once. A node they
# name stays the master even while it is down: they will fail it over, and a node that made
# itself master meanwhile would be a second one.
sentinel_choice() {
	_named=$(sentinel_views | most_named)
	[ -n "$_named" ] && [ "${_named%% *}" -ge "$1" ] || return 1
	master=${_named#* }
	reason="named by ${_named%% *} of the $(sentinel_count) sentinels"
}

# fallback_choice: the same when no sentinel answers: the other nodes (the one that is master,
# else the replica furthest ahead), then the role this node had before this start (`previous`),
# then its first-start role (REDIS_REPLICA_OF, none: master).
fallback_choice() {
	master=$(peer_roles | awk 'NR == 1 { print $4 }')
	if [ -n "$master" ]; then
		reason="no sentinel answered; the most advanced of the other nodes"
	elif [ -n "$previous" ]; then
		master=$previous
		reason="no sentinel or other node answered; keeping the role of $conf from an earlier start"
	elif [ -n "${REDIS_REPLICA_OF:-}" ]; then
		# "host port", as in the replicaof directive.
		master="${REDIS_REPLICA_OF% *}:${REDIS_REPLICA_OF##* }"
		reason="no sentinel or other node answered; the first-start role"
	else
		master=$self
		reason="no sentinel or other node answered; the first-start role"
	fi
}

# sentinel_count: how many sentinels SENTINEL_NODES lists.
sentinel_count() {
	# shellcheck disable=SC2086 # one word per sentinel
	set -- ${SENTINEL_NODES:-}
	echo $#
}

# previous_master CONFIG: the master CONFIG names (Redis and Sentinel write the role back into
# it), this node's own address when it names none, nothing when there is no CONFIG or it never
# left the parked start.
previous_master() {
	[ -s "$1" ] || return 0
	_line=$(sed -n -E 's/^(replicaof|slaveof) "?([^ "]+)"? "?([0-9]+)"?$/\2:\3/p' "$1" | tail -n 1)
	case $_line in
	"") echo "$self" ;;
	"$PARKED") ;;
	*) echo "$_line" ;;
	esac
}

# has_data: whether this node's volume holds its data (an append-only file or a snapshot).
has_data() {
	[ -n "$(ls -A "$data/appendonlydir" 2>/dev/null)" ] || [ -s "$data/dump.rdb" ]
}

# peers_hold_data: whether another node of REDIS_NODES that answers holds any key.
peers_hold_data() {
	for _node in ${REDIS_NODES:-}; do
		[ "$_node" != "$self" ] || continue
		admin_cli "${_node%:*}" "${_node##*:}" info keyspace | grep -q '^db[0-9]*:keys=[1-9]' &&
			return 0
	done
	return 1
}

# wait_for_another_master: for a node the sentinels name master that comes back without its
# data (a lost or new volume, before they noticed it was gone). As master it would hand its
# replicas the empty data set; staying down lets the sentinels see it down and promote one of
# them, and this node then starts as that one's replica. Sets `master` and `reason`. Should no
# node that answers hold data either, there is nothing to lose, and it starts as master.
wait_for_another_master() {
	_said=$(date +%s)
	echo "redis-entrypoint: the sentinels name this node master but $data holds no data:" \
		"waiting for them to promote a replica"
	while peers_hold_data; do
		if sentinel_choice $(($(sentinel_count) / 2 + 1)) && [ "$master" != "$self" ] &&
			[ "$(admin_cli "${master%:*}" "${master##*:}" role | head -n 1)" = master ]; then
			reason="$reason, promoted while this node was down without its data"
			return 0
		fi
		if [ $(($(date +%s) - _said)) -ge 10 ]; then
			_said=$(date +%s)
			echo "redis-entrypoint: still waiting: another node holds data"
		fi
		sleep 1
	done
	master=$self
	reason="no data here, and no other node that answers holds any either"
}

# A node that does not know its role yet starts "parked": a replica of PARKED, where nothing
# listens. It loads its data and answers Sentinel's PINGs (so the sentinels starting beside it
# see no master down, and fail nothing over), but takes no write and lets no replica copy from
# it. follow_sentinels then settles the role.
PARKED=127.0.0.1:1

# follow_sentinels: run beside the parked server: waits for most sentinels to name a master (up
# to SENTINEL_WAIT_SECONDS, after that any of them, or fallback_choice when none answers), then
# makes the server that master or its replica, and writes the role into its config.
follow_sentinels() {
	_majority=$(($(sentinel_count) / 2 + 1))
	_deadline=$(($(date +%s) + ${SENTINEL_WAIT_SECONDS:-30}))
	until sentinel_choice "$_majority"; do
		if [ "$(date +%s)" -ge "$_deadline" ]; then
			sentinel_choice 1 || fallback_choice
			break
		fi
		sleep 0.5
	done
	if [ "$master" = "$self" ]; then
		set -- replicaof no one
	else
		set -- replicaof "${master%:*}" "${master##*:}"
	fi
	# The server may still be starting or loading its data.
	_deadline=$(($(date +%s) + 120))
	until [ "$(admin_cli 127.0.0.1 "$REDIS_PORT" "$@")" = OK ]; do
		if [ "$(date +%s)" -ge "$_deadline" ]; then
			echo "redis-entrypoint: could not leave the parked start: REPLICAOF failed for 120 s" >&2
			return 1
		fi
		sleep 0.5
	done
	admin_cli 127.0.0.1 "$REDIS_PORT" config rewrite >/dev/null
	announce_role
}

announce_role() {
	if [ "$master" = "$self" ]; then
		echo "redis-entrypoint: master ($reason)"
	else
		echo "redis-entrypoint: replica of $master ($reason)"
	fi
}

# sentinel_first_master: sets `master` and `reason` for a sentinel's first config (later ones
# keep what Sentinel wrote): what the other sentinels name, else a node that is master now,
# else SENTINEL_MONITOR_HOST/PORT, the first master of a new stack. Asked once, not waited for:
# on a new stack every sentinel starts at once and they all fall back to the same node.
sentinel_first_master() {
	_named=$(sentinel_views | most_named)
	if [ -n "$_named" ]; then
		master=${_named#* }
		reason="named by ${_named%% *} of the other sentinels"
		return 0
	fi
	master=$(peer_roles | awk '$1 == 2 { print $4; exit }')
	if [ -n "$master" ]; then
		reason="no other sentinel answered; the node that is master now"
		return 0
	fi
	master=$SENTINEL_MONITOR_HOST:$SENTINEL_MONITOR_PORT
	reason="no other sentinel or master answered; the stack's first master"
}

# A Redis node's config is rendered afresh at every start, with the role the sentinels give it:
# whatever Redis wrote back into it (Sentinel's REPLICAOF and CONFIG REWRITE) may be stale by
# the time the node comes back, the running stack's answer is not. When most sentinels answer
# at once (they run already) the node starts in that role, as master only with its data (see
# wait_for_another_master); when they do not (they are starting too, as after `down` and
# `up`), it starts parked and follow_sentinels settles its role as soon as they answer. A
# container run on its own (no SENTINEL_NODES) takes fallback_choice.
redis_node() {
	need REDIS_PORT REDIS_ANNOUNCE_HOST
	conf=$data/redis.conf
	self=$REDIS_ANNOUNCE_HOST:$REDIS_PORT
	BIND=${REDIS_BIND:-0.0.0.0}
	PORT=$REDIS_PORT
	# Redundant while the default user is off, and a guard if it ever is not.
	PROTECTED_MODE=yes
	ANNOUNCE_IP=$REDIS_ANNOUNCE_HOST
	ANNOUNCE_PORT=$REDIS_PORT
	DIR=$(quote "$data")
	MIN_REPLICAS_TO_WRITE=${REDIS_MIN_REPLICAS_TO_WRITE:-1}
	MIN_REPLICAS_MAX_LAG=${REDIS_MIN_REPLICAS_MAX_LAG:-10}
	render_acl "$templates/users.acl" "$data/users.acl"
	# A replica logs in to its master as "replica" (every node may become one).
	AUTH_DIRECTIVES="aclfile $(quote "$data/users.acl")
masteruser replica
masterauth $(quote "$REPLICA_PASSWORD")"
	tls_setup "$REDIS_PORT"
	previous=$(previous_master "$conf")
	parked=
	if [ -z "${SENTINEL_NODES:-}" ]; then
		fallback_choice
	elif ! sentinel_choice $(($(sentinel_count) / 2 + 1)); then
		parked=yes
		master=$PARKED
	elif [ "$master" = "$self" ] && ! has_data; then
		wait_for_another_master
	fi
	if [ -n "$parked" ]; then
		echo "redis-entrypoint: starting parked until most sentinels answer"
	else
		announce_role
	fi
	if [ "$master" = "$self" ]; then
		REPLICATION_DIRECTIVES=
	else
		REPLICATION_DIRECTIVES="replicaof ${master%:*} ${master##*:}"
	fi
	export BIND PORT PROTECTED_MODE ANNOUNCE_IP ANNOUNCE_PORT DIR MIN_REPLICAS_TO_WRITE \
		MIN_REPLICAS_MAX_LAG REPLICATION_DIRECTIVES AUTH_DIRECTIVES
	render "$templates/redis.conf" "$conf"
	[ -z "$TLS_DIRECTIVES" ] || printf '\n%s\n' "$TLS_DIRECTIVES" >>"$conf"
	[ -n "${SESSIONLIB_RENDER_ONLY:-}" ] && exit 0
	if [ -n "$parked" ]; then
		# Beside the server, not before it: it outlives this shell, which becomes the server.
		follow_sentinels &
	fi
	exec docker-entrypoint.sh redis-server "$conf"
}

# wait_until_listening HOST:PORT: until the node answers anything at all, for up to
# MASTER_WAIT_SECONDS. A sentinel that starts before the master it monitors listens tries to
# connect once, then again only a second later (its ping period), and with a down-after of a
# second or so it has counted the master down by then: started together, the sentinels would
# fail over a healthy master. The nodes never wait for the sentinels to listen (they start
# parked), so this wait cannot become a circle; a master that does not come back within it is
# left to the sentinels to fail over.
wait_until_listening() {
	[ -n "$1" ] || return 0
	_deadline=$(($(date +%s) + ${MASTER_WAIT_SECONDS:-15}))
	until [ -n "$(admin_cli "${1%:*}" "${1##*:}" ping)" ]; do
		if [ "$(date +%s)" -ge "$_deadline" ]; then
			echo "redis-entrypoint: $1 does not answer; starting all the same"
			return 0
		fi
		sleep 0.2
	done
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
	case $DOWN_AFTER_MS in
	'' | *[!0-9]*) die "SENTINEL_DOWN_AFTER_MS must be a number of milliseconds, got '$DOWN_AFTER_MS'" ;;
	esac
	# A sentinel connects to an address at most once a second: with less, one that switched to
	# a new master can count it down before it has reached it, and fail over a second time.
	[ "$DOWN_AFTER_MS" -ge 2000 ] || die "SENTINEL_DOWN_AFTER_MS must be at least 2000" \
		"(got $DOWN_AFTER_MS): a sentinel reaches a new master up to a second after a failover"
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
	self=$SENTINEL_ANNOUNCE_HOST:$SENTINEL_PORT
	if [ -s "$conf" ]; then
		master=$(sed -n -E "s/^sentinel monitor $MASTER_NAME ([^ ]+) ([0-9]+) .*/\\1:\\2/p" "$conf")
	else
		sentinel_first_master
		MASTER_HOST=${master%:*}
		MASTER_PORT=${master##*:}
		echo "redis-entrypoint: monitoring $MASTER_NAME at $master ($reason)"
	fi
	[ -n "${SESSIONLIB_RENDER_ONLY:-}" ] || wait_until_listening "$master"
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
	# No sentinels in Cluster mode (docker-compose.cluster.yml).
	need EXPORTER_REDIS_TARGETS EXPORTER_PASSWORD
	EXPORTER_SENTINEL_TARGETS=${EXPORTER_SENTINEL_TARGETS:-}
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
