# shellcheck shell=sh
# Shared by the scripts the chart runs in the Redis pods: logging, redis-cli with the pod's
# auth and TLS, and the one answer to "who is master now?". Sourced, never run on its own.
#
# POSIX sh on purpose: the chart uses the official Debian-based redis image (where sh is dash),
# and staying POSIX keeps the -alpine variant (busybox ash) possible. Tools used: redis-cli,
# awk, sed, grep, sort, uniq, head, wc, timeout, date, sha1sum, sha256sum; getent when present.
#
# The environment is the contract with the pod spec (and with tests/helm, which runs these
# scripts on 127.0.0.1 with the same variables):
#   ANNOUNCE_HOST     this pod's stable name (pod DNS name under the headless Service)
#   REDIS_PORT        Redis port of every node (a test gives each node its own)
#   SENTINEL_PORT     Sentinel port of this pod
#   SENTINELS         every sentinel as host:port, space-separated
#   REDIS_NODES       every Redis node as host:port, space-separated, in pod order
#   COLD_START_WAIT_SECONDS  how long an election waits for every node before a majority
#                     of them elects (see elect_master)
#   MASTER_NAME       the name the sentinels monitor the master under
#   ADMIN_PASSWORD, SESSIONLIB_PASSWORD, REPLICA_PASSWORD, SENTINEL_PASSWORD,
#   EXPORTER_PASSWORD the password of each ACL user of deploy/redis/users.acl and
#                     sentinel-users.acl (all empty: no auth); the scripts log in as admin
#   TLS_ENABLED       "true" to speak TLS only; TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE,
#                     TLS_AUTH_CLIENTS (yes|no|optional) then say how
#   LOCAL_HOST        how this pod reaches its own Redis/Sentinel (127.0.0.1)

# A caller's REDISCLI_AUTH must never leak into a command for another server.
unset REDISCLI_AUTH

log() {
    printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${SCRIPT_NAME:-sessionlib}" "$*" >&2
}

die() {
    log "ERROR: $*"
    exit 1
}

# redis_cli HOST PORT COMMAND...: one command as the admin user, bounded in time, output in
# raw form. timeout(1) rather than a redis-cli option: redis-cli 7.0 has no connect timeout,
# and a NetworkPolicy that drops packets would otherwise hang a probe or a hook until killed.
redis_cli() {
    _host=$1 _port=$2
    shift 2
    if [ "${TLS_ENABLED:-false}" = true ]; then
        if [ -n "${TLS_CERT_FILE:-}" ] && [ "${TLS_AUTH_CLIENTS:-no}" != no ]; then
            set -- --cert "$TLS_CERT_FILE" --key "$TLS_KEY_FILE" "$@"
        fi
        set -- --tls --cacert "$TLS_CA_FILE" "$@"
    fi
    if [ -n "${ADMIN_PASSWORD:-}" ]; then
        # The password goes through the environment, never the command line (ps, /proc).
        REDISCLI_AUTH=$ADMIN_PASSWORD timeout "${REDIS_CLI_TIMEOUT:-3}" \
            redis-cli --raw --user admin -h "$_host" -p "$_port" "$@"
    else
        timeout "${REDIS_CLI_TIMEOUT:-3}" redis-cli --raw -h "$_host" -p "$_port" "$@"
    fi
}

local_redis() {
    redis_cli "${LOCAL_HOST:-127.0.0.1}" "$REDIS_PORT" "$@"
}

local_sentinel() {
    redis_cli "${LOCAL_HOST:-127.0.0.1}" "$SENTINEL_PORT" "$@"
}

host_of() {
    printf '%s\n' "${1%:*}"
}

port_of() {
    printf '%s\n' "${1##*:}"
}

# sentinel_view HOST PORT: the master that one sentinel names, as host:port, or nothing.
sentinel_view() {
    _reply=$(redis_cli "$1" "$2" SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null) ||
        return 0
    # A good answer is exactly two lines, host and port; nil, NOAUTH, IDONTKNOW and friends
    # are not.
    printf '%s\n' "$_reply" | awk '
        NF { line[++n] = $0 }
        END { if (n == 2 && line[2] ~ /^[0-9]+$/ && line[1] !~ / /) print line[1] ":" line[2] }'
}

# sentinel_master: host:port named by most of the sentinels that answer, or nothing when
# none does. Ties go to the smaller address, so every pod that asks picks the same one.
sentinel_master() {
    for _sentinel in $SENTINELS; do
        sentinel_view "$(host_of "$_sentinel")" "$(port_of "$_sentinel")"
    done | sort | uniq -c | sort -k1,1nr -k2,2 | awk 'NR == 1 { print $2 }'
}

# A node that must not serve until it knows its master replicates from this address, where
# nothing listens: it keeps the data it loaded, refuses writes (READONLY) and lets no replica
# copy from it (Redis answers NOMASTERLINK). "Parked", until it follows a master or is elected.
PARKED_MASTER=127.0.0.1:1

# node_summary HOST:PORT: "<address> <state> <offset> <keys>" for a node that answers, where
# state is master, replica or parked; nothing for a node that does not (or is LOADING).
# offset is the replication offset; Redis 7.0 does not keep it across a restart from the AOF,
# so after a cold start every node reports 0 and the number of keys tells them apart.
node_summary() {
    _info=$(redis_cli "$(host_of "$1")" "$(port_of "$1")" INFO replication keyspace \
        2>/dev/null | tr -d '\r') || return 0
    printf '%s\n' "$_info" | awk -v address="$1" -v parked="$PARKED_MASTER" '
        /^role:/ { role = substr($0, 6) }
        /^master_host:/ { host = substr($0, 13) }
        /^master_port:/ { port = substr($0, 13) }
        /^master_repl_offset:/ { offset = substr($0, 20) }
        /^db[0-9]+:keys=/ { split($0, field, /[=,]/); keys += field[2] }
        END {
            if (role == "") exit
            state = role == "master" ? "master" : (host ":" port == parked ? "parked" : "replica")
            print address, state, offset + 0, keys + 0
        }'
}

# live_master: the first Redis node of REDIS_NODES that answers as master, or nothing.
live_master() {
    for _node in $REDIS_NODES; do
        case $(node_summary "$_node") in
            *" master "*)
                printf '%s\n' "$_node"
                return 0
                ;;
        esac
    done
}

is_live_master() {
    case $(node_summary "$1") in
        *" master "*) return 0 ;;
    esac
    return 1
}

# elect_master SINCE: for when no master runs anywhere and no sentinel knows one (a cold
# start, a first install). Among the Redis nodes that answer, the one holding the most data
# (highest replication offset, then most keys; ties to the earlier pod) is made master and
# printed. Every node must answer, or a majority once COLD_START_WAIT_SECONDS have passed
# since SINCE (a node that never comes back must not block the others); until then this
# prints nothing. Every pod that elects from the same answers picks the same node, and a node
# without data never wins while one that answers holds some: no replica copies an empty set.
elect_master() {
    _summaries=$(for _node in $REDIS_NODES; do node_summary "$_node"; done)
    _answered=$(printf '%s\n' "$_summaries" | awk 'NF { n++ } END { print n + 0 }')
    _total=$(echo "$REDIS_NODES" | wc -w)
    if [ "$_answered" -lt "$_total" ]; then
        [ $(($(date +%s) - $1)) -ge "${COLD_START_WAIT_SECONDS:-30}" ] || return 0
        if [ $((_answered * 2)) -le "$_total" ]; then
            log "no master anywhere, and only $_answered of $_total Redis nodes answer:" \
                "waiting for a majority to elect one"
            return 0
        fi
    fi
    # Sort key: holds data at all, then offset, then keys, then pod order.
    _winner=$(printf '%s\n' "$_summaries" |
        awk 'NF { print ($4 > 0), $3, $4, ++n, $1, $2 }' |
        sort -k1,1nr -k2,2nr -k3,3nr -k4,4n | head -n 1)
    # shellcheck disable=SC2086 # split into its fields on purpose
    set -- $_winner
    if [ "$6" != master ]; then
        redis_cli "$(host_of "$5")" "$(port_of "$5")" REPLICAOF NO ONE >/dev/null || return 0
        log "elected $5 master of $MASTER_NAME ($3 keys, offset $2; $_answered of" \
            "$_total nodes answered)"
    fi
    printf '%s\n' "$5"
}

# follow_master ADDRESS: make the local Redis a replica of ADDRESS.
follow_master() {
    local_redis REPLICAOF "$(host_of "$1")" "$(port_of "$1")" >/dev/null
}

# sentinel_id HOST:PORT: the id of the sentinel announced at HOST:PORT, derived from that
# stable address (a pod's DNS name), 40 hex digits as Sentinel wants.
sentinel_id() {
    printf '%s' "$1" | sha1sum | awk '{ print $1 }'
}

is_me() {
    [ "$(host_of "$1")" = "$ANNOUNCE_HOST" ] && [ "$(port_of "$1")" = "$REDIS_PORT" ]
}

# config_quote VALUE: a Redis config string literal. Callers reject values with quotes,
# backslashes or white space first (see check_password), so wrapping is enough.
config_quote() {
    printf '"%s"' "$1"
}

# Sentinel 7.0 writes auth-pass back unquoted when it rewrites its config, so a password with
# white space, quotes or a backslash would leave a config that a restarted sentinel cannot
# read: refuse it at start, with its name, rather than fail later.
check_password() {
    case $2 in
        *[[:space:]\"\'\\]*) die "$1 must not contain white space, quotes or backslashes" ;;
    esac
}

ACL_USERS="admin sessionlib replica sentinel exporter"

# acl_enabled: whether the pod runs with ACL users (the chart's auth.enabled). Then every
# user's password must be there (and writable back by Sentinel), or the start stops, by name.
acl_enabled() {
    [ -n "${ADMIN_PASSWORD:-}" ] || return 1
    for _user in $ACL_USERS; do
        _name=$(printf '%s_PASSWORD' "$_user" | tr '[:lower:]' '[:upper:]')
        eval "_password=\${$_name:-}"
        # shellcheck disable=SC2154 # set by the eval above
        [ -n "$_password" ] || die "$_name is empty while ADMIN_PASSWORD is set"
        check_password "$_name" "$_password"
    done
}

# render_acl TEMPLATE OUT: a shared ACL template (deploy/redis/users.acl or
# sentinel-users.acl) as Redis reads it, the way deploy/local renders it: comment and blank
# lines dropped, each <USER>_PASSWORD_HASH placeholder filled with the hex SHA-256 of that
# user's password. The file holds no password; it is still readable by this user only.
render_acl() {
    for _user in $ACL_USERS; do
        _name=$(printf '%s_PASSWORD' "$_user" | tr '[:lower:]' '[:upper:]')
        eval "_password=\${$_name}"
        _hash=$(printf '%s' "$_password" | sha256sum | awk '{ print $1 }')
        eval "${_name}_HASH=\$_hash; export ${_name}_HASH"
    done
    grep -v -e '^#' -e '^[[:space:]]*$' "$1" >"$2.rules"
    sh "$(dirname "$0")/render-config.sh" "$2.rules" >"$2.new"
    rm -f "$2.rules"
    chmod 600 "$2.new"
    mv "$2.new" "$2"
}

# tls_directives PORT: the lines that make a server speak TLS only, on PORT. Appended after
# the shared template, where "port 0" overrides its plain-text port.
tls_directives() {
    [ "${TLS_ENABLED:-false}" = true ] || return 0
    cat <<EOF

# --- TLS (added by the chart) ---
port 0
tls-port $1
tls-cert-file $(config_quote "$TLS_CERT_FILE")
tls-key-file $(config_quote "$TLS_KEY_FILE")
tls-ca-cert-file $(config_quote "$TLS_CA_FILE")
tls-auth-clients ${TLS_AUTH_CLIENTS:-no}
tls-replication yes
EOF
}

# append_server_extras FILE PORT VALUES_KEY: what follows the shared template in a rendered
# config: the TLS lines, then the user's EXTRA_CONFIG_FILE under a heading naming its value.
append_server_extras() {
    tls_directives "$2" >>"$1"
    if [ -n "${EXTRA_CONFIG_FILE:-}" ] && [ -s "$EXTRA_CONFIG_FILE" ]; then
        printf '\n# --- %s (chart values) ---\n' "$3" >>"$1"
        cat "$EXTRA_CONFIG_FILE" >>"$1"
    fi
}

# wait_resolvable HOST SECONDS: Sentinel refuses to start when a "sentinel monitor" host name
# does not resolve, and a pod's DNS name appears only once the pod has an IP.
wait_resolvable() {
    command -v getent >/dev/null 2>&1 || return 0
    _deadline=$(($(date +%s) + $2))
    until getent hosts "$1" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$_deadline" ] || die "$1 does not resolve after $2 s"
        log "waiting for $1 to resolve"
        sleep 1
    done
}
