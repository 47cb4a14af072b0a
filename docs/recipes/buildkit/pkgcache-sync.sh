#!/bin/sh
# SPDX-License-Identifier: MIT
# pkgcache-sync.sh: move package-cache files between a pkgcachefs directory and a BuildKit
# cache mount, copying only what the other side lacks (docs/recipes/buildkit.md).
#
#   pkgcache-sync.sh seed SEED CACHE        in the build: copy into the cache mount CACHE the
#                                           files of SEED (the pkgcachefs directory, bound
#                                           from the named build context) that it lacks
#   pkgcache-sync.sh harvest SEED CACHE OUT in the build: copy into OUT the files of CACHE
#                                           whose path SEED does not have (what this build's
#                                           tools added), for a `--output type=local` stage
#   pkgcache-sync.sh merge OUT DIR          on the host: copy into DIR (on the pkgcachefs
#                                           mount) the files of OUT that DIR lacks
#
# Regular files and symlinks are copied with their modes and times (tar), directories are
# made as needed; an existing path is never overwritten, so a file another job wrote meanwhile
# wins, and a path is compared by name only (package caches name files by URL or content
# hash). Files whose name holds a newline are skipped. POSIX sh with find and tar (GNU or
# busybox), so it runs in slim and alpine images.
set -eu

usage() {
	echo "usage: $0 seed SEED CACHE | harvest SEED CACHE OUT | merge OUT DIR" >&2
	exit 2
}

# copy_missing SRC REF DST: files and symlinks under SRC whose path REF lacks, copied to DST.
copy_missing() {
	src=$1 ref=$2 dst=$3
	[ -d "$src" ] || { echo "$0: $src is not a directory" >&2; exit 1; }
	mkdir -p "$dst"
	list=$(mktemp)
	# A name with a newline would split into two lines: skip it (find's -name '*<LF>*').
	(cd "$src" && find . \( -type f -o -type l \) ! -name '*
*' -print) | while IFS= read -r p; do
		if [ ! -e "$ref/$p" ] && [ ! -L "$ref/$p" ]; then
			printf '%s\n' "$p"
		fi
	done >"$list"
	n=$(wc -l <"$list")
	if [ "$n" -gt 0 ]; then
		# GNU tar as root would restore the source's owners: keep the extracting user's.
		xopt=
		if tar --version 2>/dev/null | grep -q GNU; then xopt=--no-same-owner; fi
		(cd "$src" && tar -cf - -T "$list") | (cd "$dst" && tar $xopt -xpf -)
	fi
	rm -f "$list"
	echo "pkgcache-sync: $n files from $src to $dst" >&2
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
seed)
	[ $# = 2 ] || usage
	copy_missing "$1" "$2" "$2" ;;
harvest)
	[ $# = 3 ] || usage
	[ ! -e "$3" ] || [ -z "$(ls -A "$3")" ] || { echo "$0: $3 is not empty" >&2; exit 1; }
	copy_missing "$2" "$1" "$3" ;;
merge)
	[ $# = 2 ] || usage
	copy_missing "$1" "$2" "$2" ;;
*) usage ;;
esac
