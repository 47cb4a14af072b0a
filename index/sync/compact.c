/* SPDX-License-Identifier: MIT */
/*
 * Compaction: replace every catalog of ns/ by one snapshot holding their last-writer-wins merge
 * (old tombstones dropped), then delete the inputs. Touches the remote only: no index, no lock.
 */
#include "sync_priv.h"

/* Tombstones older than this are dropped by compaction: no push takes that long. */
#define TOMBSTONE_KEEP_NS (30ll * 24 * 3600 * 1000000000)

/* Winner cd into the snapshot w, with the chunks and packs it uses; a tombstone older than
 * TOMBSTONE_KEEP_NS (at created) is dropped. */
static int compact_entry(struct cat_writer *w, const struct cand *cd, int64_t created)
{
	const struct cat_entry *e = cd->e;
	const struct cat *c = cd->c;
	struct cat_entry ce = *e;
	struct cat_extent *cx = NULL;
	int r = 0;

	if (e->type == CAT_E_GONE && created - e->stamp > TOMBSTONE_KEEP_NS)
		return 0;
	if (e->n_ext) {
		cx = calloc(e->n_ext, sizeof(*cx));
		if (!cx)
			return -ENOMEM;
	}
	for (uint32_t j = 0; j < e->n_ext && r == 0; j++) {
		struct cat_chunk ch;

		cx[j] = e->ext[j];
		if (e->ext[j].chunk == CAT_HOLE)
			continue;
		ch = c->chunks[e->ext[j].chunk];
		r = cat_writer_add_pack(w, c->packs[ch.pack].name, c->packs[ch.pack].size,
					&ch.pack);
		if (r == 0)
			r = cat_writer_add_chunk(w, &ch, &cx[j].chunk);
	}
	ce.ext = cx;
	if (r == 0)
		r = cat_writer_add_entry(w, &ce);
	free(cx);
	return r;
}

int sync_compact(struct store *st, struct remote *rem, const struct sync_options *o)
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
	int r;

	r = list_sorted(rem, "ns/", &ns);
	if (r == 0)
		r = fetch_catalogs(st, rem, &ns, NULL, NULL, o, 0, &cats, &names, &n, NULL, NULL);
	if (r < 0)
		goto out;
	if (n < 2)
		goto out;
	r = pick_winners(cats, n, 0, &map);
	if (r == 0)
		r = sorted_winners(&map, &win, &nwin);
	if (r == 0)
		r = cat_writer_new(CAT_SNAPSHOT, host, created, cp->min, cp->avg, cp->max, &w);
	for (size_t i = 0; i < nwin && r == 0; i++)
		r = compact_entry(w, win[i], created);
	if (r < 0)
		goto out;
	r = cat_writer_finish(w, &data, &len, sha);
	w = NULL;
	if (r < 0)
		goto out;
	object_name("ns/", ".cat", created, sha, obj, sizeof(obj));
	r = remote_put(rem, obj, data, len);
	/* The snapshot holds everything its inputs did: they can go. */
	for (size_t i = 0; i < n && r == 0; i++)
		if (strcmp(names[i], obj) != 0)
			remote_delete(rem, names[i]);
out:
	cat_writer_free(w);
	free(data);
	smap_free(&map, free);
	free(win);
	cats_free(cats, n);
	free(names);
	names_free(&ns);
	return r;
}
