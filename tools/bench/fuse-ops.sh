#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# How many FUSE requests pkgcachefs receives per file, by operation, for three phases on a
# node_modules-like tree (corpus.py tree): `cp -a` of the tree into a fresh mount, a walk
# (`find -printf '%s'` after drop_caches, in a new mount) and `rm -rf` (in a new mount). Each
# phase is one mount session; the daemon writes its request counts at unmount to the file
# $PKGCACHEFS_FUSE_OPS names (fs/ops.c), so a count includes the few requests of mounting and
# unmounting (init, the root's getattr, forgets at unmount). Prints a table of counts, and one of
# the time the daemon's handlers took; not a pass/fail test.
# Run as root.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
FILES=10000
SEED=1
WORK=/var/tmp/pkgcachefs-fuse-ops

usage() {
	cat <<EOF
usage: $0 [--files N] [--seed N] [--work DIR] BUILD_DIR

Counts the FUSE requests BUILD_DIR/pkgcachefs receives for cp -a, a cold walk and rm -rf of an
N-file tree [$FILES], per regular file, by operation. WORK [$WORK] keeps the tree between runs.
EOF
}

while [[ $# -gt 0 ]]; do
	case "$1" in
	--files) FILES=$2; shift 2 ;;
	--seed) SEED=$2; shift 2 ;;
	--work) WORK=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	-*) usage >&2; exit 2 ;;
	*) break ;;
	esac
done
[[ $# -eq 1 ]] || { usage >&2; exit 2; }
PKG=$(realpath "$1")/pkgcachefs
[[ -x $PKG ]] || { echo "$0: no $PKG" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "$0: run as root (FUSE mounts, drop_caches)" >&2; exit 2; }

TREE="$WORK/tree-n$FILES-s$SEED"
STORE="$WORK/store"
MNT="$WORK/mnt"
mkdir -p "$WORK" "$MNT"
if [[ ! -d $TREE/data ]]; then
	rm -rf "$TREE"
	python3 "$HERE/corpus.py" tree "$TREE/data" --files "$FILES" --seed "$SEED" >/dev/null
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cleanup() {
	if awk -v m="$MNT" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; then
		"$PKG" umount "$MNT" >/dev/null 2>&1 || fusermount3 -u "$MNT" || umount -l "$MNT"
	fi
}
trap cleanup EXIT

# session PHASE CMD...: mount, run CMD, unmount; the counts land in WORK/PHASE.ops.
session() {
	local phase=$1
	shift
	rm -f "$WORK/$phase.ops"
	PKGCACHEFS_FUSE_OPS="$WORK/$phase.ops" "$PKG" mount --store "$STORE" "$MNT" \
		>>"$WORK/daemon.log" 2>&1
	"$@"
	"$PKG" umount "$MNT" >>"$WORK/daemon.log" 2>&1
	[[ -s $WORK/$phase.ops ]] || { echo "$0: the daemon wrote no $WORK/$phase.ops" >&2; exit 1; }
}

rm -rf "$STORE"
nfiles=$(find "$TREE/data" -type f | wc -l)
nentries=$(find "$TREE/data" -mindepth 1 | wc -l)
session copy cp -a "$TREE/data" "$MNT/tree"
session walk bash -c "sync; echo 3 >/proc/sys/vm/drop_caches; find '$MNT/tree' -printf '%s\n' >/dev/null"
session rm rm -rf "$MNT/tree"
rm -rf "$STORE"

python3 - "$WORK" "$nfiles" "$nentries" <<'EOF'
import sys
work, nfiles, nentries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
phases = ["copy", "walk", "rm"]
counts = {}
nanos = {}  # handler time, reply included; the breakdowns (a.b) have none
for p in phases:
    with open(f"{work}/{p}.ops") as f:
        for line in f:
            op, n, *ns = line.split()
            counts.setdefault(op, {})[p] = int(n)
            if ns:
                nanos.setdefault(op, {})[p] = int(ns[0])
print(f"FUSE requests per regular file ({nfiles} files, {nentries} entries with directories and "
      "links); a.b rows break down row a")
print(f"| operation | {' | '.join(phases)} |")
print(f"| --- | {' | '.join('---:' for _ in phases)} |")
main = sorted((op for op in counts if "." not in op), key=lambda o: -counts[o].get("copy", 0))
for op in main:
    subs = sorted(o for o in counts if o.startswith(op + "."))
    for o in [op] + subs:
        cells = " | ".join(f"{counts[o].get(p, 0) / nfiles:.2f}" for p in phases)
        print(f"| {o} | {cells} |")
tot = [sum(counts[o].get(p, 0) for o in main) for p in phases]
print(f"| total | {' | '.join(f'{t / nfiles:.2f}' for t in tot)} |")
print()
print("Time in the daemon's handlers, reply included (it depends on the load; a write's includes "
      "the chunking after its early reply): mean µs per request, and µs per regular file")
print(f"| operation | {' | '.join(f'{p} µs each | {p} µs/file' for p in phases)} |")
print(f"| --- | {' | '.join('---: | ---:' for _ in phases)} |")
for op in sorted(nanos, key=lambda o: -nanos[o].get("copy", 0)):
    cells = []
    for p in phases:
        n, ns = counts[op].get(p, 0), nanos[op].get(p, 0)
        cells += [f"{ns / n / 1e3:.1f}" if n else "-", f"{ns / nfiles / 1e3:.1f}"]
    print(f"| {op} | {' | '.join(cells)} |")
tot = [sum(nanos[o].get(p, 0) for o in nanos) for p in phases]
print(f"| total | {' | '.join(f'- | {t / nfiles / 1e3:.1f}' for t in tot)} |")
print()
print("How the request loop (fs/loop.c) got them, per phase: found by polling after a reply, "
      "waited for in read(2), device handed over (a request waiting; a request served over 1 ms), "
      "most threads")
print(f"| loop | {' | '.join(phases)} |")
print(f"| --- | {' | '.join('---:' for _ in phases)} |")
for o in ["loop.spun", "loop.blocked", "loop.handovers", "loop.rescues", "loop.threads"]:
    if o in counts:
        print(f"| {o[5:]} | {' | '.join(str(counts[o].get(p, 0)) for p in phases)} |")
EOF
