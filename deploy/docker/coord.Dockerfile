# herd coordinator: `coord` (no libtorch) on a slim Debian base.
#
# From the repository root (compiles `coord` here, `--profile dist`: no debug info, stripped; needs
# Debian, static.rust-lang.org and crates.io):
#   docker build -f deploy/docker/coord.Dockerfile -t herd-coord .
# From a binary compiled elsewhere (deploy/images/build --prebuilt): a build context holding
# bin/coord, e.g.
#   buildah bud --build-arg BINARIES=prebuilt -f deploy/docker/coord.Dockerfile -t herd-coord CONTEXT
# BASE replaces the base image (deploy/images/build uses a debootstrap of bookworm: no registry).
# Debian bookworm's buildah (1.28) ignores an ARG's default when it resolves a stage name in FROM:
# pass the defaults to it (--build-arg BINARIES=compiled).
ARG BASE=debian:bookworm-slim
# compiled: cargo builds it in the `compiled` stage; prebuilt: bin/coord of the build context
ARG BINARIES=compiled

# --- compiled: Rust from static.rust-lang.org on the same base ---------------------------------
FROM ${BASE} AS compiled
ARG RUST_VERSION=1.95.0
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl gcc g++ libc6-dev make \
    && rm -rf /var/lib/apt/lists/* \
    && curl --proto '=https' --tlsv1.2 -sSf -o /tmp/rustup-init \
        https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init \
    && chmod +x /tmp/rustup-init \
    && /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain "${RUST_VERSION}" \
    && rm /tmp/rustup-init
ENV PATH=/root/.cargo/bin:${PATH}
WORKDIR /src
COPY . .
# the target folder and the registry stay out of the stage: only the binary moves on
RUN cargo build --locked --profile dist -p herd-coordinator --bin coord \
    && install -D target/dist/coord /out/bin/coord \
    && rm -rf target /root/.cargo/registry

# --- prebuilt: the build context's bin/coord ------------------------------------------------------
FROM scratch AS prebuilt
COPY bin/coord /out/bin/coord

FROM ${BINARIES} AS bins

# --- runtime -------------------------------------------------------------------------------------
FROM ${BASE}
# ca-certificates: https:// coordinators, GCS and the OTLP exporter verify against the system roots
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home herd && mkdir -p /state && chown herd /state
COPY --from=bins /out/bin/coord /usr/local/bin/coord
USER herd
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/coord"]
# needs HERD_TOKEN (or --token-file); plaintext for in-cluster traffic, or pass --tls-cert/--tls-key
CMD ["serve", "--state", "/state/herd-state.db", "--listen", "0.0.0.0:50051", "--allow-plaintext", "--out-dir", "/state/out"]
