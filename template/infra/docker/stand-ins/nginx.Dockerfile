# Stands in for nginxinc/nginx-unprivileged:1.27-alpine, built from Debian
# 12's packages, when no registry is reachable (`cargo xtask compose-test`
# builds it only then).
#
# Reproduces what docker-compose.yml relies on: `nginx` on PATH, started
# with the command Compose gives it (-p, -c, -e, -g), as the user 101;
# `wget` for the health check; SIGQUIT as the stop signal (a graceful
# shutdown).
# Does not reproduce: the server is NGINX 1.22 (Debian 12's), not 1.27; the
# image's own default configuration and /docker-entrypoint.d scripts (the
# compose file replaces both); busybox's wget is GNU wget here.
# Debian 12's current package versions are the point of a stand-in: unpinned.
# hadolint global ignore=DL3008
FROM {{project-name}}-stand-in/debian:bookworm
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends nginx-light wget >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 101 nginx \
 && useradd --system --uid 101 --gid 101 --home-dir /nonexistent --shell /usr/sbin/nologin nginx
USER 101
EXPOSE 8080
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
