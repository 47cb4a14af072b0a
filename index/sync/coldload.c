/* SPDX-License-Identifier: MIT */
/*
 * The cold load: a pull into an empty store (a new runner) builds the whole tree in memory from
 * the winners and writes it in bulk, with no lookups. Runs inside the pull's transaction on a store
 * that is not serving: no lock.
 */
#include "sync_priv.h"

/*
 * Rows of one table inserted many per statement: a new runner's store is filled with hundreds
 * of thousands of rows, and one statement per row spends much of its time in statement
 * overhead. Values are kept until a batch is full (blobs by pointer: they must live until
 * batch_flush), then bound and inserted at once.
 */
#define BATCH_ROWS 64

struct bval {
	const void *p; /* blob, or NULL for an integer */
	sqlite3_int64 i;
	int len;
};

struct batch {
	sqlite3 *db;
	const char *head; /* "INSERT INTO t (a, b) VALUES" */
	int ncols, nrows;
	sqlite3_stmt *full;
	struct bval *v; /* BATCH_ROWS * ncols */
	int r;          /* the first failure */
};

static sqlite3_stmt *batch_prepare(struct batch *b, int rows)
{
	size_t len = strlen(b->head) + (size_t)rows * ((size_t)b->ncols * 2 + 3) + 1;
	char *sql = malloc(len), *p;
	sqlite3_stmt *s = NULL;

	if (!sql)
		return NULL;
	p = sql + sprintf(sql, "%s", b->head);
	for (int i = 0; i < rows; i++) {
		*p++ = i ? ',' : ' ';
		*p++ = '(';
		for (int c = 0; c < b->ncols; c++) {
			if (c)
				*p++ = ',';
			*p++ = '?';
		}
		*p++ = ')';
	}
	*p = '\0';
	if (sqlite3_prepare_v2(b->db, sql, -1, &s, NULL) != SQLITE_OK)
		s = NULL;
	free(sql);
	return s;
}

static int batch_init(struct batch *b, sqlite3 *db, const char *head, int ncols)
{
	memset(b, 0, sizeof(*b));
	b->db = db;
	b->head = head;
	b->ncols = ncols;
	b->v = calloc((size_t)BATCH_ROWS * (size_t)ncols, sizeof(*b->v));
	b->full = batch_prepare(b, BATCH_ROWS);
	return b->v && b->full ? 0 : -ENOMEM;
}

static void batch_int(struct batch *b, int col, sqlite3_int64 i)
{
	b->v[b->nrows * b->ncols + col] = (struct bval){.i = i};
}

static void batch_blob(struct batch *b, int col, const void *p, int len)
{
	b->v[b->nrows * b->ncols + col] = (struct bval){.p = p, .len = len};
}

static void batch_exec(struct batch *b, sqlite3_stmt *s, int rows)
{
	for (int k = 0; k < rows * b->ncols; k++) {
		if (b->v[k].p)
			sqlite3_bind_blob(s, k + 1, b->v[k].p, b->v[k].len, SQLITE_STATIC);
		else
			sqlite3_bind_int64(s, k + 1, b->v[k].i);
	}
	if (b->r == 0 && sqlite3_step(s) != SQLITE_DONE)
		b->r = idx_errno(sqlite3_errcode(b->db));
	sqlite3_reset(s);
}

static void batch_row_done(struct batch *b)
{
	if (++b->nrows < BATCH_ROWS)
		return;
	batch_exec(b, b->full, BATCH_ROWS);
	b->nrows = 0;
}

/* Insert what is left and free the batch; the first failure, or 0. */
static int batch_flush(struct batch *b)
{
	if (b->nrows && b->r == 0) {
		sqlite3_stmt *rest = batch_prepare(b, b->nrows);

		if (rest)
			batch_exec(b, rest, b->nrows);
		else
			b->r = -EIO;
		sqlite3_finalize(rest);
	}
	sqlite3_finalize(b->full);
	free(b->v);
	return b->r;
}

/* A node of the tree a cold load builds in memory before writing it. */
struct cnode {
	uint64_t ino, parent;
	const struct cand *cd; /* NULL: a directory implied by a path below it */
	const char *name;      /* the last component, inside a path that outlives the load */
	uint32_t mode, uid, gid, subdirs;
	int64_t mtime, stamp;
	bool dir;
};

struct cload {
	struct cnode *v;
	size_t n, cap;
	struct smap where;            /* path -> node index + 1 */
	uint64_t first_ino, next_ino; /* node i has ino first_ino + i */
};

static int64_t cload_add(struct cload *l, const char *path, const char *name, uint64_t parent)
{
	struct cnode *nd;

	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 4096;
		struct cnode *nv = realloc(l->v, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		l->v = nv;
		l->cap = ncap;
	}
	nd = &l->v[l->n];
	memset(nd, 0, sizeof(*nd));
	nd->ino = l->next_ino++;
	nd->parent = parent;
	nd->name = name;
	if (smap_put(&l->where, path, (void *)(uintptr_t)(l->n + 1)) < 0)
		return -ENOMEM;
	return (int64_t)l->n++;
}

/*
 * The node of directory path, made (with the owner and times of what needs it) when missing;
 * a file in the way becomes a directory: directories win. Returns its index or -errno.
 */
static int64_t cload_dir(struct cload *l, const char *path, const struct cat_entry *child)
{
	const char *slash = strrchr(path, '/');
	uint64_t parent = IDX_ROOT_INO;
	size_t idx = (size_t)(uintptr_t)smap_get(&l->where, path);
	int64_t k;

	if (idx) {
		struct cnode *nd = &l->v[idx - 1];

		if (!nd->dir) {
			nd->dir = true;
			nd->cd = NULL;
			nd->mode = S_IFDIR | 0755;
		}
		return (int64_t)idx - 1;
	}
	if (slash) {
		char buf[PATH_MAX_LEN + 1];

		snprintf(buf, sizeof(buf), "%.*s", (int)(slash - path), path);
		k = cload_dir(l, buf, child);
		if (k < 0)
			return k;
		parent = l->v[k].ino;
	}
	/* The key must outlive the load: the map copies it; the name points into that copy. */
	k = cload_add(l, path, NULL, parent);
	if (k < 0)
		return k;
	{
		const char *key = smap_slot(&l->where, path)->key, *ks = strrchr(key, '/');
		struct cnode *nd = &l->v[k];

		nd->name = ks ? ks + 1 : key;
		nd->dir = true;
		nd->mode = S_IFDIR | 0755;
		nd->uid = child->uid;
		nd->gid = child->gid;
		nd->mtime = child->mtime;
		nd->stamp = child->stamp;
	}
	return k;
}

/* Chunks a cold load uses: ids assigned in order of first use, across catalogs. */
struct cchunks {
	uint64_t first;  /* the id of v[0] */
	struct smap map; /* key and digest in hex -> id */
	uint64_t **ids;  /* per catalog, per chunk index: the id, 0 until used */
	struct {
		size_t ci;
		uint32_t ch, refs;
	} * v;
	size_t n, cap;
};

static int cload_chunk(struct cchunks *cc, struct cat **cats, size_t ci, uint32_t ch, uint64_t *ret)
{
	const struct cat_chunk *c = &cats[ci]->chunks[ch];
	uint64_t *id;
	char hex[97];

	if (!cc->ids[ci]) {
		cc->ids[ci] = calloc(cats[ci]->n_chunks + 1, sizeof(uint64_t));
		if (!cc->ids[ci])
			return -ENOMEM;
	}
	if (!cc->ids[ci][ch]) {
		chunk_id_hex(&c->key, &c->digest, hex);
		id = smap_get(&cc->map, hex);
		if (!id) {
			if (cc->n == cc->cap) {
				size_t ncap = cc->cap ? cc->cap * 2 : 4096;
				void *nv = realloc(cc->v, ncap * sizeof(*cc->v));

				if (!nv)
					return -ENOMEM;
				cc->v = nv;
				cc->cap = ncap;
			}
			id = malloc(sizeof(*id));
			if (!id || smap_put(&cc->map, hex, id) < 0) {
				free(id);
				return -ENOMEM;
			}
			*id = cc->first + cc->n;
			cc->v[cc->n].ci = ci;
			cc->v[cc->n].ch = ch;
			cc->v[cc->n].refs = 0;
			cc->n++;
		}
		cc->ids[ci][ch] = *id;
	}
	cc->v[cc->ids[ci][ch] - cc->first].refs++;
	*ret = cc->ids[ci][ch];
	return 0;
}

/*
 * Fill an empty store with the winners: the tree is built in memory (no lookups), then every
 * row goes in through batched inserts with ids assigned here.
 */
int cold_load(struct merge *m, struct cand **win, size_t nwin, struct cat **cats, size_t ncats,
	      struct rpack_ids *ids)
{
	struct cload l = {0};
	struct cchunks cc = {0};
	struct batch bi, bd, bs, be, bc, bb;
	uint64_t next_dentry = 1, root_subdirs = 0;
	int64_t k;
	int r = 0;

	cc.ids = calloc(ncats ? ncats : 1, sizeof(*cc.ids));
	if (!cc.ids) {
		r = -ENOMEM;
		goto out;
	}
	{
		uint64_t v[3] = {0};
		sqlite3_stmt *s;

		if (sqlite3_prepare_v2(m->db,
				       "SELECT (SELECT max(ino) FROM inodes), (SELECT max(id) FROM "
				       "dentries), (SELECT max(id) FROM chunks)",
				       -1, &s, NULL) != SQLITE_OK) {
			r = -EIO;
			goto out;
		}
		if (sqlite3_step(s) == SQLITE_ROW)
			for (int i = 0; i < 3; i++)
				v[i] = (uint64_t)sqlite3_column_int64(s, i);
		sqlite3_finalize(s);
		l.first_ino = l.next_ino = MAX(v[0], (uint64_t)IDX_ROOT_INO) + 1;
		next_dentry = v[1] + 1;
		cc.first = v[2] + 1;
	}

	/* The tree, in path order: a parent before anything below it. */
	for (size_t i = 0; i < nwin && r == 0; i++) {
		const struct cat_entry *e = win[i]->e;
		const char *slash = strrchr(e->path, '/');
		uint64_t parent = IDX_ROOT_INO;
		struct cnode *nd;

		if (e->type == CAT_E_GONE)
			continue;
		if (slash) {
			char buf[PATH_MAX_LEN + 1];

			snprintf(buf, sizeof(buf), "%.*s", (int)(slash - e->path), e->path);
			k = cload_dir(&l, buf, e);
			if (k < 0) {
				r = (int)k;
				break;
			}
			parent = l.v[k].ino;
		}
		if (smap_get(&l.where, e->path))
			continue; /* made already as a parent: a directory entry can only refine it
				   */
		k = cload_add(&l, e->path, slash ? slash + 1 : e->path, parent);
		if (k < 0) {
			r = (int)k;
			break;
		}
		nd = &l.v[k];
		nd->cd = win[i];
		nd->dir = e->type == CAT_E_DIR;
		nd->mode = e->mode;
		nd->uid = e->uid;
		nd->gid = e->gid;
		nd->mtime = e->mtime;
		nd->stamp = e->stamp;
		m->rep->applied++;
	}
	if (r < 0)
		goto out;
	/* Link counts: each directory counts its subdirectories. */
	for (size_t i = 0; i < l.n; i++) {
		if (!l.v[i].dir)
			continue;
		if (l.v[i].parent == IDX_ROOT_INO)
			root_subdirs++;
		else
			l.v[l.v[i].parent - l.first_ino].subdirs++;
	}

	r = batch_init(&bi, m->db,
		       "INSERT INTO inodes (ino, parent, mode, uid, gid, nlink, size, rdev, atime, "
		       "mtime, ctime) VALUES",
		       11);
	if (r == 0)
		r = batch_init(&bd, m->db, "INSERT INTO dentries (id, parent, name, ino) VALUES",
			       4);
	if (r == 0)
		r = batch_init(&bs, m->db, "INSERT INTO symlinks (ino, target) VALUES", 2);
	if (r == 0)
		r = batch_init(&be, m->db, "INSERT INTO extents (ino, off, len, chunk) VALUES", 4);
	if (r == 0)
		r = batch_init(&bb, m->db,
			       "INSERT OR REPLACE INTO rbase (path, type, stamp, sig) VALUES", 4);
	if (r == 0)
		r = batch_init(
			&bc, m->db,
			"INSERT INTO chunks (id, key, digest, raw_len, pack, off, stored_len, "
			"flags, refs, rpack, roff, rstored_len, rflags) VALUES",
			13);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < l.n && r == 0; i++) {
		struct cnode *nd = &l.v[i];
		const struct cat_entry *e = nd->cd && !nd->dir ? nd->cd->e : NULL;
		uint64_t off = 0;

		batch_int(&bi, 0, (sqlite3_int64)nd->ino);
		batch_int(&bi, 1, (sqlite3_int64)(nd->dir ? nd->parent : 0));
		batch_int(&bi, 2, nd->dir ? (S_IFDIR | (nd->mode & 07777)) : nd->mode);
		batch_int(&bi, 3, nd->uid);
		batch_int(&bi, 4, nd->gid);
		batch_int(&bi, 5, nd->dir ? 2 + nd->subdirs : 1);
		batch_int(&bi, 6, e ? (sqlite3_int64)e->size : 0);
		batch_int(&bi, 7, 0);
		batch_int(&bi, 8, nd->mtime);
		batch_int(&bi, 9, nd->mtime);
		batch_int(&bi, 10, nd->stamp);
		batch_row_done(&bi);
		batch_int(&bd, 0, (sqlite3_int64)next_dentry++);
		batch_int(&bd, 1, (sqlite3_int64)nd->parent);
		batch_blob(&bd, 2, nd->name, (int)strlen(nd->name));
		batch_int(&bd, 3, (sqlite3_int64)nd->ino);
		batch_row_done(&bd);
		if (!e)
			continue;
		if (e->type == CAT_E_SYMLINK) {
			batch_int(&bs, 0, (sqlite3_int64)nd->ino);
			batch_blob(&bs, 1, e->target, (int)strlen(e->target));
			batch_row_done(&bs);
			continue;
		}
		for (uint32_t j = 0; j < e->n_ext && r == 0; j++) {
			const struct cat *c = nd->cd->c;
			uint32_t ch = e->ext[j].chunk;
			uint64_t id = 0;
			size_t ci = 0;

			if (ch != CAT_HOLE) {
				while (cats[ci] != c)
					ci++;
				r = cload_chunk(&cc, cats, ci, ch, &id);
			}
			batch_int(&be, 0, (sqlite3_int64)nd->ino);
			batch_int(&be, 1, (sqlite3_int64)off);
			batch_int(&be, 2, e->ext[j].len);
			batch_int(&be, 3, (sqlite3_int64)id);
			batch_row_done(&be);
			off += e->ext[j].len;
		}
	}
	/* Chunks: one row per distinct (key, digest), with its count of extents. */
	for (size_t i = 0; i < cc.n && r == 0; i++) {
		const struct cat_chunk *ch = &cats[cc.v[i].ci]->chunks[cc.v[i].ch];
		uint64_t rp;

		r = rpack_id(m->x, &ids[cc.v[i].ci], ch->pack, &rp);
		if (r < 0)
			break;
		batch_int(&bc, 0, (sqlite3_int64)(cc.first + i));
		batch_blob(&bc, 1, ch->key.b, HASH_KEY_SIZE);
		batch_blob(&bc, 2, ch->digest.b, HASH_DIGEST_SIZE);
		batch_int(&bc, 3, ch->raw_len);
		batch_int(&bc, 4, 0);
		batch_int(&bc, 5, 0);
		batch_int(&bc, 6, 0);
		batch_int(&bc, 7, 0);
		batch_int(&bc, 8, cc.v[i].refs);
		batch_int(&bc, 9, (sqlite3_int64)rp);
		batch_int(&bc, 10, (sqlite3_int64)ch->off);
		batch_int(&bc, 11, ch->stored_len);
		batch_int(&bc, 12, ch->flags);
		batch_row_done(&bc);
	}
	/* The base: what the remote says of every path, tombstones included. */
	for (size_t i = 0; i < nwin; i++) {
		batch_blob(&bb, 0, win[i]->e->path, (int)strlen(win[i]->e->path));
		batch_int(&bb, 1, win[i]->e->type);
		batch_int(&bb, 2, win[i]->e->stamp);
		batch_blob(&bb, 3, win[i]->sig, 16);
		batch_row_done(&bb);
	}
	{
		int r2[6] = {batch_flush(&bi), batch_flush(&bd), batch_flush(&bs),
			     batch_flush(&be), batch_flush(&bc), batch_flush(&bb)};

		for (int i = 0; i < 6 && r == 0; i++)
			r = r2[i];
	}
	if (r == 0 && root_subdirs)
		r = adjust_nlink(m->x, IDX_ROOT_INO, (int)root_subdirs);
out:
	for (size_t i = 0; cc.ids && i < ncats; i++)
		free(cc.ids[i]);
	free(cc.ids);
	free(cc.v);
	smap_free(&cc.map, free);
	free(l.v);
	smap_free(&l.where, NULL);
	return r;
}
