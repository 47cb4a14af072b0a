#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The systemd units in dist/systemd, without systemd as PID 1:
#  - `systemd-analyze verify` loads pkgcachefs@.service (an instance of it) and the .mount
#    example, with the man pages on MANPATH so Documentation= is checked, and says nothing;
#  - the service's command lines run by hand as systemd would run them: Environment= then each
#    EnvironmentFile= (a leading '-': optional), specifiers %i %I %f %%, ${VAR} as one word and
#    $VAR split into zero or more words, a clean environment; ExecStartPre=, ExecStart= (it must
#    return with the mount ready and the daemon the one process left, as Type=forking needs),
#    ExecStop=. The only liberty: /etc/pkgcachefs is a temp dir. It checks that a start mounts,
#    the credentials file reaches the daemon, a stop pushes to a file:// remote and unmounts,
#    REMOTE= empty keeps the store's remote, and that when ExecStop fails (busy) systemd's
#    SIGTERM still unmounts, pushes and syncs.
# The run needs root, /dev/fuse and fusermount3, and is skipped without them. Prints TAP.
#   tests/dist/unit.sh BUILT-UNIT MOUNT-EXAMPLE MAN-DIR PKGCACHEFS
# BUILT-UNIT is pkgcachefs@.service configured with the build directory's pkgcachefs.
set -u
unit=${1:?usage: unit.sh BUILT-UNIT MOUNT-EXAMPLE MAN-DIR PKGCACHEFS}
example=${2:?}
mandir=${3:?}
prog=${4:?}

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); echo "not ok $n - $1"; failed=$((failed + 1)); }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
check()
{
	local name=$1
	shift
	if "$@"; then ok "$name"; else notok "$name"; fi
}
finish()
{
	echo "1..$n"
	[[ $failed -eq 0 ]]
	exit
}

tmp=$(mktemp -d)
mnt=$tmp/mnt/pip
cleanup()
{
	local pid
	if grep -q " $mnt fuse.pkgcachefs " /proc/self/mounts 2>/dev/null; then
		fusermount3 -u -z "$mnt" 2>/dev/null
	fi
	pid=$(cat "$tmp/store/daemon.pid" 2>/dev/null)
	if [[ -n $pid ]] && grep -q pkgcachefs "/proc/$pid/cmdline" 2>/dev/null; then
		kill -9 "$pid" 2>/dev/null
	fi
	[[ -n ${holder:-} ]] && kill "$holder" 2>/dev/null
	grep -q " $tmp/" /proc/self/mounts || rm -rf "$tmp"
}
trap cleanup EXIT

# ---- systemd-analyze verify ----

if command -v systemd-analyze >/dev/null; then
	mkdir -p "$tmp/units" "$tmp/man/man1"
	cp "$unit" "$tmp/units/pkgcachefs@.service"
	cp "$example" "$tmp/units/var-cache-pkg.mount"
	cp "$mandir"/*.1 "$tmp/man/man1/"
	out=$(cd "$tmp/units" && MANPATH=$tmp/man systemd-analyze verify \
		./pkgcachefs@var-cache-pip.service ./var-cache-pkg.mount 2>&1)
	rc=$?
	if [[ $rc -eq 0 && -z $out ]]; then
		ok 'systemd-analyze verify: no complaint'
	else
		notok 'systemd-analyze verify: no complaint'
		echo "# ${out//$'\n'/$'\n# '}"
	fi
else
	skip 'systemd-analyze verify' 'no systemd-analyze (Debian: systemd)'
fi

# ---- the command lines, by hand ----

why=
[[ $(id -u) -eq 0 ]] || why='not root'
[[ -z $why && -c /dev/fuse ]] || why=${why:-'no /dev/fuse'}
[[ -n $why ]] || command -v fusermount3 >/dev/null || why='no fusermount3'
[[ -n $why ]] || command -v systemd-escape >/dev/null || why='no systemd-escape'
if [[ -n $why ]]; then
	skip 'the unit run by hand' "$why"
	finish
fi

instance=$(systemd-escape --path "$mnt")
etc=$tmp/etc
mkdir -p "$etc" "$tmp/remote"

# The [Service] settings, specifiers expanded, /etc/pkgcachefs moved to the temp dir.
service=$(sed -n '/^\[Service\]/,/^\[/p' "$unit" | grep -v '^[#;[]' |
	sed -e "s|%i|$instance|g" -e "s|%I|${mnt#/}|g" -e "s|%f|$mnt|g" -e 's|%%|%|g' \
		-e "s|/etc/pkgcachefs/|$etc/|g")
setting() { sed -n "s/^$1=//p" <<<"$service"; }

check 'the unit is Type=forking' test "$(setting Type)" = forking

declare -A env
load_env()
{
	local line key value file
	env=([PATH]=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
	for line in $(setting Environment); do
		env[${line%%=*}]=${line#*=}
	done
	while read -r file; do
		[[ -n $file ]] || continue
		if [[ $file == -* ]]; then
			file=${file#-}
			[[ -r $file ]] || continue
		fi
		while IFS= read -r line || [[ -n $line ]]; do
			line=${line#"${line%%[![:space:]]*}"}
			[[ -z $line || $line == [#\;]* || $line != *=* ]] && continue
			key=${line%%=*}
			value=${line#*=}
			[[ $value == \"*\" || $value == \'*\' ]] && value=${value:1:-1}
			env[$key]=$value
		done <"$file"
	done <<<"$(setting EnvironmentFile)"
}

# run_exec KEY: run every KEY= command line, in order, as systemd would; stops at the first
# that fails (unless it is prefixed with '-'), and returns its status.
run_exec()
{
	local line word name ignore rc
	local -a argv envv
	while IFS= read -r line; do
		[[ -n $line ]] || continue
		ignore=0
		[[ $line == -* ]] && ignore=1 && line=${line#-}
		argv=()
		for word in $line; do
			if [[ $word =~ ^\$([A-Za-z_][A-Za-z0-9_]*)$ ]]; then
				# shellcheck disable=SC2206
				argv+=(${env[${BASH_REMATCH[1]}]:-})
			else
				while [[ $word =~ \$\{([A-Za-z_][A-Za-z0-9_]*)\} ]]; do
					name=${BASH_REMATCH[1]}
					word=${word//\$\{$name\}/${env[$name]:-}}
				done
				argv+=("$word")
			fi
		done
		envv=()
		for name in "${!env[@]}"; do
			envv+=("$name=${env[$name]}")
		done
		echo "# $1: ${argv[*]}"
		env -i "${envv[@]}" "${argv[@]}" </dev/null >"$tmp/out" 2>&1
		rc=$?
		sed 's/^/#   /' "$tmp/out"
		if [[ $rc -ne 0 && $ignore -eq 0 ]]; then
			return $rc
		fi
	done <<<"$(setting "$1")"
	return 0
}

mounted() { grep -q " $mnt fuse.pkgcachefs " /proc/self/mounts; }
daemon_pid() { cat "$tmp/store/daemon.pid" 2>/dev/null; }
alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }

# Start, as systemd does: ExecStartPre=, then ExecStart=, which must return with the mount ready.
start()
{
	load_env
	run_exec ExecStartPre || return 1
	run_exec ExecStart || return 1
}

cat >"$etc/$instance.conf" <<EOF
# a comment, and quotes as systemd takes them
STORE=$tmp/store
REMOTE="file://$tmp/remote"
OPTIONS=allow_other,max_size=1G,push_interval=0
EOF
printf 'AWS_ACCESS_KEY_ID=AKIDEXAMPLE\nAWS_SECRET_ACCESS_KEY=secret\n' >"$etc/$instance.credentials"
chmod 600 "$etc/$instance.credentials"

check 'start: ExecStartPre and ExecStart succeed' start
check 'start: the mount is there when ExecStart returns' mounted
pid=$(daemon_pid)
check 'start: the daemon is alive, and is not the ExecStart process' alive "$pid"
check 'start: the daemon has no child (GuessMainPID finds it)' \
	test -z "$(ps -o pid= --ppid "$pid" 2>/dev/null)"
check 'start: the credentials file reached the daemon' \
	grep -qz '^AWS_ACCESS_KEY_ID=AKIDEXAMPLE$' "/proc/$pid/environ"
check 'start: REMOTE= became the store'"'"'s remote' \
	grep -q "^remote = file://$tmp/remote\$" "$tmp/store/config"

head -c 300000 /dev/urandom >"$tmp/wheel"
cp "$tmp/wheel" "$mnt/wheel.whl"
check 'stop: ExecStop succeeds' run_exec ExecStop
check 'stop: unmounted' eval '! mounted'
# umount returns once the daemon has released the store; it exits a moment later (what is left
# after ExecStop, systemd would SIGTERM).
for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
check 'stop: the daemon is gone' eval '! alive "$pid"'
check 'stop: the daemon exited 0' test "$(cat "$tmp/store/exit-status" 2>/dev/null)" = 0
stats=$("$prog" stats --store "$tmp/store" --json)
check 'stop: everything was pushed' grep -q '"unpushed_bytes": 0}' <<<"$stats"
"$prog" pull --store "$tmp/other" --remote "file://$tmp/remote" >/dev/null 2>&1
mkdir -p "$tmp/mnt/other"
"$prog" mount --store "$tmp/other" --remote none "$tmp/mnt/other" 2>/dev/null
check 'stop: another store pulls the file from the remote' cmp -s "$tmp/wheel" "$tmp/mnt/other/wheel.whl"
"$prog" umount "$tmp/mnt/other" 2>/dev/null

# REMOTE= empty keeps what the store has; OPTIONS= empty works.
sed -i -e 's/^REMOTE=.*/REMOTE=/' -e 's/^OPTIONS=.*/OPTIONS=/' "$etc/$instance.conf"
check 'restart with REMOTE= and OPTIONS= empty: starts' start
check 'restart: the store keeps its remote' grep -q "^remote = file://$tmp/remote\$" "$tmp/store/config"
check 'restart: the file is there' cmp -s "$tmp/wheel" "$mnt/wheel.whl"

# ExecStop fails while a process has the mount busy; then systemd sends SIGTERM.
echo more >"$mnt/late.txt"
(cd "$mnt" && exec sleep 600) &
holder=$!
sleep 0.5
pid=$(daemon_pid)
check 'busy: ExecStop fails' eval '! run_exec ExecStop'
check 'busy: still mounted' mounted
kill -TERM "$pid"
for _ in $(seq 300); do alive "$pid" || break; sleep 0.1; done
check 'busy: SIGTERM stops the daemon' eval '! alive "$pid"'
check 'busy: and unmounts' eval '! mounted'
check 'busy: its exit status is 0' test "$(cat "$tmp/store/exit-status" 2>/dev/null)" = 0
stats=$("$prog" stats --store "$tmp/store" --json)
check 'busy: the late file was pushed too' grep -q '"unpushed_bytes": 0}' <<<"$stats"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
holder=

finish
