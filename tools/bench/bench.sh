#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# shellcheck disable=SC2317  # functions are called through timed() and trap
#
# bench.sh: times pkgcachefs against plain ext4, libfuse's passthrough_ll and bindfs (and, with
# --base, a second pkgcachefs build, for before/after ratios from one run) on a generated,
# deterministic package-cache corpus (see corpus.py), and reports stored bytes and the daemon's
# peak RSS. It prints figures; it is not a pass/fail test (exit 0 unless it could not measure).
#
# Every target gets a fresh directory, mount or store for each repetition; reps are interleaved
# across targets so that drift on the machine spreads evenly. Everything it mounts is unmounted
# on exit, error or interrupt. Run as root (drop_caches, FUSE mounts).

set -u -o pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CORPUS_PY="$HERE/corpus.py"
REPORT_PY="$HERE/report.py"

SIZE_MB=1024
SMALL_FILES=10000
OUT=""
ONLY=""
REPS=3
SEED=1
WORK=/var/tmp/pkgcachefs-bench
RSS_FILES=0
FRESH_FS=1
PKG_OPTS=""
MEMFS_OPTS="default_permissions,loop=pkgcachefs"
BASE_OPTS=""
BASE_OPTS_SET=0
PIP_WRITE=0
CLEAN=0
VERIFY=1
BASE_DIR=""

usage() {
	cat <<EOF
usage: $0 [options] BUILD_DIR

Times write, cold read, warm read of a wheel corpus and copy, walk and delete of a small-file
tree on ext4, libfuse passthrough_ll, bindfs, memfs (BUILD_DIR/memfs: the FUSE floor, an
in-memory filesystem answering the kernel as pkgcachefs does) and pkgcachefs
(BUILD_DIR/pkgcachefs), median of --reps.

  --size-mb N          logical size of the wheel corpus (pip + Poetry + point releases) [$SIZE_MB]
  --small-files N      files in the node_modules-like tree [$SMALL_FILES]
  --only LIST          comma list of ext4,passthrough,bindfs,memfs,pkgcachefs,base
                       [ext4,passthrough, bindfs when installed, memfs and pkgcachefs when
                       built in BUILD_DIR, base with --base]
  --memfs-opts O       memfs's mount options [$MEMFS_OPTS]
  --base DIR           also run DIR/pkgcachefs (another build, e.g. of main) as target 'base',
                       interleaved with the others, so before/after ratios come from one run
  --out DIR            where report.txt, results.json and logs go [WORK/out]
  --work DIR           corpus (kept between runs) and targets, on the fs under test [$WORK]
  --reps N             repetitions per measurement [$REPS]
  --seed N             corpus seed [$SEED]
  --pkgcachefs-opts O  passed to 'pkgcachefs mount -o O'
  --base-opts O        passed to the base's mount instead [--pkgcachefs-opts]; with
                       --base BUILD_DIR, compares two option sets of one build
  --pip-write          also time a copy made of 10 KiB write() calls, like pip's downloader
  --no-verify          skip the (untimed) content check of what each target returns
  --rss-files N        instead of the main run: copy an N-file tree into each FUSE target and
                       report the daemon's peak RSS after writing and after walking it
  --no-fresh-fs        run every target in WORK itself, not each on an ext4 made for it
  --clean              delete WORK (corpus included) at the end

Each target starts on a new ext4 (a sparse image in WORK, loop-mounted): ext4 avoids reusing
inodes freed in the last 60 s (recently_deleted in its inode allocator), and on one filesystem
a tree copy measured 4.5, 8.5, then 11.9 s, all system time, after each earlier target's rm.
EOF
}

die() {
	echo "bench: error: $*" >&2
	exit 2
}
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

while [[ $# -gt 0 ]]; do
	case "$1" in
	--size-mb) SIZE_MB=$2; shift 2 ;;
	--small-files) SMALL_FILES=$2; shift 2 ;;
	--only) ONLY=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--work) WORK=$2; shift 2 ;;
	--reps) REPS=$2; shift 2 ;;
	--seed) SEED=$2; shift 2 ;;
	--pkgcachefs-opts) PKG_OPTS=$2; shift 2 ;;
	--memfs-opts) MEMFS_OPTS=$2; shift 2 ;;
	--base) BASE_DIR=$2; shift 2 ;;
	--base-opts) BASE_OPTS=$2; BASE_OPTS_SET=1; shift 2 ;;
	--pip-write) PIP_WRITE=1; shift ;;
	--no-verify) VERIFY=0; shift ;;
	--rss-files) RSS_FILES=$2; shift 2 ;;
	--clean) CLEAN=1; shift ;;
	--no-fresh-fs) FRESH_FS=0; shift ;;
	-h|--help) usage; exit 0 ;;
	-*) usage >&2; die "unknown option $1" ;;
	*) break ;;
	esac
done
[[ $# -eq 1 ]] || { usage >&2; exit 2; }
BUILD_DIR=$(realpath -m "$1")
PKG="$BUILD_DIR/pkgcachefs"
MEMFS="$BUILD_DIR/memfs"
BASE_PKG=""
[[ $BASE_OPTS_SET -eq 1 ]] || BASE_OPTS=$PKG_OPTS
[[ -n $BASE_DIR ]] && BASE_PKG="$(realpath -m "$BASE_DIR")/pkgcachefs"
for v in SIZE_MB SMALL_FILES REPS SEED RSS_FILES; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number"
done
[[ $REPS -ge 1 ]] || die "--reps must be >= 1"

[[ $EUID -eq 0 ]] || die "run as root (drop_caches and FUSE mounts need it)"
for t in python3 gcc pkg-config fusermount3 find xargs du df; do
	command -v "$t" >/dev/null || die "missing tool: $t"
done

WORK=$(realpath -m "$WORK")
[[ $WORK != / && $WORK != "$HOME" ]] || die "--work must be a directory of its own"
OUT=$(realpath -m "${OUT:-$WORK/out}")
TGT="$WORK/t"
TGT_IMG="$WORK/t.img"
mkdir -p "$WORK" "$OUT" "$TGT" || die "cannot create $WORK or $OUT"
if [[ $FRESH_FS -eq 1 ]]; then
	for t in mkfs.ext4 losetup; do
		command -v "$t" >/dev/null || die "missing tool: $t (or use --no-fresh-fs)"
	done
fi

# ---------------------------------------------------------------------------------------------
# Targets

if [[ -z $ONLY ]]; then
	ONLY=ext4,passthrough
	if command -v bindfs >/dev/null; then
		ONLY+=,bindfs
	else
		log "note: bindfs not installed (apt-get install bindfs); measuring without it"
	fi
	if [[ -x $MEMFS ]]; then
		ONLY+=,memfs
	else
		log "note: $MEMFS not built; measuring without the FUSE floor"
	fi
	if [[ -x $PKG ]]; then
		ONLY+=,pkgcachefs
	else
		log "note: $PKG not built; measuring the peers only"
	fi
	[[ -n $BASE_PKG ]] && ONLY+=,base
fi
TARGETS=()
IFS=, read -r -a _only <<<"$ONLY"
for t in "${_only[@]}"; do
	case "$t" in
	ext4|passthrough) TARGETS+=("$t") ;;
	bindfs) command -v bindfs >/dev/null || die "bindfs is not installed (apt-get install bindfs)"
		TARGETS+=("$t") ;;
	memfs) [[ -x $MEMFS ]] || die "$MEMFS does not exist (build it, or drop it from --only)"
		TARGETS+=("$t") ;;
	pkgcachefs) [[ -x $PKG ]] || die "$PKG does not exist (build it, or drop it from --only)"
		TARGETS+=("$t") ;;
	base) [[ -n $BASE_PKG ]] || die "target 'base' needs --base DIR"
		[[ -x $BASE_PKG ]] || die "$BASE_PKG does not exist (build it, or drop --base)"
		TARGETS+=("$t") ;;
	*) die "unknown target '$t' (ext4, passthrough, bindfs, memfs, pkgcachefs, base)" ;;
	esac
done
[[ ${#TARGETS[@]} -gt 0 ]] || die "no targets"

# ---------------------------------------------------------------------------------------------
# Mount bookkeeping: every mount we make is listed in MOUNTED (mountpoint -> kind), daemons we
# started ourselves in DAEMON_PID (mountpoint -> pid). cleanup() undoes them all.

# Reads the mount table, not the mountpoint: stat() of a FUSE mount whose daemon died fails
# with ENOTCONN, and mountpoint(1) would then call it unmounted.
is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }

declare -A MOUNTED=()
declare -A DAEMON_PID=()

# The pkgcachefs binary of a target (pkgcachefs or base) and its store.
pkg_of() { if [[ $1 == base ]]; then echo "$BASE_PKG"; else echo "$PKG"; fi; }
store_of() { if [[ $1 == base ]]; then echo "$TGT/base-store"; else echo "$TGT/pkg-store"; fi; }

fuse_unmount() {
	local mnt=$1 kind=${MOUNTED[$1]:-fuse} pid=${DAEMON_PID[$1]:-} i
	if is_mounted "$mnt"; then
		if [[ $kind == pkgcachefs || $kind == base ]] && [[ -x $(pkg_of "$kind") ]]; then
			timeout 120 "$(pkg_of "$kind")" umount "$mnt" >>"$OUT/daemon.log" 2>&1 ||
				log "warning: 'pkgcachefs umount $mnt' failed"
		fi
		is_mounted "$mnt" && fusermount3 -u "$mnt" 2>>"$OUT/daemon.log"
		if is_mounted "$mnt"; then
			log "warning: $mnt busy, lazy unmount"
			umount -l "$mnt"
		fi
	fi
	unset "MOUNTED[$mnt]"
	if [[ -n $pid ]]; then
		for ((i = 0; i < 600; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "warning: daemon $pid still running 60 s after unmount; sending SIGTERM"
			kill -TERM "$pid" 2>/dev/null
		fi
		unset "DAEMON_PID[$mnt]"
	fi
}

cleanup() {
	local rc=$? m
	trap - EXIT INT TERM
	for m in "${!MOUNTED[@]}"; do
		log "cleanup: unmounting $m"
		fuse_unmount "$m"
	done
	if is_mounted "$TGT"; then
		umount "$TGT" || umount -l "$TGT"
	fi
	rm -f "$TGT_IMG"
	if [[ $CLEAN -eq 1 ]]; then
		rm -rf "${WORK:?}/t" "${WORK:?}"/corpus-* "${WORK:?}/bin"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# A previous run that was killed with -9 may have left our own mountpoints mounted.
for m in "$TGT/pt-mnt" "$TGT/bf-mnt" "$TGT/mf-mnt" "$TGT/pkg-mnt" "$TGT/base-mnt" "$TGT"; do
	if is_mounted "$m"; then
		log "unmounting stale $m from an earlier run"
		fusermount3 -u "$m" 2>/dev/null || umount -l "$m"
	fi
done

# ---------------------------------------------------------------------------------------------
# Timing and records

RESULTS="$OUT/results.tsv"
EXTRAS="$OUT/extras.tsv"
: >"$RESULTS"
: >"$EXTRAS"
: >"$OUT/daemon.log"

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }
extra() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$EXTRAS"; }

# timed TARGET REP OP FUNCTION ARGS...: run, record wall seconds (or "fail"), log it.
timed() {
	local target=$1 rep=$2 op=$3 t0 t1 rc secs
	shift 3
	t0=$EPOCHREALTIME
	"$@" 2>>"$OUT/ops.log"
	rc=$?
	t1=$EPOCHREALTIME
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
	if [[ $rc -ne 0 ]]; then
		log "  $target rep $rep $op: FAILED (rc $rc after $secs s; see $OUT/ops.log)"
		record "$target" "$rep" "$op" fail
		return 1
	fi
	log "  $target rep $rep $op: $secs s"
	record "$target" "$rep" "$op" "$secs"
}

CAN_DROP=1
drop_caches() {
	sync
	[[ $CAN_DROP -eq 1 ]] && echo 3 >/proc/sys/vm/drop_caches
	return 0
}
if ! (echo 1 >/proc/sys/vm/drop_caches) 2>/dev/null; then
	CAN_DROP=0
	log "warning: cannot write /proc/sys/vm/drop_caches: 'cold' reads will not be cold"
fi

op_copy() { cp -a "$1" "$2"; }
op_readall() { find "$1" -type f -print0 | xargs -0 -r cat >/dev/null; }
op_walk() { find "$1" -printf '%s\n' >/dev/null; }
op_rm() { rm -rf "$1"; }
op_pipcopy() { python3 "$CORPUS_PY" pipcopy "$1" "$2"; }

# Daemon memory, in KiB: VmHWM (peak) or VmRSS of a pid; empty when unknown.
vm_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# Corpus: generated once per parameter set and kept in WORK/corpus-*.

gen_hash=$(sha256sum <"$CORPUS_PY" | cut -c1-8)
ensure_corpus() {
	local dir=$1 kind=$2 arg=$3
	if [[ -f $dir/.done ]]; then
		log "corpus: reusing $dir"
		return 0
	fi
	rm -rf "$dir"
	mkdir -p "$dir"
	log "corpus: generating $kind in $dir"
	if [[ $kind == wheels ]]; then
		python3 "$CORPUS_PY" wheels "$dir/data" --size-mb "$arg" --seed "$SEED" >"$dir/gen.json" &&
			python3 "$CORPUS_PY" analyze "$dir/data" --out "$dir/manifest.json" >"$dir/summary.json"
	else
		python3 "$CORPUS_PY" tree "$dir/data" --files "$arg" --seed "$SEED" >"$dir/gen.json" &&
			python3 "$CORPUS_PY" analyze "$dir/data" --no-zips --out "$dir/manifest.json" >"$dir/summary.json"
	fi || die "corpus generation failed"
	touch "$dir/.done"
	log "corpus: $(cat "$dir/summary.json")"
}

# Disk: the corpus (if not yet there) plus one target copy of it plus a store, with 1 GiB spare.
check_disk() {
	local need_mb=$1 avail_mb
	avail_mb=$(df --output=avail -BM "$WORK" | tail -1 | tr -dc 0-9)
	log "disk: $avail_mb MiB free under $WORK, need about $need_mb MiB"
	[[ $avail_mb -ge $need_mb ]] || die "not enough free space under $WORK ($avail_mb MiB < $need_mb MiB)"
}

# ---------------------------------------------------------------------------------------------
# passthrough_ll, built from the libfuse3-dev example with its default options.

PT_BIN="$WORK/bin/passthrough_ll"
build_passthrough() {
	local ex=/usr/share/doc/libfuse3-dev/examples src="$WORK/bin/src" f
	mkdir -p "$src"
	for f in passthrough_ll.c passthrough_helpers.h; do
		if [[ -f $ex/$f ]]; then
			cp "$ex/$f" "$src/$f"
		elif [[ -f $ex/$f.gz ]]; then
			gzip -dc "$ex/$f.gz" >"$src/$f"
		else
			die "$ex/$f not found (apt-get install libfuse3-dev)"
		fi
	done
	# shellcheck disable=SC2046
	gcc -O2 -Wall -o "$PT_BIN" "$src/passthrough_ll.c" $(pkg-config --cflags --libs fuse3) \
		2>"$WORK/bin/build.log" || die "building passthrough_ll failed: $(cat "$WORK/bin/build.log")"
	log "passthrough_ll: built $PT_BIN (gcc -O2, default options: cache=auto, timeout=1, no writeback)"
}

wait_mounted() {
	local mnt=$1 pid=${2:-} i
	for ((i = 0; i < 200; i++)); do
		is_mounted "$mnt" && return 0
		[[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null && return 1
		sleep 0.05
	done
	return 1
}

# FUSE targets are unmounted after the write and mounted again before the reads: drop_caches
# empties the kernel's caches but not a daemon's own, and the umount after the write is where
# pkgcachefs makes everything durable (timed, as information) and where its stats are taken.

mnt_of() {
	case "$1" in
	passthrough) echo "$TGT/pt-mnt" ;;
	bindfs) echo "$TGT/bf-mnt" ;;
	memfs) echo "$TGT/mf-mnt" ;;
	pkgcachefs) echo "$TGT/pkg-mnt" ;;
	base) echo "$TGT/base-mnt" ;;
	esac
}

# target_mount TARGET: mount the existing backing directory or store; sets DATA and DPID.
target_mount() {
	local target=$1
	DPID=""
	case "$target" in
	ext4)
		DATA="$TGT/ext4"
		;;
	passthrough)
		"$PT_BIN" -f -o source="$TGT/pt-src" "$TGT/pt-mnt" >>"$OUT/daemon.log" 2>&1 &
		DPID=$!
		DAEMON_PID[$TGT/pt-mnt]=$DPID
		MOUNTED[$TGT/pt-mnt]=passthrough
		wait_mounted "$TGT/pt-mnt" "$DPID" || die "passthrough_ll did not mount (see $OUT/daemon.log)"
		DATA="$TGT/pt-mnt"
		;;
	bindfs)
		# Its defaults: high-level libfuse, single-threaded, no writeback, 1 s timeouts.
		bindfs -f "$TGT/bf-src" "$TGT/bf-mnt" >>"$OUT/daemon.log" 2>&1 &
		DPID=$!
		DAEMON_PID[$TGT/bf-mnt]=$DPID
		MOUNTED[$TGT/bf-mnt]=bindfs
		wait_mounted "$TGT/bf-mnt" "$DPID" || die "bindfs did not mount (see $OUT/daemon.log)"
		DATA="$TGT/bf-mnt"
		;;
	memfs)
		# Its data lives in the daemon: it is mounted once per rep, never remounted.
		"$MEMFS" -f -o "$MEMFS_OPTS" "$TGT/mf-mnt" >>"$OUT/daemon.log" 2>&1 &
		DPID=$!
		DAEMON_PID[$TGT/mf-mnt]=$DPID
		MOUNTED[$TGT/mf-mnt]=memfs
		wait_mounted "$TGT/mf-mnt" "$DPID" || die "memfs did not mount (see $OUT/daemon.log)"
		DATA="$TGT/mf-mnt"
		;;
	pkgcachefs|base)
		local mnt store bin
		mnt=$(mnt_of "$target")
		store=$(store_of "$target")
		bin=$(pkg_of "$target")
		MOUNTED[$mnt]=$target
		local -a o=()
		local opts=$PKG_OPTS
		[[ $target == base ]] && opts=$BASE_OPTS
		[[ -n $opts ]] && o=(-o "$opts")
		timeout 120 "$bin" mount --store "$store" "${o[@]}" "$mnt" >>"$OUT/daemon.log" 2>&1 ||
			die "$target: pkgcachefs mount failed (see $OUT/daemon.log)"
		wait_mounted "$mnt" || die "$target: pkgcachefs mount returned but $mnt is not mounted"
		DPID=$(cat "$store/daemon.pid" 2>/dev/null)
		[[ $DPID =~ ^[0-9]+$ ]] || { log "warning: no pid in $store/daemon.pid"; DPID=""; }
		[[ -n $DPID ]] && DAEMON_PID[$mnt]=$DPID
		DATA=$mnt
		;;
	esac
}

# fresh_fs: a new ext4 on TGT (see --no-fresh-fs), sized for the largest corpus written to it
# twice (the target's data and a store) plus a GiB; the image is sparse.
fresh_fs() {
	local mib=$((SIZE_MB * 3 + (SMALL_FILES + RSS_FILES) * 32 / 1024 + 1024))
	[[ $FRESH_FS -eq 1 ]] || return 0
	if is_mounted "$TGT"; then
		umount "$TGT" || die "cannot unmount the previous target's ext4 on $TGT"
	fi
	rm -f "$TGT_IMG"
	truncate -s "${mib}M" "$TGT_IMG" || die "cannot create $TGT_IMG"
	mkfs.ext4 -q -F "$TGT_IMG" >>"$OUT/daemon.log" 2>&1 || die "mkfs.ext4 $TGT_IMG failed"
	mount -o loop "$TGT_IMG" "$TGT" || die "cannot loop-mount $TGT_IMG on $TGT (or use --no-fresh-fs)"
}

# target_fresh TARGET: a new filesystem, then an empty backing directory or store, mounted.
target_fresh() {
	fresh_fs
	case "$1" in
	ext4) rm -rf "$TGT/ext4"; mkdir -p "$TGT/ext4" ;;
	passthrough) rm -rf "$TGT/pt-src"; mkdir -p "$TGT/pt-src" "$TGT/pt-mnt" ;;
	bindfs) rm -rf "$TGT/bf-src"; mkdir -p "$TGT/bf-src" "$TGT/bf-mnt" ;;
	memfs) mkdir -p "$TGT/mf-mnt" ;;
	pkgcachefs|base) rm -rf "$(store_of "$1")"; mkdir -p "$(store_of "$1")" "$(mnt_of "$1")" ;;
	esac
	target_mount "$1"
}

# target_unmount TARGET REP PHASE [OP]: record the daemon's memory as PHASE, unmount (timed as
# OP when given; the time includes the daemon's exit).
target_unmount() {
	local target=$1 rep=$2 phase=$3 op=${4:-}
	if [[ -n $DPID ]]; then
		extra "$target" "$rep" "${phase}_vmhwm_kib" "$(vm_kib "$DPID" VmHWM)"
		extra "$target" "$rep" "${phase}_vmrss_kib" "$(vm_kib "$DPID" VmRSS)"
		extra "$target" "$rep" "${phase}_rssanon_kib" "$(vm_kib "$DPID" RssAnon)"
		extra "$target" "$rep" "${phase}_rssfile_kib" "$(vm_kib "$DPID" RssFile)"
	fi
	[[ $target == ext4 ]] && return 0
	if [[ -n $op ]]; then
		timed "$target" "$rep" "$op" fuse_unmount "$(mnt_of "$target")"
	else
		fuse_unmount "$(mnt_of "$target")"
	fi
	DPID=""
}

# target_down TARGET REP: unmount and delete the backing files.
target_down() {
	local target=$1 rep=$2
	target_unmount "$target" "$rep" reads
	case "$target" in
	ext4) rm -rf "$TGT/ext4" ;;
	passthrough) rm -rf "$TGT/pt-src" ;;
	bindfs) rm -rf "$TGT/bf-src" ;;
	pkgcachefs|base)
		if [[ $rep == 1 ]]; then
			"$(pkg_of "$target")" stats --store "$(store_of "$target")" --json \
				>"$OUT/$target-stats-final.json" 2>>"$OUT/daemon.log" ||
				log "warning: $target: pkgcachefs stats (after umount) failed"
			extra "$target" "$rep" store_du_final_bytes "$(du -sB1 "$(store_of "$target")" | cut -f1)"
		fi
		rm -rf "$(store_of "$target")"
		;;
	esac
}

store_figures() {
	local target=$1 tag=$2 store
	store=$(store_of "$target")
	"$(pkg_of "$target")" stats --store "$store" --json >"$OUT/$target-stats-$tag.json" \
		2>>"$OUT/daemon.log" || log "warning: $target: pkgcachefs stats --json ($tag) failed"
	extra "$target" 1 "store_du_${tag}_bytes" "$(du -sB1 "$store" | cut -f1)"
	extra "$target" 1 "store_apparent_${tag}_bytes" "$(du -sb "$store" | cut -f1)"
}

# ---------------------------------------------------------------------------------------------
# Main run

# passthrough_ll keeps one O_PATH fd open for every inode the kernel knows, so it fails with
# EMFILE once a tree has more inodes than the hard limit allows (20000 here, without
# CAP_SYS_RESOURCE). Raise what we may and say so when a tree will not fit.
ulimit -Hn 1048576 2>/dev/null
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
check_pt_fds() {
	local files=$1
	if [[ " ${TARGETS[*]} " == *" passthrough "* && $NOFILE != unlimited ]] &&
		((files * 14 / 10 + 2000 > NOFILE)); then
		log "warning: passthrough_ll needs an fd per inode; $files files (+ dirs) may exceed the" \
			"open-file limit $NOFILE and fail with EMFILE"
	fi
}
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

T_START=$EPOCHREALTIME
for t in "${TARGETS[@]}"; do [[ $t == passthrough ]] && build_passthrough; done

if [[ $RSS_FILES -gt 0 ]]; then
	MODE=rss
	# ext4 is timed too, as the reference for the walks; only the FUSE daemons have an RSS.
	FUSE_TARGETS=()
	# memfs keeps nothing across the remount before the cold walk.
	for t in "${TARGETS[@]}"; do [[ $t != ext4 && $t != memfs ]] && FUSE_TARGETS+=("$t"); done
	[[ ${#FUSE_TARGETS[@]} -gt 0 ]] || die "--rss-files needs a FUSE target"
	check_pt_fds "$RSS_FILES"
	TREE_DIR="$WORK/corpus-tree-n$RSS_FILES-s$SEED-$gen_hash"
	[[ -f $TREE_DIR/.done ]] || check_disk $((RSS_FILES * 48 / 1024 + 1024))
	ensure_corpus "$TREE_DIR" tree "$RSS_FILES"
	check_disk $((RSS_FILES * 16 / 1024 + 1024))
	for t in "${TARGETS[@]}"; do
		[[ $t == memfs ]] && { log "rss: memfs skipped (it keeps nothing across a remount)"; continue; }
		log "rss: $t, $RSS_FILES files"
		target_fresh "$t"
		timed "$t" 1 rss_tree_copy op_copy "$TREE_DIR/data" "$DATA/tree"
		sync
		extra "$t" 1 rss_after_write_vmhwm_kib "$(vm_kib "$DPID" VmHWM)"
		extra "$t" 1 rss_after_write_vmrss_kib "$(vm_kib "$DPID" VmRSS)"
		timed "$t" 1 rss_tree_walk op_walk "$DATA/tree"
		extra "$t" 1 rss_after_walk_vmhwm_kib "$(vm_kib "$DPID" VmHWM)"
		extra "$t" 1 rss_after_walk_vmrss_kib "$(vm_kib "$DPID" VmRSS)"
		extra "$t" 1 rss_after_walk_rssanon_kib "$(vm_kib "$DPID" RssAnon)"
		extra "$t" 1 rss_after_walk_rssfile_kib "$(vm_kib "$DPID" RssFile)"
		target_unmount "$t" 1 rss_write rss_umount
		if [[ $t == pkgcachefs || $t == base ]]; then
			"$(pkg_of "$t")" stats --store "$(store_of "$t")" --json >"$OUT/$t-stats-rss.json" \
				2>>"$OUT/daemon.log" || log "warning: $t: pkgcachefs stats failed"
		fi
		target_mount "$t"
		drop_caches
		timed "$t" 1 rss_tree_walk_cold op_walk "$DATA/tree"
		extra "$t" 1 rss_cold_walk_vmhwm_kib "$(vm_kib "$DPID" VmHWM)"
		target_down "$t" rss
	done
else
	MODE=main
	WHEEL_DIR="$WORK/corpus-wheels-${SIZE_MB}m-s$SEED-$gen_hash"
	TREE_DIR="$WORK/corpus-tree-n$SMALL_FILES-s$SEED-$gen_hash"
	need=$((SIZE_MB * 12 / 10 + SMALL_FILES * 32 / 1024 + 1024))
	[[ -f $WHEEL_DIR/.done ]] || need=$((need + SIZE_MB))
	[[ $PIP_WRITE -eq 1 ]] && need=$((need + SIZE_MB))
	check_disk "$need"
	check_pt_fds "$SMALL_FILES"
	# Corpora from other parameter sets are ours and stale: drop them before making new ones.
	for d in "$WORK"/corpus-*; do
		[[ -d $d && $d != "$WHEEL_DIR" && $d != "$TREE_DIR" ]] && { log "corpus: removing stale $d"; rm -rf "$d"; }
	done
	ensure_corpus "$WHEEL_DIR" wheels "$SIZE_MB"
	ensure_corpus "$TREE_DIR" tree "$SMALL_FILES"
	# The store's own chunker, when built, gives the chunk-level ideal for the wheel corpus.
	rm -f "$OUT/cdc-measure.txt"
	for c in "$BUILD_DIR/cdc-measure" "$BUILD_DIR/tools/cdc-measure"; do
		if [[ -x $c ]]; then
			log "cdc-measure: chunking the wheel corpus with $c"
			"$c" "$WHEEL_DIR/data" >"$OUT/cdc-measure.txt" 2>>"$OUT/ops.log" ||
				{ log "warning: cdc-measure failed"; rm -f "$OUT/cdc-measure.txt"; }
			break
		fi
	done

	for ((rep = 1; rep <= REPS; rep++)); do
		# Each rep starts one target further on, and even reps go backwards: whatever a
		# target leaves behind (the backing fs's delayed work after a big rm, a warmer page
		# cache) falls on a different neighbour each time. In an A/A run with a fixed order
		# (one build as both pkgcachefs and base), base, second, took 1.04-1.6x as long on
		# every op.
		order=()
		for ((i = 0; i < ${#TARGETS[@]}; i++)); do
			j=$(((i + rep - 1) % ${#TARGETS[@]}))
			((rep % 2 == 0)) && j=$((${#TARGETS[@]} - 1 - j))
			order+=("${TARGETS[j]}")
		done
		for t in "${order[@]}"; do
			log "rep $rep/$REPS: $t"
			target_fresh "$t"
			drop_caches
			timed "$t" "$rep" write op_copy "$WHEEL_DIR/data" "$DATA/cache"
			timed "$t" "$rep" write_sync sync
			# memfs keeps its data in the daemon, so its cold read finds only the kernel's
			# caches dropped: the floor of a cold read through FUSE.
			if [[ $t != ext4 && $t != memfs ]]; then
				target_unmount "$t" "$rep" write umount_after_write
				[[ ($t == pkgcachefs || $t == base) && $rep == 1 ]] && store_figures "$t" after_write
				target_mount "$t"
			fi
			drop_caches
			timed "$t" "$rep" cold_read op_readall "$DATA/cache"
			timed "$t" "$rep" warm_read op_readall "$DATA/cache"
			if [[ $VERIFY -eq 1 && $rep == 1 ]]; then
				if python3 "$CORPUS_PY" verify "$WHEEL_DIR/manifest.json" "$DATA/cache" >>"$OUT/verify.log" 2>&1; then
					extra "$t" "$rep" verify_wheels ok
				else
					extra "$t" "$rep" verify_wheels FAIL
					log "  $t: WHEEL CONTENT MISMATCH (see $OUT/verify.log)"
				fi
			fi
			if [[ $PIP_WRITE -eq 1 ]]; then
				timed "$t" "$rep" pip_write op_pipcopy "$WHEEL_DIR/data" "$DATA/pipcopy"
				op_rm "$DATA/pipcopy"
			fi
			drop_caches
			timed "$t" "$rep" tree_copy op_copy "$TREE_DIR/data" "$DATA/tree"
			sync
			timed "$t" "$rep" tree_walk op_walk "$DATA/tree"
			if [[ $VERIFY -eq 1 && $rep == 1 ]]; then
				if python3 "$CORPUS_PY" verify "$TREE_DIR/manifest.json" "$DATA/tree" >>"$OUT/verify.log" 2>&1; then
					extra "$t" "$rep" verify_tree ok
				else
					extra "$t" "$rep" verify_tree FAIL
					log "  $t: TREE CONTENT MISMATCH (see $OUT/verify.log)"
				fi
			fi
			drop_caches
			timed "$t" "$rep" tree_walk_cold op_walk "$DATA/tree"
			timed "$t" "$rep" tree_delete op_rm "$DATA/tree"
			target_down "$t" "$rep"
		done
	done
fi

T_END=$EPOCHREALTIME
cat >"$OUT/config.json" <<EOF
{"mode": "$MODE", "size_mb": $SIZE_MB, "small_files": $SMALL_FILES, "rss_files": $RSS_FILES,
 "reps": $REPS, "seed": $SEED, "targets": "$(IFS=,; echo "${TARGETS[*]}")",
 "pkgcachefs_opts": "$PKG_OPTS", "memfs_opts": "$MEMFS_OPTS", "base_opts": "$BASE_OPTS", "build_dir": "$BUILD_DIR", "base_dir": "${BASE_DIR:+$(realpath -m "$BASE_DIR")}", "work": "$WORK",
 "bindfs": "$(command -v bindfs >/dev/null && bindfs --version 2>/dev/null | head -1)",
 "wheel_corpus": "${WHEEL_DIR:-}", "tree_corpus": "${TREE_DIR:-}",
 "drop_caches": $CAN_DROP, "fresh_fs": $FRESH_FS, "loadavg_start": "$LOAD_START", "loadavg_end": "$(cut -d' ' -f1-3 /proc/loadavg)", "wall_seconds": $(awk -v a="$T_START" -v b="$T_END" 'BEGIN { printf "%.1f", b - a }'),
 "kernel": "$(uname -r)", "fuse": "$(pkg-config --modversion fuse3)", "nproc": $(nproc),
 "date": "$(date -u +%FT%TZ)"}
EOF
python3 "$REPORT_PY" "$OUT" | tee "$OUT/report.txt"
report_rc=${PIPESTATUS[0]}
log "wrote $OUT/report.txt and $OUT/results.json"
# Figures, not a verdict: exit 1 only when something could not be measured or read back wrong.
exit "$report_rc"
