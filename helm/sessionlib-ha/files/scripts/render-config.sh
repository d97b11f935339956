#!/bin/sh
# Fills the ${NAME} placeholders of a shared config template (deploy/redis/*.conf) from the
# environment and prints the result: the in-pod twin of deploy/local/configs.py.
#
# Usage: env NAME=value ... sh render-config.sh TEMPLATE > OUT
#
# Like Python's Template.substitute, a placeholder with no value is an error, so a template
# that grows a new placeholder fails here, loudly, instead of reaching Redis as "${NAME}".
# awk rather than envsubst: the redis image has no gettext, and awk replaces text literally
# (no "&" or backslash surprises from sed) and copes with multi-line values.
set -eu

[ $# -eq 1 ] || { echo "usage: $0 TEMPLATE" >&2; exit 2; }

awk '
{
    rest = $0
    out = ""
    while ((start = index(rest, "${")) > 0) {
        tail = substr(rest, start + 2)
        stop = index(tail, "}")
        name = substr(tail, 1, stop - 1)
        if (stop == 0 || name !~ /^[A-Za-z_][A-Za-z0-9_]*$/) {
            # Not a placeholder: keep the two characters and look further on.
            out = out substr(rest, 1, start + 1)
            rest = tail
            continue
        }
        if (!(name in ENVIRON)) {
            printf "%s:%d: placeholder %s has no value\n", FILENAME, FNR, name > "/dev/stderr"
            missing = 1
        }
        out = out substr(rest, 1, start - 1) ENVIRON[name]
        rest = substr(tail, stop + 1)
    }
    print out rest
}
END { exit missing }
' "$1"
