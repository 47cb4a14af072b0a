#!/bin/sh
# SPDX-License-Identifier: MIT
# build.sh: build an image whose BuildKit cache mount is seeded from a pkgcachefs directory,
# then bring the cache files the build added back into that directory (docs/recipes/buildkit.md).
#
#   build.sh [-f DOCKERFILE] PKGCACHE_DIR CONTEXT [-- BUILD_OPTIONS...]
#
# BUILD_OPTIONS are the user's (-t, --network, --build-arg, --secret, --platform, ...): all go
# to the image build; all but those that name outputs (-t/--tag, -o/--output, --target, --push,
# --load, --iidfile, --metadata-file) go to the harvest build too, so that it finds the same
# `deps` stage in the layer cache and runs with the same network, secrets and platform.
#
# 1. the image: the directory becomes the stage `pkgcache-seed` of the Dockerfile;
# 2. the same Dockerfile again, --target pkgcache-new --output type=local,dest=TMP, on the same
#    builder (the cache mount lives in the builder), with a fresh PKGCACHE_RUN;
# 3. pkgcache-sync.sh merge TMP PKGCACHE_DIR: only paths the directory lacks.
#
# The builder is chosen by itself (PKGCACHE_BUILDER=buildx or classic forces one):
#   buildx   when `docker buildx` exists: the directory is the named context `pkgcache`;
#   classic  otherwise (Debian's docker.io ships BuildKit in dockerd but no buildx):
#            DOCKER_BUILDKIT=1 docker build, the directory packed first into a scratch image
#            (deleted at the end) passed as --build-arg PKGCACHE=IMAGE.
# Run it as the user who owns PKGCACHE_DIR (merged files get the runner's owner).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
docker=${DOCKER:-docker}
dockerfile=
if [ "${1:-}" = -f ]; then dockerfile=$2; shift 2; fi
[ $# -ge 2 ] || { echo "usage: $0 [-f DOCKERFILE] PKGCACHE_DIR CONTEXT [-- BUILD_OPTIONS...]" >&2; exit 2; }
pkgcache=$1 context=$2
shift 2
[ "${1:-}" != -- ] || shift
[ -d "$pkgcache" ] || { echo "$0: $pkgcache is not a directory" >&2; exit 2; }

builder=${PKGCACHE_BUILDER:-}
if [ -z "$builder" ]; then
	if $docker buildx version >/dev/null 2>&1; then builder=buildx; else builder=classic; fi
fi

# The harvest's options: the user's, less those naming outputs. Kept NUL-free and quoted in
# a file, as POSIX sh has no arrays.
hopts=$(mktemp)
out=$(mktemp -d)
seed_image=
cleanup() {
	rm -rf "$out" "$hopts"
	[ -z "$seed_image" ] || $docker image rm -f "$seed_image" >/dev/null 2>&1 || true
}
trap cleanup EXIT
quote() { printf "'%s' " "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
skip=0
for a; do
	if [ $skip = 1 ]; then skip=0; continue; fi
	case $a in
	-t | --tag | -o | --output | --target | --iidfile | --metadata-file) skip=1 ;;
	-t?* | --tag=* | -o?* | --output=* | --target=* | --iidfile=* | --metadata-file=*) ;;
	--push | --load) ;;
	*) quote "$a" >>"$hopts" ;;
	esac
done

case $builder in
buildx)
	set -- buildx build --build-context "pkgcache=$pkgcache" "$@"
	harvest="buildx build --build-context 'pkgcache=$pkgcache'"
	;;
classic)
	seed_image=pkgcache-seed:$(date +%s)-$$
	printf 'FROM scratch\nCOPY . /\n' |
		DOCKER_BUILDKIT=1 $docker build -q -t "$seed_image" -f - "$pkgcache" >/dev/null
	set -- build --build-arg "PKGCACHE=$seed_image" "$@"
	harvest="build --build-arg 'PKGCACHE=$seed_image'"
	export DOCKER_BUILDKIT=1
	;;
*) echo "$0: PKGCACHE_BUILDER must be buildx or classic" >&2; exit 2 ;;
esac

$docker "$@" ${dockerfile:+-f "$dockerfile"} "$context"
eval "\$docker $harvest $(cat "$hopts") \${dockerfile:+-f \"\$dockerfile\"} \
	--target pkgcache-new --build-arg \"PKGCACHE_RUN=\$(date +%s)-\$\$\" \
	--output \"type=local,dest=\$out\" \"\$context\""
"$here/pkgcache-sync.sh" merge "$out" "$pkgcache"
