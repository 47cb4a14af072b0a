#!/bin/bash
# SPDX-License-Identifier: MIT
# Live-sync soak (issue 11): three hosts mounted on one remote with pull_interval=2 and
# push_interval=2 write, overwrite, append, delete and rename at random for SOAK_SECONDS (default
# 60) while their daemons push and merge underneath (soak.py: each host in a directory of its
# own, and all of them in one shared directory where they collide). Then the writers stop, every
# host pushes and pulls twice over, and:
#   - the three trees are byte-identical (names, types, contents);
#   - every file a host fsynced in its own directory and did not delete or rename is there, on
#     every host, with the content it last wrote, and nothing else is;
#   - no daemon died, every store is fsck-clean after unmount.
#
# usage: soak.sh PKGCACHEFS_BINARY [file|webdav|s3]     SOAK_SECONDS=N, SOAK_SEED=N
set -u -o pipefail
. "$(dirname "$0")/e2e-lib.sh"
e2e_init "${1:-}"
TYPE=${2:-file}
SECONDS_=${SOAK_SECONDS:-60}
SEED=${SOAK_SEED:-$(date +%s)}
if [ "$TYPE" != file ]; then
	e2e_servers
	case $? in
	0) ;;
	77) skip "the $TYPE server cannot run here (see above)" ;;
	*) fail "servers.sh start failed (log above)" ;;
	esac
fi
log "soak over $TYPE for $SECONDS_ s, seed $SEED (SOAK_SEED=$SEED reruns it)"

URL=$(remote_url "$TYPE" soak)
mnts=()
declare -A PIDS=()
for h in a b c; do
	mkdir -p "$TMP/store-$h" "$TMP/mnt-$h"
	mount_fg "$TMP/store-$h" "$TMP/mnt-$h" "$TMP/$h.log" --remote "$URL" \
		-o pull_interval=2,push_interval=2 || fail "mounting $h failed: $(cat "$TMP/$h.log")"
	PIDS[$h]=$FG_PID
	mnts+=("$TMP/mnt-$h")
done

"$PY" "$E2E_DIR/soak.py" "$SECONDS_" "$SEED" "$TMP/state.json" "${mnts[@]}" ||
	fail "the writers failed (above); seed $SEED"
for h in a b c; do
	kill -0 "${PIDS[$h]}" 2>/dev/null ||
		fail "the daemon of $h died during the soak: $(tail -n 20 "$TMP/$h.log")"
done

# Settle: each host's push merges first, so two rounds carry every change everywhere.
for round in 1 2; do
	for h in a b c; do
		"$BIN" push --store "$TMP/store-$h" >"$TMP/push.out" 2>&1 ||
			fail "round $round: push $h: $(cat "$TMP/push.out")"
	done
	for h in a b c; do
		"$BIN" pull --store "$TMP/store-$h" >"$TMP/pull.out" 2>&1 ||
			fail "round $round: pull $h: $(cat "$TMP/pull.out")"
	done
done

# tree MNT: every name with its type, and each file's sha256.
tree() {
	(cd "$1" && find . -mindepth 1 \( -type d -printf 'd %p\n' \) -o \( -type f -printf 'f %p\n' \) |
		sort) || return 1
	sums_of "$1"
}
for h in a b c; do tree "$TMP/mnt-$h" >"$TMP/$h.tree" || fail "reading $h's tree failed"; done
diff -u "$TMP/a.tree" "$TMP/b.tree" >&2 || fail "A and B differ after settling (seed $SEED)"
diff -u "$TMP/a.tree" "$TMP/c.tree" >&2 || fail "A and C differ after settling (seed $SEED)"

# Every host's own directory holds exactly what its writer left there.
"$PY" - "$TMP/state.json" "${mnts[@]}" <<'EOF' || fail "a host's own files are not what it wrote (seed $SEED)"
import hashlib, json, os, sys
state = json.load(open(sys.argv[1]))
bad = 0
for mnt in sys.argv[2:]:
    have = {}
    for top in sorted(os.listdir(mnt)):
        if not top.startswith("host-"):
            continue
        for root, dirs, files in os.walk(os.path.join(mnt, top)):
            for f in files:
                p = os.path.join(root, f)
                have[os.path.relpath(p, mnt)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    for path, sha in state["files"].items():
        if have.get(path) != sha:
            print("%s: %s %s" % (mnt, path, "missing" if path not in have else "has other content"))
            bad += 1
    for path in sorted(set(have) - set(state["files"])):
        print("%s: %s should not be there (deleted or renamed)" % (mnt, path))
        bad += 1
sys.exit(1 if bad else 0)
EOF
nfiles=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["files"]))' "$TMP/state.json")
nshared=$(find "$TMP/mnt-a/shared" -type f | wc -l)

for h in a b c; do
	timeout 120 "$BIN" umount "$TMP/mnt-$h" >/dev/null 2>&1 || fail "umount $h failed"
done
for h in a b c; do
	"$BIN" fsck --store "$TMP/store-$h" >"$TMP/fsck.out" 2>&1 ||
		fail "fsck of store $h: $(cat "$TMP/fsck.out")"
done
# Background pushes and merges on loopback have no reason to fail.
for h in a b c; do
	if grep -Ei 'error|fail' "$TMP/$h.log" >&2; then
		fail "the daemon of $h logged failures during the soak (above; seed $SEED)"
	fi
done
merges=$(grep -c "merged\|pull" "$TMP/a.log" 2>/dev/null || echo 0)
echo "soak ($TYPE, $SECONDS_ s, seed $SEED): 3 trees identical; $nfiles own files all present, $nshared shared files; A's log has $merges merge/pull lines"
