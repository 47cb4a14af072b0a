/* SPDX-License-Identifier: MIT */
/*
 * Namespace sync. See sync.h for the model; docs/format.md for the remote layout.
 *
 * Last writer wins, per path. Every entry of a catalog carries a stamp (ns since the epoch): for
 * a file, the time it was last changed on the host that pushed it; for a tombstone, a time no
 * later than its deletion (the deleting host's last sync), so that a deletion never beats a write
 * made elsewhere after the deleting host last looked. Ties are broken the same way everywhere
 * (lww_cmp), so every host that has read the same catalogs sees the same namespace.
 *
 * Extents travel in a normal form, so that two hosts holding the same content compute the same
 * signature: holes and gaps are merged and cut into pieces of at most PACK_MAX_CHUNK bytes, and
 * data extents keep their chunk boundaries.
 */
#include "sync.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "catalog.h"
#include "hash.h"
#include "idx.h"
#include "pack.h"
#include "util.h"

#define FORMAT_VERSION 1
/* Push packs are sealed past this size: small enough to upload several at once. */
#define PUSH_PACK_TARGET (16u << 20)
#define PARALLEL_DEFAULT 4
/* Traces read at mount for prefetch. */
#define TRACES_MAX 4
#define PATH_MAX_LEN 4095

/* ---- a string-keyed hash map (open addressing, keys owned by the map) ---- */

struct smap_slot {
	char *key;
	void *val;
};

struct smap {
	struct smap_slot *slots;
	size_t cap, n;
};

static uint64_t str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 1099511628211ull;
	return h;
}

static struct smap_slot *smap_slot(struct smap *m, const char *key)
{
	size_t i = (size_t)str_hash(key) & (m->cap - 1);

	while (m->slots[i].key && strcmp(m->slots[i].key, key) != 0)
		i = (i + 1) & (m->cap - 1);
	return &m->slots[i];
}

static void *smap_get(struct smap *m, const char *key)
{
	return m->cap ? smap_slot(m, key)->val : NULL;
}

static int smap_grow(struct smap *m)
{
	struct smap old = *m;

	m->cap = old.cap ? old.cap * 2 : 1024;
	m->slots = calloc(m->cap, sizeof(*m->slots));
	if (!m->slots) {
		*m = old;
		return -ENOMEM;
	}
	m->n = 0;
	for (size_t i = 0; i < old.cap; i++) {
		if (old.slots[i].key) {
			struct smap_slot *s = smap_slot(m, old.slots[i].key);

			*s = old.slots[i];
			m->n++;
		}
	}
	free(old.slots);
	return 0;
}

/* Set key to val (copying key when new). */
static int smap_put(struct smap *m, const char *key, void *val)
{
	struct smap_slot *s;

	if ((m->n + 1) * 2 > m->cap && smap_grow(m) < 0)
		return -ENOMEM;
	s = smap_slot(m, key);
	if (!s->key) {
		s->key = strdup(key);
		if (!s->key)
			return -ENOMEM;
		m->n++;
	}
	s->val = val;
	return 0;
}

/* Free the map; free_val (may be NULL) is called on each value. */
static void smap_free(struct smap *m, void (*free_val)(void *))
{
	for (size_t i = 0; i < m->cap; i++) {
		if (m->slots[i].key) {
			free(m->slots[i].key);
			if (free_val)
				free_val(m->slots[i].val);
		}
	}
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

/* ---- a set of non-zero 64-bit ids (open addressing) ---- */

struct idset {
	uint64_t *v;
	size_t cap, n;
};

/* Add id: 1 when it was new, 0 when already there, -ENOMEM. */
static int idset_add(struct idset *s, uint64_t id)
{
	size_t i;

	if ((s->n + 1) * 2 > s->cap) {
		struct idset old = *s;

		s->cap = old.cap ? old.cap * 2 : 1024;
		s->v = calloc(s->cap, sizeof(*s->v));
		if (!s->v) {
			*s = old;
			return -ENOMEM;
		}
		s->n = 0;
		for (size_t k = 0; k < old.cap; k++)
			if (old.v[k])
				idset_add(s, old.v[k]);
		free(old.v);
	}
	for (i = (size_t)(id * 0x9e3779b97f4a7c15ull) & (s->cap - 1); s->v[i];
	     i = (i + 1) & (s->cap - 1))
		if (s->v[i] == id)
			return 0;
	s->v[i] = id;
	s->n++;
	return 1;
}

/* ---- small helpers ---- */

static int db_exec(sqlite3 *db, const char *sql)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : idx_errno(rc);
}

static int64_t meta_i64(struct idx *x, const char *key)
{
	char buf[32];

	if (idx_meta_get(x, key, buf, sizeof(buf)) != 1)
		return 0;
	return strtoll(buf, NULL, 10);
}

static int meta_set_i64(struct idx *x, const char *key, int64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRId64, v);
	return idx_meta_set(x, key, buf);
}

/* This store's host id, made once. */
static int host_id(struct idx *x, uint8_t ret[16])
{
	char hex[33];

	if (idx_meta_get(x, "host_id", hex, sizeof(hex)) == 1 && strlen(hex) == 32) {
		for (int i = 0; i < 16; i++) {
			unsigned b;

			if (sscanf(hex + 2 * i, "%2x", &b) != 1)
				goto make;
			ret[i] = (uint8_t)b;
		}
		return 0;
	}
make:
	if (getrandom(ret, 16, 0) != 16)
		return -EIO;
	return idx_meta_set(x, "host_id", hash_hex(ret, 16, hex));
}

/* "ns/<16 hex>-<64 hex>.cat" style names: does the SHA-256 in the name match the bytes? */
static bool name_matches(const char *name, const void *data, size_t len)
{
	const char *dash = strrchr(name, '-'), *dot = strrchr(name, '.');
	chunk_digest d;
	char hex[2 * HASH_DIGEST_SIZE + 1];

	if (!dash || !dot || dot - dash - 1 != 2 * HASH_DIGEST_SIZE)
		return false;
	hash_digest(data, len, &d);
	hash_hex(d.b, HASH_DIGEST_SIZE, hex);
	return memcmp(dash + 1, hex, 2 * HASH_DIGEST_SIZE) == 0;
}

static void object_name(const char *dir, const char *ext, int64_t created, const uint8_t sha[32],
			char *buf, size_t len)
{
	char hex[65];

	snprintf(buf, len, "%s%016" PRIx64 "-%s%s", dir, (uint64_t)created, hash_hex(sha, 32, hex),
		 ext);
}

static void pack_object(const uint8_t name[32], char *buf, size_t len)
{
	char hex[65];

	snprintf(buf, len, "packs/%s.pack", hash_hex(name, 32, hex));
}

/* Last writer wins: >0 when (sa, ta, ga) beats (sb, tb, gb). */
static int lww_cmp(int64_t sa, uint8_t ta, const uint8_t ga[16], int64_t sb, uint8_t tb,
		   const uint8_t gb[16])
{
	if (sa != sb)
		return sa > sb ? 1 : -1;
	if ((ta == CAT_E_GONE) != (tb == CAT_E_GONE))
		return ta == CAT_E_GONE ? -1 : 1;
	if ((ta == CAT_E_DIR) != (tb == CAT_E_DIR))
		return ta == CAT_E_DIR ? 1 : -1;
	return memcmp(ga, gb, 16);
}

static uint8_t type_of_mode(uint32_t mode)
{
	if (S_ISREG(mode))
		return CAT_E_FILE;
	if (S_ISDIR(mode))
		return CAT_E_DIR;
	if (S_ISLNK(mode))
		return CAT_E_SYMLINK;
	return 0;
}

/* ---- the remote's config ---- */

/*
 * Tie the store's sync state to one remote. The state (catalogs seen, base, remote locations)
 * means nothing against another remote; it is reset when the store moves to a new one, unless
 * data of the old one is still only there.
 */
static int bind_remote(struct store *st, const char *id, char *err, size_t errlen)
{
	struct idx *x = store_idx(st);
	char old[128] = "";
	struct idx_stats s;
	int rr;

	rr = idx_meta_get(x, "remote_id", old, sizeof(old));
	if (rr < 0)
		return rr;
	if (rr == 1 && strcmp(old, id) == 0)
		return 0;
	if (rr == 1) {
		rr = idx_get_stats(x, &s);
		if (rr < 0)
			return rr;
		if (s.remote_only_bytes) {
			snprintf(err, errlen,
				 "this store caches another remote and holds %" PRIu64
				 " bytes that are only there: pull them from it first, or use a "
				 "new store for this remote",
				 s.remote_only_bytes);
			return -EXDEV;
		}
	}
	rr = idx_begin(x);
	if (rr == 0 && *old)
		rr = db_exec(idx_db(x), "DELETE FROM rseen; DELETE FROM rbase; DELETE FROM rtrace; "
					"UPDATE chunks SET rpack = 0, roff = 0, rstored_len = 0, "
					"rflags = 0 WHERE rpack != 0; DELETE FROM rpacks; "
					"DELETE FROM meta WHERE key = 'rsync_time'");
	if (rr == 0)
		rr = idx_meta_set(x, "remote_id", id);
	if (rr == 0)
		rr = idx_commit(x);
	else
		idx_rollback(x);
	return rr;
}

int sync_check_remote(struct store *st, struct remote *r, unsigned flags, char *err, size_t errlen)
{
	const struct chunker_params *cp = store_chunker_params(st);
	unsigned format = 0, mn = 0, avg = 0, mx = 0;
	char text[512], id[128] = "";
	void *data = NULL;
	size_t len = 0;
	int rr;

	rr = remote_get(r, "config", 0, 0, &data, &len);
	if (rr == -ENOENT) {
		uint8_t rnd[16];
		int n;

		if (!(flags & SYNC_REMOTE_CREATE))
			return 0; /* a new, empty remote: nothing to read, nothing to bind to yet */
		if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
			return -EIO;
		hash_hex(rnd, sizeof(rnd), id);
		n = snprintf(text, sizeof(text),
			     "# pkgcachefs remote\nformat = %d\nchunk_min = %u\n"
			     "chunk_avg = %u\nchunk_max = %u\nid = %s\n",
			     FORMAT_VERSION, cp->min, cp->avg, cp->max, id);
		rr = remote_put(r, "config", text, (size_t)n);
		if (rr < 0) {
			snprintf(err, errlen, "cannot write the remote's config: %s",
				 remote_last_error());
			return rr;
		}
		return flags & SYNC_REMOTE_BIND ? bind_remote(st, id, err, errlen) : 0;
	}
	if (rr < 0) {
		snprintf(err, errlen, "cannot read the remote's config: %s", remote_last_error());
		return rr;
	}
	if (len >= sizeof(text)) {
		free(data);
		snprintf(err, errlen, "the remote's config is not a pkgcachefs config");
		return -EPROTO;
	}
	memcpy(text, data, len);
	text[len] = '\0';
	free(data);
	for (char *save, *line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		sscanf(line, "format = %u", &format);
		sscanf(line, "chunk_min = %u", &mn);
		sscanf(line, "chunk_avg = %u", &avg);
		sscanf(line, "chunk_max = %u", &mx);
		sscanf(line, "id = %64[0-9a-f]", id);
	}
	if (format > FORMAT_VERSION) {
		snprintf(err, errlen, "the remote was written by a newer pkgcachefs (format %u)",
			 format);
		return -EPROTO;
	}
	if (format == 0 || mn != cp->min || avg != cp->avg || mx != cp->max) {
		snprintf(err, errlen,
			 "the remote's chunk sizes (%u/%u/%u) differ from this store's (%u/%u/%u): "
			 "use a new store for this remote",
			 mn, avg, mx, cp->min, cp->avg, cp->max);
		return -EPROTO;
	}
	if (!*id)
		snprintf(id, sizeof(id), "url:%.120s", remote_url(r));
	return flags & SYNC_REMOTE_BIND ? bind_remote(st, id, err, errlen) : 0;
}

/* ---- reading catalogs ---- */

struct names {
	char **v;
	size_t n, cap;
};

static void names_free(struct names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
	memset(ns, 0, sizeof(*ns));
}

static int collect_name(const char *name, uint64_t size, void *data)
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

static int list_sorted(struct remote *r, const char *dir, struct names *ret)
{
	int rr = remote_list(r, dir, collect_name, ret);

	if (rr < 0)
		return rr;
	if (ret->n)
		qsort(ret->v, ret->n, sizeof(*ret->v), name_cmp);
	return 0;
}

/* Fetch, verify and decode one catalog. */
static int load_catalog(struct store *st, struct remote *r, const char *name, struct cat **ret,
			uint64_t *bytes)
{
	const struct chunker_params *cp = store_chunker_params(st);
	void *data = NULL;
	size_t len = 0;
	struct cat *c;
	int rr;

	rr = remote_get(r, name, 0, 0, &data, &len);
	if (rr < 0)
		return rr;
	if (bytes)
		*bytes += len;
	if (!name_matches(name, data, len)) {
		log_debug("%s: content does not match its name", name);
		free(data);
		return -EBADMSG;
	}
	rr = cat_decode(data, len, &c);
	free(data);
	if (rr < 0)
		return rr;
	if (c->chunk_min != cp->min || c->chunk_avg != cp->avg || c->chunk_max != cp->max) {
		cat_free(c);
		return -EPROTO;
	}
	*ret = c;
	return 0;
}

/* 1 when the catalog is in rseen (with its merged flag), 0, or -errno. */
static int seen(sqlite3 *db, const char *name, bool *ret_merged)
{
	sqlite3_stmt *s;
	int rc, r = 0;

	if (sqlite3_prepare_v2(db, "SELECT merged FROM rseen WHERE name = ?1", -1, &s, NULL) !=
	    SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*ret_merged = sqlite3_column_int(s, 0) != 0;
		r = 1;
	} else if (rc != SQLITE_DONE) {
		r = idx_errno(rc);
	}
	sqlite3_finalize(s);
	return r;
}

static int mark_seen(sqlite3 *db, const char *name, bool merged)
{
	sqlite3_stmt *s;
	int rc;

	if (sqlite3_prepare_v2(
		    db,
		    "INSERT INTO rseen (name, merged) VALUES (?1, ?2) ON CONFLICT (name) "
		    "DO UPDATE SET merged = max(merged, ?2)",
		    -1, &s, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, merged);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

/* Remote pack ids for a catalog's pack table, made on first use. */
struct rpack_ids {
	const struct cat *c;
	uint64_t *id;
};

static int rpack_id(struct idx *x, struct rpack_ids *m, uint32_t pack, uint64_t *ret)
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

static struct pack_loc chunk_rloc(const struct cat_chunk *ch)
{
	return (struct pack_loc){
		.offset = ch->off, .stored_len = ch->stored_len, .flags = ch->flags};
}

/* Note every chunk the catalog says the remote has, for dedup at push. */
static int learn_chunks(struct idx *x, const struct cat *c)
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

/* ---- local entries and their signatures ---- */

/* One extent in normal form: a data chunk, or a hole of at most PACK_MAX_CHUNK. */
struct nx {
	uint32_t len;
	uint64_t chunk; /* 0: hole */
	const struct idx_extent *e;
};

/* Append x to *v (n used of cap), growing it; on failure *v is freed. 0 or -ENOMEM. */
static int nx_push(struct nx **v, size_t *n, size_t *cap, struct nx x)
{
	if (*n == *cap) {
		struct nx *nv = realloc(*v, *cap * 2 * sizeof(**v));

		if (!nv) {
			free(*v);
			*v = NULL;
			return -ENOMEM;
		}
		*v = nv;
		*cap *= 2;
	}
	(*v)[(*n)++] = x;
	return 0;
}

/* Normal form of a file's extents covering size bytes. *ret malloc'ed. */
static int normalize(const struct idx_extent *e, size_t n, uint64_t size, struct nx **ret,
		     size_t *ret_n)
{
	size_t cap = n * 2 + 4, m = 0;
	struct nx *v = malloc(cap * sizeof(*v));
	uint64_t pos = 0, hole = 0;

	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i <= n; i++) {
		bool last = i == n;
		uint64_t off = last ? size : MIN(e[i].off, size);

		/* A gap before this extent, or a hole extent, grows the pending hole. */
		if (off > pos) {
			hole += off - pos;
			pos = off;
		}
		if (!last && !e[i].chunk && pos < size) {
			uint64_t len = MIN((uint64_t)e[i].len, size - pos);

			hole += len;
			pos += len;
			continue;
		}
		while (hole) {
			uint32_t piece = (uint32_t)MIN(hole, (uint64_t)PACK_MAX_CHUNK);

			if (nx_push(&v, &m, &cap, (struct nx){.len = piece}) < 0)
				return -ENOMEM;
			hole -= piece;
		}
		if (last || pos >= size)
			break;
		if (e[i].off + e[i].len > size || e[i].off < pos) {
			/* Extents past the size or overlapping: not a file we can describe. */
			free(v);
			return -EUCLEAN;
		}
		if (nx_push(&v, &m, &cap,
			    (struct nx){.len = e[i].len, .chunk = e[i].chunk, .e = &e[i]}) < 0)
			return -ENOMEM;
		pos += e[i].len;
	}
	*ret = v;
	*ret_n = m;
	return 0;
}

static void local_sig(uint8_t type, const struct idx_inode *in, const char *target,
		      const struct nx *x, size_t n, uint8_t ret[16])
{
	struct cat_sig s;

	cat_sig_begin(&s, type, in->mode, in->uid, in->gid, in->mtime,
		      type == CAT_E_SYMLINK ? strlen(target) : in->size, target);
	for (size_t i = 0; i < n; i++)
		cat_sig_extent(&s, x[i].len, x[i].chunk ? &x[i].e->key : NULL,
			       x[i].chunk ? &x[i].e->digest : NULL);
	cat_sig_end(&s, ret);
}

/* ---- applying remote entries (pull) ---- */

struct merge {
	struct store *st;
	struct idx *x;
	sqlite3 *db;
	struct smap dirs; /* path -> (void *)ino of directories resolved */
	int64_t last_sync;
	struct sync_report *rep;
	sqlite3_stmt *base_get, *base_put;
	bool local_only; /* importing a bundle: every chunk is here already, nothing is remote */
	bool cold;       /* the store was empty: nothing local to compare with (a new runner) */
};

struct cand {
	const struct cat *c;
	const struct cat_entry *e;
	uint8_t sig[16];
};

/* ino of the directory at path ("" is the root): 1, 0 when missing or not a directory. */
static int resolve_dir(struct merge *m, const char *path, uint64_t *ret)
{
	char buf[PATH_MAX_LEN + 1], *slash;
	uint64_t parent, ino;
	struct idx_inode in;
	int r;

	if (!*path) {
		*ret = IDX_ROOT_INO;
		return 1;
	}
	ino = (uint64_t)(uintptr_t)smap_get(&m->dirs, path);
	if (ino) {
		*ret = ino;
		return 1;
	}
	snprintf(buf, sizeof(buf), "%s", path);
	slash = strrchr(buf, '/');
	if (slash)
		*slash = '\0';
	r = resolve_dir(m, slash ? buf : "", &parent);
	if (r <= 0)
		return r;
	r = idx_lookup(m->x, parent, slash ? slash + 1 : path, &ino);
	if (r <= 0)
		return r;
	r = idx_get_inode(m->x, ino, &in);
	if (r <= 0)
		return r;
	if (!S_ISDIR(in.mode))
		return 0;
	r = smap_put(&m->dirs, path, (void *)(uintptr_t)ino);
	if (r < 0)
		return r;
	*ret = ino;
	return 1;
}

static int adjust_nlink(struct idx *x, uint64_t ino, int delta)
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
static int remove_entry(struct merge *m, uint64_t parent, const char *name, uint64_t ino)
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
		return r == 0 ? idx_delete_inode(m->x, ino) : r;
	}
	r = idx_del_dentry(m->x, parent, name);
	if (r < 0)
		return r;
	if (in.nlink <= 1)
		return idx_delete_inode(m->x, ino);
	in.nlink--;
	return idx_put_inode(m->x, &in);
}

/* Make directory path and its parents (parents take the entry's owner and 0755): 1 when made,
 * 0 when it was there. */
static int make_dirs(struct merge *m, const char *path, uint32_t mode, uint32_t uid, uint32_t gid,
		     int64_t mtime, int64_t stamp, uint64_t *ret)
{
	char buf[PATH_MAX_LEN + 1], *slash;
	struct idx_inode in = {0};
	uint64_t parent, ino;
	int r;

	r = resolve_dir(m, path, ret);
	if (r != 0)
		return r < 0 ? r : 0;
	snprintf(buf, sizeof(buf), "%s", path);
	slash = strrchr(buf, '/');
	if (slash)
		*slash = '\0';
	if (slash)
		r = make_dirs(m, buf, S_IFDIR | 0755, uid, gid, mtime, stamp, &parent);
	else
		parent = IDX_ROOT_INO;
	if (r < 0)
		return r;
	/* Something that is not a directory is in the way: the directory wins. */
	r = idx_lookup(m->x, parent, slash ? slash + 1 : path, &ino);
	if (r < 0)
		return r;
	if (r == 1) {
		r = remove_entry(m, parent, slash ? slash + 1 : path, ino);
		if (r < 0)
			return r;
	}
	in.parent = parent;
	in.mode = S_IFDIR | (mode & 07777);
	in.uid = uid;
	in.gid = gid;
	in.nlink = 2;
	in.atime = in.mtime = mtime;
	in.ctime = stamp;
	r = idx_new_inode(m->x, &in, &ino);
	if (r == 0)
		r = idx_add_dentry(m->x, parent, slash ? slash + 1 : path, ino);
	if (r == 0)
		r = adjust_nlink(m->x, parent, 1);
	if (r == 0)
		r = smap_put(&m->dirs, path, (void *)(uintptr_t)ino);
	if (r == 0)
		*ret = ino;
	return r < 0 ? r : 1;
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

/* Make the local namespace hold entry e at its path. */
static int apply(struct merge *m, const struct cat *c, struct rpack_ids *ids,
		 const struct cat_entry *e)
{
	char dir[PATH_MAX_LEN + 1];
	const char *name = strrchr(e->path, '/');
	struct idx_inode in = {0};
	uint64_t parent, ino = 0;
	int r, found;

	snprintf(dir, sizeof(dir), "%.*s", name ? (int)(name - e->path) : 0, e->path);
	name = name ? name + 1 : e->path;

	if (e->type == CAT_E_DIR) {
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

	if (e->type == CAT_E_GONE) {
		r = resolve_dir(m, dir, &parent);
		if (r <= 0)
			return r;
		found = idx_lookup(m->x, parent, name, &ino);
		if (found <= 0)
			return found;
		r = idx_get_inode(m->x, ino, &in);
		if (r <= 0)
			return r;
		/* A directory goes only once empty: whatever survives in it keeps it. */
		if (S_ISDIR(in.mode) && idx_dir_is_empty(m->x, ino) != 1)
			return 0;
		return remove_entry(m, parent, name, ino);
	}

	/* A file or a symlink. */
	r = make_dirs(m, dir, S_IFDIR | 0755, e->uid, e->gid, e->mtime, e->stamp, &parent);
	if (r < 0)
		return r;
	found = idx_lookup(m->x, parent, name, &ino);
	if (found < 0)
		return found;
	if (found == 1) {
		r = idx_get_inode(m->x, ino, &in);
		if (r <= 0)
			return r < 0 ? r : -EUCLEAN;
		if (S_ISDIR(in.mode)) {
			if (idx_dir_is_empty(m->x, ino) != 1)
				return 0; /* a directory with entries wins over a file */
			r = remove_entry(m, parent, name, ino);
			found = 0;
		} else if (in.nlink > 1 || !S_ISREG(in.mode) || e->type != CAT_E_FILE) {
			/* Replace the name, not an inode other names share. */
			r = remove_entry(m, parent, name, ino);
			found = 0;
		}
		if (r < 0)
			return r;
	}
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
		r = idx_put_inode(m->x, &in);
	} else {
		r = idx_new_inode(m->x, &in, &ino);
		if (r == 0)
			r = idx_add_dentry(m->x, parent, name, ino);
	}
	if (r < 0)
		return r;
	if (e->type == CAT_E_SYMLINK)
		return idx_set_target(m->x, ino, e->target);
	{
		struct idx_extent *ext = calloc(e->n_ext ? e->n_ext : 1, sizeof(*ext));
		uint64_t off = 0;

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
	}
	return r;
}

/* The local entry at path: 1 with its type, stamp (ctime) and signature; 0 when absent. */
static int local_entry(struct merge *m, const char *path, uint8_t *ret_type, int64_t *ret_stamp,
		       uint8_t ret_sig[16])
{
	char dir[PATH_MAX_LEN + 1], target[PATH_MAX_LEN + 1] = "";
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
	type = type_of_mode(in.mode);
	if (!type)
		return 0;
	if (type == CAT_E_SYMLINK && idx_get_target(m->x, ino, target, sizeof(target)) < 0)
		return -EIO;
	if (type == CAT_E_FILE) {
		r = idx_get_extents(m->x, ino, &ext, &n);
		if (r == 0)
			r = normalize(ext, n, in.size, &nx, &nn);
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

static int base_get(struct merge *m, const char *path, uint8_t *ret_type, int64_t *ret_stamp,
		    uint8_t ret_sig[16])
{
	sqlite3_stmt *s = m->base_get;
	int rc;

	sqlite3_reset(s);
	sqlite3_bind_blob(s, 1, path, (int)strlen(path), SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && sqlite3_column_bytes(s, 2) == 16) {
		*ret_type = (uint8_t)sqlite3_column_int(s, 0);
		*ret_stamp = sqlite3_column_int64(s, 1);
		memcpy(ret_sig, sqlite3_column_blob(s, 2), 16);
		sqlite3_reset(s);
		return 1;
	}
	sqlite3_reset(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : idx_errno(rc);
}

static int base_put(sqlite3_stmt *s, const char *path, uint8_t type, int64_t stamp,
		    const uint8_t sig[16])
{
	int rc;

	sqlite3_reset(s);
	sqlite3_bind_blob(s, 1, path, (int)strlen(path), SQLITE_STATIC);
	sqlite3_bind_int(s, 2, type);
	sqlite3_bind_int64(s, 3, stamp);
	sqlite3_bind_blob(s, 4, sig, 16, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : idx_errno(rc);
}

/* Merge one remote entry (the winner among the new catalogs for its path). */
static int merge_entry(struct merge *m, struct cand *cd, struct rpack_ids *ids)
{
	const struct cat_entry *e = cd->e;
	uint8_t btype = 0, ltype = 0, bsig[16], lsig[16];
	int64_t bstamp = 0, lstamp = 0;
	int hb, hl, r;
	bool unchanged;

	hb = base_get(m, e->path, &btype, &bstamp, bsig);
	if (hb < 0)
		return hb;
	if (hb && lww_cmp(bstamp, btype, bsig, e->stamp, e->type, cd->sig) >= 0)
		return 0; /* known already */
	hl = local_entry(m, e->path, &ltype, &lstamp, lsig);
	if (hl < 0)
		return hl;
	if (hl)
		unchanged = hb && btype != CAT_E_GONE && memcmp(lsig, bsig, 16) == 0;
	else
		unchanged = !hb || btype == CAT_E_GONE;
	if (!unchanged) {
		/* Changed here since the last sync and not pushed yet: the later write wins. */
		if (!hl)
			lstamp = m->last_sync;
		if (e->stamp <= lstamp) {
			m->rep->kept_local++;
			return base_put(m->base_put, e->path, e->type, e->stamp, cd->sig);
		}
	}
	if (!(e->type == CAT_E_GONE && !hl)) {
		r = apply(m, cd->c, ids, e);
		if (r < 0)
			return r;
		m->rep->applied++;
	}
	return base_put(m->base_put, e->path, e->type, e->stamp, cd->sig);
}

static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = *(struct cand *const *)a, *y = *(struct cand *const *)b;

	return strcmp(x->e->path, y->e->path);
}

/* Collect the winner per path over catalogs cats[0..n) into map (values: struct cand *). */
static int pick_winners(struct cat **cats, size_t n, struct smap *map)
{
	for (size_t i = 0; i < n; i++) {
		const struct cat *c = cats[i];

		if (c->kind != CAT_DELTA && c->kind != CAT_SNAPSHOT)
			continue;
		for (size_t j = 0; j < c->n_entries; j++) {
			const struct cat_entry *e = &c->entries[j];
			struct cand *old, *cd;
			uint8_t sig[16];

			if (e->type != CAT_E_FILE && e->type != CAT_E_DIR &&
			    e->type != CAT_E_SYMLINK && e->type != CAT_E_GONE)
				continue;
			cat_entry_sig(e, c->chunks, sig);
			old = smap_get(map, e->path);
			if (old && lww_cmp(old->e->stamp, old->e->type, old->sig, e->stamp, e->type,
					   sig) >= 0)
				continue;
			cd = old ? old : malloc(sizeof(*cd));
			if (!cd)
				return -ENOMEM;
			cd->c = c;
			cd->e = e;
			memcpy(cd->sig, sig, 16);
			if (!old && smap_put(map, e->path, cd) < 0) {
				free(cd);
				return -ENOMEM;
			}
		}
	}
	return 0;
}

/* Winners sorted by path, as an array of pointers into map. */
static int sorted_winners(struct smap *map, struct cand ***ret, size_t *ret_n)
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

/* ---- bulk load of a cold store ---- */

static void chunk_id_hex(const chunk_key *k, const chunk_digest *d, char buf[97]);

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
static int cold_load(struct merge *m, struct cand **win, size_t nwin, struct cat **cats,
		     size_t ncats, struct rpack_ids *ids)
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

static void cats_free(struct cat **cats, size_t n)
{
	for (size_t i = 0; i < n; i++)
		cat_free(cats[i]);
	free(cats);
}

/* Fetch every catalog of ns/ for which want(name) says yes. */
static int fetch_catalogs(struct store *st, struct remote *r, const struct names *ns,
			  bool (*want)(void *data, const char *name), void *data,
			  const struct sync_options *o, struct cat ***ret, char ***ret_names,
			  size_t *ret_n, uint64_t *bytes, size_t *ret_bad)
{
	struct cat **cats = calloc(ns->n ? ns->n : 1, sizeof(*cats));
	char **names = calloc(ns->n ? ns->n : 1, sizeof(*names));
	size_t n = 0;
	int rr = 0;

	if (!cats || !names) {
		free(cats);
		free(names);
		return -ENOMEM;
	}
	for (size_t i = 0; i < ns->n; i++) {
		if (want && !want(data, ns->v[i]))
			continue;
		rr = load_catalog(st, r, ns->v[i], &cats[n], bytes);
		if (rr == -ENOENT) {
			/* Compacted away since the listing: its content is in a newer snapshot. */
			rr = 0;
			continue;
		}
		if (rr == -EBADMSG || rr == -EPROTO || rr == -EPROTONOSUPPORT) {
			/*
			 * Damaged, forged, or written by another version: left out, so that one
			 * bad object cannot stop every runner. What it held is missing until it
			 * is fixed or compacted over; the caller says which it was.
			 */
			if (o && o->bad_catalog)
				o->bad_catalog(o->progress_data, ns->v[i], rr);
			if (ret_bad)
				(*ret_bad)++;
			rr = 0;
			continue;
		}
		if (rr < 0) {
			log_debug("catalog %s: %s", ns->v[i], strerror(-rr));
			break;
		}
		names[n++] = ns->v[i];
		if (o && o->progress)
			o->progress(o->progress_data, "catalogs", i + 1, ns->n);
	}
	if (rr < 0) {
		cats_free(cats, n);
		free(names);
		return rr;
	}
	*ret = cats;
	*ret_names = names;
	*ret_n = n;
	return 0;
}

static bool want_unmerged(void *data, const char *name)
{
	bool merged = false;

	return seen(data, name, &merged) != 1 || !merged;
}

int sync_pull(struct store *st, struct remote *r, const struct sync_options *o,
	      struct sync_report *ret)
{
	struct idx *x = store_idx(st);
	struct merge m = {.st = st, .x = x, .db = idx_db(x), .rep = ret};
	struct names ns = {0};
	struct cat **cats = NULL;
	char **names = NULL;
	struct cand **win = NULL;
	struct smap map = {0};
	size_t n = 0, nwin = 0;
	int rr;

	memset(ret, 0, sizeof(*ret));
	for (int attempt = 0;; attempt++) {
		size_t listed, bad;

		rr = list_sorted(r, "ns/", &ns);
		if (rr < 0)
			return rr;
		bad = 0;
		rr = fetch_catalogs(st, r, &ns, want_unmerged, m.db, o, &cats, &names, &n,
				    &ret->catalog_bytes, &bad);
		if (rr < 0)
			goto out;
		listed = 0;
		for (size_t i = 0; i < ns.n; i++)
			listed += want_unmerged(m.db, ns.v[i]);
		/* One vanished (compacted into a snapshot written after the listing): again. */
		if (listed == n + bad || attempt == 2)
			break;
		cats_free(cats, n);
		free(names);
		names_free(&ns);
		cats = NULL;
		names = NULL;
		n = 0;
	}
	ret->catalogs_read = n;
	if (n == 0)
		goto out;
	rr = pick_winners(cats, n, &map);
	if (rr == 0)
		rr = sorted_winners(&map, &win, &nwin);
	if (rr < 0)
		goto out;

	rr = idx_commit(x);
	if (rr == 0)
		rr = idx_begin(x);
	if (rr < 0)
		goto out;
	/* A new store's first pull comes before the vfs made the root. */
	rr = idx_init_root(x, getuid(), getgid(), now_ns());
	if (rr < 0)
		goto out_rollback;
	{
		sqlite3_stmt *s;

		m.cold = idx_dir_is_empty(x, IDX_ROOT_INO) == 1;
		if (m.cold &&
		    sqlite3_prepare_v2(m.db,
				       "SELECT 1 FROM rbase UNION ALL SELECT 1 FROM chunks "
				       "LIMIT 1",
				       -1, &s, NULL) == SQLITE_OK) {
			m.cold = sqlite3_step(s) == SQLITE_DONE;
			sqlite3_finalize(s);
		}
	}
	/* A big merge touches every index: let it work in memory until the commit. */
	db_exec(m.db, "PRAGMA cache_size=-262144");
	m.last_sync = meta_i64(x, "rsync_time");
	if (sqlite3_prepare_v2(m.db, "SELECT type, stamp, sig FROM rbase WHERE path = ?1", -1,
			       &m.base_get, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(m.db,
			       "INSERT OR REPLACE INTO rbase (path, type, stamp, sig) VALUES "
			       "(?1, ?2, ?3, ?4)",
			       -1, &m.base_put, NULL) != SQLITE_OK) {
		rr = -EIO;
		goto out_rollback;
	}
	{
		struct rpack_ids *ids = calloc(n, sizeof(*ids));

		if (!ids) {
			rr = -ENOMEM;
			goto out_rollback;
		}
		for (size_t i = 0; i < n; i++)
			ids[i].c = cats[i];
		if (m.cold)
			rr = cold_load(&m, win, nwin, cats, n, ids);
		/* Creations in path order (parents first), removals in reverse (children first). */
		for (size_t i = 0; i < nwin && rr == 0 && !m.cold; i++) {
			size_t k = 0;

			if (win[i]->e->type == CAT_E_GONE)
				continue;
			while (cats[k] != win[i]->c)
				k++;
			rr = merge_entry(&m, win[i], &ids[k]);
			if (o && o->progress && (i % 1024 == 0 || i + 1 == nwin))
				o->progress(o->progress_data, "entries", i + 1, nwin);
		}
		for (size_t i = nwin; i-- > 0 && rr == 0 && !m.cold;) {
			size_t k = 0;

			if (win[i]->e->type != CAT_E_GONE)
				continue;
			while (cats[k] != win[i]->c)
				k++;
			rr = merge_entry(&m, win[i], &ids[k]);
		}
		/* Chunks the remote has that no entry here uses yet still count for dedup (a
		 * cold store has no chunks of its own to match). */
		for (size_t i = 0; i < n && rr == 0 && !m.cold; i++)
			rr = learn_chunks(x, cats[i]);
		for (size_t i = 0; i < n; i++)
			free(ids[i].id);
		free(ids);
	}
	for (size_t i = 0; i < n && rr == 0; i++)
		rr = mark_seen(m.db, names[i], true);
	db_exec(m.db, "PRAGMA cache_size=-16384");
	if (rr == 0)
		rr = meta_set_i64(x, "rsync_time", now_ns());
	if (rr < 0)
		goto out_rollback;
	rr = idx_commit(x);
	if (rr < 0)
		goto out_rollback;
	goto out;
out_rollback:
	idx_rollback(x);
out:
	sqlite3_finalize(m.base_get);
	sqlite3_finalize(m.base_put);
	smap_free(&m.dirs, NULL);
	smap_free(&map, free);
	free(win);
	cats_free(cats, n);
	free(names);
	names_free(&ns);
	return rr;
}

/* ---- push ---- */

/* The remote's entry for a path at the last sync, and whether the walk saw the path here. */
struct bentry {
	uint8_t type;
	bool seen;
	int64_t stamp;
	uint8_t sig[16];
};

/* A local entry that differs from its base: pushed as an upsert or a tombstone. */
struct pentry {
	char *path;
	uint8_t type;
	bool skip; /* its data is not readable here: left for a later push */
	uint32_t mode, uid, gid;
	int64_t mtime, stamp;
	uint64_t size;
	char *target;
	struct idx_extent *ext;
	size_t next;
	struct nx *nx;
	size_t nnx;
	uint8_t sig[16];
};

/* A chunk to upload, and where it went. */
struct upload {
	uint64_t chunk;
	const struct idx_extent *e;
	int status;     /* <0: could not be read here */
	uint32_t npack; /* index into the new packs */
	struct pack_loc loc;
};

struct newpack {
	char file[64]; /* in STORE/staging */
	uint64_t size;
	uint8_t name[32];
	int status;
};

struct push {
	struct store *st;
	struct remote *r;
	sqlite3 *rdb; /* read-only snapshot of the index */
	sqlite3_stmt *list, *ext, *target, *rpname, *up;
	struct smap base; /* path -> struct bentry * */
	struct pentry *pe;
	size_t npe, cappe;
	struct upload *up_v;
	size_t nup, capup;
	struct newpack *np;
	size_t nnp;
	int64_t last_sync;
	struct sync_report *rep;
	const struct sync_options *o;
};

static void pentry_free(struct pentry *p)
{
	free(p->path);
	free(p->target);
	free(p->ext);
	free(p->nx);
}

/* The catalog entry of pe, its extents cx (n_ext pe->nnx for a file). */
static struct cat_entry cat_entry_of(const struct pentry *pe, const struct cat_extent *cx)
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

static struct pentry *pentry_add(struct push *p)
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
static int walk(struct push *p, uint64_t dir, const char *prefix)
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
				r = normalize(ext, next, k->in.size, &nx, &nnx);
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
			r = walk(p, k->in.ino, path);
	}
	for (size_t i = 0; i < n; i++)
		free(kids[i].name);
	free(kids);
	return r;
}

static int load_base(struct push *p)
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
static int add_tombstones(struct push *p)
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
	if (remote_head(p->r, obj, &have) == 1 && have == np->size)
		r = 1;
	else
		r = remote_put(p->r, obj, data, np->size);
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
		for (size_t j = 0; j < pe->nnx && r == 0; j++) {
			const struct idx_extent *e = pe->nx[j].e;
			struct cat_chunk ch = {0};
			uint8_t name[32];
			uint64_t size = 0;

			cx[j].len = pe->nx[j].len;
			cx[j].chunk = CAT_HOLE;
			if (!pe->nx[j].chunk)
				continue;
			ch.key = e->key;
			ch.digest = e->digest;
			ch.raw_len = e->len;
			if (e->rpack) {
				sqlite3_reset(p->rpname);
				sqlite3_bind_int64(p->rpname, 1, (sqlite3_int64)e->rpack);
				if (sqlite3_step(p->rpname) != SQLITE_ROW ||
				    sqlite3_column_bytes(p->rpname, 0) != 32) {
					sqlite3_reset(p->rpname);
					r = -EUCLEAN;
					break;
				}
				memcpy(name, sqlite3_column_blob(p->rpname, 0), 32);
				size = (uint64_t)sqlite3_column_int64(p->rpname, 1);
				sqlite3_reset(p->rpname);
				ch.off = e->rloc.offset;
				ch.stored_len = e->rloc.stored_len;
				ch.flags = e->rloc.flags;
			} else {
				struct upload *u = upload_find(p, e->chunk);

				if (!u || u->status < 0) {
					pe->skip = true;
					break;
				}
				memcpy(name, p->np[u->npack].name, 32);
				size = p->np[u->npack].size;
				ch.off = u->loc.offset;
				ch.stored_len = u->loc.stored_len;
				ch.flags = u->loc.flags;
			}
			r = cat_writer_add_pack(w, name, size, &ch.pack);
			if (r == 0)
				r = cat_writer_add_chunk(w, &ch, &cx[j].chunk);
		}
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
	sqlite3 *db = idx_db(x);
	sqlite3_stmt *bput = NULL;
	uint64_t *rp = calloc(p->nnp ? p->nnp : 1, sizeof(*rp));
	int r;

	if (!rp)
		return -ENOMEM;
	if (lock)
		pthread_mutex_lock(lock);
	r = idx_begin(x);
	if (r == 0 && sqlite3_prepare_v2(db,
					 "INSERT OR REPLACE INTO rbase (path, type, stamp, sig) "
					 "VALUES (?1, ?2, ?3, ?4)",
					 -1, &bput, NULL) != SQLITE_OK)
		r = -EIO;
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
			r = base_put(bput, pe->path, pe->type, pe->stamp, pe->sig);
	}
	if (r == 0 && *catalog)
		r = mark_seen(db, catalog, true);
	if (r == 0)
		r = meta_set_i64(x, "rsync_time", walk_start);
	sqlite3_finalize(bput);
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

	return seen(data, name, &merged) != 1;
}

/*
 * Learn which chunks the remote has now (catalogs pushed since we last looked) and which packs
 * gc condemned, so that push uploads exactly what is missing.
 */
static int refresh(struct store *st, struct remote *r, pthread_mutex_t *lock,
		   const struct sync_options *o, size_t *ret_ncat)
{
	struct idx *x = store_idx(st);
	struct names ns = {0}, gc = {0};
	struct cat **cats = NULL, **cond = NULL;
	char **names = NULL, **cnames = NULL;
	size_t n = 0, nc = 0;
	int rr;

	rr = list_sorted(r, "ns/", &ns);
	if (rr == 0)
		rr = list_sorted(r, "gc/", &gc);
	if (rr < 0)
		goto out;
	*ret_ncat = ns.n;
	/* Which are new is a question for the index (under lock); the downloads are not. */
	{
		struct names unseen = {0};

		if (lock)
			pthread_mutex_lock(lock);
		for (size_t i = 0; i < ns.n && rr == 0; i++)
			if (want_unseen(idx_db(x), ns.v[i]))
				rr = collect_name(ns.v[i], 0, &unseen);
		if (lock)
			pthread_mutex_unlock(lock);
		if (rr == 0)
			rr = fetch_catalogs(st, r, &unseen, NULL, NULL, o, &cats, &names, &n, NULL,
					    NULL);
		/* names point into unseen: keep their strings until the end. */
		names_free(&ns);
		ns = unseen;
	}
	if (rr == 0)
		rr = fetch_catalogs(st, r, &gc, NULL, NULL, NULL, &cond, &cnames, &nc, NULL, NULL);
	if (rr < 0)
		goto out;
	if (lock)
		pthread_mutex_lock(lock);
	rr = idx_begin(x);
	for (size_t i = 0; i < nc && rr == 0; i++) {
		for (size_t j = 0; j < cond[i]->n_packs && rr == 0; j++) {
			uint64_t id;

			rr = idx_rpack_ensure(x, cond[i]->packs[j].name, cond[i]->packs[j].size,
					      &id);
			if (rr == 0) {
				char sql[96];

				snprintf(sql, sizeof(sql),
					 "UPDATE rpacks SET condemned = 1 WHERE id = %" PRIu64, id);
				rr = db_exec(idx_db(x), sql);
			}
		}
	}
	for (size_t i = 0; i < n && rr == 0; i++) {
		rr = learn_chunks(x, cats[i]);
		if (rr == 0)
			rr = mark_seen(idx_db(x), names[i], false);
	}
	if (!lock)
		rr = rr < 0 ? (idx_rollback(x), rr) : idx_commit(x);
	if (lock)
		pthread_mutex_unlock(lock);
out:
	cats_free(cats, n);
	free(names);
	cats_free(cond, nc);
	free(cnames);
	names_free(&ns);
	names_free(&gc);
	return rr;
}

/* A path of ino (one of its names) from the snapshot, into buf. 0, or -ENOENT. */
static int snap_path(sqlite3_stmt *up, uint64_t ino, char *buf, size_t len)
{
	char tmp[PATH_MAX_LEN + 1];
	size_t pos = sizeof(tmp) - 1;

	tmp[pos] = '\0';
	for (int depth = 0; ino != IDX_ROOT_INO && depth < 1024; depth++) {
		int nlen;

		sqlite3_reset(up);
		sqlite3_bind_int64(up, 1, (sqlite3_int64)ino);
		if (sqlite3_step(up) != SQLITE_ROW) {
			sqlite3_reset(up);
			return -ENOENT;
		}
		nlen = sqlite3_column_bytes(up, 1);
		if (nlen <= 0 || (size_t)nlen + 1 > pos) {
			sqlite3_reset(up);
			return -ENAMETOOLONG;
		}
		if (tmp[pos])
			tmp[--pos] = '/';
		pos -= (size_t)nlen;
		memcpy(tmp + pos, sqlite3_column_blob(up, 1), (size_t)nlen);
		ino = (uint64_t)sqlite3_column_int64(up, 0);
		sqlite3_reset(up);
	}
	if (ino != IDX_ROOT_INO || !tmp[pos])
		return -ENOENT;
	snprintf(buf, len, "%s", tmp + pos);
	return 0;
}

/* Upload the access trace (files opened since the last push), then forget it. */
static int push_trace(struct push *p, pthread_mutex_t *lock, const uint8_t host[16])
{
	const struct chunker_params *cp = store_chunker_params(p->st);
	struct cat_writer *w = NULL;
	sqlite3_stmt *s = NULL;
	int64_t upto = 0, created = now_ns();
	size_t entries = 0;
	void *data = NULL;
	size_t len = 0;
	uint8_t sha[32];
	char obj[160];
	int rc, r;

	r = cat_writer_new(CAT_TRACE, host, created, cp->min, cp->avg, cp->max, &w);
	if (r < 0)
		return r;
	if (sqlite3_prepare_v2(p->rdb, "SELECT ino, stamp FROM rtrace", -1, &s, NULL) !=
	    SQLITE_OK) {
		cat_writer_free(w);
		return -EIO;
	}
	while ((rc = sqlite3_step(s)) == SQLITE_ROW && r == 0) {
		char path[PATH_MAX_LEN + 1];
		struct cat_entry ce = {.type = CAT_E_READ};

		ce.stamp = sqlite3_column_int64(s, 1);
		upto = MAX(upto, ce.stamp);
		if (snap_path(p->up, (uint64_t)sqlite3_column_int64(s, 0), path, sizeof(path)) <
			    0 ||
		    !cat_path_valid(path))
			continue;
		ce.path = path;
		r = cat_writer_add_entry(w, &ce);
		if (r == -EEXIST)
			r = 0; /* two inodes once had this path: one read is enough */
		else
			entries++;
	}
	sqlite3_finalize(s);
	if (r < 0 || entries == 0) {
		cat_writer_free(w);
		return r;
	}
	r = cat_writer_finish(w, &data, &len, sha);
	if (r < 0)
		return r;
	object_name("trace/", ".trc", created, sha, obj, sizeof(obj));
	r = remote_put(p->r, obj, data, len);
	free(data);
	if (r < 0)
		return r;
	if (lock)
		pthread_mutex_lock(lock);
	r = idx_begin(store_idx(p->st));
	if (r == 0) {
		char sql[96];

		snprintf(sql, sizeof(sql), "DELETE FROM rtrace WHERE stamp <= %" PRId64, upto);
		r = db_exec(idx_db(store_idx(p->st)), sql);
	}
	if (!lock)
		r = r < 0 ? (idx_rollback(store_idx(p->st)), r) : idx_commit(store_idx(p->st));
	if (lock)
		pthread_mutex_unlock(lock);
	return r;
}

static void push_free(struct push *p)
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

static int open_snapshot(struct push *p)
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

int sync_push(struct store *st, struct remote *r, pthread_mutex_t *lock,
	      const struct sync_options *o, struct sync_report *ret)
{
	struct push p = {.st = st, .r = r, .rep = ret, .o = o};
	uint8_t host[16], sha[32];
	int64_t walk_start;
	size_t ncat = 0, len = 0;
	void *data = NULL;
	int rr;

	memset(ret, 0, sizeof(*ret));
	{
		char untrusted[8] = "";

		if (lock)
			pthread_mutex_lock(lock);
		rr = idx_meta_get(store_idx(st), "untrusted", untrusted, sizeof(untrusted));
		if (lock)
			pthread_mutex_unlock(lock);
		if (rr < 0)
			return rr;
		if (!strcmp(untrusted, "1"))
			return -EPERM;
	}
	rr = refresh(st, r, lock, o, &ncat);
	if (rr < 0)
		return rr;
	if (lock)
		pthread_mutex_lock(lock);
	rr = idx_begin(store_idx(st));
	if (rr == 0)
		rr = host_id(store_idx(st), host);
	p.last_sync = meta_i64(store_idx(st), "rsync_time");
	/* The snapshot must see what refresh learnt; packs first, as every commit does. */
	if (rr == 0)
		rr = store_sync_packs(st);
	if (rr == 0)
		rr = idx_commit(store_idx(st));
	if (lock)
		pthread_mutex_unlock(lock);
	if (rr < 0)
		return rr;

	walk_start = now_ns();
	rr = open_snapshot(&p);
	if (rr == 0)
		rr = load_base(&p);
	if (rr == 0)
		rr = walk(&p, IDX_ROOT_INO, "");
	if (rr == 0)
		rr = add_tombstones(&p);
	if (rr == 0)
		rr = collect_uploads(&p);
	if (rr == 0)
		rr = build_packs(&p);
	if (rr == 0)
		rr = upload_packs(&p);
	if (rr == 0)
		rr = build_catalog(&p, host, walk_start, &data, &len, sha);
	if (rr == 0 && data) {
		object_name("ns/", ".cat", walk_start, sha, ret->catalog, sizeof(ret->catalog));
		rr = remote_put(r, ret->catalog, data, len);
		if (rr == 0)
			ret->catalog_uploaded_bytes = len;
		else
			ret->catalog[0] = '\0';
	}
	free(data);
	/* Only a push that published everything moves the base. */
	if (rr == 0)
		rr = record_push(&p, lock, ret->catalog, walk_start);
	if (rr == 0)
		rr = push_trace(&p, lock, host);
	push_free(&p);
	if (rr == 0 && ncat + 1 > SYNC_COMPACT_AT)
		rr = sync_compact(st, r, o);
	return rr;
}

/* ---- compaction ---- */

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

/* ---- the access trace, for prefetch at mount ---- */

int sync_recent_reads(struct store *st, struct remote *r, int64_t max_age_s, uint64_t **ret_inos,
		      size_t *ret_n)
{
	struct idx *x = store_idx(st);
	struct merge m = {.st = st, .x = x, .db = idx_db(x)};
	struct names ns = {0};
	uint64_t *inos = NULL;
	size_t n = 0, cap = 0, used = 0;
	int64_t oldest = now_ns() - max_age_s * 1000000000;
	int rr;

	rr = list_sorted(r, "trace/", &ns);
	for (size_t i = ns.n; i-- > 0 && rr == 0 && used < TRACES_MAX;) {
		const char *base = ns.v[i] + strlen("trace/");
		struct cat *c;

		if ((int64_t)strtoull(base, NULL, 16) < oldest)
			break;
		if (load_catalog(st, r, ns.v[i], &c, NULL) < 0)
			continue;
		used++;
		for (size_t j = 0; j < c->n_entries && rr == 0; j++) {
			const struct cat_entry *e = &c->entries[j];
			const char *name = strrchr(e->path, '/');
			char dir[PATH_MAX_LEN + 1];
			uint64_t parent, ino;

			if (e->type != CAT_E_READ)
				continue;
			snprintf(dir, sizeof(dir), "%.*s", name ? (int)(name - e->path) : 0,
				 e->path);
			if (resolve_dir(&m, dir, &parent) != 1 ||
			    idx_lookup(x, parent, name ? name + 1 : e->path, &ino) != 1)
				continue;
			if (n == cap) {
				size_t ncap = cap ? cap * 2 : 256;
				uint64_t *nv = realloc(inos, ncap * sizeof(*nv));

				if (!nv) {
					rr = -ENOMEM;
					break;
				}
				inos = nv;
				cap = ncap;
			}
			inos[n++] = ino;
		}
		cat_free(c);
	}
	smap_free(&m.dirs, NULL);
	names_free(&ns);
	if (rr < 0) {
		free(inos);
		return rr;
	}
	*ret_inos = inos;
	*ret_n = n;
	return 0;
}

/* ---- fetching everything (pull) ---- */

int sync_fetch_all(struct store *st, struct remote *r,
		   void (*progress)(void *data, uint64_t done, uint64_t total), void *data,
		   struct fetcher_stats *ret)
{
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	struct idx *x = store_idx(st);
	struct fetcher *f = NULL;
	struct fetcher_stats fs;
	sqlite3_stmt *s = NULL;
	uint64_t *inos = NULL, total = 0;
	size_t n = 0, cap = 0;
	int rr;

	memset(ret, 0, sizeof(*ret));
	if (sqlite3_prepare_v2(
		    idx_db(x),
		    "SELECT DISTINCT e.ino FROM extents e JOIN chunks c ON c.id = e.chunk "
		    "WHERE c.pack = 0",
		    -1, &s, NULL) != SQLITE_OK)
		return -EIO;
	while (sqlite3_step(s) == SQLITE_ROW) {
		if (n == cap) {
			uint64_t *nv;

			cap = cap ? cap * 2 : 1024;
			nv = realloc(inos, cap * sizeof(*nv));
			if (!nv) {
				sqlite3_finalize(s);
				free(inos);
				return -ENOMEM;
			}
			inos = nv;
		}
		inos[n++] = (uint64_t)sqlite3_column_int64(s, 0);
	}
	sqlite3_finalize(s);
	if (sqlite3_prepare_v2(idx_db(x),
			       "SELECT total(raw_len) FROM chunks WHERE pack = 0 AND refs > 0", -1,
			       &s, NULL) == SQLITE_OK) {
		if (sqlite3_step(s) == SQLITE_ROW)
			total = (uint64_t)sqlite3_column_int64(s, 0);
		sqlite3_finalize(s);
	}
	rr = fetcher_new(st, r, &lock, NULL, &f);
	if (rr < 0) {
		free(inos);
		return rr;
	}
	for (size_t i = 0; i <= n; i++) {
		/* Keep the queue short: memory stays bounded and progress honest. */
		while (!fetcher_idle_below(f, i == n ? 1 : 64)) {
			fetcher_get_stats(f, &fs);
			if (progress)
				progress(data, fs.bytes, total);
			usleep(20000);
		}
		if (i < n) {
			struct idx_extent *ext = NULL;
			size_t ne = 0;

			pthread_mutex_lock(&lock);
			rr = idx_get_extents(x, inos[i], &ext, &ne);
			pthread_mutex_unlock(&lock);
			if (rr < 0)
				break;
			fetcher_prefetch(f, ext, ne);
			free(ext);
		}
	}
	fetcher_drain(f);
	fetcher_get_stats(f, ret);
	if (progress)
		progress(data, ret->bytes, total);
	fetcher_free(f);
	free(inos);
	if (rr == 0)
		rr = store_sync_packs(st);
	if (rr == 0)
		rr = idx_commit(x);
	return rr;
}

/* ---- remote gc ---- */

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

/* ---- bundles: a store, or what a base lacks, as one file ---- */

static const char bundle_magic[8] = {'P', 'K', 'G', 'C', 'B', 'N', 'D', '1'};
#define BUNDLE_HDR 16u
/* Chunks the base bundle has sit in this pseudo-pack of the table of contents. */
static const uint8_t base_pack_name[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static void chunk_id_hex(const chunk_key *k, const chunk_digest *d, char buf[97])
{
	hash_hex(k->b, HASH_KEY_SIZE, buf);
	hash_hex(d->b, HASH_DIGEST_SIZE, buf + 2 * HASH_KEY_SIZE);
}

/* Read and decode a bundle's table of contents; *ret_pack_off gets where its pack starts. */
static int bundle_toc(struct store *st, int fd, struct cat **ret, uint64_t *ret_pack_off,
		      uint64_t *ret_size)
{
	const struct chunker_params *cp = store_chunker_params(st);
	uint8_t hdr[BUNDLE_HDR];
	struct stat stt;
	uint64_t len = 0;
	void *toc;
	int r;

	if (fstat(fd, &stt) < 0)
		return -errno;
	if (pread_all(fd, hdr, sizeof(hdr), 0) < 0 || memcmp(hdr, bundle_magic, 8) != 0)
		return -EBADMSG;
	for (int i = 0; i < 8; i++)
		len |= (uint64_t)hdr[8 + i] << (8 * i);
	if (len == 0 || len > CAT_MAX_BODY || len > (uint64_t)stt.st_size - BUNDLE_HDR)
		return -EBADMSG;
	toc = malloc(len);
	if (!toc)
		return -ENOMEM;
	r = pread_all(fd, toc, len, BUNDLE_HDR);
	if (r == 0)
		r = cat_decode(toc, len, ret);
	free(toc);
	if (r < 0)
		return r == -EIO ? -EBADMSG : r;
	if ((*ret)->kind != CAT_BUNDLE || (*ret)->chunk_min != cp->min ||
	    (*ret)->chunk_avg != cp->avg || (*ret)->chunk_max != cp->max) {
		cat_free(*ret);
		*ret = NULL;
		return -EPROTO;
	}
	*ret_pack_off = BUNDLE_HDR + len;
	*ret_size = (uint64_t)stt.st_size;
	return 0;
}

int sync_export(struct store *st, const char *base, const char *out,
		void (*progress)(void *data, uint64_t done, uint64_t total), void *data,
		struct sync_report *ret)
{
	const struct chunker_params *cp = store_chunker_params(st);
	struct push p = {.st = st, .rep = ret};
	struct smap inbase = {0}, packed = {0};
	struct pack_writer *w = NULL;
	struct cat_writer *cw = NULL;
	uint8_t host[16] = {0}, sha[32], *buf = NULL, hdr[BUNDLE_HDR];
	char tmp[4200], pfile[64];
	void *toc = NULL;
	size_t toclen = 0;
	uint64_t psize = 0;
	uint32_t base_idx = 0, own_idx = 0;
	int fd = -1, pfd = -1, rr;

	memset(ret, 0, sizeof(*ret));
	if (base) {
		struct cat *b;
		uint64_t poff, size;

		fd = open(base, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		rr = bundle_toc(st, fd, &b, &poff, &size);
		close(fd);
		fd = -1;
		if (rr < 0)
			return rr;
		for (size_t i = 0; i < b->n_chunks && rr == 0; i++) {
			char id[97];

			chunk_id_hex(&b->chunks[i].key, &b->chunks[i].digest, id);
			rr = smap_put(&inbase, id, (void *)1);
		}
		cat_free(b);
		if (rr < 0)
			goto out;
	}
	/* Every entry, from a snapshot of the index: an empty base makes all of them changes. */
	rr = open_snapshot(&p);
	if (rr == 0)
		rr = walk(&p, IDX_ROOT_INO, "");
	if (rr < 0)
		goto out;
	buf = malloc(PACK_MAX_CHUNK);
	snprintf(pfile, sizeof(pfile), "export-%d.pack", (int)getpid());
	unlinkat(store_staging_fd(st), pfile, 0);
	rr = buf ? pack_writer_create(store_staging_fd(st), pfile, 0, &w) : -ENOMEM;
	if (rr == 0)
		rr = cat_writer_new(CAT_BUNDLE, host, now_ns(), cp->min, cp->avg, cp->max, &cw);
	/* The pack's name and size are known only at the end: placeholders, fixed below. */
	if (rr == 0)
		rr = cat_writer_add_pack(cw, base_pack_name, UINT64_MAX, &base_idx);
	for (size_t i = 0; i < p.npe && rr == 0; i++) {
		struct pentry *pe = &p.pe[i];

		if (progress)
			progress(data, i, p.npe);
		for (size_t j = 0; j < pe->nnx && rr == 0; j++) {
			const struct idx_extent *e = pe->nx[j].e;
			struct pack_loc *loc;
			char id[97];

			if (!pe->nx[j].chunk)
				continue;
			chunk_id_hex(&e->key, &e->digest, id);
			if (smap_get(&inbase, id) || smap_get(&packed, id))
				continue;
			if (!e->pack) {
				pe->skip = true; /* only on the remote: pull first */
				continue;
			}
			rr = store_read_chunk(st, e->pack, &e->loc, &e->key, buf, e->len);
			if (rr < 0) {
				pe->skip = true;
				rr = 0;
				continue;
			}
			loc = malloc(sizeof(*loc));
			rr = loc ? pack_writer_append(w, &e->key, &e->digest, buf, e->len, true,
						      loc)
				 : -ENOMEM;
			if (rr == 0)
				rr = smap_put(&packed, id, loc);
			if (rr < 0) {
				free(loc);
				break;
			}
			ret->chunks_uploaded++;
		}
	}
	if (rr == 0)
		rr = pack_writer_seal(w);
	if (rr < 0)
		goto out;
	psize = pack_writer_size(w);
	pack_writer_free(w);
	w = NULL;
	/* The pack goes into the bundle as it is; its SHA-256 names it in the table of contents. */
	pfd = openat(store_staging_fd(st), pfile, O_RDONLY | O_CLOEXEC);
	if (pfd < 0) {
		rr = -errno;
		goto out;
	}
	{
		uint8_t *all = malloc(psize);
		chunk_digest d;

		rr = all ? pread_all(pfd, all, psize, 0) : -ENOMEM;
		if (rr == 0) {
			hash_digest(all, psize, &d);
			memcpy(sha, d.b, 32);
		}
		free(all);
		if (rr < 0)
			goto out;
	}
	rr = cat_writer_add_pack(cw, sha, psize, &own_idx);
	for (size_t i = 0; i < p.npe && rr == 0; i++) {
		struct pentry *pe = &p.pe[i];
		struct cat_extent *cx = NULL;
		struct cat_entry ce;

		if (pe->skip) {
			ret->skipped++;
			continue;
		}
		if (pe->nnx) {
			cx = calloc(pe->nnx, sizeof(*cx));
			if (!cx) {
				rr = -ENOMEM;
				break;
			}
		}
		for (size_t j = 0; j < pe->nnx && rr == 0; j++) {
			const struct idx_extent *e = pe->nx[j].e;
			struct cat_chunk ch;
			struct pack_loc *loc;
			char id[97];

			cx[j].len = pe->nx[j].len;
			cx[j].chunk = CAT_HOLE;
			if (!pe->nx[j].chunk)
				continue;
			memset(&ch, 0, sizeof(ch));
			ch.key = e->key;
			ch.digest = e->digest;
			ch.raw_len = e->len;
			chunk_id_hex(&e->key, &e->digest, id);
			loc = smap_get(&packed, id);
			if (loc) {
				ch.pack = own_idx;
				ch.off = loc->offset;
				ch.stored_len = loc->stored_len;
				ch.flags = loc->flags;
			} else {
				ch.pack = base_idx;
				ch.stored_len = e->len;
			}
			rr = cat_writer_add_chunk(cw, &ch, &cx[j].chunk);
		}
		ce = cat_entry_of(pe, cx);
		if (rr == 0)
			rr = cat_writer_add_entry(cw, &ce);
		ret->upserts++;
		free(cx);
	}
	if (rr == 0)
		rr = cat_writer_finish(cw, &toc, &toclen, sha);
	cw = NULL;
	if (rr < 0)
		goto out;

	/* Header, table of contents, pack: written to a temp name, synced, renamed. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", out);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rr = -errno;
		goto out;
	}
	memcpy(hdr, bundle_magic, 8);
	for (int i = 0; i < 8; i++)
		hdr[8 + i] = (uint8_t)((uint64_t)toclen >> (8 * i));
	rr = pwrite_all(fd, hdr, sizeof(hdr), 0);
	if (rr == 0)
		rr = pwrite_all(fd, toc, toclen, BUNDLE_HDR);
	for (uint64_t off = 0; rr == 0 && off < psize;) {
		size_t n = (size_t)MIN((uint64_t)PACK_MAX_CHUNK, psize - off);

		rr = pread_all(pfd, buf, n, (off_t)off);
		if (rr == 0)
			rr = pwrite_all(fd, buf, n, (off_t)(BUNDLE_HDR + toclen + off));
		off += n;
	}
	if (rr == 0 && fsync(fd) < 0)
		rr = -errno;
	close(fd);
	fd = -1;
	if (rr == 0 && rename(tmp, out) < 0)
		rr = -errno;
	if (rr < 0)
		unlink(tmp);
	ret->bytes_uploaded = BUNDLE_HDR + toclen + psize;
	if (progress)
		progress(data, p.npe, p.npe);
out:
	if (pfd >= 0)
		close(pfd);
	unlinkat(store_staging_fd(st), pfile, 0);
	pack_writer_free(w);
	cat_writer_free(cw);
	free(toc);
	free(buf);
	smap_free(&inbase, NULL);
	smap_free(&packed, free);
	push_free(&p);
	return rr;
}

int sync_import(struct store *st, const char *file,
		void (*progress)(void *data, uint64_t done, uint64_t total), void *data,
		struct sync_report *ret)
{
	struct idx *x = store_idx(st);
	struct merge m = {.st = st, .x = x, .db = idx_db(x), .rep = ret, .local_only = true};
	uint64_t poff = 0, size = 0, done = 0;
	uint8_t *raw = NULL, *ent = NULL;
	struct cat *c = NULL;
	uint32_t own = UINT32_MAX;
	size_t missing = 0;
	int fd, rr;

	memset(ret, 0, sizeof(*ret));
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rr = bundle_toc(st, fd, &c, &poff, &size);
	if (rr < 0)
		goto out;
	for (size_t i = 0; i < c->n_packs; i++)
		if (memcmp(c->packs[i].name, base_pack_name, 32) != 0)
			own = (uint32_t)i;
	if (own != UINT32_MAX && c->packs[own].size != size - poff) {
		rr = -EBADMSG; /* truncated or padded */
		goto out;
	}
	raw = malloc(PACK_MAX_CHUNK);
	ent = malloc(PACK_ENTRY_HDR_SIZE + PACK_MAX_CHUNK + 65536);
	if (!raw || !ent) {
		rr = -ENOMEM;
		goto out;
	}
	rr = idx_begin(x);
	if (rr == 0)
		rr = idx_init_root(x, getuid(), getgid(), now_ns());
	/* Chunks first, each verified against its key and SHA-256 as it is read. */
	for (size_t i = 0; i < c->n_chunks && rr == 0; i++) {
		const struct cat_chunk *ch = &c->chunks[i];
		struct pack_loc loc = chunk_rloc(ch), nloc;
		uint64_t id, pack;
		size_t len = PACK_ENTRY_HDR_SIZE + ch->stored_len;
		int found;

		found = idx_find_chunk(x, &ch->key, &ch->digest, &id, &pack, NULL);
		if (found < 0) {
			rr = found;
			break;
		}
		if (ch->pack != own) {
			/* The base's: it must be here (or on the remote) already. */
			if (!found)
				missing++;
			continue;
		}
		if (found && pack)
			continue;
		rr = pread_all(fd, ent, len, (off_t)(poff + ch->off));
		if (rr == 0)
			rr = pack_decode_entry(ent, len, &loc, &ch->key, &ch->digest, raw,
					       ch->raw_len);
		if (rr < 0) {
			rr = -EBADMSG;
			break;
		}
		rr = store_append_chunk(st, &ch->key, &ch->digest, raw, ch->raw_len, &pack, &nloc);
		if (rr == 0)
			rr = found ? idx_set_chunk_local(x, id, &ch->key, pack, &nloc)
				   : idx_add_chunk(x, &ch->key, &ch->digest, ch->raw_len, pack,
						   &nloc, &id);
		done += ch->raw_len;
		ret->chunks_uploaded++;
		if (progress && i % 64 == 0)
			progress(data, done, size - poff);
	}
	if (rr == 0 && missing) {
		log_debug("%zu chunks of the base are missing", missing);
		rr = -ENOENT;
	}
	/* Then the names: a local change newer than the bundle's entry stays. */
	for (size_t i = 0; i < c->n_entries && rr == 0; i++) {
		const struct cat_entry *e = &c->entries[i];
		uint8_t ltype, lsig[16], sig[16];
		int64_t lstamp;
		int hl;

		cat_entry_sig(e, c->chunks, sig);
		hl = local_entry(&m, e->path, &ltype, &lstamp, lsig);
		if (hl < 0) {
			rr = hl;
			break;
		}
		if (hl && memcmp(lsig, sig, 16) == 0)
			continue; /* here already */
		if (hl && lstamp > e->stamp) {
			ret->kept_local++;
			continue;
		}
		rr = apply(&m, c, NULL, e);
		ret->applied++;
	}
	if (rr == 0)
		rr = store_sync_packs(st);
	if (rr == 0)
		rr = idx_commit(x);
	if (rr < 0)
		idx_rollback(x);
	ret->bytes_uploaded = done;
	if (progress)
		progress(data, done, done);
out:
	smap_free(&m.dirs, NULL);
	cat_free(c);
	free(raw);
	free(ent);
	close(fd);
	return rr;
}
