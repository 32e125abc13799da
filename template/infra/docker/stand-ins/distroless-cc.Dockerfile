# Stands in for gcr.io/distroless/cc-debian12:nonroot, built from Debian
# 12's packages, when no registry is reachable (`cargo xtask compose-test`
# builds it only then).
#
# Reproduces what infra/docker/Dockerfile relies on: Debian 12's glibc,
# libgcc and libstdc++ (what a Rust binary links), CA certificates, time
# zones and /etc/services; /etc/passwd naming root, nobody and nonroot
# (65532), whose home is the working directory; /tmp; USER 65532:65532; and
# no shell, no package manager, nothing else to run.
# Does not reproduce: distroless's exact file list, its SBOM, and its
# signatures; the files here are copied from the same Debian packages.
# Debian 12's current package versions are the point of a stand-in: unpinned.
# hadolint global ignore=DL3008
FROM {{project-name}}-stand-in/debian:bookworm AS files
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates tzdata netbase libssl3 >/dev/null \
 && mkdir -p /out/etc /out/tmp /out/home/nonroot /out/usr/lib /out/usr/lib64 \
 && ln -s usr/lib /out/lib \
 && ln -s usr/lib64 /out/lib64 \
 && for package in libc6 libgcc-s1 libstdc++6 libssl3 tzdata netbase; do dpkg -L "$package"; done \
    | grep -v -E '^/usr/share/(doc|man|lintian|locale)|/gconv/' \
    | while read -r path; do \
        if [ -f "$path" ] || [ -L "$path" ]; then \
          real="$(readlink -f "$(dirname "$path")")/$(basename "$path")"; \
          cp -a --parents "$real" /out || exit 1; \
        fi; \
      done \
 && test -e /out/lib64/ld-linux-x86-64.so.2 \
 && test -e /out/lib/x86_64-linux-gnu/libc.so.6 \
 && test -e /out/lib/x86_64-linux-gnu/libgcc_s.so.1 \
 && cp -a --parents /etc/ssl/certs/ca-certificates.crt /out \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >/out/etc/passwd \
 && printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >/out/etc/group \
 && chown 65532:65532 /out/home/nonroot \
 && chmod 700 /out/home/nonroot \
 && chmod 1777 /out/tmp \
 && test ! -e /out/bin/sh && test ! -e /out/usr/bin/sh

FROM scratch
COPY --from=files /out/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /home/nonroot
