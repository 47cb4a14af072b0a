#!/bin/bash
# SPDX-License-Identifier: MIT
# `docker run -v /var/cache/pkg/root:/root/.cache` without Docker: bubblewrap makes the same
# kind of sandbox (its own mount, pid, ipc and uts namespaces, a root made of the host's /usr
# and /etc read-only, tmpfs /tmp and /root, the host's network for the loopback index) and
# bind-mounts a directory of a pkgcachefs mount at the path the tool expects. Real pip runs in
# it (docs/recipes/docker-podman.md):
#  A. root mounts without allow_other: a sandbox running as root (rootful Docker's container
#     root is the host's root, the mounter) installs from the index into /root/.cache/pip; a
#     sandbox running as uid 1000 (`docker run --user 1000`) is refused (EACCES): FUSE lets
#     only the mounting user in;
#  B. root mounts again with -o allow_other: a new root sandbox installs "Using cached" (the
#     cache persisted across the remount); uid 1000 installs into its own directory of the
#     mount, and a second uid-1000 sandbox uses the cache;
#  C. uid 1000 mounts (a runner user; in a private mount namespace where /dev/fuse is 0666 as
#     on a stock Debian and /etc/fuse.conf is a stand-in): -o allow_other is refused without
#     user_allow_other, works with it, and a root sandbox (to this mount, another user) installs
#     twice, the second time from the cache.
# The index server's log proves who downloaded: no .whl request for a "Using cached" run.
# Needs root and bubblewrap (installed from Debian if missing: apt-get install bubblewrap).
#
# usage: bwrap-pip.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/eco.sh"
pcf_init "${1:-}"
[ "$(id -u)" = 0 ] || skip "needs root (mounts for other users, sandboxes as uid 1000)"
if ! command -v bwrap >/dev/null 2>&1; then
	log "bubblewrap is missing: apt-get install bubblewrap"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap \
		>/dev/null 2>&1 || fail "bwrap not found and apt-get install bubblewrap failed"
fi
bwrap --ro-bind / / --unshare-pid true 2>/dev/null || skip "bwrap cannot make a sandbox here"
eco_pip_env
eco_index_start

STORE=$TMP/store
PKG=$TMP/var-cache-pkg	# stands for /var/cache/pkg
UID2=1000

# sandbox UID CACHE_SRC HOME LOG CMD...: CACHE_SRC appears at HOME/.cache; CMD runs as UID.
sandbox() {
	local uid=$1 src=$2 home=$3 out=$4
	shift 4
	local args=(--ro-bind /usr /usr --ro-bind /etc /etc --dev /dev --proc /proc
		--perms 1777 --tmpfs /tmp --tmpfs /root --tmpfs /home
		--dir "$home" --bind "$src" "$home/.cache"
		--unshare-pid --unshare-ipc --unshare-uts --die-with-parent
		--clearenv --setenv HOME "$home" --setenv PATH /usr/bin:/bin
		--setenv PIP_CONFIG_FILE /dev/null --setenv PIP_DISABLE_PIP_VERSION_CHECK 1
		--setenv PIP_PROGRESS_BAR off --setenv PYTHONDONTWRITEBYTECODE 1 --chdir /tmp)
	local l
	for l in bin sbin lib lib32 lib64 libx32; do
		# Debian 12 has a merged /usr: /bin is a link to usr/bin.
		if [ -L "/$l" ]; then args+=(--symlink "$(readlink "/$l")" "/$l")
		elif [ -d "/$l" ]; then args+=(--ro-bind "/$l" "/$l"); fi
	done
	if [ "$uid" != 0 ]; then
		args+=(--cap-add CAP_SETUID --cap-add CAP_SETGID)
		set -- setpriv --reuid="$uid" --regid="$uid" --clear-groups --inh-caps=-all "$@"
	fi
	bwrap "${args[@]}" -- "$@" >"$out" 2>&1
}

# pip_in UID CACHE_SRC HOME TAG: a fresh venv in the sandbox's /tmp, pip install alpha.
pip_in() {
	local uid=$1 src=$2 home=$3 tag=$4
	sandbox "$uid" "$src" "$home" "$TMP/pip-$tag.log" sh -c '
		/usr/bin/python3 -m venv /tmp/venv &&
		/tmp/venv/bin/pip install --index-url "$1" --trusted-host 127.0.0.1 alpha &&
		/tmp/venv/bin/python -c "import alpha; print(alpha.__version__)"' sh "$INDEX_URL" || {
		tail -n 30 "$TMP/pip-$tag.log" >&2
		fail "pip in the $tag sandbox (uid $uid) failed (log above)"
	}
	if grep -qi 'cache has been disabled\|not owned\|not writable' "$TMP/pip-$tag.log"; then
		grep -i cache "$TMP/pip-$tag.log" >&2
		fail "pip in the $tag sandbox disabled its cache"
	fi
}

# downloads_by TAG BEFORE EXPECTED: the wheels the index served since BEFORE.
downloads_by() {
	local got=$(($(eco_whl_requests) - $2))
	[ "$got" = "$3" ] || fail "the $1 sandbox made $got wheel downloads, $3 expected"
}

log "A. root mounts $PKG without allow_other"
pcf_mount "$STORE" "$PKG"
mkdir -p "$PKG/root" && install -d -o $UID2 -g $UID2 "$PKG/u$UID2" || fail "mkdir on the mount failed"
n=$(eco_whl_requests)
pip_in 0 "$PKG/root" /root A-root
downloads_by A-root "$n" 3
grep -q 'Downloading .*gamma-3.0' "$TMP/pip-A-root.log" || fail "A-root did not download gamma"
[ -n "$(find "$PKG/root/pip" -type f -name '*.body' -o -type f -path '*/http*/*' | head -n 1)" ] ||
	fail "pip's cache did not appear on the mount at $PKG/root/pip"
log "A-root: installed, cache on the mount: $(find "$PKG/root/pip" -type f | wc -l) files"
sandbox $UID2 "$PKG/u$UID2" /home/builder "$TMP/A-uid.log" sh -c 'ls "$HOME/.cache"' &&
	fail "uid $UID2 read a mount made without allow_other"
grep -q 'Permission denied' "$TMP/A-uid.log" || {
	cat "$TMP/A-uid.log" >&2
	fail "uid $UID2 was refused, but not with EACCES"
}
log "A-uid$UID2: refused without allow_other: $(tail -n 1 "$TMP/A-uid.log")"
pcf_umount "$PKG"
pcf_wait_daemon_exit "$STORE"

log "B. root mounts $PKG again, with -o allow_other"
pcf_mount "$STORE" "$PKG" -o allow_other
n=$(eco_whl_requests)
pip_in 0 "$PKG/root" /root B-root
eco_expect_cached "$TMP/pip-B-root.log" alpha beta gamma
downloads_by B-root "$n" 0
pip_in $UID2 "$PKG/u$UID2" /home/builder B-uid1
downloads_by B-uid1 "$n" 3
pip_in $UID2 "$PKG/u$UID2" /home/builder B-uid2
eco_expect_cached "$TMP/pip-B-uid2.log" alpha beta gamma
downloads_by B-uid2 "$n" 3
bad=$(find "$PKG/u$UID2/pip" ! -uid $UID2 | head -n 3)
[ -z "$bad" ] || fail "files in uid $UID2's cache owned by someone else: $bad"
log "B: root used the cache after remount; uid $UID2 filled its own cache, then used it"
pcf_umount "$PKG"
pcf_wait_daemon_exit "$STORE"
pcf_fsck "$STORE" "after A and B"

log "C. uid $UID2 mounts with -o allow_other (private mount namespace)"
C=$TMP/user
chmod 711 "$TMP"	# uid 1000 must reach its store and mountpoint
mkdir -m 755 "$C" "$C/dev" "$C/pkg" "$C/store"
chown $UID2:$UID2 "$C/pkg" "$C/store"
printf '# a stand-in /etc/fuse.conf\n#user_allow_other\n' >"$C/fuse.conf"
PCF_MOUNTS+=("$C/store|$C/pkg")
# These functions and variables run inside the namespace, in a child bash.
export -f sandbox pip_in downloads_by eco_whl_requests eco_expect_cached log fail
export BIN C UID2 TMP INDEX_URL HTTPLOG
unshare -m --propagation private bash -c '
	set -u -o pipefail
	as_user() { setpriv --reuid=$UID2 --regid=$UID2 --clear-groups "$@"; }
	mount -t tmpfs -o mode=755 tmpfs "$C/dev" && mknod -m 666 "$C/dev/fuse" c 10 229 &&
		mount --bind "$C/dev/fuse" /dev/fuse && mount --bind "$C/fuse.conf" /etc/fuse.conf ||
		fail "could not set up the namespace (tmpfs, mknod, bind mounts)"
	if as_user "$BIN" mount --store "$C/store" -o allow_other "$C/pkg" 2>"$TMP/C-refused.log"; then
		as_user "$BIN" umount "$C/pkg"
		fail "uid $UID2 mounted with allow_other although fuse.conf lacks user_allow_other"
	fi
	grep -q user_allow_other "$TMP/C-refused.log" || {
		cat "$TMP/C-refused.log" >&2
		fail "the refusal does not say to set user_allow_other"
	}
	log "C: refused without user_allow_other: $(cat "$TMP/C-refused.log")"
	echo user_allow_other >>"$C/fuse.conf"
	as_user "$BIN" mount --store "$C/store" -o allow_other "$C/pkg" ||
		fail "uid $UID2 could not mount with allow_other and user_allow_other"
	mkdir "$C/pkg/root" || fail "root could not mkdir on a user mount with allow_other"
	n=$(eco_whl_requests)
	pip_in 0 "$C/pkg/root" /root C-root1
	downloads_by C-root1 "$n" 3
	pip_in 0 "$C/pkg/root" /root C-root2
	eco_expect_cached "$TMP/pip-C-root2.log" alpha beta gamma
	downloads_by C-root2 "$n" 3
	[ "$(stat -c %u "$C/pkg")" = $UID2 ] && [ "$(stat -c %u "$C/pkg/root/pip")" = 0 ] ||
		fail "owners on the user mount are not as made (mount root $UID2, root/pip 0)"
	log "C: a root sandbox on uid $UID2'"'"'s mount installed, then used the cache"
	as_user "$BIN" umount "$C/pkg" || fail "uid $UID2 could not unmount its mount"
' || exit
pcf_wait_daemon_exit "$C/store"
# The user checks its own store: root refuses a store another user owns (docs/security.md).
out=$(timeout "$PCF_TIMEOUT" setpriv --reuid=$UID2 --regid=$UID2 --clear-groups \
	"$BIN" fsck --store "$C/store" 2>&1) || {
	echo "$out" | tail -n 50 >&2
	fail "pkgcachefs fsck (the user mount, as uid $UID2) failed"
}
log "fsck (the user mount, as uid $UID2): clean"
echo "PASS: bwrap-pip"
