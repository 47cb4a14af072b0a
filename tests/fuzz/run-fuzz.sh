#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build a libFuzzer target with clang (ASan + UBSan) from the core sources it needs, and run it
# on its seed corpus for a while. Not part of meson: libFuzzer needs clang, the project builds
# with the system compiler. Needs the Debian 12 packages clang and libclang-rt-14-dev.
#   tests/fuzz/run-fuzz.sh TARGET SECONDS [libFuzzer options...]
#   tests/fuzz/run-fuzz.sh --build TARGET         (only build $FUZZ_OUT/fuzz_TARGET)
#   tests/fuzz/run-fuzz.sh --gen-corpus TARGET    (rewrite tests/fuzz/corpus/TARGET)
#   tests/fuzz/run-fuzz.sh --list                 (the targets)
# Targets: catalog pack config listing credentials bundle (tests/fuzz/fuzz_TARGET.c).
# Everything goes to $FUZZ_OUT (default build-fuzz): new inputs to corpus-TARGET (the seed corpus
# in git is only read), crashes, leaks and timeouts to TARGET-*; the core sources are compiled
# once into obj/ (again when a source or header changes). The config and bundle targets make
# their stores under $FUZZ_TMP (default /dev/shm). The exit status is non-zero when the fuzzer
# found a crash, a leak or a timeout.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"

targets=(catalog pack config listing credentials bundle)
mode=run
case ${1:-} in
--gen-corpus) mode=gen; shift ;;
--build) mode=build; shift ;;
--list) echo "${targets[@]}"; exit 0 ;;
esac
if [[ $# -lt 1 ]] || { [[ $mode == run ]] && [[ $# -lt 2 ]]; }; then
	echo "usage: $0 TARGET SECONDS [libFuzzer options...] | $0 --build TARGET |" \
		"$0 --gen-corpus TARGET | $0 --list" >&2
	exit 2
fi
target=$1
shift

remote=(index/remote.c index/remote_engine.c index/remote_file.c index/remote_http.c
	index/remote_html.c index/remote_s3.c index/remote_creds.c index/sigv4.c index/util.c)
# Every source of the core library, as meson.build lists them.
mapfile -t all < <(sed -n "/static_library('pkgcache'/,/include_directories/p" meson.build |
	grep -o "index/[a-z0-9_/]*\.c")
case $target in
catalog) srcs=(index/catalog.c index/hash.c index/chunker.c index/util.c) ;;
pack) srcs=(index/pack.c index/hash.c) ;;
listing | credentials) srcs=("${remote[@]}" index/hash.c) ;;
config | bundle) srcs=("${all[@]}") ;;
*)
	echo "unknown target: $target (targets: ${targets[*]})" >&2
	exit 2
	;;
esac

out=${FUZZ_OUT:-$top/build-fuzz}
mkdir -p "$out/corpus-$target"
# The same definitions as meson.build's project arguments.
cflags=(-std=gnu11 -g -O1 -D_GNU_SOURCE -DFUSE_USE_VERSION=314 '-DPKGCACHEFS_VERSION="fuzz"'
	-Iindex -fno-strict-aliasing)
libs=(-lzstd -lxxhash -lcrypto -lsqlite3 -lcurl -lpthread -lm)
san=(-fsanitize=address,undefined -fno-sanitize-recover=undefined)

# Compile srcs into $1 with the extra flags that follow; the objects into objs.
compile() {
	local dir=$1 src obj
	shift
	mkdir -p "$dir"
	objs=()
	for src in "${srcs[@]}"; do
		obj=$dir/$(echo "${src%.c}" | tr / _).o
		# Any header change rebuilds everything: the core is small.
		if [[ ! -e $obj || $src -nt $obj ]] || [[ -n $(find index -name '*.h' -newer "$obj") ]]
		then
			clang "${cflags[@]}" "$@" -c "$src" -o "$obj.$$"
			mv "$obj.$$" "$obj"
		fi
		objs+=("$obj")
	done
}

if [[ $mode == gen ]]; then
	if [[ $target == listing || $target == credentials ]]; then
		echo "$target has no generator: its seeds are captured answers and files in git" >&2
		exit 2
	fi
	compile "$out/obj-gen"
	extra=()
	[[ $target == catalog ]] && extra=(-DFUZZ_CATALOG_GEN)
	clang "${cflags[@]}" -DFUZZ_GEN "${extra[@]}" "tests/fuzz/fuzz_$target.c" "${objs[@]}" \
		"${libs[@]}" -o "$out/gen_$target"
	rm -rf "tests/fuzz/corpus/$target"
	mkdir -p "tests/fuzz/corpus/$target"
	"$out/gen_$target" "tests/fuzz/corpus/$target"
	exit 0
fi

compile "$out/obj" "${san[@]}" -fsanitize=fuzzer-no-link
clang "${cflags[@]}" "${san[@]}" -fsanitize=fuzzer "tests/fuzz/fuzz_$target.c" "${objs[@]}" \
	"${libs[@]}" -o "$out/fuzz_$target.$$"
mv "$out/fuzz_$target.$$" "$out/fuzz_$target"
[[ $mode == build ]] && exit 0

seconds=$1
shift
"$out/fuzz_$target" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2560 -timeout=10 \
	-print_final_stats=1 -artifact_prefix="$out/$target-" "$@" "$out/corpus-$target" \
	"tests/fuzz/corpus/$target"
