/* SPDX-License-Identifier: MIT */
/*
 * Push: learn what the remote holds now (refresh), walk a snapshot for what changed, build packs of
 * the chunks the remote lacks, upload them in parallel, then one catalog, then record the new base
 * and upload the access trace.
 *
 * Lock: lock (sync_push's argument, the vfs mutex; NULL when the store is not serving) is taken
 * around each use of the store's idx: reading meta values, refresh's rseen reads and its writes,
 * the commit before the snapshot opens, record_push and the trace's deletion. It is not held
 * during the walk, the pack building or any network call. uploader threads share struct
 * uploader, guarded by its own mutex mu.
 */
#include "sync_priv.h"

static int upload_cmp(const void *a, const void *b)
{
	const struct upload *x = a, *y = b;

	return x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
}

static struct upload *upload_find(struct push *p, uint64_t chunk)
{
	struct upload key = {.chunk = chunk};

	return p->nup ? bsearch(&key, p->up_v, p->nup, sizeof(key), upload_cmp) : NULL;
}

/* Chunks that changed entries use and the remote lacks. */
static int collect_uploads(struct push *p)
{
	for (size_t i = 0; i < p->npe; i++) {
		struct pentry *pe = &p->pe[i];

		for (size_t j = 0; j < pe->nnx; j++) {
			const struct idx_extent *e = pe->nx[j].e;

			if (!pe->nx[j].chunk || e->rpack)
				continue;
			if (!e->pack) {
				pe->skip = true;
				continue;
			}
			if (p->nup == p->capup) {
				size_t ncap = p->capup ? p->capup * 2 : 256;
				struct upload *nv = realloc(p->up_v, ncap * sizeof(*nv));

				if (!nv)
					return -ENOMEM;
				p->up_v = nv;
				p->capup = ncap;
			}
			p->up_v[p->nup++] = (struct upload){.chunk = e->chunk, .e = e};
		}
	}
	/* In file order, so a file's chunks sit together in a pack (one range read); sorted by
	 * id for lookup once the packs are built. */
	return 0;
}

static int start_newpack(struct push *p, struct pack_writer **w)
{
	struct newpack *nv = realloc(p->np, (p->nnp + 1) * sizeof(*nv));
	struct newpack *np;

	if (!nv)
		return -ENOMEM;
	p->np = nv;
	np = &p->np[p->nnp];
	memset(np, 0, sizeof(*np));
	snprintf(np->file, sizeof(np->file), "push-%d-%zu.pack", (int)getpid(), p->nnp);
	unlinkat(store_staging_fd(p->st), np->file, 0);
	p->nnp++;
	return pack_writer_create(store_staging_fd(p->st), np->file, 0, w);
}

/* Copy every chunk to upload into new packs in STORE/staging. */
static int build_packs(struct push *p)
{
	struct pack_writer *w = NULL;
	uint8_t *buf = malloc(PACK_MAX_CHUNK);
	struct idset seen = {0};
	uint64_t done = 0, total = 0;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < p->nup; i++)
		total += p->up_v[i].e->len; /* copies counted too: an upper bound */
	for (size_t i = 0; i < p->nup; i++) {
		struct upload *u = &p->up_v[i];
		const struct idx_extent *e = u->e;

		/* The same chunk used again: the first copy serves all. */
		r = idset_add(&seen, u->chunk);
		if (r < 0)
			break;
		if (r == 0) {
			u->status = 1;
			continue;
		}
		r = 0;
		u->status = store_read_chunk(p->st, e->pack, &e->loc, &e->key, buf, e->len);
		if (u->status < 0)
			continue;
		if (!w) {
			r = start_newpack(p, &w);
			if (r < 0)
				break;
		}
		r = pack_writer_append(w, &e->key, &e->digest, buf, e->len, true, &u->loc);
		if (r < 0)
			break;
		u->npack = (uint32_t)(p->nnp - 1);
		p->rep->chunks_uploaded++;
		done += e->len;
		if (pack_writer_size(w) >= PUSH_PACK_TARGET) {
			r = pack_writer_seal(w);
			p->np[p->nnp - 1].size = pack_writer_size(w);
			pack_writer_free(w);
			w = NULL;
			if (r < 0)
				break;
		}
		if (p->o && p->o->progress && i % 16 == 0)
			p->o->progress(p->o->progress_data, "packing bytes", done, total);
	}
	if (p->o && p->o->progress)
		p->o->progress(p->o->progress_data, "packing bytes", done, total);
	if (w) {
		int r2 = pack_writer_seal(w);

		p->np[p->nnp - 1].size = pack_writer_size(w);
		pack_writer_free(w);
		if (r == 0)
			r = r2;
	}
	free(buf);
	free(seen.v);
	if (r < 0)
		return r;
	/* Every copy of a chunk (a run of equal ids once sorted) carries the location of the one
	 * that was appended, so a lookup may land on any of them. */
	if (p->nup)
		qsort(p->up_v, p->nup, sizeof(*p->up_v), upload_cmp);
	for (size_t i = 0, j; i < p->nup; i = j) {
		const struct upload *real = NULL;

		for (j = i; j < p->nup && p->up_v[j].chunk == p->up_v[i].chunk; j++)
			if (!real && p->up_v[j].status != 1)
				real = &p->up_v[j];
		for (size_t k = i; real && k < j; k++) {
			p->up_v[k].status = real->status;
			p->up_v[k].npack = real->npack;
			p->up_v[k].loc = real->loc;
		}
	}
	return 0;
}

struct uploader {
	struct push *p;
	pthread_mutex_t mu;
	size_t next, done;
	uint64_t bytes;       /* uploaded */
	uint64_t present;     /* packs found there already */
	uint64_t sent, total; /* packs dealt with, in bytes, for progress */
	char err[512];        /* the first failure's remote_last_error, for the caller */
};

static int upload_one(struct push *p, struct newpack *np)
{
	char obj[128];
	uint8_t *data;
	chunk_digest d;
	uint64_t have = 0;
	int fd, r;

	fd = openat(store_staging_fd(p->st), np->file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	data = malloc(np->size ? np->size : 1);
	r = data ? pread_all(fd, data, np->size, 0) : -ENOMEM;
	close(fd);
	if (r < 0) {
		free(data);
		return r;
	}
	hash_digest(data, np->size, &d);
	memcpy(np->name, d.b, 32);
	pack_object(np->name, obj, sizeof(obj));
	/* A rerun of an interrupted push finds its packs already there (push packs are the same
	 * bytes for the same chunks). */
	if (remote_head(p->rem, obj, &have) == 1 && have == np->size)
		r = 1;
	else
		r = remote_put(p->rem, obj, data, np->size);
	free(data);
	return r;
}

static void *uploader_thread(void *arg)
{
	struct uploader *u = arg;

	for (;;) {
		struct newpack *np;
		size_t i;

		pthread_mutex_lock(&u->mu);
		i = u->next++;
		pthread_mutex_unlock(&u->mu);
		if (i >= u->p->nnp)
			break;
		np = &u->p->np[i];
		np->status = upload_one(u->p, np);
		if (np->status < 0)
			log_debug("upload of %s failed: %s", np->file, remote_last_error());
		pthread_mutex_lock(&u->mu);
		if (np->status < 0 && !u->err[0])
			snprintf(u->err, sizeof(u->err), "%s", remote_last_error());
		u->done++;
		if (np->status == 0)
			u->bytes += np->size;
		else if (np->status == 1)
			u->present++;
		u->sent += np->size;
		if (u->p->o && u->p->o->progress)
			u->p->o->progress(u->p->o->progress_data, "uploading bytes", u->sent,
					  u->total);
		pthread_mutex_unlock(&u->mu);
	}
	return NULL;
}

static int upload_packs(struct push *p)
{
	struct uploader u = {.p = p};
	unsigned n = p->o && p->o->parallel ? p->o->parallel : PARALLEL_DEFAULT;
	pthread_t th[16];
	unsigned started = 0;
	int r = 0;

	n = MIN(n, 16u);
	for (size_t i = 0; i < p->nnp; i++)
		u.total += p->np[i].size;
	pthread_mutex_init(&u.mu, NULL);
	for (unsigned i = 0; i < n && i < p->nnp; i++)
		if (pthread_create(&th[started], NULL, uploader_thread, &u) == 0)
			started++;
	if (!started && p->nnp)
		uploader_thread(&u);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&u.mu);
	if (u.err[0])
		remote_carry_error(u.err);
	for (size_t i = 0; i < p->nnp; i++) {
		unlinkat(store_staging_fd(p->st), p->np[i].file, 0);
		if (p->np[i].status < 0 && r == 0)
			r = p->np[i].status;
	}
	if (r == 0) {
		p->rep->packs_uploaded = p->nnp - u.present;
		p->rep->packs_present = u.present;
		p->rep->bytes_uploaded = u.bytes;
	}
	return r;
}

/*
 * Extent j of pe into cx, its chunk (on the remote already, or in a pack this push uploaded) into
 * the catalog's tables. 0; 1 when the chunk could not be read here (pe->skip set); -errno.
 */
static int catalog_chunk(struct push *p, struct cat_writer *w, struct pentry *pe, size_t j,
			 struct cat_extent *cx)
{
	const struct idx_extent *e = pe->nx[j].e;
	struct cat_chunk ch = {0};
	uint8_t name[32];
	uint64_t size = 0;
	int r;

	cx->len = pe->nx[j].len;
	cx->chunk = CAT_HOLE;
	if (!pe->nx[j].chunk)
		return 0;
	ch.key = e->key;
	ch.digest = e->digest;
	ch.raw_len = e->len;
	if (e->rpack) {
		if (idx_rpack_get(p->snap, e->rpack, name, &size) != 1)
			return -EUCLEAN;
		ch.off = e->rloc.offset;
		ch.stored_len = e->rloc.stored_len;
		ch.flags = e->rloc.flags;
	} else {
		struct upload *u = upload_find(p, e->chunk);

		if (!u || u->status < 0) {
			pe->skip = true;
			return 1;
		}
		memcpy(name, p->np[u->npack].name, 32);
		size = p->np[u->npack].size;
		ch.off = u->loc.offset;
		ch.stored_len = u->loc.stored_len;
		ch.flags = u->loc.flags;
	}
	r = cat_writer_add_pack(w, name, size, &ch.pack);
	if (r == 0)
		r = cat_writer_add_chunk(w, &ch, &cx->chunk);
	return r;
}

/* The catalog of this push. */
static int build_catalog(struct push *p, const uint8_t host[16], int64_t created, void **ret_data,
			 size_t *ret_len, uint8_t ret_sha[32])
{
	const struct chunker_params *cp = store_chunker_params(p->st);
	struct cat_writer *w;
	size_t entries = 0;
	int r;

	r = cat_writer_new(CAT_DELTA, host, created, cp->min, cp->avg, cp->max, &w);
	if (r < 0)
		return r;
	for (size_t i = 0; i < p->npe && r == 0; i++) {
		struct pentry *pe = &p->pe[i];
		struct cat_extent *cx = NULL;
		struct cat_entry ce;

		if (pe->skip)
			continue;
		if (pe->type == CAT_E_FILE && pe->nnx) {
			cx = calloc(pe->nnx, sizeof(*cx));
			if (!cx) {
				r = -ENOMEM;
				break;
			}
		}
		for (size_t j = 0; j < pe->nnx && r == 0; j++)
			r = catalog_chunk(p, w, pe, j, &cx[j]);
		if (r == 1)
			r = 0; /* pe->skip: a chunk it uses is not readable here */
		if (r == 0 && !pe->skip) {
			ce = cat_entry_of(pe, cx);
			r = cat_writer_add_entry(w, &ce);
			entries++;
			if (pe->type == CAT_E_GONE)
				p->rep->tombstones++;
			else
				p->rep->upserts++;
		}
		if (pe->skip)
			p->rep->skipped++;
		free(cx);
	}
	if (r < 0 || entries == 0) {
		cat_writer_free(w);
		*ret_data = NULL;
		*ret_len = 0;
		return r;
	}
	return cat_writer_finish(w, ret_data, ret_len, ret_sha);
}

/* Record under the caller's lock what the remote now holds. */
static int record_push(struct push *p, pthread_mutex_t *lock, const char *catalog,
		       int64_t walk_start)
{
	struct idx *x = store_idx(p->st);
	uint64_t *rp = calloc(p->nnp ? p->nnp : 1, sizeof(*rp));
	int r;

	if (!rp)
		return -ENOMEM;
	if (lock)
		pthread_mutex_lock(lock);
	r = idx_begin(x);
	for (size_t i = 0; i < p->nnp && r == 0; i++)
		r = idx_rpack_ensure(x, p->np[i].name, p->np[i].size, &rp[i]);
	for (size_t i = 0; i < p->nup && r == 0; i++) {
		const struct upload *u = &p->up_v[i];

		if (u->status >= 0)
			r = idx_set_chunk_remote(x, &u->e->key, &u->e->digest, rp[u->npack],
						 &u->loc);
	}
	for (size_t i = 0; i < p->npe && r == 0; i++) {
		const struct pentry *pe = &p->pe[i];

		if (!pe->skip)
			r = idx_rbase_put(x, pe->path, pe->type, pe->stamp, pe->sig);
	}
	if (r == 0 && *catalog)
		r = idx_rseen_mark(x, catalog, true);
	if (r == 0)
		r = idx_meta_set_i64(x, "rsync_time", walk_start);
	if (r < 0)
		log_debug("recording the push failed: %s", strerror(-r));
	if (!lock)
		r = r < 0 ? (idx_rollback(x), r) : idx_commit(x);
	if (lock)
		pthread_mutex_unlock(lock);
	free(rp);
	return r;
}

static bool want_unseen(void *data, const char *name)
{
	bool merged = false;

	return idx_rseen_get(data, name, &merged) != 1;
}

/*
 * Learn which chunks the remote has now (catalogs pushed since we last looked) and which packs
 * gc condemned, so that push uploads exactly what is missing.
 */
static int refresh(struct store *st, struct remote *rem, pthread_mutex_t *lock,
		   const struct sync_options *o, size_t *ret_ncat)
{
	struct idx *x = store_idx(st);
	struct names ns = {0}, gc = {0};
	struct cat **cats = NULL, **cond = NULL;
	char **names = NULL, **cnames = NULL;
	size_t n = 0, nc = 0;
	int r;

	r = list_sorted(rem, "ns/", &ns);
	if (r == 0)
		r = list_sorted(rem, "gc/", &gc);
	if (r < 0)
		goto out;
	*ret_ncat = ns.n;
	/* Which are new is a question for the index (under lock); the downloads are not. */
	{
		struct names unseen = {0};

		if (lock)
			pthread_mutex_lock(lock);
		for (size_t i = 0; i < ns.n && r == 0; i++)
			if (want_unseen(x, ns.v[i]))
				r = collect_name(ns.v[i], 0, &unseen);
		if (lock)
			pthread_mutex_unlock(lock);
		if (r == 0)
			r = fetch_catalogs(st, rem, &unseen, NULL, NULL, o, 0, &cats, &names, &n,
					   NULL, NULL);
		/* names point into unseen: keep their strings until the end. */
		names_free(&ns);
		ns = unseen;
	}
	if (r == 0)
		r = fetch_catalogs(st, rem, &gc, NULL, NULL, NULL, 0, &cond, &cnames, &nc, NULL,
				   NULL);
	if (r < 0)
		goto out;
	if (lock)
		pthread_mutex_lock(lock);
	r = idx_begin(x);
	for (size_t i = 0; i < nc && r == 0; i++) {
		for (size_t j = 0; j < cond[i]->n_packs && r == 0; j++) {
			uint64_t id;

			r = idx_rpack_ensure(x, cond[i]->packs[j].name, cond[i]->packs[j].size,
					     &id);
			if (r == 0)
				r = idx_rpack_condemn(x, id);
		}
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		r = learn_chunks(x, cats[i]);
		if (r == 0)
			r = idx_rseen_mark(x, names[i], false);
	}
	if (!lock)
		r = r < 0 ? (idx_rollback(x), r) : idx_commit(x);
	if (lock)
		pthread_mutex_unlock(lock);
out:
	cats_free(cats, n);
	free(names);
	cats_free(cond, nc);
	free(cnames);
	names_free(&ns);
	names_free(&gc);
	return r;
}

struct trace_walk {
	struct push *p;
	struct cat_writer *w;
	int64_t upto; /* the newest stamp written */
	size_t entries;
};

/* One entry of the access trace: its path (one of the inode's names) into the trace catalog. */
static int trace_entry(uint64_t ino, int64_t stamp, void *data)
{
	struct trace_walk *t = data;
	struct cat_entry ce = {.type = CAT_E_READ, .stamp = stamp};
	char path[IDX_PATH_MAX + 1];
	int r;

	t->upto = MAX(t->upto, stamp);
	if (idx_path(t->p->snap, ino, path, sizeof(path)) < 0 || !cat_path_valid(path))
		return 0;
	ce.path = path;
	r = cat_writer_add_entry(t->w, &ce);
	if (r == -EEXIST)
		return 0; /* two inodes once had this path: one read is enough */
	if (r == 0)
		t->entries++;
	return r;
}

/* Upload the access trace (files opened since the last push), then forget it. */
static int push_trace(struct push *p, pthread_mutex_t *lock, const uint8_t host[16])
{
	const struct chunker_params *cp = store_chunker_params(p->st);
	struct cat_writer *w = NULL;
	struct trace_walk t = {.p = p};
	int64_t created = now_ns();
	void *data = NULL;
	size_t len = 0;
	uint8_t sha[32];
	char obj[160];
	int r;

	r = cat_writer_new(CAT_TRACE, host, created, cp->min, cp->avg, cp->max, &w);
	if (r < 0)
		return r;
	t.w = w;
	r = idx_trace_each(p->snap, trace_entry, &t);
	if (r < 0 || t.entries == 0) {
		cat_writer_free(w);
		return r;
	}
	r = cat_writer_finish(w, &data, &len, sha);
	if (r < 0)
		return r;
	object_name("trace/", ".trc", created, sha, obj, sizeof(obj));
	r = remote_put(p->rem, obj, data, len);
	free(data);
	if (r < 0)
		return r;
	if (lock)
		pthread_mutex_lock(lock);
	r = idx_begin(store_idx(p->st));
	if (r == 0)
		r = idx_trace_forget(store_idx(p->st), t.upto);
	if (!lock)
		r = r < 0 ? (idx_rollback(store_idx(p->st)), r) : idx_commit(store_idx(p->st));
	if (lock)
		pthread_mutex_unlock(lock);
	return r;
}

int sync_push(struct store *st, struct remote *rem, pthread_mutex_t *lock,
	      const struct sync_options *o, struct sync_report *ret)
{
	struct push p = {.st = st, .rem = rem, .rep = ret, .o = o};
	uint8_t host[16], sha[32];
	int64_t walk_start;
	size_t ncat = 0, len = 0;
	void *data = NULL;
	int r;

	memset(ret, 0, sizeof(*ret));
	r = sync_store_untrusted(st, lock);
	if (r != 0)
		return r < 0 ? r : -EPERM;
	r = refresh(st, rem, lock, o, &ncat);
	if (r < 0)
		return r;
	if (lock)
		pthread_mutex_lock(lock);
	r = idx_begin(store_idx(st));
	if (r == 0)
		r = host_id(store_idx(st), host);
	p.last_sync = idx_meta_get_i64(store_idx(st), "rsync_time");
	/* The snapshot must see what refresh learnt; packs first, as every commit does. */
	if (r == 0)
		r = store_sync_packs(st);
	if (r == 0)
		r = idx_commit(store_idx(st));
	if (lock)
		pthread_mutex_unlock(lock);
	if (r < 0)
		return r;

	walk_start = now_ns();
	r = snap_open(&p);
	if (r == 0)
		r = snap_load_base(&p);
	if (r == 0)
		r = snap_walk(&p, IDX_ROOT_INO, "");
	if (r == 0)
		r = add_tombstones(&p);
	if (r == 0)
		r = collect_uploads(&p);
	if (r == 0)
		r = build_packs(&p);
	if (r == 0)
		r = upload_packs(&p);
	if (r == 0)
		r = build_catalog(&p, host, walk_start, &data, &len, sha);
	if (r == 0 && data) {
		object_name("ns/", ".cat", walk_start, sha, ret->catalog, sizeof(ret->catalog));
		r = remote_put(rem, ret->catalog, data, len);
		if (r == 0)
			ret->catalog_uploaded_bytes = len;
		else
			ret->catalog[0] = '\0';
	}
	free(data);
	/* Only a push that published everything moves the base. */
	if (r == 0)
		r = record_push(&p, lock, ret->catalog, walk_start);
	if (r == 0)
		r = push_trace(&p, lock, host);
	push_free(&p);
	if (r == 0 && ncat + 1 > SYNC_COMPACT_AT)
		r = sync_compact(st, rem, o);
	return r;
}
