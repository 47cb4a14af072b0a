#!/bin/bash
# SPDX-License-Identifier: MIT
# Soak: the reliability battery of issue 4 for a given time, then one summary table.
#
#   tools/soak.sh DURATION [PKGCACHEFS]      DURATION: seconds, or 90s, 10m, 2h
#
# Whatever of the battery exists is found by path and run; what is missing (or cannot run
# here: exit 77) is listed as such, so the script works while the battery grows:
#   tests/fuzz/run-fuzz.sh     every target (run-fuzz.sh --list, else tests/fuzz/fuzz_*.c), each
#                              for its share of ~15% of the time (at least 10 s); needs clang
#   tests/crash/*.sh           each with --seconds S (~15% of the time each, at least 30 s) and a
#                              seed; "crash: ... rounds= kills=|cuts= losses= failures=" is read
#   tests/remote-e2e/faults.sh once, when DURATION >= SOAK_FAULTS_MIN (default 300 s; its
#                              scenarios take about two minutes) or SOAK_FAULTS=1
#   tests/stress/*.sh          once each, when present (pass/fail only)
#   tests/difftest/difftest.py the rest of the time: seeds in turn, plain, with remounts every
#                              100 ops, and with a file:// remote (fresh store at each remount)
# The binary is copied first (a rebuild during the soak does not swap it). The first failure is
# reported with what reproduces it (seed and command); the other components still run, so one
# soak shows everything that is wrong. Exit 0 when nothing failed, 1 otherwise.
#
# Environment: SOAK_SEED (base seed, default from the clock; printed), SOAK_DIFFTEST_ARGS (added
# to every difftest run, e.g. "--avoid rdonly-trunc" to look past a known bug), SOAK_ONLY (a
# subset of "fuzz crash faults stress difftest"), SOAK_KEEP=1 (keep the logs even on success),
# TMPDIR (where everything goes).
set -u -o pipefail
# The whole script is one block, read before it runs: editing this file during a soak is safe.
{
top=$(cd "$(dirname "$0")/.." && pwd)

usage() {
	echo "usage: $0 DURATION [PKGCACHEFS]   (DURATION: seconds, or 90s, 10m, 2h)" >&2
	exit 2
}
[ $# -ge 1 ] || usage
case $1 in
*h) DUR=$((${1%h} * 3600)) ;;
*m) DUR=$((${1%m} * 60)) ;;
*s) DUR=${1%s} ;;
*) DUR=$1 ;;
esac
if ! [[ $DUR =~ ^[0-9]+$ ]] || [ "$DUR" -eq 0 ]; then usage; fi
BIN_ARG=${2:-$top/build/pkgcachefs}
[ -x "$BIN_ARG" ] || { echo "$BIN_ARG is not an executable (build first: ninja -C build)" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pcf-soak.XXXXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
cp "$BIN_ARG" "$WORK/pkgcachefs"
BIN=$WORK/pkgcachefs
SEED=${SOAK_SEED:-$(($(date +%s) % 100000))}
ONLY=${SOAK_ONLY:-fuzz crash faults stress difftest}
START=$(date +%s)
DEADLINE=$((START + DUR))
CHILD=""

want() { [[ " $ONLY " == *" $1 "* ]]; }
now() { date +%s; }
left() { echo $((DEADLINE - $(now))); }
log() { echo "[$(date +%T)] $*"; }

# Table rows: component|runs|operations|faults|survived|remounts|fuzz_execs|result
declare -a ROWS=()
FIRST_FAIL=""
T_OPS=0 T_FAULTS=0 T_SURVIVED=0 T_EXECS=0 T_REMOUNTS=0 T_LOSSES=0

row() { ROWS+=("$1|$2|$3|$4|$5|$6|$7|$8"); }
first_fail() { [ -n "$FIRST_FAIL" ] || FIRST_FAIL="$*"; }

# run_logged LOG TIMEOUT CMD...: runs CMD in its own process group with a hard timeout; the
# status is returned (124: timed out). Ctrl-C / TERM of the soak stops it first.
run_logged() {
	local logf=$1 lim=$2 rc
	shift 2
	timeout --signal=TERM --kill-after=60 "$lim" "$@" >"$logf" 2>&1 &
	CHILD=$!
	wait "$CHILD"
	rc=$?
	CHILD=""
	return $rc
}

kv() { # kv KEY LINE: the value of KEY=... in LINE
	sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$2"
}

summary() {
	local elapsed=$(($(now) - START)) r IFS='|'
	echo
	echo "==== soak summary: $elapsed s (asked $DUR s), base seed $SEED, binary $BIN_ARG"
	printf '%-24s %6s %10s %8s %9s %8s %12s  %s\n' component runs operations faults survived \
		remounts fuzz-execs result
	for r in "${ROWS[@]}"; do
		# shellcheck disable=SC2086
		set -- $r
		printf '%-24s %6s %10s %8s %9s %8s %12s  %s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8"
	done
	printf '%-24s %6s %10s %8s %9s %8s %12s\n' TOTAL "" "$T_OPS" "$T_FAULTS" "$T_SURVIVED" \
		"$T_REMOUNTS" "$T_EXECS"
	echo "operations run: $T_OPS; faults injected: $T_FAULTS; crashes survived: $T_SURVIVED;" \
		"remounts: $T_REMOUNTS; fuzz executions: $T_EXECS"
	if [ -z "$FIRST_FAIL" ]; then
		echo "RESULT: 0 losses, 0 failures"
	else
		echo "RESULT: FAILED. first failure: $FIRST_FAIL"
		echo "logs kept in $LOGS"
	fi
}

# shellcheck disable=SC2317 # (a trap handler)
on_signal() {
	[ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null && wait "$CHILD" 2>/dev/null
	first_fail "soak interrupted"
	summary
	exit 130
}
trap on_signal INT TERM

log "soak: $DUR s, base seed $SEED (SOAK_SEED=$SEED repeats the seeds), logs in $LOGS"

# ---------------------------------------------------------------- fuzzers
fuzz() {
	local rf=$top/tests/fuzz/run-fuzz.sh targets t per logf rc execs crashes
	if [ ! -x "$rf" ]; then
		row fuzz - - - - - - "absent (no tests/fuzz/run-fuzz.sh)"
		return
	fi
	if ! command -v clang >/dev/null; then
		row fuzz - - - - - - "skip: clang missing"
		return
	fi
	targets=$("$rf" --list 2>/dev/null) ||
		targets=$(find "$top/tests/fuzz" -maxdepth 1 -name 'fuzz_*.c' -printf '%f\n' |
			sed 's/^fuzz_//; s/\.c$//' | sort)
	read -ra targets <<<"${targets//$'\n'/ }"
	[ ${#targets[@]} -gt 0 ] || { row fuzz - - - - - - "absent (no targets)"; return; }
	per=$((DUR * 15 / 100 / ${#targets[@]}))
	[ $per -ge 10 ] || per=10
	export FUZZ_OUT=$WORK/fuzz
	FUZZ_TMP=$(mktemp -d "$( [ -w /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/pcf-soak-fuzz.XXXXXX")
	export FUZZ_TMP
	for t in "${targets[@]}"; do
		logf=$LOGS/fuzz-$t.log
		log "fuzz $t: $per s"
		touch "$LOGS/.start-$t"
		run_logged "$logf" $((per + 600)) "$rf" "$t" "$per" -seed=$((SEED + 7))
		rc=$?
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logf" | tail -n 1)
		execs=${execs:-0}
		T_EXECS=$((T_EXECS + execs))
		if [ $rc = 0 ]; then
			row "fuzz $t" 1 - - - - "$execs" ok
		else
			crashes=$(find "$FUZZ_OUT" -maxdepth 1 \( -name "$t-*" -o -name 'crash-*' -o \
				-name 'timeout-*' -o -name 'leak-*' \) -newer "$LOGS/.start-$t" -print -quit)
			row "fuzz $t" 1 - - - - "$execs" "FAIL (exit $rc)"
			first_fail "fuzz $t: exit $rc, input ${crashes:-?} (log $logf; rerun:" \
				"tests/fuzz/run-fuzz.sh $t $per -seed=$((SEED + 7)))"
		fi
	done
	rm -rf "$FUZZ_TMP"
}

# ---------------------------------------------------------------- crash battery
crash() {
	local s name per logf rc last rounds kills cuts losses failures cseed faults
	local found=0
	for s in "$top"/tests/crash/*.sh; do
		[ -x "$s" ] || continue
		found=1
		name=$(basename "$s" .sh)
		per=$((DUR * 15 / 100))
		[ $per -ge 30 ] || per=30
		cseed=$((SEED + 1000))
		logf=$LOGS/crash-$name.log
		log "crash $name: $per s, seed $cseed"
		if grep -q -- '--seconds' "$s"; then
			run_logged "$logf" $((per * 3 + 600)) "$s" "$BIN" --seconds "$per" --seed "$cseed"
		else
			run_logged "$logf" $((per * 3 + 600)) "$s" "$BIN"
		fi
		rc=$?
		last=$(grep '^crash:' "$logf" | tail -n 1)
		rounds=$(kv rounds "$last")
		kills=$(kv kills "$last")
		cuts=$(kv cuts "$last")
		losses=$(kv losses "$last")
		failures=$(kv failures "$last")
		faults=$((${kills:-0} + ${cuts:-0}))
		T_FAULTS=$((T_FAULTS + faults))
		T_LOSSES=$((T_LOSSES + ${losses:-0}))
		if [ $rc = 77 ]; then
			row "crash $name" - - - - - - "skip: $(grep -m1 SKIP "$logf" | cut -c1-60)"
		elif [ $rc = 0 ] && [ "${losses:-0}" = 0 ]; then
			T_SURVIVED=$((T_SURVIVED + faults))
			row "crash $name" "${rounds:-?}" - "$faults" "$faults" - - "ok, 0 losses"
		else
			T_SURVIVED=$((T_SURVIVED + faults - ${failures:-0}))
			row "crash $name" "${rounds:-?}" - "$faults" "$((faults - ${failures:-0}))" - - \
				"FAIL (exit $rc, losses ${losses:-?})"
			first_fail "crash $name: exit $rc, losses ${losses:-?}, $(grep -m1 'FAIL' "$logf" |
				cut -c1-200) (log $logf; rerun: tests/crash/$name.sh BIN --seed" \
				"$(kv seed "$last" | grep . || echo "$cseed") --seconds $per)"
		fi
	done
	[ $found = 1 ] || row crash - - - - - - "absent (no tests/crash/*.sh)"
}

# ---------------------------------------------------------------- remote faults
faults() {
	local f=$top/tests/remote-e2e/faults.sh logf rc n soft
	if [ ! -x "$f" ]; then
		row "remote faults" - - - - - - "absent"
		return
	fi
	if [ "${SOAK_FAULTS:-0}" != 1 ] && [ "$DUR" -lt "${SOAK_FAULTS_MIN:-300}" ]; then
		row "remote faults" - - - - - - "not run (DURATION < ${SOAK_FAULTS_MIN:-300} s)"
		return
	fi
	logf=$LOGS/faults.log
	log "remote-e2e faults (all scenarios, webdav and s3)"
	run_logged "$logf" 1800 "$f" "$BIN"
	rc=$?
	n=$(grep -c '== scenario' "$logf")
	T_FAULTS=$((T_FAULTS + n))
	if [ $rc = 0 ]; then
		T_SURVIVED=$((T_SURVIVED + n))
		row "remote faults" "$n" - "$n" "$n" - - ok
	elif [ $rc = 77 ]; then
		row "remote faults" - - - - - - "skip: $(grep -m1 SKIP "$logf" | cut -c1-60)"
	else
		soft=$(grep -c '^FAIL (continuing)' "$logf")
		[ "$soft" -gt 0 ] || soft=1
		T_SURVIVED=$((T_SURVIVED + n - soft))
		row "remote faults" "$n" - "$n" "$((n - soft))" - - "FAIL (exit $rc)"
		first_fail "remote faults: $(grep -m1 'FAIL' "$logf" | cut -c1-200) (log $logf;" \
			"rerun: tests/remote-e2e/faults.sh BIN)"
	fi
}

# ---------------------------------------------------------------- stress (when it exists)
stress() {
	local s name logf rc found=0
	for s in "$top"/tests/stress/*.sh; do
		[ -x "$s" ] || continue
		found=1
		name=$(basename "$s" .sh)
		logf=$LOGS/stress-$name.log
		log "stress $name"
		run_logged "$logf" 1800 "$s" "$BIN"
		rc=$?
		case $rc in
		0) row "stress $name" 1 - - - - - ok ;;
		77) row "stress $name" - - - - - - "skip" ;;
		*) row "stress $name" 1 - - - - - "FAIL (exit $rc)"
		   first_fail "stress $name: exit $rc (log $logf; rerun: tests/stress/$name.sh BIN)" ;;
		esac
	done
	[ $found = 1 ] || row stress - - - - - - "absent (no tests/stress/*.sh)"
}

# ---------------------------------------------------------------- differential
difftest() {
	local d=$top/tests/difftest/difftest.py i=0 seed mode args logf rc last ops rem res
	local seeds=0 dops=0 drem=0 fails=0 rmin
	if [ ! -f "$d" ]; then
		row difftest - - - - - - "absent"
		return
	fi
	while [ "$(left)" -gt 15 ] || [ $i = 0 ]; do
		seed=$((SEED + i))
		case $((i % 3)) in
		0) mode=plain; args=(--ops 2000) ;;
		1) mode=remount; args=(--ops 2000 --remount-every 100) ;;
		2) mode=remote; args=(--ops 1000 --remote --remount-every 100) ;;
		esac
		# shellcheck disable=SC2206
		args+=(--seed "$seed" --no-minimise ${SOAK_DIFFTEST_ARGS:-})
		logf=$LOGS/difftest-$seed-$mode.log
		rmin=$(left)
		[ "$rmin" -gt 60 ] || rmin=60
		run_logged "$logf" $((rmin + 300)) python3 "$d" "$BIN" "${args[@]}"
		rc=$?
		i=$((i + 1))
		last=$(grep '^DIFFTEST ' "$logf" | tail -n 1)
		ops=$(kv ops "$last")
		rem=$(kv remounts "$last")
		res=$(kv result "$last")
		if [ $rc = 77 ]; then
			row difftest - - - - - - "skip: $(grep -m1 SKIP "$logf" | cut -c1-60)"
			return
		fi
		seeds=$((seeds + 1))
		dops=$((dops + ${ops:-0}))
		drem=$((drem + ${rem:-0}))
		if [ $rc != 0 ]; then
			fails=$((fails + 1))
			first_fail "difftest seed $seed ($mode, ${res:-exit $rc}): $(grep -m1 \
				'^DIVERGENCE\|^HANG\|Error' "$logf" | cut -c1-300) (log $logf; reproduce and" \
				"minimise: tests/difftest/difftest.py BIN ${args[*]/--no-minimise/})"
			log "difftest seed $seed ($mode): ${res:-exit $rc}"
		fi
	done
	T_OPS=$((T_OPS + dops))
	T_REMOUNTS=$((T_REMOUNTS + drem))
	row "difftest ($seeds seeds)" "$seeds" "$dops" - - "$drem" - \
		"$([ $fails = 0 ] && echo "ok, 0 divergences" || echo "FAIL: $fails divergent seeds")"
}

want fuzz && fuzz
want crash && crash
want faults && faults
want stress && stress
want difftest && difftest
summary
if [ -z "$FIRST_FAIL" ] && [ -z "${SOAK_KEEP:-}" ]; then
	rm -rf "$WORK"
	exit 0
fi
echo "work dir kept: $WORK"
[ -z "$FIRST_FAIL" ]
exit
}
