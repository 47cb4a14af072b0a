/* SPDX-License-Identifier: MIT */
/*
 * Remote gc: retention (files neither written nor read for keep_s leave by a tombstone), then
 * packs no live entry uses are condemned (gc/c...), and packs condemned more than grace_s ago and
 * still unused are deleted and listed for good (gc/d...); ends with a compaction. Touches the
 * remote only: no index, no lock.
 */
#include "sync_priv.h"

static int collect_pack_name(const char *name, uint64_t size, void *data)
{
	struct smap *m = data;
	const char *base = name + strlen("packs/");
	uint64_t *v;

	if (strlen(base) != 64 + 5 || strcmp(base + 64, ".pack") != 0)
		return 0;
	v = malloc(sizeof(*v));
	if (!v)
		return -ENOMEM;
	*v = size;
	if (smap_put(m, name, v) < 0) {
		free(v);
		return -ENOMEM;
	}
	return 0;
}

/* Upload a catalog of kind holding the given pack names (keys of m where keep(val) is true). */
static int put_pack_list(struct store *st, struct remote *r, const char *prefix,
			 const char *const *names, size_t n)
{
	const struct chunker_params *cp = store_chunker_params(st);
	struct cat_writer *w;
	uint8_t host[16] = {0}, sha[32];
	int64_t created = now_ns();
	void *data = NULL;
	size_t len = 0;
	char obj[160];
	int rr;

	rr = cat_writer_new(CAT_CONDEMNED, host, created, cp->min, cp->avg, cp->max, &w);
	for (size_t i = 0; i < n && rr == 0; i++) {
		uint8_t name[32];
		uint32_t idx;

		for (int k = 0; k < 32; k++) {
			unsigned b;

			sscanf(names[i] + strlen("packs/") + 2 * k, "%2x", &b);
			name[k] = (uint8_t)b;
		}
		rr = cat_writer_add_pack(w, name, 0, &idx);
	}
	if (rr < 0) {
		cat_writer_free(w);
		return rr;
	}
	rr = cat_writer_finish(w, &data, &len, sha);
	if (rr < 0)
		return rr;
	object_name(prefix, ".cat", created, sha, obj, sizeof(obj));
	rr = remote_put(r, obj, data, len);
	free(data);
	return rr;
}

int sync_gc(struct store *st, struct remote *r, int64_t keep_s, int64_t grace_s,
	    const struct sync_options *o, struct sync_gc_report *ret)
{
	const struct chunker_params *cp = store_chunker_params(st);
	int64_t now = now_ns(), grace_ns = grace_s * 1000000000;
	struct names ns = {0}, traces = {0}, gc = {0};
	struct smap map = {0}, lastread = {0}, live = {0}, listed = {0}, condemned = {0};
	struct cat **cats = NULL, **marks = NULL;
	char **names = NULL, **mnames = NULL;
	struct cand **win = NULL;
	size_t n = 0, nm = 0, nwin = 0;
	const char **doomed = NULL, **fresh = NULL;
	bool *settled = NULL;
	size_t ndoomed = 0, nfresh = 0, bad = 0;
	int rr;

	memset(ret, 0, sizeof(*ret));
	rr = list_sorted(r, "ns/", &ns);
	if (rr == 0)
		rr = fetch_catalogs(st, r, &ns, NULL, NULL, o, &cats, &names, &n, NULL, &bad);
	/* What an unreadable catalog uses would look unused: collect nothing until it is fixed. */
	if (rr == 0 && bad)
		rr = -EBADMSG;
	if (rr == 0)
		rr = pick_winners(cats, n, &map);
	if (rr == 0)
		rr = sorted_winners(&map, &win, &nwin);
	if (rr < 0)
		goto out;
	ret->catalogs = n;

	/* Retention: files nobody read or wrote for keep_s go, by a tombstone that any newer
	 * write beats. */
	if (keep_s > 0) {
		int64_t cutoff = now - keep_s * 1000000000;
		struct cat_writer *w = NULL;
		uint8_t host[16] = {0};
		size_t expired = 0;

		rr = list_sorted(r, "trace/", &traces);
		for (size_t i = 0; i < traces.n && rr == 0; i++) {
			struct cat *t;

			if (load_catalog(st, r, traces.v[i], &t, NULL) < 0)
				continue;
			for (size_t j = 0; j < t->n_entries && rr == 0; j++) {
				int64_t *v = smap_get(&lastread, t->entries[j].path);

				if (v) {
					*v = MAX(*v, t->entries[j].stamp);
					continue;
				}
				v = malloc(sizeof(*v));
				if (!v || smap_put(&lastread, t->entries[j].path, v) < 0) {
					free(v);
					rr = -ENOMEM;
					break;
				}
				*v = t->entries[j].stamp;
			}
			cat_free(t);
			/* A trace older than the retention tells nothing any more. */
			if ((int64_t)strtoull(traces.v[i] + strlen("trace/"), NULL, 16) < cutoff &&
			    remote_delete(r, traces.v[i]) == 0)
				ret->traces_deleted++;
		}
		if (rr == 0)
			rr = cat_writer_new(CAT_DELTA, host, now, cp->min, cp->avg, cp->max, &w);
		for (size_t i = 0; i < nwin && rr == 0; i++) {
			const struct cat_entry *e = win[i]->e;
			int64_t *lr = smap_get(&lastread, e->path);
			struct cat_entry ce = {.path = e->path, .type = CAT_E_GONE};

			if (e->type != CAT_E_FILE && e->type != CAT_E_SYMLINK)
				continue;
			if (MAX(e->stamp, lr ? *lr : 0) >= cutoff)
				continue;
			ce.stamp = e->stamp + 1;
			rr = cat_writer_add_entry(w, &ce);
			win[i]->e = NULL; /* gone: uses no pack any more */
			expired++;
		}
		if (rr == 0 && expired) {
			void *data = NULL;
			size_t len = 0;
			uint8_t sha[32];
			char obj[160];

			rr = cat_writer_finish(w, &data, &len, sha);
			w = NULL;
			if (rr == 0) {
				object_name("ns/", ".cat", now, sha, obj, sizeof(obj));
				rr = remote_put(r, obj, data, len);
			}
			free(data);
			ret->files_expired = expired;
		}
		cat_writer_free(w);
		if (rr < 0)
			goto out;
	}

	/* Packs some live entry uses. */
	for (size_t i = 0; i < nwin && rr == 0; i++) {
		const struct cat_entry *e = win[i]->e;

		if (!e || e->type != CAT_E_FILE)
			continue;
		for (uint32_t j = 0; j < e->n_ext && rr == 0; j++) {
			char obj[128];

			if (e->ext[j].chunk == CAT_HOLE)
				continue;
			pack_object(win[i]->c->packs[win[i]->c->chunks[e->ext[j].chunk].pack].name,
				    obj, sizeof(obj));
			if (!smap_get(&live, obj))
				rr = smap_put(&live, obj, (void *)1);
		}
	}
	if (rr == 0)
		rr = remote_list(r, "packs/", collect_pack_name, &listed);
	if (rr == 0)
		rr = list_sorted(r, "gc/", &gc);
	if (rr == 0)
		rr = fetch_catalogs(st, r, &gc, NULL, NULL, NULL, &marks, &mnames, &nm, NULL, NULL);
	if (rr < 0)
		goto out;
	doomed = calloc(listed.n + 1, sizeof(*doomed));
	fresh = calloc(listed.n + 1, sizeof(*fresh));
	settled = calloc(nm + 1, sizeof(*settled));
	if (!doomed || !fresh || !settled) {
		rr = -ENOMEM;
		goto out;
	}

	/* Condemned long enough ago and still unused: delete, and record that forever. */
	for (size_t i = 0; i < nm && rr == 0; i++) {
		bool old = marks[i]->created < now - grace_ns;
		bool is_mark = strncmp(mnames[i], "gc/c", 4) == 0;
		bool all_done = true;

		for (size_t j = 0; j < marks[i]->n_packs; j++) {
			char obj[128];

			pack_object(marks[i]->packs[j].name, obj, sizeof(obj));
			if (!is_mark)
				continue;
			smap_put(&condemned, obj, (void *)1);
			if (!old || smap_get(&live, obj))
				continue;
			if (smap_get(&listed, obj)) {
				uint64_t *size = smap_get(&listed, obj);

				if (remote_delete(r, obj) < 0) {
					all_done = false;
					continue;
				}
				ret->packs_deleted++;
				ret->bytes_deleted += *size;
				doomed[ndoomed++] = smap_slot(&listed, obj)->key;
			}
		}
		settled[i] = is_mark && old && all_done;
	}
	if (ndoomed)
		rr = put_pack_list(st, r, "gc/d", doomed, ndoomed);
	/* A condemnation is settled once its packs are deleted or used again. */
	for (size_t i = 0; i < nm && rr == 0; i++)
		if (settled[i])
			remote_delete(r, mnames[i]);

	/* Newly unused packs are condemned now, deleted by a gc after the grace period. */
	for (size_t i = 0; i < listed.cap && rr == 0; i++) {
		const char *obj = listed.slots[i].key;

		if (!obj || smap_get(&live, obj) || smap_get(&condemned, obj))
			continue;
		fresh[nfresh++] = obj;
	}
	if (rr == 0 && nfresh) {
		rr = put_pack_list(st, r, "gc/c", fresh, nfresh);
		ret->packs_condemned = nfresh;
	}
	if (rr == 0)
		rr = sync_compact(st, r, o);
out:
	free(doomed);
	free(fresh);
	free(settled);
	smap_free(&map, free);
	smap_free(&lastread, free);
	smap_free(&live, NULL);
	smap_free(&listed, free);
	smap_free(&condemned, NULL);
	free(win);
	cats_free(cats, n);
	free(names);
	cats_free(marks, nm);
	free(mnames);
	names_free(&ns);
	names_free(&traces);
	names_free(&gc);
	return rr;
}
