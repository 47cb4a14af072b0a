#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install what pkgcachefs needs on Debian 12, from Debian's own packages.
#   tools/install-deps.sh          build and run dependencies
#   tools/install-deps.sh --test   also what the tests and benchmarks need
# Runs apt-get as root (through sudo when not root). Safe to run again.
set -euo pipefail

build_pkgs=(
	meson ninja-build gcc pkg-config
	libfuse3-dev fuse3              # the FUSE library and fusermount3
	libsqlite3-dev                  # the index
	libxxhash-dev                   # XXH3-128 chunk keys
	libzstd-dev                     # per-chunk compression
	libssl-dev                      # SHA-256 (libcrypto)
	libcurl4-openssl-dev            # remotes: HTTP/WebDAV and S3
)
test_pkgs=(
	libcriterion-dev                # unit tests
	python3 python3-venv python3-pip  # real pip through the mount, test helpers
	attr psmisc procps util-linux   # getfattr, fuser, ps, mount helpers
	sqlite3 zstd
	clang-format                    # the style check
	groff-base man-db systemd       # man page lint, systemd-analyze verify of the unit
	nginx-light                     # remote tests: WebDAV (nginx's dav module)
	apache2                         # servers: Apache httpd with mod_dav/mod_dav_fs and mod_ssl, as users run it
	rclone                          # servers: `rclone serve webdav`
	libnginx-mod-http-dav-ext       # servers: nginx PROPFIND (dav-ext)
	strace                          # remote-e2e: which cache files pip opened on a cold host
	bindfs                          # benchmarks: a high-level libfuse peer (tools/bench)
	bubblewrap python3-yaml         # ecosystem: the docker -v stand-in, recipe YAML checks
	clang libclang-rt-14-dev        # fuzzing: libFuzzer with ASan and UBSan
	docker.io podman buildah        # engines: real docker run -v, BuildKit (classic), podman
	debootstrap                     # engines: the base image, built offline from the apt mirror
	uidmap slirp4netns fuse-overlayfs  # engines: podman's helpers (rootless needs subuids)
	python3-poetry pipenv           # engines: Poetry and Pipenv on a cold second host
)

pkgs=("${build_pkgs[@]}")
if [[ ${1:-} == --test ]]; then
	pkgs+=("${test_pkgs[@]}")
	# s3rver (the S3 test server) comes from the npm registry. Many machines carry Node.js
	# from elsewhere (NodeSource bundles npm, and Debian's npm package conflicts with it):
	# take Debian's only when there is no node or npm at all.
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		pkgs+=(nodejs npm)
	fi
fi

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
	echo "install-deps: all ${#pkgs[@]} packages present"
	exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
	sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
