/* SPDX-License-Identifier: MIT */
/*
 * Namespace sync with a remote: merging what other hosts pushed into the local store (pull),
 * and publishing local changes (push).
 *
 * Remote layout (docs/format.md): "config" (format and chunker parameters), "packs/<sha256>.pack"
 * (immutable packs in the local pack format, named by the SHA-256 of their bytes), "ns/<created
 * as 16 hex>-<sha256>.cat" (catalogs: one per push, and compactions of many), "trace/..." (what
 * a job read) and "gc/..." (packs condemned by remote gc). Every object is immutable and uniquely
 * named, so many hosts can push at once to a plain store with no locking: the namespace is the
 * last-writer-wins merge of all catalogs, which is the same whatever order they are read in.
 *
 * Local state (idx schema v2): rseen lists catalogs already read; rbase holds, per path, the
 * remote's entry as of the last sync (its type, stamp and content signature). A local entry that
 * differs from its base was changed here and is pushed; a base path missing here was deleted here
 * and is pushed as a tombstone. A pull applies a remote entry where the local one still equals
 * the base, and otherwise keeps whichever was written last (catalog.h's cat_lww_cmp).
 *
 * The code lives in index/sync/, one file per feature: config.c (the remote's config and the
 * binding to it), merge.c (fetching catalogs, the winner per path, applying one to the
 * namespace), pull.c, coldload.c (a pull into an empty store, in bulk), snapshot.c (the walk of a
 * snapshot for what changed), push.c, compact.c, rgc.c (remote gc), prefetch.c (recent reads,
 * fetch_all), bundle.c (export, import), with pathmap.c and common.c for what they share. Every
 * query they make is an operation of the index (idx.h: idx_sync.c, idx_bulk.c).
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "fetch.h"
#include "remote.h"
#include "store.h"

/* Catalogs beyond this many in ns/ are compacted into one by the next push. */
#define SYNC_COMPACT_AT 64

typedef void (*sync_progress_fn)(void *data, const char *what, uint64_t done, uint64_t total);

struct sync_options {
	sync_progress_fn progress; /* may be NULL */
	void *progress_data;
	/* Told of each catalog left out because it is damaged, forged (-EBADMSG), or of another
	 * format or chunk size (-EPROTO, -EPROTONOSUPPORT); may be NULL. */
	void (*bad_catalog)(void *data, const char *name, int err);
	unsigned parallel; /* concurrent uploads; 0: 4 */
	/* A pull decodes and merges catalogs in batches of about this many entries, so its memory
	 * stays bounded whatever the remote holds; 0: SYNC_PULL_BATCH_ENTRIES. */
	size_t batch_entries;
};
#define SYNC_PULL_BATCH_ENTRIES 500000

struct sync_report {
	/* pull */
	uint64_t catalogs_read, catalog_bytes;
	uint64_t applied, kept_local; /* remote entries applied; local changes that won */
	uint64_t batches;             /* merges the pull was cut into (batch_entries) */
	/* push */
	uint64_t upserts, tombstones;
	uint64_t chunks_uploaded, packs_uploaded, bytes_uploaded;
	uint64_t packs_present; /* built, and found on the remote already (a rerun) */
	uint64_t catalog_uploaded_bytes;
	uint64_t skipped; /* entries whose data could not be read here: left for the next push */
	/* Entries whose path is longer than IDX_PATH_MAX (the format's bound): never pushed; the
	 * first one's path, cut to fit, names them. */
	uint64_t too_long;
	char too_long_path[160];
	char catalog[160]; /* name of the catalog pushed, "" when nothing changed */
};

/*
 * Trust tiers, the one place they are decided (docs/security.md, "Trust tiers"):
 *  - a trusted store (the default) may push to its remote and be exported as a bundle;
 *  - an untrusted store is one a no_push mount used, with or without a remote: an untrusted job
 *    may have written anything into it, so nothing of it leaves the host again: push
 *    (sync_push) and export (sync_export) refuse it with -EPERM, whoever runs them later;
 *  - a read-only consumer is a trusted or untrusted store on a remote whose credentials cannot
 *    write (the server enforces it; pkgcachefs never needs write access to read).
 * sync_store_untrusted: 1 untrusted, 0 trusted, -errno; lock as for sync_push (NULL when the
 * store is not serving). sync_mark_untrusted: make it so, for good, and commit. 0 or -errno.
 */
int sync_store_untrusted(struct store *st, pthread_mutex_t *lock);
int sync_mark_untrusted(struct store *st);

/*
 * Whether pulls into this store keep the setuid and setgid bits of remote entries: off unless the
 * mount asked (-o keep_suid), cleared otherwise (docs/security.md). Each mount records its choice,
 * and pulls and imports made later without a mount follow it. Commits; the store must not be
 * serving. 0 or -errno.
 */
int sync_set_keep_suid(struct store *st, bool keep);

/*
 * Check the remote's config against the store's chunker parameters. With SYNC_REMOTE_CREATE, a
 * new remote gets its config (format, chunk sizes and a random id); without, a new remote is
 * left alone (a read-only consumer). With SYNC_REMOTE_BIND (the store locked), the store's sync
 * state is tied to this remote: moving to another one resets it, or fails with -EXDEV while
 * data of the old one is only there. 0; -EPROTO on a mismatch or a newer format (err says
 * what); -errno for the remote.
 */
#define SYNC_REMOTE_CREATE 1u
#define SYNC_REMOTE_BIND 2u
int sync_check_remote(struct store *st, struct remote *rem, unsigned flags, char *err,
		      size_t errlen);

/*
 * Merge every catalog not yet seen into the store's namespace. The store must not be serving
 * (before the vfs opens, or with the store locked by the CLI). 0 or -errno (then nothing is
 * merged: the next attempt starts over).
 */
int sync_pull(struct store *st, struct remote *rem, const struct sync_options *o,
	      struct sync_report *ret);

/*
 * A merge into a serving store (the daemon's pull): the caller's hooks, called with the lock
 * held. changed: name in directory parent was made, replaced or removed (ino: the inode whose
 * content and attributes were replaced in place, 0 when none); in_use: 2 when ino is being
 * written here (the local write wins), 1 when it is open (its name gets a new inode, the open
 * one keeps what it opened), 0 otherwise. batch_done: after each batch, with the lock released
 * (the place to tell the kernel). lock_wanted, called with or without the lock: whether a request
 * is waiting for it; the batch in progress then ends early (after SYNC_LIVE_MIN_BATCH entries),
 * and the next one waits until the request got its turn. May be NULL.
 */
struct sync_live {
	void *data;
	void (*changed)(void *data, uint64_t parent, const char *name, uint64_t ino);
	int (*in_use)(void *data, uint64_t ino);
	void (*batch_done)(void *data);
	bool (*lock_wanted)(void *data);
};

/*
 * sync_pull for a serving store: lists and downloads the catalogs with lock released, then applies
 * the winners in short batches under lock inside the vfs's transaction (the vfs commits it), so
 * that no request waits for more than a batch. A merge interrupted half-way is completed by the
 * next one (applied entries are recorded in the base as they go). 0 or -errno.
 * SYNC_LIVE_BATCH entries take 1-1.5 ms to apply (docs/benchmarks.md, "Live merge"); a batch
 * that a waiting request cuts short has at least SYNC_LIVE_MIN_BATCH (0.2-0.4 ms), so that a
 * busy mount still merges.
 */
#define SYNC_LIVE_BATCH 64
#define SYNC_LIVE_MIN_BATCH 16
int sync_live_pull(struct store *st, struct remote *rem, pthread_mutex_t *lock,
		   const struct sync_live *live, const struct sync_options *o,
		   struct sync_report *ret);

/*
 * Publish local changes: upload the chunks the remote lacks, in packs, then one catalog with the
 * changed entries, then the access trace. lock, when not NULL, is the mutex that guards the
 * store's index and packs while the store is serving (the vfs lock); push reads a snapshot of the
 * index through its own connection (idx_open_reader) and takes lock only around its short uses
 * of the store's index: the meta values it reads, the catalogs seen and condemned packs it
 * learns before the walk, the commit that the snapshot must see, recording what it uploaded, and
 * forgetting the pushed trace; never during the walk, the packing or a transfer. The caller
 * keeps chunks from being reclaimed meanwhile (vfs holds its gc lock). 0 or -errno; an
 * interrupted push leaves only unreferenced packs, and the next push completes. -EPERM for a
 * store that an untrusted job used (meta "untrusted", set by a no_push mount).
 */
int sync_push(struct store *st, struct remote *rem, pthread_mutex_t *lock,
	      const struct sync_options *o, struct sync_report *ret);

/*
 * Fetch the data of every file whose chunks are only on the remote, verify it and keep it here
 * (the store must not be serving). progress, when given, is told bytes fetched of the total.
 * *ret gets the fetcher's counters. 0 or -errno (failures to fetch are counted, not fatal).
 */
int sync_fetch_all(struct store *st, struct remote *rem,
		   void (*progress)(void *data, uint64_t done, uint64_t total), void *data,
		   struct fetcher_stats *ret);

/*
 * Replace every catalog in ns/ by one snapshot holding their last-writer-wins merge (tombstones
 * older than 30 days dropped), then delete them. Safe while others push: a catalog written
 * meanwhile is not deleted, and readers that miss a deleted one find its content in the
 * snapshot. 0 or -errno.
 */
int sync_compact(struct store *st, struct remote *rem, const struct sync_options *o);

struct sync_gc_report {
	uint64_t catalogs;
	uint64_t files_expired;   /* unused for keep_s: tombstoned */
	uint64_t packs_condemned; /* unused now: deleted by a gc after the grace period */
	uint64_t packs_deleted, bytes_deleted;
	uint64_t traces_deleted;
};

/*
 * Remote gc. With keep_s > 0, files neither written nor read (per the access traces) for keep_s
 * seconds leave the namespace. Packs no live entry uses are condemned (gc/c... markers); packs
 * condemned more than grace_s ago and still unused are deleted and listed for good (gc/d...),
 * so that no host dedups against them again. Pushers treat condemned packs as absent and
 * upload their chunks anew, so a push running at the same time is never broken as long as it
 * takes less than grace_s. Ends with a compaction. 0 or -errno.
 */
int sync_gc(struct store *st, struct remote *rem, int64_t keep_s, int64_t grace_s,
	    const struct sync_options *o, struct sync_gc_report *ret);

/*
 * Bundles, for CI systems whose cache is one archive per key: the whole namespace and the data
 * of the store as one file (out, written to a temp name and renamed), or with base (an earlier
 * bundle) only the data that base and its own bases lack. Files whose data is only on a remote
 * are left out (counted in ret->skipped): pull first. progress, when given, is told entries
 * done of the total. Layout: docs/format.md.
 */
int sync_export(struct store *st, const char *base, const char *out,
		void (*progress)(void *data, uint64_t done, uint64_t total), void *data,
		struct sync_report *ret);
/*
 * Import a bundle into the store (not serving): verify and store its chunks, then add its
 * entries, keeping local changes newer than the bundle's. -ENOENT (nothing changed) when it was
 * exported against a base not imported here; -EBADMSG when it is damaged or truncated.
 */
int sync_import(struct store *st, const char *file,
		void (*progress)(void *data, uint64_t done, uint64_t total), void *data,
		struct sync_report *ret);

/*
 * Inodes of the files the most recent jobs read (their traces, newest first, at most max_age_s
 * old), for prefetch at mount. *ret_inos is malloc'ed, freed by the caller.
 */
int sync_recent_reads(struct store *st, struct remote *rem, int64_t max_age_s, uint64_t **ret_inos,
		      size_t *ret_n);
