#!/bin/bash
# SPDX-License-Identifier: MIT
# kill -9 crash battery: the daemon dies at random points of write, fsync, rename, gc, eviction
# and push, round after round, and nothing it acknowledged may be lost or read back wrong.
#
# Two stores are used in turn: L (no remote) and R (a file:// remote, mounted with a random
# push_interval of 0-2 s and sometimes a small max_size, so pushes and evictions run all the
# time). Each round picks a scenario:
#   write    two writers (cwork.py: create, overwrite, rewrite in place, append, replace by
#            rename, rename, unlink, read back; 60-70% of them fsynced) on L or R
#   gc       the same, plus `pkgcachefs gc` (--max-size on R: eviction) of the mounted store
#   push     on R, plus `pkgcachefs push` of the mounted store
#   umount   on R: writers stopped (between operations), `pkgcachefs umount`, the daemon
#            killed during the final push
# and kills the daemon (kill -9) after a random delay. Then:
#   - pkgcachefs fsck of the store as the crash left it exits 0 (leftovers it names as such
#     are fine), the store mounts again, fsck of the mounted store exits 0;
#   - cwork.py check: every file whose last operation was fsynced holds exactly that content,
#     every other file holds a complete version some operation made (content carries its own
#     SHA-256), a durable file renamed in flight is at one of its names, nothing else exists;
#   - on R: `pkgcachefs push` completes, and a fresh host (new store, same remote, no_push)
#     sees exactly the same tree.
# Every 6th round ends with a clean umount, offline fsck and gc of the store.
#
# usage: kill9.sh PKGCACHEFS [--rounds N] [--seconds S] [--seed X]
#   default: --seconds 55 (the CI run). Prints "crash: rounds=R kills=K losses=L ..." last;
#   exit 0 pass, 1 fail (with the seed and round that reproduce it), 77 skip.
set -u -o pipefail
CRASH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$CRASH_DIR/../clients/lib.sh"

BINARG=${1:-}
shift || true
ROUNDS=0
SECONDS_MAX=0
SEED=$$
while [ $# -gt 0 ]; do
	case $1 in
	--rounds) ROUNDS=$2; shift 2;;
	--seconds) SECONDS_MAX=$2; shift 2;;
	--seed) SEED=$2; shift 2;;
	*) echo "usage: $0 PKGCACHEFS [--rounds N] [--seconds S] [--seed X]" >&2; exit 2;;
	esac
done
[ "$ROUNDS" = 0 ] && [ "$SECONDS_MAX" = 0 ] && SECONDS_MAX=55
pcf_init "$BINARG"
# The binary under test, copied: a rebuild during a long run must not swap it.
cp "$BIN" "$TMP/pkgcachefs" && BIN=$TMP/pkgcachefs
RANDOM=$SEED
W=("$PY" "$CRASH_DIR/cwork.py")
REMOTE=file://$TMP/remote
mkdir -p "$TMP/remote"
KILLS=0 LOSSES=0 R_DONE=0 K_GC=0 K_PUSH=0 K_UMOUNT=0 FRESH=0 FAILED=0
START=$(date +%s)
log "kill9: seed $SEED (--seed $SEED repeats the choices and delays)"

summary() {
	echo "crash: test=kill9 rounds=$R_DONE kills=$KILLS losses=$LOSSES failures=$FAILED" \
		"kills_in_gc=$K_GC kills_in_push=$K_PUSH kills_in_umount_push=$K_UMOUNT" \
		"fresh_host_checks=$FRESH seed=$SEED"
}

# crash_fail WHAT: the first failure ends the run; the store and logs are kept for the lead.
crash_fail() {
	FAILED=$((FAILED + 1))
	local keep
	keep=$(mktemp -d "${TMPDIR:-/tmp}/pcf-kill9-fail.XXXXXX")
	for s in L R; do
		[ -d "$TMP/$s" ] && cp -a "$TMP/$s" "$keep/" 2>/dev/null
	done
	echo "FAIL: round $R_DONE ($SCEN on store $S): $*" >&2
	echo "  reproduce: $0 $BIN --rounds $((R_DONE + 1)) --seed $SEED ; stores and logs kept in $keep" >&2
	summary
	exit 1
}

msleep() { sleep "$(($1 / 1000)).$(printf %03d $(($1 % 1000)))"; }

# Per store: its directory, mountpoint, baseline counter, mount options.
declare -A NB=([L]=0 [R]=0)
store_dir() { echo "$TMP/$1/store"; }
store_mnt() { echo "$TMP/$1/mnt"; }
mount_store() {
	local s=$1 opts=""
	if [ "$s" = R ]; then
		opts="push_interval=$((RANDOM % 3))"
		[ $((RANDOM % 3)) = 0 ] && opts="$opts,max_size=$((2 + RANDOM % 14))M"
		log "mount R -o $opts"
		pcf_mount "$(store_dir R)" "$(store_mnt R)" --remote "$REMOTE" -o "$opts"
	else
		pcf_mount "$(store_dir L)" "$(store_mnt L)"
	fi
}
fsck_store() {
	local out rc
	out=$(timeout "$PCF_TIMEOUT" "$BIN" fsck --store "$(store_dir "$1")" 2>&1)
	rc=$?
	if [ $rc != 0 ]; then
		echo "$out" | tail -n 40 >&2
		crash_fail "pkgcachefs fsck ($2) exited $rc"
	fi
	[ -n "$out" ] && echo "$out" | grep -v '^$' | sed 's/^/    fsck: /' | tail -n 3
	return 0
}

for s in L R; do
	mkdir -p "$TMP/$s/mnt"
	mount_store "$s"
	"${W[@]}" init "$(store_mnt "$s")" "$TMP/$s/base-0.json" || fail "init of $s failed"
done

fresh_host() {
	local f=$TMP/fresh-$R_DONE
	mkdir -p "$f/mnt"
	pcf_mount "$f/store" "$f/mnt" --remote "$REMOTE" -o no_push
	"${W[@]}" check "$f/mnt" "$TMP/R/base-${NB[R]}.json" - ||
		crash_fail "a fresh host on the same remote does not see what the store pushed"
	pcf_umount "$f/mnt"
	pcf_wait_daemon_exit "$f/store"
	# The fresh host is gone for good: drop it from the mounts to clean up.
	PCF_MOUNTS=("${PCF_MOUNTS[@]:0:${#PCF_MOUNTS[@]}-1}")
	rm -rf "$f"
	FRESH=$((FRESH + 1))
}

while :; do
	if [ "$ROUNDS" != 0 ] && [ "$R_DONE" -ge "$ROUNDS" ]; then break; fi
	if [ "$SECONDS_MAX" != 0 ] && [ $(($(date +%s) - START)) -ge "$SECONDS_MAX" ]; then break; fi
	r=$((R_DONE + 1))
	case $((RANDOM % 9)) in
	0|1) SCEN=write S=L;;
	2) SCEN=write S=R;;
	3|4) SCEN=gc S=L;;
	5) SCEN=gc S=R;;
	6|7) SCEN=push S=R;;
	8) SCEN=umount S=R;;
	esac
	ST=$(store_dir $S)
	MNT=$(store_mnt $S)
	LOGD=$TMP/$S/logs-$r
	mkdir -p "$LOGD"
	base=$TMP/$S/base-${NB[$S]}.json
	pids=()
	for w in w0 w1; do
		"${W[@]}" run "$MNT" "$base" "$LOGD/$w.log" "$w" "$r$SEED" \
			>"$LOGD/$w.out" 2>&1 &
		pids+=($!)
		PCF_BG_PIDS+=($!)
	done
	side=""
	sidepid=""
	start_ms=$((300 + RANDOM % 1700))
	case $SCEN in
	write)
		msleep $start_ms;;
	gc)
		msleep $start_ms
		if [ $S = R ]; then
			timeout "$PCF_TIMEOUT" "$BIN" gc --store "$ST" --max-size $((1 + RANDOM % 8))M \
				>"$LOGD/side.out" 2>&1 &
		else
			timeout "$PCF_TIMEOUT" "$BIN" gc --store "$ST" >"$LOGD/side.out" 2>&1 &
		fi
		sidepid=$!
		msleep $((RANDOM % 1200));;
	push)
		msleep $start_ms
		timeout "$PCF_TIMEOUT" "$BIN" push --store "$ST" >"$LOGD/side.out" 2>&1 &
		sidepid=$!
		msleep $((RANDOM % 800));;
	umount)
		msleep $start_ms
		# The writers stop between two operations and exit first: a file still open would
		# make the umount fail as busy, and a writer killed in the middle of a write
		# leaves a partial file on any filesystem.
		for p in "${pids[@]}"; do kill -USR1 "$p" 2>/dev/null; done
		for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
		timeout "$PCF_TIMEOUT" "$BIN" umount "$MNT" >"$LOGD/side.out" 2>&1 &
		sidepid=$!
		msleep $((RANDOM % 700));;
	esac
	for i in 0 1; do
		if [ $SCEN != umount ] && ! kill -0 "${pids[$i]}" 2>/dev/null; then
			wait "${pids[$i]}"
			cat "$LOGD/w$i.out" >&2
			crash_fail "writer w$i stopped before the kill"
		fi
	done
	side_done=0
	[ -n "$sidepid" ] && ! kill -0 "$sidepid" 2>/dev/null && side_done=1
	pid=$(pcf_daemon_pid "$ST") || pid=""
	if [ -n "$pid" ]; then
		kill -9 "$pid"
		for t in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
		KILLS=$((KILLS + 1))
		killed=1
	else
		killed=0
	fi
	is_mounted "$MNT" && fusermount3 -u -z "$MNT"
	for i in 0 1; do
		for t in $(seq 150); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.1; done
		kill -0 "${pids[$i]}" 2>/dev/null && kill -9 "${pids[$i]}"
		[ $SCEN = umount ] && continue	# killed and reaped before the umount
		wait "${pids[$i]}"
		rc=$?
		case $rc in
		0|3|137) ;;
		*) cat "$LOGD/w$i.out" >&2
		   crash_fail "writer w$i exited $rc (1: it read back wrong data while the daemon ran)";;
		esac
	done
	what="kill after ${start_ms} ms"
	if [ -n "$sidepid" ]; then
		wait "$sidepid"
		rc=$?
		if [ $side_done = 1 ]; then
			what="$what; $SCEN had finished before the kill (exit $rc)"
			[ $rc = 0 ] || { cat "$LOGD/side.out" >&2; crash_fail "$SCEN exited $rc before any kill"; }
		elif [ $killed = 1 ]; then
			what="$what; $SCEN was running at the kill"
			case $SCEN in gc) K_GC=$((K_GC + 1));; push) K_PUSH=$((K_PUSH + 1));; umount) K_UMOUNT=$((K_UMOUNT + 1));; esac
		fi
	fi
	[ $killed = 1 ] || what="no daemon left to kill ($SCEN finished first)"
	PCF_BG_PIDS=()
	log "round $r: $SCEN on $S: $what"
	fsck_store $S "round $r, as the crash left it"
	mount_store $S
	fsck_store $S "round $r, remounted"
	n=$((NB[$S] + 1))
	if ! "${W[@]}" check "$MNT" "$base" "$TMP/$S/base-$n.json" "$LOGD/w0.log" "$LOGD/w1.log" \
		2>"$LOGD/check.err"; then
		cat "$LOGD/check.err" >&2
		LOSSES=$((LOSSES + $(grep -c 'LOSS\|lost the durable' "$LOGD/check.err")))
		crash_fail "the remounted store does not hold what the writers made durable"
	fi
	NB[$S]=$n
	if [ $S = R ]; then
		out=$(timeout "$PCF_TIMEOUT" "$BIN" push --store "$ST" 2>&1) ||
			{ echo "$out" >&2; crash_fail "the push after the crash failed"; }
		fresh_host
	fi
	R_DONE=$r
	if [ $((r % 6)) = 0 ]; then
		for s in L R; do
			pcf_umount "$(store_mnt $s)"
			pcf_wait_daemon_exit "$(store_dir $s)"
			fsck_store $s "round $r, after a clean umount"
			out=$(timeout "$PCF_TIMEOUT" "$BIN" gc --store "$(store_dir $s)" 2>&1) ||
				{ echo "$out" >&2; crash_fail "offline gc of $s failed"; }
			fsck_store $s "round $r, after offline gc"
			mount_store $s
		done
	fi
	rm -rf "$TMP/$S/logs-$((r - 12))"
done

for s in L R; do
	pcf_umount "$(store_mnt $s)"
	pcf_wait_daemon_exit "$(store_dir $s)"
	fsck_store $s "at the end"
done
summary
