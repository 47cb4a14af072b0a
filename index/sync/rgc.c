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
static int put_pack_list(struct store *st, struct remote *rem, const char *prefix,
			 const char *const *names, size_t n)
{
	const struct chunker_params *cp = store_chunker_params(st);
	struct cat_writer *w;
	uint8_t host[16] = {0}, sha[32];
	int64_t created = now_ns();
	void *data = NULL;
	size_t len = 0;
	char obj[160];
	int r;

	r = cat_writer_new(CAT_CONDEMNED, host, created, cp->min, cp->avg, cp->max, &w);
	for (size_t i = 0; i < n && r == 0; i++) {
		uint8_t name[32];
		uint32_t idx;

		for (int k = 0; k < 32; k++) {
			unsigned b;

			sscanf(names[i] + strlen("packs/") + 2 * k, "%2x", &b);
			name[k] = (uint8_t)b;
		}
		r = cat_writer_add_pack(w, name, 0, &idx);
	}
	if (r < 0) {
		cat_writer_free(w);
		return r;
	}
	r = cat_writer_finish(w, &data, &len, sha);
	if (r < 0)
		return r;
	object_name(prefix, ".cat", created, sha, obj, sizeof(obj));
	r = remote_put(rem, obj, data, len);
	free(data);
	return r;
}

/* A remote gc under way. */
struct gc {
	struct store *st;
	struct remote *rem;
	const struct sync_options *o;
	struct sync_gc_report *rep;
	int64_t now;
	struct names ns, traces, gc;
	struct cat **cats, **marks; /* the catalogs of ns/; the condemnations of gc/ */
	char **names, **mnames;
	size_t n, nm;
	struct smap map; /* path -> struct cand *: the winners */
	struct cand **win;
	size_t nwin;
	struct smap lastread; /* path -> int64_t *: the last read of it in a trace */
	struct smap live;     /* pack object -> 1: used by a live entry */
	struct smap listed; /* pack object -> uint64_t *: its size, for every pack on the remote */
	struct smap condemned; /* pack object -> 1: condemned already */
};

/* The namespace: the winners over every catalog of ns/. */
static int gc_read_namespace(struct gc *g)
{
	struct names bad = {0};
	int r;

	r = list_sorted(g->rem, "ns/", &g->ns);
	if (r == 0)
		r = fetch_catalogs(g->st, g->rem, &g->ns, NULL, NULL, g->o, 0, &g->cats, &g->names,
				   &g->n, NULL, &bad);
	/* What an unreadable catalog uses would look unused: collect nothing until it is fixed. */
	if (r == 0 && bad.n)
		r = -EBADMSG;
	names_free(&bad);
	if (r == 0)
		r = pick_winners(g->cats, g->n, 0, &g->map);
	if (r == 0)
		r = sorted_winners(&g->map, &g->win, &g->nwin);
	return r;
}

/* When each path was last read, from every trace; traces older than cutoff are deleted. */
static int gc_read_traces(struct gc *g, int64_t cutoff)
{
	int r = list_sorted(g->rem, "trace/", &g->traces);

	for (size_t i = 0; i < g->traces.n && r == 0; i++) {
		struct cat *t;

		if (load_catalog(g->st, g->rem, g->traces.v[i], &t, NULL) < 0)
			continue;
		for (size_t j = 0; j < t->n_entries && r == 0; j++) {
			int64_t *v = smap_get(&g->lastread, t->entries[j].path);

			if (v) {
				*v = MAX(*v, t->entries[j].stamp);
				continue;
			}
			v = malloc(sizeof(*v));
			if (!v || smap_put(&g->lastread, t->entries[j].path, v) < 0) {
				free(v);
				r = -ENOMEM;
				break;
			}
			*v = t->entries[j].stamp;
		}
		cat_free(t);
		/* A trace older than the retention tells nothing any more. */
		if ((int64_t)strtoull(g->traces.v[i] + strlen("trace/"), NULL, 16) < cutoff &&
		    remote_delete(g->rem, g->traces.v[i]) == 0)
			g->rep->traces_deleted++;
	}
	return r;
}

/* Tombstones for the files neither written nor read since cutoff, into w; they leave the
 * winners (win[i]->e NULL: gone, uses no pack any more). The number of them, or -errno. */
static int64_t gc_expire_into(struct gc *g, struct cat_writer *w, int64_t cutoff)
{
	int64_t expired = 0;
	int r = 0;

	for (size_t i = 0; i < g->nwin && r == 0; i++) {
		const struct cat_entry *e = g->win[i]->e;
		int64_t *lr = smap_get(&g->lastread, e->path);
		struct cat_entry ce = {.path = e->path, .type = CAT_E_GONE};

		if (e->type != CAT_E_FILE && e->type != CAT_E_SYMLINK)
			continue;
		if (MAX(e->stamp, lr ? *lr : 0) >= cutoff)
			continue;
		ce.stamp = cat_stamp_after(e->stamp);
		r = cat_writer_add_entry(w, &ce);
		g->win[i]->e = NULL;
		expired++;
	}
	return r < 0 ? r : expired;
}

/* Retention: files nobody read or wrote for keep_s go, by a tombstone that any newer write
 * beats. */
static int gc_expire(struct gc *g, int64_t keep_s)
{
	const struct chunker_params *cp = store_chunker_params(g->st);
	int64_t cutoff = g->now - keep_s * 1000000000, expired = 0;
	struct cat_writer *w = NULL;
	uint8_t host[16] = {0};
	int r;

	r = gc_read_traces(g, cutoff);
	if (r == 0)
		r = cat_writer_new(CAT_DELTA, host, g->now, cp->min, cp->avg, cp->max, &w);
	if (r == 0) {
		expired = gc_expire_into(g, w, cutoff);
		if (expired < 0)
			r = (int)expired;
	}
	if (r == 0 && expired) {
		void *data = NULL;
		size_t len = 0;
		uint8_t sha[32];
		char obj[160];

		r = cat_writer_finish(w, &data, &len, sha);
		w = NULL;
		if (r == 0) {
			object_name("ns/", ".cat", g->now, sha, obj, sizeof(obj));
			r = remote_put(g->rem, obj, data, len);
		}
		free(data);
		g->rep->files_expired = (uint64_t)expired;
	}
	cat_writer_free(w);
	return r;
}

/* Packs some live entry uses. */
static int gc_live_packs(struct gc *g)
{
	int r = 0;

	for (size_t i = 0; i < g->nwin && r == 0; i++) {
		const struct cat_entry *e = g->win[i]->e;
		const struct cat *c = g->win[i]->c;

		if (!e || e->type != CAT_E_FILE)
			continue;
		for (uint32_t j = 0; j < e->n_ext && r == 0; j++) {
			char obj[128];

			if (e->ext[j].chunk == CAT_HOLE)
				continue;
			pack_object(c->packs[c->chunks[e->ext[j].chunk].pack].name, obj,
				    sizeof(obj));
			if (!smap_get(&g->live, obj))
				r = smap_put(&g->live, obj, (void *)1);
		}
	}
	return r;
}

/*
 * Condemned long enough ago and still unused: delete, and record that forever. Condemnations
 * whose packs are all deleted or used again are settled: deleted.
 */
static int gc_delete_condemned(struct gc *g, int64_t grace_s)
{
	int64_t grace_ns = grace_s * 1000000000;
	const char **doomed = calloc(g->listed.n + 1, sizeof(*doomed));
	bool *settled = calloc(g->nm + 1, sizeof(*settled));
	size_t ndoomed = 0;
	int r = 0;

	if (!doomed || !settled) {
		free(doomed);
		free(settled);
		return -ENOMEM;
	}
	for (size_t i = 0; i < g->nm; i++) {
		bool old = g->marks[i]->created < g->now - grace_ns;
		bool is_mark = strncmp(g->mnames[i], "gc/c", 4) == 0;
		bool all_done = true;

		for (size_t j = 0; j < g->marks[i]->n_packs; j++) {
			char obj[128];
			uint64_t *size;

			pack_object(g->marks[i]->packs[j].name, obj, sizeof(obj));
			if (!is_mark)
				continue;
			smap_put(&g->condemned, obj, (void *)1);
			if (!old || smap_get(&g->live, obj))
				continue;
			size = smap_get(&g->listed, obj);
			if (!size)
				continue;
			if (remote_delete(g->rem, obj) < 0) {
				all_done = false;
				continue;
			}
			g->rep->packs_deleted++;
			g->rep->bytes_deleted += *size;
			doomed[ndoomed++] = smap_slot(&g->listed, obj)->key;
		}
		settled[i] = is_mark && old && all_done;
	}
	if (ndoomed)
		r = put_pack_list(g->st, g->rem, "gc/d", doomed, ndoomed);
	for (size_t i = 0; i < g->nm && r == 0; i++)
		if (settled[i])
			remote_delete(g->rem, g->mnames[i]);
	free(doomed);
	free(settled);
	return r;
}

/* Newly unused packs are condemned now, deleted by a gc after the grace period. */
static int gc_condemn_unused(struct gc *g)
{
	const char **fresh = calloc(g->listed.n + 1, sizeof(*fresh));
	size_t nfresh = 0;
	int r = 0;

	if (!fresh)
		return -ENOMEM;
	for (size_t i = 0; i < g->listed.cap; i++) {
		const char *obj = g->listed.slots[i].key;

		if (!obj || smap_get(&g->live, obj) || smap_get(&g->condemned, obj))
			continue;
		fresh[nfresh++] = obj;
	}
	if (nfresh) {
		r = put_pack_list(g->st, g->rem, "gc/c", fresh, nfresh);
		g->rep->packs_condemned = nfresh;
	}
	free(fresh);
	return r;
}

static void gc_free(struct gc *g)
{
	smap_free(&g->map, free);
	smap_free(&g->lastread, free);
	smap_free(&g->live, NULL);
	smap_free(&g->listed, free);
	smap_free(&g->condemned, NULL);
	free(g->win);
	cats_free(g->cats, g->n);
	free(g->names);
	cats_free(g->marks, g->nm);
	free(g->mnames);
	names_free(&g->ns);
	names_free(&g->traces);
	names_free(&g->gc);
}

int sync_gc(struct store *st, struct remote *rem, int64_t keep_s, int64_t grace_s,
	    const struct sync_options *o, struct sync_gc_report *ret)
{
	struct gc g = {.st = st, .rem = rem, .o = o, .rep = ret, .now = now_ns()};
	int r;

	memset(ret, 0, sizeof(*ret));
	r = gc_read_namespace(&g);
	if (r < 0)
		goto out;
	ret->catalogs = g.n;
	if (keep_s > 0)
		r = gc_expire(&g, keep_s);
	if (r == 0)
		r = gc_live_packs(&g);
	if (r == 0)
		r = remote_list(rem, "packs/", collect_pack_name, &g.listed);
	if (r == 0)
		r = list_sorted(rem, "gc/", &g.gc);
	if (r == 0)
		r = fetch_catalogs(st, rem, &g.gc, NULL, NULL, NULL, 0, &g.marks, &g.mnames, &g.nm,
				   NULL, NULL);
	if (r == 0)
		r = gc_delete_condemned(&g, grace_s);
	if (r == 0)
		r = gc_condemn_unused(&g);
	if (r == 0)
		r = sync_compact(st, rem, o);
out:
	gc_free(&g);
	return r;
}
