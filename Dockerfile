# periscope in a container: the agent binary on Debian bookworm.
#
#   docker build -t periscope .
#   docker run --rm --privileged --pid=host --network=host \
#     -v /sys/fs/bpf:/sys/fs/bpf -v /run/netns:/run/netns periscope
#
# The builder compiles the eBPF programs with Debian's clang-19 (bookworm main, 19.1.7) and
# generates vmlinux.h from the build host's /sys/kernel/btf/vmlinux with bpftool. On a build
# host without kernel BTF, put a vmlinux.h (bpftool btf dump file /sys/kernel/btf/vmlinux
# format c) in the build context and pass --build-arg PERISCOPE_VMLINUX_H=<its path in the
# context>. demo/docker-compose.yml runs this image with the privileges and
# mounts it needs.

FROM rust:1.89-bookworm AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang-19 llvm-19 libbpf-dev bpftool \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG PERISCOPE_VMLINUX_H=
RUN if [ -n "$PERISCOPE_VMLINUX_H" ]; then \
      export PERISCOPE_VMLINUX_H="/src/$PERISCOPE_VMLINUX_H"; \
    else \
      unset PERISCOPE_VMLINUX_H; \
    fi \
 && cargo build --release --locked -p periscope \
 && cp target/release/periscope /usr/local/bin/periscope

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /usr/local/bin/periscope /usr/local/bin/periscope
COPY configs/default.yaml /etc/periscope/config.yaml
ENTRYPOINT ["periscope"]
CMD ["run", "-c", "/etc/periscope/config.yaml"]
