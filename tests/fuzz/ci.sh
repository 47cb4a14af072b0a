#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The short fuzzing run of CI (meson test --suite fuzz): build every libFuzzer target of
# tests/fuzz with clang (ASan + UBSan, through run-fuzz.sh) and run each for a few seconds from its
# seed corpus. Exits non-zero on any crash, leak, timeout or build failure, and 77 (skip) only
# when clang or its libFuzzer runtime is missing (Debian packages clang and libclang-rt-14-dev).
#   tests/fuzz/ci.sh [OUTDIR]    (default: a temporary directory, removed afterwards)
# FUZZ_CI_SECONDS sets the run time of each target (default 6).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
seconds=${FUZZ_CI_SECONDS:-6}

if ! command -v clang >/dev/null; then
	echo "SKIP: clang is missing (Debian: apt-get install clang libclang-rt-14-dev)"
	exit 77
fi
probe=$(mktemp -d "${TMPDIR:-/tmp}/pkgcachefs-fuzz-probe.XXXXXX")
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' \
	>"$probe/p.c"
if ! clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>"$probe/err"; then
	echo "SKIP: clang cannot link a libFuzzer target (Debian: apt-get install" \
		"libclang-rt-14-dev): $(head -n 3 "$probe/err")"
	rm -rf "$probe"
	exit 77
fi
rm -rf "$probe"

if [[ $# -ge 1 ]]; then
	out=$1
	mkdir -p "$out"
	keep=true
else
	out=$(mktemp -d "${TMPDIR:-/tmp}/pkgcachefs-fuzz-ci.XXXXXX")
	keep=false
fi
out=$(cd "$out" && pwd)
# The store and remote directories the config and bundle targets make: tmpfs when there is one.
shm=/dev/shm
[[ -d $shm && -w $shm ]] || shm=${TMPDIR:-/tmp}
FUZZ_TMP=$(mktemp -d "$shm/pkgcachefs-fuzz-ci.XXXXXX")
export FUZZ_TMP FUZZ_OUT=$out
cleanup() {
	rm -rf "$FUZZ_TMP"
	$keep || rm -rf "$out"
}
trap cleanup EXIT

read -ra targets <<<"$("$here/run-fuzz.sh" --list)"
start=$SECONDS
for t in "${targets[@]}"; do
	"$here/run-fuzz.sh" --build "$t"
done
echo "built ${#targets[@]} targets in $((SECONDS - start)) s"

failed=()
summary=()
for t in "${targets[@]}"; do
	# A fresh corpus each run: the result depends only on the seeds in git.
	rm -rf "$out/corpus-$t"
	log=$out/ci-$t.log
	if "$here/run-fuzz.sh" "$t" "$seconds" -detect_leaks=1 >"$log" 2>&1; then
		status=ok
	else
		status=FAILED
		failed+=("$t")
		# The report: the sanitizer's or libFuzzer's, and the input that caused it.
		grep -v -E '^#[0-9]+ +(NEW|REDUCE|pulse|INITED)' "$log" | tail -n 60 || true
	fi
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
	summary+=("$(printf '%-12s %-7s %10s execs  cov %s' "$t" "$status" "${execs:-?}" "${cov:-?}")")
done
printf '%s\n' "${summary[@]}"
echo "total $((SECONDS - start)) s"
if [[ ${#failed[@]} -gt 0 ]]; then
	echo "fuzzing found problems in: ${failed[*]} (inputs in $out; rerun with" \
		"tests/fuzz/run-fuzz.sh TARGET SECONDS)"
	keep=true
	exit 1
fi
