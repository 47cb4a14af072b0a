#!/bin/bash
# SPDX-License-Identifier: MIT
# The README quickstart, as a newcomer follows it: the indented commands between the
# "<!-- quickstart:" markers in README.md are extracted and run in order, in one shell, from the
# top of the source tree, with HOME a temp dir (so ~/.cache/pip is ours) and the default store
# redirected by PKGCACHEFS_STORE. The liberties, all in the environment or said here:
#  - pip talks to the local index of the client tests (PIP_INDEX_URL), which has no `requests`:
#    the word `requests` in the commands becomes `alpha` (alpha -> beta -> gamma, 20 MiB);
#  - `tools/quickstart.sh` runs as written when build/ is the build directory of the binary
#    under test and is up to date (its ninja is then a no-op); otherwise (another build dir, or
#    a stale build/) its last step runs instead, `pkgcachefs mount ~/.cache/pip`, and the
#    `export PATH="$PWD/build:$PATH"` line points at the binary under test;
#  - python3 is Debian's (/usr/bin first in PATH).
# Checked: every command exits 0; the first install downloads, the second says "Using cached"
# for every wheel and downloads none; `stats` counts the cached files; `umount` leaves nothing
# mounted and fsck finds the store clean.
#
# usage: quickstart.sh PKGCACHEFS_BINARY
set -u -o pipefail
. "$(dirname "$0")/eco.sh"
pcf_init "${1:-}"
eco_pip_env
eco_index_start

README=$TOP/README.md
mkdir -p "$TMP/home" "$TMP/bin"
ln -s "$BIN" "$TMP/bin/pkgcachefs"
ln -s "$(realpath "$PY")" "$TMP/bin/python3"
PCF_MOUNTS+=("$TMP/store|$TMP/home/.cache/pip")

# The commands: 4-space-indented lines between the markers.
awk '/^<!-- quickstart: end/ { on = 0 } on && /^    [^ ]/ { sub(/^    /, ""); print }
	/^<!-- quickstart: tests\/ecosystem/ { on = 1 }' "$README" >"$TMP/commands"
[ "$(wc -l <"$TMP/commands")" -ge 5 ] || fail "found no quickstart commands between the markers in README.md"
grep -qx 'tools/quickstart.sh' "$TMP/commands" || fail "the README quickstart lost tools/quickstart.sh"
log "README quickstart commands:"
sed 's/^/    /' "$TMP/commands"

real_setup=0
if [ "$(realpath -m "$TOP/build/pkgcachefs")" = "$BIN" ] &&
	ninja -C "$TOP/build" -n 2>/dev/null | grep -q 'no work to do'; then
	real_setup=1
	log "build/ is the binary under test and up to date: tools/quickstart.sh runs as written"
else
	log "build/ is not the binary under test (or not up to date): tools/quickstart.sh is replaced by its last step"
fi

# One script: each command in its own { } with its output kept, stopping at the first failure.
{
	echo 'set -o pipefail'
	n=0
	while IFS= read -r cmd; do
		n=$((n + 1))
		cmd=${cmd//requests/alpha}
		if [ $real_setup = 0 ]; then
			case $cmd in
			tools/quickstart.sh) cmd='mkdir -p ~/.cache/pip && pkgcachefs mount ~/.cache/pip' ;;
			'export PATH="$PWD/build:$PATH"') cmd=': PATH kept: pkgcachefs is the binary under test' ;;
			esac
		fi
		printf 'echo %q\n' "\$ $cmd"
		printf '{ %s\n} >%q 2>&1 || { rc=$?; tail -n 30 %q; echo "step %d exited $rc"; exit 1; }\n' \
			"$cmd" "$TMP/out.$n" "$TMP/out.$n" "$n"
		printf 'sed "s/^/  /" %q | tail -n 12\n' "$TMP/out.$n"
		echo "$n $cmd" >>"$TMP/steps"
	done <"$TMP/commands"
} >"$TMP/quickstart-run.sh"

(cd "$TOP" && env -i HOME="$TMP/home" USER=root LANG=C.UTF-8 TERM=dumb \
	PATH="$TMP/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
	PKGCACHEFS_STORE="$TMP/store" PIP_INDEX_URL="$INDEX_URL" PIP_TRUSTED_HOST=127.0.0.1 \
	PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
	PIP_PROGRESS_BAR=off PYTHONDONTWRITEBYTECODE=1 \
	bash "$TMP/quickstart-run.sh") || fail "a README quickstart command failed (above)"

# step_out PATTERN: the output file of the first step whose command matches PATTERN.
step_out() {
	local n
	n=$(awk -v p="$1" 'index($0, p) { print $1; exit }' "$TMP/steps")
	[ -n "$n" ] || fail "no quickstart step matches '$1'"
	echo "$TMP/out.$n"
}
first=$(step_out 'pcf-demo1')
second=$(step_out 'pcf-demo2')
stats=$(step_out 'pkgcachefs stats')
grep -q 'Downloading .*alpha-' "$first" || fail "the first install did not download alpha (log: $first)"
eco_expect_cached "$second" alpha beta gamma
grep -q 'Successfully installed' "$second" || fail "the second install did not install (log: $second)"
[ "$(eco_whl_requests)" = 3 ] ||
	fail "the index served $(eco_whl_requests) wheels; 3 expected (the second install must download none)"
files=$(sed -n 's/^files: *\([0-9]*\).*/\1/p' "$stats")
[ -n "$files" ] && [ "$files" -gt 0 ] || fail "pkgcachefs stats shows no files: $(cat "$stats")"
log "second install used the cache; stats: $files files"
! is_mounted "$TMP/home/.cache/pip" || fail "~/.cache/pip is still mounted after the README's umount"
pcf_wait_daemon_exit "$TMP/store"
pcf_fsck "$TMP/store" "after the quickstart"
echo "PASS: quickstart"
