/* SPDX-License-Identifier: MIT */
/*
 * Pull: merge every catalog not yet seen into the store's namespace, in one transaction (a cold
 * store goes through the cold load). The store is not serving (before the vfs opens, or locked
 * by the CLI): no lock is taken.
 */
#include "sync_priv.h"

static bool want_unmerged(void *data, const char *name)
{
	bool merged = false;

	return idx_rseen_get(data, name, &merged) != 1 || !merged;
}

int sync_pull(struct store *st, struct remote *r, const struct sync_options *o,
	      struct sync_report *ret)
{
	struct idx *x = store_idx(st);
	struct merge m = {.st = st, .x = x, .rep = ret};
	struct names ns = {0};
	struct cat **cats = NULL;
	char **names = NULL;
	struct cand **win = NULL;
	struct smap map = {0};
	size_t n = 0, nwin = 0;
	int rr;

	memset(ret, 0, sizeof(*ret));
	for (int attempt = 0;; attempt++) {
		size_t listed, bad;

		rr = list_sorted(r, "ns/", &ns);
		if (rr < 0)
			return rr;
		bad = 0;
		rr = fetch_catalogs(st, r, &ns, want_unmerged, x, o, &cats, &names, &n,
				    &ret->catalog_bytes, &bad);
		if (rr < 0)
			goto out;
		listed = 0;
		for (size_t i = 0; i < ns.n; i++)
			listed += want_unmerged(x, ns.v[i]);
		/* One vanished (compacted into a snapshot written after the listing): again. */
		if (listed == n + bad || attempt == 2)
			break;
		cats_free(cats, n);
		free(names);
		names_free(&ns);
		cats = NULL;
		names = NULL;
		n = 0;
	}
	ret->catalogs_read = n;
	if (n == 0)
		goto out;
	rr = pick_winners(cats, n, &map);
	if (rr == 0)
		rr = sorted_winners(&map, &win, &nwin);
	if (rr < 0)
		goto out;

	rr = idx_commit(x);
	if (rr == 0)
		rr = idx_begin(x);
	if (rr < 0)
		goto out;
	/* A new store's first pull comes before the vfs made the root. */
	rr = idx_init_root(x, getuid(), getgid(), now_ns());
	if (rr < 0)
		goto out_rollback;
	m.cold = idx_dir_is_empty(x, IDX_ROOT_INO) == 1 && idx_sync_blank(x) == 1;
	/* A big merge touches every index: let it work in memory until the commit. */
	idx_set_big_cache(x, true);
	m.last_sync = idx_meta_get_i64(x, "rsync_time");
	{
		struct rpack_ids *ids = calloc(n, sizeof(*ids));

		if (!ids) {
			rr = -ENOMEM;
			goto out_rollback;
		}
		for (size_t i = 0; i < n; i++)
			ids[i].c = cats[i];
		if (m.cold)
			rr = cold_load(&m, win, nwin, cats, n, ids);
		/* Creations in path order (parents first), removals in reverse (children first). */
		for (size_t i = 0; i < nwin && rr == 0 && !m.cold; i++) {
			size_t k = 0;

			if (win[i]->e->type == CAT_E_GONE)
				continue;
			while (cats[k] != win[i]->c)
				k++;
			rr = merge_entry(&m, win[i], &ids[k]);
			if (o && o->progress && (i % 1024 == 0 || i + 1 == nwin))
				o->progress(o->progress_data, "entries", i + 1, nwin);
		}
		for (size_t i = nwin; i-- > 0 && rr == 0 && !m.cold;) {
			size_t k = 0;

			if (win[i]->e->type != CAT_E_GONE)
				continue;
			while (cats[k] != win[i]->c)
				k++;
			rr = merge_entry(&m, win[i], &ids[k]);
		}
		/* Chunks the remote has that no entry here uses yet still count for dedup (a
		 * cold store has no chunks of its own to match). */
		for (size_t i = 0; i < n && rr == 0 && !m.cold; i++)
			rr = learn_chunks(x, cats[i]);
		for (size_t i = 0; i < n; i++)
			free(ids[i].id);
		free(ids);
	}
	for (size_t i = 0; i < n && rr == 0; i++)
		rr = idx_rseen_mark(x, names[i], true);
	idx_set_big_cache(x, false);
	if (rr == 0)
		rr = idx_meta_set_i64(x, "rsync_time", now_ns());
	if (rr < 0)
		goto out_rollback;
	rr = idx_commit(x);
	if (rr < 0)
		goto out_rollback;
	goto out;
out_rollback:
	idx_rollback(x);
out:
	smap_free(&m.dirs, NULL);
	smap_free(&map, free);
	free(win);
	cats_free(cats, n);
	free(names);
	names_free(&ns);
	return rr;
}
