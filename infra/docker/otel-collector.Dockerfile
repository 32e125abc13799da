# The OpenTelemetry Collector (core distribution) with a way to check its
# health from inside the container.
#
# The upstream image is built FROM scratch: the collector binary and nothing
# else, so no shell, wget or curl for a container health check, and the
# collector has no health subcommand (open-telemetry/
# opentelemetry-collector-releases#866). Compose's `depends_on:
# service_healthy` needs one, so this adds a single static busybox binary,
# used only to GET the health_check extension (13133, see
# infra/observability/otel-collector.yaml). Nothing else changes: the same
# entrypoint, the same non-root user.
#
#   docker build -f infra/docker/otel-collector.Dockerfile -t gantry-otel-collector infra/docker

# The musl variant of busybox is one statically linked binary, so it runs
# in an image without a libc.
FROM busybox:1.37.0-musl AS probe

# 0.144 or later: infra/observability/otel-collector.yaml uses `otlp_grpc`.
FROM otel/opentelemetry-collector:0.156.0
COPY --from=probe /bin/busybox /probe/busybox
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/probe/busybox", "wget", "-q", "-T", "2", "-O", "/dev/null", "http://127.0.0.1:13133/"]
