#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build a libFuzzer target with clang (ASan + UBSan) from the core sources it needs, and run it
# on its seed corpus for a while. Not part of meson: libFuzzer needs clang, the project builds
# with the system compiler. Needs the Debian 12 packages clang and libclang-rt-14-dev.
#   tests/fuzz/run-fuzz.sh TARGET SECONDS [libFuzzer options...]
#   tests/fuzz/run-fuzz.sh --gen-corpus TARGET    (rewrite tests/fuzz/corpus/TARGET)
# New inputs go to build-fuzz/corpus-TARGET (the seed corpus in git is only read), crashes to
# build-fuzz/. The exit status is non-zero when the fuzzer found a crash.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"

gen=false
if [[ ${1:-} == --gen-corpus ]]; then
	gen=true
	shift
fi
if [[ $# -lt 1 ]] || { ! $gen && [[ $# -lt 2 ]]; }; then
	echo "usage: $0 TARGET SECONDS [libFuzzer options...] | $0 --gen-corpus TARGET" >&2
	exit 2
fi
target=$1
shift

case $target in
catalog) srcs=(index/catalog.c index/hash.c index/chunker.c) ;;
*)
	echo "unknown target: $target" >&2
	exit 2
	;;
esac

out=${FUZZ_OUT:-$top/build-fuzz}
mkdir -p "$out/corpus-$target"
# The same definitions as meson.build's project arguments.
cflags=(-std=gnu11 -g -O1 -D_GNU_SOURCE -DFUSE_USE_VERSION=314 '-DPKGCACHEFS_VERSION="fuzz"'
	-Iindex -fno-strict-aliasing)
libs=(-lzstd -lxxhash -lcrypto)

if $gen; then
	clang "${cflags[@]}" -DFUZZ_CATALOG_GEN "tests/fuzz/fuzz_$target.c" "${srcs[@]}" \
		"${libs[@]}" -o "$out/gen_$target"
	rm -rf "tests/fuzz/corpus/$target"
	mkdir -p "tests/fuzz/corpus/$target"
	"$out/gen_$target" "tests/fuzz/corpus/$target"
	exit 0
fi

seconds=$1
shift
clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	"tests/fuzz/fuzz_$target.c" "${srcs[@]}" "${libs[@]}" -o "$out/fuzz_$target"
"$out/fuzz_$target" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2560 -timeout=10 \
	-print_final_stats=1 -artifact_prefix="$out/" "$@" "$out/corpus-$target" \
	"tests/fuzz/corpus/$target"
