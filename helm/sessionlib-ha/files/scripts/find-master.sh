#!/bin/sh
# Prints host:port of the current master: what most of the sentinels that answer name, or
# FALLBACK_MASTER (pod 0) when none answers. The start scripts use the same answer; this is
# the same logic on its own, for a person in a pod (`sh find-master.sh`) and for the tests.
set -eu
SCRIPT_NAME=find-master
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

: "${SENTINELS:?SENTINELS (host:port ...) is required}"
: "${FALLBACK_MASTER:?FALLBACK_MASTER (host:port) is required}"
: "${MASTER_NAME:=mymaster}"

current_master
