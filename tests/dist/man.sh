#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The man pages in dist/man: groff formats each without a warning (-ww), man(1) renders it
# without a complaint, its .TH names its file, and every pkgcachefs page it refers to exists.
# Skips what needs groff or man when they are missing (Debian: groff-base, man-db). Prints TAP.
#   tests/dist/man.sh dist/man
set -u
dir=${1:?usage: man.sh MAN-DIR}

n=0
failed=0
check()
{
	local name=$1
	shift
	n=$((n + 1))
	if "$@"; then
		echo "ok $n - $name"
	else
		echo "not ok $n - $name"
		failed=$((failed + 1))
	fi
}
skip()
{
	n=$((n + 1))
	echo "ok $n - $1 # SKIP $2"
}

# quiet CMD...: succeeds when CMD succeeds and prints nothing on stderr.
quiet()
{
	local err
	err=$("$@" 2>&1 >/dev/null) || { echo "# $* failed: $err"; return 1; }
	[[ -z $err ]] || { echo "# $*: ${err//$'\n'/$'\n# '}"; return 1; }
}

th_matches()
{
	local page=$1 name
	name=$(basename "$page" .1)
	name=${name^^}
	grep -q "^\.TH ${name//-/\\\\-} 1 " "$page" || { echo "# .TH of $page is not $name"; return 1; }
}

refs_exist()
{
	local page=$1 ref ok=0
	for ref in $(sed -n 's/^\.BR \(pkgcachefs[a-z\\-]*\) (1).*/\1/p' "$page" | sed 's/\\-/-/g' | sort -u); do
		[[ -f $dir/$ref.1 ]] || { echo "# $page refers to $ref(1), which is not in $dir"; ok=1; }
	done
	return $ok
}

pages=("$dir"/*.1)
check 'there are man pages' test -f "${pages[0]}"
for page in "${pages[@]}"; do
	base=${page##*/}
	check "$base: .TH names the page" th_matches "$page"
	check "$base: has NAME, SYNOPSIS, DESCRIPTION, OPTIONS, EXIT STATUS, SEE ALSO" \
		eval 'for s in NAME SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" "SEE ALSO"; do
			grep -q "^\.SH \"\\?$s\"\\?\$" "$page" || { echo "# no $s in $page"; exit 1; }; done'
	check "$base: its pkgcachefs references exist" refs_exist "$page"
	if command -v groff >/dev/null; then
		check "$base: groff -man -ww without warnings" quiet groff -man -Tutf8 -ww -z "$page"
	else
		skip "$base: groff -man -ww" 'no groff (Debian: groff-base)'
	fi
	if command -v man >/dev/null; then
		check "$base: man -l renders it" quiet env MANWIDTH=80 man -l "$page"
	else
		skip "$base: man -l" 'no man (Debian: man-db)'
	fi
done

echo "1..$n"
[[ $failed -eq 0 ]]
