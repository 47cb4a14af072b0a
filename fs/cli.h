/* SPDX-License-Identifier: MIT */
/* The subcommands other than mount, and helpers the mount daemon shares with them. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

int cli_umount(int argc, char **argv);
int cli_stats(int argc, char **argv);
int cli_fsck(int argc, char **argv);
int cli_gc(int argc, char **argv);

#include <sys/types.h>

/*
 * Start importing the tree open as underfd (a directory the mount now hides) into the mount at
 * mountpoint, then, once all of it is durable, remove the originals. The copy runs in a child,
 * whose pid is returned (or -errno); it exits 0 when everything was imported and synced, else an
 * errno.
 */
pid_t cli_adopt_start(int underfd, const char *mountpoint);

/* Record the daemon's exit status in the store, for `pkgcachefs umount` to report. */
void cli_write_exit_status(const char *store, int status);

struct gc_report;
/* The daemon's side of `pkgcachefs gc` on a mounted store: the requested size (0: none), and
 * the outcome, which the command waits for. */
int cli_read_gc_request(const char *store, uint64_t *ret_max);
void cli_write_gc_result(const char *store, int r, const struct gc_report *rep);

/* Whether a pkgcachefs mount sits exactly on path. */
bool cli_is_pkgcachefs_mount(const char *path);
