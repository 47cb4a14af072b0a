/* SPDX-License-Identifier: MIT */
/*
 * The live merge seen from the vfs: sync_live_pull with the vfs's hooks. A name the merge makes,
 * replaces or removes is queued (under v->lock, as the merge runs) and handed to the caller's
 * inval function after each batch, with no lock held: the kernel may block a notification on a
 * request in flight, which may be waiting for v->lock. An inode open here is never replaced in
 * place (the merge gives the name a new inode), and one being written wins over the remote.
 */
#include <errno.h>
#include <stdlib.h>

#include "sync.h"
#include "util.h"
#include "vfs_priv.h"

struct live {
	struct vfs *v;
	vfs_inval_fn inval;
	void *data;
	struct vfs_inval *q; /* v->lock while the merge fills it; the merge thread's after */
	size_t n, cap;
	uint64_t *inos; /* with fetch_data: inodes whose data to fetch */
	size_t ninos, capinos;
	bool fetch_data;
	unsigned batches;
	int err;
};

static void live_changed(void *data, uint64_t parent, const char *name, uint64_t ino)
{
	struct live *l = data;

	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 256;
		struct vfs_inval *nq = realloc(l->q, ncap * sizeof(*nq));

		if (!nq) {
			l->err = -ENOMEM;
			return;
		}
		l->q = nq;
		l->cap = ncap;
	}
	l->q[l->n].parent = parent;
	l->q[l->n].ino = ino;
	snprintf(l->q[l->n].name, sizeof(l->q[l->n].name), "%s", name);
	l->n++;
}

static int live_in_use(void *data, uint64_t ino)
{
	struct live *l = data;
	struct vnode *n = vfs_node_find(l->v, ino);

	if (!n)
		return 0;
	if (n->staged || n->staging_fd >= 0 || n->busy)
		return 2;
	return n->opens > 0;
}

static void live_note_ino(struct live *l, uint64_t ino)
{
	if (l->ninos == l->capinos) {
		size_t ncap = l->capinos ? l->capinos * 2 : 256;
		uint64_t *ni = realloc(l->inos, ncap * sizeof(*ni));

		if (!ni)
			return; /* its data is fetched when read */
		l->inos = ni;
		l->capinos = ncap;
	}
	l->inos[l->ninos++] = ino;
}

static void live_batch_done(void *data)
{
	struct live *l = data;

	if (l->fetch_data) {
		pthread_mutex_lock(&l->v->lock);
		for (size_t i = 0; i < l->n; i++) {
			uint64_t ino;

			if (idx_lookup(l->v->x, l->q[i].parent, l->q[i].name, &ino) == 1)
				live_note_ino(l, ino);
		}
		pthread_mutex_unlock(&l->v->lock);
	}
	/*
	 * Commit every few batches: a commit holds v->lock for as long as it takes to write what
	 * it commits (four batches of 128: 3.5 ms), and each one syncs the pack, which the
	 * reads fill meanwhile (a commit of every batch made the merge twice as long). The pack
	 * is synced first with no lock held, and the checkpoints are the commit thread's, also
	 * with no lock held (a checkpoint run by a commit held v->lock for 40 ms).
	 */
	if (++l->batches % 4 == 0) {
		vfs_sync_packs_ahead(l->v);
		pthread_mutex_lock(&l->v->lock);
		if (vfs_commit_locked(l->v) < 0)
			log_debug("commit during a merge failed; the commit thread retries");
		mutex_unlock_give_way(&l->v->lock);
	}
	if (l->n && l->inval)
		l->inval(l->data, l->q, l->n);
	l->n = 0;
}

static bool live_lock_wanted(void *data)
{
	struct live *l = data;

	return vfs_lock_wanted(l->v);
}

int vfs_pull(struct vfs *v, bool fetch_data, vfs_inval_fn inval, void *data,
	     const struct sync_options *o, struct sync_report *ret)
{
	struct live l = {.v = v, .inval = inval, .data = data, .fetch_data = fetch_data};
	struct sync_live hooks = {.data = &l,
				  .changed = live_changed,
				  .in_use = live_in_use,
				  .batch_done = live_batch_done,
				  .lock_wanted = live_lock_wanted};
	int r;

	memset(ret, 0, sizeof(*ret));
	if (!v->opts.remote)
		return -ENOTCONN;
	/* gc must not move the chunks the merge links to. */
	pthread_rwlock_rdlock(&v->gc_lock);
	r = sync_live_pull(v->st, v->opts.remote, &v->lock, &hooks, o, ret);
	pthread_rwlock_unlock(&v->gc_lock);
	if (r == 0)
		r = l.err;
	for (size_t i = 0; i < l.ninos; i++)
		vfs_prefetch_ino(v, l.inos[i]);
	if (l.ninos)
		vfs_fetch_drain(v);
	free(l.inos);
	free(l.q);
	return r;
}
