#!/bin/sh
# Entrypoint of the Redis Cluster nodes in docker-compose.cluster.yml. It runs the Helm chart's
# own cluster pod scripts (helm/sessionlib-ha/files/scripts and files/cluster, mounted
# read-only), so compose and Helm create, re-form and heal a cluster with the same keeper:
# cluster-1 creates the cluster once every node answers and none holds data; a node that
# comes back on another IP (every container after `down` and `up` on a bridge network) is met
# again by its name; a node that lost its volume joins its shard again as a replica.
#
#   cluster-node.sh          render the config, start the keeper and redis-server
#   cluster-node.sh ready    the healthcheck: cluster ok, and a master or a synced replica
#
# The chart's scripts source their helpers from their own directory, so both directories are
# copied into one first. redis-server is started through the image's docker-entrypoint.sh,
# which hands /data to the redis user and drops root (REDIS_SERVER below).
set -eu

scripts=/tmp/sessionlib-cluster-scripts

case ${1:-start} in
start)
	rm -rf "$scripts"
	mkdir -p "$scripts"
	cp /opt/sessionlib/pod-scripts/*.sh /opt/sessionlib/cluster-scripts/*.sh "$scripts/"
	# The rendered config and the keeper's slot lock live on the volume, beside nodes.conf and
	# the append-only files, so the node is the same one after its container is recreated.
	export CONFIG_DIR=/data/conf DATA_DIR=/data REDIS_SERVER=docker-entrypoint.sh
	exec sh "$scripts/cluster-start.sh"
	;;
ready)
	exec sh "$scripts/cluster-probe.sh" cluster-ready
	;;
*)
	echo "usage: $0 [start|ready]" >&2
	exit 2
	;;
esac
