/* SPDX-License-Identifier: MIT */
/*
 * The cold load: a pull into an empty store (a new runner) builds the whole tree in memory from
 * the winners and writes it in bulk, with no lookups. Runs inside the pull's transaction on a store
 * that is not serving: no lock.
 */
#include "sync_priv.h"

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
	struct smap where;            /* path -> the node's position in v, + 1 */
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
 * a file in the way becomes a directory: directories win. Returns its position in l->v, or -errno.
 */
static int64_t cload_dir(struct cload *l, const char *path, const struct cat_entry *child)
{
	char buf[IDX_PATH_MAX + 1];
	size_t len = strlen(path), pos = len;
	uint64_t parent = IDX_ROOT_INO;
	int64_t k = -1;

	if (len > IDX_PATH_MAX)
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	/* The deepest node known already, from the end (iterative: paths may be 2,000 deep). */
	while (pos > 0) {
		size_t idx = (size_t)(uintptr_t)smap_get(&l->where, buf);
		char *slash;

		if (idx) {
			struct cnode *nd = &l->v[idx - 1];

			if (!nd->dir) {
				nd->dir = true;
				nd->cd = NULL;
				nd->mode = S_IFDIR | 0755;
			}
			k = (int64_t)idx - 1;
			break;
		}
		slash = memrchr(buf, '/', pos);
		pos = slash ? (size_t)(slash - buf) : 0;
		buf[pos] = '\0';
	}
	if (k >= 0)
		parent = l->v[k].ino;
	/* Then each missing level below it; buf holds path up to the current one. */
	while (pos < len) {
		size_t start = pos ? pos + 1 : 0, end;
		const char *slash = strchr(path + start, '/');
		const char *key, *ks;
		struct cnode *nd;

		end = slash ? (size_t)(slash - path) : len;
		if (pos)
			buf[pos] = '/';
		memcpy(buf + start, path + start, end - start);
		buf[end] = '\0';
		/* The key must outlive the load: the map copies it; the name points into that copy.
		 */
		k = cload_add(l, buf, NULL, parent);
		if (k < 0)
			return k;
		key = smap_slot(&l->where, buf)->key;
		ks = strrchr(key, '/');
		nd = &l->v[k];
		nd->name = ks ? ks + 1 : key;
		nd->dir = true;
		nd->mode = S_IFDIR | 0755;
		nd->uid = child->uid;
		nd->gid = child->gid;
		nd->mtime = child->mtime;
		nd->stamp = child->stamp;
		parent = nd->ino;
		pos = end;
	}
	return k;
}

/* Chunks a cold load uses: ids assigned by the bulk load in order of first use, across
 * catalogs; the bulk load counts their references. */
struct cchunks {
	struct idx *x;
	struct idx_bulk *bulk;
	struct smap map; /* key and digest in hex -> id */
	uint64_t **ids;  /* per catalog, per chunk of its table: the id, 0 until used */
};

/* The id of chunk ch of catalog ci, its row added to the bulk load at first use. */
static int cload_chunk(struct cchunks *cc, struct cat **cats, struct rpack_ids *ids, size_t ci,
		       uint32_t ch, uint64_t *ret)
{
	const struct cat_chunk *c = &cats[ci]->chunks[ch];
	struct pack_loc rloc = chunk_rloc(c);
	uint64_t *id, rp;
	char hex[97];
	int r;

	if (!cc->ids[ci]) {
		cc->ids[ci] = calloc(cats[ci]->n_chunks + 1, sizeof(uint64_t));
		if (!cc->ids[ci])
			return -ENOMEM;
	}
	if (!cc->ids[ci][ch]) {
		chunk_id_hex(&c->key, &c->digest, hex);
		id = smap_get(&cc->map, hex);
		if (!id) {
			id = malloc(sizeof(*id));
			if (!id || smap_put(&cc->map, hex, id) < 0) {
				free(id);
				return -ENOMEM;
			}
			r = rpack_id(cc->x, &ids[ci], c->pack, &rp);
			if (r == 0)
				r = idx_bulk_chunk(cc->bulk, &c->key, &c->digest, c->raw_len, rp,
						   &rloc, id);
			if (r < 0)
				return r;
		}
		cc->ids[ci][ch] = *id;
	}
	*ret = cc->ids[ci][ch];
	return 0;
}

/* The tree of the winners, in path order: a parent before anything below it. */
static int cload_tree(struct merge *m, struct cload *l, struct cand **win, size_t nwin)
{
	for (size_t i = 0; i < nwin; i++) {
		const struct cat_entry *e = win[i]->e;
		const char *slash = strrchr(e->path, '/');
		uint64_t parent = IDX_ROOT_INO;
		struct cnode *nd;
		int64_t k;

		if (e->type == CAT_E_GONE)
			continue;
		if (slash) {
			char buf[IDX_PATH_MAX + 1];

			snprintf(buf, sizeof(buf), "%.*s", (int)(slash - e->path), e->path);
			k = cload_dir(l, buf, e);
			if (k < 0)
				return (int)k;
			parent = l->v[k].ino;
		}
		if (smap_get(&l->where, e->path))
			continue; /* made already as a parent: a directory entry can only refine it
				   */
		k = cload_add(l, e->path, slash ? slash + 1 : e->path, parent);
		if (k < 0)
			return (int)k;
		nd = &l->v[k];
		nd->cd = win[i];
		nd->dir = e->type == CAT_E_DIR;
		nd->mode = e->mode;
		nd->uid = e->uid;
		nd->gid = e->gid;
		nd->mtime = e->mtime;
		nd->stamp = e->stamp;
		m->rep->applied++;
	}
	return 0;
}

/* Link counts: each directory counts its subdirectories. Returns the root's. */
static uint64_t cload_count_subdirs(struct cload *l)
{
	uint64_t root_subdirs = 0;

	for (size_t i = 0; i < l->n; i++) {
		if (!l->v[i].dir)
			continue;
		if (l->v[i].parent == IDX_ROOT_INO)
			root_subdirs++;
		else
			l->v[l->v[i].parent - l->first_ino].subdirs++;
	}
	return root_subdirs;
}

/* The extents of file e (node nd), their chunks added at first use. */
static int cload_extents(struct cchunks *cc, const struct cnode *nd, const struct cat_entry *e,
			 struct cat **cats, struct rpack_ids *ids)
{
	const struct cat *c = nd->cd->c;
	uint64_t off = 0;
	size_t ci = 0;
	int r = 0;

	while (cats[ci] != c)
		ci++;
	for (uint32_t j = 0; j < e->n_ext && r == 0; j++) {
		uint32_t ch = e->ext[j].chunk;
		uint64_t id = 0;

		if (ch != CAT_HOLE)
			r = cload_chunk(cc, cats, ids, ci, ch, &id);
		if (r == 0)
			r = idx_bulk_extent(cc->bulk, nd->ino, off, e->ext[j].len, id);
		off += e->ext[j].len;
	}
	return r;
}

/* The rows of node nd: its inode, its name, and a symlink's target or a file's extents. */
static int cload_node(struct cchunks *cc, const struct cnode *nd, struct cat **cats,
		      struct rpack_ids *ids)
{
	const struct cat_entry *e = nd->cd && !nd->dir ? nd->cd->e : NULL;
	struct idx_inode in = {
		.ino = nd->ino,
		.parent = nd->dir ? nd->parent : 0,
		.mode = nd->dir ? (S_IFDIR | (nd->mode & 07777)) : nd->mode,
		.uid = nd->uid,
		.gid = nd->gid,
		.nlink = nd->dir ? 2 + nd->subdirs : 1,
		.size = e ? e->size : 0,
		.atime = nd->mtime,
		.mtime = nd->mtime,
		.ctime = nd->stamp,
	};
	int r;

	r = idx_bulk_inode(cc->bulk, &in);
	if (r == 0)
		r = idx_bulk_dentry(cc->bulk, nd->parent, nd->name, nd->ino);
	if (r < 0 || !e)
		return r;
	if (e->type == CAT_E_SYMLINK)
		return idx_bulk_symlink(cc->bulk, nd->ino, e->target);
	return cload_extents(cc, nd, e, cats, ids);
}

/* The base: what the remote says of every path, tombstones included. */
static int cload_base(struct idx_bulk *bulk, struct cand **win, size_t nwin)
{
	int r = 0;

	for (size_t i = 0; i < nwin && r == 0; i++)
		r = idx_bulk_rbase(bulk, win[i]->e->path, win[i]->e->type, win[i]->e->stamp,
				   win[i]->lww.sig);
	return r;
}

int cold_load(struct merge *m, struct cand **win, size_t nwin, struct cat **cats, size_t ncats,
	      struct rpack_ids *ids)
{
	struct cload l = {0};
	struct cchunks cc = {.x = m->x};
	uint64_t root_subdirs;
	int r, r2;

	cc.ids = calloc(ncats ? ncats : 1, sizeof(*cc.ids));
	if (!cc.ids)
		return -ENOMEM;
	r = idx_bulk_begin(m->x, &cc.bulk, &l.first_ino);
	if (r < 0)
		goto out;
	l.next_ino = l.first_ino;
	r = cload_tree(m, &l, win, nwin);
	root_subdirs = cload_count_subdirs(&l);
	for (size_t i = 0; i < l.n && r == 0; i++)
		r = cload_node(&cc, &l.v[i], cats, ids);
	if (r == 0)
		r = cload_base(cc.bulk, win, nwin);
	r2 = idx_bulk_end(cc.bulk);
	if (r == 0)
		r = r2;
	if (r == 0 && root_subdirs)
		r = adjust_nlink(m->x, IDX_ROOT_INO, (int)root_subdirs);
out:
	for (size_t i = 0; i < ncats; i++)
		free(cc.ids[i]);
	free(cc.ids);
	smap_free(&cc.map, free);
	free(l.v);
	smap_free(&l.where, NULL);
	return r;
}
