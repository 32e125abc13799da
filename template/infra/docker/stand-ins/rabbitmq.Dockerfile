# Stands in for rabbitmq:4.1-management-alpine, built from Debian 12's
# packages, when no registry is reachable (`cargo xtask compose-test` builds
# it only then).
#
# Reproduces what docker-compose.yml relies on: RABBITMQ_DEFAULT_USER and
# RABBITMQ_DEFAULT_PASS (the user the broker creates on its first start),
# the node named after the container's hostname, its data in
# /var/lib/rabbitmq (a volume), the management plugin on 15672, logs on
# stdout, and `rabbitmq-diagnostics -q ping` for the health check; the
# broker runs as the rabbitmq user.
# Does not reproduce: the broker is RabbitMQ 3.10 on Erlang 25 (Debian
# 12's), not 4.1 (quorum-queue and Khepri defaults differ; this project
# declares classic queues, which behave the same); the user's id is
# Debian's; no RABBITMQ_DEFAULT_VHOST or configuration files mounted into
# /etc/rabbitmq/conf.d.
# Debian 12's current package versions are the point of a stand-in: unpinned.
# hadolint global ignore=DL3008
FROM {{project-name}}-stand-in/debian:bookworm
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && rabbitmq-plugins enable --offline rabbitmq_management >/dev/null \
 && mkdir -p /etc/rabbitmq/conf.d \
 && chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
COPY rabbitmq-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV HOME=/var/lib/rabbitmq \
    RABBITMQ_CONFIG_FILES=/etc/rabbitmq/conf.d
# hadolint ignore=DL3066
USER rabbitmq
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 5672 15672
CMD ["rabbitmq-server"]
