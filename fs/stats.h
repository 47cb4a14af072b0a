/* SPDX-License-Identifier: MIT */
/*
 * What `pkgcachefs stats` shows, in three forms (text, JSON, Prometheus text format), and the
 * daemon's side of it: the thread that persists the read counters (STORE/counters) and rewrites
 * the metrics file of `-o metrics_file=PATH`.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "counters.h"
#include "idx.h"

struct vfs;

/* Everything stats prints, gathered once. */
struct stats_report {
	const char *store; /* borrowed */
	bool mounted;
	char remote[1024]; /* "" when none */
	struct idx_stats s;
	struct idx_top_stats *top; /* per root entry, in name order */
	size_t ntop;
	struct counters reads; /* STORE/counters, with this process's own when it is the daemon */
};

/*
 * Fill rep from the index x of the store at dir (a connection of the caller's: the CLI's, or the
 * daemon's metrics thread's own) and the read counters: reads when not NULL (the daemon's own,
 * copied), else STORE/counters. rep is released by stats_report_release, also on failure. 0 or
 * -errno (a damaged counters file is no failure: its counts are left out).
 */
int stats_collect(const char *dir, struct idx *x, bool mounted, const char *remote,
		  const struct counters *reads, struct stats_report *rep);
void stats_report_release(struct stats_report *rep);

void stats_print_text(FILE *f, const struct stats_report *rep);
/* One JSON object on one line; keys in docs/operations.md and pkgcachefs-stats(1). */
void stats_print_json(FILE *f, const struct stats_report *rep);
/* Prometheus text exposition format (version 0.0.4), for node_exporter's textfile collector. */
void stats_print_prometheus(FILE *f, const struct stats_report *rep);

/*
 * The daemon's stats thread: load STORE/counters, then add the vfs's counts and rewrite it every
 * period_ms when they changed; with metrics_file, rewrite that file (atomically: PATH.tmp, then
 * rename) every metrics_s seconds. store, remote and metrics_file outlive the thread. Stop it
 * after the last read (the FUSE loop ended) and before the vfs closes: the stop writes both files
 * a last time, the metrics file saying the store is no longer mounted. 0 or -errno.
 */
int stats_daemon_start(struct vfs *v, const char *store, const char *remote,
		       const char *metrics_file, unsigned metrics_s, unsigned period_ms);
void stats_daemon_stop(void);
