# syntax=docker/dockerfile:1
# Images of the three Portico services, one target each:
#   docker build --target gateway -t portico-gateway .   (also: user, auth)
#
# Stages: cargo-chef caches the dependency build apart from the source, so a
# source change rebuilds only Portico's own crates. The runtime is FROM
# scratch with just the C runtime the binaries link (glibc, libgcc_s), the
# CA bundle and a non-root user: no shell, no package manager, no curl —
# each binary checks its own health (`portico-<service> healthcheck`).
#
# Where no registry is reachable (our compose test), the Rust image cannot be
# pulled: BINARIES=prebuilt takes binaries built on the host from
# target/image-bins/ into the very same runtime stage instead.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG BINARIES=builder

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
# hadolint ignore=DL3059
RUN cargo install cargo-chef --locked --version 0.1.73
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# The patched h2 (vendor/h2/PORTICO.md) is a dependency, not a member: the
# recipe leaves it out, and cook builds it from its real sources.
COPY vendor/ vendor/
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bins \
    && mkdir /out \
    && cp target/release/portico-gateway target/release/portico-user target/release/portico-auth /out/ \
    && strip /out/*

FROM scratch AS prebuilt
COPY target/image-bins/ /out/

# checkov:skip=CKV_DOCKER_7: the binaries stage is a build-arg choice between two local stages, not a pulled image
# hadolint ignore=DL3006
FROM ${BINARIES} AS binaries

# The runtime's root file system: what `ldd` says the binaries load, the CA
# bundle (for an HTTPS OTLP endpoint) and /etc/passwd with the non-root user.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime-root
COPY --from=binaries /out/ /out/
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The CA bundle follows Debian's stable updates rather than a pinned version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /rootfs/etc/ssl/certs /rootfs/tmp /rootfs/var/lib/portico \
    && ldd /out/* | grep -oE '/[^ ]+\.so(\.[0-9]+)*' | sort -u | xargs -I{} cp --parents -L {} /rootfs/ \
    && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
    && echo 'portico:x:65532:65532:portico:/var/lib/portico:/sbin/nologin' >/rootfs/etc/passwd \
    && echo 'portico:x:65532:' >/rootfs/etc/group \
    && chmod 1777 /rootfs/tmp \
    && chown 65532:65532 /rootfs/var/lib/portico

FROM scratch AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/portico/portico" \
      org.opencontainers.image.vendor="Portico" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="scratch"
COPY --from=runtime-root /rootfs/ /
USER 65532:65532
WORKDIR /var/lib/portico

FROM runtime AS gateway
LABEL org.opencontainers.image.title="portico-gateway" \
      org.opencontainers.image.description="Portico API gateway"
COPY --from=binaries /out/portico-gateway /usr/local/bin/portico-gateway
# Inside a container the listeners must face the container network.
ENV PORTICO_GATEWAY_LISTEN__API=0.0.0.0:8080 \
    PORTICO_GATEWAY_LISTEN__ADMIN=0.0.0.0:9080 \
    PORTICO_GATEWAY_TELEMETRY__LOG_FORMAT=json
# The allocator (mimalloc) commits its arenas as they are used and returns
# freed pages at once: an idle keep-alive client connection then costs
# ≈ 21 KiB instead of ≈ 33, with no measurable CPU cost under load
# (docs/benchmarks.md, round three).
ENV MIMALLOC_ARENA_EAGER_COMMIT=0 \
    MIMALLOC_PURGE_DELAY=0
EXPOSE 8080 9080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/portico-gateway", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/portico-gateway"]

FROM runtime AS user
LABEL org.opencontainers.image.title="portico-user" \
      org.opencontainers.image.description="Portico user service"
COPY --from=binaries /out/portico-user /usr/local/bin/portico-user
ENV PORTICO_USER_LISTEN__API=0.0.0.0:8081 \
    PORTICO_USER_LISTEN__ADMIN=0.0.0.0:9081 \
    PORTICO_USER_TELEMETRY__LOG_FORMAT=json
EXPOSE 8081 9081
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/portico-user", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/portico-user"]

FROM runtime AS auth
LABEL org.opencontainers.image.title="portico-auth" \
      org.opencontainers.image.description="Portico auth service"
COPY --from=binaries /out/portico-auth /usr/local/bin/portico-auth
ENV PORTICO_AUTH_LISTEN__API=0.0.0.0:8082 \
    PORTICO_AUTH_LISTEN__ADMIN=0.0.0.0:9082 \
    PORTICO_AUTH_TELEMETRY__LOG_FORMAT=json
EXPOSE 8082 9082
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/portico-auth", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/portico-auth"]
