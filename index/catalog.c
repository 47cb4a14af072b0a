/* SPDX-License-Identifier: MIT */
/*
 * Catalogs: the decoder, the writer, path rules and content signatures.
 *
 * An object is a 72-byte header, one zstd frame holding the body, and a 32-byte trailer that is
 * the SHA-256 of everything before it. The body is the pack table, the chunk table, then the
 * entries in path order. Every integer is little-endian and encoded byte by byte. Byte layout:
 * docs/format.md.
 *
 * The decoder trusts nothing: it checks the trailer, then the header's counts against the
 * declared body length, then the zstd frame's declared size against the header before it
 * allocates the body, and decompresses into a buffer of exactly that size. It then reads the
 * body twice. The first pass decodes the pack and chunk tables into one allocation and validates
 * every entry, counting the extents and string bytes they need; the second fills one allocation
 * that holds every entry, extent and string. So a decode makes four allocations whatever the
 * size, and nothing is allocated that the input has not shown to be there.
 *
 * Duplicate detection (pack names, chunk identities, paths in the writer) uses open-addressing
 * sets of table indices, hashed with XXH3-64 under a per-object random seed: keys come from remote
 * catalogs, and a fixed hash would let a forged catalog make every insert collide.
 *
 * The writer encodes each entry when it is added, into one growing buffer, and validates it with
 * the same functions as the decoder; finish sorts the encoded entries by path, lays out the body
 * and compresses it.
 */
#include "catalog.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <zstd.h>
#include <zstd_errors.h>

#include "chunker.h"
#include "pack.h"
#include "util.h"

#define CAT_MAGIC "PKGCCAT1"
#define CAT_VERSION 1u
#define HDR_SIZE 72u
#define TRAILER_SIZE 32u

#define PACK_REC 40u  /* name[32], size u64 */
#define CHUNK_REC 72u /* key, digest, raw_len, pack, off, stored_len, flags */
#define EXT_REC 8u    /* len u32, chunk u32 */
/* type u8, path_len u16, path (>= 1 byte), mode, uid, gid u32, mtime, stamp i64, size u64 */
#define ENTRY_FIXED 39u
#define ENTRY_MIN (ENTRY_FIXED + 1u)

#define PACK_ENTRY_HDR 72u /* a pack entry header precedes the chunk's stored bytes */

#define ZSTD_LEVEL 3

_Static_assert(sizeof(chunk_key) == 16 && sizeof(chunk_digest) == 32, "hash sizes");

/* Little-endian, byte by byte. */

static void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v = 0;

	for (unsigned i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* A bounds-checked reader over the body. Every read fails once the bytes run out. */
struct rd {
	const uint8_t *p;
	size_t left;
};

static const uint8_t *rd_take(struct rd *r, size_t n)
{
	const uint8_t *p = r->p;

	if (n > r->left)
		return NULL;
	r->p += n;
	r->left -= n;
	return p;
}

static bool rd_u8(struct rd *r, uint8_t *v)
{
	const uint8_t *p = rd_take(r, 1);

	if (!p)
		return false;
	*v = p[0];
	return true;
}

static bool rd_u16(struct rd *r, uint16_t *v)
{
	const uint8_t *p = rd_take(r, 2);

	if (!p)
		return false;
	*v = get_le16(p);
	return true;
}

static bool rd_u32(struct rd *r, uint32_t *v)
{
	const uint8_t *p = rd_take(r, 4);

	if (!p)
		return false;
	*v = get_le32(p);
	return true;
}

static bool rd_u64(struct rd *r, uint64_t *v)
{
	const uint8_t *p = rd_take(r, 8);

	if (!p)
		return false;
	*v = get_le64(p);
	return true;
}

/*
 * Sets of indices into a table, for duplicate detection. A slot holds index + 1 (0 is empty) and
 * 32 bits of the key's hash, which is enough to place it again when the set grows: the tables
 * are bounded well below 2^32 entries by CAT_MAX_BODY.
 */
struct islot {
	uint32_t idx1;
	uint32_t h;
};

struct iset {
	struct islot *slots;
	size_t cap; /* a power of two, at least twice the number of members */
	size_t n;
	uint64_t seed;
};

static void iset_init(struct iset *s)
{
	s->slots = NULL;
	s->cap = 0;
	s->n = 0;
	s->seed = util_random_seed();
}

static void iset_release(struct iset *s)
{
	free(s->slots);
	s->slots = NULL;
	s->cap = 0;
	s->n = 0;
}

static uint32_t iset_hash(const struct iset *s, const void *key, size_t len)
{
	return (uint32_t)XXH3_64bits_withSeed(key, len, s->seed);
}

/* Make room for n members. 0 or -ENOMEM. */
static int iset_reserve(struct iset *s, size_t n)
{
	struct islot *slots;
	size_t cap = 16;

	if (s->cap && n * 2 <= s->cap)
		return 0;
	while (cap < n * 2)
		cap *= 2;
	slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < s->cap; i++) {
		size_t j;

		if (s->slots[i].idx1 == 0)
			continue;
		for (j = s->slots[i].h & (cap - 1); slots[j].idx1; j = (j + 1) & (cap - 1))
			;
		slots[j] = s->slots[i];
	}
	free(s->slots);
	s->slots = slots;
	s->cap = cap;
	return 0;
}

/*
 * The slot of the member equal to the probed key (eq says whether the member at an index is
 * equal), or the empty slot where it would go. The set must have a free slot.
 */
static struct islot *iset_probe(const struct iset *s, uint32_t h,
				bool (*eq)(const void *ctx, uint32_t idx), const void *ctx)
{
	size_t mask = s->cap - 1;

	for (size_t i = h & mask;; i = (i + 1) & mask) {
		struct islot *sl = &s->slots[i];

		if (sl->idx1 == 0 || (sl->h == h && eq(ctx, sl->idx1 - 1)))
			return sl;
	}
}

static void iset_fill(struct iset *s, struct islot *sl, uint32_t h, uint32_t idx)
{
	sl->idx1 = idx + 1;
	sl->h = h;
	s->n++;
}

struct pack_probe {
	const struct cat_pack *packs;
	const uint8_t *name;
};

static bool pack_eq(const void *ctx, uint32_t idx)
{
	const struct pack_probe *p = ctx;

	return memcmp(p->packs[idx].name, p->name, 32) == 0;
}

struct chunk_probe {
	const struct cat_chunk *chunks;
	const struct cat_chunk *c;
};

static bool chunk_eq(const void *ctx, uint32_t idx)
{
	const struct chunk_probe *p = ctx;

	return hash_key_equal(&p->chunks[idx].key, &p->c->key) &&
	       hash_digest_equal(&p->chunks[idx].digest, &p->c->digest);
}

static uint32_t chunk_hash(const struct iset *s, const struct cat_chunk *c)
{
	uint8_t id[48];

	memcpy(id, c->key.b, 16);
	memcpy(id + 16, c->digest.b, 32);
	return iset_hash(s, id, sizeof(id));
}

/* Validation rules, shared by the decoder and the writer. */

static bool kind_valid(uint32_t kind)
{
	return kind >= CAT_DELTA && kind <= CAT_BUNDLE;
}

static bool params_valid(uint32_t min, uint32_t avg, uint32_t max)
{
	struct chunker_params p = {.min = min, .avg = avg, .max = max};

	return chunker_params_validate(&p) == 0;
}

/* Whether an entry of this type may appear in a catalog of this kind. */
static bool type_valid(uint32_t kind, uint8_t type)
{
	if (kind == CAT_CONDEMNED)
		return false;
	if (kind == CAT_TRACE)
		return type == CAT_E_READ;
	return type >= CAT_E_FILE && type <= CAT_E_GONE;
}

static bool path_bytes_valid(const uint8_t *p, size_t len)
{
	size_t comp = 0; /* bytes of the current component */

	if (len == 0 || len > CAT_PATH_MAX)
		return false;
	for (size_t i = 0; i <= len; i++) {
		if (i == len || p[i] == '/') {
			if (comp == 0 || comp > CAT_NAME_MAX)
				return false;
			if (p[i - comp] == '.' &&
			    (comp == 1 || (comp == 2 && p[i - comp + 1] == '.')))
				return false;
			comp = 0;
		} else if (p[i] == '\0') {
			return false;
		} else {
			comp++;
		}
	}
	return true;
}

bool cat_path_valid(const char *path)
{
	if (!path)
		return false;
	return path_bytes_valid((const uint8_t *)path, strnlen(path, CAT_PATH_MAX + 1));
}

static bool target_bytes_valid(const uint8_t *p, size_t len)
{
	return len >= 1 && len <= CAT_PATH_MAX && memchr(p, '\0', len) == NULL;
}

uint8_t cat_type_of_mode(uint32_t mode)
{
	if (S_ISREG(mode))
		return CAT_E_FILE;
	if (S_ISDIR(mode))
		return CAT_E_DIR;
	if (S_ISLNK(mode))
		return CAT_E_SYMLINK;
	return 0;
}

static bool mode_valid(uint8_t type, uint32_t mode)
{
	if (type != CAT_E_FILE && type != CAT_E_DIR && type != CAT_E_SYMLINK)
		return mode == 0;
	return (mode & ~(uint32_t)(S_IFMT | 07777)) == 0 && cat_type_of_mode(mode) == type;
}

static bool chunk_valid(const struct cat_chunk *c, const struct cat_pack *packs, size_t n_packs)
{
	uint64_t size;

	if (c->pack >= n_packs)
		return false;
	if (c->flags & ~PACK_F_ZSTD)
		return false;
	if (c->raw_len == 0 || c->raw_len > PACK_MAX_CHUNK)
		return false;
	if (c->flags & PACK_F_ZSTD) {
		if (c->stored_len == 0 || c->stored_len > c->raw_len)
			return false;
	} else if (c->stored_len != c->raw_len) {
		return false;
	}
	size = packs[c->pack].size;
	return c->off <= size && size - c->off >= (uint64_t)PACK_ENTRY_HDR + c->stored_len;
}

static bool extent_valid(uint32_t len, uint32_t chunk, const struct cat_chunk *chunks,
			 size_t n_chunks)
{
	if (len == 0 || len > PACK_MAX_CHUNK)
		return false;
	if (chunk == CAT_HOLE)
		return true;
	return chunk < n_chunks && chunks[chunk].raw_len == len;
}

/* Bytewise order of paths, a shorter prefix first. */
static int path_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int r = memcmp(a, b, MIN(alen, blen));

	if (r != 0)
		return r;
	return (alen > blen) - (alen < blen);
}

/* The decoder. */

struct hdr {
	uint32_t kind;
	int64_t created;
	uint8_t host[16];
	uint32_t chunk_min, chunk_avg, chunk_max;
	uint32_t n_packs, n_chunks, n_entries;
	uint64_t body_len;
};

static void hdr_encode(const struct hdr *h, uint8_t out[HDR_SIZE])
{
	memcpy(out, CAT_MAGIC, 8);
	put_le32(out + 8, CAT_VERSION);
	put_le32(out + 12, h->kind);
	put_le64(out + 16, (uint64_t)h->created);
	memcpy(out + 24, h->host, 16);
	put_le32(out + 40, h->chunk_min);
	put_le32(out + 44, h->chunk_avg);
	put_le32(out + 48, h->chunk_max);
	put_le32(out + 52, h->n_packs);
	put_le32(out + 56, h->n_chunks);
	put_le32(out + 60, h->n_entries);
	put_le64(out + 64, h->body_len);
}

/* Fields after magic and version, and whether they are consistent; false if not. */
static bool hdr_decode(const uint8_t in[HDR_SIZE], struct hdr *h)
{
	uint64_t least;

	h->kind = get_le32(in + 12);
	h->created = (int64_t)get_le64(in + 16);
	memcpy(h->host, in + 24, 16);
	h->chunk_min = get_le32(in + 40);
	h->chunk_avg = get_le32(in + 44);
	h->chunk_max = get_le32(in + 48);
	h->n_packs = get_le32(in + 52);
	h->n_chunks = get_le32(in + 56);
	h->n_entries = get_le32(in + 60);
	h->body_len = get_le64(in + 64);

	if (!kind_valid(h->kind) || !params_valid(h->chunk_min, h->chunk_avg, h->chunk_max))
		return false;
	if (h->kind == CAT_CONDEMNED && (h->n_chunks != 0 || h->n_entries != 0))
		return false;
	if (h->n_entries > CAT_MAX_ENTRIES || h->body_len > CAT_MAX_BODY)
		return false;
	/* No overflow: each product is below 2^39. */
	least = (uint64_t)h->n_packs * PACK_REC + (uint64_t)h->n_chunks * CHUNK_REC +
		(uint64_t)h->n_entries * ENTRY_MIN;
	return least <= h->body_len;
}

/*
 * Decompress the one zstd frame that must fill src exactly and hold exactly body_len bytes.
 * *ret is malloc'ed. 0, -EBADMSG or -ENOMEM.
 */
static int body_inflate(const uint8_t *src, size_t src_len, uint64_t body_len, uint8_t **ret)
{
	ZSTD_DCtx *dctx;
	uint8_t *body;
	size_t n;

	if (src_len < 4 || get_le32(src) != ZSTD_MAGICNUMBER)
		return -EBADMSG;
	/* Both also fail on errors, whose values are far above CAT_MAX_BODY and any src_len. */
	if (ZSTD_getFrameContentSize(src, src_len) != body_len)
		return -EBADMSG;
	if (ZSTD_findFrameCompressedSize(src, src_len) != src_len)
		return -EBADMSG;

	body = malloc(body_len ? (size_t)body_len : 1);
	if (!body)
		return -ENOMEM;
	dctx = ZSTD_createDCtx();
	if (!dctx) {
		free(body);
		return -ENOMEM;
	}
	n = ZSTD_decompressDCtx(dctx, body, (size_t)body_len, src, src_len);
	ZSTD_freeDCtx(dctx);
	if (ZSTD_isError(n) || n != body_len) {
		free(body);
		if (ZSTD_isError(n) && ZSTD_getErrorCode(n) == ZSTD_error_memory_allocation)
			return -ENOMEM;
		return -EBADMSG;
	}
	*ret = body;
	return 0;
}

/* What the first pass over the entries learns. */
struct scan {
	const uint8_t *prev; /* path of the previous entry */
	size_t prev_len;
	uint64_t n_ext;
	uint64_t str_bytes; /* paths and targets, with their NULs */
};

/*
 * Read and validate one entry. With out NULL only count what it needs into s; otherwise also
 * fill *out, its extents at *ext_at and its strings at *str_at, advancing both.
 */
static bool entry_read(struct rd *r, const struct cat *c, struct scan *s, struct cat_entry *out,
		       struct cat_extent **ext_at, char **str_at)
{
	const uint8_t *path, *target = NULL, *ext = NULL;
	uint8_t type;
	uint16_t plen, tlen = 0;
	uint32_t mode, uid, gid, n_ext = 0;
	uint64_t mtime, stamp, size, sum = 0;

	if (!rd_u8(r, &type) || !rd_u16(r, &plen) || !(path = rd_take(r, plen)) ||
	    !rd_u32(r, &mode) || !rd_u32(r, &uid) || !rd_u32(r, &gid) || !rd_u64(r, &mtime) ||
	    !rd_u64(r, &stamp) || !rd_u64(r, &size))
		return false;
	if (!type_valid(c->kind, type) || !path_bytes_valid(path, plen) || !mode_valid(type, mode))
		return false;
	/* Stamps are ns since the epoch: one past INT64_MAX is no time a clock wrote. */
	if (stamp > INT64_MAX)
		return false;
	if (s->prev && path_cmp(s->prev, s->prev_len, path, plen) >= 0)
		return false;
	s->prev = path;
	s->prev_len = plen;

	switch (type) {
	case CAT_E_SYMLINK:
		if (!rd_u16(r, &tlen) || !(target = rd_take(r, tlen)))
			return false;
		if (!target_bytes_valid(target, tlen) || size != tlen)
			return false;
		break;
	case CAT_E_FILE:
		if (!rd_u32(r, &n_ext) || n_ext > r->left / EXT_REC)
			return false;
		ext = rd_take(r, (size_t)n_ext * EXT_REC);
		if (s->n_ext + n_ext > CAT_MAX_EXTENTS)
			return false;
		/* No overflow: fewer than 2^27 extents of at most 2^24 bytes. */
		for (uint32_t i = 0; i < n_ext; i++) {
			uint32_t len = get_le32(ext + EXT_REC * i);

			if (!extent_valid(len, get_le32(ext + EXT_REC * i + 4), c->chunks,
					  c->n_chunks))
				return false;
			sum += len;
		}
		if (sum != size)
			return false;
		break;
	default:
		if (size != 0)
			return false;
		break;
	}
	s->n_ext += n_ext;
	s->str_bytes += plen + 1u + (target ? tlen + 1u : 0u);
	if (!out)
		return true;

	memcpy(*str_at, path, plen);
	(*str_at)[plen] = '\0';
	out->path = *str_at;
	*str_at += plen + 1u;
	out->target = NULL;
	if (target) {
		memcpy(*str_at, target, tlen);
		(*str_at)[tlen] = '\0';
		out->target = *str_at;
		*str_at += tlen + 1u;
	}
	out->type = type;
	out->mode = mode;
	out->uid = uid;
	out->gid = gid;
	out->mtime = (int64_t)mtime;
	out->stamp = (int64_t)stamp;
	out->size = size;
	out->n_ext = n_ext;
	out->ext = NULL;
	if (n_ext) {
		for (uint32_t i = 0; i < n_ext; i++) {
			(*ext_at)[i].len = get_le32(ext + EXT_REC * i);
			(*ext_at)[i].chunk = get_le32(ext + EXT_REC * i + 4);
		}
		out->ext = *ext_at;
		*ext_at += n_ext;
	}
	return true;
}

/* Whether two packs share a name or two chunks an identity. 0, -EBADMSG or -ENOMEM. */
static int tables_unique(const struct cat *c)
{
	struct iset set;
	int r = 0;

	iset_init(&set);
	r = iset_reserve(&set, MAX(c->n_packs, c->n_chunks));
	if (r < 0)
		return r;
	for (size_t i = 0; i < c->n_packs; i++) {
		struct pack_probe pp = {.packs = c->packs, .name = c->packs[i].name};
		uint32_t h = iset_hash(&set, pp.name, 32);
		struct islot *sl = iset_probe(&set, h, pack_eq, &pp);

		if (sl->idx1) {
			r = -EBADMSG;
			goto out_release;
		}
		iset_fill(&set, sl, h, (uint32_t)i);
	}
	memset(set.slots, 0, set.cap * sizeof(*set.slots));
	set.n = 0;
	for (size_t i = 0; i < c->n_chunks; i++) {
		struct chunk_probe cp = {.chunks = c->chunks, .c = &c->chunks[i]};
		uint32_t h = chunk_hash(&set, cp.c);
		struct islot *sl = iset_probe(&set, h, chunk_eq, &cp);

		if (sl->idx1) {
			r = -EBADMSG;
			goto out_release;
		}
		iset_fill(&set, sl, h, (uint32_t)i);
	}
out_release:
	iset_release(&set);
	return r;
}

/* Decode a decompressed body of h->body_len bytes. 0 and *ret, -EBADMSG or -ENOMEM. */
static int body_decode(const struct hdr *h, const uint8_t *body, struct cat **ret)
{
	struct rd r = {.p = body, .left = (size_t)h->body_len};
	struct rd entries_at;
	struct scan s = {0};
	struct cat *c;
	struct cat_pack *packs;
	struct cat_chunk *chunks;
	struct cat_entry *entries = NULL;
	struct cat_extent *ext_at;
	char *str_at;
	size_t size;
	int ret_code;

	/* Bounded by the body: hdr_decode checked the counts against its length. */
	size = sizeof(*c) + h->n_packs * sizeof(*packs) + h->n_chunks * sizeof(*chunks);
	c = malloc(size);
	if (!c)
		return -ENOMEM;
	packs = (struct cat_pack *)(c + 1);
	chunks = (struct cat_chunk *)(packs + h->n_packs);
	c->kind = h->kind;
	c->created = h->created;
	memcpy(c->host, h->host, 16);
	c->chunk_min = h->chunk_min;
	c->chunk_avg = h->chunk_avg;
	c->chunk_max = h->chunk_max;
	c->packs = packs;
	c->n_packs = h->n_packs;
	c->chunks = chunks;
	c->n_chunks = h->n_chunks;
	c->entries = NULL;
	c->n_entries = 0;

	for (size_t i = 0; i < h->n_packs; i++) {
		const uint8_t *p = rd_take(&r, PACK_REC);

		if (!p) {
			ret_code = -EBADMSG;
			goto out_free;
		}
		memcpy(packs[i].name, p, 32);
		packs[i].size = get_le64(p + 32);
	}
	for (size_t i = 0; i < h->n_chunks; i++) {
		const uint8_t *p = rd_take(&r, CHUNK_REC);

		if (!p) {
			ret_code = -EBADMSG;
			goto out_free;
		}
		memcpy(chunks[i].key.b, p, 16);
		memcpy(chunks[i].digest.b, p + 16, 32);
		chunks[i].raw_len = get_le32(p + 48);
		chunks[i].pack = get_le32(p + 52);
		chunks[i].off = get_le64(p + 56);
		chunks[i].stored_len = get_le32(p + 64);
		chunks[i].flags = get_le32(p + 68);
		if (!chunk_valid(&chunks[i], packs, h->n_packs)) {
			ret_code = -EBADMSG;
			goto out_free;
		}
	}
	ret_code = tables_unique(c);
	if (ret_code < 0)
		goto out_free;

	entries_at = r;
	for (size_t i = 0; i < h->n_entries; i++) {
		if (!entry_read(&r, c, &s, NULL, NULL, NULL)) {
			ret_code = -EBADMSG;
			goto out_free;
		}
	}
	if (r.left != 0) {
		ret_code = -EBADMSG;
		goto out_free;
	}

	/* Bounded too: every extent and string byte was seen in the body. */
	size = h->n_entries * sizeof(*entries) + s.n_ext * sizeof(*ext_at) + s.str_bytes;
	if (size) {
		entries = malloc(size);
		if (!entries) {
			ret_code = -ENOMEM;
			goto out_free;
		}
		ext_at = (struct cat_extent *)(entries + h->n_entries);
		str_at = (char *)(ext_at + s.n_ext);
		r = entries_at;
		memset(&s, 0, sizeof(s));
		for (size_t i = 0; i < h->n_entries; i++)
			entry_read(&r, c, &s, &entries[i], &ext_at, &str_at);
	}
	c->entries = entries;
	c->n_entries = h->n_entries;
	*ret = c;
	return 0;

out_free:
	free(c);
	return ret_code;
}

int cat_decode(const void *data, size_t len, struct cat **ret)
{
	const uint8_t *p = data;
	struct hdr h;
	chunk_digest d;
	uint8_t *body;
	uint32_t version;
	int r;

	if (len < 12 || memcmp(p, CAT_MAGIC, 8) != 0)
		return -EBADMSG;
	version = get_le32(p + 8);
	if (version > CAT_VERSION)
		return -EPROTONOSUPPORT;
	if (version != CAT_VERSION || len < HDR_SIZE + TRAILER_SIZE)
		return -EBADMSG;
	hash_digest(p, len - TRAILER_SIZE, &d);
	if (memcmp(d.b, p + len - TRAILER_SIZE, TRAILER_SIZE) != 0)
		return -EBADMSG;
	if (!hdr_decode(p, &h))
		return -EBADMSG;

	r = body_inflate(p + HDR_SIZE, len - HDR_SIZE - TRAILER_SIZE, h.body_len, &body);
	if (r < 0)
		return r;
	r = body_decode(&h, body, ret);
	free(body);
	return r;
}

void cat_free(struct cat *c)
{
	if (!c)
		return;
	free((void *)c->entries);
	free(c);
}

/* The writer. */

/* One encoded entry in the writer's buffer; its path starts 3 bytes in. */
struct wrec {
	size_t off;
	uint32_t len;
	uint16_t plen;
};

struct cat_writer {
	struct hdr h; /* counts and body_len are set by finish */
	struct cat_pack *packs;
	size_t n_packs, cap_packs;
	struct cat_chunk *chunks;
	size_t n_chunks, cap_chunks;
	uint8_t *ebuf; /* encoded entries, in the order they were added */
	size_t elen, ecap;
	struct wrec *recs;
	size_t n_entries, cap_recs;
	uint64_t n_ext;
	struct iset pack_set, chunk_set, path_set;
};

/* Make *p hold at least need elements of elem bytes. 0 or -ENOMEM. */
static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap : 16;
	void *np;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	np = realloc(*p, ncap * elem);
	if (!np)
		return -ENOMEM;
	*p = np;
	*cap = ncap;
	return 0;
}

static uint64_t writer_body_len(const struct cat_writer *w)
{
	return (uint64_t)w->n_packs * PACK_REC + (uint64_t)w->n_chunks * CHUNK_REC + w->elen;
}

int cat_writer_new(uint32_t kind, const uint8_t host[16], int64_t created, uint32_t chunk_min,
		   uint32_t chunk_avg, uint32_t chunk_max, struct cat_writer **ret)
{
	struct cat_writer *w;

	if (!kind_valid(kind) || !host || !params_valid(chunk_min, chunk_avg, chunk_max))
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->h.kind = kind;
	w->h.created = created;
	memcpy(w->h.host, host, 16);
	w->h.chunk_min = chunk_min;
	w->h.chunk_avg = chunk_avg;
	w->h.chunk_max = chunk_max;
	iset_init(&w->pack_set);
	iset_init(&w->chunk_set);
	iset_init(&w->path_set);
	*ret = w;
	return 0;
}

void cat_writer_free(struct cat_writer *w)
{
	if (!w)
		return;
	iset_release(&w->pack_set);
	iset_release(&w->chunk_set);
	iset_release(&w->path_set);
	free(w->packs);
	free(w->chunks);
	free(w->ebuf);
	free(w->recs);
	free(w);
}

int cat_writer_add_pack(struct cat_writer *w, const uint8_t name[32], uint64_t size,
			uint32_t *ret_index)
{
	struct pack_probe pp = {.packs = w->packs, .name = name};
	struct islot *sl;
	uint32_t h;
	int r;

	r = iset_reserve(&w->pack_set, w->n_packs + 1);
	if (r < 0)
		return r;
	h = iset_hash(&w->pack_set, name, 32);
	sl = iset_probe(&w->pack_set, h, pack_eq, &pp);
	if (sl->idx1) {
		*ret_index = sl->idx1 - 1;
		return 0;
	}
	if (writer_body_len(w) + PACK_REC > CAT_MAX_BODY)
		return -E2BIG;
	r = grow((void **)&w->packs, &w->cap_packs, w->n_packs + 1, sizeof(*w->packs));
	if (r < 0)
		return r;
	memcpy(w->packs[w->n_packs].name, name, 32);
	w->packs[w->n_packs].size = size;
	iset_fill(&w->pack_set, sl, h, (uint32_t)w->n_packs);
	*ret_index = (uint32_t)w->n_packs++;
	return 0;
}

int cat_writer_add_chunk(struct cat_writer *w, const struct cat_chunk *c, uint32_t *ret_index)
{
	struct chunk_probe cp = {.chunks = w->chunks, .c = c};
	struct islot *sl;
	uint32_t h;
	int r;

	if (w->h.kind == CAT_CONDEMNED || !chunk_valid(c, w->packs, w->n_packs))
		return -EINVAL;
	r = iset_reserve(&w->chunk_set, w->n_chunks + 1);
	if (r < 0)
		return r;
	h = chunk_hash(&w->chunk_set, c);
	sl = iset_probe(&w->chunk_set, h, chunk_eq, &cp);
	if (sl->idx1) {
		if (w->chunks[sl->idx1 - 1].raw_len != c->raw_len)
			return -EINVAL;
		*ret_index = sl->idx1 - 1;
		return 0;
	}
	if (writer_body_len(w) + CHUNK_REC > CAT_MAX_BODY)
		return -E2BIG;
	r = grow((void **)&w->chunks, &w->cap_chunks, w->n_chunks + 1, sizeof(*w->chunks));
	if (r < 0)
		return r;
	w->chunks[w->n_chunks] = *c;
	iset_fill(&w->chunk_set, sl, h, (uint32_t)w->n_chunks);
	*ret_index = (uint32_t)w->n_chunks++;
	return 0;
}

/* The bytes entry e takes in the body, or 0 when it breaks a rule for kind. */
static uint64_t entry_check(const struct cat_writer *w, const struct cat_entry *e)
{
	size_t plen, tlen;
	uint64_t sum = 0;

	if (!e || !e->path || !type_valid(w->h.kind, e->type) || !mode_valid(e->type, e->mode) ||
	    e->stamp < 0)
		return 0;
	plen = strnlen(e->path, CAT_PATH_MAX + 1);
	if (!path_bytes_valid((const uint8_t *)e->path, plen))
		return 0;
	if (e->type != CAT_E_SYMLINK && e->target)
		return 0;
	if (e->type != CAT_E_FILE && e->n_ext)
		return 0;

	switch (e->type) {
	case CAT_E_SYMLINK:
		if (!e->target)
			return 0;
		tlen = strnlen(e->target, CAT_PATH_MAX + 1);
		if (!target_bytes_valid((const uint8_t *)e->target, tlen) || e->size != tlen)
			return 0;
		return ENTRY_FIXED + plen + 2 + tlen;
	case CAT_E_FILE:
		if (e->n_ext && !e->ext)
			return 0;
		for (uint32_t i = 0; i < e->n_ext; i++) {
			if (!extent_valid(e->ext[i].len, e->ext[i].chunk, w->chunks, w->n_chunks))
				return 0;
			sum += e->ext[i].len;
		}
		if (sum != e->size)
			return 0;
		return ENTRY_FIXED + plen + 4 + (uint64_t)e->n_ext * EXT_REC;
	default:
		if (e->size != 0)
			return 0;
		return ENTRY_FIXED + plen;
	}
}

struct path_probe {
	const struct cat_writer *w;
	const uint8_t *path;
	uint16_t plen;
};

static bool path_eq(const void *ctx, uint32_t idx)
{
	const struct path_probe *p = ctx;
	const struct wrec *rec = &p->w->recs[idx];

	return rec->plen == p->plen && memcmp(p->w->ebuf + rec->off + 3, p->path, p->plen) == 0;
}

int cat_writer_add_entry(struct cat_writer *w, const struct cat_entry *e)
{
	struct path_probe pp = {.w = w};
	uint64_t len = entry_check(w, e);
	struct islot *sl;
	uint8_t *p;
	uint32_t h;
	int r;

	if (len == 0)
		return -EINVAL;
	pp.path = (const uint8_t *)e->path;
	pp.plen = (uint16_t)strlen(e->path);
	r = iset_reserve(&w->path_set, w->n_entries + 1);
	if (r < 0)
		return r;
	h = iset_hash(&w->path_set, pp.path, pp.plen);
	sl = iset_probe(&w->path_set, h, path_eq, &pp);
	if (sl->idx1)
		return -EEXIST;
	if (w->n_entries >= CAT_MAX_ENTRIES || w->n_ext + e->n_ext > CAT_MAX_EXTENTS ||
	    writer_body_len(w) + len > CAT_MAX_BODY)
		return -E2BIG;
	r = grow((void **)&w->ebuf, &w->ecap, w->elen + (size_t)len, 1);
	if (r < 0)
		return r;
	r = grow((void **)&w->recs, &w->cap_recs, w->n_entries + 1, sizeof(*w->recs));
	if (r < 0)
		return r;

	p = w->ebuf + w->elen;
	p[0] = e->type;
	put_le16(p + 1, pp.plen);
	memcpy(p + 3, e->path, pp.plen);
	p += 3 + pp.plen;
	put_le32(p, e->mode);
	put_le32(p + 4, e->uid);
	put_le32(p + 8, e->gid);
	put_le64(p + 12, (uint64_t)e->mtime);
	put_le64(p + 20, (uint64_t)e->stamp);
	put_le64(p + 28, e->size);
	p += 36;
	if (e->type == CAT_E_SYMLINK) {
		put_le16(p, (uint16_t)e->size);
		memcpy(p + 2, e->target, (size_t)e->size);
	} else if (e->type == CAT_E_FILE) {
		put_le32(p, e->n_ext);
		p += 4;
		for (uint32_t i = 0; i < e->n_ext; i++) {
			put_le32(p + EXT_REC * i, e->ext[i].len);
			put_le32(p + EXT_REC * i + 4, e->ext[i].chunk);
		}
	}

	w->recs[w->n_entries] =
		(struct wrec){.off = w->elen, .len = (uint32_t)len, .plen = pp.plen};
	iset_fill(&w->path_set, sl, h, (uint32_t)w->n_entries);
	w->n_entries++;
	w->n_ext += e->n_ext;
	w->elen += (size_t)len;
	return 0;
}

static int wrec_cmp(const void *a, const void *b, void *arg)
{
	const struct wrec *x = a, *y = b;
	const uint8_t *ebuf = arg;

	return path_cmp(ebuf + x->off + 3, x->plen, ebuf + y->off + 3, y->plen);
}

int cat_writer_finish(struct cat_writer *w, void **ret_data, size_t *ret_len, uint8_t ret_sha[32])
{
	uint64_t body_len = writer_body_len(w);
	uint8_t *body, *out, *p, *shrunk;
	size_t bound, zn, total;
	chunk_digest d;
	int r = -ENOMEM;

	w->h.n_packs = (uint32_t)w->n_packs;
	w->h.n_chunks = (uint32_t)w->n_chunks;
	w->h.n_entries = (uint32_t)w->n_entries;
	w->h.body_len = body_len;

	body = malloc(body_len ? (size_t)body_len : 1);
	if (!body)
		goto out_free_writer;
	p = body;
	for (size_t i = 0; i < w->n_packs; i++, p += PACK_REC) {
		memcpy(p, w->packs[i].name, 32);
		put_le64(p + 32, w->packs[i].size);
	}
	for (size_t i = 0; i < w->n_chunks; i++, p += CHUNK_REC) {
		const struct cat_chunk *c = &w->chunks[i];

		memcpy(p, c->key.b, 16);
		memcpy(p + 16, c->digest.b, 32);
		put_le32(p + 48, c->raw_len);
		put_le32(p + 52, c->pack);
		put_le64(p + 56, c->off);
		put_le32(p + 64, c->stored_len);
		put_le32(p + 68, c->flags);
	}
	if (w->n_entries)
		qsort_r(w->recs, w->n_entries, sizeof(*w->recs), wrec_cmp, w->ebuf);
	for (size_t i = 0; i < w->n_entries; i++) {
		memcpy(p, w->ebuf + w->recs[i].off, w->recs[i].len);
		p += w->recs[i].len;
	}

	bound = ZSTD_compressBound((size_t)body_len);
	out = malloc(HDR_SIZE + bound + TRAILER_SIZE);
	if (!out)
		goto out_free_body;
	zn = ZSTD_compress(out + HDR_SIZE, bound, body, (size_t)body_len, ZSTD_LEVEL);
	if (ZSTD_isError(zn)) {
		free(out);
		goto out_free_body;
	}
	hdr_encode(&w->h, out);
	hash_digest(out, HDR_SIZE + zn, &d);
	memcpy(out + HDR_SIZE + zn, d.b, TRAILER_SIZE);
	total = HDR_SIZE + zn + TRAILER_SIZE;
	hash_digest(out, total, &d);
	shrunk = realloc(out, total);
	if (shrunk)
		out = shrunk;

	*ret_data = out;
	*ret_len = total;
	memcpy(ret_sha, d.b, 32);
	r = 0;
out_free_body:
	free(body);
out_free_writer:
	cat_writer_free(w);
	return r;
}

/* Signatures and last-writer-wins. */

void cat_sig_begin(struct cat_sig *s, uint8_t type, uint32_t mode, uint32_t uid, uint32_t gid,
		   int64_t mtime, uint64_t size, const char *target)
{
	uint8_t buf[32];
	size_t n = 1, tlen;

	XXH3_128bits_reset(&s->st);
	s->type = type;
	buf[0] = type;
	switch (type) {
	case CAT_E_DIR:
	case CAT_E_FILE:
	case CAT_E_SYMLINK:
		put_le32(buf + 1, mode);
		put_le32(buf + 5, uid);
		put_le32(buf + 9, gid);
		n = 13;
		if (type == CAT_E_DIR)
			break;
		put_le64(buf + 13, (uint64_t)mtime);
		n = 21;
		if (type == CAT_E_FILE) {
			put_le64(buf + 21, size);
			n = 29;
			break;
		}
		tlen = target ? strnlen(target, UINT16_MAX) : 0;
		put_le16(buf + 21, (uint16_t)tlen);
		XXH3_128bits_update(&s->st, buf, 23);
		if (tlen)
			XXH3_128bits_update(&s->st, target, tlen);
		return;
	default:
		break;
	}
	XXH3_128bits_update(&s->st, buf, n);
}

void cat_sig_extent(struct cat_sig *s, uint32_t len, const chunk_key *key,
		    const chunk_digest *digest)
{
	uint8_t buf[53];

	buf[0] = key ? 1 : 0;
	put_le32(buf + 1, len);
	if (!key) {
		XXH3_128bits_update(&s->st, buf, 5);
		return;
	}
	memcpy(buf + 5, key->b, 16);
	if (digest)
		memcpy(buf + 21, digest->b, 32);
	else
		memset(buf + 21, 0, 32);
	XXH3_128bits_update(&s->st, buf, sizeof(buf));
}

void cat_sig_end(struct cat_sig *s, uint8_t ret_sig[16])
{
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&s->st));
	memcpy(ret_sig, c.digest, 16);
}

void cat_entry_sig(const struct cat_entry *e, const struct cat_chunk *chunks, uint8_t ret_sig[16])
{
	struct cat_sig s;

	cat_sig_begin(&s, e->type, e->mode, e->uid, e->gid, e->mtime, e->size, e->target);
	if (e->type == CAT_E_FILE) {
		for (uint32_t i = 0; i < e->n_ext; i++) {
			const struct cat_extent *x = &e->ext[i];

			if (x->chunk == CAT_HOLE)
				cat_sig_extent(&s, x->len, NULL, NULL);
			else
				cat_sig_extent(&s, x->len, &chunks[x->chunk].key,
					       &chunks[x->chunk].digest);
		}
	}
	cat_sig_end(&s, ret_sig);
}

static int type_rank(uint8_t type)
{
	if (type == CAT_E_GONE)
		return 0;
	return type == CAT_E_DIR ? 2 : 1;
}

int cat_lww_cmp(const struct cat_lww *a, const struct cat_lww *b)
{
	int r;

	if (a->stamp != b->stamp)
		return a->stamp > b->stamp ? 1 : -1;
	r = type_rank(a->type) - type_rank(b->type);
	if (r != 0)
		return r > 0 ? 1 : -1;
	r = memcmp(a->sig, b->sig, 16);
	return (r > 0) - (r < 0);
}

int cat_entry_cmp_lww(const struct cat_entry *a, const struct cat_chunk *a_chunks,
		      const struct cat_entry *b, const struct cat_chunk *b_chunks)
{
	struct cat_lww x = {.stamp = a->stamp, .type = a->type};
	struct cat_lww y = {.stamp = b->stamp, .type = b->type};

	/* The signatures only matter on a tie, and cost a pass over every extent. */
	if (x.stamp == y.stamp && type_rank(x.type) == type_rank(y.type)) {
		cat_entry_sig(a, a_chunks, x.sig);
		cat_entry_sig(b, b_chunks, y.sig);
	}
	return cat_lww_cmp(&x, &y);
}
