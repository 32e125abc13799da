#!/bin/sh
# The stand-in's entrypoint (see rabbitmq.Dockerfile): writes the default
# user and console logging into the broker's configuration, then execs the
# broker, so it is PID 1 and receives the stop signal itself.
set -eu
conf=/etc/rabbitmq/conf.d/10-stand-in.conf
{
  echo "log.console = true"
  echo "log.console.level = info"
  echo "log.file = false"
  echo "listeners.tcp.default = 5672"
  echo "management.tcp.port = 15672"
  if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then echo "default_user = $RABBITMQ_DEFAULT_USER"; fi
  if [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then echo "default_pass = $RABBITMQ_DEFAULT_PASS"; fi
} >"$conf"
exec "$@"
