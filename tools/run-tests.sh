#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The test command: install what the tests need, build, run every test suite (unit, mount,
# clients), then run the unit and mount suites again under AddressSanitizer and
# UndefinedBehaviorSanitizer. Mount and client tests need root and /dev/fuse; without them
# they skip and say why.
#   tools/run-tests.sh [--no-sanitize]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

tools/install-deps.sh --test

run_suite() {
	local dir=$1
	shift
	meson test -C "$dir" --print-errorlogs --num-processes 1 "$@"
}

echo "== format (clang-format, .clang-format)"
clang-format --dry-run --Werror index/*.[ch] index/sync/*.[ch] fs/*.[ch] tests/*.c tests/mount/*.c tools/*.c

echo "== build (warnings are errors)"
if [[ ! -f build-test/build.ninja ]]; then
	meson setup build-test -Dwerror=true >/dev/null
fi
ninja -C build-test
echo "== tests"
run_suite build-test

if [[ ${1:-} != --no-sanitize ]]; then
	echo "== ASan + UBSan build"
	if [[ ! -f build-asan/build.ninja ]]; then
		meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false \
			-Dwerror=true >/dev/null
	fi
	ninja -C build-asan
	# Daemons run detached with no stderr: their reports go to files, checked below.
	logs=$(mktemp -d /tmp/pkgcachefs-sanitizer.XXXXXX)
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:log_path=$logs/asan
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan
	status=0
	run_suite build-asan --suite unit --suite mount || status=$?
	if compgen -G "$logs/*" >/dev/null; then
		echo "== sanitizer reports:"
		cat "$logs"/*
		status=1
	fi
	rm -rf "$logs"
	[[ $status -eq 0 ]] || exit "$status"
fi
echo "== all tests passed"
