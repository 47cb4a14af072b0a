#!/bin/bash
# SPDX-License-Identifier: MIT
# Power-loss crash battery: the store's unflushed writes are dropped, and the store must come
# back with everything that was fsynced and nothing wrong.
#
# A device that drops unflushed writes (dm-flakey, dm-log-writes) is the natural tool, but
# this sandbox has no device-mapper (/dev/mapper/control is missing; loop devices work, which
# alone cannot drop writes). So it is done in user space: iojournal.c, built here into the
# temp dir, is preloaded into the daemon and journals every write, truncate, create, rename,
# unlink and sync under the store, with the data; replay.py then rebuilds the store as a
# power loss at many cut points would have left it (see its docstring for the exact model:
# what a sync covers, directory entries need a directory sync, loss modes drop / subset /
# prefix / all, torn 4 KiB pages, the -shm file deleted or garbage) and checks each: SQLite's
# integrity_check, pkgcachefs fsck clean (or only crash leftovers), a mount, the fsync manifest
# (cwork.py check cut at the same point: every file whose fsync had returned reads back
# exactly, nothing reads back wrong), fsck of the mounted store, clean umount, fsck.
#
# Each run: a fresh store is filled a little (not journaled), unmounted, snapshotted; then it is
# mounted with the shim (random commit_interval) and two writers run a fixed number of
# operations while `pkgcachefs gc` runs twice, sometimes with a reader holding an index
# snapshot for 1.5 s, or (every second run) once while a reader holds a snapshot for 22 s, as
# a long fsck or stats of the mounted store does; the daemon stops (clean umount or kill -9).
# Then CUTS cut points are checked, first those right after each pack is deleted.
#
# usage: powerloss.sh PKGCACHEFS [--rounds RUNS] [--seconds S] [--cuts N] [--seed X] [--keep-going]
#   default: two runs of 24 cuts (the CI run, ~1 minute). Prints "crash: test=powerloss rounds=R
#   cuts=C losses=L ..." last; exit 0 pass, 1 fail, 77 skip (no /dev/fuse, gcc or sqlite3).
set -u -o pipefail
CRASH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$CRASH_DIR/../clients/lib.sh"

BINARG=${1:-}
shift || true
ROUNDS=0 SECONDS_MAX=0 CUTS=24 SEED=$$ KEEP_GOING=0
while [ $# -gt 0 ]; do
	case $1 in
	--rounds) ROUNDS=$2; shift 2;;
	--seconds) SECONDS_MAX=$2; shift 2;;
	--cuts) CUTS=$2; shift 2;;
	--seed) SEED=$2; shift 2;;
	--keep-going) KEEP_GOING=1; shift;;
	*) echo "usage: $0 PKGCACHEFS [--rounds RUNS] [--seconds S] [--cuts N] [--seed X] [--keep-going]" >&2
	   exit 2;;
	esac
done
[ "$ROUNDS" = 0 ] && [ "$SECONDS_MAX" = 0 ] && ROUNDS=2
command -v gcc >/dev/null || skip "gcc is needed to build the I/O journal shim"
command -v sqlite3 >/dev/null || skip "the sqlite3 shell is needed for integrity_check"
pcf_init "$BINARG"
# The binary under test, copied: a rebuild during a long run must not swap it.
cp "$BIN" "$TMP/pkgcachefs" && BIN=$TMP/pkgcachefs
RANDOM=$SEED
W=("$PY" "$CRASH_DIR/cwork.py")
SHIM=$TMP/iojournal.so
gcc -O1 -g -Wall -shared -fPIC -o "$SHIM" "$CRASH_DIR/iojournal.c" -ldl -lpthread ||
	fail "cannot build the I/O journal shim"
log "powerloss: seed $SEED; dm-flakey not available here: user-space journal and replay"

RUNS=0 CHECKED=0 FAILED=0 LOSSES=0 RECORDS=0
START=$(date +%s)
summary() {
	echo "crash: test=powerloss rounds=$RUNS cuts=$CHECKED losses=$LOSSES failures=$FAILED" \
		"journal_records=$RECORDS seed=$SEED"
}

while :; do
	if [ "$ROUNDS" != 0 ] && [ "$RUNS" -ge "$ROUNDS" ]; then break; fi
	if [ "$SECONDS_MAX" != 0 ] && [ $(($(date +%s) - START)) -ge "$SECONDS_MAX" ]; then break; fi
	run=$((RUNS + 1))
	D=$TMP/run-$run
	ST=$D/store
	MNT=$D/mnt
	mkdir -p "$MNT" "$D/logs"
	# A store at rest with some data: filled without the shim, cleanly unmounted.
	pcf_mount "$ST" "$MNT"
	"${W[@]}" init "$MNT" "$D/base-init.json" || fail "init failed"
	"${W[@]}" run "$MNT" "$D/base-init.json" "$D/logs/fill.log" w0 "$run$SEED" --ops 60 >/dev/null ||
		fail "filling the store failed"
	"${W[@]}" check "$MNT" "$D/base-init.json" "$D/base.json" "$D/logs/fill.log" >/dev/null ||
		fail "the filled store does not check"
	rm -f "$D/logs/fill.log"
	pcf_umount "$MNT"
	pcf_wait_daemon_exit "$ST"
	sync
	cp -a "$ST" "$D/snap"
	(cd "$ST" && find . -type f -printf '%P\t%i\n') >"$D/inos"
	J=$D/journal
	: >"$J"
	ci=$((200 + RANDOM % 900))
	PCF_IOJ_JOURNAL=$J PCF_IOJ_ROOT=$ST LD_PRELOAD=$SHIM pcf_mount "$ST" "$MNT" \
		-o commit_interval=$ci
	ops=$((60 + RANDOM % 100))
	# Odd runs: gc twice while the writers run, a reader of 1.5 s or none meanwhile. Even
	# runs: the writers churn (old packs die), then one gc while a reader holds an index
	# snapshot for 22 s (longer than the daemon's 10 s busy timeout), as a long fsck or
	# stats of the mounted store does.
	if [ $((run % 2)) = 0 ]; then
		reader=1 hold=22 ngc=1 churn=--churn
	else
		reader=$((RANDOM % 2)) hold=1.5 ngc=2 churn=""
	fi
	reader=${PL_READER:-$reader}
	hold=${PL_READER_HOLD:-$hold}
	pids=()
	for w in w0 w1; do
		"${W[@]}" run "$MNT" "$D/base.json" "$D/logs/$w.log" "$w" "$((run + 7))$SEED" \
			--ops $ops --journal "$J" $churn >"$D/$w.out" 2>&1 &
		pids+=($!)
		PCF_BG_PIDS+=($!)
	done
	if [ -n "$churn" ]; then
		for i in 0 1; do wait "${pids[$i]}"; done
	fi
	for g in $(seq $ngc); do
		sleep "0.$((2 + RANDOM % 8))"
		rpid=""
		if [ $reader = 1 ]; then
			"$PY" -c 'import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN"); c.execute("SELECT count(*) FROM chunks").fetchall()
time.sleep(float(sys.argv[2])); c.execute("COMMIT")' "$ST/index.db" "$hold" &
			rpid=$!
			sleep 0.2
		fi
		timeout "$PCF_TIMEOUT" "$BIN" gc --store "$ST" >"$D/gc-$g.out" 2>&1 ||
			{ cat "$D/gc-$g.out" >&2; fail "gc of the journaled mount failed"; }
		[ -n "$rpid" ] && wait "$rpid"
	done
	for i in 0 1; do
		[ -n "$churn" ] && ! grep -q ' ops$' "$D/w$i.out" &&
			{ cat "$D/w$i.out" >&2; fail "writer w$i failed on the live mount"; }
		[ -n "$churn" ] || wait "${pids[$i]}" ||
			{ cat "$D/w$i.out" >&2; fail "writer w$i failed on the live mount"; }
	done
	PCF_BG_PIDS=()
	if [ $((RANDOM % 2)) = 0 ]; then
		stop="clean umount"
		pcf_umount "$MNT"
		pcf_wait_daemon_exit "$ST"
	else
		stop="kill -9"
		pcf_kill9 "$ST" "$MNT"
	fi
	PCF_MOUNTS=()
	n=$(stat -c %s "$J")
	log "run $run: $ops ops per writer, commit_interval $ci ms, gc x$ngc$([ $reader = 1 ] && echo " with a reader holding a snapshot ${hold} s"), $stop; journal $((n / 1048576)) MiB"
	"$PY" "$CRASH_DIR/replay.py" stats "$J" | sed 's/^/    /' | grep -v ' mark ' | head -40
	"$PY" "$CRASH_DIR/replay.py" cuts "$BIN" "$J" "$D/snap" "$D/inos" "$D/base.json" "$D/cut" \
		--n "$CUTS" --seed "$((run * 7919 + SEED))" "$D/logs/w0.log" "$D/logs/w1.log" \
		>"$D/cuts.out" 2>&1
	rc=$?
	grep -v '^cut .*: ok' "$D/cuts.out" | tail -n 80
	line=$(grep '^cuts:' "$D/cuts.out")
	c=$(echo "$line" | sed -n 's/.*checked=\([0-9]*\).*/\1/p')
	f=$(echo "$line" | sed -n 's/.*failures=\([0-9]*\).*/\1/p')
	rec=$(echo "$line" | sed -n 's/.*records=\([0-9]*\).*/\1/p')
	CHECKED=$((CHECKED + ${c:-0}))
	RECORDS=$((RECORDS + ${rec:-0}))
	LOSSES=$((LOSSES + $(grep -c 'LOSS\|lost the durable' "$D/cuts.out")))
	RUNS=$run
	if [ $rc != 0 ]; then
		FAILED=$((FAILED + ${f:-1}))
		keep=$(mktemp -d "${TMPDIR:-/tmp}/pcf-powerloss-fail.XXXXXX")
		cp -a "$D/journal" "$D/snap" "$D/inos" "$D/base.json" "$D/logs" "$D/cuts.out" "$keep/"
		cp -a "$D"/cut-fail-* "$keep/" 2>/dev/null
		echo "FAIL: run $run: $f of $c cut points failed (seed $SEED); journal, snapshot," \
			"logs and rebuilt stores kept in $keep; replay.py's lines above say how to" \
			"rebuild each (paths relative to $keep)" >&2
		[ $KEEP_GOING = 1 ] && { rm -rf "$D"; continue; }
		summary
		exit 1
	fi
	[ -n "${PCF_KEEP_TMP:-}" ] || rm -rf "$D"
done
summary
[ "$FAILED" = 0 ]
