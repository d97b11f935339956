#!/bin/sh
# Entrypoint of the Prometheus container in docker-compose.ha.yml: renders the shared
# deploy/prometheus/prometheus.yml template (mounted at /etc/sessionlib/prometheus) into the
# data volume and starts Prometheus on it; the arguments are further Prometheus flags.
#
# The targets come from the environment under the template's own placeholder names
# (GATEWAY_TARGETS, REDIS_TARGETS, ...: quoted YAML flow-list items, see the template's header),
# so the compose file shows exactly what gets scraped. Re-rendered at every start: unlike Redis,
# Prometheus never rewrites its config.
set -eu

entrypoint=prometheus-entrypoint
# die, need, render: shared with the Redis entrypoint.
# shellcheck source=deploy/compose/render.sh
. "$(dirname "$0")/render.sh"

source_dir=${SESSIONLIB_PROMETHEUS_DIR:-/etc/sessionlib/prometheus}
config=${SESSIONLIB_PROMETHEUS_CONFIG:-/prometheus/prometheus.yml}

need PROMETHEUS_TARGETS GATEWAY_TARGETS CART_TARGETS REDIS_EXPORTER_TARGETS REDIS_EXPORTER_ADDRESS
SCRAPE_INTERVAL=${SCRAPE_INTERVAL:-15s}
RULES_DIR=$source_dir
# Sentinel-mode nodes and sentinels (docker-compose.ha.yml) or cluster nodes
# (docker-compose.cluster.yml): the jobs of the other mode stay empty.
REDIS_TARGETS=${REDIS_TARGETS:-}
SENTINEL_TARGETS=${SENTINEL_TARGETS:-}
REDIS_CLUSTER_TARGETS=${REDIS_CLUSTER_TARGETS:-}
[ -n "$REDIS_TARGETS$REDIS_CLUSTER_TARGETS" ] ||
	die "REDIS_TARGETS (Sentinel mode) or REDIS_CLUSTER_TARGETS (Cluster mode) must name the nodes"
export SCRAPE_INTERVAL RULES_DIR REDIS_TARGETS SENTINEL_TARGETS REDIS_CLUSTER_TARGETS
render "$source_dir/prometheus.yml" "$config"
[ -n "${SESSIONLIB_RENDER_ONLY:-}" ] && exit 0
exec /bin/prometheus --config.file="$config" "$@"
