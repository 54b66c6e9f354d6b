# syntax=docker/dockerfile:1
# countersign's container image: one static (musl) binary at /usr/local/bin/countersign,
# run as user 65532, on an empty base: no shell, no package manager. The layout is
# image/rootfs's, which tests/image/build uses too, so the image the tests run is this one.
#
#   docker build -t countersign .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REPO:TAG --push .
#
# Each platform builds natively (under emulation for a foreign one), so no cross C
# toolchain is needed for ring.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Reproducible: paths remapped, symbols stripped, file times from the commit.
ARG SOURCE_DATE_EPOCH=0
RUN target="$(uname -m)-unknown-linux-musl" \
 && rustup target add "$target" \
 && RUSTFLAGS="--remap-path-prefix=/src=/src --remap-path-prefix=${CARGO_HOME:-/usr/local/cargo}=/cargo" \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target "$target" --bin countersign \
 && image/rootfs "target/$target/release/countersign" /etc/ssl/certs/ca-certificates.crt /rootfs

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="countersign" \
      org.opencontainers.image.description="Human approval between a workload change and the cluster: a Kubernetes admission webhook and operator" \
      org.opencontainers.image.source="https://github.com/countersign-dev/countersign" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /rootfs/ /
USER 65532:65532
WORKDIR /home/nonroot
ENTRYPOINT ["/usr/local/bin/countersign"]
CMD ["serve"]
