# shellcheck shell=sh
# Shell functions the compose entrypoints share (sourced, POSIX sh): they fill the
# ${NAME} placeholders of the templates in deploy/redis/ and deploy/prometheus/ from the
# environment, the way deploy/local does with Python's string.Template. awk and sed only: the
# official redis (Debian slim) and prom/prometheus (busybox) images have no envsubst.

die() {
	echo "${entrypoint:-entrypoint}: $*" >&2
	exit 1
}

need() {
	for name in "$@"; do
		eval "value=\${$name:-}"
		# shellcheck disable=SC2154 # set by the eval above
		[ -n "$value" ] || die "$name is not set (see .env.example)"
	done
}

# A double-quoted string for a Redis config file, and equally for JSON: backslashes and quotes
# escaped, the same rule deploy/local uses. Passwords with control characters are refused.
quote() {
	case "$1" in
	*[[:cntrl:]]*) die "a value contains a control character" ;;
	esac
	printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# The ACL users of deploy/redis/users.acl and sentinel-users.acl (DESIGN §3b); each has one
# password, the same on every node and sentinel, in <USER>_PASSWORD.
ACL_USERS="admin sessionlib replica sentinel exporter"

# render_acl TEMPLATE OUT: an ACL template as Redis reads it, rendered as deploy/local renders
# it: comment and blank lines dropped, each <USER>_PASSWORD_HASH placeholder filled with the
# hex SHA-256 of <USER>_PASSWORD. The file holds no password (and is private all the same).
render_acl() {
	for _user in $ACL_USERS; do
		_name=$(printf '%s_PASSWORD' "$_user" | tr '[:lower:]' '[:upper:]')
		need "$_name"
		eval "_password=\$$_name"
		# shellcheck disable=SC2154 # set by the eval above
		_hash=$(printf '%s' "$_password" | sha256sum | awk '{ print $1 }')
		eval "${_name}_HASH=\$_hash; export ${_name}_HASH"
	done
	grep -v -e '^#' -e '^[[:space:]]*$' "$1" >"$2.rules"
	render "$2.rules" "$2"
	rm -f "$2.rules"
}

# Replaces each ${NAME} in a template by the exported variable NAME. A placeholder nobody set
# stops the start instead of reaching Redis or Prometheus as a literal, as deploy/local does.
render() {
	awk '{
		rest = $0; out = ""
		while (match(rest, /[$][{][A-Z_][A-Z0-9_]*[}]/)) {
			name = substr(rest, RSTART + 2, RLENGTH - 3)
			if (!(name in ENVIRON)) {
				print "placeholder " name " is not set" > "/dev/stderr"
				exit 3
			}
			out = out substr(rest, 1, RSTART - 1) ENVIRON[name]
			rest = substr(rest, RSTART + RLENGTH)
		}
		print out rest
	}' "$1" >"$2.new" || {
		rm -f "$2.new"
		die "could not render $1"
	}
	mv "$2.new" "$2"
}
