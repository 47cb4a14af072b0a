/* SPDX-License-Identifier: MIT */
/*
 * The live merge: what `pkgcachefs pull` and the daemon's pull_interval do to a store that is
 * serving. Like sync_pull, but the listing, the downloads, the decoding and the choice of winners
 * happen with lock (the vfs mutex) released, and the winners are applied in batches of
 * SYNC_LIVE_BATCH under lock, inside the vfs's own transaction (its commit thread commits it).
 * After each batch, with lock released, the caller's batch_done tells the kernel what changed.
 * A batch ends early when a request waits for lock (the caller's lock_wanted), and each batch
 * ends in live_give_way: the next one would otherwise take lock back before the requests waiting
 * for it (glibc's mutex is not fair), and a merge would shut them out until its end.
 *
 * Lock: lock is taken around each use of the store's index: the check of which catalogs are new,
 * each batch, learning the chunks of each catalog and marking it merged. Never during a transfer.
 * An interrupted merge leaves the applied entries in the base; the next merge skips them.
 */
#include <time.h>

#include "sync_priv.h"

static size_t cat_index(struct cat **cats, size_t n, const struct cat *c)
{
	size_t k = 0;

	while (k + 1 < n && cats[k] != c)
		k++;
	return k;
}

/*
 * Whether the batch in progress, batch entries long, should end now: it reached max, or a
 * request waits for the lock and the batch has done its minimum.
 */
static bool live_batch_ends(const struct sync_live *live, size_t batch, size_t max)
{
	if (batch >= max)
		return true;
	return batch >= SYNC_LIVE_MIN_BATCH && live->lock_wanted && live->lock_wanted(live->data);
}

/*
 * Unlock, and let the requests waiting for lock have it before the next batch takes it back:
 * wait while the caller says one is waiting, up to 2 ms (on a busy mount new ones keep coming).
 */
static void live_give_way(pthread_mutex_t *lock, const struct sync_live *live)
{
	struct timespec step = {.tv_nsec = 20000};

	mutex_unlock_give_way(lock);
	for (int i = 0; i < 100 && live->lock_wanted && live->lock_wanted(live->data); i++)
		nanosleep(&step, NULL);
}

/* Apply win[from..to) (creations, or with gone removals in reverse), one batch at a time. */
static int live_apply(struct merge *m, pthread_mutex_t *lock, struct cand **win, size_t nwin,
		      bool gone, struct cat **cats, size_t ncats, struct rpack_ids *ids)
{
	size_t done = 0;
	int r = 0;

	while (done < nwin && r == 0) {
		size_t batch = 0;

		pthread_mutex_lock(lock);
		r = idx_begin(m->x);
		for (; done < nwin && !live_batch_ends(m->live, batch, SYNC_LIVE_BATCH) && r == 0;
		     done++) {
			struct cand *cd = win[gone ? nwin - 1 - done : done];

			if ((cd->e->type == CAT_E_GONE) != gone)
				continue;
			r = merge_entry(m, cd, &ids[cat_index(cats, ncats, cd->c)]);
			batch++;
		}
		/* Directory inos cached by path may go stale once others run. */
		smap_free(&m->dirs, NULL);
		live_give_way(lock, m->live);
		if (m->live->batch_done)
			m->live->batch_done(m->live->data);
	}
	return r;
}

/* learn_chunks, a slice of the catalog's chunks at a time under lock: 256 chunks take about as
 * long as a batch of entries (1 to 2 ms). */
static int live_learn(struct idx *x, pthread_mutex_t *lock, const struct cat *c,
		      const struct sync_live *live)
{
	struct rpack_ids m = {.c = c};
	size_t i = 0;
	int r = 0;

	while (i < c->n_chunks && r == 0) {
		pthread_mutex_lock(lock);
		r = idx_begin(x);
		for (size_t k = 0; i < c->n_chunks && r == 0; i++, k++) {
			const struct cat_chunk *ch = &c->chunks[i];
			struct pack_loc loc = chunk_rloc(ch);
			uint64_t rp;

			if (live_batch_ends(live, k, 4 * SYNC_LIVE_BATCH))
				break;
			r = rpack_id(x, &m, ch->pack, &rp);
			if (r == 0)
				r = idx_set_chunk_remote(x, &ch->key, &ch->digest, rp, &loc);
		}
		live_give_way(lock, live);
		if (live->batch_done)
			live->batch_done(live->data);
	}
	free(m.id);
	return r;
}

/* want_unmerged under the serving store's lock, for fetch_catalogs. */
struct locked_want {
	struct want_merge w;
	pthread_mutex_t *lock;
};

static bool want_locked(void *data, const char *name)
{
	struct locked_want *lw = data;
	bool want;

	pthread_mutex_lock(lw->lock);
	want = want_unmerged(&lw->w, name);
	pthread_mutex_unlock(lw->lock);
	return want;
}

/*
 * Fetch up to max_entries entries of the catalogs of todo not merged yet, pick their winners and
 * apply them; then mark them merged, so the next batch skips them. 1 when more are left, 0 when
 * that was all, -errno. Batches give what one merge gives (sync_pull says why).
 */
static int live_batch(struct store *st, struct remote *rem, pthread_mutex_t *lock,
		      const struct sync_live *live, const struct sync_options *o,
		      const struct names *todo, size_t max_entries, struct sync_report *ret)
{
	struct idx *x = store_idx(st);
	struct locked_want lw = {
		.w = {.x = x, .since = (int64_t)time(NULL) - SYNC_BAD_CATALOG_RETRY_S},
		.lock = lock};
	struct names bad = {0};
	struct cat **cats = NULL;
	char **names = NULL;
	struct smap map = {0};
	struct cand **win = NULL;
	struct rpack_ids *ids = NULL;
	struct merge m = {.st = st, .x = x, .rep = ret, .live = live};
	size_t n = 0, nwin = 0;
	unsigned flags;
	int more, r;

	more = r = fetch_catalogs(st, rem, todo, want_locked, &lw, o, max_entries, &cats, &names,
				  &n, &ret->catalog_bytes, &bad);
	if (bad.n) {
		int rb;

		pthread_mutex_lock(lock);
		rb = remember_bad_catalogs(x, &bad);
		pthread_mutex_unlock(lock);
		if (r >= 0 && rb < 0)
			r = rb;
	}
	if (r < 0 || n == 0)
		goto out;
	ret->catalogs_read += n;
	ret->batches++;
	pthread_mutex_lock(lock);
	flags = pull_pick_flags(x);
	pthread_mutex_unlock(lock);
	r = pick_winners(cats, n, flags, &map);
	if (r == 0)
		r = sorted_winners(&map, &win, &nwin);
	ids = r == 0 ? calloc(n, sizeof(*ids)) : NULL;
	if (r == 0 && !ids)
		r = -ENOMEM;
	if (r < 0)
		goto out;
	for (size_t i = 0; i < n; i++)
		ids[i].c = cats[i];
	pthread_mutex_lock(lock);
	m.last_sync = idx_meta_get_i64(x, "rsync_time");
	pthread_mutex_unlock(lock);
	r = live_apply(&m, lock, win, nwin, false, cats, n, ids);
	if (r == 0)
		r = live_apply(&m, lock, win, nwin, true, cats, n, ids);
	for (size_t i = 0; i < n && r == 0; i++) {
		r = live_learn(x, lock, cats[i], live);
		pthread_mutex_lock(lock);
		if (r == 0)
			r = idx_begin(x);
		if (r == 0)
			r = idx_rseen_mark(x, names[i], true);
		pthread_mutex_unlock(lock);
	}
out:
	if (ids)
		for (size_t i = 0; i < n; i++)
			free(ids[i].id);
	free(ids);
	smap_free(&m.dirs, NULL);
	smap_free(&map, free);
	free(win);
	cats_free(cats, n);
	free(names);
	names_free(&bad);
	return r < 0 ? r : more;
}

int sync_live_pull(struct store *st, struct remote *rem, pthread_mutex_t *lock,
		   const struct sync_live *live, const struct sync_options *o,
		   struct sync_report *ret)
{
	size_t max_entries = o && o->batch_entries ? o->batch_entries : SYNC_PULL_BATCH_ENTRIES;
	struct idx *x = store_idx(st);
	struct want_merge w = {.x = x, .since = (int64_t)time(NULL) - SYNC_BAD_CATALOG_RETRY_S};
	struct names ns = {0}, todo = {0};
	int r;

	memset(ret, 0, sizeof(*ret));
	r = list_sorted(rem, "ns/", &ns);
	if (r < 0)
		return r;
	pthread_mutex_lock(lock);
	for (size_t i = 0; i < ns.n && r == 0; i++)
		if (want_unmerged(&w, ns.v[i]))
			r = collect_name(ns.v[i], 0, &todo);
	pthread_mutex_unlock(lock);
	if (r == 0 && todo.n) {
		do
			r = live_batch(st, rem, lock, live, o, &todo, max_entries, ret);
		while (r == 1);
	}
	if (r == 0 && ret->catalogs_read) {
		pthread_mutex_lock(lock);
		r = idx_begin(x);
		if (r == 0)
			r = idx_meta_set_i64(x, "rsync_time", now_ns());
		pthread_mutex_unlock(lock);
	}
	names_free(&todo);
	names_free(&ns);
	return r;
}
