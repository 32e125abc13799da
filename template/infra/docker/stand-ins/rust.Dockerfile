# Stands in for rust:1.95-slim-bookworm when no registry is reachable
# (`cargo xtask compose-test` builds it only then): Debian 12 with gcc and
# libc6-dev, and this machine's own Rust 1.95 toolchain (rustc, cargo, the
# standard library), which the build context carries in toolchain/.
#
# Reproduces what infra/docker/Dockerfile relies on: RUSTUP_HOME,
# CARGO_HOME (/usr/local/cargo, writable) and PATH as upstream sets them, so
# `cargo install` and `cargo build` work as they do there; the same Debian
# release, so binaries link the same glibc as the distroless runtime.
# Adds: the build machine's own extra CA certificates (the context's ca/,
# from its /usr/local/share/ca-certificates), so cargo reaches the registry
# where egress goes through a TLS-inspecting proxy, as on this project's CI.
# Does not reproduce: rustup itself (the toolchain is copied, not
# installed: no `rustup` command, no other toolchains or components).
# Debian 12's current package versions are the point of a stand-in: unpinned.
# hadolint global ignore=DL3008
FROM {{project-name}}-stand-in/debian:bookworm
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates gcc libc6-dev >/dev/null \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUST_VERSION=1.95.0
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
COPY toolchain/ /usr/local/rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu/
RUN mkdir -p /usr/local/cargo/bin \
 && for tool in cargo rustc rustdoc; do \
      ln -s /usr/local/rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu/bin/$tool /usr/local/cargo/bin/$tool; \
    done \
 && chmod -R a+w /usr/local/cargo \
 && rustc --version && cargo --version
