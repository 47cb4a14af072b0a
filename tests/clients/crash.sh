#!/bin/bash
# SPDX-License-Identifier: MIT
# kill -9 crash test with an fsync manifest, after JuiceFS's crash_consistency test.
#
# Each round, two writers (crash_writer.py) create, overwrite, append, rename, unlink files and
# publish directories on the mount, each recording in a manifest outside the mount what is
# durable (after fsync returned) and what is in flight.  At a random moment 2-4 s in, the daemon
# is killed with kill -9 (in even rounds, while `pkgcachefs gc` of the mounted store may be
# running), the dead mount is lazily unmounted and then:
#   - pkgcachefs fsck on the store, as the crash left it, must be clean;
#   - the store mounts again, and fsck of the mounted store is clean too;
#   - every file the manifests call durable holds exactly its content, every other file is
#     something the writers could have left (a prefix of data they wrote to that name, or the
#     previous version), nothing else exists.
# After the last round: clean umount, fsck, gc, fsck, mount, the same check, umount, fsck.
#
# usage: crash.sh PKGCACHEFS_BINARY        (CRASH_ROUNDS, CRASH_SEED to vary)
set -u -o pipefail
. "$(dirname "$0")/lib.sh"
pcf_init "${1:-}"

ROUNDS=${CRASH_ROUNDS:-5}
SEED=${CRASH_SEED:-$$}
STORE=$TMP/store
MNT=$TMP/mnt
W=("$PY" "$CLIENTS_DIR/crash_writer.py")
RANDOM=$SEED
log "crash test: $ROUNDS rounds, seed $SEED (CRASH_SEED=$SEED to repeat the kill timing)"

pcf_mount "$STORE" "$MNT"
"${W[@]}" init "$MNT" "$TMP/baseline-0.json" || fail "could not create the top directories"

msleep() { sleep "$(($1 / 1000)).$(printf %03d $(($1 % 1000)))"; }

check_round() {
	local r=$1
	shift
	"${W[@]}" check "$MNT" "$TMP/baseline-$((r - 1)).json" "$TMP/baseline-$r.json" "$@" ||
		fail "round $r: the mount does not hold what the writers made durable (see above; manifests in $TMP, set PCF_KEEP_TMP=1 to keep them)"
}

for r in $(seq 1 "$ROUNDS"); do
	pids=()
	manifests=()
	for w in 0 1; do
		m=$TMP/manifest-$r-w$w.log
		manifests+=("$m")
		"${W[@]}" run "$MNT" "$TMP/baseline-$((r - 1)).json" "$m" "w$w" "$r" \
			>"$TMP/writer-$r-w$w.out" 2>&1 &
		pids+=($!)
		PCF_BG_PIDS+=($!)
	done
	delay_ms=$((2000 + RANDOM % 2001))
	gcpid=""
	if [ $((r % 2)) = 0 ]; then
		# Even rounds: gc of the mounted store (done by the daemon) starts while the writers
		# run, so the kill may land in the middle of it.
		gc_ms=$((delay_ms - 100 - RANDOM % 900))
		msleep "$gc_ms"
		timeout "$PCF_TIMEOUT" "$BIN" gc --store "$STORE" >"$TMP/gc-$r.out" 2>&1 &
		gcpid=$!
		PCF_BG_PIDS+=($!)
		msleep "$((delay_ms - gc_ms))"
	else
		msleep "$delay_ms"
	fi
	gc_done_before_kill=0
	if [ -n "$gcpid" ] && ! kill -0 "$gcpid" 2>/dev/null; then
		gc_done_before_kill=1
	fi
	for i in 0 1; do
		if ! kill -0 "${pids[$i]}" 2>/dev/null; then
			wait "${pids[$i]}"
			rc=$?
			cat "$TMP/writer-$r-w$i.out" >&2
			fail "round $r: writer w$i stopped (exit $rc) before the daemon was killed"
		fi
	done
	log "round $r: kill -9 of the daemon after ${delay_ms} ms"
	pcf_kill9 "$STORE" "$MNT"
	for i in 0 1; do
		for t in $(seq 150); do
			kill -0 "${pids[$i]}" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "${pids[$i]}" 2>/dev/null; then
			kill -9 "${pids[$i]}"
			log "round $r: writer w$i still blocked 15 s after the kill; killed it"
		fi
		wait "${pids[$i]}"
		rc=$?
		case $rc in
		3) tail -n 1 "$TMP/writer-$r-w$i.out";;
		137) ;;
		*)
			cat "$TMP/writer-$r-w$i.out" >&2
			fail "round $r: writer w$i exited $rc (1 means it read back wrong data while the daemon ran)"
			;;
		esac
	done
	if [ -n "$gcpid" ]; then
		wait "$gcpid"
		rc=$?
		if [ $gc_done_before_kill = 1 ]; then
			[ $rc = 0 ] || { cat "$TMP/gc-$r.out" >&2; fail "round $r: gc of the mounted store exited $rc"; }
			log "round $r: gc on the mounted store finished before the kill: $(tail -n 1 "$TMP/gc-$r.out")"
		else
			log "round $r: gc on the mounted store was running at the kill (exit $rc)"
		fi
	fi
	PCF_BG_PIDS=()
	pcf_fsck "$STORE" "round $r, store as the crash left it"
	pcf_mount "$STORE" "$MNT"
	pcf_fsck "$STORE" "round $r, remounted"
	check_round "$r" "${manifests[@]}"
done

log "final: clean umount, fsck, gc, fsck, mount, check"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "after clean umount"
pcf_gc "$STORE" "after the crash rounds"
pcf_fsck "$STORE" "after gc"
pcf_mount "$STORE" "$MNT"
check_round "$((ROUNDS + 1))"
pcf_umount "$MNT"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "at the end"

echo "PASS: crash"
