#!/bin/bash
# SPDX-License-Identifier: MIT
# The BuildKit recipe's file logic (docs/recipes/buildkit/) without Docker: a pkgcachefs
# directory plays the named build context `pkgcache`, a plain directory plays the cache mount
# of a new builder, and pkgcache-sync.sh runs under /bin/sh exactly as the Dockerfile's RUN
# lines call it:
#  - seed: the cache mount then holds the pip cache of the mount, byte for byte, and pip
#    installing from it says "Using cached" (and downloads only what was not there);
#  - harvest: the output holds exactly the paths the cache mount has and the seed lacks
#    (symlinks as symlinks), nothing the seed had;
#  - merge: adds those paths to the pkgcachefs directory and never overwrites a path that is
#    already there (a job that wrote it meanwhile wins); a fresh venv with the merged cache
#    downloads nothing. Paths both sides have are left alone even when the build rewrote them
#    (pip rewrites the index pages it revalidates);
#  - build.sh with a stand-in `docker` on PATH that has buildx: the two builds it asks for (the
#    image with the user's options, then the same options less -t, --target pkgcache-new
#    --output type=local with a fresh PKGCACHE_RUN) and the merge. The classic path (no
#    buildx) runs on a real dockerd in tests/engines/docker.sh.
# The Dockerfile's RUN lines are checked to call the script with these arguments.
#
# usage: buildkit-sync.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/eco.sh"
pcf_init "${1:-}"
eco_pip_env
eco_index_start

BK=$RECIPES/buildkit
SYNC=(sh "$BK/pkgcache-sync.sh")
STORE=$TMP/store
PKG=$TMP/var-cache-pkg
SEED=$PKG/pip
CM=$TMP/cache-mount	# BuildKit's cache mount on a new builder: empty

grep -q 'pkgcache-sync seed /seed /root/.cache/pip' "$BK/Dockerfile" &&
	grep -q 'pkgcache-sync harvest /seed /root/.cache/pip /pkgcache-new' "$BK/Dockerfile" &&
	grep -q 'COPY --from=pkgcache-harvest /pkgcache-new/ /' "$BK/Dockerfile" ||
	fail "the Dockerfile does not call pkgcache-sync.sh as this test does"

# pip_with CACHE TAG REQS...: a fresh venv, pip install with CACHE as the cache dir.
pip_with() {
	local cache=$1 tag=$2
	shift 2
	"$PY" -m venv "$TMP/venv-$tag" || fail "venv $tag"
	"$TMP/venv-$tag/bin/pip" install --cache-dir "$cache" --index-url "$INDEX_URL" \
		--trusted-host 127.0.0.1 --progress-bar off "$@" >"$TMP/pip-$tag.log" 2>&1 || {
		tail -n 30 "$TMP/pip-$tag.log" >&2
		fail "pip install $* ($tag) failed"
	}
}
# paths DIR: every file and symlink below DIR, relative, sorted.
paths() { (cd "$1" && find . \( -type f -o -type l \) | sort); }
sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }

pcf_mount "$STORE" "$PKG"
log "the pkgcachefs directory gets a pip cache: alpha"
pip_with "$SEED" host1 alpha
ln -s http "$SEED/link-to-http"	# a symlink, as uv's wheels-v*/ entries are

log "seed: $SEED -> the cache mount"
"${SYNC[@]}" seed "$SEED" "$CM" || fail "pkgcache-sync.sh seed failed"
diff <(sums "$SEED") <(sums "$CM") >/dev/null || fail "the seeded cache mount differs from the seed"
[ "$(readlink "$CM/link-to-http")" = http ] || fail "seed did not copy the symlink as a symlink"
"${SYNC[@]}" seed "$SEED" "$CM" 2>"$TMP/seed2.log" || fail "a second seed failed"
grep -q ': 0 files' "$TMP/seed2.log" || fail "a second seed copied again: $(cat "$TMP/seed2.log")"

log "the build's pip on the seeded cache mount: alpha (cached) and delta 2.0.0 (new)"
n=$(eco_whl_requests)
pip_with "$CM" build alpha delta==2.0.0
eco_expect_cached "$TMP/pip-build.log" alpha beta gamma
[ $(($(eco_whl_requests) - n)) = 1 ] || fail "the build downloaded $(($(eco_whl_requests) - n)) wheels, 1 expected (delta)"
ln -s archive-v0/x "$CM/new-link"

log "harvest: what the cache mount has and the seed lacks"
"${SYNC[@]}" harvest "$SEED" "$CM" "$TMP/out" || fail "pkgcache-sync.sh harvest failed"
comm -13 <(paths "$SEED") <(paths "$CM") >"$TMP/expected"
paths "$TMP/out" >"$TMP/got"
diff "$TMP/expected" "$TMP/got" >/dev/null || fail "harvest output is not the new paths: $(diff "$TMP/expected" "$TMP/got" | head)"
[ -s "$TMP/got" ] || fail "harvest found nothing new"
[ -z "$(comm -12 <(paths "$SEED") "$TMP/got")" ] || fail "harvest output holds paths the seed had"
[ "$(readlink "$TMP/out/new-link")" = archive-v0/x ] || fail "harvest did not keep the symlink"
while read -r p; do
	[ -L "$CM/$p" ] || cmp -s "$CM/$p" "$TMP/out/$p" || fail "harvested $p differs"
done <"$TMP/got"
log "harvest: $(wc -l <"$TMP/got") new paths"

log "merge into $SEED, with one path that another job wrote meanwhile"
victim=$(grep -v link "$TMP/got" | head -n 1)
mkdir -p "$(dirname "$SEED/$victim")"
echo "written by another job" >"$SEED/$victim"
"${SYNC[@]}" merge "$TMP/out" "$SEED" || fail "pkgcache-sync.sh merge failed"
[ "$(cat "$SEED/$victim")" = "written by another job" ] || fail "merge overwrote $victim"
rm "$SEED/$victim" "$SEED/new-link"
"${SYNC[@]}" merge "$TMP/out" "$SEED" || fail "pkgcache-sync.sh merge (again) failed"
# Every path of the cache mount is now in the directory, the new ones with the build's bytes.
# (Paths both had may differ: pip rewrites the cached index pages it revalidates; the
# directory keeps its own copy, which stays valid.)
[ -z "$(comm -23 <(paths "$CM") <(paths "$SEED"))" ] ||
	fail "after the merge the pkgcachefs directory lacks what the build added"
while read -r p; do
	[ -L "$SEED/$p" ] || cmp -s "$CM/$p" "$SEED/$p" || fail "merged $p differs from the build's"
done <"$TMP/got"
n=$(eco_whl_requests)
pip_with "$SEED" host2 alpha delta==2.0.0
eco_expect_cached "$TMP/pip-host2.log" alpha beta gamma delta
[ "$(eco_whl_requests)" = "$n" ] || fail "a venv on the merged cache downloaded"
log "merge: the directory now serves the build's downloads"

log "build.sh with a stand-in docker"
mkdir -p "$TMP/fakebin" "$TMP/ctx" "$TMP/newfiles/http/z"
echo new >"$TMP/newfiles/http/z/entry"
cat >"$TMP/fakebin/docker" <<'EOS'
#!/bin/sh
printf '%s\n' "$*" >>"$FAKE_DOCKER_LOG"
for a; do
	case $a in type=local,dest=*) cp -a "$FAKE_DOCKER_NEW/." "${a#type=local,dest=}/" ;; esac
done
EOS
chmod +x "$TMP/fakebin/docker"
FAKE_DOCKER_LOG=$TMP/docker.log FAKE_DOCKER_NEW=$TMP/newfiles PATH="$TMP/fakebin:$PATH" \
	sh "$BK/build.sh" "$SEED" "$TMP/ctx" -- -t app:test --network host --build-arg "X=a b" >"$TMP/build.log" 2>&1 || {
	cat "$TMP/build.log" >&2
	fail "build.sh failed"
}
sed 's/^/    docker /' "$TMP/docker.log"
# The stand-in answers `docker buildx version`, so build.sh takes the buildx path.
[ "$(wc -l <"$TMP/docker.log")" = 3 ] || fail "build.sh ran docker $(wc -l <"$TMP/docker.log") times, 3 expected"
sed -n 1p "$TMP/docker.log" | grep -qx "buildx version" || fail "build.sh did not look for buildx first"
sed -n 2p "$TMP/docker.log" | grep -q "^buildx build --build-context pkgcache=$SEED -t app:test --network host --build-arg X=a b $TMP/ctx\$" ||
	fail "build.sh's image build is not as documented"
sed -n 3p "$TMP/docker.log" | grep -q "^buildx build --build-context pkgcache=$SEED --network host --build-arg X=a b --target pkgcache-new --build-arg PKGCACHE_RUN=[0-9]*-[0-9]* --output type=local,dest=.* $TMP/ctx\$" ||
	fail "build.sh's harvest build is not as documented (the user's options but -t, then the export)"
[ "$(cat "$SEED/http/z/entry" 2>/dev/null)" = new ] || fail "build.sh did not merge the exported files"

pcf_umount "$PKG"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "after seed, harvest and merge"
echo "PASS: buildkit-sync"
