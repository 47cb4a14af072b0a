/* SPDX-License-Identifier: MIT */
/*
 * The push snapshot: a read-only connection to the index holding one consistent snapshot, the
 * base (rbase) as of the last sync, and the walk of the namespace that collects every entry that
 * differs from its base (upserts) and every base path no longer here (tombstones). Push and
 * bundle export read through it. It needs no lock: the connection is the caller's own and the
 * daemon goes on writing through its own.
 */
#include "sync_priv.h"

void pentry_free(struct pentry *p)
{
	free(p->path);
	free(p->target);
	free(p->ext);
	free(p->nx);
}

/* The catalog entry of pe, its extents cx (n_ext pe->nnx for a file). */
struct cat_entry cat_entry_of(const struct pentry *pe, const struct cat_extent *cx)
{
	return (struct cat_entry){
		.path = pe->path,
		.type = pe->type,
		.mode = pe->mode,
		.uid = pe->uid,
		.gid = pe->gid,
		.mtime = pe->mtime,
		.stamp = pe->stamp,
		.size = pe->type == CAT_E_FILE || pe->type == CAT_E_SYMLINK ? pe->size : 0,
		.target = pe->target,
		.n_ext = pe->type == CAT_E_FILE ? (uint32_t)pe->nnx : 0,
		.ext = cx,
	};
}

struct pentry *pentry_add(struct push *p)
{
	if (p->npe == p->cappe) {
		size_t ncap = p->cappe ? p->cappe * 2 : 64;
		struct pentry *nv = realloc(p->pe, ncap * sizeof(*nv));

		if (!nv)
			return NULL;
		p->pe = nv;
		p->cappe = ncap;
	}
	memset(&p->pe[p->npe], 0, sizeof(p->pe[0]));
	return &p->pe[p->npe++];
}

struct snap_child {
	char *name;
	struct idx_inode in;
};

struct snap_children {
	struct snap_child *v;
	size_t n, cap;
};

static int collect_snap_child(const char *name, const struct idx_inode *in, uint64_t cookie,
			      void *data)
{
	struct snap_children *c = data;

	if (c->n == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 32;
		struct snap_child *nv = realloc(c->v, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		c->v = nv;
		c->cap = ncap;
	}
	c->v[c->n].name = strdup(name);
	if (!c->v[c->n].name)
		return -ENOMEM;
	c->v[c->n++].in = *in;
	return 0;
}

/* What the walk reads of one entry: its content in normal form, and its signature. */
struct snap_entry {
	uint8_t type;
	char path[IDX_PATH_MAX + 2];
	char target[IDX_PATH_MAX + 2];
	struct idx_extent *ext;
	size_t next;
	struct nx *nx;
	size_t nnx;
	uint8_t sig[16];
};

/*
 * Read entry k (at path) from the snapshot into se: 1 when it can travel in a catalog, 0 when
 * it stays local (no target, extents fsck must look at), -errno.
 */
static int snap_read_entry(struct push *p, const struct snap_child *k, struct snap_entry *se)
{
	int r;

	if (se->type == CAT_E_SYMLINK) {
		r = idx_get_target(p->snap, k->in.ino, se->target, sizeof(se->target));
		if (r < 0)
			return r;
		if (r == 0 || strlen(se->target) > IDX_PATH_MAX)
			se->target[0] = '\0';
		if (!se->target[0])
			return 0;
	}
	if (se->type == CAT_E_FILE) {
		r = idx_get_extents_pushable(p->snap, k->in.ino, &se->ext, &se->next);
		if (r == 0)
			r = nx_normalize(se->ext, se->next, k->in.size, &se->nx, &se->nnx);
		if (r < 0) {
			free(se->ext);
			se->ext = NULL;
			/* Extents fsck must look at: this file stays local. */
			return r == -EUCLEAN ? 0 : r;
		}
	}
	local_sig(se->type, &k->in, se->target, se->nx, se->nnx, se->sig);
	return 1;
}

/* Entry se differs from its base b (NULL: none): a pentry takes its content. */
static int snap_add_change(struct push *p, const struct snap_child *k, struct snap_entry *se,
			   const struct bentry *b)
{
	struct pentry *pe = pentry_add(p);

	if (!pe)
		return -ENOMEM;
	pe->path = strdup(se->path);
	pe->target = se->type == CAT_E_SYMLINK ? strdup(se->target) : NULL;
	pe->type = se->type;
	pe->mode = k->in.mode;
	pe->uid = k->in.uid;
	pe->gid = k->in.gid;
	pe->mtime = k->in.mtime;
	pe->size = se->type == CAT_E_SYMLINK ? strlen(se->target) : k->in.size;
	/* A change must beat the version it replaces everywhere. */
	pe->stamp = b ? MAX(k->in.ctime, cat_stamp_after(b->stamp)) : k->in.ctime;
	pe->ext = se->ext;
	pe->next = se->next;
	pe->nx = se->nx;
	pe->nnx = se->nnx;
	se->ext = NULL;
	se->nx = NULL;
	memcpy(pe->sig, se->sig, 16);
	if (!pe->path || (se->type == CAT_E_SYMLINK && !pe->target))
		return -ENOMEM;
	return 0;
}

/* One child k of a directory at prefix: compared with its base, and walked when a directory. */
static int snap_visit(struct push *p, const struct snap_child *k, const char *prefix,
		      struct snap_entry *se)
{
	struct bentry *b;
	int r;

	se->type = cat_type_of_mode(k->in.mode);
	se->ext = NULL;
	se->nx = NULL;
	se->next = se->nnx = 0;
	se->target[0] = '\0';
	if (!se->type)
		return 0; /* fifos, sockets and devices stay local */
	if (snprintf(se->path, sizeof(se->path), "%s%s%s", prefix, *prefix ? "/" : "", k->name) >
	    IDX_PATH_MAX) {
		/* Deeper than the format allows: stays local, and the report names it. */
		if (p->rep && !p->rep->too_long++)
			snprintf(p->rep->too_long_path, sizeof(p->rep->too_long_path), "%.60s...%s",
				 prefix, strlen(k->name) > 90 ? "(a long name)" : k->name);
		return 0;
	}
	if (!cat_path_valid(se->path))
		return 0;
	r = snap_read_entry(p, k, se);
	if (r <= 0)
		return r;
	r = 0;
	b = smap_get(&p->base, se->path);
	if (b)
		b->seen = true;
	if (!b || b->type != se->type || memcmp(b->sig, se->sig, 16) != 0)
		r = snap_add_change(p, k, se, b);
	free(se->ext);
	free(se->nx);
	if (r == 0 && se->type == CAT_E_DIR)
		r = snap_walk(p, k->in.ino, se->path);
	return r;
}

int snap_walk(struct push *p, uint64_t dir, const char *prefix)
{
	struct snap_children kids = {0};
	struct snap_entry *se = malloc(sizeof(*se));
	int r;

	if (!se)
		return -ENOMEM;
	/* Children first, then each in turn: the walk nests, the listing must not. */
	r = idx_list_dir(p->snap, dir, 0, collect_snap_child, &kids);
	for (size_t i = 0; i < kids.n && r == 0; i++)
		r = snap_visit(p, &kids.v[i], prefix, se);
	for (size_t i = 0; i < kids.n; i++)
		free(kids.v[i].name);
	free(kids.v);
	free(se);
	return r;
}

static int base_row(const char *path, uint8_t type, int64_t stamp, const uint8_t sig[16],
		    void *data)
{
	struct push *p = data;
	struct bentry *b = calloc(1, sizeof(*b));
	int r;

	if (!b)
		return -ENOMEM;
	b->type = type;
	b->stamp = stamp;
	memcpy(b->sig, sig, 16);
	r = smap_put(&p->base, path, b);
	if (r < 0)
		free(b);
	return r;
}

int snap_load_base(struct push *p)
{
	return idx_rbase_each(p->snap, base_row, p);
}

/* Base paths the walk did not see were deleted here: tombstones. */
int add_tombstones(struct push *p)
{
	for (size_t i = 0; i < p->base.cap; i++) {
		struct bentry *b = p->base.slots[i].val;
		struct pentry *pe;

		if (!p->base.slots[i].key || b->seen || b->type == CAT_E_GONE)
			continue;
		pe = pentry_add(p);
		if (!pe)
			return -ENOMEM;
		pe->path = strdup(p->base.slots[i].key);
		if (!pe->path)
			return -ENOMEM;
		pe->type = CAT_E_GONE;
		/* No later than the deletion: a write made elsewhere since our last sync wins. */
		pe->stamp = MAX(p->last_sync, cat_stamp_after(b->stamp));
	}
	return 0;
}

void push_free(struct push *p)
{
	for (size_t i = 0; i < p->npe; i++)
		pentry_free(&p->pe[i]);
	free(p->pe);
	free(p->up_v);
	free(p->np);
	smap_free(&p->base, free);
	idx_close(p->snap);
}

int snap_open(struct push *p)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/index.db", store_dir(p->st));
	return idx_open_reader(path, &p->snap);
}
