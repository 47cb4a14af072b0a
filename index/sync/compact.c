/* SPDX-License-Identifier: MIT */
/*
 * Compaction: replace every catalog of ns/ by one snapshot holding their last-writer-wins merge
 * (old tombstones dropped), then delete the inputs. Touches the remote only: no index, no lock.
 */
#include "sync_priv.h"

/* Tombstones older than this are dropped by compaction: no push takes that long. */
#define TOMBSTONE_KEEP_NS (30ll * 24 * 3600 * 1000000000)

int sync_compact(struct store *st, struct remote *r, const struct sync_options *o)
{
	const struct chunker_params *cp = store_chunker_params(st);
	struct names ns = {0};
	struct cat **cats = NULL;
	char **names = NULL;
	struct cand **win = NULL;
	struct smap map = {0};
	struct cat_writer *w = NULL;
	size_t n = 0, nwin = 0, len = 0;
	int64_t created = now_ns();
	uint8_t host[16] = {0}, sha[32];
	void *data = NULL;
	char obj[160];
	int rr;

	rr = list_sorted(r, "ns/", &ns);
	if (rr == 0)
		rr = fetch_catalogs(st, r, &ns, NULL, NULL, o, &cats, &names, &n, NULL, NULL);
	if (rr < 0)
		goto out;
	if (n < 2)
		goto out;
	rr = pick_winners(cats, n, &map);
	if (rr == 0)
		rr = sorted_winners(&map, &win, &nwin);
	if (rr == 0)
		rr = cat_writer_new(CAT_SNAPSHOT, host, created, cp->min, cp->avg, cp->max, &w);
	for (size_t i = 0; i < nwin && rr == 0; i++) {
		const struct cat_entry *e = win[i]->e;
		const struct cat *c = win[i]->c;
		struct cat_entry ce = *e;
		struct cat_extent *cx = NULL;

		if (e->type == CAT_E_GONE && created - e->stamp > TOMBSTONE_KEEP_NS)
			continue;
		if (e->n_ext) {
			cx = calloc(e->n_ext, sizeof(*cx));
			if (!cx) {
				rr = -ENOMEM;
				break;
			}
		}
		for (uint32_t j = 0; j < e->n_ext && rr == 0; j++) {
			struct cat_chunk ch;

			cx[j] = e->ext[j];
			if (e->ext[j].chunk == CAT_HOLE)
				continue;
			ch = c->chunks[e->ext[j].chunk];
			rr = cat_writer_add_pack(w, c->packs[ch.pack].name, c->packs[ch.pack].size,
						 &ch.pack);
			if (rr == 0)
				rr = cat_writer_add_chunk(w, &ch, &cx[j].chunk);
		}
		ce.ext = cx;
		if (rr == 0)
			rr = cat_writer_add_entry(w, &ce);
		free(cx);
	}
	if (rr < 0)
		goto out;
	rr = cat_writer_finish(w, &data, &len, sha);
	w = NULL;
	if (rr < 0)
		goto out;
	object_name("ns/", ".cat", created, sha, obj, sizeof(obj));
	rr = remote_put(r, obj, data, len);
	/* The snapshot holds everything its inputs did: they can go. */
	for (size_t i = 0; i < n && rr == 0; i++)
		if (strcmp(names[i], obj) != 0)
			remote_delete(r, names[i]);
out:
	cat_writer_free(w);
	free(data);
	smap_free(&map, free);
	free(win);
	cats_free(cats, n);
	free(names);
	names_free(&ns);
	return rr;
}
