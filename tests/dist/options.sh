#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The man pages and the bash completion cannot drift from the program: every subcommand that
# `pkgcachefs --help` lists, every option that `pkgcachefs COMMAND --help` names, and every -o
# name of `pkgcachefs mount --help` must be in pkgcachefs.1, in pkgcachefs-COMMAND.1 and among
# the completion's candidates; and the completion may offer nothing that --help does not name.
# Prints TAP.
#   tests/dist/options.sh build/pkgcachefs dist
set -u
prog=${1:?usage: options.sh PKGCACHEFS DIST-DIR}
dist=${2:?usage: options.sh PKGCACHEFS DIST-DIR}
# shellcheck source=/dev/null
source "$dist/completion/pkgcachefs" || { echo "1..0 # cannot source the completion"; exit 1; }

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

# The words completion offers for WORD...
candidates()
{
	COMP_WORDS=("$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMPREPLY=()
	_pkgcachefs 2>/dev/null
	printf '%s\n' "${COMPREPLY[@]}"
}

# A man page as plain source text: \- is -, fonts and zero-width escapes go.
man_text()
{
	sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\&//g' -e 's/\\(aq/'"'"'/g' "$1"
}

# in_man PAGE WORD: WORD stands alone (not inside a longer option or name) in PAGE.
in_man()
{
	local page=$1 word=$2 re
	re=$(printf '%s' "$word" | sed 's/[][\.*^$+?(){}|]/\\&/g')
	if [[ $word == *= ]]; then
		man_text "$page" | grep -qE -- "(^|[^a-z_])$re"
	else
		man_text "$page" | grep -qE -- "(^|[^a-zA-Z0-9_-])$re([^a-zA-Z0-9_-]|$)"
	fi || { echo "# $word is not in ${page##*/}"; return 1; }
}

in_list()
{
	grep -qxF -- "$2" <<<"$1" || { echo "# $2 is not among: ${1//$'\n'/ }"; return 1; }
}

# The options a --help text offers: --long or -x in its usage lines and at the head of the lines
# of its option list (the prose may name other commands' options).
help_options()
{
	grep -E -- '^(usage:| +pkgcachefs |  -)' |
		grep -oE -- '(^|[][ (`])(--[a-z][a-z-]*[a-z]|-[a-zA-Z])([^a-zA-Z-]|$)' |
		sed -E 's/^[][ (`]?//; s/[^a-zA-Z-]$//' | sort -u
}

main_help=$("$prog" --help) || { echo "1..0 # $prog --help failed"; exit 1; }
commands=$(sed -n '/^commands:/,/^$/s/^  \([a-z][a-z]*\) .*/\1/p' <<<"$main_help" | sort -u)
check 'pkgcachefs --help lists commands' test -n "$commands"
offered=$(candidates pkgcachefs '')
check 'the completion offers exactly the commands of --help' \
	test "$(sort <<<"$offered")" = "$(sort <<<"$commands")"
check 'pkgcachefs.1 names --help and --version' \
	eval 'in_man "$dist/man/pkgcachefs.1" --help && in_man "$dist/man/pkgcachefs.1" --version'

for cmd in $commands; do
	page=$dist/man/pkgcachefs-$cmd.1
	check "$cmd: has a man page" test -f "$page"
	check "$cmd: is in pkgcachefs.1" in_man "$dist/man/pkgcachefs.1" "$cmd"
	help=$("$prog" "$cmd" --help)
	check "$cmd --help exits 0" test $? -eq 0
	opts=$(help_options <<<"$help")
	offered=$(candidates pkgcachefs "$cmd" -)
	for opt in $opts; do
		check "$cmd $opt: in pkgcachefs-$cmd.1" in_man "$page" "$opt"
		check "$cmd $opt: in pkgcachefs.1" in_man "$dist/man/pkgcachefs.1" "$opt"
		check "$cmd $opt: completed" in_list "$offered" "$opt"
	done
	for opt in $offered; do
		[[ $opt == --help ]] && continue
		check "$cmd: completed $opt is in its --help" in_list "$opts" "$opt"
	done
done

# The -o names: in the -o paragraph of mount --help, words like max_size=SIZE, no_push and ro.
oparagraph=$("$prog" mount --help | sed -n '/^  -o /,/^  -[^ ]/p' | sed '$d')
onames=$(tr ' ,;()' '\n\n\n\n\n' <<<"$oparagraph" |
	sed -nE 's/^([a-z]+(_[a-z]+)+)(=[A-Z]+)?$/\1\3/p; s/^ro$/ro/p' | sed -E 's/=[A-Z]+$/=/' | sort -u)
check 'mount --help names -o options' test "$(wc -l <<<"$onames")" -ge 7
offered=$(candidates pkgcachefs mount -o '')
for name in $onames; do
	check "mount -o $name: in pkgcachefs-mount.1" in_man "$dist/man/pkgcachefs-mount.1" "$name"
	check "mount -o $name: in pkgcachefs.1" in_man "$dist/man/pkgcachefs.1" "$name"
	check "mount -o $name: completed" in_list "$offered" "$name"
done
for name in $offered; do
	check "mount -o: completed $name is in mount --help" in_list "$onames" "$name"
done

echo "1..$n"
[[ $failed -eq 0 ]]
