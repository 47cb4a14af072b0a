#!/bin/bash
# SPDX-License-Identifier: MIT
# pip against a pkgcachefs mount used as its --cache-dir.
#
# A local PEP 503 index (wheels.py) serves hand-built wheels: alpha -> beta -> gamma (20 MiB
# data file) and two point releases of delta that share 6 MiB of members.  Fresh venvs install
# the same set: two at once on the cold cache (they download, racing to fill the same cache
# entries), two at once on the warm cache (both must be served from the cache on the mount:
# "Using cached", no .whl request reaching the server), and one after umount + mount, which
# proves the cache persisted.  Installed files must equal the
# wheels' members byte for byte.  At the end fsck must be clean and stats must show that the
# two delta releases were deduplicated.
#
# usage: pip.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
pcf_init "${1:-}"

# Our environment only: no user config, no find-links, no proxies from the caller.
for v in $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export PIP_DEFAULT_TIMEOUT=60 PYTHONDONTWRITEBYTECODE=1
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY

"$PY" -c 'import venv, ensurepip' 2>/dev/null ||
	fail "$PY lacks venv/ensurepip: apt-get install -y python3-venv python3-pip"

INDEX=$TMP/index
STORE=$TMP/store
MNT=$TMP/cache
HTTPLOG=$TMP/http.log

log "building wheels"
"$PY" "$CLIENTS_DIR/wheels.py" build "$INDEX" || fail "wheels.py build failed"

"$PY" "$CLIENTS_DIR/wheels.py" serve "$INDEX" "$TMP/port" "$HTTPLOG" &
PCF_BG_PIDS+=($!)
for i in $(seq 100); do
	[ -s "$TMP/port" ] && break
	sleep 0.1
done
[ -s "$TMP/port" ] || fail "index server did not start"
PORT=$(cat "$TMP/port")
URL=http://127.0.0.1:$PORT/simple
log "index at $URL"

pcf_mount "$STORE" "$MNT"
owner=$(stat -c %u:%g "$MNT")
[ "$owner" = "$(id -u):$(id -g)" ] ||
	log "note: mount root is owned by $owner, pip may refuse to use it as a cache"

whl_requests() { grep -c '^GET /packages/.*\.whl ' "$HTTPLOG"; }

# pip_install VENV LOG ARGS...: one pip install into VENV using the mount as cache.
pip_install() {
	local venv=$1 out=$2
	shift 2
	"$venv/bin/pip" install --cache-dir "$MNT" --index-url "$URL" --trusted-host 127.0.0.1 \
		--progress-bar off "$@" >"$out" 2>&1
	local rc=$?
	if [ $rc != 0 ]; then
		tail -n 40 "$out" >&2
		fail "pip install $* exited $rc (log above)"
	fi
	if grep -qi 'cache has been disabled\|cache.*not.*writable\|not owned' "$out"; then
		grep -i 'cache' "$out" >&2
		fail "pip disabled its cache on the mount (ownership or permissions of $MNT: $(stat -c '%U:%G %a' "$MNT"))"
	fi
}

# expect_cached LOG WHEEL...: pip said "Using cached" for every one of these wheels.
expect_cached() {
	local out=$1 w
	shift
	for w in "$@"; do
		if ! grep -q "Using cached .*$w" "$out"; then
			grep -E 'Using cached|Downloading|Collecting' "$out" >&2
			fail "pip did not use the cache for $w (see $out lines above)"
		fi
	done
}

# run_set VENV TAG: the same two installs each time: alpha (and its dependencies) plus
# delta 2.0.0, then an upgrade to delta 2.0.1 in the same venv.
run_set() {
	local venv=$1 tag=$2
	"$PY" -m venv "$venv" || fail "python3 -m venv $venv failed"
	pip_install "$venv" "$TMP/pip-$tag-a.log" alpha delta==2.0.0
	"$PY" "$CLIENTS_DIR/wheels.py" verify "$INDEX" "$venv" alpha==1.0.0 beta==1.2.0 gamma==3.0 \
		delta==2.0.0 || fail "$tag: installed files differ from the wheels"
	pip_install "$venv" "$TMP/pip-$tag-b.log" delta==2.0.1
	"$PY" "$CLIENTS_DIR/wheels.py" verify "$INDEX" "$venv" delta==2.0.1 ||
		fail "$tag: installed files differ from the wheels"
}

# tree_sums DIR: "path size sha256" for every file below DIR, sorted.
tree_sums() {
	(cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) ||
		fail "reading the cache tree on $1 failed"
}

# run_pair TAG1 TAG2: two installs at once on the same cache, as parallel CI jobs do.
run_pair() {
	local p1 p2 rc=0
	(run_set "$TMP/venv$1" "$1") &
	p1=$!
	(run_set "$TMP/venv$2" "$2") &
	p2=$!
	wait $p1 || rc=1
	wait $p2 || rc=1
	[ $rc = 0 ] || fail "concurrent pip installs $1 and $2 failed (see above)"
}

log "venvs 1a and 1b at once: cold cache"
run_pair 1a 1b
n1=$(whl_requests)
[ "$n1" -ge 5 ] && [ "$n1" -le 10 ] ||
	fail "expected 5 to 10 wheel downloads by two installs on a cold cache, the server saw $n1"
nfiles=$(find "$MNT" -type f | wc -l)
[ "$nfiles" -gt 0 ] || fail "pip wrote nothing into its cache on the mount"
log "pip cache on the mount holds $nfiles files after $n1 wheel downloads"

log "venvs 2a and 2b at once: warm cache, same mount"
run_pair 2a 2b
for t in 2a 2b; do
	expect_cached "$TMP/pip-$t-a.log" alpha-1.0.0 beta-1.2.0 gamma-3.0 delta-2.0.0
	expect_cached "$TMP/pip-$t-b.log" delta-2.0.1
done
n2=$(whl_requests)
[ "$n2" = "$n1" ] || fail "venvs 2a/2b downloaded $((n2 - n1)) wheels although they were cached"

tree_sums "$MNT" >"$TMP/sums-before" || exit 1
log "umount + mount"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"
pcf_mount "$STORE" "$MNT"
tree_sums "$MNT" >"$TMP/sums-after" || exit 1
if ! diff -u "$TMP/sums-before" "$TMP/sums-after" >"$TMP/sums.diff"; then
	head -n 40 "$TMP/sums.diff" >&2
	fail "the pip cache changed across umount + mount (diff above)"
fi

log "venv 3: after remount"
run_set "$TMP/venv3" 3
expect_cached "$TMP/pip-3-a.log" alpha-1.0.0 beta-1.2.0 gamma-3.0 delta-2.0.0
expect_cached "$TMP/pip-3-b.log" delta-2.0.1
n3=$(whl_requests)
[ "$n3" = "$n1" ] || fail "venv 3 downloaded $((n3 - n1)) wheels: the cache did not persist"

pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "after the pip runs"

stats=$(pcf_stats "$STORE") || exit 1
log "stats: $stats"
echo "$stats" | "$PY" -c '
import json, sys
st = json.load(sys.stdin)
wheels = json.load(open(sys.argv[1]))
total = sum(w["size"] for w in wheels)
shared = 6 * 1024 * 1024   # delta 2.0.0 and 2.0.1 share more than this, byte for byte
if st["logical_bytes"] < total:
    sys.exit("stats: logical_bytes %d < %d, the size of the cached wheels" % (st["logical_bytes"], total))
if st["stored_bytes"] > st["logical_bytes"] - shared // 2:
    sys.exit("stats: no dedup between the two delta releases: stored_bytes %d, logical_bytes %d "
             "(expected at least %d bytes saved)" % (st["stored_bytes"], st["logical_bytes"], shared // 2))
' "$INDEX/wheels.json" || fail "stats check failed"

echo "PASS: pip"
