#!/bin/sh
# SPDX-License-Identifier: MIT
# pkgcache-dirs.sh: give the jobs of one user their cache directories on a pkgcachefs mount,
# and print the environment that points pip, uv, npm and Poetry at them.
#
#   pkgcache-dirs.sh [--owner USER[:GROUP]] [--jobs-path PATH] [--format env|toml] DIR
#
# Creates DIR and DIR/pip, DIR/uv, DIR/npm, DIR/pypoetry, owned by USER (default: the caller),
# mode 0755. DIR must be on a pkgcachefs mount (this refuses a bare directory, which is what a
# job would fill if the mount were missing). Prints, for the jobs:
#   PIP_CACHE_DIR=PATH/pip  UV_CACHE_DIR=PATH/uv  UV_LINK_MODE=copy
#   npm_config_cache=PATH/npm  POETRY_CACHE_DIR=PATH/pypoetry
# where PATH is --jobs-path (the directory as the jobs see it, e.g. inside a container) or DIR.
# --format env prints NAME=value lines (a runner's .env, systemd Environment=, a Buildkite
# environment hook with `export`), toml prints a GitLab Runner `environment = [...]` line.
#
# Why one directory per user: pip running as root disables its cache unless the directory is
# owned by root, and a job running as another user cannot write into root's directories. The
# store keeps one copy of a file that several users' caches hold, so the split costs no space.
# The names are the tools' own under ~/.cache (npm's default is ~/.npm), so mounting ~/.cache
# and pointing the variables at DIR give the same tree.
set -eu
owner=$(id -un)
jobs_path=
format=env
usage() { echo "usage: $0 [--owner USER[:GROUP]] [--jobs-path PATH] [--format env|toml] DIR" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--owner) [ $# -ge 2 ] || usage; owner=$2; shift 2 ;;
	--jobs-path) [ $# -ge 2 ] || usage; jobs_path=$2; shift 2 ;;
	--format) [ $# -ge 2 ] || usage; format=$2; shift 2 ;;
	--) shift; break ;;
	-*) usage ;;
	*) break ;;
	esac
done
[ $# = 1 ] || usage
dir=$1
case $format in env|toml) ;; *) usage ;; esac
case $dir in /*) ;; *) echo "$0: DIR must be an absolute path" >&2; exit 2 ;; esac

# The file system DIR is on: that of its nearest existing ancestor.
probe=$dir
while [ ! -e "$probe" ]; do probe=$(dirname "$probe"); done
fstype=$(findmnt -n -o FSTYPE --target "$probe" 2>/dev/null || true)
if [ "$fstype" != fuse.pkgcachefs ]; then
	echo "$0: $dir is not on a pkgcachefs mount (${fstype:-unknown}): mount it first" >&2
	exit 1
fi

group=${owner#*:}
user=${owner%%:*}
[ "$group" != "$owner" ] || group=$(id -gn "$user")
install -d -o "$user" -g "$group" -m 0755 "$dir"
for t in pip uv npm pypoetry; do
	install -d -o "$user" -g "$group" -m 0755 "$dir/$t"
done

p=${jobs_path:-$dir}
set -- "PIP_CACHE_DIR=$p/pip" "UV_CACHE_DIR=$p/uv" "UV_LINK_MODE=copy" \
	"npm_config_cache=$p/npm" "POETRY_CACHE_DIR=$p/pypoetry"
if [ "$format" = env ]; then
	printf '%s\n' "$@"
else
	printf 'environment = ['
	sep=
	for kv; do printf '%s"%s"' "$sep" "$kv"; sep=', '; done
	printf ']\n'
fi
