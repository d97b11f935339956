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
