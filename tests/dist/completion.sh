#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The bash completion (dist/completion/pkgcachefs), called as bash calls it: COMP_WORDS split the
# way readline splits them ('=' and ':' are words of their own), COMP_CWORD the word under the
# cursor; COMPREPLY is what readline would offer. Prints TAP.
#   tests/dist/completion.sh dist/completion/pkgcachefs
set -u
script=${1:?usage: completion.sh COMPLETION-SCRIPT}
# shellcheck source=/dev/null
source "$script" || { echo "1..0 # cannot source $script"; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/dir one" "$tmp/dir2" "$tmp/store"
: >"$tmp/cache.bundle"
: >"$tmp/delta.bundle"

n=0
failed=0
# complete WORD... : set COMP_WORDS to the words (the last one is under the cursor), call the
# completion function, and leave the sorted candidates, one a line, in $got.
complete_words()
{
	COMP_WORDS=("$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE="$*"
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	_pkgcachefs pkgcachefs "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}" 2>/dev/null
	got=$(printf '%s\n' "${COMPREPLY[@]}" | sort)
}

# expect "NAME" "CANDIDATES, one a line" WORD...: the candidates are exactly these.
expect()
{
	local name=$1 want
	want=$(printf '%s' "$2" | sort)
	shift 2
	complete_words "$@"
	n=$((n + 1))
	if [[ $got == "$want" ]]; then
		echo "ok $n - $name"
	else
		echo "not ok $n - $name"
		echo "# words: $*"
		echo "# want: ${want//$'\n'/ | }"
		echo "# got:  ${got//$'\n'/ | }"
		failed=$((failed + 1))
	fi
}

# has "NAME" "CANDIDATE" WORD...: the candidates include this one.
has()
{
	local name=$1 want=$2
	shift 2
	complete_words "$@"
	n=$((n + 1))
	if grep -qxF -- "$want" <<<"$got"; then
		echo "ok $n - $name"
	else
		echo "not ok $n - $name"
		echo "# words: $*"
		echo "# want among them: $want"
		echo "# got: ${got//$'\n'/ | }"
		failed=$((failed + 1))
	fi
}

nl=$'\n'
commands="mount${nl}umount${nl}stats${nl}report${nl}fsck${nl}gc${nl}push${nl}pull${nl}remote${nl}export${nl}import"

expect 'subcommands' "$commands" pkgcachefs ''
expect 'subcommands by prefix' "push${nl}pull" pkgcachefs pu
expect 'global options' "--help${nl}--version" pkgcachefs -
expect 'mount options' "--store${nl}--remote${nl}-o${nl}-f${nl}-d${nl}--no-adopt${nl}--help" \
	pkgcachefs mount -
expect 'umount options' "--require-push${nl}--help" pkgcachefs umount -
expect 'stats options' "--store${nl}--json${nl}--prometheus${nl}--help" pkgcachefs stats -
expect 'report options' "--store${nl}--json${nl}--markdown${nl}--output${nl}--help" pkgcachefs report -
expect 'fsck options' "--store${nl}--repair${nl}--help" pkgcachefs fsck -
expect 'gc options' "--store${nl}--max-size${nl}--remote${nl}--keep-days${nl}--grace-hours${nl}--help" \
	pkgcachefs gc -
tls="--ca-file${nl}--client-cert${nl}--client-key"
expect 'push options' "--store${nl}--remote${nl}$tls${nl}--help" pkgcachefs push -
expect 'pull options' "--store${nl}--remote${nl}--metadata-only${nl}$tls${nl}--help" pkgcachefs pull -
expect 'remote options' "--store${nl}--clear${nl}$tls${nl}--help" pkgcachefs remote -
expect 'export options' "--store${nl}--since${nl}--help" pkgcachefs export -
expect 'import options' "--store${nl}--help" pkgcachefs import -
expect 'options by prefix' "--grace-hours" pkgcachefs gc --g
expect 'options after other arguments' "--json" pkgcachefs stats --store "$tmp/store" --j

expect '--store takes directories' "$tmp/dir one${nl}$tmp/dir2" pkgcachefs stats --store "$tmp/dir"
expect '--store=DIR, split at =' "$tmp/dir one${nl}$tmp/dir2" pkgcachefs fsck --store = "$tmp/dir"
expect 'mount MOUNTPOINT takes directories' "$tmp/dir one${nl}$tmp/dir2" \
	pkgcachefs mount -o ro "$tmp/dir"
expect 'umount MOUNTPOINT takes directories' "$tmp/dir one${nl}$tmp/dir2" \
	pkgcachefs umount "$tmp/dir"
expect 'export FILE takes files' "$tmp/cache.bundle" pkgcachefs export "$tmp/c"
expect 'export --since takes files (and directories)' "$tmp/delta.bundle${nl}$tmp/dir one${nl}$tmp/dir2" \
	pkgcachefs export --since "$tmp/d"
expect 'import FILE takes files' "$tmp/cache.bundle" pkgcachefs import --store "$tmp/store" "$tmp/c"
expect 'no file for stats' "" pkgcachefs stats "$tmp/"

o="max_size=${nl}commit_interval=${nl}push_interval=${nl}pull_interval=${nl}remote_timeout=${nl}fetch_workers=${nl}fetch_range=${nl}ca_file=${nl}client_cert=${nl}client_key=${nl}no_push${nl}keep_suid${nl}log_level=${nl}metrics_file=${nl}metrics_interval=${nl}spin_us=${nl}allow_other${nl}ro"
expect '-o names' "$o" pkgcachefs mount -o ''
expect '-o names by prefix' "push_interval=${nl}pull_interval=" pkgcachefs mount -o pu
expect '-o after a comma' "allow_other,remote_timeout=${nl}allow_other,ro" pkgcachefs mount -o allow_other,r
# "-o max_size=20G,co": bash hands "max_size" "=" "20G,co"; readline replaces "20G,co".
expect '-o after name=value' "20G,commit_interval=" pkgcachefs mount -o max_size = 20G,co
expect '-o does not repeat a name' "ro,remote_timeout=" pkgcachefs mount -o ro,r

expect '--remote schemes' "file:///${nl}s3://${nl}https://${nl}http://${nl}none" pkgcachefs mount --remote ''
expect '--remote none only for mount' "file:///${nl}s3://${nl}https://${nl}http://" pkgcachefs push --remote ''
expect 'remote URL' "s3://" pkgcachefs remote s
expect 'gc --max-size takes no completion' "" pkgcachefs gc --max-size ''
expect 'unmount is umount' "--require-push${nl}--help" pkgcachefs unmount -

echo "1..$n"
[[ $failed -eq 0 ]]
