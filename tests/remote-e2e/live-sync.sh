#!/bin/bash
# SPDX-License-Identifier: MIT
# Live sync: mounts that stay up see what other hosts push (issue 11).
#
# Three hosts on one remote (file://, or TYPE: webdav through nginx, s3 through s3rver), all
# mounted the whole time. A pushes a name created, a file
# replaced and a file deleted; B (pull_interval=0) gets them on `pkgcachefs pull`, C
# (pull_interval=2) on its own. Before the push, B looks up the new name and misses (a negative
# dentry, cached by the kernel for a day): it must not hide the name after the merge. B holds the
# replaced file open across the merge and must read the old content to the end. Then B writes and
# pushes, A pulls: the three trees end byte-identical, and every store is fsck-clean. Last, pip
# on A fills its cache from a local index and A pushes; B's running mount merges and B's pip
# install of the same packages downloads no wheel.
#
# Figures printed: the time of B's pull, and how long C took to see A's push.
#
# usage: live-sync.sh PKGCACHEFS_BINARY [file|webdav|s3]
set -u -o pipefail
. "$(dirname "$0")/e2e-lib.sh"
e2e_init "${1:-}"
TYPE=${2:-file}
if [ "$TYPE" != file ]; then
	e2e_servers
	case $? in
	0) ;;
	77) skip "the $TYPE server cannot run here (see above)" ;;
	*) fail "servers.sh start failed (log above)" ;;
	esac
fi

URL=$(remote_url "$TYPE" live)
for h in a b c; do mkdir -p "$TMP/store-$h" "$TMP/mnt-$h"; done
MA=$TMP/mnt-a MB=$TMP/mnt-b MC=$TMP/mnt-c
mount_fg "$TMP/store-a" "$MA" "$TMP/a.log" --remote "$URL" -o pull_interval=0,push_interval=0 ||
	fail "mounting A failed: $(cat "$TMP/a.log")"
mount_fg "$TMP/store-b" "$MB" "$TMP/b.log" --remote "$URL" -o pull_interval=0,push_interval=0 ||
	fail "mounting B failed: $(cat "$TMP/b.log")"
mount_fg "$TMP/store-c" "$MC" "$TMP/c.log" --remote "$URL" -o pull_interval=2,push_interval=0 ||
	fail "mounting C failed: $(cat "$TMP/c.log")"

# Round 1: A's first files reach B through `pull`.
mkdir -p "$MA/top"
write_random "$TMP/old.bin" 3000000 1
write_random "$TMP/new.bin" 1200000 2
cp "$TMP/old.bin" "$MA/top/replaced.bin" || fail "writing on A failed"
echo doomed >"$MA/top/deleted.txt"
"$BIN" push --store "$TMP/store-a" >"$TMP/push.out" 2>&1 || fail "push A: $(cat "$TMP/push.out")"
"$BIN" pull --store "$TMP/store-b" >"$TMP/pull.out" 2>&1 || fail "pull B: $(cat "$TMP/pull.out")"
grep -q "entries applied" "$TMP/pull.out" || fail "pull B printed no summary: $(cat "$TMP/pull.out")"
cmp -s "$TMP/old.bin" "$MB/top/replaced.bin" || fail "B does not read A's first file after pull"
[ "$(cat "$MB/top/deleted.txt")" = doomed ] || fail "B does not see top/deleted.txt after pull"

# B misses names that do not exist yet: negative dentries, in an existing and a new directory.
stat "$MB/top/created.txt" >/dev/null 2>&1 && fail "top/created.txt exists on B too early"
stat "$MB/newdir" >/dev/null 2>&1 && fail "newdir exists on B too early"
# B holds the file open that A replaces.
exec 3<"$MB/top/replaced.bin"
head -c 1000 <&3 >"$TMP/held.part1"

# Round 2: A creates, replaces, deletes.
echo created >"$MA/top/created.txt"
mkdir -p "$MA/newdir/sub" && echo deep >"$MA/newdir/sub/file.txt"
cp "$TMP/new.bin" "$MA/top/replaced.bin.tmp" && mv "$MA/top/replaced.bin.tmp" "$MA/top/replaced.bin"
rm "$MA/top/deleted.txt"
"$BIN" push --store "$TMP/store-a" >"$TMP/push.out" 2>&1 || fail "push A: $(cat "$TMP/push.out")"
t0=$(now_ms)
"$BIN" pull --store "$TMP/store-b" --metadata-only >"$TMP/pull.out" 2>&1 ||
	fail "pull B: $(cat "$TMP/pull.out")"
t_pull=$(($(now_ms) - t0))
cat "$TMP/pull.out"
[ "$(cat "$MB/top/created.txt" 2>/dev/null)" = created ] ||
	fail "B: the name A created is hidden after pull (a stale negative dentry?)"
[ "$(cat "$MB/newdir/sub/file.txt" 2>/dev/null)" = deep ] ||
	fail "B: newdir/sub/file.txt is missing after pull"
cmp -s "$TMP/new.bin" "$MB/top/replaced.bin" || fail "B: a new open of top/replaced.bin reads old data"
[ -e "$MB/top/deleted.txt" ] && fail "B: top/deleted.txt still there after pull"
cat <&3 >"$TMP/held.part2"
exec 3<&-
cat "$TMP/held.part1" "$TMP/held.part2" | cmp -s - "$TMP/old.bin" ||
	fail "B: the file held open across the merge did not read its old content to the end"

# C merges on its own within pull_interval (2 s; 30 s allowed for a loaded machine).
t0=$(now_ms)
for _ in $(seq 300); do
	[ "$(cat "$MC/top/created.txt" 2>/dev/null)" = created ] && [ ! -e "$MC/top/deleted.txt" ] &&
		cmp -s "$TMP/new.bin" "$MC/top/replaced.bin" && break
	sleep 0.1
done
t_c=$(($(now_ms) - t0))
[ "$(cat "$MC/top/created.txt" 2>/dev/null)" = created ] || fail "C: A's push not seen in 30 s; its log: $(tail -n 20 "$TMP/c.log")"
[ -e "$MC/top/deleted.txt" ] && fail "C: top/deleted.txt still there after 30 s"
cmp -s "$TMP/new.bin" "$MC/top/replaced.bin" || fail "C: top/replaced.bin not replaced in 30 s"

# Round 3: the other way, B to A; the push merges first, so B's push keeps A's state.
echo from-b >"$MB/top/b.txt"
rm "$MB/newdir/sub/file.txt"
"$BIN" push --store "$TMP/store-b" >"$TMP/push.out" 2>&1 || fail "push B: $(cat "$TMP/push.out")"
"$BIN" pull --store "$TMP/store-a" >"$TMP/pull.out" 2>&1 || fail "pull A: $(cat "$TMP/pull.out")"
"$BIN" pull --store "$TMP/store-c" >"$TMP/pull.out" 2>&1 || fail "pull C: $(cat "$TMP/pull.out")"
[ "$(cat "$MA/top/b.txt" 2>/dev/null)" = from-b ] || fail "A: B's new file not seen after pull"
[ -e "$MA/newdir/sub/file.txt" ] && fail "A: the file B deleted is still there after pull"
sums_of "$MA" >"$TMP/a.sums" && sums_of "$MB" >"$TMP/b.sums" && sums_of "$MC" >"$TMP/c.sums" ||
	fail "reading the trees failed"
diff -u "$TMP/a.sums" "$TMP/b.sums" >&2 || fail "A and B differ after pushes and pulls both ways"
diff -u "$TMP/a.sums" "$TMP/c.sums" >&2 || fail "A and C differ after pushes and pulls both ways"
"$BIN" stats --store "$TMP/store-b" >"$TMP/stats.out" 2>&1 || fail "stats B failed"
grep -q "last merge" "$TMP/stats.out" || fail "stats B shows no last merge: $(cat "$TMP/stats.out")"

# Round 4: a real pip cache. A installs from the index and pushes; B merges while mounted and
# installs the same packages from its cache alone.
WHEELS="$PY $E2E_DIR/small_wheels.py"
INDEX=$TMP/index HTTPLOG=$TMP/index-http.log
$WHEELS build "$INDEX" >"$TMP/wheels-build.log" || fail "small_wheels.py build failed"
$WHEELS serve "$INDEX" "$TMP/port" "$HTTPLOG" &
PCF_BG_PIDS+=($!)
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.1; done
[ -s "$TMP/port" ] || fail "index server did not start"
INDEX_URL=http://127.0.0.1:$(cat "$TMP/port")/simple
whl_requests() { grep -c '^GET /packages/.*\.whl ' "$HTTPLOG"; }
pip_job() { # MNT TAG
	"$PY" -m pip install --cache-dir "$1/pip" --index-url "$INDEX_URL" --trusted-host 127.0.0.1 \
		--progress-bar off --no-compile --target "$TMP/site-$2/lib/site-packages" alpha delta==2.0.0 epsilon \
		>"$TMP/pip-$2.log" 2>&1 || fail "$2: pip install failed: $(tail -n 20 "$TMP/pip-$2.log")"
	$WHEELS verify "$INDEX" "$TMP/site-$2" alpha==1.0.0 beta==1.2.0 gamma==3.0 delta==2.0.0 \
		epsilon==0.9 >/dev/null || fail "$2: installed files differ from the wheels"
}
pip_job "$MA" a
w_a=$(whl_requests)
[ "$w_a" -gt 0 ] || fail "A's pip downloaded no wheel: the index was not used"
"$BIN" push --store "$TMP/store-a" >"$TMP/push.out" 2>&1 || fail "push A: $(cat "$TMP/push.out")"
"$BIN" pull --store "$TMP/store-b" >"$TMP/pull.out" 2>&1 || fail "pull B: $(cat "$TMP/pull.out")"
pip_job "$MB" b
w_b=$(($(whl_requests) - w_a))
[ "$w_b" = 0 ] || fail "B's pip downloaded $w_b wheels after merging A's cache: $(grep -E 'Downloading' "$TMP/pip-b.log")"
grep -q 'Using cached' "$TMP/pip-b.log" || fail "B's pip did not say it used its cache"
echo "live-sync ($TYPE): A's pip downloaded $w_a wheels; B's, after the merge, $w_b"

for h in a b c; do
	timeout 120 "$BIN" umount "$TMP/mnt-$h" >/dev/null 2>&1 || fail "umount $h failed"
done
for h in a b c; do
	"$BIN" fsck --store "$TMP/store-$h" >"$TMP/fsck.out" 2>&1 ||
		fail "fsck of store $h: $(cat "$TMP/fsck.out")"
done
echo "live-sync ($TYPE): pull on B $(secs $t_pull) s; C saw A's push after $(secs $t_c) s (pull_interval=2)"
