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

/* Extents of ino from the snapshot; a chunk in a condemned remote pack counts as not there. */
static int snap_extents(struct push *p, uint64_t ino, struct idx_extent **ret, size_t *ret_n)
{
	sqlite3_reset(p->ext);
	sqlite3_bind_int64(p->ext, 1, (sqlite3_int64)ino);
	return idx_read_extents(p->ext, ret, ret_n);
}

struct snap_child {
	char *name;
	struct idx_inode in;
};

/* Walk directory dir (path prefix, "" for the root), collecting what changed since the base. */
int snap_walk(struct push *p, uint64_t dir, const char *prefix)
{
	struct snap_child *kids = NULL;
	size_t n = 0, cap = 0;
	int rc, r = 0;

	sqlite3_reset(p->list);
	sqlite3_bind_int64(p->list, 1, (sqlite3_int64)dir);
	while ((rc = sqlite3_step(p->list)) == SQLITE_ROW) {
		int len = sqlite3_column_bytes(p->list, 0);
		struct snap_child *k;

		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 32;
			struct snap_child *nv = realloc(kids, ncap * sizeof(*nv));

			if (!nv) {
				r = -ENOMEM;
				break;
			}
			kids = nv;
			cap = ncap;
		}
		k = &kids[n];
		k->name = strndup(len > 0 ? sqlite3_column_blob(p->list, 0) : "",
				  (size_t)MAX(len, 0));
		if (!k->name) {
			r = -ENOMEM;
			break;
		}
		memset(&k->in, 0, sizeof(k->in));
		k->in.ino = (uint64_t)sqlite3_column_int64(p->list, 1);
		k->in.mode = (uint32_t)sqlite3_column_int64(p->list, 2);
		k->in.uid = (uint32_t)sqlite3_column_int64(p->list, 3);
		k->in.gid = (uint32_t)sqlite3_column_int64(p->list, 4);
		k->in.size = (uint64_t)sqlite3_column_int64(p->list, 5);
		k->in.mtime = sqlite3_column_int64(p->list, 6);
		k->in.ctime = sqlite3_column_int64(p->list, 7);
		n++;
	}
	sqlite3_reset(p->list);
	if (r == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = idx_errno(rc);

	for (size_t i = 0; i < n && r == 0; i++) {
		struct snap_child *k = &kids[i];
		uint8_t type = type_of_mode(k->in.mode);
		char path[PATH_MAX_LEN + 2], target[PATH_MAX_LEN + 1] = "";
		struct idx_extent *ext = NULL;
		struct nx *nx = NULL;
		size_t next = 0, nnx = 0;
		struct bentry *b;
		uint8_t sig[16];
		struct pentry *pe;

		if (!type)
			continue; /* fifos, sockets and devices stay local */
		if (snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "/" : "", k->name) >
			    PATH_MAX_LEN ||
		    !cat_path_valid(path))
			continue;
		if (type == CAT_E_SYMLINK) {
			sqlite3_reset(p->target);
			sqlite3_bind_int64(p->target, 1, (sqlite3_int64)k->in.ino);
			if (sqlite3_step(p->target) == SQLITE_ROW) {
				int len = sqlite3_column_bytes(p->target, 0);

				if (len > 0 && len <= PATH_MAX_LEN)
					memcpy(target, sqlite3_column_blob(p->target, 0),
					       (size_t)len);
			}
			sqlite3_reset(p->target);
			if (!*target)
				continue;
		}
		if (type == CAT_E_FILE) {
			r = snap_extents(p, k->in.ino, &ext, &next);
			if (r == 0)
				r = nx_normalize(ext, next, k->in.size, &nx, &nnx);
			if (r == -EUCLEAN) {
				/* fsck's business; this file stays local. */
				free(ext);
				r = 0;
				continue;
			}
			if (r < 0) {
				free(ext);
				break;
			}
		}
		local_sig(type, &k->in, target, nx, nnx, sig);
		b = smap_get(&p->base, path);
		if (b)
			b->seen = true;
		if (b && b->type == type && memcmp(b->sig, sig, 16) == 0) {
			free(ext);
			free(nx);
		} else {
			pe = pentry_add(p);
			if (!pe) {
				free(ext);
				free(nx);
				r = -ENOMEM;
				break;
			}
			pe->path = strdup(path);
			pe->target = type == CAT_E_SYMLINK ? strdup(target) : NULL;
			pe->type = type;
			pe->mode = k->in.mode;
			pe->uid = k->in.uid;
			pe->gid = k->in.gid;
			pe->mtime = k->in.mtime;
			pe->size = type == CAT_E_SYMLINK ? strlen(target) : k->in.size;
			/* A change must beat the version it replaces everywhere. */
			pe->stamp = b ? MAX(k->in.ctime, b->stamp + 1) : k->in.ctime;
			pe->ext = ext;
			pe->next = next;
			pe->nx = nx;
			pe->nnx = nnx;
			memcpy(pe->sig, sig, 16);
			if (!pe->path || (type == CAT_E_SYMLINK && !pe->target))
				r = -ENOMEM;
		}
		if (r == 0 && type == CAT_E_DIR)
			r = snap_walk(p, k->in.ino, path);
	}
	for (size_t i = 0; i < n; i++)
		free(kids[i].name);
	free(kids);
	return r;
}

int snap_load_base(struct push *p)
{
	sqlite3_stmt *s;
	int rc, r = 0;

	if (sqlite3_prepare_v2(p->rdb, "SELECT path, type, stamp, sig FROM rbase", -1, &s, NULL) !=
	    SQLITE_OK)
		return -EIO;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		int len = sqlite3_column_bytes(s, 0);
		struct bentry *b;
		char *path;

		if (len <= 0 || len > PATH_MAX_LEN || sqlite3_column_bytes(s, 3) != 16)
			continue;
		path = strndup(sqlite3_column_blob(s, 0), (size_t)len);
		b = calloc(1, sizeof(*b));
		if (!path || !b) {
			free(path);
			free(b);
			r = -ENOMEM;
			break;
		}
		b->type = (uint8_t)sqlite3_column_int(s, 1);
		b->stamp = sqlite3_column_int64(s, 2);
		memcpy(b->sig, sqlite3_column_blob(s, 3), 16);
		r = smap_put(&p->base, path, b);
		free(path);
		if (r < 0) {
			free(b);
			break;
		}
	}
	sqlite3_finalize(s);
	if (r == 0 && rc != SQLITE_DONE)
		r = idx_errno(rc);
	return r;
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
		pe->stamp = MAX(p->last_sync, b->stamp + 1);
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
	sqlite3_finalize(p->list);
	sqlite3_finalize(p->ext);
	sqlite3_finalize(p->target);
	sqlite3_finalize(p->rpname);
	sqlite3_finalize(p->up);
	if (p->rdb) {
		sqlite3_exec(p->rdb, "ROLLBACK", NULL, NULL, NULL);
		sqlite3_close(p->rdb);
	}
}

int snap_open(struct push *p)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/index.db", store_dir(p->st));
	if (sqlite3_open_v2(path, &p->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK)
		return -EIO;
	sqlite3_busy_timeout(p->rdb, 10000);
	if (db_exec(p->rdb, "BEGIN") < 0)
		return -EIO;
	if (sqlite3_prepare_v2(p->rdb,
			       "SELECT d.name, i.ino, i.mode, i.uid, i.gid, i.size, i.mtime, "
			       "i.ctime FROM dentries d JOIN inodes i ON i.ino = d.ino WHERE "
			       "d.parent = ?1 ORDER BY d.id",
			       -1, &p->list, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(p->rdb,
			       "SELECT e.off, e.len, e.chunk, c.key, c.pack, c.off, c.stored_len, "
			       "c.flags, c.digest, c.rpack, c.roff, c.rstored_len, c.rflags, "
			       "coalesce(p.condemned, 0) FROM extents e LEFT JOIN chunks c ON "
			       "c.id = e.chunk LEFT JOIN rpacks p ON p.id = c.rpack WHERE e.ino = "
			       "?1 ORDER BY e.off",
			       -1, &p->ext, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(p->rdb, "SELECT target FROM symlinks WHERE ino = ?1", -1, &p->target,
			       NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(p->rdb, "SELECT name, size FROM rpacks WHERE id = ?1", -1,
			       &p->rpname, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(p->rdb, "SELECT parent, name FROM dentries WHERE ino = ?1 LIMIT 1",
			       -1, &p->up, NULL) != SQLITE_OK)
		return -EIO;
	return 0;
}
