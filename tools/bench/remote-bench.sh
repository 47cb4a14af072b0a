#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# shellcheck disable=SC2317  # functions are called through timed() and trap
#
# remote-bench.sh: a cold CI runner's `pip install` with pkgcachefs backed by a remote, against
# the alternatives, on loopback servers; plus the bytes a push uploads after one new package and
# the time a cold host takes to mount a large remote namespace. It prints figures; it does not
# assert (exit 0 unless it could not measure). docs/benchmarks.md ("Remote: cold runners") has
# the figures and what each column means.
#
# Scenarios, each a fresh venv installing the same requirement set from a local PEP 503 index
# served by nginx (remote-corpus.py builds the wheels):
#   nocache   pip with an empty cache directory on ext4: everything from the index
#   archive   actions/cache style: download a tar+zstd of the whole pip cache from nginx,
#             extract it, then pip install (time of all three)
#   cold-X    a fresh store (deleted before every run) mounted with --remote X (file, webdav,
#             s3), then pip install: the mount merges the namespace and fetches what pip reads
#   warm      the store cold-file left, mounted again (same remote): everything is local
#   ext4warm  pip with its seeded cache on plain ext4 (reference: no FUSE, nothing to fetch)
# With --link MS:MBIT every server (the package index, the archive, WebDAV, S3) is reached through
# tools/bench/linkproxy.py: MS one-way delay and MBIT per connection and direction, as on a
# data-centre or cross-region link (there is no netem here). file:// has no link to model: its
# rows stay loopback figures.
# Bytes are counted at the servers (nginx access logs "$request_method $uri $status $bytes_sent
# $request_length") and, for every mount, in STORE/remote-stats.
#
# Run as root (FUSE mounts). Everything it starts (servers, mounts) is stopped on exit.

set -u -o pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
GEN="$HERE/remote-corpus.py"
REPORT="$HERE/remote-report.py"
SERVERS="$REPO/tests/remote/servers.sh"

REPS=3
SEED=1
WORK=/var/tmp/pkgcachefs-bench
OUT=""
NS_FILES=100000
NS_LARGE=100
NS_LARGE_BYTES=95000000
NS_REPS=3
SKIP_NS=0
SKIP_PIP=0
REMOTES="file,webdav,s3"
LINK=""
VARIANTS=""
SKIP_ALT=0
SKIP_PUSH=0

usage() {
	cat <<EOF
usage: $0 [options] BUILD_DIR

  --reps N            repetitions of each pip scenario (median reported) [$REPS]
  --remotes LIST      comma list of file,webdav,s3 [$REMOTES]
  --ns-files N        files in the large namespace for the cold-mount test [$NS_FILES]
  --ns-large N        how many of them are large [$NS_LARGE]
  --ns-large-bytes B  size of each large file [$NS_LARGE_BYTES]
  --ns-reps N         cold mounts per remote [$NS_REPS]
  --skip-ns | --skip-pip   leave out the namespace test or the pip scenarios
  --skip-alt | --skip-push leave out the no-cache and archive scenarios, or the push steps
  --variants 'NAME=OPTS;...'  run each cold job once per variant, interleaved, as scenario
                      cold-KIND@NAME, mounted with -o OPTS; the token open_last in OPTS sets
                      PKGCACHEFS_BENCH_OPEN_PREFETCH_LAST (an opened file's prefetch queued
                      last, the old order) instead
  --link MS:MBIT      reach every server through a link of MS ms one way, MBIT Mbit/s per
                      connection (tools/bench/linkproxy.py); default: loopback
  --work DIR          corpus, namespace remote (both kept between runs) and scratch [$WORK]
  --out DIR           report.txt, results.tsv, logs [WORK/remote-out]
EOF
}
die() {
	echo "remote-bench: error: $*" >&2
	exit 2
}
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

while [[ $# -gt 0 ]]; do
	case "$1" in
	--reps) REPS=$2; shift 2 ;;
	--remotes) REMOTES=$2; shift 2 ;;
	--ns-files) NS_FILES=$2; shift 2 ;;
	--ns-large) NS_LARGE=$2; shift 2 ;;
	--ns-large-bytes) NS_LARGE_BYTES=$2; shift 2 ;;
	--ns-reps) NS_REPS=$2; shift 2 ;;
	--skip-ns) SKIP_NS=1; shift ;;
	--skip-pip) SKIP_PIP=1; shift ;;
	--link) LINK=$2; shift 2 ;;
	--variants) VARIANTS=$2; shift 2 ;;
	--skip-alt) SKIP_ALT=1; shift ;;
	--skip-push) SKIP_PUSH=1; shift ;;
	--work) WORK=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	-*) usage >&2; die "unknown option $1" ;;
	*) break ;;
	esac
done
[[ $# -eq 1 ]] || { usage >&2; exit 2; }
BUILD_DIR=$(realpath -m "$1")
[[ -x $BUILD_DIR/pkgcachefs ]] || die "$BUILD_DIR/pkgcachefs is not built"
[[ $EUID -eq 0 ]] || die "run as root (FUSE mounts)"
for t in python3 nginx zstd tar curl strace fusermount3; do
	command -v "$t" >/dev/null || [[ $t == nginx && -x /usr/sbin/nginx ]] || die "missing tool: $t"
done
if [[ -n $LINK ]]; then
	[[ $LINK =~ ^[0-9]+(\.[0-9]+)?:[0-9]+(\.[0-9]+)?$ ]] || die "--link takes MS:MBIT (e.g. 15:200), not '$LINK'"
fi
IFS=, read -r -a REMOTE_LIST <<<"$REMOTES"
for r in "${REMOTE_LIST[@]}"; do
	case $r in file | webdav | s3) ;; *) die "unknown remote '$r'" ;; esac
done

WORK=$(realpath -m "$WORK")
OUT=$(realpath -m "${OUT:-$WORK/remote-out}")
RUN="$WORK/remote-run"
mkdir -p "$WORK" "$OUT" || die "cannot create $WORK"
# Scratch of an earlier run (stores, venvs, remotes) goes; the corpus and namespace stay.
# shellcheck disable=SC2013  # mountpoints under RUN have no spaces
for m in $(awk -v p="$RUN/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo); do
	log "unmounting stale $m"
	fusermount3 -u "$m" 2>/dev/null || umount -l "$m"
done
if [[ -d $RUN/srv ]]; then "$SERVERS" stop "$RUN/srv" >/dev/null 2>&1; fi
[[ -f $RUN/idx-nginx.pid ]] && kill -QUIT "$(cat "$RUN/idx-nginx.pid")" 2>/dev/null
rm -rf "$RUN"
mkdir -p "$RUN/t" "$RUN/bin"

# The binary is copied: others may rebuild BUILD_DIR while this runs.
PKG="$RUN/bin/pkgcachefs"
cp "$BUILD_DIR/pkgcachefs" "$PKG"
BIN_ID="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet HEAD -- index fs 2>/dev/null || echo +dirty) sha256:$(sha256sum "$PKG" | cut -c1-12)"

RESULTS="$OUT/results.tsv"
: >"$RESULTS"
: >"$OUT/ops.log"
: >"$OUT/daemon.log"
# record SCENARIO REP KEY VALUE
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

# timed SCENARIO REP KEY CMD...: wall seconds of CMD (stderr to ops.log), recorded.
timed() {
	local s=$1 rep=$2 key=$3 t0 t1 rc secs
	shift 3
	t0=$EPOCHREALTIME
	"$@" 2>>"$OUT/ops.log"
	rc=$?
	t1=$EPOCHREALTIME
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	if [[ $rc -ne 0 ]]; then
		log "  $s rep $rep $key: FAILED (rc $rc after $secs s; see $OUT/ops.log)"
		record "$s" "$rep" "$key" fail
		return 1
	fi
	log "  $s rep $rep $key: $secs s"
	record "$s" "$rep" "$key" "$secs"
}

is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }

declare -A MOUNTED=() # mountpoint -> store
IDX_PID=""
LINK_PIDS=()
cleanup() {
	local rc=$? m
	trap - EXIT INT TERM
	for m in "${!MOUNTED[@]}"; do
		log "cleanup: unmounting $m"
		timeout 120 "$PKG" umount "$m" >>"$OUT/daemon.log" 2>&1
		is_mounted "$m" && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m"; }
	done
	[[ -d $RUN/srv ]] && "$SERVERS" stop "$RUN/srv" >/dev/null 2>&1
	[[ -n $IDX_PID ]] && kill -QUIT "$IDX_PID" 2>/dev/null
	for m in "${LINK_PIDS[@]}"; do kill "$m" 2>/dev/null; done
	exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Mounts

# pcf_mount STORE MNT URL [OPTS]: mount (the CLI returns once the mount is ready).
pcf_mount() {
	local store=$1 mnt=$2 url=$3 opts=${4:-}
	local -a o=()
	[[ -n $opts ]] && o=(-o "$opts")
	mkdir -p "$mnt" "$store"
	MOUNTED[$mnt]=$store
	timeout 300 "$PKG" mount --store "$store" --remote "$url" "${o[@]}" "$mnt" >>"$OUT/daemon.log" 2>&1
}

# pcf_umount MNT: commit, push (unless no_push), unmount, and wait for the daemon to exit so
# that STORE/remote-stats is written.
pcf_umount() {
	local mnt=$1 store=${MOUNTED[$1]} pid="" i
	pid=$(tr -dc 0-9 <"$store/daemon.pid" 2>/dev/null)
	timeout 600 "$PKG" umount "$mnt" >>"$OUT/daemon.log" 2>&1 || return 1
	unset "MOUNTED[$mnt]"
	if [[ -n $pid ]]; then
		for ((i = 0; i < 600; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.05
		done
	fi
	return 0
}

# stats_of STORE SCENARIO REP PREFIX: remote-stats of the last session, recorded.
stats_of() {
	local f=$1/remote-stats k v
	[[ -f $f ]] || { log "  warning: no $f"; return 0; }
	while IFS='=' read -r k v; do
		[[ $k == remote ]] && continue
		record "$2" "$3" "$4$k" "$v"
	done <"$f"
	rm -f "$f"
}

# ---------------------------------------------------------------------------------------------
# Servers: tests/remote/servers.sh (WebDAV nginx, s3rver behind an nginx proxy) and an nginx of
# our own for the package index and the cache archive, with PyPI's cache headers.

loglines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }
# srv_bytes LOG FROM METHOD: JSON sums of the log lines after line FROM.
srv_bytes() { python3 "$GEN" sumlog "$1" "$3" "$2"; }
jget() { python3 -c 'import json,sys; d=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): d = d.get(k, 0) if isinstance(d, dict) else 0
print(d[1] if isinstance(d, list) else d)' "$1" "$2"; }

start_index() {
	local port conf=$RUN/idx-nginx.conf user_line=""
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	[[ $(id -u) -eq 0 ]] && user_line="user root;"
	mkdir -p "$RUN/idx-tmp" "$RUN/archive"
	cat >"$conf" <<EOF
$user_line
worker_processes 2;
daemon on;
pid $RUN/idx-nginx.pid;
error_log $RUN/idx-nginx.error.log warn;
events { worker_connections 256; }
http {
	default_type application/octet-stream;
	log_format bytes '\$request_method \$uri \$status \$bytes_sent \$request_length';
	access_log $RUN/index.access.log bytes;
	client_body_temp_path $RUN/idx-tmp/body;
	proxy_temp_path $RUN/idx-tmp/proxy;
	fastcgi_temp_path $RUN/idx-tmp/fastcgi;
	uwsgi_temp_path $RUN/idx-tmp/uwsgi;
	scgi_temp_path $RUN/idx-tmp/scgi;
	sendfile on;
	keepalive_requests 10000;
	server {
		listen 127.0.0.1:$port;
		location /simple/ {
			root $CORPUS;
			index index.html;
			default_type text/html;
			add_header Cache-Control "max-age=600, public";
		}
		location /packages/ {
			root $CORPUS;
			add_header Cache-Control "max-age=365000000, immutable, public";
		}
		location /archive/ {
			alias $RUN/archive/;
		}
	}
}
EOF
	nginx -p "$RUN" -e "$RUN/idx-nginx.error.log" -c "$conf" || die "index nginx did not start"
	IDX_PID=$(cat "$RUN/idx-nginx.pid")
	INDEX_URL="http://127.0.0.1:$port/simple/"
	ARCHIVE_URL="http://127.0.0.1:$port/archive/pip-cache.tar.zst"
	IDX_LOG=$RUN/index.access.log
	for ((i = 0; i < 50; i++)); do
		curl -sf -o /dev/null "$INDEX_URL" && return 0
		sleep 0.1
	done
	die "index nginx does not answer at $INDEX_URL"
}

# ---------------------------------------------------------------------------------------------
# pip

for v in $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_DEFAULT_TIMEOUT=60
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY

# A copy of one venv (its scripts' #! lines name the template, so pip runs as `python -m pip`).
fresh_venv() { rm -rf "$1" && cp -a "$RUN/venv-template" "$1"; }

# pip_install VENV CACHE REQFILE LOG: the job itself.
pip_install() {
	"$1/bin/python" -m pip install --cache-dir "$2" --index-url "$INDEX_URL" --trusted-host 127.0.0.1 \
		--progress-bar off -r "$3" >"$4" 2>&1 || { tail -n 20 "$4" >&2; return 1; }
	if grep -qi 'cache has been disabled\|is not owned\|not writable' "$4"; then
		grep -i cache "$4" >&2
		return 1
	fi
}

# job SCENARIO REP CACHE REQ: one timed pip install in a fresh venv, with the bytes the index
# served; the count of wheels pip took from its cache.
job() {
	local s=$1 rep=$2 cache=$3 req=$4 l0 venv=$RUN/t/venv pl=$OUT/pip-$1-$2.log
	fresh_venv "$venv"
	l0=$(loglines "$IDX_LOG")
	timed "$s" "$rep" install pip_install "$venv" "$cache" "$req" "$pl" || return 1
	record "$s" "$rep" index_get_bytes "$(jget "$(srv_bytes "$IDX_LOG" "$l0" GET)" bytes)"
	record "$s" "$rep" wheels_from_cache "$(grep -c 'Using cached' "$pl")"
	record "$s" "$rep" wheels_downloaded "$(grep -c '^  Downloading' "$pl")"
	rm -rf "$venv"
}

# ---------------------------------------------------------------------------------------------
# Remotes: one namespace per remote for the pip runs ("pip"), another for the large one ("ns").

remote_url() { # KIND NAMESPACE
	case $1 in
	file) mkdir -p "$RUN/remote-file-$2" && echo "file://$RUN/remote-file-$2" ;;
	webdav) echo "${WEBDAV_URL}$2/" ;;
	s3) echo "s3://pkgcache/$2?endpoint=${S3_URL#*endpoint=}" ;;
	esac
}
server_log() { # KIND -> access log ("" for file)
	case $1 in file) echo "" ;; webdav) echo "$WEBDAV_ACCESS_LOG" ;; s3) echo "$S3_ACCESS_LOG" ;; esac
}

# cold_job KIND SCENARIO REP [OPTS]: fresh store, mount (with -o OPTS; see --variants), pip
# install, umount (pushes the trace). Leaves the store in $RUN/t/store-KIND.
cold_job() {
	local kind=$1 s=$2 rep=$3 store=$RUN/t/store-$1 mnt=$RUN/t/mnt-$1 url slog l0
	local opts=${4:-} last=""
	if [[ ,$opts, == *,open_last,* ]]; then
		last=1
		opts=$(tr ',' '\n' <<<"$opts" | grep -vx open_last | paste -sd, -)
	fi
	url=$(remote_url "$kind" pip)
	slog=$(server_log "$kind")
	rm -rf "$store"
	sync
	l0=$(loglines "$slog")
	if [[ -n $last ]]; then
		PKGCACHEFS_BENCH_OPEN_PREFETCH_LAST=1 timed "$s" "$rep" mount pcf_mount "$store" "$mnt" "$url" "$opts" || return 1
	else
		timed "$s" "$rep" mount pcf_mount "$store" "$mnt" "$url" "$opts" || return 1
	fi
	job "$s" "$rep" "$mnt" "$CORPUS/req-current.txt"
	if [[ -n $slog ]]; then
		local g
		g=$(srv_bytes "$slog" "$l0" GET)
		record "$s" "$rep" server_get_bytes "$(jget "$g" bytes)"
		record "$s" "$rep" server_get_requests "$(jget "$g" requests)"
		record "$s" "$rep" server_get_packs_bytes "$(jget "$g" by_dir.packs)"
		record "$s" "$rep" server_get_ns_bytes "$(jget "$g" by_dir.ns)"
		record "$s" "$rep" server_get_trace_bytes "$(jget "$g" by_dir.trace)"
	fi
	timed "$s" "$rep" umount pcf_umount "$mnt"
	stats_of "$store" "$s" "$rep" ""
}

# push_step KIND STEP REQ: on the store KIND's cold runs left, a job adds one package; the
# unmount pushes. Records uploaded bytes and the cache's new or changed bytes.
push_step() {
	local kind=$1 s=push-$1 step=$2 req=$3 store=$RUN/t/store-$1 mnt=$RUN/t/mnt-$1 url slog l0
	url=$(remote_url "$kind" pip)
	slog=$(server_log "$kind")
	pcf_mount "$store" "$mnt" "$url" || { log "push $kind: mount failed"; return 1; }
	python3 "$GEN" statsnap "$mnt" "$RUN/t/snap-before.json"
	job "$s" "$step" "$mnt" "$req"
	python3 "$GEN" statsnap "$mnt" "$RUN/t/snap-after.json"
	local d
	d=$(python3 "$GEN" statdiff "$RUN/t/snap-before.json" "$RUN/t/snap-after.json")
	record "$s" "$step" cache_changed_bytes "$(jget "$d" bytes_changed)"
	record "$s" "$step" cache_changed_files "$(jget "$d" files_changed)"
	l0=$(loglines "$slog")
	timed "$s" "$step" umount_push pcf_umount "$mnt"
	if [[ -n $slog ]]; then
		local p
		p=$(srv_bytes "$slog" "$l0" PUT)
		record "$s" "$step" server_put_bytes "$(jget "$p" bytes)"
		record "$s" "$step" server_put_requests "$(jget "$p" requests)"
		record "$s" "$step" server_put_packs_bytes "$(jget "$p" by_dir.packs)"
		record "$s" "$step" server_put_ns_bytes "$(jget "$p" by_dir.ns)"
		record "$s" "$step" server_put_trace_bytes "$(jget "$p" by_dir.trace)"
	fi
	stats_of "$store" "$s" "$step" ""
}

# upload_tree DIR KIND NAMESPACE: copy the objects of a file remote to another remote, object for
# object (WebDAV: into nginx's directory; S3: one PUT each through the proxy, which s3rver takes
# without a signature).
upload_tree() {
	local dir=$1 kind=$2 ns=$3 f rel ep
	case $kind in
	webdav)
		mkdir -p "$RUN/srv/webdav/$ns"
		cp -a "$dir/." "$RUN/srv/webdav/$ns/"
		;;
	s3)
		ep=${S3_URL#*endpoint=}
		ep=${ep%%&*}
		(cd "$dir" && find . -type f ! -name '.*' -printf '%P\n') | while read -r rel; do
			curl -sf -T "$dir/$rel" "$ep/pkgcache/$ns/$rel" -o /dev/null || { echo "PUT $rel failed" >&2; exit 1; }
		done
		;;
	esac
}

# ---------------------------------------------------------------------------------------------
# The link: one linkproxy.py per server port.

# link_url VAR NAME: start a proxy to the 127.0.0.1 port in the URL held by VAR, and point VAR
# at the proxy instead. Not in a subshell: LINK_PIDS must keep the pid for cleanup.
link_url() {
	local var=$1 name=$2 url=${!1} port ms=${LINK%%:*} mbit=${LINK#*:} pf=$RUN/link-$2.port i
	port=${url#*127.0.0.1:}
	port=${port%%[!0-9]*}
	[[ -n $port ]] || die "no 127.0.0.1 port in $var=$url"
	python3 "$HERE/linkproxy.py" --target "127.0.0.1:$port" --delay-ms "$ms" --rate-mbit "$mbit" \
		--port-file "$pf" --log "$OUT/link-$name.log" >/dev/null 2>>"$OUT/ops.log" &
	LINK_PIDS+=($!)
	for ((i = 0; i < 100; i++)); do
		[[ -s $pf ]] && break
		sleep 0.05
	done
	[[ -s $pf ]] || die "linkproxy for $name did not start (see $OUT/ops.log)"
	printf -v "$var" '%s' "${url//127.0.0.1:$port/127.0.0.1:$(cat "$pf")}"
}

start_link() {
	local p
	p=${INDEX_URL#http://127.0.0.1:}
	p=${p%%/*}
	link_url INDEX_URL index
	ARCHIVE_URL=${ARCHIVE_URL//127.0.0.1:$p/127.0.0.1:$(cat "$RUN/link-index.port")}
	link_url WEBDAV_URL webdav
	link_url S3_URL s3
	log "link: ${LINK%%:*} ms one way, ${LINK#*:} Mbit/s per connection: index $INDEX_URL, WebDAV $WEBDAV_URL, S3 $S3_URL"
}

# ---------------------------------------------------------------------------------------------
# Main

T0=$EPOCHREALTIME
log "binary: $BIN_ID; load: $(cut -d' ' -f1-3 /proc/loadavg)"
{
	echo "binary	$BIN_ID"
	echo "kernel	$(uname -r)"
	echo "cpus	$(nproc)"
	echo "mem_mib	$(awk '/MemTotal/ { printf "%d", $2 / 1024 }' /proc/meminfo)"
	echo "python	$(python3 --version 2>&1)"
	echo "nginx	$(nginx -v 2>&1 | sed 's/.*\///')"
	echo "zstd	$(zstd --version | sed 's/.*v\([0-9.]*\).*/\1/')"
	echo "load_start	$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "link	${LINK:-loopback}"
	echo "date	$(date -u +%FT%TZ)"
} >"$OUT/machine.tsv"

gen_hash=$(sha256sum <"$GEN" | cut -c1-8)
CORPUS="$WORK/remote-corpus-s$SEED-$gen_hash"
if [[ ! -f $CORPUS/.done ]]; then
	for d in "$WORK"/remote-corpus-*; do [[ -d $d && $d != "$CORPUS" ]] && rm -rf "$d"; done
	rm -rf "$CORPUS"
	log "corpus: building wheels and index in $CORPUS"
	python3 "$GEN" index "$CORPUS" --seed "$SEED" >"$CORPUS.summary" 2>"$OUT/corpus.log" ||
		die "corpus generation failed (see $OUT/corpus.log)"
	mv "$CORPUS.summary" "$CORPUS/summary.json"
	touch "$CORPUS/.done"
fi
log "corpus: $(cat "$CORPUS/summary.json")"
cp "$CORPUS/summary.json" "$OUT/corpus-summary.json"

log "servers: starting WebDAV and S3 (tests/remote/servers.sh) and the index"
"$SERVERS" start "$RUN/srv" >>"$OUT/ops.log" 2>&1 || die "servers.sh start failed (see $OUT/ops.log)"
set -a
# shellcheck disable=SC1091
. "$RUN/srv/env"
set +a
start_index
[[ -n $LINK ]] && start_link
log "index at $INDEX_URL"

python3 -m venv "$RUN/venv-template" || die "python3 -m venv failed"
record machine 0 pip_version "$("$RUN/venv-template/bin/pip" --version | cut -d' ' -f2)"

if [[ $SKIP_PIP -eq 0 ]]; then
	# --- Seeding: an earlier CI history installed the older point releases, then the current
	# set. The same pip cache becomes the actions/cache archive and is pushed to every remote.
	SEED_CACHE=$RUN/seed-cache
	log "seed: pip installs of the old and the current set into $SEED_CACHE"
	job seed-old 0 "$SEED_CACHE" "$CORPUS/req-old.txt" || die "seed install failed"
	job seed-current 0 "$SEED_CACHE" "$CORPUS/req-current.txt" || die "seed install failed"
	record seed 0 cache_bytes "$(du -sb "$SEED_CACHE" | cut -f1)"
	record seed 0 cache_files "$(find "$SEED_CACHE" -type f | wc -l)"
	timed archive 0 save sh -c "tar -C '$SEED_CACHE' -cf - . | zstd -q -1 -T0 -o '$RUN/archive/pip-cache.tar.zst'"
	record archive 0 archive_bytes "$(stat -c %s "$RUN/archive/pip-cache.tar.zst")"

	# What the job reads from its cache: pip on a copy of the seeded cache, traced (untimed).
	cp -a "$SEED_CACHE" "$RUN/t/trace-cache"
	fresh_venv "$RUN/t/venv"
	strace -f -qq -e trace=openat -e signal=none -o "$RUN/t/strace.log" \
		"$RUN/t/venv/bin/python" -m pip install --cache-dir "$RUN/t/trace-cache" --index-url "$INDEX_URL" \
		--trusted-host 127.0.0.1 --progress-bar off -r "$CORPUS/req-current.txt" >"$OUT/pip-readset.log" 2>&1 ||
		die "traced pip install failed"
	rs=$(python3 "$GEN" readset "$RUN/t/strace.log" "$RUN/t/trace-cache")
	record readset 0 bytes_read "$(jget "$rs" bytes_read)"
	record readset 0 files_read "$(jget "$rs" files_read)"
	log "the job reads $(jget "$rs" files_read) cache files, $(jget "$rs" bytes_read) bytes"
	rm -rf "$RUN/t/trace-cache" "$RUN/t/venv" "$RUN/t/strace.log"

	for kind in "${REMOTE_LIST[@]}"; do
		store=$RUN/t/seed-store-$kind
		mnt=$RUN/t/seed-mnt-$kind
		slog=$(server_log "$kind")
		log "seed: copying the seeded cache into a mount on $kind and pushing it"
		pcf_mount "$store" "$mnt" "$(remote_url "$kind" pip)" push_interval=0 || die "seed mount on $kind failed"
		timed seed-push "$kind" copy cp -a "$SEED_CACHE/." "$mnt/"
		l0=$(loglines "$slog")
		timed seed-push "$kind" umount_push pcf_umount "$mnt" || die "seed push to $kind failed"
		[[ -n $slog ]] && record seed-push "$kind" server_put_bytes "$(jget "$(srv_bytes "$slog" "$l0" PUT)" bytes)"
		stats_of "$store" seed-push "$kind" ""
		st=$("$PKG" stats --store "$store" --json 2>>"$OUT/ops.log")
		record seed-push "$kind" store_unique_bytes "$(jget "$st" unique_bytes)"
		record seed-push "$kind" store_logical_bytes "$(jget "$st" logical_bytes)"
		rm -rf "$store"
	done
	[[ -d $RUN/remote-file-pip ]] && record seed 0 remote_file_bytes "$(du -sb "$RUN/remote-file-pip" | cut -f1)"

	# --- The first job on each remote finds no access trace yet: timed, reported apart.
	for kind in "${REMOTE_LIST[@]}"; do
		log "first cold job on $kind (no trace yet)"
		cold_job "$kind" "first-$kind" 0
	done

	# --- Reps, interleaved.
	for ((rep = 1; rep <= REPS; rep++)); do
		if [[ $SKIP_ALT -eq 0 ]]; then
			log "rep $rep/$REPS: nocache"
			rm -rf "$RUN/t/nocache"
			job nocache "$rep" "$RUN/t/nocache" "$CORPUS/req-current.txt"
			rm -rf "$RUN/t/nocache"

			log "rep $rep/$REPS: archive"
			rm -rf "$RUN/t/arch-cache" "$RUN/t/arch.tar.zst"
			sync
			l0=$(loglines "$IDX_LOG")
			timed archive "$rep" download curl -sf -o "$RUN/t/arch.tar.zst" "$ARCHIVE_URL"
			record archive "$rep" archive_get_bytes "$(jget "$(srv_bytes "$IDX_LOG" "$l0" GET)" bytes)"
			mkdir -p "$RUN/t/arch-cache"
			timed archive "$rep" extract sh -c "zstd -q -d -c '$RUN/t/arch.tar.zst' | tar -C '$RUN/t/arch-cache' -xf -"
			job archive "$rep" "$RUN/t/arch-cache" "$CORPUS/req-current.txt"
			rm -rf "$RUN/t/arch-cache" "$RUN/t/arch.tar.zst"
		fi

		for kind in "${REMOTE_LIST[@]}"; do
			if [[ -n $VARIANTS ]]; then
				IFS=';' read -r -a vlist <<<"$VARIANTS"
				for v in "${vlist[@]}"; do
					log "rep $rep/$REPS: cold $kind, variant ${v%%=*} (-o ${v#*=})"
					cold_job "$kind" "cold-$kind@${v%%=*}" "$rep" "${v#*=}"
				done
				[[ $kind == file ]] || continue
			fi
			log "rep $rep/$REPS: cold $kind"
			cold_job "$kind" "cold-$kind" "$rep"
			if [[ $kind == file ]]; then
				log "rep $rep/$REPS: warm (the same store, remounted)"
				timed warm "$rep" mount pcf_mount "$RUN/t/store-file" "$RUN/t/mnt-file" "$(remote_url file pip)"
				job warm "$rep" "$RUN/t/mnt-file" "$CORPUS/req-current.txt"
				timed warm "$rep" umount pcf_umount "$RUN/t/mnt-file"
				stats_of "$RUN/t/store-file" warm "$rep" ""
			fi
		done

		log "rep $rep/$REPS: ext4warm"
		job ext4warm "$rep" "$SEED_CACHE" "$CORPUS/req-current.txt"
	done

	# --- Push after one new package, then after a point release of one already there.
	read -r bump_req <"$CORPUS/req-bump.txt"
	read -r new_req <"$CORPUS/req-new.txt"
	nd_new=$(python3 "$GEN" newdata "$CORPUS/corpus.json" "$new_req" --against old current)
	nd_bump=$(python3 "$GEN" newdata "$CORPUS/corpus.json" "$bump_req" --against old current new)
	record wheel new wheel_bytes "$(jget "$nd_new" size)"
	record wheel new shared_bytes "$(jget "$nd_new" shared_bytes)"
	record wheel bump wheel_bytes "$(jget "$nd_bump" size)"
	record wheel bump shared_bytes "$(jget "$nd_bump" shared_bytes)"
	[[ $SKIP_PUSH -eq 1 ]] && REMOTE_PUSH=() || REMOTE_PUSH=("${REMOTE_LIST[@]}")
	for kind in "${REMOTE_PUSH[@]}"; do
		log "push after one new package ($new_req), then a point release ($bump_req): $kind"
		push_step "$kind" new "$CORPUS/req-new.txt"
		push_step "$kind" bump "$CORPUS/req-bump.txt"
	done
fi

# ---------------------------------------------------------------------------------------------
# Cold mount of a large namespace.

if [[ $SKIP_NS -eq 0 ]]; then
	NS_SRC="$WORK/remote-ns-src-n$NS_FILES-l$NS_LARGE-b$NS_LARGE_BYTES-$gen_hash"
	if [[ ! -f $NS_SRC/.done ]]; then
		for d in "$WORK"/remote-ns-src-*; do [[ -d $d && $d != "$NS_SRC" ]] && rm -rf "$d"; done
		rm -rf "$NS_SRC"
		log "namespace: generating the source of $NS_FILES files in $NS_SRC"
		python3 "$GEN" ns "$NS_SRC" --files "$NS_FILES" --large "$NS_LARGE" \
			--large-bytes "$NS_LARGE_BYTES" >"$NS_SRC.json" 2>>"$OUT/ops.log" || die "ns generation failed"
		touch "$NS_SRC/.done"
	fi
	cp "$NS_SRC/ns.json" "$OUT/ns.json"
	ONE_SMALL=small/$(cd "$NS_SRC/small" && find . -type f -name '*.body' -printf '%P\n' | sort | head -1)
	log "namespace: $(cat "$NS_SRC/ns.json")"

	# Built through a real mount and pushed to a file remote, every run (the remote format is
	# the product's, which others change); then copied object for object to the others. Two
	# sessions: the small files and one copy of each large file, then the other large copies.
	# (One session would do, but a push uploads a chunk once per file using it when the files
	# are far apart in the push, so the 98 copies would go up as 9.3 GB of packs.)
	store=$RUN/t/ns-store
	mnt=$RUN/t/ns-mnt
	log "namespace: writing it through a mount on $(remote_url file ns)"
	pcf_mount "$store" "$mnt" "$(remote_url file ns)" push_interval=0 || die "ns mount failed"
	timed ns-build 0 copy_small cp -a "$NS_SRC/small" "$mnt/small"
	mkdir -p "$mnt/large"
	write_large() { # FROM TO
		local i
		for ((i = $1; i < $2; i++)); do
			cp "$NS_SRC/large/$([[ $((i % 2)) -eq 0 ]] && echo a || echo b)" \
				"$mnt/large/$(printf 'torch-%03d.whl' "$i")" || return 1
		done
	}
	timed ns-build 0 copy_large_1 write_large 0 2
	timed ns-build 0 umount_push_1 pcf_umount "$mnt" || die "ns push failed"
	stats_of "$store" ns-build 0 s1_
	pcf_mount "$store" "$mnt" "$(remote_url file ns)" push_interval=0 || die "ns mount failed"
	timed ns-build 0 copy_large_2 write_large 2 "$NS_LARGE"
	timed ns-build 0 umount_push_2 pcf_umount "$mnt" || die "ns push failed"
	stats_of "$store" ns-build 0 s2_
	"$PKG" stats --store "$store" --json >"$OUT/ns-store-stats.json" 2>>"$OUT/ops.log"
	record ns-build 0 remote_bytes "$(du -sb "$RUN/remote-file-ns" | cut -f1)"
	record ns-build 0 remote_objects "$(find "$RUN/remote-file-ns" -type f | wc -l)"
	record ns-build 0 catalog_bytes "$(find "$RUN/remote-file-ns/ns" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
	rm -rf "$store"
	for kind in "${REMOTE_LIST[@]}"; do
		[[ $kind == file ]] && continue
		log "namespace: copying the file remote's objects to $kind"
		timed ns-build "$kind" upload upload_tree "$RUN/remote-file-ns" "$kind" ns || die "upload to $kind failed"
	done

	for ((rep = 1; rep <= NS_REPS; rep++)); do
		for kind in "${REMOTE_LIST[@]}"; do
			s=ns-$kind
			store=$RUN/t/ns-cold-store
			mnt=$RUN/t/ns-cold-mnt
			slog=$(server_log "$kind")
			rm -rf "$store"
			sync
			l0=$(loglines "$slog")
			log "namespace rep $rep/$NS_REPS: cold mount on $kind"
			timed "$s" "$rep" mount pcf_mount "$store" "$mnt" "$(remote_url "$kind" ns)" no_push || continue
			[[ -n $slog ]] && record "$s" "$rep" server_get_bytes "$(jget "$(srv_bytes "$slog" "$l0" GET)" bytes)"
			timed "$s" "$rep" stat_one stat -c %s "$mnt/large/$(printf 'torch-%03d.whl' $((NS_LARGE / 2)))" >/dev/null
			timed "$s" "$rep" read_one cat "$mnt/$ONE_SMALL" >/dev/null
			timed "$s" "$rep" walk sh -c "find '$mnt' -type f | wc -l >'$RUN/t/ns-count'"
			record "$s" "$rep" files_seen "$(cat "$RUN/t/ns-count")"
			timed "$s" "$rep" umount pcf_umount "$mnt"
			stats_of "$store" "$s" "$rep" ""
			rm -rf "$store"
		done
		if [[ $rep -eq 1 && $NS_REPS -gt 1 ]] &&
			awk -F'\t' '$1 ~ /^ns-/ && $2 == 1 && $3 == "mount" && ($4 == "fail" || $4 > 10) { f = 1 } END { exit !f }' "$RESULTS"; then
			log "namespace: a cold mount took over 10 s; one rep only"
			NS_REPS=1
		fi
	done
fi

record machine 0 load_end "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
record machine 0 total_s "$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')"
python3 "$REPORT" "$OUT" | tee "$OUT/report.txt"
