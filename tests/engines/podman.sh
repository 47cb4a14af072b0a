#!/bin/bash
# SPDX-License-Identifier: MIT
# Real podman (Debian's 4.3) on pkgcachefs (docs/recipes/docker-podman.md): rootful, its own
# storage under $TMP, the base image of base-image.sh (`podman import`). Two hosts share one
# file:// remote, each its own store at the same mountpoint, -o allow_other:
#  A. host A: `podman run -v PKG/root:/root/.cache:z` as root and `--user 1000:1000` with its
#     own directory install from the loopback index (downloading); umount pushes;
#  B. host B, empty store: both containers say "Using cached", no wheel download;
#  C. `podman build -v PKG/root/pip:/root/.cache/pip` of docs/recipes/podman/Containerfile:
#     pip in RUN uses the mount's cache for alpha and downloads only delta, which lands on the
#     mount at once (no harvest): a host venv then installs delta with no download; the image
#     holds no cache.
# podman's default rlimits (1048576 open files and processes) are above this machine's hard
# limits and runc may not raise them here: every run gets --ulimit nofile=1024:1024
# --ulimit nproc=4096:4096 (the recipe says so).
#
# usage: podman.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
eng_init "${1:-}"
command -v podman >/dev/null || fail "podman is not installed (tools/install-deps.sh --test installs it)"
T0=$(eng_now)
eng_base_tarball
PODMAN=(podman --root "$TMP/podman/root" --runroot "$TMP/podman/run" --cgroup-manager cgroupfs
	--events-backend file --storage-driver overlay)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
t=$(eng_now)
"${PODMAN[@]}" import "$BASE_TAR" "$BASE_IMAGE" >/dev/null || fail "podman import failed"
eng_time "podman import ($(podman --version))" "$t"
podman_cleanup() {
	local rc=$?
	"${PODMAN[@]}" rm -af >/dev/null 2>&1
	"${PODMAN[@]}" system reset -f >/dev/null 2>&1
	awk -v t="$TMP/podman" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
		while read -r m; do umount -l "$m"; done
	(exit $rc)
	eng_cleanup
}
trap podman_cleanup EXIT
eco_index_start
REM=$TMP/remote
PKG=$TMP/var-cache-pkg
mkdir -p "$REM"

job() {
	local tag=$1 mode=$2 out=$TMP/job-$1.log
	local args=(--rm --network host "${LIMITS[@]}")
	if [ "$mode" = root ]; then
		args+=(-v "$PKG/root:/root/.cache:z")
	else
		args+=(--user 1000:1000 -e HOME=/home/u -v "$PKG/u1000:/home/u/.cache:z")
	fi
	"${PODMAN[@]}" run "${args[@]}" "$BASE_IMAGE" sh -c '
		python3 -m venv /tmp/v && /tmp/v/bin/pip install --progress-bar off \
			--index-url "$1" --trusted-host 127.0.0.1 alpha' sh "$INDEX_URL" >"$out" 2>&1 || {
		tail -n 30 "$out" >&2
		fail "the $tag container failed"
	}
	! grep -qi 'cache has been disabled\|not owned' "$out" || fail "pip in $tag disabled its cache"
}

log "A. host A"
t=$(eng_now)
pcf_mount "$TMP/storeA" "$PKG" --remote "file://$REM" -o allow_other
"$RECIPES/pkgcache-dirs.sh" --owner root "$PKG/root" >/dev/null &&
	"$RECIPES/pkgcache-dirs.sh" --owner 1000:1000 "$PKG/u1000" >/dev/null || fail "pkgcache-dirs.sh failed"
n=$(eco_whl_requests)
job A-root root
job A-u1000 u1000
eng_downloads_since "$n" 6 "host A, root and uid 1000 containers"
pcf_umount "$PKG"
pcf_wait_daemon_exit "$TMP/storeA"
eng_time "A: host A, two containers, umount + push" "$t"

log "B. host B: empty store, same remote"
t=$(eng_now)
pcf_mount "$TMP/storeB" "$PKG" --remote "file://$REM" -o allow_other
n=$(eco_whl_requests)
job B-root root
eco_expect_cached "$TMP/job-B-root.log" alpha beta gamma
job B-u1000 u1000
eco_expect_cached "$TMP/job-B-u1000.log" alpha beta gamma
eng_downloads_since "$n" 0 "host B, root and uid 1000 containers"
eng_time "B: host B cold from the remote, two containers" "$t"

log "C. podman build -v"
t=$(eng_now)
CTX=$TMP/ctx
mkdir -p "$CTX"
cp "$RECIPES/podman/Containerfile" "$CTX/"
printf 'alpha\ndelta==2.0.0\n' >"$CTX/requirements.txt"
n=$(eco_whl_requests)
"${PODMAN[@]}" build "${LIMITS[@]}" --network host -v "$PKG/root/pip:/root/.cache/pip" \
	--build-arg "BASE=$BASE_IMAGE" --build-arg "PIP_INDEX_URL=$INDEX_URL" \
	--build-arg PIP_TRUSTED_HOST=127.0.0.1 -t pcf-app:test "$CTX" >"$TMP/build.log" 2>&1 || {
	tail -n 30 "$TMP/build.log" >&2
	fail "podman build failed"
}
eco_expect_cached "$TMP/build.log" alpha beta gamma
eng_downloads_since "$n" 1 "podman build (delta only)"
ls "$PKG/root/pip/http" >/dev/null || fail "no pip cache on the mount"
[ -z "$("${PODMAN[@]}" run --rm "${LIMITS[@]}" pcf-app:test sh -c 'ls -A /root/.cache/pip 2>/dev/null')" ] ||
	fail "the image holds the bound cache's files"
"$PY" -m venv "$TMP/hostvenv" && n=$(eco_whl_requests) &&
	"$TMP/hostvenv/bin/pip" install --cache-dir "$PKG/root/pip" --index-url "$INDEX_URL" \
		--trusted-host 127.0.0.1 --progress-bar off delta==2.0.0 >"$TMP/pip-host.log" 2>&1 ||
	{ tail "$TMP/pip-host.log" >&2; fail "host pip after the build failed"; }
eco_expect_cached "$TMP/pip-host.log" delta
eng_downloads_since "$n" 0 "a host venv after podman build"
eng_time "C: podman build -v" "$t"
"${PODMAN[@]}" rm -af >/dev/null 2>&1
pcf_umount "$PKG"
pcf_wait_daemon_exit "$TMP/storeB"
pcf_fsck "$TMP/storeB" "host B"
eng_time "podman.sh in all" "$T0"
eng_times
echo "PASS: podman"
