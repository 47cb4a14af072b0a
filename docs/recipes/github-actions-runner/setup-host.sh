#!/bin/sh
# SPDX-License-Identifier: MIT
# setup-host.sh: put a self-hosted GitHub Actions runner host on pkgcachefs
# (docs/recipes/github-actions-runner.md). Run as root, once, after `./svc.sh install`:
#
#   setup-host.sh RUNNER_DIR RUNNER_USER
#
#  1. /etc/pkgcachefs/var-cache-pkg.conf for the shipped template unit pkgcachefs@.service
#     (REMOTE, OPTIONS from the environment: see below; the store is the template's default), and start
#     pkgcachefs@var-cache-pkg.service, which mounts /var/cache/pkg;
#  2. a drop-in that makes the runner's service (named in RUNNER_DIR/.service, which svc.sh
#     writes) require the mount and start after it;
#  3. /var/cache/pkg/RUNNER_USER/{pip,uv,npm,pypoetry} for jobs on the host, and
#     /var/cache/pkg/root/... for container jobs (which run as root), with pkgcache-dirs.sh;
#  4. the host jobs' variables in RUNNER_DIR/.env (between "# pkgcachefs" markers, replaced
#     on a rerun), then a restart of the runner so it reads them.
#
# Environment: MOUNTPOINT (/var/cache/pkg), REMOTE (empty: keep the store's default remote),
# OPTIONS (allow_other,max_size=50G; allow_other is needed, jobs do not run as root),
# SYSTEMCTL (systemctl), DESTDIR (prefix for the files under /etc; for tests).
set -eu
[ $# = 2 ] || { echo "usage: $0 RUNNER_DIR RUNNER_USER" >&2; exit 2; }
runner_dir=$1 runner_user=$2
here=$(cd "$(dirname "$0")" && pwd)
mp=${MOUNTPOINT:-/var/cache/pkg}
systemctl=${SYSTEMCTL:-systemctl}
destdir=${DESTDIR:-}
inst=$(systemd-escape --path "$mp")
[ -f "$runner_dir/.service" ] || { echo "$0: no $runner_dir/.service: run ./svc.sh install first" >&2; exit 1; }
svc=$(cat "$runner_dir/.service")

mkdir -p "$destdir/etc/pkgcachefs"
cat >"$destdir/etc/pkgcachefs/$inst.conf" <<EOT
# pkgcachefs@$inst.service: written by $(basename "$0"). The store is the template's
# default, /var/lib/pkgcachefs/<instance>.
REMOTE=${REMOTE:-}
OPTIONS=${OPTIONS:-allow_other,max_size=50G}
EOT
mkdir -p "$destdir/etc/systemd/system/$svc.d"
inst_sed=$(printf '%s' "$inst" | sed 's/[\\/&]/\\&/g')	# systemd-escape makes \x2d
sed "s/@INSTANCE@/$inst_sed/g" "$here/runner-pkgcache.conf" >"$destdir/etc/systemd/system/$svc.d/pkgcache.conf"
$systemctl daemon-reload
$systemctl enable --now "pkgcachefs@$inst.service"

env_lines=$("$here/../pkgcache-dirs.sh" --owner "$runner_user" "$mp/$runner_user")
"$here/../pkgcache-dirs.sh" --owner root "$mp/root" >/dev/null
touch "$runner_dir/.env"
sed '/^# pkgcachefs begin$/,/^# pkgcachefs end$/d' "$runner_dir/.env" >"$runner_dir/.env.new"
{ echo '# pkgcachefs begin'; echo "$env_lines"; echo '# pkgcachefs end'; } >>"$runner_dir/.env.new"
chown --reference="$runner_dir" "$runner_dir/.env.new"
mv "$runner_dir/.env.new" "$runner_dir/.env"
$systemctl restart "$svc"
echo "$svc now starts after pkgcachefs@$inst.service; jobs get:"
echo "$env_lines" | sed 's/^/  /'
