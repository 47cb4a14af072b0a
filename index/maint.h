/* SPDX-License-Identifier: MIT */
/*
 * Store maintenance: fsck (check the index against the packs, and repair what can be repaired
 * without dropping intact data) and gc (reclaim unreferenced chunks by deleting or rewriting
 * packs, and evict least-recently-used files down to a size).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "store.h"

struct fsck_report {
	uint64_t inodes, chunks, bytes_checked;
	uint64_t bad_chunks;       /* unreadable, or content not matching key or digest */
	uint64_t missing_packs;    /* named by the index, absent on disk */
	uint64_t bad_refs;         /* chunks.refs not equal to the extents naming it */
	uint64_t pinned;           /* extra references held by files being written (not damage) */
	uint64_t dangling_extents; /* extents naming no chunk */
	uint64_t bad_extents;      /* a file's extents not covering exactly its size */
	uint64_t bad_dentries;     /* entries naming no inode */
	uint64_t bad_nlinks;       /* link counts not matching the entries */
	uint64_t orphans;          /* inodes with no name (left by a crash) */
	uint64_t leaked_packs;     /* pack files the index does not know (left by a crash) */
	uint64_t repaired;
	uint64_t unrepaired;
};

/* Problems found, and not repaired, count as damage. */
bool fsck_clean(const struct fsck_report *r);

/*
 * Check the store. With repair (the store must be locked by the caller), fix reference counts,
 * link counts, orphans, leaked packs and dangling entries; damaged chunks cannot be repaired
 * and are reported with the files that use them. live is true when a daemon has the store
 * mounted: then the check reads one consistent snapshot and skips the leaked-pack check.
 * Findings are printed to out, one line each. 0 or -errno (an error of the check itself).
 */
/* Told how far a long check has got (bytes), for a progress display; may be NULL. */
typedef void (*maint_progress_fn)(void *data, uint64_t done, uint64_t total);

int maint_fsck(struct store *st, bool repair, bool live, FILE *out, struct fsck_report *ret,
	       maint_progress_fn progress, void *progress_data);

/*
 * Delete pack files the index does not know: packs started by a transaction that a crash rolled
 * back (their chunks were never committed). Only with the store locked and before anything
 * appends to it. Returns how many, or -errno.
 */
int maint_remove_leaked_packs(struct store *st);

struct gc_report {
	uint64_t evicted_files, evicted_bytes;
	uint64_t chunks_dropped;
	uint64_t packs_deleted, packs_rewritten;
	uint64_t bytes_before, bytes_after; /* pack bytes on disk */
};

/* How a mounted daemon takes part in its own gc. */
struct gc_hooks {
	/* Files that must not be evicted (open ones). */
	bool (*skip)(void *data, uint64_t ino);
	/* Called for each evicted name, so the kernel's cache can forget it. */
	void (*evicted)(void *data, uint64_t parent, const char *name);
	void *data;
	/* Reference counts include pins of files being written: do not recount them. */
	bool live;
	/* The store caches a remote: eviction drops local copies of pushed data, keeping names. */
	bool remote_backed;
};

/*
 * Collect garbage; the caller holds the store lock (and, in a daemon, excludes every other
 * user of the index). Counts are first recounted from the extents (unless hooks->live), so
 * whatever a crash leaked is reclaimed. With max_size > 0, the least recently used files are
 * evicted until the live data fits in max_size bytes. Packs that are more than half dead are
 * rewritten, fully dead ones deleted. hooks may be NULL. 0 or -errno.
 */
int maint_gc(struct store *st, uint64_t max_size, FILE *progress, const struct gc_hooks *hooks,
	     struct gc_report *ret);
