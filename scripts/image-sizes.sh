#!/usr/bin/env bash
# Builds the three release images the way the Dockerfile's builder stage
# would (release build, stripped), through the same runtime stage, and
# prints their sizes. Builder stage swapped for host binaries (BINARIES=
# prebuilt) because no registry is reachable here; the runtime stage, and
# so the image contents, are the same. Needs root (a private podman).
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/containers.sh
source scripts/lib/containers.sh

cargo build --release --locked --bins
mkdir -p target/image-bins
for service in gateway user auth; do
    strip -o "target/image-bins/portico-$service" "target/release/portico-$service"
done

portico_engine_start
trap portico_engine_stop EXIT
portico_base_images

printf '%-16s %12s %12s\n' image "binary (MB)" "image (MB)"
for service in gateway user auth; do
    podman build --quiet --format docker --pull=never --build-arg BINARIES=prebuilt \
        --target "$service" -t "portico-$service:size" . >/dev/null
    image=$(podman image inspect --format '{{.Size}}' "portico-$service:size")
    binary=$(stat -c %s "target/image-bins/portico-$service")
    awk -v s="portico-$service" -v b="$binary" -v i="$image" \
        'BEGIN { printf "%-16s %12.1f %12.1f\n", s, b / 1e6, i / 1e6 }'
done
