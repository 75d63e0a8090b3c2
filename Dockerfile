# syntax=docker/dockerfile:1
#
# The one Agora image: the hub (charts/agora runs `agora server --kubernetes`) and the node agent
# (charts/agora-node runs `agora agent`) are the same binary, so they are the same image.
#
#   docker build -t localhost/agora:dev .
#   docker run --rm localhost/agora:dev --help
#
# tests/dockerfile.rs checks what the charts rely on: the builder's Rust is the workspace's
# rust-version, builder and runtime share a Debian release, the binary is `agora` on the image's
# PATH (both charts run `command: ["agora"]`), and the runtime user is the hub chart's runAsUser.

# The workspace's rust-version (Cargo.toml), so the image also proves that the declared minimum
# Rust builds the release binary. Bookworm because the runtime below is Debian 12: a binary linked
# against a newer glibc than the runtime's would not start.
FROM rust:1.94-bookworm AS build
WORKDIR /src
# .dockerignore admits only what the build reads (the workspace's manifests and sources), so the
# context carries no target/, no local database, no node key.
COPY . .
# --locked: exactly the dependency versions of Cargo.lock, as CI tests them. The cache mounts keep
# the crate downloads and the build directory between builds (BuildKit); the binary is copied out
# in the same step because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin agora \
    && install -D -m 0755 target/release/agora /out/agora

# distroless/cc: glibc, libgcc_s (Rust's unwinder) and the CA certificates (agents reaching an
# https:// hub verify it against the system roots unless given --hub-ca), and nothing else: no
# shell, no package manager, so a compromised pod has no tools to work with. Every other library is
# either linked in (rustls, SQLite) or loaded at run time: NVML (libnvidia-ml) and CUDA's libcuda
# are not in the image, the NVIDIA container runtime mounts them from the node's driver into the
# agent's container (charts/agora-node sets NVIDIA_VISIBLE_DEVICES and the nvidia RuntimeClass),
# and without them the agent says why NVML is unavailable. This image has no libnvrtc and is built
# without `--features cuda`, so the builtin matmul workloads refuse real GPUs here
# (docs/workloads.md); `sleep`, NVML inventory and telemetry, and container jobs through the
# kubernetes executor do not need it.
#
# :nonroot runs as uid/gid 65532, the runAsUser of charts/agora; charts/agora-node sets its own
# (root without capabilities, for its hostPath state directory).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/agora /usr/local/bin/agora
# distroless sets this PATH already; it is repeated here because both charts start the binary by
# name (`command: ["agora"]`), which the container runtime resolves through the image's PATH.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 65532:65532
# 7600: the hub's REST API, agent protocol and /metrics; 9400: the agent's /metrics.
EXPOSE 7600 9400
ENTRYPOINT ["/usr/local/bin/agora"]
CMD ["--help"]
