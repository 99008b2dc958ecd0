# herd worker: the `worker` binary with the libtorch of torch 2.11.0 (CUDA 13) on a CUDA 13 runtime.
# Build from the repository root:  docker build -f deploy/docker/worker.Dockerfile -t herd-worker .

# --- build: Rust + the torch 2.11.0 wheel (its libtorch is what tch 0.24 links against) --------
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/torch && /opt/torch/bin/pip install --no-cache-dir torch==2.11.0
ENV LIBTORCH_USE_PYTORCH=1 PYTHON_SYS_EXECUTABLE=/opt/torch/bin/python
WORKDIR /src
COPY . .
RUN cargo build --release -p herd-worker --bin worker

# --- runtime: CUDA 13 base, libtorch and its NVIDIA wheels at the same path as in the build ----
# (the binary's rpath points at /opt/torch/.../torch/lib; torch's own libs find the nvidia/
# wheels relative to themselves)
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04
ARG SITE=/opt/torch/lib/python3.11/site-packages
COPY --from=build ${SITE}/torch/lib ${SITE}/torch/lib
COPY --from=build ${SITE}/nvidia ${SITE}/nvidia
COPY --from=build /src/target/release/worker /usr/local/bin/worker
RUN useradd --create-home herd && mkdir -p /cache && chown herd /cache
USER herd
ENV HERD_CACHE_DIR=/cache
# preemptible nodes send SIGTERM: the worker drains (finishes or gives back its lease) and exits
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/worker"]
