/* SPDX-License-Identifier: MIT */
/*
 * Pull: merge every catalog not yet seen into the store's namespace, in one transaction (a cold
 * store goes through the cold load). The store is not serving (before the vfs opens, or locked
 * by the CLI): no lock is taken.
 */
#include "sync_priv.h"

/* The catalogs a pull merges, and the winner per path over them. */
struct pull {
	struct names ns; /* ns/ as listed */
	struct cat **cats;
	char **names; /* of cats, pointing into ns */
	size_t n;
	struct smap map; /* path -> struct cand * */
	struct cand **win;
	size_t nwin;
};

static void pull_free(struct pull *pl)
{
	smap_free(&pl->map, free);
	free(pl->win);
	cats_free(pl->cats, pl->n);
	free(pl->names);
	names_free(&pl->ns);
}

/*
 * Fetch the catalogs of ns/ not merged yet, up to about max_entries entries: 1 when more are left
 * for another batch, 0 when that was all. One that vanished between the listing and its download
 * was compacted into a snapshot written after the listing: list again (three tries).
 */
static int pull_fetch(struct store *st, struct remote *rem, struct pull *pl,
		      const struct sync_options *o, size_t max_entries, struct sync_report *rep)
{
	struct want_merge w = {.x = store_idx(st),
			       .since = (int64_t)time(NULL) - SYNC_BAD_CATALOG_RETRY_S};
	int r;

	for (int attempt = 0;; attempt++) {
		struct names bad = {0};
		size_t listed = 0;
		int more;

		r = list_sorted(rem, "ns/", &pl->ns);
		if (r < 0)
			return r;
		more = fetch_catalogs(st, rem, &pl->ns, want_unmerged, &w, o, max_entries,
				      &pl->cats, &pl->names, &pl->n, &rep->catalog_bytes, &bad);
		r = MIN(more, 0);
		for (size_t i = 0; r == 0 && i < pl->ns.n; i++)
			listed += want_unmerged(&w, pl->ns.v[i]);
		/* Counted as wanted above; not wanted again, by this pull or the next ones. */
		if (r == 0)
			r = remember_bad_catalogs(w.x, &bad);
		listed -= MIN(listed, bad.n);
		names_free(&bad);
		if (r < 0)
			return r;
		/* A batch: the next one lists again, which sees any snapshot written meanwhile. */
		if (more == 1 || listed == pl->n || attempt == 2)
			return more;
		cats_free(pl->cats, pl->n);
		free(pl->names);
		names_free(&pl->ns);
		pl->cats = NULL;
		pl->names = NULL;
		pl->n = 0;
	}
}

/* The catalog of winner cd: its position in pl->cats. */
static size_t pull_cat_of(const struct pull *pl, const struct cand *cd)
{
	size_t k = 0;

	while (pl->cats[k] != cd->c)
		k++;
	return k;
}

/* Merge the winners one by one: creations in path order (parents first), removals in reverse
 * (children first); then learn the chunks the remote has. */
static int pull_merge_entries(struct merge *m, struct pull *pl, struct rpack_ids *ids,
			      const struct sync_options *o)
{
	int r = 0;

	for (size_t i = 0; i < pl->nwin && r == 0; i++) {
		if (pl->win[i]->e->type == CAT_E_GONE)
			continue;
		r = merge_entry(m, pl->win[i], &ids[pull_cat_of(pl, pl->win[i])]);
		if (o && o->progress && (i % 1024 == 0 || i + 1 == pl->nwin))
			o->progress(o->progress_data, "entries", i + 1, pl->nwin);
	}
	for (size_t i = pl->nwin; i-- > 0 && r == 0;) {
		if (pl->win[i]->e->type != CAT_E_GONE)
			continue;
		r = merge_entry(m, pl->win[i], &ids[pull_cat_of(pl, pl->win[i])]);
	}
	/* Chunks the remote has that no entry here uses yet still count for dedup (a cold store
	 * has no chunks of its own to match). */
	for (size_t i = 0; i < pl->n && r == 0; i++)
		r = learn_chunks(m->x, pl->cats[i]);
	return r;
}

/* The winners into the namespace: by the cold load into an empty store, else one by one. */
static int pull_merge(struct merge *m, struct pull *pl, const struct sync_options *o)
{
	struct rpack_ids *ids = calloc(pl->n, sizeof(*ids));
	int r;

	if (!ids)
		return -ENOMEM;
	for (size_t i = 0; i < pl->n; i++)
		ids[i].c = pl->cats[i];
	if (m->cold)
		r = cold_load(m, pl->win, pl->nwin, pl->cats, pl->n, ids);
	else
		r = pull_merge_entries(m, pl, ids, o);
	for (size_t i = 0; i < pl->n; i++)
		free(ids[i].id);
	free(ids);
	return r;
}

/* Merge and record it, in the open transaction. */
static int pull_apply(struct store *st, struct pull *pl, const struct sync_options *o,
		      struct sync_report *rep)
{
	struct idx *x = store_idx(st);
	struct merge m = {.st = st, .x = x, .rep = rep};
	int r;

	/* A new store's first pull comes before the vfs made the root. */
	r = idx_init_root(x, getuid(), getgid(), now_ns());
	if (r < 0)
		return r;
	m.cold = idx_dir_is_empty(x, IDX_ROOT_INO) == 1 && idx_sync_blank(x) == 1;
	/* A big merge touches every table: let it work in memory until the commit. */
	idx_set_big_cache(x, true);
	m.last_sync = idx_meta_get_i64(x, "rsync_time");
	r = pull_merge(&m, pl, o);
	for (size_t i = 0; i < pl->n && r == 0; i++)
		r = idx_rseen_mark(x, pl->names[i], true);
	idx_set_big_cache(x, false);
	if (r == 0)
		r = idx_meta_set_i64(x, "rsync_time", now_ns());
	smap_free(&m.dirs, NULL);
	return r;
}

/* Fetch, pick the winners of and merge one batch of catalogs, in one transaction: 1 when more are
 * left for another, 0 when that was the last, -errno (the batch rolled back). */
static int pull_batch(struct store *st, struct remote *rem, const struct sync_options *o,
		      size_t max_entries, struct sync_report *ret)
{
	struct idx *x = store_idx(st);
	struct pull pl = {0};
	int more, r;

	more = r = pull_fetch(st, rem, &pl, o, max_entries, ret);
	if (r < 0 || pl.n == 0)
		goto out;
	ret->catalogs_read += pl.n;
	ret->batches++;
	r = pick_winners(pl.cats, pl.n, pull_pick_flags(x), &pl.map);
	if (r == 0)
		r = sorted_winners(&pl.map, &pl.win, &pl.nwin);
	if (r == 0)
		r = idx_commit(x);
	if (r == 0)
		r = idx_begin(x);
	if (r < 0)
		goto out;
	r = pull_apply(st, &pl, o, ret);
	if (r == 0)
		r = idx_commit(x);
	if (r < 0)
		idx_rollback(x);
out:
	pull_free(&pl);
	return r < 0 ? r : more;
}

/*
 * Batches are equivalent to one merge of everything: merge_entry skips what the base (rbase)
 * already holds at a later stamp, so a later batch's older entry for a path loses to the earlier
 * batch's newer one, as it would have within one batch.
 */
int sync_pull(struct store *st, struct remote *rem, const struct sync_options *o,
	      struct sync_report *ret)
{
	size_t max_entries = o && o->batch_entries ? o->batch_entries : SYNC_PULL_BATCH_ENTRIES;
	int r;

	memset(ret, 0, sizeof(*ret));
	do
		r = pull_batch(st, rem, o, max_entries, ret);
	while (r == 1);
	return r;
}
