# herd worker: the `worker` binary with the libtorch of torch 2.11.0 and the CUDA 13 libraries its
# nvidia-* wheels bundle (runtime, cuBLAS, cuDNN, NCCL, ...), on a slim Debian base. No CUDA base
# image: the GPU driver (libcuda) comes from the node through the NVIDIA container toolkit, and it
# must support CUDA 13 (driver 580 or newer).
#
# From the repository root (pip installs torch==2.11.0 from PyPI, cargo compiles `worker` against
# its libtorch, `--profile dist`: no debug info, stripped; needs Debian, PyPI,
# static.rust-lang.org and crates.io):
#   docker build -f deploy/docker/worker.Dockerfile -t herd-worker .
# From a binary and a torch compiled elsewhere (deploy/images/build --prebuilt): a build context
# holding bin/worker and torch/ (a site-packages' torch/lib and nvidia/ folders), e.g.
#   buildah bud --build-arg BINARIES=prebuilt --build-arg TORCH=torch-prebuilt \
#       -f deploy/docker/worker.Dockerfile -t herd-worker CONTEXT
# BASE replaces the base image (deploy/images/build uses a debootstrap of bookworm: no registry).
# Debian bookworm's buildah (1.28) ignores an ARG's default when it resolves a stage name in FROM:
# pass the defaults to it (--build-arg BINARIES=compiled --build-arg TORCH=torch-wheel).
ARG BASE=debian:bookworm-slim
# compiled: cargo builds it in the `compiled` stage; prebuilt: bin/worker of the build context
ARG BINARIES=compiled
# torch-wheel: the libraries of the torch 2.11.0 wheel from PyPI; torch-prebuilt: torch/ of the
# build context
ARG TORCH=torch-wheel

# --- torch-pip: torch 2.11.0 (its libtorch is what tch 0.24 links against) ------------------------
FROM ${BASE} AS torch-pip
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
# /opt/libtorch gets the shared libraries only, hard-linked: torch/lib (without the Python
# bindings) and nvidia/*/lib, side by side as in site-packages, because torch's libraries find
# the NVIDIA ones through their RPATH $ORIGIN/../../nvidia/<package>/lib
RUN python3 -m venv /opt/torch \
    && /opt/torch/bin/pip install --no-cache-dir --disable-pip-version-check torch==2.11.0 \
    && site="$(/opt/torch/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && mkdir -p /opt/libtorch/torch /opt/libtorch/nvidia \
    && cp -al "$site/torch/lib" /opt/libtorch/torch/lib \
    && rm -f /opt/libtorch/torch/lib/libtorch_python.so \
    && for lib in "$site"/nvidia/*/lib; do \
           package="$(basename "$(dirname "$lib")")"; \
           mkdir -p "/opt/libtorch/nvidia/$package" && cp -al "$lib" "/opt/libtorch/nvidia/$package/lib"; \
       done \
    && find /opt/libtorch -name '*.a' -delete

# --- the runtime's first layers: the base and /opt/libtorch, from the wheel or the build context.
# The libraries sit below the binary (they change with torch, it with every commit), and the
# final stage adds only a small layer on top of them (no second copy of the libraries).
FROM ${BASE} AS torch-wheel
COPY --from=torch-pip /opt/libtorch /opt/libtorch

FROM ${BASE} AS torch-prebuilt
COPY torch/ /opt/libtorch/

# --- compiled: Rust from static.rust-lang.org, built against the wheel's libtorch ------------------
FROM torch-pip AS compiled
ARG RUST_VERSION=1.95.0
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl gcc g++ libc6-dev make \
    && rm -rf /var/lib/apt/lists/* \
    && curl --proto '=https' --tlsv1.2 -sSf -o /tmp/rustup-init \
        https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init \
    && chmod +x /tmp/rustup-init \
    && /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain "${RUST_VERSION}" \
    && rm /tmp/rustup-init
# torch-sys asks this Python where torch (headers, libraries) is, as scripts/env does
ENV PATH=/root/.cargo/bin:${PATH} LIBTORCH_USE_PYTORCH=1 PYTHON_SYS_EXECUTABLE=/opt/torch/bin/python
WORKDIR /src
COPY . .
# the target folder and the registry stay out of the stage: only the binary moves on
RUN cargo build --locked --profile dist -p herd-worker --bin worker \
    && install -D target/dist/worker /out/bin/worker \
    && rm -rf target /root/.cargo/registry

# --- prebuilt: the build context's bin/worker ---------------------------------------------------
FROM scratch AS prebuilt
COPY bin/worker /out/bin/worker

FROM ${BINARIES} AS bins

# --- runtime: no compiler, no Python, no pip cache ---------------------------------------------
FROM ${TORCH}
# ca-certificates: GCS, the Hugging Face Hub, https:// coordinators and OTLP verify against the system roots
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home herd && mkdir -p /cache && chown herd /cache
COPY --from=bins /out/bin/worker /usr/local/bin/worker
# The binary's RUNPATH names the torch/lib of wherever it was compiled; LD_LIBRARY_PATH comes first
# and names the one here, whichever stage built the binary. /usr/local/nvidia: where GKE's device
# plugin mounts the driver's libraries and nvidia-smi; NVIDIA_*: what the NVIDIA container
# toolkit reads to mount the driver (the settings the nvidia/cuda base images carry).
ENV LD_LIBRARY_PATH=/opt/libtorch/torch/lib:/usr/local/nvidia/lib:/usr/local/nvidia/lib64 \
    PATH=/usr/local/nvidia/bin:${PATH} \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HERD_CACHE_DIR=/cache
USER herd
# preemptible nodes send SIGTERM: the worker drains (finishes or gives back its lease) and exits
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/worker"]
