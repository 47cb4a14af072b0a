/* SPDX-License-Identifier: MIT */
/*
 * The filesystem core. See vfs.h for the data path and durability model.
 *
 * Locks, always taken in this order:
 *   gc_lock (rwlock)  commits hold it shared; gc holds it exclusive, so a chunk found by dedup
 *                     cannot be reclaimed before the extent that references it is written.
 *   node->rw          a file's data state: staging fd, dirty flag, cached extents.
 *   v->lock           the index, the pack writer, the node table, and each node's counters and
 *                     attribute overrides.
 * Nobody takes node->rw while holding v->lock.
 *
 * A node exists for every inode the kernel holds a lookup reference on or has open. While a
 * node has a staging file, its size, mtime and ctime in memory override the index's.
 */
#include "vfs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "chunker.h"
#include "counters.h"
#include "fetch.h"
#include "hash.h"
#include "idx.h"
#include "util.h"

#define NODE_BUCKETS_MIN 1024
#define NAME_MAX_LEN 255
#define XATTR_VALUE_MAX 65536
#define COMMIT_READ_SIZE (4u << 20)
/* Top-level directories counted apart; reads of any further ones count under CTR_OTHER. */
#define VFS_TOPS_MAX 256

struct ext_vec {
	struct idx_extent *e;
	size_t n, cap;
};

/*
 * A file written from empty by sequential writes (the common case: pip, npm and uv write a new
 * temp file front to back) is chunked as the data arrives, with no staging file: chunks are
 * stored and pinned as they are cut, and at flush the extents are written in one go. Any other
 * access (a write elsewhere, a read, a truncate) spills the stream into a staging file first.
 */
struct stream;

/* A chunk cut from a stream, hashed and stored by a hashing thread. */
struct hash_job {
	struct hash_job *next; /* the queue; v->hq_lock */
	uint8_t *data;         /* owned copy of the chunk */
	struct idx_extent e;   /* off and len in; chunk, key, pack, loc out (under v->lock) */
	int status;            /* v->hq_lock */
	bool done;             /* v->hq_lock */
};

struct stream {
	struct hash_job **jobs; /* cut, not yet collected into ev, in file order */
	size_t njobs, capjobs;
	struct chunker ch;
	uint8_t *buf; /* bytes since the last cut */
	size_t len, cap, scanned;
	uint64_t base;     /* file offset of buf[0] */
	struct ext_vec ev; /* chunks emitted so far, each pinned */
	int error;         /* the last failure to store a chunk, retried by flush */
};

/* Bytes a stream may hold while its chunks cannot be stored before writes fail too. */
#define STREAM_BACKLOG_MAX (64u << 20)
/* Chunks of one stream in the hashing threads' hands at once. */
#define STREAM_INFLIGHT_MAX 64
#define HASHERS 2

struct vnode {
	uint64_t ino;
	struct vnode *next; /* hash chain; v->lock */
	uint64_t nlookup;   /* v->lock */
	unsigned opens;     /* v->lock */
	unsigned busy;      /* v->lock; held by a truncate in progress, keeps the node */
	bool staged;        /* v->lock (also only changed under rw) */
	unsigned top;       /* atomic, written under v->lock: index in v->tops of the top-level
			     * directory the inode was reached through (0: none known) */
	uint64_t size;      /* v->lock; valid while staged */
	int64_t mtime, ctime;

	pthread_rwlock_t rw;
	int staging_fd;         /* rw; -1 when not staged */
	bool dirty;             /* rw; staging content not yet committed */
	struct stream *stream;  /* rw; a file being written sequentially from empty */
	struct idx_extent *ext; /* rw; committed extents, loaded while open */
	size_t next_count;
	bool ext_valid;
};

struct vfs_file {
	struct vnode *n;
	pthread_mutex_t cache_lock; /* the last chunk read, for reads smaller than a chunk */
	uint64_t cache_chunk;
	uint32_t cache_len;
	uint8_t *cache;
};

struct vfs {
	struct store *st;
	struct idx *x;
	struct fetcher *fetcher; /* NULL without a remote */
	struct chunker_params cp;
	unsigned interval_ms;
	struct vfs_options opts;
	int64_t last_size_check; /* mono ns; commit thread only */
	int gc_request;          /* atomic */
	int64_t last_auto_gc;    /* mono ns; atomic */

	pthread_rwlock_t gc_lock;
	pthread_mutex_t lock;
	struct vnode **buckets;  /* lock; a power of two of them, grown to keep chains short */
	size_t nbuckets, nnodes; /* lock */
	uint64_t commits;        /* lock; commits done */

	pthread_mutex_t sync_lock;
	uint64_t durable; /* sync_lock; commits known durable */
	int wal_fd;       /* sync_lock */

	pthread_mutex_t hq_lock;
	pthread_cond_t hq_work, hq_done;
	struct hash_job *hq_head, *hq_tail; /* hq_lock */
	bool hq_stop;                       /* hq_lock */
	pthread_t hashers[HASHERS];

	/*
	 * Read counters per top-level directory (counters.h). Slot 0 is CTR_OTHER; names are
	 * added under lock and never removed or moved, so a node's index stays valid; the
	 * counters themselves are atomic.
	 */
	struct {
		char *name; /* lock; NULL in slot 0 */
		uint64_t c[CTR_COUNT];
	} tops[VFS_TOPS_MAX];
	unsigned ntops; /* lock */

	pthread_t thread;
	pthread_cond_t cond; /* with lock: wakes the commit thread */
	bool stop;           /* lock */
	int last_error;      /* lock; last background commit failure */
};

/* ns since the epoch (negative before 1970) to a normalised timespec: 0 <= tv_nsec < 1e9. */
static struct timespec ns_ts(int64_t ns)
{
	struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};

	if (ts.tv_nsec < 0) {
		ts.tv_sec--;
		ts.tv_nsec += 1000000000;
	}
	return ts;
}

static void stat_from_inode(const struct idx_inode *in, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = in->ino;
	st->st_mode = in->mode;
	st->st_nlink = in->nlink;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	st->st_rdev = in->rdev;
	st->st_size = (off_t)in->size;
	/* Tools size their buffers by this (cp, Python): one FUSE write carries up to 1 MiB. */
	st->st_blksize = 1 << 20;
	st->st_blocks = (blkcnt_t)((in->size + 511) / 512);
	st->st_atim = ns_ts(in->atime);
	st->st_mtim = ns_ts(in->mtime);
	st->st_ctim = ns_ts(in->ctime);
}

static int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static void unpin(struct vfs *v, const struct ext_vec *ev);
static int stream_finish(struct vfs *v, struct vnode *n);
int vfs_gc(struct vfs *v, uint64_t max_size, struct gc_report *ret);

/* ---- node table (v->lock held) ---- */

static struct vnode *node_find(struct vfs *v, uint64_t ino)
{
	struct vnode *n;

	for (n = v->buckets[ino & (v->nbuckets - 1)]; n; n = n->next)
		if (n->ino == ino)
			return n;
	return NULL;
}

/* Double the table when it averages two nodes a chain; a failed grow only slows lookups. */
static void node_table_grow(struct vfs *v)
{
	size_t nb = v->nbuckets * 2;
	struct vnode **b = calloc(nb, sizeof(*b));

	if (!b)
		return;
	for (size_t i = 0; i < v->nbuckets; i++) {
		while (v->buckets[i]) {
			struct vnode *n = v->buckets[i];

			v->buckets[i] = n->next;
			n->next = b[n->ino & (nb - 1)];
			b[n->ino & (nb - 1)] = n;
		}
	}
	free(v->buckets);
	v->buckets = b;
	v->nbuckets = nb;
}

static struct vnode *node_get(struct vfs *v, uint64_t ino)
{
	struct vnode *n = node_find(v, ino);

	if (n)
		return n;
	if (v->nnodes >= 2 * v->nbuckets)
		node_table_grow(v);
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->ino = ino;
	n->staging_fd = -1;
	pthread_rwlock_init(&n->rw, NULL);
	n->next = v->buckets[ino & (v->nbuckets - 1)];
	v->buckets[ino & (v->nbuckets - 1)] = n;
	v->nnodes++;
	return n;
}

/*
 * Remember which top-level directory n was reached through, as the entry name under parent
 * (lock held): a name under the root is its own top (added to v->tops when new), anything else
 * inherits its parent's. Cheap: no query, one short scan at the root only.
 */
static void node_set_top(struct vfs *v, struct vnode *n, uint64_t parent, const char *name)
{
	unsigned top = 0;

	if (parent == IDX_ROOT_INO) {
		for (top = 1; top < v->ntops; top++)
			if (!strcmp(v->tops[top].name, name))
				break;
		if (top == v->ntops) {
			if (v->ntops < VFS_TOPS_MAX && (v->tops[top].name = strdup(name)))
				v->ntops++;
			else
				top = 0;
		}
	} else {
		struct vnode *p = node_find(v, parent);

		top = p ? __atomic_load_n(&p->top, __ATOMIC_RELAXED) : 0;
	}
	__atomic_store_n(&n->top, top, __ATOMIC_RELAXED);
}

/* Count one read of n that returned r (bytes or -errno). No lock needed. */
static void count_read(struct vfs *v, struct vnode *n, ssize_t r, bool fetched)
{
	uint64_t *c = v->tops[__atomic_load_n(&n->top, __ATOMIC_RELAXED)].c;

	if (r < 0) {
		__atomic_add_fetch(&c[CTR_READS_FAILED], 1, __ATOMIC_RELAXED);
	} else if (fetched) {
		__atomic_add_fetch(&c[CTR_READS_FETCHED], 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&c[CTR_BYTES_FETCHED], (uint64_t)r, __ATOMIC_RELAXED);
	} else {
		__atomic_add_fetch(&c[CTR_READS_LOCAL], 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&c[CTR_BYTES_LOCAL], (uint64_t)r, __ATOMIC_RELAXED);
	}
}

int vfs_add_read_counters(struct vfs *v, struct counters *c)
{
	int r = 0;

	pthread_mutex_lock(&v->lock);
	for (unsigned i = 0; i < v->ntops && r == 0; i++) {
		uint64_t val[CTR_COUNT], any = 0;

		for (int k = 0; k < CTR_COUNT; k++)
			any |= val[k] = __atomic_load_n(&v->tops[i].c[k], __ATOMIC_RELAXED);
		if (any)
			r = counters_add(c, i ? v->tops[i].name : CTR_OTHER, val);
	}
	pthread_mutex_unlock(&v->lock);
	return r;
}

static void node_unlink_free(struct vfs *v, struct vnode *n)
{
	struct vnode **p;

	for (p = &v->buckets[n->ino & (v->nbuckets - 1)]; *p; p = &(*p)->next) {
		if (*p == n) {
			*p = n->next;
			v->nnodes--;
			break;
		}
	}
	if (n->staging_fd >= 0)
		close(n->staging_fd);
	if (n->stream) {
		unpin(v, &n->stream->ev);
		free(n->stream->ev.e);
		free(n->stream->buf);
		free(n->stream);
	}
	free(n->ext);
	pthread_rwlock_destroy(&n->rw);
	free(n);
}

/* An inode with no names left goes once nothing holds it; v->lock held, in a transaction. */
static int reap_if_unused(struct vfs *v, uint64_t ino)
{
	struct vnode *n = node_find(v, ino);
	struct idx_inode in;
	int r;

	if (n && (n->nlookup > 0 || n->opens > 0 || n->busy > 0))
		return 0;
	r = idx_get_inode(v->x, ino, &in);
	if (r <= 0 || in.nlink > 0)
		return r;
	r = idx_delete_inode(v->x, ino);
	if (r == 0 && n) {
		char name[32];

		snprintf(name, sizeof(name), "%llu", (unsigned long long)ino);
		unlinkat(store_staging_fd(v->st), name, 0);
		node_unlink_free(v, n);
	}
	return r;
}

/* An inode that must exist: 0, -ENOENT, or -errno; v->lock held. */
static int get_inode(struct vfs *v, uint64_t ino, struct idx_inode *ret)
{
	int r = idx_get_inode(v->x, ino, ret);

	return r == 1 ? 0 : r == 0 ? -ENOENT : r;
}

/* A name that must exist: 0 with its inode number, -ENOENT, or -errno; v->lock held. */
static int lookup(struct vfs *v, uint64_t parent, const char *name, uint64_t *ret_ino)
{
	int r = idx_lookup(v->x, parent, name, ret_ino);

	return r == 1 ? 0 : r == 0 ? -ENOENT : r;
}

/* Apply a staged node's in-memory attributes; v->lock held. */
static void apply_override(struct vfs *v, struct stat *st)
{
	struct vnode *n = node_find(v, st->st_ino);

	if (!n || !n->staged)
		return;
	st->st_size = (off_t)n->size;
	st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
	st->st_mtim = ns_ts(n->mtime);
	st->st_ctim = ns_ts(n->ctime);
}

/* Read an inode with overrides applied; v->lock held. 0, -ENOENT or -errno. */
static int get_stat(struct vfs *v, uint64_t ino, struct stat *st)
{
	struct idx_inode in;
	int r = idx_get_inode(v->x, ino, &in);

	if (r == 0)
		return -ENOENT;
	if (r < 0)
		return r;
	stat_from_inode(&in, st);
	apply_override(v, st);
	return 0;
}

/* ---- commit and durability ---- */

/* Commit the open transaction; v->lock held. Packs first, so the index never names bytes
 * that could be lost. */
static int commit_locked(struct vfs *v)
{
	int r;

	if (!idx_in_txn(v->x))
		return 0;
	r = store_sync_packs(v->st);
	if (r < 0)
		return r;
	r = idx_commit(v->x);
	if (r == 0)
		v->commits++;
	return r;
}

static int begin(struct vfs *v)
{
	return idx_begin(v->x);
}

/* One operation's changes, undone together on failure; v->lock held. */
static int op_begin(struct vfs *v)
{
	return idx_op_begin(v->x);
}

static int op_end(struct vfs *v, int r)
{
	idx_op_end(v->x, r < 0);
	return r;
}

int vfs_sync(struct vfs *v)
{
	uint64_t target;
	int r;

	pthread_mutex_lock(&v->lock);
	r = commit_locked(v);
	target = v->commits;
	pthread_mutex_unlock(&v->lock);
	if (r < 0)
		return r;

	pthread_mutex_lock(&v->sync_lock);
	if (v->durable >= target)
		goto out_unlock;
	if (v->wal_fd < 0) {
		v->wal_fd = open(idx_wal_path(v->x), O_RDONLY | O_CLOEXEC);
		if (v->wal_fd < 0) {
			r = -errno;
			goto out_unlock;
		}
	}
	if (fdatasync(v->wal_fd) < 0) {
		r = -errno;
		goto out_unlock;
	}
	v->durable = target;
out_unlock:
	pthread_mutex_unlock(&v->sync_lock);
	return r;
}

static void *commit_thread(void *arg)
{
	struct vfs *v = arg;

	pthread_mutex_lock(&v->lock);
	while (!v->stop) {
		struct timespec ts;
		int r;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += v->interval_ms / 1000;
		ts.tv_nsec += (long)(v->interval_ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&v->cond, &v->lock, &ts);
		r = commit_locked(v);
		if (r < 0 && r != v->last_error)
			log_warn("background commit failed: %s", strerror(-r));
		v->last_error = r;
		if (__atomic_exchange_n(&v->gc_request, 0, __ATOMIC_SEQ_CST) && !v->stop) {
			struct gc_report rep;
			uint64_t max = v->opts.gc_request_size
					       ? v->opts.gc_request_size(v->opts.hook_data)
					       : 0;

			pthread_mutex_unlock(&v->lock);
			r = vfs_gc(v, max, &rep);
			if (r < 0)
				log_warn("requested gc failed: %s", strerror(-r));
			if (v->opts.gc_done)
				v->opts.gc_done(v->opts.hook_data, r, &rep);
			pthread_mutex_lock(&v->lock);
		}
		if (v->opts.max_size && !v->stop && mono_ns() - v->last_size_check > 5000000000) {
			uint64_t bytes = 0;

			v->last_size_check = mono_ns();
			if (idx_pack_bytes(v->x, &bytes) == 0 && bytes > v->opts.max_size) {
				struct gc_report rep;

				pthread_mutex_unlock(&v->lock);
				/* Evict to 90% so that gc does not run again at once. */
				r = vfs_gc(v, v->opts.max_size / 10 * 9, &rep);
				if (r < 0)
					log_warn("gc to stay within max_size failed: %s",
						 strerror(-r));
				else
					log_info("gc: evicted %llu files to stay within max_size",
						 (unsigned long long)rep.evicted_files);
				pthread_mutex_lock(&v->lock);
			}
		}
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

/* ---- chunk I/O ---- */

static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/*
 * Store one chunk (dedup by key, confirmed by digest); v->lock held, in a transaction. Fills
 * e's chunk, key, pack and loc.
 */
static int put_hashed_chunk(struct vfs *v, const uint8_t *data, uint32_t len,
			    const chunk_digest *dg, struct idx_extent *e);

static int put_chunk(struct vfs *v, const uint8_t *data, uint32_t len, struct idx_extent *e)
{
	chunk_digest digest;

	hash_key(data, len, &e->key);
	hash_digest(data, len, &digest);
	return put_hashed_chunk(v, data, len, &digest, e);
}

/* put_chunk with e->key and the digest already computed (outside the lock). */
static int put_hashed_chunk(struct vfs *v, const uint8_t *data, uint32_t len,
			    const chunk_digest *dg, struct idx_extent *e)
{
	chunk_digest digest = *dg;
	int r;

	r = idx_find_chunk(v->x, &e->key, &digest, &e->chunk, &e->pack, &e->loc);
	if (r < 0)
		return r;
	if (r == 1 && e->pack)
		return 0;
	if (r == 1) {
		/* Known only on the remote: the bytes are in hand, so keep a local copy. */
		r = store_append_chunk(v->st, &e->key, &digest, data, len, &e->pack, &e->loc);
		if (r < 0)
			return r;
		return idx_set_chunk_local(v->x, e->chunk, &e->key, e->pack, &e->loc);
	}
	r = store_append_chunk(v->st, &e->key, &digest, data, len, &e->pack, &e->loc);
	if (r < 0)
		return r;
	return idx_add_chunk(v->x, &e->key, &digest, len, e->pack, &e->loc, &e->chunk);
}

static int ext_push(struct ext_vec *ev, const struct idx_extent *e)
{
	if (ev->n && !e->chunk && !ev->e[ev->n - 1].chunk &&
	    (uint64_t)ev->e[ev->n - 1].len + e->len <= UINT32_MAX) {
		ev->e[ev->n - 1].len += e->len; /* merge adjacent holes */
		return 0;
	}
	if (ev->n == ev->cap) {
		size_t ncap = ev->cap ? ev->cap * 2 : 64;
		struct idx_extent *ne = realloc(ev->e, ncap * sizeof(*ne));

		if (!ne)
			return -ENOMEM;
		ev->e = ne;
		ev->cap = ncap;
	}
	ev->e[ev->n++] = *e;
	return 0;
}

/*
 * One chunk of a file: a hole when all zero, else stored. With pin, the chunk gets a reference
 * at once, held until the extents that use it are written (streamed files), so that nothing
 * reclaims it in between.
 */
static int emit_chunk(struct vfs *v, struct ext_vec *ev, uint64_t off, const uint8_t *p,
		      uint32_t len, bool pin)
{
	struct idx_extent e = {.off = off, .len = len};
	int r;

	if (!all_zero(p, len)) {
		pthread_mutex_lock(&v->lock);
		r = begin(v);
		if (r == 0)
			r = put_chunk(v, p, len, &e);
		if (r == 0 && pin)
			r = idx_ref_chunk(v->x, e.chunk, 1);
		pthread_mutex_unlock(&v->lock);
		if (r < 0)
			return r;
	}
	return ext_push(ev, &e);
}

/* Drop the pins of emitted chunks; v->lock held. */
static void unpin(struct vfs *v, const struct ext_vec *ev)
{
	for (size_t i = 0; i < ev->n; i++)
		if (ev->e[i].chunk && idx_ref_chunk(v->x, ev->e[i].chunk, -1) < 0)
			log_debug("unpin of chunk %llu failed", (unsigned long long)ev->e[i].chunk);
}

/*
 * Make ev the file's extents and size its length; v->lock held. The node's cached extents
 * become ev (ownership moves; ev is emptied).
 */
static int set_content(struct vfs *v, struct vnode *n, struct ext_vec *ev, uint64_t size)
{
	struct idx_inode in;
	int r;

	r = op_begin(v);
	if (r < 0)
		return r;
	r = idx_set_extents(v->x, n->ino, ev->e, ev->n);
	if (r == 0) {
		r = idx_get_inode(v->x, n->ino, &in);
		if (r == 0)
			r = -ENOENT;
	}
	if (r > 0) {
		in.size = size;
		in.mtime = n->mtime;
		in.ctime = n->ctime;
		r = idx_put_inode(v->x, &in);
	}
	if (op_end(v, r) < 0)
		return r;
	free(n->ext);
	n->ext = ev->n ? realloc(ev->e, ev->n * sizeof(*ev->e)) : NULL;
	if (!n->ext)
		free(ev->e);
	n->next_count = ev->n;
	n->ext_valid = ev->n == 0 || n->ext;
	ev->e = NULL;
	ev->n = ev->cap = 0;
	return 0;
}

/* A run of zeros as hole extents, each at most 1 GiB. */
static int push_hole(struct ext_vec *ev, uint64_t off, uint64_t len)
{
	while (len > 0) {
		struct idx_extent e = {.off = off, .len = (uint32_t)MIN(len, (uint64_t)1 << 30)};
		int r = ext_push(ev, &e);

		if (r < 0)
			return r;
		off += e.len;
		len -= e.len;
	}
	return 0;
}

/* Chunk bytes [from, to) of fd, the chunker starting afresh at from. */
static int chunk_range(struct vfs *v, int fd, struct ext_vec *ev, uint64_t from, uint64_t to,
		       uint8_t *buf, size_t cap)
{
	struct chunker ch;
	size_t len = 0, start = 0, scanned = 0;
	uint64_t file_off = from, base = from;
	int r;

	chunker_init(&ch, &v->cp);
	for (;;) {
		if (file_off < to) {
			ssize_t got = pread(fd, buf + len, MIN(cap - len, to - file_off),
					    (off_t)file_off);

			if (got < 0)
				return -errno;
			if (got == 0)
				return -EIO; /* the staging file shrank under us: a bug */
			file_off += (uint64_t)got;
			len += (size_t)got;
		}
		while (scanned < len) {
			size_t cut = chunker_scan(&ch, buf + scanned, len - scanned);

			if (cut == CHUNKER_NO_CUT) {
				scanned = len;
				break;
			}
			scanned += cut;
			r = emit_chunk(v, ev, base, buf + start, (uint32_t)(scanned - start),
				       false);
			if (r < 0)
				return r;
			base += scanned - start;
			start = scanned;
		}
		if (file_off >= to)
			break;
		memmove(buf, buf + start, len - start);
		len -= start;
		scanned -= start;
		start = 0;
	}
	if (len > start)
		return emit_chunk(v, ev, base, buf + start, (uint32_t)(len - start), false);
	return 0;
}

/*
 * Cut the staging file into chunks and make them the file's extents. Holes of the (sparse)
 * staging file become hole extents without being read. node->rw held for writing; gc_lock
 * held shared by the caller.
 */
static int commit_node(struct vfs *v, struct vnode *n)
{
	struct ext_vec ev = {0};
	struct stat sst;
	size_t cap = COMMIT_READ_SIZE + v->cp.max;
	uint64_t pos = 0, size;
	uint8_t *buf;
	int r = 0;

	if (fstat(n->staging_fd, &sst) < 0)
		return -errno;
	size = (uint64_t)sst.st_size;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	while (pos < size && r == 0) {
		off_t data = lseek(n->staging_fd, (off_t)pos, SEEK_DATA);
		off_t hole;

		if (data < 0 && errno != ENXIO) {
			r = -errno;
			break;
		}
		if (data < 0 || (uint64_t)data >= size)
			data = (off_t)size; /* zeros to the end */
		r = push_hole(&ev, pos, (uint64_t)data - pos);
		if (r < 0 || (uint64_t)data >= size)
			break;
		hole = lseek(n->staging_fd, data, SEEK_HOLE);
		if (hole < 0 || (uint64_t)hole > size)
			hole = (off_t)size;
		r = chunk_range(v, n->staging_fd, &ev, (uint64_t)data, (uint64_t)hole, buf, cap);
		pos = (uint64_t)hole;
	}
	if (r == 0) {
		pthread_mutex_lock(&v->lock);
		r = set_content(v, n, &ev, size);
		if (r == 0)
			n->dirty = false;
		pthread_mutex_unlock(&v->lock);
	}
	free(ev.e);
	free(buf);
	return r;
}

/* Commit what was written; gc_lock held shared, node->rw held for writing. */
static int commit_node_gc(struct vfs *v, struct vnode *n)
{
	if (n->stream)
		return stream_finish(v, n);
	return n->dirty ? commit_node(v, n) : 0;
}

/* Take the locks a commit needs, in order. */
static void lock_for_commit(struct vfs *v, struct vnode *n)
{
	pthread_rwlock_rdlock(&v->gc_lock);
	pthread_rwlock_wrlock(&n->rw);
}

static void unlock_for_commit(struct vfs *v, struct vnode *n)
{
	pthread_rwlock_unlock(&n->rw);
	pthread_rwlock_unlock(&v->gc_lock);
}

/* Load committed extents into the node; rw held for writing. */
static int load_extents(struct vfs *v, struct vnode *n)
{
	int r;

	if (n->ext_valid)
		return 0;
	pthread_mutex_lock(&v->lock);
	free(n->ext);
	n->ext = NULL;
	r = idx_get_extents(v->x, n->ino, &n->ext, &n->next_count);
	n->ext_valid = r == 0;
	pthread_mutex_unlock(&v->lock);
	return r;
}

/*
 * Read one committed extent's chunk into buf (len bytes). *fetched (when not NULL) is set when the
 * chunk was only on the remote when the file's extents were loaded (at open): the read needed
 * the remote, whether it fetched the chunk itself or a prefetch brought it meanwhile. 0 or -errno.
 */
static int read_extent(struct vfs *v, const struct idx_extent *e, uint8_t *buf, bool *fetched)
{
	int r;

	if (!e->chunk) {
		memset(buf, 0, e->len);
		return 0;
	}
	if (!e->pack) {
		r = v->fetcher ? fetcher_read(v->fetcher, e, buf) : -EIO;
		if (r == 0 && fetched)
			*fetched = true;
		return r;
	}
	return store_read_chunk(v->st, e->pack, &e->loc, &e->key, buf, e->len);
}

/* Index of the extent containing off, or n when none; ext sorted by off. */
static size_t find_extent(const struct idx_extent *ext, size_t n, uint64_t off)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ext[mid].off + ext[mid].len <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Read committed content [off, off + size) clipped to file_size; rw held. *fetched is set when
 * some of it came from the remote. */
static ssize_t read_committed(struct vfs *v, struct vfs_file *f, struct vnode *n, uint8_t *out,
			      size_t size, uint64_t off, uint64_t file_size, bool *fetched)
{
	size_t done = 0, i;
	uint8_t *tmp = NULL;
	ssize_t r = 0;

	if (off >= file_size)
		return 0;
	size = (size_t)MIN((uint64_t)size, file_size - off);
	for (i = find_extent(n->ext, n->next_count, off); i < n->next_count && done < size; i++) {
		const struct idx_extent *e = &n->ext[i];
		uint64_t pos = off + done;
		size_t skip, take;

		if (e->off > pos) {
			/* A gap in the extents reads as zeros (a file extended by truncate). */
			take = (size_t)MIN(e->off - pos, (uint64_t)(size - done));
			memset(out + done, 0, take);
			done += take;
			if (done == size)
				break;
			pos = off + done;
		}
		skip = (size_t)(pos - e->off);
		take = MIN((size_t)e->len - skip, size - done);
		if (!e->chunk) {
			memset(out + done, 0, take);
		} else if (skip == 0 && take == e->len) {
			r = read_extent(v, e, out + done, fetched);
			if (r < 0)
				goto out;
		} else {
			pthread_mutex_lock(&f->cache_lock);
			if (f->cache_chunk != e->chunk || f->cache_len != e->len) {
				tmp = realloc(f->cache, e->len);
				if (!tmp) {
					pthread_mutex_unlock(&f->cache_lock);
					r = -ENOMEM;
					goto out;
				}
				f->cache = tmp;
				f->cache_chunk = 0;
				r = read_extent(v, e, f->cache, fetched);
				if (r < 0) {
					pthread_mutex_unlock(&f->cache_lock);
					goto out;
				}
				f->cache_chunk = e->chunk;
				f->cache_len = e->len;
			}
			memcpy(out + done, f->cache + skip, take);
			pthread_mutex_unlock(&f->cache_lock);
		}
		done += take;
	}
	if (done < size) {
		memset(out + done, 0, size - done);
		done = size;
	}
	r = (ssize_t)done;
out:
	return r;
}

/* ---- hashing threads ---- */

/* Hash and store one job's chunk; runs on a hashing thread. */
static void run_job(struct vfs *v, struct hash_job *j)
{
	struct idx_extent e = j->e;
	chunk_digest digest;
	int r = 0;

	if (!all_zero(j->data, e.len)) {
		hash_key(j->data, e.len, &e.key);
		hash_digest(j->data, e.len, &digest);
		pthread_mutex_lock(&v->lock);
		r = begin(v);
		if (r == 0)
			r = put_hashed_chunk(v, j->data, e.len, &digest, &e);
		if (r == 0)
			r = idx_ref_chunk(v->x, e.chunk, 1); /* the stream's pin */
		if (r == 0)
			j->e = e; /* under v->lock, so gc's refresh sees it whole */
		pthread_mutex_unlock(&v->lock);
	}
	pthread_mutex_lock(&v->hq_lock);
	j->status = r;
	j->done = true;
	pthread_cond_broadcast(&v->hq_done);
	pthread_mutex_unlock(&v->hq_lock);
}

static void *hasher_thread(void *arg)
{
	struct vfs *v = arg;

	pthread_mutex_lock(&v->hq_lock);
	for (;;) {
		struct hash_job *j;

		while (!v->hq_head && !v->hq_stop)
			pthread_cond_wait(&v->hq_work, &v->hq_lock);
		j = v->hq_head;
		if (!j)
			break;
		v->hq_head = j->next;
		if (!v->hq_head)
			v->hq_tail = NULL;
		pthread_mutex_unlock(&v->hq_lock);
		run_job(v, j);
		pthread_mutex_lock(&v->hq_lock);
	}
	pthread_mutex_unlock(&v->hq_lock);
	return NULL;
}

/* Queue a copy of a cut chunk; rw held. */
static int queue_chunk(struct vfs *v, struct stream *sm, uint64_t off, const uint8_t *p,
		       uint32_t len)
{
	struct hash_job *j;

	if (sm->njobs == sm->capjobs) {
		size_t ncap = sm->capjobs ? sm->capjobs * 2 : 16;
		struct hash_job **nj = realloc(sm->jobs, ncap * sizeof(*nj));

		if (!nj)
			return -ENOMEM;
		sm->jobs = nj;
		sm->capjobs = ncap;
	}
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->data = malloc(len);
	if (!j->data) {
		free(j);
		return -ENOMEM;
	}
	memcpy(j->data, p, len);
	j->e.off = off;
	j->e.len = len;
	sm->jobs[sm->njobs++] = j;
	pthread_mutex_lock(&v->hq_lock);
	if (v->hq_tail)
		v->hq_tail->next = j;
	else
		v->hq_head = j;
	v->hq_tail = j;
	pthread_cond_signal(&v->hq_work);
	pthread_mutex_unlock(&v->hq_lock);
	return 0;
}

/*
 * Move finished jobs, in file order, into the stream's extents; with wait, all of them. A job
 * that failed (a full disk) is tried once more here; if it fails again it stays first in line
 * and its error is returned. rw held.
 */
static int collect_jobs(struct vfs *v, struct stream *sm, bool wait)
{
	size_t k = 0;
	int r = 0;

	while (k < sm->njobs) {
		struct hash_job *j = sm->jobs[k];

		pthread_mutex_lock(&v->hq_lock);
		while (wait && !j->done)
			pthread_cond_wait(&v->hq_done, &v->hq_lock);
		if (!j->done) {
			pthread_mutex_unlock(&v->hq_lock);
			break;
		}
		pthread_mutex_unlock(&v->hq_lock);
		if (j->status < 0) {
			struct ext_vec one = {0};

			r = emit_chunk(v, &one, j->e.off, j->data, j->e.len, true);
			if (r < 0)
				break;
			j->e = one.e[0];
			free(one.e);
		}
		r = ext_push(&sm->ev, &j->e);
		if (r < 0)
			break;
		free(j->data);
		free(j);
		k++;
	}
	if (k > 0) {
		memmove(sm->jobs, sm->jobs + k, (sm->njobs - k) * sizeof(*sm->jobs));
		sm->njobs -= k;
	}
	return r;
}

/* ---- streamed writes ---- */

static void stream_free(struct stream *sm)
{
	if (!sm)
		return;
	for (size_t i = 0; i < sm->njobs; i++) {
		free(sm->jobs[i]->data);
		free(sm->jobs[i]);
	}
	free(sm->jobs);
	free(sm->ev.e);
	free(sm->buf);
	free(sm);
}

/*
 * Drop a stream whose data cannot be stored (its error was reported by flush): wait for the
 * hashing threads to finish with it, then drop every pin it holds, collected or not. The file
 * is left with its last committed content. rw held for writing, v->lock not held.
 */
static void stream_discard(struct vfs *v, struct vnode *n)
{
	struct stream *sm = n->stream;

	if (!sm)
		return;
	pthread_mutex_lock(&v->hq_lock);
	for (size_t i = 0; i < sm->njobs; i++)
		while (!sm->jobs[i]->done)
			pthread_cond_wait(&v->hq_done, &v->hq_lock);
	pthread_mutex_unlock(&v->hq_lock);
	pthread_mutex_lock(&v->lock);
	if (begin(v) == 0) {
		unpin(v, &sm->ev);
		for (size_t i = 0; i < sm->njobs; i++)
			if (sm->jobs[i]->status == 0 && sm->jobs[i]->e.chunk)
				idx_ref_chunk(v->x, sm->jobs[i]->e.chunk, -1);
	}
	n->stream = NULL;
	n->staged = false;
	pthread_mutex_unlock(&v->lock);
	stream_free(sm);
}

/* Start streaming an empty file; rw held for writing. */
static int stream_start(struct vfs *v, struct vnode *n)
{
	struct stream *sm = calloc(1, sizeof(*sm));

	if (!sm)
		return -ENOMEM;
	chunker_init(&sm->ch, &v->cp);
	n->stream = sm;
	pthread_mutex_lock(&v->lock);
	n->staged = true;
	n->size = 0;
	n->mtime = n->ctime = now_ns();
	pthread_mutex_unlock(&v->lock);
	return 0;
}

/* Take a write's bytes into the stream's buffer. Cheap: the chunking comes after the reply. */
static int stream_add(struct vfs *v, struct vnode *n, const uint8_t *data, size_t size)
{
	struct stream *sm = n->stream;

	/* Chunks that cannot be stored (a full disk) stay buffered, but not without bound. */
	if (sm->error && sm->len > STREAM_BACKLOG_MAX)
		return sm->error;
	if (sm->len + size > sm->cap) {
		size_t ncap = MAX(sm->len + size, (size_t)v->cp.max * 2);
		uint8_t *nb = realloc(sm->buf, ncap);

		if (!nb)
			return -ENOMEM;
		sm->buf = nb;
		sm->cap = ncap;
	}
	memcpy(sm->buf + sm->len, data, size);
	sm->len += size;
	return 0;
}

/*
 * Cut what the buffer holds into chunks and store the complete ones. A chunk that cannot be
 * stored stays in the buffer and its error in sm->error, to be tried again by the next call
 * and reported by flush. rw held for writing.
 */
static int stream_process(struct vfs *v, struct vnode *n)
{
	struct stream *sm = n->stream;
	size_t start = 0;
	int r = 0;

	while (sm->scanned < sm->len) {
		size_t cut = chunker_scan(&sm->ch, sm->buf + sm->scanned, sm->len - sm->scanned);

		if (cut == CHUNKER_NO_CUT) {
			sm->scanned = sm->len;
			break;
		}
		sm->scanned += cut;
		r = queue_chunk(v, sm, sm->base + start, sm->buf + start,
				(uint32_t)(sm->scanned - start));
		if (r < 0) {
			/* The cut stays unqueued: rewind so the bytes are kept and retried. */
			sm->scanned = start;
			chunker_init(&sm->ch, &v->cp);
			break;
		}
		start = sm->scanned;
		/* Bound what one writer has in flight. */
		if (sm->njobs >= STREAM_INFLIGHT_MAX) {
			pthread_mutex_lock(&v->hq_lock);
			while (!sm->jobs[0]->done)
				pthread_cond_wait(&v->hq_done, &v->hq_lock);
			pthread_mutex_unlock(&v->hq_lock);
		}
		if (sm->njobs && collect_jobs(v, sm, false) < 0)
			break;
	}
	if (start > 0) {
		memmove(sm->buf, sm->buf + start, sm->len - start);
		sm->len -= start;
		sm->scanned -= start;
		sm->base += start;
	}
	if (r == 0)
		r = collect_jobs(v, sm, false);
	sm->error = r;
	return r;
}

/* Emit the tail and make the streamed chunks the file's content; rw held for writing. */
static int stream_finish(struct vfs *v, struct vnode *n)
{
	struct stream *sm = n->stream;
	uint64_t size = sm->base + sm->len;
	int r;

	r = stream_process(v, n);
	if (r == 0)
		r = collect_jobs(v, sm, true);
	if (r < 0)
		return r;
	if (sm->len > 0) {
		r = emit_chunk(v, &sm->ev, sm->base, sm->buf, (uint32_t)sm->len, true);
		if (r < 0)
			return r;
		sm->base += sm->len;
		sm->len = sm->scanned = 0;
		chunker_init(&sm->ch, &v->cp);
	}
	pthread_mutex_lock(&v->lock);
	{
		struct ext_vec pins = sm->ev;

		/* set_content takes the vector; the pins are the same chunks, dropped after. */
		pins.e = malloc(MAX(sm->ev.n, (size_t)1) * sizeof(*pins.e));
		if (!pins.e) {
			r = -ENOMEM;
		} else {
			memcpy(pins.e, sm->ev.e, sm->ev.n * sizeof(*pins.e));
			r = set_content(v, n, &sm->ev, size);
			if (r == 0)
				unpin(v, &pins);
			free(pins.e);
		}
	}
	if (r == 0) {
		n->staged = false;
		n->stream = NULL;
	}
	pthread_mutex_unlock(&v->lock);
	if (r == 0)
		stream_free(sm);
	return r;
}

/* Turn a stream into a staging file holding the same bytes; rw held for writing. */
static int stream_spill(struct vfs *v, struct vnode *n)
{
	struct stream *sm = n->stream;
	char name[32];
	uint8_t *buf = NULL;
	int fd, r;

	r = collect_jobs(v, sm, true);
	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "%llu", (unsigned long long)n->ino);
	fd = openat(store_staging_fd(v->st), name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	for (size_t i = 0; i < sm->ev.n && r == 0; i++) {
		const struct idx_extent *e = &sm->ev.e[i];

		if (!e->chunk)
			continue;
		buf = realloc(buf, e->len);
		if (!buf) {
			r = -ENOMEM;
			break;
		}
		r = read_extent(v, e, buf, NULL);
		if (r == 0)
			r = pwrite_all(fd, buf, e->len, (off_t)e->off);
	}
	free(buf);
	if (r == 0 && sm->len)
		r = pwrite_all(fd, sm->buf, sm->len, (off_t)sm->base);
	if (r == 0 && ftruncate(fd, (off_t)(sm->base + sm->len)) < 0)
		r = -errno;
	if (r < 0) {
		close(fd);
		unlinkat(store_staging_fd(v->st), name, 0);
		return r;
	}
	n->staging_fd = fd;
	n->dirty = true;
	pthread_mutex_lock(&v->lock);
	unpin(v, &sm->ev);
	n->stream = NULL;
	pthread_mutex_unlock(&v->lock);
	stream_free(sm);
	return 0;
}

/* Give the node a staging file holding its committed content; rw held for writing. */
static int stage(struct vfs *v, struct vnode *n)
{
	char name[32];
	struct stat st;
	uint8_t *buf = NULL;
	int fd, r;

	if (n->staging_fd >= 0)
		return 0;
	if (n->stream)
		return stream_spill(v, n);
	pthread_mutex_lock(&v->lock);
	r = get_stat(v, n->ino, &st);
	pthread_mutex_unlock(&v->lock);
	if (r < 0)
		return r;
	r = load_extents(v, n);
	if (r < 0)
		return r;
	{
		/* Room for the data, not for the holes of a sparse file. */
		uint64_t data = 0;

		for (size_t i = 0; i < n->next_count; i++)
			if (n->ext[i].chunk)
				data += n->ext[i].len;
		pthread_mutex_lock(&v->lock);
		r = store_check_space(v->st, data);
		pthread_mutex_unlock(&v->lock);
	}
	if (r < 0)
		return r;
	snprintf(name, sizeof(name), "%llu", (unsigned long long)n->ino);
	fd = openat(store_staging_fd(v->st), name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	for (size_t i = 0; i < n->next_count; i++) {
		const struct idx_extent *e = &n->ext[i];

		if (!e->chunk || e->off >= (uint64_t)st.st_size)
			continue;
		buf = realloc(buf, e->len);
		if (!buf) {
			r = -ENOMEM;
			goto out_close;
		}
		r = read_extent(v, e, buf, NULL);
		if (r == 0)
			r = pwrite_all(fd, buf, (size_t)MIN((uint64_t)e->len, st.st_size - e->off),
				       (off_t)e->off);
		if (r < 0)
			goto out_close;
	}
	if (ftruncate(fd, st.st_size) < 0) {
		r = -errno;
		goto out_close;
	}
	free(buf);
	n->staging_fd = fd;
	pthread_mutex_lock(&v->lock);
	n->staged = true;
	n->size = (uint64_t)st.st_size;
	n->mtime = ts_ns(&st.st_mtim);
	n->ctime = ts_ns(&st.st_ctim);
	pthread_mutex_unlock(&v->lock);
	return 0;
out_close:
	free(buf);
	close(fd);
	unlinkat(store_staging_fd(v->st), name, 0);
	return r;
}

/* Drop the staging file of a clean node; rw held for writing. */
static void unstage(struct vfs *v, struct vnode *n)
{
	char name[32];

	if (n->staging_fd < 0)
		return;
	close(n->staging_fd);
	n->staging_fd = -1;
	n->dirty = false;
	snprintf(name, sizeof(name), "%llu", (unsigned long long)n->ino);
	unlinkat(store_staging_fd(v->st), name, 0);
	pthread_mutex_lock(&v->lock);
	n->staged = false;
	pthread_mutex_unlock(&v->lock);
}

/* ---- setup ---- */

static int init_root(struct vfs *v)
{
	return idx_init_root(v->x, getuid(), getgid(), now_ns());
}

static void stop_hashers(struct vfs *v, int n)
{
	pthread_mutex_lock(&v->hq_lock);
	v->hq_stop = true;
	pthread_cond_broadcast(&v->hq_work);
	pthread_mutex_unlock(&v->hq_lock);
	for (int i = 0; i < n; i++)
		pthread_join(v->hashers[i], NULL);
}

int vfs_open(struct store *st, const struct vfs_options *o, struct vfs **ret)
{
	struct vfs *v;
	int r;

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->st = st;
	v->x = store_idx(st);
	v->cp = *store_chunker_params(st);
	v->ntops = 1; /* slot 0: CTR_OTHER */
	v->interval_ms = o && o->commit_interval_ms ? o->commit_interval_ms : 1000;
	if (o)
		v->opts = *o;
	v->wal_fd = -1;
	v->nbuckets = NODE_BUCKETS_MIN;
	v->buckets = calloc(v->nbuckets, sizeof(*v->buckets));
	if (!v->buckets) {
		free(v);
		return -ENOMEM;
	}
	pthread_rwlock_init(&v->gc_lock, NULL);
	pthread_mutex_init(&v->lock, NULL);
	pthread_mutex_init(&v->sync_lock, NULL);
	pthread_cond_init(&v->cond, NULL);

	r = begin(v);
	if (r == 0)
		r = init_root(v);
	if (r == 0) {
		r = idx_delete_orphans(v->x);
		if (r > 0)
			log_debug("removed %d orphaned inodes", r);
	}
	if (r >= 0) {
		/* After a crash, pins of files being written are left in the counts. */
		char clean[8] = "";

		r = idx_meta_get(v->x, "clean_shutdown", clean, sizeof(clean));
		/* Absent: a new store (perhaps just filled by a pull), nothing to recount. */
		if (r == 1 && strcmp(clean, "1") != 0) {
			r = idx_recount_refs(v->x);
			if (r > 0)
				log_debug("fixed %d chunk reference counts after a crash", r);
		}
		if (r >= 0)
			r = idx_meta_set(v->x, "clean_shutdown", "0");
	}
	if (r >= 0) {
		/* Nothing appends yet: a pack the index does not know is a crash's leftover. */
		int n = maint_remove_leaked_packs(st);

		if (n > 0)
			log_debug("removed %d packs left by a crash", n);
	}
	if (r >= 0)
		r = commit_locked(v);
	if (r < 0)
		goto out_free;
	pthread_mutex_init(&v->hq_lock, NULL);
	pthread_cond_init(&v->hq_work, NULL);
	pthread_cond_init(&v->hq_done, NULL);
	for (int i = 0; i < HASHERS; i++) {
		r = -pthread_create(&v->hashers[i], NULL, hasher_thread, v);
		if (r < 0) {
			stop_hashers(v, i);
			goto out_free;
		}
	}
	if (v->opts.remote) {
		struct fetcher_options fo = {.report = v->opts.remote_report,
					     .data = v->opts.hook_data};

		r = fetcher_new(st, v->opts.remote, &v->lock, &fo, &v->fetcher);
		if (r < 0) {
			stop_hashers(v, HASHERS);
			goto out_free;
		}
	}
	r = -pthread_create(&v->thread, NULL, commit_thread, v);
	if (r < 0) {
		fetcher_free(v->fetcher);
		stop_hashers(v, HASHERS);
		goto out_free;
	}
	/*
	 * clean_shutdown = 0 must be durable before anything this session writes is: after a
	 * power loss, a pack made now next to an index still saying "clean" would look like
	 * damage to fsck instead of a crash's leftover (found by tests/crash/powerloss.sh).
	 */
	r = vfs_sync(v);
	if (r < 0)
		log_debug("syncing the index at open: %s", strerror(-r));
	*ret = v;
	return 0;
out_free:
	pthread_mutex_destroy(&v->lock);
	free(v->buckets);
	free(v);
	return r;
}

int vfs_close(struct vfs *v)
{
	int r, r2, lost = 0;

	if (!v)
		return 0;
	pthread_mutex_lock(&v->lock);
	v->stop = true;
	pthread_cond_signal(&v->cond);
	pthread_mutex_unlock(&v->lock);
	pthread_join(v->thread, NULL);
	fetcher_free(v->fetcher);
	v->fetcher = NULL;

	/* Files still open (a lazy unmount) are committed as they are. */
	for (size_t b = 0; b < v->nbuckets; b++) {
		while (v->buckets[b]) {
			struct vnode *n = v->buckets[b];

			lock_for_commit(v, n);
			r = commit_node_gc(v, n);
			if (r < 0) {
				log_error("inode %llu: data lost: %s", (unsigned long long)n->ino,
					  strerror(-r));
				lost = r;
			}
			stream_discard(v, n); /* after a failed commit: nothing in flight */
			unstage(v, n);
			unlock_for_commit(v, n);
			pthread_mutex_lock(&v->lock);
			n->nlookup = 0;
			n->opens = 0;
			{
				uint64_t ino = n->ino;

				/* Reaping frees the node of an unlinked inode; free any other. */
				begin(v);
				reap_if_unused(v, ino);
				n = node_find(v, ino);
				if (n)
					node_unlink_free(v, n);
			}
			pthread_mutex_unlock(&v->lock);
		}
	}
	stop_hashers(v, HASHERS);
	pthread_mutex_lock(&v->lock);
	r = begin(v);
	if (r == 0 && !lost)
		r = idx_meta_set(v->x, "clean_shutdown", "1");
	pthread_mutex_unlock(&v->lock);
	if (r == 0)
		r = vfs_sync(v);
	if (r == 0)
		r = lost;
	if (v->wal_fd >= 0)
		close(v->wal_fd);
	r2 = store_close(v->st);
	if (r == 0)
		r = r2;
	pthread_mutex_destroy(&v->lock);
	pthread_mutex_destroy(&v->sync_lock);
	pthread_rwlock_destroy(&v->gc_lock);
	pthread_cond_destroy(&v->cond);
	pthread_mutex_destroy(&v->hq_lock);
	pthread_cond_destroy(&v->hq_work);
	pthread_cond_destroy(&v->hq_done);
	for (unsigned i = 1; i < v->ntops; i++)
		free(v->tops[i].name);
	free(v->buckets);
	free(v);
	return r;
}

struct store *vfs_store(struct vfs *v)
{
	return v->st;
}

/* ---- gc inside the daemon ---- */

struct evicted_name {
	uint64_t parent;
	char *name;
};

struct gc_ctx {
	struct vfs *v;
	struct evicted_name *names;
	size_t n, cap;
};

static bool gc_skip(void *data, uint64_t ino)
{
	struct gc_ctx *c = data;
	struct vnode *n = node_find(c->v, ino);

	return n && (n->opens > 0 || n->stream || n->staging_fd >= 0);
}

static void gc_evicted(void *data, uint64_t parent, const char *name)
{
	struct gc_ctx *c = data;

	if (c->n == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 64;
		struct evicted_name *nn = realloc(c->names, ncap * sizeof(*nn));

		if (!nn)
			return; /* the kernel's entry then expires by itself */
		c->names = nn;
		c->cap = ncap;
	}
	c->names[c->n].parent = parent;
	c->names[c->n].name = strdup(name);
	if (c->names[c->n].name)
		c->n++;
}

/* gc moved chunks: refresh every cached location; gc_lock held exclusive, v->lock held. */
static void refresh_locations(struct vfs *v)
{
	for (size_t b = 0; b < v->nbuckets; b++) {
		for (struct vnode *n = v->buckets[b]; n; n = n->next) {
			if (n->ext_valid) {
				free(n->ext);
				n->ext = NULL;
				n->ext_valid =
					idx_get_extents(v->x, n->ino, &n->ext, &n->next_count) == 0;
			}
			if (n->stream) {
				struct ext_vec *ev = &n->stream->ev;

				for (size_t i = 0; i < ev->n; i++)
					if (ev->e[i].chunk)
						idx_chunk_loc(v->x, ev->e[i].chunk, &ev->e[i].pack,
							      &ev->e[i].loc);
				/* Jobs hashed but not yet collected (their fields: v->lock). */
				for (size_t i = 0; i < n->stream->njobs; i++) {
					struct idx_extent *e = &n->stream->jobs[i]->e;

					if (e->chunk)
						idx_chunk_loc(v->x, e->chunk, &e->pack, &e->loc);
				}
			}
		}
	}
}

void vfs_request_gc(struct vfs *v)
{
	__atomic_store_n(&v->gc_request, 1, __ATOMIC_SEQ_CST);
}

/* Out of space: reclaim dead space by itself, but not more than every 10 s. */
static int note_enospc(struct vfs *v, int r)
{
	int64_t now = mono_ns(), last = __atomic_load_n(&v->last_auto_gc, __ATOMIC_RELAXED);

	if (r == -ENOSPC && now - last > 10000000000) {
		__atomic_store_n(&v->last_auto_gc, now, __ATOMIC_RELAXED);
		vfs_request_gc(v);
	}
	return r;
}

int vfs_gc(struct vfs *v, uint64_t max_size, struct gc_report *ret)
{
	struct gc_ctx c = {.v = v};
	struct gc_hooks h = {.skip = gc_skip,
			     .evicted = gc_evicted,
			     .data = &c,
			     .live = true,
			     .remote_backed = v->opts.remote != NULL};
	int r;

	pthread_rwlock_wrlock(&v->gc_lock);
	pthread_mutex_lock(&v->lock);
	r = commit_locked(v);
	if (r == 0)
		r = store_seal_active(v->st);
	if (r == 0)
		r = maint_gc(v->st, max_size, NULL, &h, ret);
	refresh_locations(v);
	pthread_mutex_unlock(&v->lock);
	pthread_rwlock_unlock(&v->gc_lock);
	for (size_t i = 0; i < c.n; i++) {
		if (v->opts.evicted)
			v->opts.evicted(v->opts.hook_data, c.names[i].parent, c.names[i].name);
		free(c.names[i].name);
	}
	free(c.names);
	return r;
}

/* ---- namespace ---- */

static int check_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0)
		return -ENOENT;
	if (len > NAME_MAX_LEN)
		return -ENAMETOOLONG;
	if (strchr(name, '/'))
		return -EINVAL;
	return 0;
}

int vfs_lookup(struct vfs *v, uint64_t parent, const char *name, struct stat *ret)
{
	uint64_t ino;
	struct vnode *n;
	int r;

	r = check_name(name);
	if (r < 0)
		return r;
	pthread_mutex_lock(&v->lock);
	r = idx_lookup(v->x, parent, name, &ino);
	if (r == 0)
		r = -ENOENT;
	if (r < 0)
		goto out_unlock;
	r = get_stat(v, ino, ret);
	if (r < 0)
		goto out_unlock;
	n = node_get(v, ino);
	if (!n) {
		r = -ENOMEM;
		goto out_unlock;
	}
	n->nlookup++;
	node_set_top(v, n, parent, name);
out_unlock:
	pthread_mutex_unlock(&v->lock);
	return r;
}

void vfs_forget(struct vfs *v, uint64_t ino, uint64_t nlookup)
{
	struct vnode *n;

	pthread_mutex_lock(&v->lock);
	n = node_find(v, ino);
	if (!n)
		goto out_unlock;
	n->nlookup = nlookup >= n->nlookup ? 0 : n->nlookup - nlookup;
	if (n->nlookup > 0 || n->opens > 0 || n->busy > 0)
		goto out_unlock;
	if (begin(v) == 0)
		reap_if_unused(v, ino);
	n = node_find(v, ino);
	if (n && n->nlookup == 0 && n->opens == 0 && n->busy == 0 && n->staging_fd < 0)
		node_unlink_free(v, n);
out_unlock:
	pthread_mutex_unlock(&v->lock);
}

int vfs_getattr(struct vfs *v, uint64_t ino, struct stat *ret)
{
	int r;

	pthread_mutex_lock(&v->lock);
	r = get_stat(v, ino, ret);
	pthread_mutex_unlock(&v->lock);
	return r;
}

/* Bump mtime and ctime of a directory; v->lock held, in a transaction. */
static int touch_dir(struct vfs *v, uint64_t ino, int64_t now, int nlink_delta)
{
	struct idx_inode in;
	int r = get_inode(v, ino, &in);

	if (r < 0)
		return r;
	in.mtime = in.ctime = now;
	in.nlink = (uint32_t)((int64_t)in.nlink + nlink_delta);
	return idx_put_inode(v->x, &in);
}

/* Create an inode named name in parent; v->lock held. */
static int make_node(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
		     mode_t mode, dev_t rdev, const char *target, struct stat *ret)
{
	struct idx_inode pin, in;
	uint64_t ino, existing;
	struct vnode *n;
	int64_t now = now_ns();
	int r;

	r = check_name(name);
	if (r < 0)
		return r;
	r = begin(v);
	if (r < 0)
		return r;
	r = get_inode(v, parent, &pin);
	if (r < 0)
		return r;
	if (!S_ISDIR(pin.mode))
		return -ENOTDIR;
	if (pin.nlink == 0)
		return -ENOENT; /* creating in a removed directory */
	r = idx_lookup(v->x, parent, name, &existing);
	if (r != 0)
		return r < 0 ? r : -EEXIST;

	memset(&in, 0, sizeof(in));
	in.mode = mode;
	in.uid = c->uid;
	in.gid = c->gid;
	/* BSD group semantics in a setgid directory, as ext4 does. */
	if (pin.mode & S_ISGID) {
		in.gid = pin.gid;
		if (S_ISDIR(mode))
			in.mode |= S_ISGID;
	}
	in.nlink = S_ISDIR(mode) ? 2 : 1;
	in.parent = S_ISDIR(mode) ? parent : 0;
	in.rdev = rdev;
	in.size = target ? strlen(target) : 0;
	in.atime = in.mtime = in.ctime = now;
	r = idx_new_inode(v->x, &in, &ino);
	if (r < 0)
		return r;
	in.ino = ino;
	if (target) {
		r = idx_set_target(v->x, ino, target);
		if (r < 0)
			return r;
	}
	r = idx_add_dentry(v->x, parent, name, ino);
	if (r < 0)
		return r;
	r = touch_dir(v, parent, now, S_ISDIR(mode) ? 1 : 0);
	if (r < 0)
		return r;
	n = node_get(v, ino);
	if (!n)
		return -ENOMEM;
	n->nlookup++;
	node_set_top(v, n, parent, name);
	stat_from_inode(&in, ret);
	return 0;
}

int vfs_mknod(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
	      mode_t mode, dev_t rdev, struct stat *ret)
{
	int r;

	switch (mode & S_IFMT) {
	case S_IFREG:
	case S_IFIFO:
	case S_IFSOCK:
	case S_IFCHR:
	case S_IFBLK:
		break;
	case 0:
		mode |= S_IFREG;
		break;
	default:
		return -EINVAL;
	}
	pthread_mutex_lock(&v->lock);
	r = op_begin(v);
	if (r == 0)
		r = op_end(v, make_node(v, c, parent, name, mode, rdev, NULL, ret));
	pthread_mutex_unlock(&v->lock);
	return r;
}

int vfs_mkdir(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
	      mode_t mode, struct stat *ret)
{
	int r;

	pthread_mutex_lock(&v->lock);
	r = op_begin(v);
	if (r == 0)
		r = op_end(v,
			   make_node(v, c, parent, name, S_IFDIR | (mode & 07777), 0, NULL, ret));
	pthread_mutex_unlock(&v->lock);
	return r;
}

int vfs_symlink(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
		const char *target, struct stat *ret)
{
	int r;

	if (strlen(target) >= 4096)
		return -ENAMETOOLONG;
	pthread_mutex_lock(&v->lock);
	r = op_begin(v);
	if (r == 0)
		r = op_end(v, make_node(v, c, parent, name, S_IFLNK | 0777, 0, target, ret));
	pthread_mutex_unlock(&v->lock);
	return r;
}

int vfs_readlink(struct vfs *v, uint64_t ino, char *buf, size_t len)
{
	int r;

	pthread_mutex_lock(&v->lock);
	r = idx_get_target(v->x, ino, buf, len);
	pthread_mutex_unlock(&v->lock);
	if (r == 0)
		return -EINVAL;
	return r < 0 ? r : 0;
}

int vfs_link(struct vfs *v, uint64_t ino, uint64_t newparent, const char *newname, struct stat *ret)
{
	struct idx_inode in;
	uint64_t existing;
	struct vnode *n;
	int64_t now = now_ns();
	int r;

	r = check_name(newname);
	if (r < 0)
		return r;
	pthread_mutex_lock(&v->lock);
	r = op_begin(v);
	if (r < 0) {
		pthread_mutex_unlock(&v->lock);
		return r;
	}
	r = get_inode(v, ino, &in);
	if (r < 0)
		goto out_unlock;
	if (S_ISDIR(in.mode)) {
		r = -EPERM;
		goto out_unlock;
	}
	if (in.nlink >= 65000) {
		r = -EMLINK;
		goto out_unlock;
	}
	r = idx_lookup(v->x, newparent, newname, &existing);
	if (r != 0) {
		r = r < 0 ? r : -EEXIST;
		goto out_unlock;
	}
	r = idx_add_dentry(v->x, newparent, newname, ino);
	if (r < 0)
		goto out_unlock;
	in.nlink++;
	in.ctime = now;
	r = idx_put_inode(v->x, &in);
	if (r == 0)
		r = touch_dir(v, newparent, now, 0);
	if (r < 0)
		goto out_unlock;
	n = node_get(v, ino);
	if (!n) {
		r = -ENOMEM;
		goto out_unlock;
	}
	n->nlookup++;
	stat_from_inode(&in, ret);
	apply_override(v, ret);
	ret->st_ctim = ns_ts(now);
	if (n->staged)
		n->ctime = now;
out_unlock:
	r = op_end(v, r);
	pthread_mutex_unlock(&v->lock);
	return r;
}

/* Drop one name of ino; v->lock held, in a transaction. */
static int drop_name(struct vfs *v, uint64_t ino, int64_t now)
{
	struct idx_inode in;
	struct vnode *n;
	int r = get_inode(v, ino, &in);

	if (r < 0)
		return r;
	if (S_ISDIR(in.mode))
		in.nlink = 0;
	else if (in.nlink > 0)
		in.nlink--;
	in.ctime = now;
	n = node_find(v, ino);
	if (n && n->staged)
		n->ctime = now;
	r = idx_put_inode(v->x, &in);
	if (r < 0)
		return r;
	return in.nlink == 0 ? reap_if_unused(v, ino) : 0;
}

/* unlink (dir false) and rmdir (dir true): drop the name, and the inode with its last name. */
static int remove_name(struct vfs *v, uint64_t parent, const char *name, bool dir)
{
	struct idx_inode in;
	uint64_t ino;
	int64_t now = now_ns();
	int r;

	pthread_mutex_lock(&v->lock);
	r = op_begin(v);
	if (r < 0) {
		pthread_mutex_unlock(&v->lock);
		return r;
	}
	r = lookup(v, parent, name, &ino);
	if (r < 0)
		goto out_unlock;
	r = get_inode(v, ino, &in);
	if (r < 0)
		goto out_unlock;
	if (!dir && S_ISDIR(in.mode)) {
		r = -EISDIR;
		goto out_unlock;
	}
	if (dir && !S_ISDIR(in.mode)) {
		r = -ENOTDIR;
		goto out_unlock;
	}
	if (dir) {
		r = idx_dir_is_empty(v->x, ino);
		if (r <= 0) {
			r = r < 0 ? r : -ENOTEMPTY;
			goto out_unlock;
		}
	}
	r = idx_del_dentry(v->x, parent, name);
	if (r == 0)
		r = touch_dir(v, parent, now, dir ? -1 : 0); /* a subdirectory's ".." link */
	if (r == 0)
		r = drop_name(v, ino, now);
out_unlock:
	r = op_end(v, r);
	pthread_mutex_unlock(&v->lock);
	return r;
}

int vfs_unlink(struct vfs *v, uint64_t parent, const char *name)
{
	return remove_name(v, parent, name, false);
}

int vfs_rmdir(struct vfs *v, uint64_t parent, const char *name)
{
	if (strcmp(name, ".") == 0)
		return -EINVAL;
	if (strcmp(name, "..") == 0)
		return -ENOTEMPTY;
	return remove_name(v, parent, name, true);
}

/* 1 when dir is anc or below it; v->lock held. */
static int is_descendant(struct vfs *v, uint64_t dir, uint64_t anc)
{
	struct idx_inode in;
	unsigned depth = 0;

	while (depth++ < 100000) {
		int r;

		if (dir == anc)
			return 1;
		if (dir == IDX_ROOT_INO)
			return 0;
		r = idx_get_inode(v->x, dir, &in);
		if (r <= 0)
			return r < 0 ? r : 0;
		dir = in.parent;
	}
	return -ELOOP;
}

static int set_ctime(struct vfs *v, struct idx_inode *in, int64_t now)
{
	struct vnode *n = node_find(v, in->ino);

	in->ctime = now;
	if (n && n->staged)
		n->ctime = now;
	return idx_put_inode(v->x, in);
}

static int rename_locked(struct vfs *v, uint64_t parent, const char *name, uint64_t newparent,
			 const char *newname, unsigned flags)
{
	struct idx_inode src, dst;
	uint64_t sino, dino = 0;
	int64_t now = now_ns();
	bool sdir, ddir = false;
	int r;

	r = check_name(newname);
	if (r < 0)
		return r;
	r = begin(v);
	if (r < 0)
		return r;
	r = lookup(v, parent, name, &sino);
	if (r < 0)
		return r;
	r = get_inode(v, sino, &src);
	if (r < 0)
		return r;
	sdir = S_ISDIR(src.mode);
	r = idx_lookup(v->x, newparent, newname, &dino);
	if (r < 0)
		return r;
	if (r == 1) {
		r = get_inode(v, dino, &dst);
		if (r < 0)
			return r;
		ddir = S_ISDIR(dst.mode);
	} else {
		dino = 0;
	}
	if ((flags & RENAME_EXCHANGE) && !dino)
		return -ENOENT;
	if ((flags & RENAME_NOREPLACE) && dino)
		return -EEXIST;
	if (dino == sino)
		return 0; /* two names of one inode: POSIX says do nothing */

	/* A directory may not move below itself. */
	if (sdir && parent != newparent) {
		r = is_descendant(v, newparent, sino);
		if (r != 0)
			return r < 0 ? r : -EINVAL;
	}
	if ((flags & RENAME_EXCHANGE) && ddir && parent != newparent) {
		r = is_descendant(v, parent, dino);
		if (r != 0)
			return r < 0 ? r : -EINVAL;
	}

	if (flags & RENAME_EXCHANGE) {
		r = idx_set_dentry(v->x, parent, name, dino);
		if (r == 0)
			r = idx_set_dentry(v->x, newparent, newname, sino);
		if (r < 0)
			return r;
		if (parent != newparent && sdir != ddir) {
			/* The directory moved; link counts of the parents follow it. */
			r = touch_dir(v, parent, now, sdir ? -1 : 1);
			if (r == 0)
				r = touch_dir(v, newparent, now, sdir ? 1 : -1);
		} else {
			r = touch_dir(v, parent, now, 0);
			if (r == 0 && parent != newparent)
				r = touch_dir(v, newparent, now, 0);
		}
		if (r < 0)
			return r;
		if (sdir)
			src.parent = newparent;
		if (ddir)
			dst.parent = parent;
		r = set_ctime(v, &src, now);
		if (r == 0)
			r = set_ctime(v, &dst, now);
		return r;
	}

	if (dino) {
		if (sdir && !ddir)
			return -ENOTDIR;
		if (!sdir && ddir)
			return -EISDIR;
		if (ddir) {
			r = idx_dir_is_empty(v->x, dino);
			if (r <= 0)
				return r < 0 ? r : -ENOTEMPTY;
		}
		r = idx_set_dentry(v->x, newparent, newname, sino);
		if (r == 0 && ddir)
			r = touch_dir(v, newparent, now, -1); /* the replaced directory's link */
		if (r == 0)
			r = drop_name(v, dino, now);
	} else {
		r = idx_add_dentry(v->x, newparent, newname, sino);
	}
	if (r < 0)
		return r;
	r = idx_del_dentry(v->x, parent, name);
	if (r < 0)
		return r;
	if (parent != newparent) {
		r = touch_dir(v, parent, now, sdir ? -1 : 0);
		if (r == 0)
			r = touch_dir(v, newparent, now, sdir ? 1 : 0);
	} else {
		r = touch_dir(v, parent, now, 0);
	}
	if (r < 0)
		return r;
	if (sdir)
		src.parent = newparent;
	return set_ctime(v, &src, now);
}

int vfs_rename(struct vfs *v, uint64_t parent, const char *name, uint64_t newparent,
	       const char *newname, unsigned flags)
{
	int r;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE))
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	r = op_begin(v);
	if (r == 0)
		r = op_end(v, rename_locked(v, parent, name, newparent, newname, flags));
	pthread_mutex_unlock(&v->lock);
	return r;
}

/* ---- attributes ---- */

/*
 * Truncation to zero, the common case (O_TRUNC): no copy of the old content, just empty
 * extents; the next write at 0 streams. gc_lock and rw held.
 */
static int truncate_to_zero(struct vfs *v, struct vnode *n)
{
	struct ext_vec none = {0};
	int64_t now = now_ns();
	int r;

	if (n->staging_fd >= 0) {
		if (ftruncate(n->staging_fd, 0) < 0)
			return -errno;
		pthread_mutex_lock(&v->lock);
		n->size = 0;
		n->mtime = n->ctime = now;
		pthread_mutex_unlock(&v->lock);
		n->dirty = true;
		return 0;
	}
	stream_discard(v, n);
	pthread_mutex_lock(&v->lock);
	n->mtime = n->ctime = now;
	r = set_content(v, n, &none, 0);
	if (r == 0)
		n->staged = false;
	pthread_mutex_unlock(&v->lock);
	return r;
}

static int truncate_node(struct vfs *v, struct vnode *n, uint64_t size, bool keep_staged)
{
	int r;

	pthread_rwlock_rdlock(&v->gc_lock);
	pthread_rwlock_wrlock(&n->rw);
	if (size == 0) {
		r = truncate_to_zero(v, n);
		goto out_unlock;
	}
	r = stage(v, n);
	if (r < 0)
		goto out_unlock;
	if (ftruncate(n->staging_fd, (off_t)size) < 0) {
		r = -errno;
		goto out_unlock;
	}
	pthread_mutex_lock(&v->lock);
	n->size = size;
	n->mtime = n->ctime = now_ns();
	pthread_mutex_unlock(&v->lock);
	n->dirty = true;
	if (!keep_staged) {
		r = commit_node(v, n);
		if (r == 0)
			unstage(v, n);
	}
out_unlock:
	pthread_rwlock_unlock(&n->rw);
	pthread_rwlock_unlock(&v->gc_lock);
	return r;
}

int vfs_setattr(struct vfs *v, uint64_t ino, const struct stat *attr, int to_set,
		struct vfs_file *f, struct stat *ret)
{
	struct idx_inode in;
	struct vnode *n;
	int64_t now = now_ns();
	bool keep_staged;
	int r;

	if (to_set & VFS_SET_SIZE) {
		pthread_mutex_lock(&v->lock);
		r = idx_get_inode(v->x, ino, &in);
		if (r == 1 && S_ISDIR(in.mode))
			r = -EISDIR;
		else if (r == 1 && !S_ISREG(in.mode))
			r = -EINVAL;
		n = node_get(v, ino);
		if (n)
			n->busy++; /* keep the node while truncating */
		/* An open file stays staged until its last close commits it. */
		keep_staged = f || (n && n->opens > 0);
		pthread_mutex_unlock(&v->lock);
		if (!n)
			return -ENOMEM;
		if (r == 1)
			r = truncate_node(v, n, (uint64_t)attr->st_size, keep_staged);
		else if (r == 0)
			r = -ENOENT;
		pthread_mutex_lock(&v->lock);
		n->busy--;
		pthread_mutex_unlock(&v->lock);
		if (r < 0)
			return r;
	}

	pthread_mutex_lock(&v->lock);
	r = op_begin(v);
	if (r < 0) {
		pthread_mutex_unlock(&v->lock);
		return r;
	}
	r = get_inode(v, ino, &in);
	if (r < 0)
		goto out_unlock;
	n = node_find(v, ino);
	if (to_set & VFS_SET_MODE)
		in.mode = (in.mode & S_IFMT) | (attr->st_mode & 07777);
	if (to_set & VFS_SET_UID)
		in.uid = attr->st_uid;
	if (to_set & VFS_SET_GID)
		in.gid = attr->st_gid;
	if (to_set & VFS_SET_ATIME_NOW)
		in.atime = now;
	else if (to_set & VFS_SET_ATIME)
		in.atime = ts_ns(&attr->st_atim);
	if (to_set & VFS_SET_MTIME_NOW)
		in.mtime = now;
	else if (to_set & VFS_SET_MTIME)
		in.mtime = ts_ns(&attr->st_mtim);
	/* Any change but a pure truncation (its ctime comes with the data), and a chown to
	 * -1:-1 (no bits at all), moves ctime, as on ext4. */
	if (to_set & VFS_SET_CTIME)
		in.ctime = ts_ns(&attr->st_ctim);
	else if ((to_set & ~(VFS_SET_SIZE)) || to_set == 0)
		in.ctime = now;
	if (n && n->staged) {
		if (to_set & (VFS_SET_MTIME | VFS_SET_MTIME_NOW))
			n->mtime = in.mtime;
		else
			in.mtime = n->mtime;
		if ((to_set & ~(VFS_SET_SIZE)) || to_set == 0)
			n->ctime = in.ctime;
		else
			in.ctime = n->ctime;
		in.size = n->size;
	}
	r = idx_put_inode(v->x, &in);
	if (r < 0)
		goto out_unlock;
	stat_from_inode(&in, ret);
	apply_override(v, ret);
out_unlock:
	r = op_end(v, r);
	pthread_mutex_unlock(&v->lock);
	return r;
}

/* ---- open files ---- */

static int file_new(struct vnode *n, struct vfs_file **ret)
{
	struct vfs_file *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->n = n;
	pthread_mutex_init(&f->cache_lock, NULL);
	*ret = f;
	return 0;
}

static int open_node(struct vfs *v, struct vnode *n, struct vfs_file **ret_f)
{
	int r;

	r = file_new(n, ret_f);
	if (r < 0)
		return r;
	lock_for_commit(v, n);
	if (n->staging_fd < 0 && !n->stream) {
		r = load_extents(v, n);
		/* Whole-file prefetch: a file opened is about to be read whole, as a rule. */
		if (r == 0 && v->fetcher)
			fetcher_prefetch(v->fetcher, n->ext, n->next_count);
	}
	unlock_for_commit(v, n);
	if (r < 0) {
		free(*ret_f);
		return r;
	}
	return 0;
}

int vfs_create(struct vfs *v, const struct vfs_ctx *c, uint64_t parent, const char *name,
	       mode_t mode, int flags, struct stat *ret, struct vfs_file **ret_f)
{
	struct vnode *n;
	int r;

	pthread_mutex_lock(&v->lock);
	r = op_begin(v);
	if (r == 0)
		r = op_end(v,
			   make_node(v, c, parent, name, S_IFREG | (mode & 07777), 0, NULL, ret));
	if (r < 0) {
		pthread_mutex_unlock(&v->lock);
		return r;
	}
	n = node_find(v, ret->st_ino);
	n->opens++;
	pthread_mutex_unlock(&v->lock);
	r = open_node(v, n, ret_f);
	if (r < 0) {
		pthread_mutex_lock(&v->lock);
		n->opens--;
		pthread_mutex_unlock(&v->lock);
	}
	return r;
}

int vfs_open_file(struct vfs *v, uint64_t ino, int flags, struct vfs_file **ret_f)
{
	struct stat st;
	struct vnode *n;
	int r;

	pthread_mutex_lock(&v->lock);
	r = get_stat(v, ino, &st);
	if (r == 0 && S_ISDIR(st.st_mode))
		r = -EISDIR;
	n = r == 0 ? node_get(v, ino) : NULL;
	if (r == 0 && !n)
		r = -ENOMEM;
	if (r == 0)
		n->opens++;
	if (r == 0 && v->opts.max_size && begin(v) == 0)
		idx_touch_used(v->x, ino, now_ns() / 1000000000);
	/* The access trace: what this job used, for the next job's prefetch and for retention. */
	if (r == 0 && v->fetcher && begin(v) == 0)
		idx_trace_add(v->x, ino, now_ns());
	pthread_mutex_unlock(&v->lock);
	if (r < 0)
		return r;
	r = open_node(v, n, ret_f);
	if (r == 0 && (flags & O_TRUNC)) {
		/*
		 * The kernel passes O_TRUNC to open when it does not truncate first. Linux
		 * truncates on O_RDONLY | O_TRUNC too (having checked write permission): so do we
		 * (found by tests/difftest).
		 */
		pthread_rwlock_rdlock(&v->gc_lock);
		pthread_rwlock_wrlock(&n->rw);
		r = truncate_to_zero(v, n);
		pthread_rwlock_unlock(&n->rw);
		pthread_rwlock_unlock(&v->gc_lock);
		if (r < 0)
			vfs_release(v, *ret_f);
		return r;
	}
	if (r < 0) {
		pthread_mutex_lock(&v->lock);
		n->opens--;
		pthread_mutex_unlock(&v->lock);
	}
	return r;
}

static ssize_t read_file(struct vfs *v, struct vfs_file *f, void *buf, size_t size, off_t off,
			 bool *fetched)
{
	struct vnode *n = f->n;
	uint64_t file_size;
	ssize_t r;

	if (off < 0)
		return -EINVAL;
	pthread_rwlock_rdlock(&v->gc_lock);
	pthread_rwlock_rdlock(&n->rw);
	if (n->stream) {
		/* Reading a file being streamed: give it a staging file to read from. */
		pthread_rwlock_unlock(&n->rw);
		pthread_rwlock_wrlock(&n->rw);
		r = n->stream ? stream_spill(v, n) : 0;
		pthread_rwlock_unlock(&n->rw);
		if (r < 0) {
			pthread_rwlock_unlock(&v->gc_lock);
			return r;
		}
		pthread_rwlock_rdlock(&n->rw);
	}
	if (n->staging_fd >= 0) {
		r = pread(n->staging_fd, buf, size, off);
		if (r < 0)
			r = -errno;
		goto out_unlock;
	}
	pthread_mutex_lock(&v->lock);
	{
		struct stat st;

		r = get_stat(v, n->ino, &st);
		file_size = (uint64_t)st.st_size;
	}
	pthread_mutex_unlock(&v->lock);
	if (r < 0)
		goto out_unlock;
	if (!n->ext_valid) {
		r = -EIO;
		goto out_unlock;
	}
	r = read_committed(v, f, n, buf, size, (uint64_t)off, file_size, fetched);
out_unlock:
	pthread_rwlock_unlock(&n->rw);
	pthread_rwlock_unlock(&v->gc_lock);
	return r;
}

ssize_t vfs_read(struct vfs *v, struct vfs_file *f, void *buf, size_t size, off_t off)
{
	bool fetched = false;
	ssize_t r = read_file(v, f, buf, size, off, &fetched);

	count_read(v, f->n, r, fetched);
	return r;
}

ssize_t vfs_write(struct vfs *v, struct vfs_file *f, const void *buf, size_t size, off_t off,
		  void (*early_reply)(void *ctx, size_t n), void *ctx)
{
	struct vnode *n = f->n;
	ssize_t r;

	if (off < 0)
		return -EINVAL;
	pthread_rwlock_rdlock(&v->gc_lock);
	pthread_rwlock_wrlock(&n->rw);
	if (!n->stream && n->staging_fd < 0 && off == 0) {
		struct stat st;

		pthread_mutex_lock(&v->lock);
		r = get_stat(v, n->ino, &st);
		pthread_mutex_unlock(&v->lock);
		if (r < 0)
			goto out_unlock;
		if (st.st_size == 0) {
			r = stream_start(v, n);
			if (r < 0)
				goto out_unlock;
		}
	}
	if (n->stream && (uint64_t)off == n->stream->base + n->stream->len) {
		/* A full disk fails the write itself, not only the close that follows. */
		pthread_mutex_lock(&v->lock);
		r = store_check_space(v->st, size);
		pthread_mutex_unlock(&v->lock);
		if (r < 0)
			goto out_unlock;
		r = stream_add(v, n, buf, size);
		if (r < 0)
			goto out_unlock;
		r = (ssize_t)size;
		pthread_mutex_lock(&v->lock);
		n->size = (uint64_t)off + size;
		n->mtime = n->ctime = now_ns();
		pthread_mutex_unlock(&v->lock);
		/*
		 * The bytes are ours: let the writer go on while we chunk and hash them, so its
		 * next write crosses the kernel while this one is digested. A failure to store
		 * them is reported by flush (close) and fsync, as a page cache's would be.
		 */
		if (early_reply) {
			early_reply(ctx, size);
			stream_process(v, n);
		} else {
			int e = stream_process(v, n);

			if (e == -ENOMEM)
				r = e;
		}
		goto out_unlock;
	}
	r = stage(v, n);
	if (r < 0)
		goto out_unlock;
	pthread_mutex_lock(&v->lock);
	r = store_check_space(v->st, size);
	pthread_mutex_unlock(&v->lock);
	if (r < 0)
		goto out_unlock;
	r = pwrite(n->staging_fd, buf, size, off);
	if (r < 0) {
		r = -errno;
		goto out_unlock;
	}
	n->dirty = true;
	pthread_mutex_lock(&v->lock);
	if ((uint64_t)off + (uint64_t)r > n->size)
		n->size = (uint64_t)off + (uint64_t)r;
	n->mtime = n->ctime = now_ns();
	pthread_mutex_unlock(&v->lock);
out_unlock:
	pthread_rwlock_unlock(&n->rw);
	pthread_rwlock_unlock(&v->gc_lock);
	if (r == -ENOSPC)
		note_enospc(v, -ENOSPC);
	return r;
}

int vfs_flush(struct vfs *v, struct vfs_file *f)
{
	struct vnode *n = f->n;
	int r;

	lock_for_commit(v, n);
	r = commit_node_gc(v, n);
	unlock_for_commit(v, n);
	return note_enospc(v, r);
}

int vfs_fsync(struct vfs *v, struct vfs_file *f, bool datasync)
{
	int r = 0;

	if (f)
		r = vfs_flush(v, f);
	if (r == 0)
		r = vfs_sync(v);
	return r;
}

void vfs_release(struct vfs *v, struct vfs_file *f)
{
	struct vnode *n = f->n;
	uint64_t ino = n->ino;
	bool last;
	int r;

	/*
	 * Decide whether this is the last close under the file's lock: an open racing with this
	 * release either counted itself before (then this is not the last) or loads the extents
	 * after we are done with them.
	 */
	lock_for_commit(v, n);
	pthread_mutex_lock(&v->lock);
	last = n->opens == 1;
	pthread_mutex_unlock(&v->lock);
	if (last) {
		r = commit_node_gc(v, n);
		if (r < 0) {
			log_warn("inode %llu: changes lost at close: %s", (unsigned long long)ino,
				 strerror(-r));
			stream_discard(v, n);
		}
		unstage(v, n);
		/* Closed files keep no extents in memory: 100k files must not cost 100k lists. */
		free(n->ext);
		n->ext = NULL;
		n->next_count = 0;
		n->ext_valid = false;
	}
	unlock_for_commit(v, n);
	pthread_mutex_lock(&v->lock);
	n->opens--;
	if (n->opens == 0 && n->nlookup == 0 && n->busy == 0) {
		if (begin(v) == 0)
			reap_if_unused(v, ino);
		n = node_find(v, ino); /* reaping may have freed it */
		if (n && n->opens == 0 && n->nlookup == 0 && n->busy == 0 && n->staging_fd < 0 &&
		    !n->stream)
			node_unlink_free(v, n);
	}
	pthread_mutex_unlock(&v->lock);
	pthread_mutex_destroy(&f->cache_lock);
	free(f->cache);
	free(f);
}

/* ---- directories ---- */

struct dir_list {
	struct vfs *v;
	uint64_t dir;
	bool lookup;
	int (*cb)(const char *name, const struct stat *st, uint64_t next_off, void *data);
	void *data;
};

/* Offsets: 0 ".", 1 "..", then an entry's cookie + 2. */
static int dir_entry(const char *name, const struct idx_inode *in, uint64_t cookie, void *data)
{
	struct dir_list *dl = data;
	struct stat st;
	int r;

	stat_from_inode(in, &st);
	apply_override(dl->v, &st);
	r = dl->cb(name, &st, cookie + 2, dl->data);
	if (r == 0 && dl->lookup) {
		struct vnode *n = node_get(dl->v, in->ino);

		if (!n)
			return -ENOMEM;
		n->nlookup++;
		node_set_top(dl->v, n, dl->dir, name);
	}
	return r;
}

int vfs_readdir(struct vfs *v, uint64_t ino, uint64_t off, bool lookup,
		int (*cb)(const char *name, const struct stat *st, uint64_t next_off, void *data),
		void *data)
{
	struct dir_list dl = {.v = v, .dir = ino, .lookup = lookup, .cb = cb, .data = data};
	struct idx_inode in, pin;
	struct stat st;
	int r;

	pthread_mutex_lock(&v->lock);
	r = get_inode(v, ino, &in);
	if (r < 0)
		goto out_unlock;
	if (!S_ISDIR(in.mode)) {
		r = -ENOTDIR;
		goto out_unlock;
	}
	if (off == 0) {
		stat_from_inode(&in, &st);
		if (cb(".", &st, 1, data))
			goto out_unlock;
	}
	if (off <= 1) {
		if (idx_get_inode(v->x, in.parent, &pin) != 1)
			pin = in;
		stat_from_inode(&pin, &st);
		if (cb("..", &st, 2, data))
			goto out_unlock;
	}
	r = idx_list_dir(v->x, ino, off > 2 ? off - 2 : 0, dir_entry, &dl);
	if (r > 0)
		r = 0; /* the caller's buffer is full */
out_unlock:
	pthread_mutex_unlock(&v->lock);
	return r;
}

int vfs_statfs(struct vfs *v, struct statvfs *ret)
{
	struct statvfs sv;
	char path[4096];

	snprintf(path, sizeof(path), "%s", store_dir(v->st));
	if (statvfs(path, &sv) < 0)
		return -errno;
	memset(ret, 0, sizeof(*ret));
	ret->f_bsize = 4096;
	ret->f_frsize = 4096;
	ret->f_blocks = (fsblkcnt_t)((uint64_t)sv.f_blocks * sv.f_frsize / 4096);
	ret->f_bfree = (fsblkcnt_t)((uint64_t)sv.f_bfree * sv.f_frsize / 4096);
	ret->f_bavail = (fsblkcnt_t)((uint64_t)sv.f_bavail * sv.f_frsize / 4096);
	ret->f_files = 1ull << 32;
	ret->f_ffree = (1ull << 32) - 1024;
	ret->f_favail = ret->f_ffree;
	ret->f_namemax = NAME_MAX_LEN;
	return 0;
}

/* ---- xattrs ---- */

static int check_xattr_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > 255)
		return -ERANGE;
	/* ACLs are not supported (the kernel checks modes); system.* names go nowhere. */
	if (strncmp(name, "user.", 5) && strncmp(name, "trusted.", 8) &&
	    strncmp(name, "security.", 9))
		return -EOPNOTSUPP;
	return 0;
}

static int touch_ctime(struct vfs *v, uint64_t ino)
{
	struct idx_inode in;
	int r = get_inode(v, ino, &in);

	if (r < 0)
		return r;
	return set_ctime(v, &in, now_ns());
}

int vfs_setxattr(struct vfs *v, uint64_t ino, const char *name, const void *value, size_t size,
		 int flags)
{
	int r = check_xattr_name(name);

	if (r < 0)
		return r;
	if (size > XATTR_VALUE_MAX)
		return -E2BIG;
	pthread_mutex_lock(&v->lock);
	r = op_begin(v);
	if (r == 0) {
		r = idx_set_xattr(v->x, ino, name, value, size,
				  (flags & XATTR_CREATE ? IDX_XATTR_CREATE : 0) |
					  (flags & XATTR_REPLACE ? IDX_XATTR_REPLACE : 0));
		if (r == 0)
			r = touch_ctime(v, ino);
		r = op_end(v, r);
	}
	pthread_mutex_unlock(&v->lock);
	return r;
}

int vfs_getxattr(struct vfs *v, uint64_t ino, const char *name, void *buf, size_t size)
{
	int r = check_xattr_name(name);

	if (r == -EOPNOTSUPP)
		return -ENODATA;
	if (r < 0)
		return r;
	pthread_mutex_lock(&v->lock);
	r = idx_get_xattr(v->x, ino, name, buf, size);
	pthread_mutex_unlock(&v->lock);
	if (r >= 0 && size > 0 && (size_t)r > size)
		return -ERANGE;
	return r;
}

int vfs_listxattr(struct vfs *v, uint64_t ino, char *buf, size_t size)
{
	int r;

	pthread_mutex_lock(&v->lock);
	r = idx_list_xattr(v->x, ino, buf, size);
	pthread_mutex_unlock(&v->lock);
	if (r >= 0 && size > 0 && (size_t)r > size)
		return -ERANGE;
	return r;
}

int vfs_removexattr(struct vfs *v, uint64_t ino, const char *name)
{
	int r = check_xattr_name(name);

	if (r == -EOPNOTSUPP)
		return -ENODATA;
	if (r < 0)
		return r;
	pthread_mutex_lock(&v->lock);
	r = op_begin(v);
	if (r == 0) {
		r = idx_remove_xattr(v->x, ino, name);
		if (r == 0)
			r = touch_ctime(v, ino);
		r = op_end(v, r);
	}
	pthread_mutex_unlock(&v->lock);
	return r;
}

void vfs_fetch_stats(struct vfs *v, struct fetcher_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	if (v->fetcher)
		fetcher_get_stats(v->fetcher, ret);
}

void vfs_fetch_drain(struct vfs *v)
{
	if (v->fetcher)
		fetcher_drain(v->fetcher);
}

int vfs_push(struct vfs *v, const struct sync_options *o, struct sync_report *ret)
{
	int r;

	if (!v->opts.remote)
		return -ENOTCONN;
	/* gc must not reclaim chunks the push is copying. */
	pthread_rwlock_rdlock(&v->gc_lock);
	pthread_mutex_lock(&v->lock);
	r = commit_locked(v);
	pthread_mutex_unlock(&v->lock);
	if (r == 0)
		r = sync_push(v->st, v->opts.remote, &v->lock, o, ret);
	pthread_rwlock_unlock(&v->gc_lock);
	return r;
}

void vfs_prefetch_ino(struct vfs *v, uint64_t ino)
{
	struct idx_extent *ext = NULL;
	size_t n = 0;
	int r;

	if (!v->fetcher)
		return;
	pthread_mutex_lock(&v->lock);
	r = idx_get_extents(v->x, ino, &ext, &n);
	pthread_mutex_unlock(&v->lock);
	if (r == 0)
		fetcher_prefetch(v->fetcher, ext, n);
	free(ext);
}
