#!/usr/bin/env bash
# Makes the base image `kvstore-base:bookworm` locally, without any registry: a minimal Debian
# bookworm root filesystem from Debian's package mirror (debootstrap), imported with
# `docker import`. Skips when the image exists. On a machine that can pull images, you can
# instead build with `--build-arg BASE_IMAGE=debian:bookworm-slim` and skip this script.
set -euo pipefail

IMAGE=${KVSTORE_BASE_IMAGE:-kvstore-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE exists"
  exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "installing debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
root=$(mktemp -d /var/tmp/kvstore-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm into $root (1-2 minutes)"
debootstrap --variant=minbase bookworm "$root" "$MIRROR" >/dev/null
# Smaller image: no package lists, docs or caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c . | docker import - "$IMAGE" >/dev/null
echo "base image $IMAGE made from Debian bookworm (minbase)"
