#!/usr/bin/env bash
# Builds the image cairn-node:local from a cairn-node binary, with no registry needed.
#   docker/build-image.sh [BINARY]     (default: target/release/cairn-node)
# If the base image cairn-base:bookworm is missing, it is made with debootstrap (root,
# about 25 s through the Debian mirror apt uses). With a registry, set BASE to
# debian:bookworm-slim to skip that step.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release/cairn-node}"
base="${BASE:-cairn-base:bookworm}"
[ -x "$bin" ] || { echo "no binary at $bin; run: cargo build --release -p cairn-node" >&2; exit 1; }
if [ "$base" = "cairn-base:bookworm" ] && ! docker image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
  root="$(mktemp -d)"
  echo "making $base with debootstrap in $root"
  debootstrap --variant=minbase bookworm "$root" >/dev/null
  tar -C "$root" -c . | docker import - "$base" >/dev/null
  rm -rf "$root"
fi
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
# Debug information is not needed in the image.
strip --strip-debug -o "$ctx/cairn-node" "$bin" 2>/dev/null || cp "$bin" "$ctx/cairn-node"
docker build -q --build-arg BASE="$base" -t cairn-node:local -f docker/Dockerfile "$ctx" >/dev/null
echo "built cairn-node:local from $bin on $base"
