/* SPDX-License-Identifier: MIT */
/*
 * The vfs's own header, for index/vfs*.c only: the vfs object, its per-inode nodes, open files
 * and streams, and the steps one of its files calls in another.
 *
 *   vfs.c         the object: open/close, the node table, read counters, transactions, the
 *                 commit thread, the remote glue (fetcher, push, prefetch)
 *   vfs_ns.c      names and attributes: lookup, create, link, unlink, rename, setattr,
 *                 readdir, statfs, xattrs
 *   vfs_io.c      file content: storing chunks as extents, reading extents, open files and
 *                 their read/write/flush/release
 *   vfs_stream.c  the streaming writer (a file written front to back from empty) and its
 *                 hashing threads
 *   vfs_stage.c   staging files (a sparse scratch copy of a file being changed elsewhere than
 *                 at its end), their commit, and truncation
 *   vfs_gc.c      gc inside the daemon: eviction to max_size, requested gc, ENOSPC
 *
 * Locks. Every field shared between threads names the lock that protects it; the locks, their
 * order and the threads that take them are in one table, docs/architecture.md, "Locks". In
 * short, always in this order: v->gc_lock (rwlock), node->rw (rwlock), f->cache_lock, v->lock
 * (mutex; "the writer lock": the index, the pack writer, the node table), then one of v->hq_lock,
 * the fetcher's own mutex or v->sync_lock, never two of those at once (hq_lock and sync_lock are
 * in practice taken with neither f->cache_lock nor v->lock held). Nobody takes node->rw while
 * holding v->lock. Each function here says which of them its caller holds.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "chunker.h"
#include "counters.h"
#include "fetch.h"
#include "hash.h"
#include "idx.h"
#include "vfs.h"

#define NODE_BUCKETS_MIN 1024
#define NAME_MAX_LEN 255
#define XATTR_VALUE_MAX 65536
#define COMMIT_READ_SIZE (4u << 20)
/* Top-level directories counted apart; reads of any further ones count under CTR_OTHER. */
#define VFS_TOPS_MAX 256
/* Bytes a stream may hold while its chunks cannot be stored before writes fail too. */
#define STREAM_BACKLOG_MAX (64u << 20)
/* Chunks of one stream in the hashing threads' hands at once. */
#define STREAM_INFLIGHT_MAX 64
#define HASHERS 2

/* A growing array of extents, in file order. Owned by whoever holds it. */
struct ext_vec {
	struct idx_extent *e;
	size_t n, cap;
};

/* A chunk cut from a stream, hashed and stored by a hashing thread. */
struct hash_job {
	struct hash_job *next; /* the queue; v->hq_lock */
	uint8_t *data;         /* owned copy of the chunk */
	struct idx_extent e;   /* off and len in; chunk, key, pack, loc out (under v->lock) */
	int status;            /* v->hq_lock */
	bool done;             /* v->hq_lock */
};

/*
 * A file written from empty by sequential writes (the common case: pip, npm and uv write a new
 * temp file front to back) is chunked as the data arrives, with no staging file: chunks are
 * stored and pinned as they are cut, and at flush the extents are written in one go. Any other
 * access (a write elsewhere, a read, a truncate) spills the stream into a staging file first.
 * All of it: its node's rw held for writing (the jobs' results: see struct hash_job).
 */
struct stream {
	struct hash_job **jobs; /* cut, not yet collected into ev, in file order */
	size_t njobs, capjobs;
	struct chunker ch;
	uint8_t *buf; /* bytes since the last cut */
	size_t len, cap, scanned;
	uint64_t base;     /* file offset of buf[0] */
	struct ext_vec ev; /* chunks emitted so far, each pinned; gc rewrites locations (v->lock) */
	int error;         /* the last failure to store a chunk, retried by flush */
};

/*
 * A node exists for every inode the kernel holds a lookup reference on or has open. While a
 * node is staged (a stream or a staging file), its size, mtime and ctime in memory override
 * the index's.
 */
struct vnode {
	uint64_t ino;
	struct vnode *next;   /* hash chain; v->lock */
	uint64_t nlookup;     /* v->lock */
	unsigned opens;       /* v->lock */
	unsigned busy;        /* v->lock; held by a truncate in progress, keeps the node */
	bool staged;          /* v->lock (also only changed under rw) */
	unsigned top;         /* atomic, written under v->lock: slot in v->tops of the top-level
			       * directory the inode was reached through (0: none known) */
	uint64_t size;        /* v->lock; valid while staged */
	int64_t mtime, ctime; /* v->lock; valid while staged */

	pthread_rwlock_t rw;
	int staging_fd;        /* rw; -1 when not staged */
	bool dirty;            /* rw; staging content not yet committed */
	struct stream *stream; /* rw; a file being written sequentially from empty */
	struct idx_extent
		*ext;      /* rw, and v->lock for gc's refresh; committed extents, while open */
	size_t next_count; /* as ext */
	bool ext_valid;    /* as ext */
};

struct vfs_file {
	struct vnode *n;
	pthread_mutex_t cache_lock; /* the last chunk read, for reads smaller than a chunk */
	uint64_t cache_chunk;       /* cache_lock */
	uint32_t cache_len;         /* cache_lock */
	uint8_t *cache;             /* cache_lock */
};

struct vfs {
	struct store *st;
	struct idx *x;           /* the store's index; v->lock */
	struct fetcher *fetcher; /* NULL without a remote; set at open, cleared at close */
	struct chunker_params cp;
	unsigned interval_ms;
	struct vfs_options opts;
	int64_t last_size_check; /* mono ns; commit thread only */
	int gc_request;          /* atomic */
	int64_t last_auto_gc;    /* mono ns; atomic */

	/* Shared by every data path (read, write, commit) and a push; exclusive for gc. */
	pthread_rwlock_t gc_lock;
	/* The writer lock: the index and its transaction, the pack writer, and the fields below
	 * marked "lock". The fetcher and push get it from vfs_open and vfs_push. Requests take it
	 * with vfs_lock, which counts them while they wait. */
	pthread_mutex_t lock;
	atomic_uint lock_waiting; /* requests waiting in vfs_lock */
	struct vnode **buckets;   /* lock; a power of two of them, grown to keep chains short */
	size_t nbuckets, nnodes;  /* lock */
	uint64_t commits;         /* lock; commits done */
	/* Checkpoints of the index, run with no lock held (idx_defer_checkpoints says why); set
	 * at open, closed at close under lock; NULL: commits checkpoint themselves. */
	struct idx_ckpt *ckpt;

	pthread_mutex_t sync_lock;
	uint64_t durable; /* sync_lock; commits known durable */
	int wal_fd;       /* sync_lock */

	pthread_mutex_t hq_lock;
	pthread_cond_t hq_work, hq_done;    /* with hq_lock */
	struct hash_job *hq_head, *hq_tail; /* hq_lock */
	bool hq_stop;                       /* hq_lock */
	pthread_t hashers[HASHERS];

	/*
	 * Read counters per top-level directory (counters.h). Slot 0 is CTR_OTHER; names are
	 * added under lock and never removed or moved, so a node's slot stays valid; the
	 * counters themselves are atomic.
	 */
	struct {
		char *name; /* lock; NULL in slot 0 */
		uint64_t c[CTR_COUNT];
	} tops[VFS_TOPS_MAX];
	unsigned ntops; /* lock */

	pthread_t thread;
	pthread_cond_t cond;   /* with lock: wakes the commit thread */
	bool stop;             /* lock */
	int last_error;        /* lock; last background commit failure */
	unsigned closing;      /* lock; commits running after their close was answered */
	pthread_cond_t closed; /* with lock: closing went to 0 */
};

/*
 * v->lock for a request. A request that has to wait is counted in lock_waiting, so the live
 * merge, which holds the lock in slices, can end a slice early and step aside until the request
 * has had its turn (vfs_lock_wanted). The uncontended path is one trylock.
 */
static inline void vfs_lock(struct vfs *v)
{
	if (pthread_mutex_trylock(&v->lock) == 0)
		return;
	atomic_fetch_add_explicit(&v->lock_waiting, 1, memory_order_relaxed);
	pthread_mutex_lock(&v->lock);
	atomic_fetch_sub_explicit(&v->lock_waiting, 1, memory_order_relaxed);
}

static inline void vfs_unlock(struct vfs *v)
{
	pthread_mutex_unlock(&v->lock);
}

/* Whether a request is waiting for v->lock. */
static inline bool vfs_lock_wanted(struct vfs *v)
{
	return atomic_load_explicit(&v->lock_waiting, memory_order_relaxed) > 0;
}

/* ns since the epoch (negative before 1970) to a normalised timespec: 0 <= tv_nsec < 1e9. */
static inline struct timespec ns_ts(int64_t ns)
{
	struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};

	if (ts.tv_nsec < 0) {
		ts.tv_sec--;
		ts.tv_nsec += 1000000000;
	}
	return ts;
}

static inline int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static inline void stat_from_inode(const struct idx_inode *in, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = in->ino;
	st->st_mode = in->mode;
	st->st_nlink = in->nlink;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	st->st_rdev = in->rdev;
	st->st_size = (off_t)in->size;
	/*
	 * Tools size their buffers by this. A file's is 1 MiB, what one FUSE write carries (cp,
	 * Python). A directory's is a page: glibc sizes its getdents buffer by it, and newer
	 * kernels (6.18 here) allocate and map that much for each readdir request.
	 */
	st->st_blksize = S_ISDIR(in->mode) ? 4096 : 1 << 20;
	st->st_blocks = (blkcnt_t)((in->size + 511) / 512);
	st->st_atim = ns_ts(in->atime);
	st->st_mtim = ns_ts(in->mtime);
	st->st_ctim = ns_ts(in->ctime);
}

/* ---- vfs.c: the node table, attributes, transactions (v->lock held) ---- */

struct vnode *vfs_node_find(struct vfs *v, uint64_t ino);
/* The node of ino, made when absent; NULL when out of memory. */
struct vnode *vfs_node_get(struct vfs *v, uint64_t ino);
void vfs_node_set_top(struct vfs *v, struct vnode *n, uint64_t parent, const char *name);
/* Unhash and free n with whatever it still holds. */
void vfs_node_free(struct vfs *v, struct vnode *n);
/* An inode with no names left goes once nothing holds it; in a transaction. */
int vfs_reap_if_unused(struct vfs *v, uint64_t ino);
/* An inode that must exist: 0, -ENOENT, or -errno. */
int vfs_get_inode(struct vfs *v, uint64_t ino, struct idx_inode *ret);
/* A name that must exist: 0 with its inode number, -ENOENT, or -errno. */
int vfs_lookup_ino(struct vfs *v, uint64_t parent, const char *name, uint64_t *ret_ino);
/* Apply a staged node's in-memory attributes. */
void vfs_apply_override(struct vfs *v, struct stat *st);
/* Read an inode with overrides applied. 0, -ENOENT or -errno. */
int vfs_get_stat(struct vfs *v, uint64_t ino, struct stat *st);
/* Commit the open transaction: packs first, so the index never names bytes that could be
 * lost. */
int vfs_commit_locked(struct vfs *v);
/* fdatasync the active pack ahead of a commit, with no lock held: the commit's own sync (packs
 * first) then has little left to write under v->lock. Takes v->lock briefly. */
void vfs_sync_packs_ahead(struct vfs *v);
/* Checkpoint the index if it is due; no lock held (it may take tens of ms). */
void vfs_checkpoint(struct vfs *v);
/* Join the open transaction (opening one when none is). */
int vfs_begin(struct vfs *v);
/* One operation's changes, undone together on failure: vfs_op_end(v, r) returns r. */
int vfs_op_begin(struct vfs *v);
int vfs_op_end(struct vfs *v, int r);
/* Count one read of n that returned r (bytes or -errno). No lock needed. */
void vfs_count_read(struct vfs *v, struct vnode *n, ssize_t r, bool fetched);

/* ---- vfs_ns.c ---- */

/* Create an inode named name in parent; v->lock held, inside vfs_op_begin. */
int vfs_make_node(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
		  mode_t mode, dev_t rdev, const char *target, struct stat *ret);

/* ---- vfs_io.c: chunks and extents ---- */

bool vfs_all_zero(const uint8_t *p, size_t n);
int vfs_put_hashed_chunk(struct vfs *v, const uint8_t *data, uint32_t len, const chunk_digest *dg,
			 struct idx_extent *e);
int vfs_ext_push(struct ext_vec *ev, const struct idx_extent *e);
/* One chunk of a file, stored (takes v->lock) or a hole; with pin, referenced at once. */
int vfs_emit_chunk(struct vfs *v, struct ext_vec *ev, uint64_t off, const uint8_t *p, uint32_t len,
		   bool pin);
/* Drop the pins of emitted chunks; v->lock held. */
void vfs_unpin(struct vfs *v, const struct ext_vec *ev);
/* Make ev the file's extents and size its length; v->lock held; ev moves into n. */
int vfs_set_content(struct vfs *v, struct vnode *n, struct ext_vec *ev, uint64_t size);
/* Load committed extents into the node; rw held for writing. */
int vfs_load_extents(struct vfs *v, struct vnode *n);
/* One committed extent's chunk into buf, from the store or the remote; no v->lock. */
int vfs_read_extent(struct vfs *v, const struct idx_extent *e, uint8_t *buf, bool *fetched);

/* ---- vfs_stream.c (rw held for writing, v->lock not held) ---- */

int vfs_hashers_start(struct vfs *v);
void vfs_hashers_stop(struct vfs *v, int n);
int vfs_stream_start(struct vfs *v, struct vnode *n);
int vfs_stream_add(struct vfs *v, struct vnode *n, const uint8_t *data, size_t size);
int vfs_stream_process(struct vfs *v, struct vnode *n);
/* Store every chunk of the stream but its tail, waiting for the hashing threads. */
int vfs_stream_settle(struct vfs *v, struct vnode *n);
int vfs_stream_finish(struct vfs *v, struct vnode *n);
int vfs_stream_spill(struct vfs *v, struct vnode *n);
void vfs_stream_discard(struct vfs *v, struct vnode *n);

/* ---- vfs_stage.c ---- */

/* Take (and drop) what a commit of n needs, in order: gc_lock shared, then n->rw for writing. */
void vfs_lock_for_commit(struct vfs *v, struct vnode *n);
void vfs_unlock_for_commit(struct vfs *v, struct vnode *n);
/* Commit what was written through n (stream or staging file); both locks above held. */
int vfs_commit_node(struct vfs *v, struct vnode *n);
/* Give n a staging file holding its content / drop a clean one; rw held for writing. */
int vfs_stage(struct vfs *v, struct vnode *n);
void vfs_unstage(struct vfs *v, struct vnode *n);
/* Truncation; gc_lock shared and rw held for writing (vfs_truncate_node takes them). */
int vfs_truncate_to_zero(struct vfs *v, struct vnode *n);
int vfs_truncate_node(struct vfs *v, struct vnode *n, uint64_t size, bool keep_staged);

/* ---- vfs_gc.c ---- */

/* Out of space: ask for a gc by itself, at most every 10 s. Returns r. */
int vfs_note_enospc(struct vfs *v, int r);
/* The commit thread's gc steps, between commits; v->lock held (dropped while gc runs). */
void vfs_gc_tick(struct vfs *v);
