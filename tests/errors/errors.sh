#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Errors a newcomer hits, each provoked on purpose: the command must fail with the right exit
# status and a message that names the problem and says what to do. Prints TAP.
#
#   tests/errors/errors.sh build/pkgcachefs
#
# The FUSE cases that need another user or another /dev run as root in a private mount namespace
# (unshare -m): /dev/fuse hidden or made root-only, fusermount3 hidden, /etc/fuse.conf replaced
# by a copy with or without user_allow_other; nothing outside the namespace changes. A user
# pcf-errors is created for them when missing, and removed at exit when this test created it.
# Cases that need a working /dev/fuse, or root, are skipped (with the reason) without them.
set -u
prog=${1:?usage: errors.sh PKGCACHEFS}
prog=$(realpath "$prog")
PY=${PYTHON:-python3}
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pcf-errors.XXXXXX")
chmod 755 "$tmp"
user=pcf-errors
made_user=0
declare -a mounts=() pids=()

cleanup() {
	local m p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	for m in "${mounts[@]}"; do
		if awk -v m="$m" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; then
			timeout 60 "$prog" umount "$m" >/dev/null 2>&1 || fusermount3 -u -z "$m"
		fi
	done
	[ $made_user = 1 ] && userdel "$user" 2>/dev/null
	if awk -v t="$tmp/" 'index($5, t) == 1 { f = 1 } END { exit !f }' /proc/self/mountinfo; then
		echo "# something is still mounted below $tmp; leaving it"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }

# expect NAME STATUS WORDS... -- COMMAND...: COMMAND exits STATUS and its stderr and stdout
# together contain every one of WORDS (fixed strings, case-sensitive).
expect() {
	local name=$1 want=$2 out rc w missing=
	shift 2
	local -a words=()
	while [ "$1" != -- ]; do words+=("$1"); shift; done
	shift
	out=$(timeout 120 "$@" 2>&1 </dev/null)
	rc=$?
	for w in "${words[@]}"; do
		grep -qF -- "$w" <<<"$out" || missing+=" '$w'"
	done
	if [ "$rc" = "$want" ] && [ -z "$missing" ]; then
		ok "$name"
	else
		notok "$name"
		echo "# exit status $rc (want $want)${missing:+, missing:$missing}"
		sed 's/^/#   /' <<<"$out" | head -n 20
	fi
}

fuse_ok=1
[ -c /dev/fuse ] && "$PY" -c 'import os; os.close(os.open("/dev/fuse", os.O_RDWR))' 2>/dev/null ||
	fuse_ok=0
command -v fusermount3 >/dev/null || fuse_ok=0
root=0
[ "$(id -u)" = 0 ] && root=1
ns_ok=0
if [ $root = 1 ] && unshare -m true 2>/dev/null; then
	ns_ok=1
fi
if [ $root = 1 ] && ! id "$user" >/dev/null 2>&1; then
	useradd -M -d /nonexistent -s /usr/sbin/nologin "$user" && made_user=1
fi

# A free TCP port: bound, then released.
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

mount_ok() {
	local store=$1 mnt=$2
	shift 2
	mkdir -p "$mnt"
	mounts+=("$mnt")
	timeout 120 "$prog" mount --store "$store" "$@" "$mnt" >/dev/null 2>&1
}

# ---- the command line ----

expect 'unknown subcommand' 2 "unknown command 'mont'" "pkgcachefs --help" -- "$prog" mont /x
expect 'no subcommand' 2 'usage: pkgcachefs COMMAND' -- "$prog"
mkdir -p "$tmp/mp" "$tmp/m-other" "$tmp/m-c" "$tmp/m-r2" "$tmp/m-r3" "$tmp/m-r4"
expect 'bad -o max_size' 2 "bad size in 'max_size=lots'" 'try 10G' -- \
	"$prog" mount --store "$tmp/s-cli" -o max_size=lots "$tmp/mp"
expect 'bad -o commit_interval' 2 "bad commit_interval '0'" '1..600000' -- \
	"$prog" mount --store "$tmp/s-cli" -o commit_interval=0 "$tmp/mp"
expect 'bad -o push_interval (empty)' 2 "bad value in 'push_interval='" '0..86400' -- \
	"$prog" mount --store "$tmp/s-cli" -o push_interval= "$tmp/mp"
expect 'bad -o log_level' 2 "bad log_level 'loud'" 'error, warn, info or debug' -- \
	"$prog" mount --store "$tmp/s-cli" -o log_level=loud "$tmp/mp"
expect 'bad -o metrics_interval' 2 "bad metrics_interval '0s'" '1..86400' -- \
	"$prog" mount --store "$tmp/s-cli" -o metrics_interval=0s "$tmp/mp"
expect 'bad -o spin_us' 2 "bad spin_us '5000'" '0..1000 microseconds' -- \
	"$prog" mount --store "$tmp/s-cli" -o spin_us=5000 "$tmp/mp"
expect 'empty -o metrics_file' 2 'metrics_file= needs a path' -- \
	"$prog" mount --store "$tmp/s-cli" -o metrics_file= "$tmp/mp"
expect 'bad size for gc' 2 "bad size '10Q'" 'try 10G' -- "$prog" gc --store "$tmp/s-cli" --max-size 10Q
expect 'bad number for remote gc' 2 "bad number 'soon'" -- \
	"$prog" gc --remote file:///nonexistent --keep-days soon
expect 'an option a command does not take' 2 'does not take that option' -- \
	"$prog" push --store "$tmp/s-cli" --metadata-only
expect 'stats --json with --prometheus' 2 '--json or --prometheus, not both' -- \
	"$prog" stats --store "$tmp/s-cli" --json --prometheus
expect 'two mountpoints' 2 'expected exactly one MOUNTPOINT' -- "$prog" mount "$tmp/mp" "$tmp/mp"
expect 'mountpoint missing' 1 'does not exist' "mkdir -p $tmp/nowhere" -- \
	"$prog" mount --store "$tmp/s-cli" "$tmp/nowhere"
expect 'no store for stats' 1 "no store at $tmp/none" 'pkgcachefs mount --store' -- \
	"$prog" stats --store "$tmp/none"

# ---- the store ----

mkdir -p "$tmp/newer"
printf 'format = 99\nchunk_min = 16384\nchunk_avg = 65536\nchunk_max = 262144\n' >"$tmp/newer/config"
expect 'store from a newer version: stats' 1 'written by a newer pkgcachefs' 'upgrade pkgcachefs' -- \
	"$prog" stats --store "$tmp/newer"
if [ $fuse_ok = 1 ]; then
	# A real store first, then its config's format raised as a newer release would.
	if mount_ok "$tmp/s-new" "$tmp/m-new" && "$prog" umount "$tmp/m-new" >/dev/null; then
		sed -i 's/^format = .*/format = 99/' "$tmp/s-new/config"
		expect 'store from a newer version: mount' 1 'written by a newer pkgcachefs' \
			'upgrade pkgcachefs to mount it' -- "$prog" mount --store "$tmp/s-new" "$tmp/m-new"
	else
		notok 'store from a newer version: mount (could not make the store)'
	fi

	# ---- the mountpoint ----
	mount_ok "$tmp/s-a" "$tmp/m-a" || notok 'mount a store for the next cases'
	expect 'mountpoint busy' 1 "$tmp/m-a is busy" "pkgcachefs umount $tmp/m-a first" -- \
		"$prog" mount --store "$tmp/s-b" "$tmp/m-a"
	expect 'store locked by another daemon' 1 "store $tmp/s-a is locked" "serves it on $tmp/m-a" \
		"pkgcachefs umount $tmp/m-a first" -- "$prog" mount --store "$tmp/s-a" "$tmp/m-other"
	expect 'store locked: fsck --repair' 1 "is mounted on $tmp/m-a" 'unmount it first' -- \
		"$prog" fsck --store "$tmp/s-a" --repair
	mkdir -p "$tmp/m-full"
	echo keep >"$tmp/m-full/file"
	expect 'mountpoint not empty with --no-adopt' 1 "$tmp/m-full is not empty" \
		'drop --no-adopt to import its files' -- \
		"$prog" mount --store "$tmp/s-c" --no-adopt "$tmp/m-full"
	expect 'unknown FUSE option' 1 "unknown or bad mount option in 'frobnicate'" \
		"unknown option" 'pkgcachefs mount --help' -- \
		"$prog" mount --store "$tmp/s-c" -o frobnicate "$tmp/m-c"
	"$prog" umount "$tmp/m-a" >/dev/null 2>&1
else
	for c in 'store from a newer version: mount' 'mountpoint busy' 'store locked by another daemon' \
		'store locked: fsck --repair' 'mountpoint not empty with --no-adopt' 'unknown FUSE option'; do
		skip "$c" '/dev/fuse or fusermount3 unusable'
	done
fi

# ---- /dev/fuse, fusermount3, allow_other (root, in a private mount namespace) ----

# "${in_ns[@]}" SCRIPT: runs SCRIPT in bash inside a new mount namespace, with $tmp, $prog and
# $user set.
in_ns=(unshare -m --propagation private env tmp="$tmp" prog="$prog" user="$user" bash -c)
# as_user CMD...: CMD as the test user, with a PATH that has fusermount3.
as_user='runuser -u "$user" -- env PATH=/usr/bin:/bin HOME="$tmp/home"'

if [ $ns_ok = 1 ]; then
	mkdir -p "$tmp/home" "$tmp/m-user"
	chown "$user" "$tmp/home" "$tmp/m-user"
	# A FUSE device node anyone may open, and one only root may.
	mknod -m 666 "$tmp/fuse-open" c 10 229 2>/dev/null && mknod -m 600 "$tmp/fuse-root" c 10 229 2>/dev/null
	dev_ok=$?
	expect '/dev/fuse missing' 1 '/dev/fuse does not exist' 'modprobe fuse' '--device /dev/fuse' -- \
		"${in_ns[@]}" 'mount -t tmpfs none /dev && exec "$prog" mount --store "$tmp/s-dev" "$tmp/mp"'
	if [ $dev_ok = 0 ]; then
		expect '/dev/fuse not permitted' 1 '/dev/fuse: Permission denied' 'may not use FUSE' \
			'chmod 666 /dev/fuse' -- \
			"${in_ns[@]}" 'mount --bind "$tmp/fuse-root" /dev/fuse &&
				'"$as_user"' "$prog" mount --store "$tmp/home/s" "$tmp/m-user"'
		: >"$tmp/not-a-program"
		expect 'fusermount3 missing' 1 'fusermount3 not found' 'apt-get install fuse3' \
			'or mount as root' -- \
			"${in_ns[@]}" 'mount --bind "$tmp/fuse-open" /dev/fuse &&
				mount --bind "$tmp/not-a-program" "$(command -v fusermount3)" &&
				'"$as_user"' "$prog" mount --store "$tmp/home/s" "$tmp/m-user"'
		grep -v '^[[:space:]]*user_allow_other' /etc/fuse.conf >"$tmp/fuse.conf.without" 2>/dev/null
		{ cat "$tmp/fuse.conf.without"; echo user_allow_other; } >"$tmp/fuse.conf.with"
		chmod 644 "$tmp/fuse.conf.without" "$tmp/fuse.conf.with"
		expect 'allow_other without user_allow_other' 1 '-o allow_other is refused' \
			'user_allow_other' '/etc/fuse.conf' -- \
			"${in_ns[@]}" 'mount --bind "$tmp/fuse-open" /dev/fuse &&
				mount --bind "$tmp/fuse.conf.without" /etc/fuse.conf &&
				'"$as_user"' "$prog" mount --store "$tmp/home/s" -o allow_other "$tmp/m-user"'
		# The control: with the line, the same user's allow_other mount works.
		if [ $fuse_ok = 1 ] || [ -c /dev/fuse ]; then
			expect 'allow_other with user_allow_other mounts' 0 'unmounted' -- \
				"${in_ns[@]}" 'mount --bind "$tmp/fuse-open" /dev/fuse &&
					mount --bind "$tmp/fuse.conf.with" /etc/fuse.conf &&
					'"$as_user"' "$prog" mount --store "$tmp/home/s" -o allow_other "$tmp/m-user" &&
					grep -q "$tmp/m-user .*allow_other" /proc/self/mountinfo &&
					'"$as_user"' "$prog" umount "$tmp/m-user" && echo unmounted'
		fi
	else
		for c in '/dev/fuse not permitted' 'fusermount3 missing' 'allow_other without user_allow_other'; do
			skip "$c" "cannot create a FUSE device node in $tmp"
		done
	fi
else
	for c in '/dev/fuse missing' '/dev/fuse not permitted' 'fusermount3 missing' \
		'allow_other without user_allow_other'; do
		skip "$c" 'needs root and unshare -m'
	done
fi

# ---- remotes ----

port=$(free_port)
mkdir -p "$tmp/s-r"
"$prog" remote --store "$tmp/s-r" >/dev/null 2>&1 # creates nothing; push below creates the store
expect 'remote unreachable: push' 1 'cannot be reached' 'check the URL' -- \
	"$prog" push --store "$tmp/s-r" --remote "http://127.0.0.1:$port/cache/"
expect 'remote unreachable: pull' 1 'cannot be reached' 'check the URL' -- \
	"$prog" pull --store "$tmp/s-r" --remote "http://127.0.0.1:$port/cache/"
if [ $fuse_ok = 1 ]; then
	# A mount goes on without its remote, and says so.
	expect 'remote unreachable: mount' 0 'is unreachable' 'mounted with what is local' \
		'check the URL' -- \
		"$prog" mount --store "$tmp/s-r2" --remote "http://127.0.0.1:$port/cache/" \
		-o push_interval=0 "$tmp/m-r2"
	mounts+=("$tmp/m-r2")
	"$prog" umount "$tmp/m-r2" >/dev/null 2>&1
fi
noaws=(env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_PROFILE
	-u AWS_SHARED_CREDENTIALS_FILE -u AWS_CONTAINER_CREDENTIALS_FULL_URI
	-u AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_EC2_METADATA_DISABLED=true HOME="$tmp/nohome")
expect 'S3 credentials missing: push' 1 'no S3 credentials' 'AWS_ACCESS_KEY_ID' '~/.aws/credentials' -- \
	"${noaws[@]}" "$prog" push --store "$tmp/s-r" --remote "s3://bucket/ci?endpoint=http://127.0.0.1:$port"
if [ $fuse_ok = 1 ]; then
	expect 'S3 credentials missing: mount' 1 'no S3 credentials' 'AWS_ACCESS_KEY_ID' -- \
		"${noaws[@]}" "$prog" mount --store "$tmp/s-r3" \
		--remote "s3://bucket/ci?endpoint=http://127.0.0.1:$port" "$tmp/m-r3"
fi

# Secrets over plain http:// to another host: refused before anything is sent, unless asked.
mkdir -p "$tmp/nethome"
printf 'machine cache.example.com login ci password hunter2\n' >"$tmp/nethome/.netrc"
chmod 600 "$tmp/nethome/.netrc"
expect 'a .netrc password over http:// to another host' 1 'the ~/.netrc password' \
	'over plain http://' 'use https://' 'PKGCACHEFS_ALLOW_CLEARTEXT=1' -- \
	env HOME="$tmp/nethome" "$prog" remote --store "$tmp/s-clear" http://cache.example.com/pc/
expect 'the same with PKGCACHEFS_ALLOW_CLEARTEXT=1' 0 -- \
	env HOME="$tmp/nethome" PKGCACHEFS_ALLOW_CLEARTEXT=1 "$prog" remote --store "$tmp/s-clear" \
	http://cache.example.com/pc/
expect 'no .netrc entry for that host: anonymous, allowed' 0 -- \
	env HOME="$tmp/nethome" "$prog" remote --store "$tmp/s-clear" http://mirror.example.com/pc/
expect 'https:// to that host: allowed' 0 -- \
	env HOME="$tmp/nethome" "$prog" remote --store "$tmp/s-clear" https://cache.example.com/pc/
expect 'an S3 session token over http:// to another host' 1 'the S3 session token' \
	'over plain http://' -- env AWS_ACCESS_KEY_ID=AKID AWS_SECRET_ACCESS_KEY=secret \
	AWS_SESSION_TOKEN=token "$prog" remote --store "$tmp/s-clear" \
	"s3://bucket/ci?endpoint=http://s3.example.com:9000"
expect 'an S3 session token to a loopback endpoint: allowed' 0 -- \
	env AWS_ACCESS_KEY_ID=AKID AWS_SECRET_ACCESS_KEY=secret AWS_SESSION_TOKEN=token \
	"$prog" remote --store "$tmp/s-clear" "s3://bucket/ci?endpoint=http://127.0.0.1:9000"

# An HTTP remote that refuses every request with 401 or 403.
cat >"$tmp/refuse.py" <<'PYEOF'
import http.server, sys
code = int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def refuse(self):
        self.send_response(code)
        if code == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="cache"')
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PROPFIND = do_MKCOL = do_MOVE = refuse
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
PYEOF
for code in 401 403; do
	"$PY" "$tmp/refuse.py" "$port" "$code" >"$tmp/port.$code" &
	pids+=($!)
	for _ in $(seq 50); do [ -s "$tmp/port.$code" ] && break; sleep 0.1; done
	p=$(cat "$tmp/port.$code")
	expect "credentials rejected ($code): push" 1 "HTTP $code" 'refused the credentials' '~/.netrc' -- \
		env HOME="$tmp/nohome" "$prog" push --store "$tmp/s-r" --remote "http://127.0.0.1:$p/cache/"
	if [ $fuse_ok = 1 ]; then
		expect "credentials rejected ($code): mount" 1 'refused the credentials' '~/.netrc' \
			'--remote none' -- \
			env HOME="$tmp/nohome" "$prog" mount --store "$tmp/s-r4" \
			--remote "http://127.0.0.1:$p/cache/" "$tmp/m-r4"
	fi
done

# ---- trust tiers: a store an untrusted job (no_push) used never lets its content out ----

if [ $fuse_ok = 1 ] && [ $root = 1 ]; then
	if mount_ok "$tmp/s-untrusted" "$tmp/m-untrusted" -o no_push; then
		echo job >"$tmp/m-untrusted/f"
		timeout 60 "$prog" umount "$tmp/m-untrusted" >/dev/null 2>&1
		expect 'no_push without a remote: export refused' 1 'mounted with no_push' \
			'by push or by bundle' -- "$prog" export --store "$tmp/s-untrusted" "$tmp/u.bundle"
		if [ -e "$tmp/u.bundle" ]; then notok 'no bundle left behind'; else ok 'no bundle left behind'; fi
		mkdir -p "$tmp/r-untrusted"
		expect 'no_push without a remote: a later push refused' 1 'mounted with no_push' -- \
			"$prog" push --store "$tmp/s-untrusted" --remote "file://$tmp/r-untrusted"
	else
		notok 'mount -o no_push without a remote'
	fi
else
	skip 'trust tiers' 'needs root and a usable /dev/fuse'
fi

# ---- what a mount lets through: nosuid,nodev unless asked, setuid bits of pulled files cleared
# unless keep_suid, no mount option smuggled in through the store's path ----

# The kernel's mount options of mountpoint $1, from /proc/self/mountinfo.
mount_flags() { awk -v m="$1" '$5 == m { print $6 }' /proc/self/mountinfo; }

if [ $fuse_ok = 1 ] && [ $root = 1 ]; then
	if mount_ok "$tmp/s-flags" "$tmp/m-flags"; then
		f=$(mount_flags "$tmp/m-flags")
		case ",$f," in
		*,nosuid,*) case ",$f," in *,nodev,*) ok 'a mount is nosuid,nodev by default' ;;
			    *) notok 'a mount is nosuid,nodev by default'; echo "# $f" ;; esac ;;
		*) notok 'a mount is nosuid,nodev by default'; echo "# $f" ;;
		esac
		timeout 60 "$prog" umount "$tmp/m-flags" >/dev/null 2>&1
	else
		notok 'mount for the mount flags'
	fi
	if mount_ok "$tmp/s-flags" "$tmp/m-flags" -o suid,dev; then
		f=$(mount_flags "$tmp/m-flags")
		case ",$f," in
		*,nosuid,* | *,nodev,*) notok '-o suid,dev are honoured'; echo "# $f" ;;
		*) ok '-o suid,dev are honoured' ;;
		esac
		timeout 60 "$prog" umount "$tmp/m-flags" >/dev/null 2>&1
	else
		notok 'mount with -o suid,dev'
	fi
	mkdir -p "$tmp/s,allow_other" "$tmp/m-comma"
	chmod 700 "$tmp/s,allow_other"
	expect 'a store path with a comma is refused' 2 'commas, blanks and backslashes are not' -- \
		"$prog" mount --store "$tmp/s,allow_other" "$tmp/m-comma"
	if [ -z "$(mount_flags "$tmp/m-comma")" ]; then ok 'and nothing is mounted'
	else notok 'and nothing is mounted'; fi

	mkdir -p "$tmp/r-suid"
	if mount_ok "$tmp/s-suid-a" "$tmp/m-suid-a" --remote "file://$tmp/r-suid" -o push_interval=0
	then
		echo '#!/bin/sh' >"$tmp/m-suid-a/tool" && chmod 4755 "$tmp/m-suid-a/tool"
		mkdir "$tmp/m-suid-a/shared" && chmod 2775 "$tmp/m-suid-a/shared"
		timeout 120 "$prog" push --store "$tmp/s-suid-a" >/dev/null 2>&1 ||
			notok 'push of a setuid file'
		timeout 60 "$prog" umount "$tmp/m-suid-a" >/dev/null 2>&1
		if mount_ok "$tmp/s-suid-b" "$tmp/m-suid-b" --remote "file://$tmp/r-suid"; then
			got=$(stat -c %a "$tmp/m-suid-b/tool" "$tmp/m-suid-b/shared" | tr '\n' ' ')
			if [ "$got" = '755 775 ' ]; then ok 'a pulled setuid file arrives without the bit'
			else notok 'a pulled setuid file arrives without the bit'; echo "# modes $got"; fi
			timeout 60 "$prog" umount "$tmp/m-suid-b" >/dev/null 2>&1
		else
			notok 'mount of the pulling host'
		fi
		if mount_ok "$tmp/s-suid-c" "$tmp/m-suid-c" --remote "file://$tmp/r-suid" \
			-o keep_suid; then
			got=$(stat -c %a "$tmp/m-suid-c/tool" "$tmp/m-suid-c/shared" | tr '\n' ' ')
			if [ "$got" = '4755 2775 ' ]; then ok '-o keep_suid keeps it'
			else notok '-o keep_suid keeps it'; echo "# modes $got"; fi
			timeout 60 "$prog" umount "$tmp/m-suid-c" >/dev/null 2>&1
		else
			notok 'mount with keep_suid'
		fi
	else
		notok 'mount of the pushing host'
	fi
else
	skip 'mount flags and setuid bits' 'needs root and a usable /dev/fuse'
fi

# ---- a tree deeper than the format's path limit: named by push, the daemon keeps serving ----

if [ $fuse_ok = 1 ] && [ $root = 1 ]; then
	mkdir -p "$tmp/r-deep"
	if mount_ok "$tmp/s-deep" "$tmp/m-deep" --remote "file://$tmp/r-deep" -o push_interval=0; then
		"$PY" -c 'import os, sys
os.chdir(sys.argv[1])
for _ in range(3000):
    os.mkdir("d"); os.chdir("d")
open("f", "w").write("deep")' "$tmp/m-deep"
		expect 'push of a 3,000-level tree names what stays local' 0 \
			'deeper than the 4095-byte path limit stay local' -- \
			"$prog" push --store "$tmp/s-deep"
		if stat "$tmp/m-deep/d" >/dev/null 2>&1; then ok 'the daemon still serves after it'
		else notok 'the daemon still serves after it'; fi
		timeout 60 "$prog" umount "$tmp/m-deep" >/dev/null 2>&1
	else
		notok 'mount for the deep tree'
	fi
else
	skip 'deep tree' 'needs root and a usable /dev/fuse'
fi

echo "1..$n"
[ $failed = 0 ]
