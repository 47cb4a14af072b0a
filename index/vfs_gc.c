/* SPDX-License-Identifier: MIT */
/*
 * gc inside the daemon: vfs_gc commits, seals the active pack and runs maint_gc with hooks
 * that spare open and staged files and collect the evicted names (told to the kernel after,
 * with no lock held); the commit thread's gc steps (requested gc, eviction to max_size); and
 * the gc a full disk asks for.
 *
 * Locks: vfs_gc holds v->gc_lock exclusive (so no data path runs and no chunk moves under a
 * reader) and v->lock; the commit thread's steps are called with v->lock held and drop it
 * around vfs_gc.
 */
#include "vfs_priv.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "maint.h"
#include "util.h"

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
	struct vnode *n = vfs_node_find(c->v, ino);

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
int vfs_note_enospc(struct vfs *v, int r)
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
	vfs_lock(v);
	r = vfs_commit_locked(v);
	if (r == 0)
		r = store_seal_active(v->st);
	if (r == 0)
		r = maint_gc(v->st, max_size, NULL, &h, ret);
	refresh_locations(v);
	vfs_unlock(v);
	pthread_rwlock_unlock(&v->gc_lock);
	for (size_t i = 0; i < c.n; i++) {
		if (v->opts.evicted)
			v->opts.evicted(v->opts.hook_data, c.names[i].parent, c.names[i].name);
		free(c.names[i].name);
	}
	free(c.names);
	return r;
}

/* A gc asked for by `pkgcachefs gc` (SIGUSR1) or by a full disk; v->lock held, dropped while
 * it runs. */
static void run_requested_gc(struct vfs *v)
{
	struct gc_report rep;
	uint64_t max = v->opts.gc_request_size ? v->opts.gc_request_size(v->opts.hook_data) : 0;
	int r;

	vfs_unlock(v);
	r = vfs_gc(v, max, &rep);
	if (r < 0)
		log_warn("requested gc failed: %s", strerror(-r));
	if (v->opts.gc_done)
		v->opts.gc_done(v->opts.hook_data, r, &rep);
	vfs_lock(v);
}

/* Every 5 s at most: evict when the packs outgrow max_size; v->lock held, dropped while gc
 * runs. */
static void keep_within_max_size(struct vfs *v)
{
	struct gc_report rep;
	uint64_t bytes = 0;
	int r;

	v->last_size_check = mono_ns();
	if (idx_pack_bytes(v->x, &bytes) != 0 || bytes <= v->opts.max_size)
		return;
	vfs_unlock(v);
	/* Evict to 90% so that gc does not run again at once. */
	r = vfs_gc(v, v->opts.max_size / 10 * 9, &rep);
	if (r < 0)
		log_warn("gc to stay within max_size failed: %s", strerror(-r));
	else
		log_info("gc: evicted %llu files to stay within max_size",
			 (unsigned long long)rep.evicted_files);
	vfs_lock(v);
}

void vfs_gc_tick(struct vfs *v)
{
	if (__atomic_exchange_n(&v->gc_request, 0, __ATOMIC_SEQ_CST) && !v->stop)
		run_requested_gc(v);
	if (v->opts.max_size && !v->stop && mono_ns() - v->last_size_check > 5000000000)
		keep_within_max_size(v);
}
