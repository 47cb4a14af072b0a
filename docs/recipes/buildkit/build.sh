#!/bin/sh
# SPDX-License-Identifier: MIT
# build.sh: build an image whose BuildKit cache mount is seeded from a pkgcachefs directory,
# then bring the cache files the build added back into that directory (docs/recipes/buildkit.md).
#
#   build.sh [-f DOCKERFILE] PKGCACHE_DIR CONTEXT [-- IMAGE_BUILD_ARGS...]
#
# 1. docker buildx build --build-context pkgcache=PKGCACHE_DIR ... IMAGE_BUILD_ARGS CONTEXT
# 2. the same Dockerfile again, --target pkgcache-new --output type=local,dest=TMP, on the same
#    builder (the cache mount lives in the builder), with a fresh PKGCACHE_RUN;
# 3. pkgcache-sync.sh merge TMP PKGCACHE_DIR: only paths the directory lacks.
# Run it as the user who owns PKGCACHE_DIR (merged files get the runner's owner).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dockerfile=
if [ "${1:-}" = -f ]; then dockerfile=$2; shift 2; fi
[ $# -ge 2 ] || { echo "usage: $0 [-f DOCKERFILE] PKGCACHE_DIR CONTEXT [-- IMAGE_BUILD_ARGS...]" >&2; exit 2; }
pkgcache=$1 context=$2
shift 2
[ "${1:-}" != -- ] || shift
set -- --build-context "pkgcache=$pkgcache" ${dockerfile:+-f "$dockerfile"} "$@"

docker buildx build "$@" "$context"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
docker buildx build --build-context "pkgcache=$pkgcache" ${dockerfile:+-f "$dockerfile"} \
	--target pkgcache-new --build-arg "PKGCACHE_RUN=$(date +%s)-$$" \
	--output "type=local,dest=$out" "$context"
"$here/pkgcache-sync.sh" merge "$out" "$pkgcache"
