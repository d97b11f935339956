#!/bin/sh
# Links the files the chart shares with compose and the local topology into the chart, which
# Helm cannot read from outside its own directory: deploy/redis/*.conf and *.acl (the ACL
# users), deploy/haproxy/haproxy.cfg (the optional master endpoint), deploy/prometheus/
# *.rules.yml and deploy/grafana/dashboards/*.json become symlinks under
# helm/sessionlib-ha/files/ (Helm follows them, and `helm package` stores their contents).
# Links to files that are gone are removed. Safe to run again; tests/helm fails, naming this
# script, whenever the chart and deploy/ disagree.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
chart="$root/helm/sessionlib-ha/files"

# sync SOURCE_DIR PATTERN TARGET_DIR UP: UP is the ../ path from TARGET_DIR to the root.
sync() {
    mkdir -p "$chart/$3"
    for shipped in "$chart/$3"/$2; do
        [ -e "$shipped" ] || [ -L "$shipped" ] || continue
        [ -e "$root/$1/$(basename "$shipped")" ] || rm -f "$shipped"
    done
    for shared in "$root/$1"/$2; do
        [ -f "$shared" ] || continue
        ln -sfn "$4$1/$(basename "$shared")" "$chart/$3/$(basename "$shared")"
    done
}

sync deploy/redis '*.conf' redis ../../../../
sync deploy/redis '*.acl' redis ../../../../
sync deploy/haproxy '*.cfg' haproxy ../../../../
sync deploy/prometheus '*.rules.yml' prometheus ../../../../
sync deploy/grafana/dashboards '*.json' grafana/dashboards ../../../../../
