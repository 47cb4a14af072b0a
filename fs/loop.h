/* SPDX-License-Identifier: MIT */
#ifndef PKGCACHEFS_LOOP_H
#define PKGCACHEFS_LOOP_H

#include <stdint.h>

#include <fuse_lowlevel.h>

/* What the loop did, for $PKGCACHEFS_FUSE_OPS. */
struct loop_stats {
	uint64_t spun;      /* requests found by polling after a reply */
	uint64_t blocked;   /* requests waited for in read(2) */
	uint64_t handovers; /* the device handed to another thread: a request was waiting */
	uint64_t rescues;   /* ... or the serving thread had been at one request too long */
	uint64_t threads;   /* the most threads the loop ran at once */
};

/*
 * Serve se's requests until it exits (unmount, a signal, fuse_session_exit), with up to
 * max_threads threads, polling up to spin_us µs after each reply (0: never). 0 or -errno.
 */
int loop_run(struct fuse_session *se, unsigned max_threads, unsigned spin_us,
	     struct loop_stats *ret_stats);

#endif
