#!/bin/bash
# SPDX-License-Identifier: MIT
# Live merge benchmark (issue 11): NEW names pushed by host A are merged into host B's running
# mount of BASE names, while a reader on B stats and reads unrelated files in a loop. Prints the
# merge time (`pkgcachefs pull --metadata-only` on B, as the daemon reports it and wall time)
# and the longest stall the reader saw during the merge, against its longest before it.
#
# Opt-in (not in a suite): creating the base takes minutes on a loaded 2-core machine.
#
# usage: sudo tools/bench/live-merge.sh PKGCACHEFS_BINARY [BASE [NEW]]   (default 100000 10000)
set -u -o pipefail
. "$(dirname "$0")/../../tests/remote-e2e/e2e-lib.sh"
e2e_init "${1:-}"
BASE=${2:-100000}
NEW=${3:-10000}

URL=$(remote_url file bench)
mkdir -p "$TMP/sa" "$TMP/sb"
mount_fg "$TMP/sa" "$TMP/ma" "$TMP/a.log" --remote "$URL" -o pull_interval=0,push_interval=0 ||
	fail "mounting A: $(cat "$TMP/a.log")"
# makefiles DIR N: N small files, 100 per directory.
makefiles() {
	"$PY" - "$1" "$2" <<'PYEOF' || fail "writing $1 failed"
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 100))
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%07d.txt" % i), "w") as f:
        f.write("file %d of %s\n" % (i, root))
PYEOF
}
t0=$(now_ms)
makefiles "$TMP/ma/base" "$BASE"
log "A: $BASE base names written in $(secs $(($(now_ms) - t0))) s"
"$BIN" push --store "$TMP/sa" >/dev/null || fail "push A (base)"
mount_fg "$TMP/sb" "$TMP/mb" "$TMP/b.log" --remote "$URL" -o pull_interval=0,push_interval=0 ||
	fail "mounting B: $(cat "$TMP/b.log")"
makefiles "$TMP/ma/new" "$NEW"
"$BIN" push --store "$TMP/sa" >/dev/null || fail "push A (new)"

# The reader: stat and read base files round-robin; per 0.5 s window, the longest single call.
"$PY" - "$TMP/mb/base" "$BASE" "$TMP/reader.out" "$TMP/reader.stop" <<'PYEOF' &
import os, sys, time
root, n, out, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
worst, i, rows = 0.0, 0, []
start = time.monotonic()
while not os.path.exists(stop):
    p = os.path.join(root, "d%04d" % ((i % n) // 100), "f%07d.txt" % (i % n))
    t = time.monotonic()
    os.stat(p)
    with open(p) as f:
        f.read()
    d = time.monotonic() - t
    rows.append((t - start, d))
    i += 1
with open(out, "w") as f:
    for t, d in rows:
        f.write("%.6f %.6f\n" % (t, d))
PYEOF
RPID=$!
sleep 3
m0=$(($(now_ms) - 0))
"$BIN" pull --store "$TMP/sb" --metadata-only >"$TMP/pull.out" 2>&1 || fail "pull B: $(cat "$TMP/pull.out")"
m1=$(now_ms)
sleep 2
touch "$TMP/reader.stop"
wait $RPID
[ -d "$TMP/mb/new/d0000" ] || fail "B does not see the new names after pull"
cat "$TMP/pull.out"
# Reader start is ~3 s before the pull; split the calls at that point by their own clock.
"$PY" - "$TMP/reader.out" "$m0" "$m1" <<'PYEOF'
import sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
t_end = rows[-1][0]
# the reader's clock: pull started at 3 s, lasted (m1 - m0) ms
dur = (int(sys.argv[3]) - int(sys.argv[2])) / 1000.0
during = [d for t, d in rows if 2.9 <= t <= 3.1 + dur]
before = [d for t, d in rows if t < 2.9]
print("reader: %d calls; longest before the merge %.1f ms, during it %.1f ms (%d calls)" % (
    len(rows), 1000 * max(before or [0]), 1000 * max(during or [0]), len(during)))
# The longest call alone is at the mercy of the shared machine's scheduler: also the 99th
# percentile and the share of calls over 10 ms, before and during.
def p99(v):
    return sorted(v)[int(0.99 * (len(v) - 1))] if v else 0
def over(v):
    return 100.0 * sum(1 for d in v if d > 0.010) / len(v) if v else 0
print("reader: p99 before %.1f ms, during %.1f ms; calls over 10 ms before %.2f%%, during %.2f%%"
      % (1000 * p99(before), 1000 * p99(during), over(before), over(during)))
PYEOF
echo "merge of $NEW names into a $BASE-name mount: $(secs $((m1 - m0))) s wall (pull command)"
