# kvstore node image. Built from local files only: the binaries come from the host's
# `cargo build --release` (copied to docker/bin by scripts/docker-up.sh) and the base image is
#   - kvstore-base:bookworm, made locally by scripts/docker-base.sh (debootstrap + docker import;
#     no registry needed), or
#   - any Debian bookworm image where a registry is reachable:
#     --build-arg BASE_IMAGE=debian:bookworm-slim
# The host must build with glibc <= 2.36 (bookworm's), e.g. on Debian 12.
ARG BASE_IMAGE=kvstore-base:bookworm
FROM ${BASE_IMAGE}

COPY docker/bin/kvstore-node docker/bin/kv /usr/local/bin/

# The data dir must be a volume (ext4/xfs): the container's overlay filesystem refuses O_DIRECT.
VOLUME ["/data"]
ENV KVSTORE_LISTEN=0.0.0.0 \
    KVSTORE_PORT=7001 \
    KVSTORE_DATA_DIR=/data \
    KVSTORE_CORES=1 \
    KV_PORT=7001
EXPOSE 7001 9100

HEALTHCHECK --interval=2s --timeout=2s --start-period=10s --retries=5 \
  CMD ["kv", "--timeout-ms", "1500", "ping"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["kvstore-node"]
