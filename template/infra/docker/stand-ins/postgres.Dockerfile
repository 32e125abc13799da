# Stands in for postgres:17-alpine, built from Debian 12's packages, when no
# registry is reachable (`cargo xtask compose-test` builds it only then).
#
# Reproduces what docker-compose.yml relies on: POSTGRES_USER (the
# superuser), POSTGRES_PASSWORD (required; scram-sha-256 over TCP) and
# POSTGRES_DB (created on first start); the data directory
# /var/lib/postgresql/data (a volume, initialised once); `postgres` runs as
# the postgres user and stops on SIGINT (a fast shutdown); `pg_isready` for
# the health check.
# Does not reproduce: the server is PostgreSQL 15 (Debian 12's), not 17;
# the postgres user's id is Debian's, not Alpine's 70; no
# /docker-entrypoint-initdb.d scripts, no POSTGRES_INITDB_ARGS,
# POSTGRES_HOST_AUTH_METHOD or *_FILE secrets.
# Debian 12's current package versions are the point of a stand-in: unpinned.
# hadolint global ignore=DL3008
FROM {{project-name}}-stand-in/debian:bookworm
# The package must not create a cluster of its own: the entrypoint makes one
# in PGDATA on first start, as the upstream image does.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null \
 && sed -i 's/^#\?create_main_cluster.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf \
 && apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2777 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
