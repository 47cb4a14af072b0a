/* SPDX-License-Identifier: MIT */
/*
 * The vfs object: open and close (with the crash recovery of vfs_open), the node table, the
 * read counters, the transaction every change joins, group commit (vfs_sync and the commit
 * thread), and the glue to the remote (fetcher, push, prefetch). vfs_priv.h lists the other
 * files of the vfs; docs/architecture.md, "Locks", the locks.
 *
 * Locks: the node table, the counters' names and the transaction are under v->lock; vfs_sync
 * takes v->lock, then (after dropping it) v->sync_lock for the WAL's fdatasync; the commit
 * thread holds v->lock while it commits and drops it while gc runs, while it syncs the pack
 * ahead of a commit and while it checkpoints the index (so no request waits for an fsync).
 */
#include "vfs_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "maint.h"
#include "util.h"

/* ---- node table (v->lock held) ---- */

struct vnode *vfs_node_find(struct vfs *v, uint64_t ino)
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

struct vnode *vfs_node_get(struct vfs *v, uint64_t ino)
{
	struct vnode *n = vfs_node_find(v, ino);

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
void vfs_node_set_top(struct vfs *v, struct vnode *n, uint64_t parent, const char *name)
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
		struct vnode *p = vfs_node_find(v, parent);

		top = p ? __atomic_load_n(&p->top, __ATOMIC_RELAXED) : 0;
	}
	__atomic_store_n(&n->top, top, __ATOMIC_RELAXED);
}

/* Count one read of n that returned r (bytes or -errno). No lock needed. */
void vfs_count_read(struct vfs *v, struct vnode *n, ssize_t r, bool fetched)
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

	vfs_lock(v);
	for (unsigned i = 0; i < v->ntops && r == 0; i++) {
		uint64_t val[CTR_COUNT], any = 0;

		for (int k = 0; k < CTR_COUNT; k++)
			any |= val[k] = __atomic_load_n(&v->tops[i].c[k], __ATOMIC_RELAXED);
		if (any)
			r = counters_add(c, i ? v->tops[i].name : CTR_OTHER, val);
	}
	vfs_unlock(v);
	return r;
}

void vfs_node_free(struct vfs *v, struct vnode *n)
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
		vfs_unpin(v, &n->stream->ev);
		free(n->stream->ev.e);
		free(n->stream->buf);
		free(n->stream);
	}
	free(n->ext);
	pthread_rwlock_destroy(&n->rw);
	free(n);
}

/* An inode with no names left goes once nothing holds it; v->lock held, in a transaction. */
int vfs_reap_if_unused(struct vfs *v, uint64_t ino)
{
	struct vnode *n = vfs_node_find(v, ino);
	struct idx_inode in;
	int r;

	if (n && (n->nlookup > 0 || n->opens > 0 || n->busy > 0))
		return 0;
	r = idx_get_inode(v->x, ino, &in);
	if (r <= 0 || in.nlink > 0)
		return r;
	r = idx_delete_inode(v->x, ino);
	if (r == 0 && n) {
		/* A staging file exists only while its fd is open (the store empties the staging
		 * directory at open): an unlinkat per deleted file would cost rm -rf a failed
		 * syscall each. */
		if (n->staging_fd >= 0) {
			char name[32];

			snprintf(name, sizeof(name), "%llu", (unsigned long long)ino);
			unlinkat(store_staging_fd(v->st), name, 0);
		}
		vfs_node_free(v, n);
	}
	return r;
}

/* An inode that must exist: 0, -ENOENT, or -errno; v->lock held. */
int vfs_get_inode(struct vfs *v, uint64_t ino, struct idx_inode *ret)
{
	int r = idx_get_inode(v->x, ino, ret);

	return r == 1 ? 0 : r == 0 ? -ENOENT : r;
}

/* A name that must exist: 0 with its inode number, -ENOENT, or -errno; v->lock held. */
int vfs_lookup_ino(struct vfs *v, uint64_t parent, const char *name, uint64_t *ret_ino)
{
	int r = idx_lookup(v->x, parent, name, ret_ino);

	return r == 1 ? 0 : r == 0 ? -ENOENT : r;
}

/* Apply a staged node's in-memory attributes; v->lock held. */
void vfs_apply_override(struct vfs *v, struct stat *st)
{
	struct vnode *n = vfs_node_find(v, st->st_ino);

	if (!n || !n->staged)
		return;
	st->st_size = (off_t)n->size;
	st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
	st->st_mtim = ns_ts(n->mtime);
	st->st_ctim = ns_ts(n->ctime);
}

/* Read an inode with overrides applied; v->lock held. 0, -ENOENT or -errno. */
int vfs_get_stat(struct vfs *v, uint64_t ino, struct stat *st)
{
	struct idx_inode in;
	int r = idx_get_inode(v->x, ino, &in);

	if (r == 0)
		return -ENOENT;
	if (r < 0)
		return r;
	stat_from_inode(&in, st);
	vfs_apply_override(v, st);
	return 0;
}

/* ---- commit and durability ---- */

/* Commit the open transaction; v->lock held. Packs first, so the index never names bytes
 * that could be lost. */
int vfs_commit_locked(struct vfs *v)
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

void vfs_sync_packs_ahead(struct vfs *v)
{
	int fd;

	vfs_lock(v);
	fd = store_open_unsynced_pack(v->st);
	vfs_unlock(v);
	if (fd < 0)
		return;
	/* A failure here is the commit's to report: its own sync sees it too. */
	if (fdatasync(fd) < 0)
		log_debug("syncing the pack ahead of a commit: %s", strerror(errno));
	close(fd);
}

void vfs_checkpoint(struct vfs *v)
{
	int r;

	if (!idx_checkpoint_due(v->ckpt))
		return;
	r = idx_checkpoint(v->ckpt);
	if (r < 0)
		log_debug("checkpoint: %s; the commit thread retries", strerror(-r));
}

int vfs_begin(struct vfs *v)
{
	return idx_begin(v->x);
}

/* One operation's changes, undone together on failure; v->lock held. */
int vfs_op_begin(struct vfs *v)
{
	return idx_op_begin(v->x);
}

int vfs_op_end(struct vfs *v, int r)
{
	idx_op_end(v->x, r < 0);
	return r;
}

int vfs_sync(struct vfs *v)
{
	uint64_t target;
	int r;

	vfs_lock(v);
	r = vfs_commit_locked(v);
	target = v->commits;
	vfs_unlock(v);
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

	vfs_lock(v);
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
		if (!v->stop && idx_in_txn(v->x)) {
			vfs_unlock(v);
			vfs_sync_packs_ahead(v);
			vfs_lock(v);
		}
		r = vfs_commit_locked(v);
		if (idx_checkpoint_due(v->ckpt)) {
			vfs_unlock(v);
			vfs_checkpoint(v);
			vfs_lock(v);
		}
		if (r < 0 && r != v->last_error)
			log_warn("background commit failed: %s", strerror(-r));
		v->last_error = r;
		vfs_gc_tick(v);
	}
	vfs_unlock(v);
	return NULL;
}

/* ---- setup ---- */

static int init_root(struct vfs *v)
{
	return idx_init_root(v->x, getuid(), getgid(), now_ns());
}

/*
 * Make the store consistent before serving it (no other thread runs yet): the root, inodes
 * orphaned by a crash, reference counts left with a crashed writer's pins, packs the index does
 * not know; then mark the session unclean and commit. 0 or -errno.
 */
static int recover(struct vfs *v)
{
	int r;

	r = vfs_begin(v);
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
		int n = maint_remove_leaked_packs(v->st);

		if (n > 0)
			log_debug("removed %d packs left by a crash", n);
	}
	if (r >= 0)
		r = vfs_commit_locked(v);
	return r < 0 ? r : 0;
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
	pthread_cond_init(&v->closed, NULL);

	r = recover(v);
	if (r < 0)
		goto out_free;
	/* Serving, a commit must not checkpoint under v->lock (40 ms, measured during a merge):
	 * the commit thread checkpoints after dropping it. Without the second connection, commits
	 * do it as before. */
	r = idx_defer_checkpoints(v->x, &v->ckpt);
	if (r < 0)
		log_debug("deferring checkpoints: %s", strerror(-r));
	r = vfs_hashers_start(v);
	if (r < 0)
		goto out_free;
	if (v->opts.remote) {
		struct fetcher_options fo = {.workers = v->opts.fetch_workers,
					     .range_max = v->opts.fetch_range,
					     .report = v->opts.remote_report,
					     .data = v->opts.hook_data};

		r = fetcher_new(st, v->opts.remote, &v->lock, &fo, &v->fetcher);
		if (r < 0) {
			vfs_hashers_stop(v, HASHERS);
			goto out_free;
		}
	}
	r = -pthread_create(&v->thread, NULL, commit_thread, v);
	if (r < 0) {
		fetcher_free(v->fetcher);
		vfs_hashers_stop(v, HASHERS);
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
	idx_ckpt_close(v->x, v->ckpt);
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
	vfs_lock(v);
	v->stop = true;
	pthread_cond_signal(&v->cond);
	vfs_unlock(v);
	pthread_join(v->thread, NULL);
	fetcher_free(v->fetcher);
	v->fetcher = NULL;

	/* Files still open (a lazy unmount) are committed as they are. */
	for (size_t b = 0; b < v->nbuckets; b++) {
		while (v->buckets[b]) {
			struct vnode *n = v->buckets[b];

			vfs_lock_for_commit(v, n);
			r = vfs_commit_node(v, n);
			if (r < 0) {
				log_error("inode %llu: data lost: %s", (unsigned long long)n->ino,
					  strerror(-r));
				lost = r;
			}
			vfs_stream_discard(v, n); /* after a failed commit: nothing in flight */
			vfs_unstage(v, n);
			vfs_unlock_for_commit(v, n);
			vfs_lock(v);
			n->nlookup = 0;
			n->opens = 0;
			{
				uint64_t ino = n->ino;

				/* Reaping frees the node of an unlinked inode; free any other. */
				vfs_begin(v);
				vfs_reap_if_unused(v, ino);
				n = vfs_node_find(v, ino);
				if (n)
					vfs_node_free(v, n);
			}
			vfs_unlock(v);
		}
	}
	vfs_hashers_stop(v, HASHERS);
	vfs_lock(v);
	r = vfs_begin(v);
	if (r == 0 && !lost)
		r = idx_meta_set(v->x, "clean_shutdown", "1");
	vfs_unlock(v);
	if (r == 0)
		r = vfs_sync(v);
	if (r == 0)
		r = lost;
	/* Before the store closes x, whose close (the last connection's) checkpoints the WAL. */
	vfs_lock(v);
	idx_ckpt_close(v->x, v->ckpt);
	v->ckpt = NULL;
	vfs_unlock(v);
	if (v->wal_fd >= 0)
		close(v->wal_fd);
	r2 = store_close(v->st);
	if (r == 0)
		r = r2;
	pthread_mutex_destroy(&v->lock);
	pthread_mutex_destroy(&v->sync_lock);
	pthread_rwlock_destroy(&v->gc_lock);
	pthread_cond_destroy(&v->cond);
	pthread_cond_destroy(&v->closed);
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
	/* Files closed before the push was asked for go with it. */
	vfs_lock(v);
	while (v->closing)
		pthread_cond_wait(&v->closed, &v->lock);
	vfs_unlock(v);
	/* gc must not reclaim chunks the push is copying. */
	pthread_rwlock_rdlock(&v->gc_lock);
	vfs_lock(v);
	r = vfs_commit_locked(v);
	vfs_unlock(v);
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
	vfs_lock(v);
	r = idx_get_extents(v->x, ino, &ext, &n);
	vfs_unlock(v);
	if (r == 0)
		fetcher_prefetch(v->fetcher, ext, n);
	free(ext);
}
