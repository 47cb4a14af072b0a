/* SPDX-License-Identifier: MIT */
/*
 * `pkgcachefs report`: what one mount (a CI job) did, per top-level directory (one per tool):
 * reads served locally and from the remote, the time readers waited on the remote, what was
 * written new, and what the unmount pushed; as text, JSON or Markdown (for
 * $GITHUB_STEP_SUMMARY or a GitLab job artifact).
 *
 * The daemon's stats thread (stats.c) records where the session started and how it ended, in
 * two files of the store that this module owns:
 *
 *   STORE/session-counters   the read counters at mount (the STORE/counters format)
 *   STORE/session            text:
 *       pkgcachefs-session 1
 *       start <unix seconds>
 *       top <files> <logical bytes> <unique bytes> <name>      one per top-level directory
 *       end <unix seconds> <ns readers waited on the remote>   appended at the stop
 *   (names encoded as in STORE/counters)
 *
 * The report subtracts them from what the store holds now (STORE/counters, the index) and adds
 * what the daemon wrote at exit (STORE/remote-stats, push-failed), counting those
 * only when they are newer than the session's start. Both files are untrusted input.
 */
#pragma once

#include "counters.h"

struct vfs;
struct idx;

/* The daemon, at mount: base is what STORE/counters held, x a read connection to the index.
 * 0 or -errno (the caller logs; a mount goes on without a report). */
int report_session_begin(const char *store, struct idx *x, const struct counters *base);
/* The daemon, once the last read is done: the end line. */
void report_session_end(const char *store, struct vfs *v);

/* `pkgcachefs report [--store DIR] [--json | --markdown] [--output FILE]`: exit status. */
int cli_report(int argc, char **argv);
