#!/bin/bash
# SPDX-License-Identifier: MIT
# Real Docker (Debian's docker.io: dockerd 20.10, BuildKit built in, no buildx) on pkgcachefs,
# as docs/recipes/docker-podman.md and docs/recipes/buildkit.md say. dockerd is started here
# (lib.sh) and stopped at the end; the base image is debootstrap's bookworm with python3 and pip
# (base-image.sh, cached). Two hosts share one file:// remote, each its own store on the same
# mountpoint (stands for /var/cache/pkg), mounted as root with -o allow_other:
#  A. host A: a root container (`-v PKG/root:/root/.cache`) and a uid-1000 container
#     (`--user 1000:1000 -v PKG/u1000:/home/u/.cache`, a directory pkgcache-dirs.sh made) install
#     from the loopback index, downloading; umount pushes;
#  B. host B, empty store: without allow_other the uid-1000 container gets EACCES; with it both
#     containers install "Using cached" with no wheel download;
#  C. BuildKit: docs/recipes/buildkit/build.sh as written (it picks the classic builder here)
#     with the user's options (-t, --network host, --build-arg BASE/PIP_INDEX_URL/...): the
#     RUN's cache mount is seeded from PKG/root/pip (pip says "Using cached" for what host A
#     had, downloads only the new delta), the harvest build runs with the same options (its
#     deps stage is CACHED), and the merge brings delta's wheel back: a host venv then
#     installs delta with no download;
#  D. a remount under a running container (observed): `pkgcachefs umount` takes the host's
#     mountpoint away but the container keeps the FUSE mount (docker's default rprivate bind),
#     reads and writes it, the daemon serves it, and umount waits; once the container stops,
#     the daemon finishes, and the container's write is in the store. `:rslave` is refused
#     when the parent mount is private (this machine: no systemd, / is private).
# Prints the time of each step.
#
# usage: docker.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
eng_init "${1:-}"
T0=$(eng_now)
eng_base_tarball
eng_dockerd
eco_index_start
REM=$TMP/remote
PKG=$TMP/var-cache-pkg
mkdir -p "$REM"

# job TAG MODE LOG: a container's pip install alpha (root or u1000) through PKG.
job() {
	local tag=$1 mode=$2 out=$TMP/job-$1.log
	local args=(--rm --network host)
	if [ "$mode" = root ]; then
		args+=(-v "$PKG/root:/root/.cache")
	else
		args+=(--user 1000:1000 -e HOME=/home/u -v "$PKG/u1000:/home/u/.cache")
	fi
	$DOCKER run "${args[@]}" "$BASE_IMAGE" sh -c '
		python3 -m venv /tmp/v && /tmp/v/bin/pip install --progress-bar off \
			--index-url "$1" --trusted-host 127.0.0.1 alpha' sh "$INDEX_URL" >"$out" 2>&1
}
job_ok() {
	job "$@" || { tail -n 30 "$TMP/job-$1.log" >&2; fail "the $1 container failed"; }
	! grep -qi 'cache has been disabled\|not owned' "$TMP/job-$1.log" || fail "pip in $1 disabled its cache"
}

log "A. host A"
t=$(eng_now)
pcf_mount "$TMP/storeA" "$PKG" --remote "file://$REM" -o allow_other
"$RECIPES/pkgcache-dirs.sh" --owner root "$PKG/root" >/dev/null &&
	"$RECIPES/pkgcache-dirs.sh" --owner 1000:1000 "$PKG/u1000" >/dev/null || fail "pkgcache-dirs.sh failed"
n=$(eco_whl_requests)
job_ok A-root root
eng_downloads_since "$n" 3 "host A, root container"
n=$(eco_whl_requests)
job_ok A-u1000 u1000
eng_downloads_since "$n" 3 "host A, uid 1000 container"
bad=$(find "$PKG/u1000/pip" ! -uid 1000 | head -n 3)
[ -z "$bad" ] || fail "uid 1000's cache has files of another owner: $bad"
pcf_umount "$PKG"
pcf_wait_daemon_exit "$TMP/storeA"
eng_time "A: host A, two containers, umount + push" "$t"

log "B. host B: empty store, same remote"
t=$(eng_now)
pcf_mount "$TMP/storeB" "$PKG" --remote "file://$REM"
$DOCKER run --rm --user 1000:1000 -v "$PKG/u1000:/home/u/.cache" "$BASE_IMAGE" ls /home/u/.cache \
	>"$TMP/job-B-refused.log" 2>&1 && fail "a uid-1000 container read a mount without allow_other"
grep -q 'Permission denied' "$TMP/job-B-refused.log" || { cat "$TMP/job-B-refused.log" >&2; fail "refused, but not with EACCES"; }
pcf_umount "$PKG"
pcf_wait_daemon_exit "$TMP/storeB"
pcf_mount "$TMP/storeB" "$PKG" --remote "file://$REM" -o allow_other
n=$(eco_whl_requests)
job_ok B-root root
eco_expect_cached "$TMP/job-B-root.log" alpha beta gamma
job_ok B-u1000 u1000
eco_expect_cached "$TMP/job-B-u1000.log" alpha beta gamma
eng_downloads_since "$n" 0 "host B, root and uid 1000 containers"
eng_time "B: host B cold from the remote, three containers" "$t"

log "C. BuildKit: build.sh as written"
t=$(eng_now)
CTX=$TMP/ctx
mkdir -p "$CTX"
cp "$RECIPES/buildkit/Dockerfile" "$RECIPES/buildkit/pkgcache-sync.sh" "$CTX/"
printf 'alpha\ndelta==2.0.0\n' >"$CTX/requirements.txt"
printf 'print("app")\n' >"$CTX/app.py"
n=$(eco_whl_requests)
PATH=/usr/bin:$PATH DOCKER=$DOCKER sh "$RECIPES/buildkit/build.sh" "$PKG/root/pip" "$CTX" -- \
	-t pcf-app:test --network host --progress plain --build-arg "BASE=$BASE_IMAGE" \
	--build-arg "PIP_INDEX_URL=$INDEX_URL" --build-arg PIP_TRUSTED_HOST=127.0.0.1 \
	>"$TMP/build.log" 2>&1 || { tail -n 40 "$TMP/build.log" >&2; fail "build.sh failed"; }
grep -q 'Using cached .*alpha-1.0.0' "$TMP/build.log" && grep -q 'Using cached .*gamma-3.0' "$TMP/build.log" || {
	grep -E 'pkgcache-sync|Using cached|Downloading' "$TMP/build.log" >&2
	fail "the build did not use the seeded cache mount"
}
grep -q 'pkgcache-sync: [1-9][0-9]* files from /seed to /root/.cache/pip' "$TMP/build.log" ||
	fail "the seed step copied nothing into the cache mount"
eng_downloads_since "$n" 1 "the image build (delta only)"
# The second build's "[deps 4/4] RUN" (the pip install) must be "CACHED".
awk '/load build definition/ { b++ } b == 2 && /\[deps [0-9]+\/[0-9]+\] RUN/ { id = $1 }
	b == 2 && id != "" && $1 == id && $2 == "CACHED" { ok = 1 } END { exit !ok }' "$TMP/build.log" || fail "the harvest build did not find the deps stage in the layer cache (options not passed through?)"
grep -q 'pkgcache-sync: [1-9][0-9]* files from /root/.cache/pip to /pkgcache-new' "$TMP/build.log" ||
	fail "the harvest found nothing new"
[ "$($DOCKER run --rm pcf-app:test python3 -c 'import alpha, delta; print("ok")')" = ok ] ||
	fail "the image build.sh tagged does not hold the app's dependencies"
grep -cE '^#[0-9]+ [0-9.]+ harvest [0-9]' "$TMP/build.log" | grep -qx 1 || fail "the harvest step ran in the image build too"
[ -z "$($DOCKER images -q 'pkgcache-seed')" ] || fail "build.sh left its seed image"
"$PY" -m venv "$TMP/hostvenv" && n=$(eco_whl_requests) &&
	"$TMP/hostvenv/bin/pip" install --cache-dir "$PKG/root/pip" --index-url "$INDEX_URL" \
		--trusted-host 127.0.0.1 --progress-bar off delta==2.0.0 >"$TMP/pip-host.log" 2>&1 ||
	{ tail "$TMP/pip-host.log" >&2; fail "host pip after the merge failed"; }
eco_expect_cached "$TMP/pip-host.log" delta
eng_downloads_since "$n" 0 "a host venv after the harvest"
eng_time "C: build.sh (classic BuildKit), image + harvest + merge" "$t"

log "D. remount under a running container"
t=$(eng_now)
$DOCKER run -d --name pcf-long --network host -v "$PKG:/c" "$BASE_IMAGE" sleep 600 >/dev/null ||
	fail "docker run -d failed"
$DOCKER exec pcf-long test -d /c/root/pip || fail "the running container does not see the mount"
if $DOCKER run --rm -v "$TMP:/r:rslave" "$BASE_IMAGE" true 2>"$TMP/rslave.log"; then
	log "D: :rslave accepted here (the parent mount is shared or slave)"
else
	grep -q 'not a shared or slave mount' "$TMP/rslave.log" || { cat "$TMP/rslave.log" >&2; fail ":rslave refused for another reason"; }
	log "D: :rslave refused: $(head -n 1 "$TMP/rslave.log")"
fi
timeout 15 "$BIN" umount "$PKG" >"$TMP/umount-busy.log" 2>&1
rc=$?
[ $rc = 124 ] || { cat "$TMP/umount-busy.log" >&2; fail "umount under a running container exited $rc (it waited for the daemon before)"; }
! is_mounted "$PKG" || fail "the host's mountpoint is still mounted"
pcf_daemon_pid "$TMP/storeB" >/dev/null || fail "the daemon went away while the container holds the mount"
$DOCKER exec pcf-long sh -c 'cat /c/root/pip/http/*/*/*/*/*/* >/dev/null 2>&1; echo written-inside >/c/root/inside' ||
	fail "the container lost its mount"
log "D: host mountpoint gone, daemon alive, the container reads and writes; stopping it"
$DOCKER rm -f pcf-long >/dev/null
pcf_wait_daemon_exit "$TMP/storeB"
[ "$(cat "$TMP/storeB/exit-status" 2>/dev/null)" = 0 ] || fail "the daemon's exit status is $(cat "$TMP/storeB/exit-status")"
pcf_mount "$TMP/storeB" "$PKG"
[ "$(cat "$PKG/root/inside")" = written-inside ] || fail "the container's write after the host umount is lost"
pcf_umount "$PKG"
pcf_wait_daemon_exit "$TMP/storeB"
pcf_fsck "$TMP/storeB" "host B"
eng_time "D: remount under a running container" "$t"
eng_time "docker.sh in all" "$T0"
eng_times
echo "PASS: docker"
