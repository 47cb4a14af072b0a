/* SPDX-License-Identifier: MIT */
/*
 * Catalog fetching and merging into the index. Listing ns/, fetching and verifying catalogs,
 * picking the last-writer-wins winner per path over them, and applying one winner to the local
 * namespace against the base (rbase): a local change made since the last sync and newer than
 * the remote's entry is kept. Last writer wins, per path: every entry carries a stamp (ns since the
 * epoch): for a file, the time it was last changed on the host that pushed it; for a tombstone, a
 * time no later than its deletion (the deleting host's last sync), so that a deletion never
 * beats a write made elsewhere after the deleting host last looked. Ties are broken the same way
 * everywhere (the order of catalog.h), so every host that has read the same catalogs sees the
 * same namespace.
 *
 * Lock: the merge runs on a store that is not serving (pull, import), so it takes none; the
 * fetching helpers touch no index and are also used by push, compaction and gc.
 */
#include "sync_priv.h"

void names_free(struct names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
	memset(ns, 0, sizeof(*ns));
}

int collect_name(const char *name, uint64_t size, void *data)
{
	struct names *ns = data;
	size_t len = strlen(name);

	if (len < 5 || (strcmp(name + len - 4, ".cat") != 0 && strcmp(name + len - 4, ".trc") != 0))
		return 0;
	if (ns->n == ns->cap) {
		size_t ncap = ns->cap ? ns->cap * 2 : 64;
		char **nv = realloc(ns->v, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		ns->v = nv;
		ns->cap = ncap;
	}
	ns->v[ns->n] = strdup(name);
	if (!ns->v[ns->n])
		return -ENOMEM;
	ns->n++;
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int list_sorted(struct remote *rem, const char *dir, struct names *ret)
{
	int r = remote_list(rem, dir, collect_name, ret);

	if (r < 0)
		return r;
	if (ret->n)
		qsort(ret->v, ret->n, sizeof(*ret->v), name_cmp);
	return 0;
}

/* Fetch, verify and decode one catalog. */
int load_catalog(struct store *st, struct remote *rem, const char *name, struct cat **ret,
		 uint64_t *bytes)
{
	const struct chunker_params *cp = store_chunker_params(st);
	void *data = NULL;
	size_t len = 0;
	struct cat *c;
	int r;

	r = remote_get(rem, name, 0, 0, &data, &len);
	if (r < 0)
		return r;
	if (bytes)
		*bytes += len;
	if (!name_matches(name, data, len)) {
		log_debug("%s: content does not match its name", name);
		free(data);
		return -EBADMSG;
	}
	r = cat_decode(data, len, &c);
	free(data);
	if (r < 0)
		return r;
	if (c->chunk_min != cp->min || c->chunk_avg != cp->avg || c->chunk_max != cp->max) {
		cat_free(c);
		return -EPROTO;
	}
	*ret = c;
	return 0;
}

int rpack_id(struct idx *x, struct rpack_ids *m, uint32_t pack, uint64_t *ret)
{
	int r;

	if (!m->id) {
		m->id = calloc(m->c->n_packs ? m->c->n_packs : 1, sizeof(*m->id));
		if (!m->id)
			return -ENOMEM;
	}
	if (!m->id[pack]) {
		r = idx_rpack_ensure(x, m->c->packs[pack].name, m->c->packs[pack].size,
				     &m->id[pack]);
		if (r < 0)
			return r;
	}
	*ret = m->id[pack];
	return 0;
}

struct pack_loc chunk_rloc(const struct cat_chunk *ch)
{
	return (struct pack_loc){
		.offset = ch->off, .stored_len = ch->stored_len, .flags = ch->flags};
}

/* Note every chunk the catalog says the remote has, for dedup at push. */
int learn_chunks(struct idx *x, const struct cat *c)
{
	struct rpack_ids m = {.c = c};
	int r = 0;

	for (size_t i = 0; i < c->n_chunks && r == 0; i++) {
		const struct cat_chunk *ch = &c->chunks[i];
		struct pack_loc loc = chunk_rloc(ch);
		uint64_t rp;

		r = rpack_id(x, &m, ch->pack, &rp);
		if (r == 0)
			r = idx_set_chunk_remote(x, &ch->key, &ch->digest, rp, &loc);
	}
	free(m.id);
	return r;
}

/* ---- applying remote entries to the local namespace ---- */

/*
 * The deepest directory along path: the first *ret_len bytes of path (ending before a '/' or at
 * the end; 0: the root) name directory *ret_ino. Iterative: a path from a catalog may be 2,000
 * levels deep. Directories met are cached in m->dirs, so the usual call finds the parent at
 * once. 0 or -errno.
 */
static int deepest_dir(struct merge *m, const char *path, size_t *ret_len, uint64_t *ret_ino)
{
	char buf[IDX_PATH_MAX + 1];
	size_t len = strlen(path), pos = len;
	uint64_t ino = IDX_ROOT_INO;
	int r;

	if (len > IDX_PATH_MAX)
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	/* The longest prefix known already, from the end. */
	while (pos > 0) {
		void *hit = smap_get(&m->dirs, buf);
		char *slash;

		if (hit) {
			ino = (uint64_t)(uintptr_t)hit;
			break;
		}
		slash = memrchr(buf, '/', pos);
		pos = slash ? (size_t)(slash - buf) : 0;
		buf[pos] = '\0';
	}
	/* Down from there, one component at a time; buf holds path up to the current one. */
	while (pos < len) {
		size_t start = pos ? pos + 1 : 0, end;
		const char *slash = strchr(path + start, '/');
		struct idx_inode in;
		uint64_t child;

		end = slash ? (size_t)(slash - path) : len;
		if (pos)
			buf[pos] = '/';
		memcpy(buf + start, path + start, end - start);
		buf[end] = '\0';
		r = idx_lookup(m->x, ino, buf + start, &child);
		if (r == 1)
			r = idx_get_inode(m->x, child, &in);
		if (r < 0)
			return r;
		if (r == 0 || !S_ISDIR(in.mode))
			break;
		r = smap_put(&m->dirs, buf, (void *)(uintptr_t)child);
		if (r < 0)
			return r;
		ino = child;
		pos = end;
	}
	*ret_len = pos;
	*ret_ino = ino;
	return 0;
}

/* ino of the directory at path ("" is the root): 1, 0 when missing or not a directory. */
int resolve_dir(struct merge *m, const char *path, uint64_t *ret)
{
	size_t len;
	int r = deepest_dir(m, path, &len, ret);

	if (r < 0)
		return r;
	return len == strlen(path) ? 1 : 0;
}

int adjust_nlink(struct idx *x, uint64_t ino, int delta)
{
	struct idx_inode in;
	int r = idx_get_inode(x, ino, &in);

	if (r <= 0)
		return r < 0 ? r : -EUCLEAN;
	in.nlink = (uint32_t)((int)in.nlink + delta);
	return idx_put_inode(x, &in);
}

struct child {
	char *name;
	uint64_t ino;
};

struct children {
	struct child *v;
	size_t n, cap;
};

static int collect_child(const char *name, const struct idx_inode *in, uint64_t cookie, void *data)
{
	struct children *c = data;

	if (c->n == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 16;
		struct child *nv = realloc(c->v, ncap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		c->v = nv;
		c->cap = ncap;
	}
	c->v[c->n].name = strdup(name);
	if (!c->v[c->n].name)
		return -ENOMEM;
	c->v[c->n++].ino = in->ino;
	return 0;
}

/* Remove name (inode ino) from directory parent, a directory with all it holds. */
int remove_entry(struct merge *m, uint64_t parent, const char *name, uint64_t ino)
{
	struct idx_inode in;
	int r = idx_get_inode(m->x, ino, &in);

	if (r <= 0)
		return r < 0 ? r : -EUCLEAN;
	if (S_ISDIR(in.mode)) {
		struct children c = {0};

		r = idx_list_dir(m->x, ino, 0, collect_child, &c);
		for (size_t i = 0; i < c.n; i++) {
			if (r == 0)
				r = remove_entry(m, ino, c.v[i].name, c.v[i].ino);
			free(c.v[i].name);
		}
		free(c.v);
		if (r < 0)
			return r;
		/* Cached directory inos below here go stale. */
		smap_free(&m->dirs, NULL);
		r = idx_del_dentry(m->x, parent, name);
		if (r == 0)
			r = adjust_nlink(m->x, parent, -1);
		if (r == 0 && m->live)
			m->live->changed(m->live->data, parent, name, 0);
		return r == 0 ? idx_delete_inode(m->x, ino) : r;
	}
	r = idx_del_dentry(m->x, parent, name);
	if (r < 0)
		return r;
	if (m->live)
		m->live->changed(m->live->data, parent, name, 0);
	/* An inode open here lives on without names until its last release reaps it. */
	if (in.nlink <= 1 && !(m->live && m->live->in_use(m->live->data, ino)))
		return idx_delete_inode(m->x, ino);
	in.nlink--;
	return idx_put_inode(m->x, &in);
}

/* Make directory path and its parents (parents take the entry's owner and 0755): 1 when made,
 * 0 when it was there. Iterative, as deepest_dir. */
static int make_dirs(struct merge *m, const char *path, uint32_t mode, uint32_t uid, uint32_t gid,
		     int64_t mtime, int64_t stamp, uint64_t *ret)
{
	char buf[IDX_PATH_MAX + 1];
	size_t len = strlen(path), pos;
	uint64_t parent;
	int r;

	r = deepest_dir(m, path, &pos, &parent);
	if (r < 0)
		return r;
	if (pos == len) {
		*ret = parent;
		return 0;
	}
	memcpy(buf, path, len + 1);
	while (pos < len) {
		size_t start = pos ? pos + 1 : 0, end;
		const char *slash = strchr(path + start, '/');
		struct idx_inode in = {0};
		const char *name = buf + start;
		uint64_t ino;

		end = slash ? (size_t)(slash - path) : len;
		buf[end] = '\0';
		/* Something that is not a directory is in the way: the directory wins. */
		r = idx_lookup(m->x, parent, name, &ino);
		if (r == 1)
			r = remove_entry(m, parent, name, ino);
		if (r < 0)
			return r;
		in.parent = parent;
		in.mode = S_IFDIR | (end == len ? mode & 07777 : 0755);
		in.uid = uid;
		in.gid = gid;
		in.nlink = 2;
		in.atime = in.mtime = mtime;
		in.ctime = stamp;
		r = idx_new_inode(m->x, &in, &ino);
		if (r == 0)
			r = idx_add_dentry(m->x, parent, name, ino);
		if (r == 0)
			r = adjust_nlink(m->x, parent, 1);
		if (r == 0 && m->live)
			m->live->changed(m->live->data, parent, name, 0);
		if (r == 0)
			r = smap_put(&m->dirs, buf, (void *)(uintptr_t)ino);
		if (r < 0)
			return r;
		if (end < len)
			buf[end] = '/';
		parent = ino;
		pos = end;
	}
	*ret = parent;
	return 1;
}

/* The local chunk for a catalog chunk: found by key and digest, or recorded as remote-only. */
static int local_chunk(struct merge *m, struct rpack_ids *ids, const struct cat_chunk *ch,
		       uint64_t *ret)
{
	struct pack_loc rloc = chunk_rloc(ch);
	uint64_t rp;
	int r;

	if (m->local_only) {
		r = idx_find_chunk(m->x, &ch->key, &ch->digest, ret, NULL, NULL);
		return r == 1 ? 0 : r < 0 ? r : -EUCLEAN;
	}
	r = rpack_id(m->x, ids, ch->pack, &rp);
	if (r < 0)
		return r;
	r = idx_find_chunk(m->x, &ch->key, &ch->digest, ret, NULL, NULL);
	if (r < 0)
		return r;
	if (r == 1)
		return idx_set_chunk_remote(m->x, &ch->key, &ch->digest, rp, &rloc);
	return idx_add_remote_chunk(m->x, &ch->key, &ch->digest, ch->raw_len, rp, &rloc, ret);
}

/* Directory entry e: made as it says, or an existing one takes its mode and owner. */
static int apply_dir(struct merge *m, const struct cat_entry *e)
{
	struct idx_inode in;
	uint64_t ino = 0;
	int r;

	r = make_dirs(m, e->path, e->mode, e->uid, e->gid, e->mtime, e->stamp, &ino);
	if (r != 0)
		return r < 0 ? r : 0; /* made as the entry says */
	r = idx_get_inode(m->x, ino, &in);
	if (r <= 0)
		return r < 0 ? r : -EUCLEAN;
	in.mode = S_IFDIR | (e->mode & 07777);
	in.uid = e->uid;
	in.gid = e->gid;
	return idx_put_inode(m->x, &in);
}

/* Tombstone for name in directory dir. */
static int apply_gone(struct merge *m, const char *dir, const char *name)
{
	struct idx_inode in;
	uint64_t parent, ino = 0;
	int r;

	r = resolve_dir(m, dir, &parent);
	if (r <= 0)
		return r;
	r = idx_lookup(m->x, parent, name, &ino);
	if (r <= 0)
		return r;
	r = idx_get_inode(m->x, ino, &in);
	if (r <= 0)
		return r;
	/* A directory goes only once empty: whatever survives in it keeps it. */
	if (S_ISDIR(in.mode) && idx_dir_is_empty(m->x, ino) != 1)
		return 0;
	/* A file being written here is newer than the deletion: it stays (its flush pushes it). */
	if (m->live && m->live->in_use(m->live->data, ino) == 2)
		return 0;
	return remove_entry(m, parent, name, ino);
}

/* The extents of file e (inode ino, which had extents when found). */
static int apply_extents(struct merge *m, const struct cat *c, struct rpack_ids *ids,
			 const struct cat_entry *e, uint64_t ino, bool found)
{
	struct idx_extent *ext = calloc(e->n_ext ? e->n_ext : 1, sizeof(*ext));
	uint64_t off = 0;
	int r = 0;

	if (!ext)
		return -ENOMEM;
	for (uint32_t i = 0; i < e->n_ext && r == 0; i++) {
		ext[i].off = off;
		ext[i].len = e->ext[i].len;
		if (e->ext[i].chunk != CAT_HOLE)
			r = local_chunk(m, ids, &c->chunks[e->ext[i].chunk], &ext[i].chunk);
		off += e->ext[i].len;
	}
	if (r == 0)
		r = found ? idx_set_extents(m->x, ino, ext, e->n_ext)
			  : idx_add_extents(m->x, ino, ext, e->n_ext);
	free(ext);
	return r;
}

/*
 * What is at name in parent before file or symlink e goes there: 1 with its inode in *in when e
 * can take that inode over (a regular file only it names, and e a file), 0 when the name is free
 * now, 2 when a directory with entries is there (it wins over e), -errno.
 */
static int apply_make_room(struct merge *m, uint64_t parent, const char *name,
			   const struct cat_entry *e, struct idx_inode *in)
{
	uint64_t ino;
	int r;

	r = idx_lookup(m->x, parent, name, &ino);
	if (r <= 0)
		return r;
	r = idx_get_inode(m->x, ino, in);
	if (r <= 0)
		return r < 0 ? r : -EUCLEAN;
	if (S_ISDIR(in->mode)) {
		if (idx_dir_is_empty(m->x, ino) != 1)
			return 2; /* a directory with entries wins over a file */
		r = remove_entry(m, parent, name, ino);
		return r < 0 ? r : 0;
	}
	/* A file being written here is newer than any remote version: it wins (its flush pushes
	 * it). One open here keeps reading what it opened: the name gets a new inode. */
	if (m->live && m->live->in_use(m->live->data, ino) == 2)
		return 2;
	if (in->nlink > 1 || !S_ISREG(in->mode) || e->type != CAT_E_FILE ||
	    (m->live && m->live->in_use(m->live->data, ino))) {
		/* Replace the name, not an inode other names share. */
		r = remove_entry(m, parent, name, ino);
		return r < 0 ? r : 0;
	}
	return 1;
}

/* File or symlink entry e at name in directory dir. */
static int apply_file(struct merge *m, const struct cat *c, struct rpack_ids *ids,
		      const struct cat_entry *e, const char *dir, const char *name)
{
	struct idx_inode in = {0};
	uint64_t parent, ino;
	int r, found;

	r = make_dirs(m, dir, S_IFDIR | 0755, e->uid, e->gid, e->mtime, e->stamp, &parent);
	if (r < 0)
		return r;
	found = apply_make_room(m, parent, name, e, &in);
	if (found < 0 || found == 2)
		return found < 0 ? found : 0;
	if (!found) {
		memset(&in, 0, sizeof(in));
		in.nlink = 1;
	}
	in.mode = e->mode;
	in.uid = e->uid;
	in.gid = e->gid;
	in.size = e->size;
	in.atime = in.mtime = e->mtime;
	in.ctime = e->stamp;
	if (found) {
		ino = in.ino;
		r = idx_put_inode(m->x, &in);
	} else {
		r = idx_new_inode(m->x, &in, &ino);
		if (r == 0)
			r = idx_add_dentry(m->x, parent, name, ino);
	}
	if (r < 0)
		return r;
	if (m->live)
		m->live->changed(m->live->data, parent, name, found ? ino : 0);
	if (e->type == CAT_E_SYMLINK)
		return idx_set_target(m->x, ino, e->target);
	return apply_extents(m, c, ids, e, ino, found);
}

/* Make the local namespace hold entry e at its path. */
int merge_apply(struct merge *m, const struct cat *c, struct rpack_ids *ids,
		const struct cat_entry *e)
{
	char dir[IDX_PATH_MAX + 1];
	const char *name = strrchr(e->path, '/');

	snprintf(dir, sizeof(dir), "%.*s", name ? (int)(name - e->path) : 0, e->path);
	name = name ? name + 1 : e->path;
	if (e->type == CAT_E_DIR)
		return apply_dir(m, e);
	if (e->type == CAT_E_GONE)
		return apply_gone(m, dir, name);
	return apply_file(m, c, ids, e, dir, name);
}

/* The local entry at path: 1 with its type, stamp (ctime) and signature; 0 when absent. */
int local_entry(struct merge *m, const char *path, uint8_t *ret_type, int64_t *ret_stamp,
		uint8_t ret_sig[16])
{
	char dir[IDX_PATH_MAX + 1], target[IDX_PATH_MAX + 1] = "";
	const char *name = strrchr(path, '/');
	struct idx_extent *ext = NULL;
	struct idx_inode in;
	struct nx *nx = NULL;
	size_t n = 0, nn = 0;
	uint64_t parent, ino;
	uint8_t type;
	int r;

	snprintf(dir, sizeof(dir), "%.*s", name ? (int)(name - path) : 0, path);
	r = resolve_dir(m, dir, &parent);
	if (r <= 0)
		return r;
	r = idx_lookup(m->x, parent, name ? name + 1 : path, &ino);
	if (r <= 0)
		return r;
	r = idx_get_inode(m->x, ino, &in);
	if (r <= 0)
		return r;
	type = cat_type_of_mode(in.mode);
	if (!type)
		return 0;
	if (type == CAT_E_SYMLINK && idx_get_target(m->x, ino, target, sizeof(target)) < 0)
		return -EIO;
	if (type == CAT_E_FILE) {
		r = idx_get_extents(m->x, ino, &ext, &n);
		if (r == 0)
			r = nx_normalize(ext, n, in.size, &nx, &nn);
		if (r < 0) {
			free(ext);
			return r;
		}
	}
	local_sig(type, &in, target, nx, nn, ret_sig);
	free(nx);
	free(ext);
	*ret_type = type;
	*ret_stamp = in.ctime;
	return 1;
}

/* Merge one remote entry (the winner among the new catalogs for its path). */
int merge_entry(struct merge *m, struct cand *cd, struct rpack_ids *ids)
{
	const struct cat_entry *e = cd->e;
	struct cat_lww base = {0};
	uint8_t ltype = 0, lsig[16];
	int64_t lstamp = 0;
	int hb, hl, r;
	bool unchanged;

	hb = idx_rbase_get(m->x, e->path, &base.type, &base.stamp, base.sig);
	if (hb < 0)
		return hb;
	if (hb && cat_lww_cmp(&base, &cd->lww) >= 0)
		return 0; /* known already */
	hl = local_entry(m, e->path, &ltype, &lstamp, lsig);
	if (hl < 0)
		return hl;
	if (hl)
		unchanged = hb && base.type != CAT_E_GONE && memcmp(lsig, base.sig, 16) == 0;
	else
		unchanged = !hb || base.type == CAT_E_GONE;
	if (!unchanged) {
		/* Changed here since the last sync and not pushed yet: the later write wins. */
		if (!hl)
			lstamp = m->last_sync;
		if (e->stamp <= lstamp) {
			m->rep->kept_local++;
			return idx_rbase_put(m->x, e->path, e->type, e->stamp, cd->lww.sig);
		}
	}
	if (!(e->type == CAT_E_GONE && !hl)) {
		r = merge_apply(m, cd->c, ids, e);
		if (r < 0)
			return r;
		m->rep->applied++;
	}
	return idx_rbase_put(m->x, e->path, e->type, e->stamp, cd->lww.sig);
}

static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = *(struct cand *const *)a, *y = *(struct cand *const *)b;

	return strcmp(x->e->path, y->e->path);
}

/* Entries of one merge refused for one reason: how many, and the first one's path. */
struct refused {
	uint64_t n;
	char first[256];
};

static void refuse(struct refused *rf, const char *path)
{
	if (rf->n++ == 0)
		snprintf(rf->first, sizeof(rf->first), "%s", path);
}

static void refused_log(const struct refused *rf, const char *why)
{
	if (rf->n)
		log_warn("refused %" PRIu64 " remote entr%s %s, the first: %s", rf->n,
			 rf->n == 1 ? "y" : "ies", why, rf->first);
}

bool symlink_target_contained(const char *path, const char *target)
{
	size_t depth = 0, up = 0;
	bool named = false;

	if (target[0] == '/')
		return false;
	for (const char *p = path; *p; p++)
		depth += *p == '/';
	for (const char *p = target; *p;) {
		size_t len = strcspn(p, "/");

		if (len == 2 && p[0] == '.' && p[1] == '.') {
			if (named || ++up > depth)
				return false;
		} else if (len && !(len == 1 && p[0] == '.')) {
			named = true;
		}
		p += len;
		if (*p)
			p++;
	}
	return true;
}

unsigned pull_pick_flags(struct idx *x)
{
	char keep[8] = "";

	if (idx_meta_get(x, "keep_suid", keep, sizeof(keep)) == 1 && !strcmp(keep, "1"))
		return PICK_PULL | PICK_KEEP_SUID;
	return PICK_PULL;
}

/*
 * What a pull does to remote entry e before it competes (docs/security.md): false when it is
 * refused. Entries stamped later than this host's clock plus the skew allowed are refused: such
 * a stamp would win every conflict for its path until the clocks caught up (for good with
 * INT64_MAX). *mode is the mode this host applies.
 */
static bool entry_admitted(const struct cat_entry *e, int64_t limit, unsigned flags, uint32_t *mode,
			   struct refused rf[3])
{
	*mode = e->mode;
	if (e->stamp > limit) {
		refuse(&rf[0], e->path);
		return false;
	}
	if (!(flags & PICK_PULL))
		return true;
	if (e->type == CAT_E_SYMLINK && !symlink_target_contained(e->path, e->target)) {
		refuse(&rf[1], e->path);
		return false;
	}
	if (!(flags & PICK_KEEP_SUID) && (e->mode & (S_ISUID | S_ISGID))) {
		*mode = e->mode & ~(uint32_t)(S_ISUID | S_ISGID);
		refuse(&rf[2], e->path);
	}
	return true;
}

/* Collect the winner per path over catalogs cats[0..n) into map (values: struct cand *). */
int pick_winners(struct cat **cats, size_t n, unsigned flags, struct smap *map)
{
	int64_t limit = now_ns() + CAT_STAMP_SKEW_NS;
	struct refused rf[3] = {0};
	char why[128];
	int r = 0;

	for (size_t i = 0; i < n && r == 0; i++) {
		const struct cat *c = cats[i];

		if (c->kind != CAT_DELTA && c->kind != CAT_SNAPSHOT)
			continue;
		for (size_t j = 0; j < c->n_entries; j++) {
			const struct cat_entry *e = &c->entries[j];
			struct cat_lww lww = {.stamp = e->stamp, .type = e->type};
			struct cat_entry own = *e;
			struct cand *old, *cd;

			if (e->type != CAT_E_FILE && e->type != CAT_E_DIR &&
			    e->type != CAT_E_SYMLINK && e->type != CAT_E_GONE)
				continue;
			if (!entry_admitted(e, limit, flags, &own.mode, rf))
				continue;
			cat_entry_sig(&own, c->chunks, lww.sig);
			old = smap_get(map, e->path);
			if (old && cat_lww_cmp(&old->lww, &lww) >= 0)
				continue;
			cd = old ? old : malloc(sizeof(*cd));
			if (!cd) {
				r = -ENOMEM;
				break;
			}
			cd->c = c;
			cd->own = own;
			cd->e = own.mode == e->mode ? e : &cd->own;
			cd->lww = lww;
			if (!old && smap_put(map, e->path, cd) < 0) {
				free(cd);
				r = -ENOMEM;
				break;
			}
		}
	}
	snprintf(why, sizeof(why),
		 "stamped more than %lld h ahead of this host's clock (a writer's clock is wrong, "
		 "or the catalog is forged)",
		 CAT_STAMP_SKEW_NS / 3600000000000ll);
	refused_log(&rf[0], why);
	refused_log(&rf[1], "for symbolic links whose target is absolute, climbs above the "
			    "mount's root or has \"..\" after a name");
	if (rf[2].n)
		log_info("cleared the setuid and setgid bits of %" PRIu64 " remote entr%s (mount "
			 "with -o keep_suid to keep them), the first: %s",
			 rf[2].n, rf[2].n == 1 ? "y" : "ies", rf[2].first);
	return r;
}

/* Winners sorted by path, as an array of pointers into map. */
int sorted_winners(struct smap *map, struct cand ***ret, size_t *ret_n)
{
	struct cand **v = malloc((map->n ? map->n : 1) * sizeof(*v));
	size_t n = 0;

	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < map->cap; i++)
		if (map->slots[i].key)
			v[n++] = map->slots[i].val;
	qsort(v, n, sizeof(*v), cand_cmp);
	*ret = v;
	*ret_n = n;
	return 0;
}

void cats_free(struct cat **cats, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cat_free(cats[i]);
	free(cats);
}

bool want_unmerged(void *data, const char *name)
{
	const struct want_merge *w = data;
	bool merged = false;

	if (idx_rseen_get(w->x, name, &merged) == 1 && merged)
		return false;
	if (idx_rbad_since(w->x, name, w->since) == 1) {
		log_debug("catalog %s: left out, it failed to decode less than %d s ago", name,
			  SYNC_BAD_CATALOG_RETRY_S);
		return false;
	}
	return true;
}

int remember_bad_catalogs(struct idx *x, const struct names *bad)
{
	int64_t now = (int64_t)time(NULL);
	int r = 0;

	for (size_t i = 0; i < bad->n && r == 0; i++)
		r = idx_rbad_mark(x, bad->v[i], now);
	if (bad->n)
		log_warn("%zu remote catalog%s left out (named above) will not be downloaded again "
			 "for %d h",
			 bad->n, bad->n == 1 ? "" : "s", SYNC_BAD_CATALOG_RETRY_S / 3600);
	return r;
}

/* Fetch every catalog of ns/ for which want(name) says yes. */
int fetch_catalogs(struct store *st, struct remote *rem, const struct names *ns,
		   bool (*want)(void *data, const char *name), void *data,
		   const struct sync_options *o, size_t max_entries, struct cat ***ret,
		   char ***ret_names, size_t *ret_n, uint64_t *bytes, struct names *ret_bad)
{
	struct cat **cats = calloc(ns->n ? ns->n : 1, sizeof(*cats));
	char **names = calloc(ns->n ? ns->n : 1, sizeof(*names));
	size_t n = 0, entries = 0;
	bool more = false;
	int r = 0;

	if (!cats || !names) {
		free(cats);
		free(names);
		return -ENOMEM;
	}
	for (size_t i = 0; i < ns->n; i++) {
		if (want && !want(data, ns->v[i]))
			continue;
		if (max_entries && entries >= max_entries) {
			more = true;
			break;
		}
		r = load_catalog(st, rem, ns->v[i], &cats[n], bytes);
		if (r == -ENOENT) {
			/* Compacted away since the listing: its content is in a newer snapshot. */
			r = 0;
			continue;
		}
		if (r == -EBADMSG || r == -EPROTO || r == -EPROTONOSUPPORT) {
			/*
			 * Damaged, forged, or written by another version: left out, so that one
			 * bad object cannot stop every runner. What it held is missing until it
			 * is fixed or compacted over; the caller says which it was.
			 */
			if (o && o->bad_catalog)
				o->bad_catalog(o->progress_data, ns->v[i], r);
			r = ret_bad ? collect_name(ns->v[i], 0, ret_bad) : 0;
			if (r < 0)
				break;
			continue;
		}
		if (r < 0) {
			log_debug("catalog %s: %s", ns->v[i], strerror(-r));
			break;
		}
		entries += cats[n]->n_entries;
		names[n++] = ns->v[i];
		if (o && o->progress)
			o->progress(o->progress_data, "catalogs", i + 1, ns->n);
	}
	if (r < 0) {
		cats_free(cats, n);
		free(names);
		return r;
	}
	*ret = cats;
	*ret_names = names;
	*ret_n = n;
	return more ? 1 : 0;
}
