/* SPDX-License-Identifier: MIT */
/*
 * The fetcher: brings chunks that are only on the remote into the local store, on demand and
 * ahead of demand.
 *
 * A read of a chunk that is not here fetches its entry (header and stored bytes) from the
 * remote pack with a range request, checks it against the chunk's key and the writer's SHA-256
 * digest, appends it to the local store and records the local location, so the next read is
 * local. Fetches are single-flight per chunk: a reader that needs a chunk already on its way
 * waits for it instead of fetching it again.
 *
 * Prefetch: worker threads fetch whole files ahead of their readers. A file's chunks were pushed
 * together, so they sit next to each other in one remote pack: adjacent entries are coalesced
 * into one range request of at most range_max bytes, and several ranges are in flight at once,
 * one per worker. A range lands whole: a reader that needs one of its chunks waits for all of it,
 * which is why range_max bounds it (larger ranges cost fewer round trips, smaller ones land
 * sooner). Files being opened go ahead of the rest (fetcher_prefetch_first).
 *
 * Failing fast: when the remote cannot be reached, reads of remote-only data fail with -EIO at
 * once for a few seconds instead of each waiting out the timeout (pip treats a failed cache read
 * as a miss). Nothing fetched is trusted: damaged or forged data is -EIO, never wrong bytes.
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idx.h"
#include "remote.h"
#include "store.h"

/* Largest coalesced range request, by default and at most; the smallest one may be set to. */
#define FETCH_RANGE_DEFAULT (8u << 20)
#define FETCH_RANGE_MAX (64u << 20)
#define FETCH_RANGE_MIN (64u << 10)
/* Prefetch workers, by default and at most (each holds one connection while it fetches). */
#define FETCH_WORKERS_DEFAULT 16
#define FETCH_WORKERS_MAX 32

struct fetcher;

struct fetcher_options {
	unsigned workers;      /* prefetch threads, at most FETCH_WORKERS_MAX; 0: the default */
	uint32_t range_max;    /* largest coalesced range, FETCH_RANGE_MIN..MAX; 0: the default */
	unsigned fail_fast_ms; /* after the remote could not be reached; 0: 5000 */
	/* Told of each failure, with a line for the log; called with no lock held. */
	void (*report)(void *data, const char *msg);
	void *data;
};

struct fetcher_stats {
	uint64_t chunks;     /* chunks fetched and verified */
	uint64_t bytes;      /* their raw bytes */
	uint64_t wire_bytes; /* bytes received for them */
	uint64_t failures;   /* reads that failed: unreachable, missing, damaged or forged */
	uint64_t local_hits; /* reads of chunks another fetch had just brought */
	uint64_t wait_ns;    /* time readers spent in fetcher_read (waiting on the remote) */
};

/*
 * Start a fetcher for store st and remote r (both outlive it). lock is the writer lock, the mutex
 * the caller holds around every use of the store's index and pack writer (the vfs's v->lock; see
 * docs/architecture.md, "Locks"): the fetcher takes it only to look up and record locations, and
 * never while holding its own. *ret is freed by fetcher_free.
 */
int fetcher_new(struct store *st, struct remote *r, pthread_mutex_t *lock,
		const struct fetcher_options *o, struct fetcher **ret);
/* Stop the workers, dropping queued prefetches. Accepts NULL. */
void fetcher_free(struct fetcher *f);

/*
 * Read the chunk of extent e (e->chunk != 0, the caller saw e->pack == 0) into buf (e->len
 * bytes): locally if another fetch has brought it meanwhile, else from the remote. Must be called
 * without the writer lock held. 0 (fetched now, or found brought meanwhile: stats tell which)
 * or -EIO (with the reason reported).
 */
int fetcher_read(struct fetcher *f, const struct idx_extent *e, void *buf);

/* Queue a background fetch of every chunk of e[0..n) that is only on the remote. Never blocks
 * on the network; may be called with the writer lock held. */
void fetcher_prefetch(struct fetcher *f, const struct idx_extent *e, size_t n);
/* The same, ahead of the jobs fetcher_prefetch queued (and behind those of earlier calls of
 * this one): for a file being opened now, whose reader would else wait behind the whole
 * mount-time prefetch of the access trace. */
void fetcher_prefetch_first(struct fetcher *f, const struct idx_extent *e, size_t n);

/* True when fewer than n prefetch jobs are queued or running. */
bool fetcher_idle_below(struct fetcher *f, size_t n);

/* Wait until every queued prefetch has finished. */
void fetcher_drain(struct fetcher *f);

void fetcher_get_stats(struct fetcher *f, struct fetcher_stats *ret);
