#!/usr/bin/env bash
# Runs docker-compose.ha.yml (Sentinel) or, with HA_MODE=cluster, docker-compose.cluster.yml
# (Redis Cluster) with whichever Compose this machine has: v2 (`docker compose`) when it
# answers, else v1 (`docker-compose`). Behind `make up-ha`, `make down-ha`, `make ps-ha`
# (MODE=cluster for the Cluster stack).
#
#   deploy/compose/ha.sh up [SERVICE...]   create .env if missing, start, wait until healthy
#   deploy/compose/ha.sh down [-v]         stop and remove containers (-v: and the data volumes)
#   deploy/compose/ha.sh stop | start      stop the containers, keeping them; start them again
#                                          and wait until healthy
#   deploy/compose/ha.sh ps | build | config | logs [ARGS...]
#   deploy/compose/ha.sh compose ARGS...   any other compose command, same files and project
#
# Environment: HA_ENV_FILE (default .env); HA_MODE=sentinel (default) or cluster;
# HA_NETWORK=host for host networking on Linux (deploy/compose/hostnet.yml or
# hostnet-cluster.yml, see below); HA_TLS=1 (Sentinel stack only) for the TLS variant (deploy/compose/tls.yml,
# certificates issued once into HA_TLS_DIR, default .run/compose/tls, with HA_PYTHON, default
# .venv/bin/python); HA_OVERRIDES (more compose files, space-separated);
# HA_PROJECT (default sessionlib-ha, sessionlib-ha-cluster for the Cluster stack: the two never
# share containers or volumes); HA_COMPOSE (force "docker compose" or "docker-compose");
# HA_WAIT_SECONDS (default 300).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
env_file=${HA_ENV_FILE:-$root/.env}
mode=${HA_MODE:-sentinel}
if [[ $mode == cluster ]]; then
	project=${HA_PROJECT:-sessionlib-ha-cluster}
else
	project=${HA_PROJECT:-sessionlib-ha}
fi
network=${HA_NETWORK:-bridge}
tls=${HA_TLS:-0}
tls_dir=${HA_TLS_DIR:-$root/.run/compose/tls}
wait_seconds=${HA_WAIT_SECONDS:-300}

die() {
	echo "ha.sh: $*" >&2
	exit 1
}

# v2 first: it is what Docker ships today; v1 (Debian's docker-compose 1.29) reads the same
# file, since it keeps to what both understand (no `name:`, no `!reset`, no `--wait`).
detect_compose() {
	if [[ -n ${HA_COMPOSE:-} ]]; then
		read -r -a compose <<<"$HA_COMPOSE"
	elif docker compose version >/dev/null 2>&1; then
		compose=(docker compose)
	elif command -v docker-compose >/dev/null 2>&1; then
		compose=(docker-compose)
	else
		die "neither 'docker compose' (v2) nor 'docker-compose' (v1) is installed;" \
			"see https://docs.docker.com/compose/install/ (Debian: apt-get install docker-compose)"
	fi
}

run_compose() {
	"${compose[@]}" --project-directory "$root" --project-name "$project" \
		--env-file "$env_file" "${files[@]}" "$@"
}

select_files() {
	local override
	if [[ $mode == cluster ]]; then
		files=(-f "$root/docker-compose.cluster.yml")
		[[ $network == host ]] && files+=(-f "$root/deploy/compose/hostnet-cluster.yml")
	else
		files=(-f "$root/docker-compose.ha.yml")
		[[ $network == host ]] && files+=(-f "$root/deploy/compose/hostnet.yml")
	fi
	# After hostnet.yml: it only adds to the services, whatever network they are on.
	[[ $tls == 1 ]] && files+=(-f "$root/deploy/compose/tls.yml")
	for override in ${HA_OVERRIDES:-}; do
		[[ $override = /* ]] || override=$root/$override
		[[ -f $override ]] || die "override file $override does not exist"
		files+=(-f "$override")
	done
	[[ $network == host ]] && use_host_network_config
	return 0
}

# Compose v1 refuses published ports on a host-network container, and no override can delete
# a key of the base file in v1, so host mode runs on the merged config with its `ports:`
# blocks taken out (v1 lists items at the key's indent, v2 indents them further). That file
# holds resolved passwords: private to the owner, and gone when this script exits.
use_host_network_config() {
	resolved_config=$(mktemp "${TMPDIR:-/tmp}/sessionlib-ha.XXXXXX")
	trap 'rm -f "$resolved_config"' EXIT
	run_compose config | awk '
		/^    ports:$/ { skip = 1; next }
		skip && /^(      |    - )/ { next }
		{ skip = 0; print }' >"$resolved_config"
	files=(-f "$resolved_config")
}

# The TLS variant reads its certificates from the host: issued once (a CA of the stack's own),
# kept until the directory is deleted. The exporter's and Prometheus' target URIs become
# rediss:// (HA_REDIS_SCHEME, read by the compose files).
prepare_tls() {
	if [[ $tls != 1 ]]; then
		export HA_REDIS_SCHEME=redis
		return 0
	fi
	[[ $tls_dir = /* ]] || tls_dir=$root/$tls_dir
	local python=${HA_PYTHON:-$root/.venv/bin/python}
	[[ -x $python ]] || die "HA_TLS=1 needs $python with the project installed (make setup)"
	(cd "$root" && "$python" -m deploy.compose.certificates "$tls_dir")
	export HA_TLS_DIR=$tls_dir HA_REDIS_SCHEME=rediss
}

random_secret() {
	od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

# First use: .env from .env.example, every empty *_PASSWORD= line given a fresh random value
# and every empty *_KEYS= line a JSON list of one, so no shared default secret exists anywhere.
# Later: a password .env.example gained since (a new ACL user) is appended with a random
# value, and nothing else is touched (keys turned on later would refuse every session id).
ensure_env_file() {
	local line name
	if [[ ! -f $env_file ]]; then
		(
			umask 077
			while IFS= read -r line; do
				[[ $line =~ ^[A-Z_]*PASSWORD=$ ]] && line+=$(random_secret)
				[[ $line =~ ^[A-Z_]*_KEYS=$ ]] && line+="[\"$(random_secret)\"]"
				printf '%s\n' "$line"
			done <"$root/.env.example" >"$env_file"
		)
		echo "ha.sh: created $env_file with random passwords and keys (see .env.example)"
		return 0
	fi
	while IFS= read -r line; do
		[[ $line =~ ^([A-Z_]*PASSWORD)=$ ]] || continue
		name=${BASH_REMATCH[1]}
		grep -q "^$name=" "$env_file" && continue
		printf '%s=%s\n' "$name" "$(random_secret)" >>"$env_file"
		echo "ha.sh: added a random $name to $env_file (see .env.example)"
	done <"$root/.env.example"
}

env_value() {
	local name=$1 default=$2 value
	value=$(sed -n "s/^$name=//p" "$env_file" | tail -n 1)
	echo "${value:-$default}"
}

# `up -d` already waits for the depends_on health conditions; this waits for the rest (the
# services at the end of the chain) and fails fast on a container that died. Containers are
# found by compose's project label, which v1 and v2 both set.
wait_healthy() {
	local deadline=$((SECONDS + wait_seconds)) states pending
	while ((SECONDS < deadline)); do
		states=$(docker ps -a --filter "label=com.docker.compose.project=$project" -q |
			xargs -r docker inspect --format \
				'{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}')
		[[ -n $states ]] || die "no containers of project $project"
		if grep -Eq ' (exited [1-9][0-9]*|dead) | unhealthy$' <<<"$states"; then
			echo "$states" >&2
			die "a container failed; see: deploy/compose/ha.sh logs"
		fi
		pending=$(grep -Ev ' (running 0 (healthy|none)|exited 0 none)$' <<<"$states" || true)
		if [[ -z $pending ]]; then
			return 0
		fi
		sleep 2
	done
	echo "$pending" >&2
	die "not healthy after ${wait_seconds}s; see: deploy/compose/ha.sh logs"
}

print_endpoints() {
	local host n
	host=$(env_value HA_BIND_ADDRESS 127.0.0.1)
	cat <<EOF
ha.sh: the HA stack is up (project $project)
  gateway        http://$host:$(env_value GATEWAY_PORT 8080)   (POST /login, GET /me, /cart)
  cart           http://$host:$(env_value CART_PORT 8081)
  Prometheus     http://$host:$(env_value PROMETHEUS_PORT 9090)
  Grafana        http://$host:$(env_value GRAFANA_PORT 3000)   (user admin, GRAFANA_ADMIN_PASSWORD in .env)
  redis_exporter http://$host:$(env_value REDIS_EXPORTER_PORT 9121)/metrics
EOF
	if [[ $mode == cluster ]]; then
		echo "  cluster nodes  ports$(for n in 1 2 3 4 5 6; do printf ' %s' "$(env_value "CLUSTER_${n}_PORT" $((7000 + n)))"; done) (redis-cli -c --user admin)"
	else
		echo "  sentinels      ports $(env_value SENTINEL_1_PORT 26380) $(env_value SENTINEL_2_PORT 26381) $(env_value SENTINEL_3_PORT 26382), master name $(env_value REDIS_MASTER_NAME mymaster)"
	fi
}

main() {
	local command=${1:-}
	[[ -n $command ]] || die "usage: ha.sh up|down|stop|start|ps|build|config|logs|compose [ARGS...]"
	shift
	[[ $network == bridge || $network == host ]] || die "HA_NETWORK is bridge or host"
	[[ $mode == sentinel || $mode == cluster ]] || die "HA_MODE (make's MODE) is sentinel or cluster"
	if [[ $mode == cluster && $tls == 1 ]]; then
		die "TLS=1 is not wired for the compose Cluster stack yet; the local topology" \
			"(make up-local SECURE=1 MODE=cluster) and the Helm chart run Cluster mode over TLS"
	fi
	detect_compose
	case $command in
	down | stop | ps | logs)
		if [[ ! -f $env_file ]]; then
			echo "ha.sh: no $env_file, so nothing was started with it"
			return 0
		fi
		;;
	*) ensure_env_file ;;
	esac
	prepare_tls
	select_files
	case $command in
	up)
		run_compose up -d --remove-orphans "$@"
		wait_healthy
		print_endpoints
		;;
	down)
		run_compose down --remove-orphans "$@"
		;;
	# Whatever failed over while the stack ran, each node asks the sentinels at start which one
	# is master now, so a stopped stack comes back with the data of the last master.
	start)
		run_compose start "$@"
		wait_healthy
		print_endpoints
		;;
	stop) run_compose stop "$@" ;;
	ps | build | config | logs) run_compose "$command" "$@" ;;
	compose) run_compose "$@" ;;
	*) die "unknown command '$command'; use up|down|stop|start|ps|build|config|logs|compose" ;;
	esac
}

main "$@"
