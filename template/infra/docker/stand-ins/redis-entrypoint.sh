#!/bin/sh
# The stand-in's entrypoint (see redis.Dockerfile): options alone mean
# redis-server; as root, the server runs as the redis user; exec, so it is
# PID 1 and receives the stop signal itself.
set -eu
case "${1:-}" in -*) set -- redis-server "$@" ;; esac
if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
  chown redis:redis /data
  exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
