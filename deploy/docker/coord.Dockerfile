# herd coordinator: `coord` (no libtorch) on a slim base.
# Build from the repository root:  docker build -f deploy/docker/coord.Dockerfile -t herd-coord .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p herd-coordinator --bin coord

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home herd && mkdir -p /state && chown herd /state
COPY --from=build /src/target/release/coord /usr/local/bin/coord
USER herd
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/coord"]
# needs HERD_TOKEN (or --token-file); plaintext for in-cluster traffic, or pass --tls-cert/--tls-key
CMD ["serve", "--state", "/state/herd-state.db", "--listen", "0.0.0.0:50051", "--allow-plaintext", "--out-dir", "/state/out"]
