/* SPDX-License-Identifier: MIT */
/*
 * What several sync features share: meta values, the host id, object names on the remote, the
 * normal form of a file's extents and the signature of a local entry. Functions that take a
 * struct idx need the caller to serialise it (the vfs mutex while the store is serving).
 */
#include "sync_priv.h"

int sync_store_untrusted(struct store *st, pthread_mutex_t *lock)
{
	char untrusted[8] = "";
	int r;

	if (lock)
		pthread_mutex_lock(lock);
	r = idx_meta_get(store_idx(st), "untrusted", untrusted, sizeof(untrusted));
	if (lock)
		pthread_mutex_unlock(lock);
	if (r < 0)
		return r;
	return !strcmp(untrusted, "1");
}

int sync_mark_untrusted(struct store *st)
{
	struct idx *x = store_idx(st);
	int r = idx_begin(x);

	if (r == 0)
		r = idx_meta_set(x, "untrusted", "1");
	if (r == 0)
		r = idx_commit(x);
	return r;
}

int sync_set_keep_suid(struct store *st, bool keep)
{
	struct idx *x = store_idx(st);
	int r = idx_begin(x);

	if (r == 0)
		r = idx_meta_set(x, "keep_suid", keep ? "1" : "0");
	if (r == 0)
		r = idx_commit(x);
	return r;
}

/* This store's host id, made once. */
int host_id(struct idx *x, uint8_t ret[16])
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
bool name_matches(const char *name, const void *data, size_t len)
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

void object_name(const char *dir, const char *ext, int64_t created, const uint8_t sha[32],
		 char *buf, size_t len)
{
	char hex[65];

	snprintf(buf, len, "%s%016" PRIx64 "-%s%s", dir, (uint64_t)created, hash_hex(sha, 32, hex),
		 ext);
}

void pack_object(const uint8_t name[32], char *buf, size_t len)
{
	char hex[65];

	snprintf(buf, len, "packs/%s.pack", hash_hex(name, 32, hex));
}

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
int nx_normalize(const struct idx_extent *e, size_t n, uint64_t size, struct nx **ret,
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

void local_sig(uint8_t type, const struct idx_inode *in, const char *target, const struct nx *x,
	       size_t n, uint8_t ret[16])
{
	struct cat_sig s;

	cat_sig_begin(&s, type, in->mode, in->uid, in->gid, in->mtime,
		      type == CAT_E_SYMLINK ? strlen(target) : in->size, target);
	for (size_t i = 0; i < n; i++)
		cat_sig_extent(&s, x[i].len, x[i].chunk ? &x[i].e->key : NULL,
			       x[i].chunk ? &x[i].e->digest : NULL);
	cat_sig_end(&s, ret);
}

/* A chunk's key and digest in hex: the key of the maps that dedup chunks by content. */
void chunk_id_hex(const chunk_key *k, const chunk_digest *d, char buf[97])
{
	hash_hex(k->b, HASH_KEY_SIZE, buf);
	hash_hex(d->b, HASH_DIGEST_SIZE, buf + 2 * HASH_KEY_SIZE);
}
