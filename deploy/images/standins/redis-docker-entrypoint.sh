#!/bin/sh
# The official redis image's entrypoint contract, for the Debian-built stand-in: arguments that
# start with "-" or name a .conf file go to redis-server, and a root start hands /data to the
# redis user and drops root (setpriv from util-linux stands in for gosu).
set -e

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi

exec "$@"
