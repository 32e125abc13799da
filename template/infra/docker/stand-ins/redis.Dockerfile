# Stands in for redis:7.4-alpine, built from Debian 12's packages, when no
# registry is reachable (`cargo xtask compose-test` builds it only then).
#
# Reproduces what docker-compose.yml relies on: `redis-server` with the
# options given as the command (--requirepass, --save, --maxmemory, ...),
# run as the redis user in /data; `redis-cli`, which reads REDISCLI_AUTH,
# and a shell with grep for the health check.
# Does not reproduce: the server is Redis 7.0 (Debian 12's), not 7.4 (none
# of 7.2-7.4's additions is used here); the redis user's id is Debian's,
# not Alpine's 999.
# Debian 12's current package versions are the point of a stand-in: unpinned.
# hadolint global ignore=DL3008
FROM {{project-name}}-stand-in/debian:bookworm
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis /data
WORKDIR /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 6379
CMD ["redis-server"]
