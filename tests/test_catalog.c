/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for catalogs: round trips of every kind and entry type, the writer's
 * deduplication, every validation rule on both sides (the writer says -EINVAL, the decoder
 * -EBADMSG), truncation at every offset, random damage, content signatures and the
 * last-writer-wins order.
 *
 * Malformed objects for the decoder are built by a small encoder of the test's own, written from
 * docs/format.md rather than from catalog.c: a baseline object that must decode, and one
 * variant per rule that differs from it in that rule alone. It re-seals what it builds (the
 * trailer SHA-256), so each variant reaches the check it is aimed at.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <criterion/criterion.h>
#include <zstd.h>

#include "catalog.h"
#include "pack.h"
#include "util.h"

#define HDR 72u
#define TRAILER 32u
#define MIN_ 16384u
#define AVG_ 65536u
#define MAX_ 262144u
#define PSIZE (1u << 20)

static const uint8_t host_id[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

/* splitmix64: deterministic test data */
static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A growing byte buffer for the test encoder. */
struct buf {
	uint8_t *p;
	size_t len, cap;
};

static void b_put(struct buf *b, const void *d, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		cr_assert_not_null(b->p);
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void b_le(struct buf *b, uint64_t v, unsigned n)
{
	uint8_t t[8];

	for (unsigned i = 0; i < n; i++)
		t[i] = (uint8_t)(v >> (8 * i));
	b_put(b, t, n);
}

static void seal(uint8_t *obj, size_t len)
{
	chunk_digest d;

	hash_digest(obj, len - TRAILER, &d);
	memcpy(obj + len - TRAILER, d.b, TRAILER);
}

/* Header fields of a test object. body_len 0 means "the body's length". */
struct hdrf {
	uint32_t version, kind, cmin, cavg, cmax, n_packs, n_chunks, n_entries;
	uint64_t body_len;
};

static const struct hdrf hdr_default = {1, CAT_DELTA, MIN_, AVG_, MAX_, 0, 0, 0, 0};

/* header + frame + trailer, sealed. frame is the compressed body unless given. */
static struct buf obj_make(const struct hdrf *h, const struct buf *body, const struct buf *frame)
{
	struct buf o = {0};
	uint8_t zero[TRAILER] = {0};

	b_put(&o, "PKGCCAT1", 8);
	b_le(&o, h->version, 4);
	b_le(&o, h->kind, 4);
	b_le(&o, (uint64_t)1700000000000000000ll, 8);
	b_put(&o, host_id, 16);
	b_le(&o, h->cmin, 4);
	b_le(&o, h->cavg, 4);
	b_le(&o, h->cmax, 4);
	b_le(&o, h->n_packs, 4);
	b_le(&o, h->n_chunks, 4);
	b_le(&o, h->n_entries, 4);
	b_le(&o, h->body_len ? h->body_len : body->len, 8);
	if (frame) {
		b_put(&o, frame->p, frame->len);
	} else {
		size_t bound = ZSTD_compressBound(body->len);
		uint8_t *z = malloc(bound);
		size_t zn = ZSTD_compress(z, bound, body->p, body->len, 1);

		cr_assert(!ZSTD_isError(zn));
		b_put(&o, z, zn);
		free(z);
	}
	b_put(&o, zero, TRAILER);
	seal(o.p, o.len);
	return o;
}

static void t_pack(struct buf *b, uint8_t name, uint64_t size)
{
	uint8_t n[32];

	memset(n, name, sizeof(n));
	b_put(b, n, 32);
	b_le(b, size, 8);
}

struct tchunk {
	uint8_t id;
	uint32_t raw_len, pack;
	uint64_t off;
	uint32_t stored_len, flags;
};

static void t_chunk(struct buf *b, const struct tchunk *c)
{
	uint8_t kd[48];

	memset(kd, c->id, 16);
	memset(kd + 16, c->id ^ 0x80, 32);
	b_put(b, kd, 48);
	b_le(b, c->raw_len, 4);
	b_le(b, c->pack, 4);
	b_le(b, c->off, 8);
	b_le(b, c->stored_len, 4);
	b_le(b, c->flags, 4);
}

/* The stamp every entry of build() gets. */
static uint64_t t_stamp = 7;

static void t_entry(struct buf *b, uint8_t type, const char *path, size_t plen, uint32_t mode,
		    uint64_t size)
{
	b_le(b, type, 1);
	b_le(b, plen, 2);
	b_put(b, path, plen);
	b_le(b, mode, 4);
	b_le(b, 1000, 4);
	b_le(b, 1001, 4);
	b_le(b, 5, 8);
	b_le(b, t_stamp, 8);
	b_le(b, size, 8);
}

/* One variant per rule; D_NONE is the valid baseline. */
enum defect {
	D_NONE,
	/* header */
	D_VERSION0,
	D_KIND0,
	D_KIND6,
	D_PARAMS,
	D_PACKS_MORE,
	D_ENTRIES_MORE,
	D_ENTRIES_LESS,
	D_ENTRIES_HUGE,
	D_BODYLEN,
	D_BODY_HUGE,
	D_CONDEMNED,
	D_TRACE_FILES,
	/* packs and chunks */
	D_CHUNK_PACK,
	D_RAW0,
	D_RAW_BIG,
	D_FLAGS,
	D_STORED_RAW,
	D_STORED_ZERO,
	D_STORED_BIG,
	D_OFF,
	D_OFF_OVERFLOW,
	D_DUP_PACK,
	D_DUP_CHUNK,
	/* entries */
	D_TYPE0,
	D_TYPE6,
	D_READ_IN_DELTA,
	D_PATH_EMPTY,
	D_PATH_LEADING,
	D_PATH_TRAILING,
	D_PATH_DOTDOT,
	D_PATH_DOT,
	D_PATH_EMPTYCOMP,
	D_PATH_NUL,
	D_PATH_LONGCOMP,
	D_PATH_LONG,
	D_UNSORTED,
	D_DUP_PATH,
	D_MODE_TYPE,
	D_MODE_EXTRA,
	D_GONE_MODE,
	D_DIR_SIZE,
	D_GONE_SIZE,
	D_FILE_SIZE,
	D_EXT_CHUNK,
	D_EXT_LEN,
	D_EXT_ZERO,
	D_HOLE_BIG,
	D_EXT_COUNT,
	D_LINK_EMPTY,
	D_LINK_NUL,
	D_LINK_SIZE,
	D_LINK_LONG,
	D_TRAILING,
	D_SHORT,
	/* the zstd frame */
	D_TWO_FRAMES,
	D_NO_FCS,
	D_SKIPPABLE,
	D_FRAME_TRAILING,
	D_NOT_ZSTD,
	D_FCS_MISMATCH,
	D_COUNT
};

static struct buf build(enum defect d)
{
	struct hdrf h = hdr_default;
	struct buf b = {0}, frame = {0}, o;
	struct tchunk c0 = {1, 1000, 0, 64, 1000, 0}, c1 = {2, 5000, 1, 64, 300, PACK_F_ZSTD};
	char longp[5000];
	const char *gone = "zz";
	size_t gone_len = 2;
	uint32_t n_ext = 3;
	uint64_t fsize = 1000 + 4096 + 5000;

	h.n_packs = 2;
	h.n_chunks = 2;
	h.n_entries = 4;

	t_pack(&b, 0x11, PSIZE);
	t_pack(&b, d == D_DUP_PACK ? 0x11 : 0x22, PSIZE);
	switch (d) {
	case D_CHUNK_PACK:
		c1.pack = 2;
		break;
	case D_RAW0:
		c0.raw_len = 0;
		c0.stored_len = 0;
		break;
	case D_RAW_BIG:
		c0.raw_len = c0.stored_len = PACK_MAX_CHUNK + 1;
		break;
	case D_FLAGS:
		c1.flags = 2;
		break;
	case D_STORED_RAW:
		c0.stored_len = 999;
		break;
	case D_STORED_ZERO:
		c1.stored_len = 0;
		break;
	case D_STORED_BIG:
		c1.stored_len = 5001;
		break;
	case D_OFF:
		c0.off = PSIZE - 72 - 999;
		break;
	case D_OFF_OVERFLOW:
		c0.off = UINT64_MAX - 10;
		break;
	case D_DUP_CHUNK:
		c1.id = 1;
		c1.raw_len = 1000;
		c1.stored_len = 1000;
		c1.flags = 0;
		break;
	default:
		break;
	}
	t_chunk(&b, &c0);
	t_chunk(&b, &c1);
	if (d == D_DUP_CHUNK)
		fsize = 1000 + 4096 + 1000;

	memset(longp, 'x', sizeof(longp));
	switch (d) {
	case D_PATH_EMPTY:
		gone = "";
		break;
	case D_PATH_LEADING:
		gone = "/zz";
		break;
	case D_PATH_TRAILING:
		gone = "zz/";
		break;
	case D_PATH_DOTDOT:
		gone = "zz/..";
		break;
	case D_PATH_DOT:
		gone = "zz/./x";
		break;
	case D_PATH_EMPTYCOMP:
		gone = "zz//x";
		break;
	case D_PATH_NUL:
		gone = "zz\0x";
		gone_len = 4;
		break;
	case D_PATH_LONGCOMP:
		memcpy(longp, "zz/", 3);
		gone = longp;
		gone_len = 3 + 256;
		break;
	case D_PATH_LONG:
		for (size_t i = 0; i < 4096; i += 4)
			memcpy(longp + i, "zz/y", 4);
		gone = longp;
		gone_len = 4096;
		break;
	case D_DUP_PATH:
		gone = "a/l";
		break;
	default:
		break;
	}
	if (gone_len == 2)
		gone_len = strlen(gone);

	/* "a" dir, "a/f" file, "a/l" symlink, "zz" tombstone: in path order */
	t_entry(&b,
		d == D_TYPE0   ? 0
		: d == D_TYPE6 ? 6
			       : CAT_E_DIR,
		"a", 1, d == D_MODE_TYPE ? S_IFREG | 0755 : S_IFDIR | 0755,
		d == D_DIR_SIZE ? 1 : 0);
	if (d == D_UNSORTED) {
		t_entry(&b, CAT_E_SYMLINK, "a/l", 3, S_IFLNK | 0777, 1);
		b_le(&b, 1, 2);
		b_put(&b, "f", 1);
	}
	if (d == D_EXT_COUNT)
		n_ext = 0x20000000;
	t_entry(&b, CAT_E_FILE, "a/f", 3,
		d == D_MODE_EXTRA ? S_IFREG | 0644 | 010000 : S_IFREG | 0644,
		d == D_FILE_SIZE ? fsize + 1 : fsize);
	b_le(&b, n_ext, 4);
	b_le(&b, d == D_DUP_CHUNK ? 1000 : d == D_EXT_LEN ? 999 : 1000, 4);
	b_le(&b, 0, 4);
	b_le(&b, d == D_EXT_ZERO ? 0 : d == D_HOLE_BIG ? PACK_MAX_CHUNK + 1 : 4096, 4);
	b_le(&b, CAT_HOLE, 4);
	b_le(&b, d == D_DUP_CHUNK ? 1000 : 5000, 4);
	b_le(&b, d == D_EXT_CHUNK ? 2 : 1, 4);
	if (d != D_UNSORTED) {
		uint64_t tl = 1;
		const char *t = "f";

		if (d == D_LINK_EMPTY)
			tl = 0;
		if (d == D_LINK_NUL) {
			t = "f\0g";
			tl = 3;
		}
		if (d == D_LINK_LONG) {
			t = longp;
			tl = 4096;
		}
		t_entry(&b, CAT_E_SYMLINK, "a/l", 3, S_IFLNK | 0777, d == D_LINK_SIZE ? 2 : tl);
		b_le(&b, tl, 2);
		b_put(&b, t, tl);
	}
	t_entry(&b, d == D_READ_IN_DELTA ? CAT_E_READ : CAT_E_GONE, gone, gone_len,
		d == D_GONE_MODE ? S_IFREG : 0, d == D_GONE_SIZE ? 1 : 0);
	if (d == D_TRAILING)
		b_le(&b, 0, 1);
	if (d == D_SHORT)
		b.len--;

	switch (d) {
	case D_VERSION0:
		h.version = 0;
		break;
	case D_KIND0:
		h.kind = 0;
		break;
	case D_KIND6:
		h.kind = 6;
		break;
	case D_PARAMS:
		h.cavg = 65535;
		break;
	case D_PACKS_MORE:
		h.n_packs = 3;
		break;
	case D_ENTRIES_MORE:
		h.n_entries = 5;
		break;
	case D_ENTRIES_LESS:
		h.n_entries = 3;
		break;
	case D_ENTRIES_HUGE:
		h.n_entries = UINT32_MAX;
		break;
	case D_BODYLEN:
		h.body_len = b.len + 1;
		break;
	case D_BODY_HUGE:
		h.body_len = CAT_MAX_BODY + 1;
		break;
	case D_CONDEMNED:
		h.kind = CAT_CONDEMNED;
		break;
	case D_TRACE_FILES:
		h.kind = CAT_TRACE;
		break;
	default:
		break;
	}

	if (d >= D_TWO_FRAMES) {
		size_t bound = ZSTD_compressBound(b.len);
		uint8_t *z = malloc(bound);
		ZSTD_CCtx *cc = ZSTD_createCCtx();
		size_t zn;

		if (d == D_NO_FCS)
			ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
		if (d == D_SKIPPABLE) {
			b_le(&frame, ZSTD_MAGIC_SKIPPABLE_START, 4);
			b_le(&frame, 4, 4);
			b_le(&frame, 0, 4);
		}
		if (d == D_TWO_FRAMES) {
			/* the body split over two frames: each declares only its half */
			zn = ZSTD_compress2(cc, z, bound, b.p, b.len / 2);
			b_put(&frame, z, zn);
			zn = ZSTD_compress2(cc, z, bound, b.p + b.len / 2, b.len - b.len / 2);
		} else if (d == D_FCS_MISMATCH) {
			/* a frame of another length, the header declaring the right one */
			zn = ZSTD_compress2(cc, z, bound, b.p, b.len - 1);
		} else {
			zn = ZSTD_compress2(cc, z, bound, b.p, b.len);
		}
		cr_assert(!ZSTD_isError(zn));
		b_put(&frame, z, zn);
		if (d == D_FRAME_TRAILING)
			b_le(&frame, 0, 1);
		if (d == D_NOT_ZSTD)
			frame.p[0] ^= 1;
		ZSTD_freeCCtx(cc);
		free(z);
	}
	o = obj_make(&h, &b, d >= D_TWO_FRAMES ? &frame : NULL);
	free(b.p);
	free(frame.p);
	return o;
}

Test(catalog, decoder_baseline)
{
	struct buf o = build(D_NONE);
	struct cat *c = NULL;

	cr_assert_eq(cat_decode(o.p, o.len, &c), 0);
	cr_assert_eq(c->n_packs, 2);
	cr_assert_eq(c->n_chunks, 2);
	cr_assert_eq(c->n_entries, 4);
	cr_assert_str_eq(c->entries[1].path, "a/f");
	cr_assert_eq(c->entries[1].n_ext, 3);
	cr_assert_eq(c->entries[1].ext[1].chunk, CAT_HOLE);
	cr_assert_str_eq(c->entries[2].target, "f");
	cat_free(c);
	free(o.p);
}

Test(catalog, decoder_rejects_every_rule)
{
	for (int d = D_NONE + 1; d < D_COUNT; d++) {
		struct buf o = build((enum defect)d);
		struct cat *c = (struct cat *)0x1;

		cr_expect_eq(cat_decode(o.p, o.len, &c), -EBADMSG, "defect %d", d);
		cr_expect_eq(c, (struct cat *)0x1, "defect %d wrote *ret", d);
		free(o.p);
	}
}

/*
 * A stamp is ns since the epoch, read as int64: one past INT64_MAX (negative) is no time a clock
 * wrote and fails the decode. How far ahead of the clock a stamp may be is the merge's rule.
 */
Test(catalog, decoder_refuses_negative_stamps)
{
	const uint64_t stamps[] = {0, (uint64_t)INT64_MAX, (uint64_t)INT64_MAX + 1, UINT64_MAX};
	struct cat *c;

	for (size_t i = 0; i < sizeof(stamps) / sizeof(stamps[0]); i++) {
		struct buf o;

		t_stamp = stamps[i];
		o = build(D_NONE);
		cr_expect_eq(cat_decode(o.p, o.len, &c), stamps[i] <= INT64_MAX ? 0 : -EBADMSG,
			     "stamp %llx", (unsigned long long)stamps[i]);
		if (stamps[i] <= INT64_MAX)
			cat_free(c);
		free(o.p);
	}
	t_stamp = 7;
}

Test(catalog, decoder_version_and_trailer)
{
	struct buf o = build(D_NONE);
	struct cat *c = NULL;

	o.p[o.len - 1] ^= 1;
	cr_assert_eq(cat_decode(o.p, o.len, &c), -EBADMSG);
	o.p[o.len - 1] ^= 1;
	o.p[8] = 2; /* a newer version: refused as such, whatever the rest says */
	cr_assert_eq(cat_decode(o.p, o.len, &c), -EPROTONOSUPPORT);
	cr_assert_eq(cat_decode(o.p, 12, &c), -EPROTONOSUPPORT);
	o.p[8] = 1;
	o.p[0] = 'X';
	seal(o.p, o.len);
	cr_assert_eq(cat_decode(o.p, o.len, &c), -EBADMSG);
	cr_assert_eq(cat_decode(o.p, 0, &c), -EBADMSG);
	cr_assert_null(c);
	free(o.p);
}

/* A writer holding two packs and three chunks (raw lens 1000, 2000, 3000). */
static struct cat_writer *writer_with_tables(uint32_t kind, const uint32_t order[3])
{
	struct cat_writer *w = NULL;
	uint8_t name[32];
	uint32_t idx;

	cr_assert_eq(cat_writer_new(kind, host_id, 42, MIN_, AVG_, MAX_, &w), 0);
	memset(name, 0xaa, 32);
	cr_assert_eq(cat_writer_add_pack(w, name, PSIZE, &idx), 0);
	memset(name, 0xbb, 32);
	cr_assert_eq(cat_writer_add_pack(w, name, PSIZE, &idx), 0);
	if (kind == CAT_CONDEMNED)
		return w;
	for (int k = 0; k < 3; k++) {
		uint32_t i = order ? order[k] : (uint32_t)k;
		struct cat_chunk ch = {.raw_len = 1000 * (i + 1),
				       .pack = i % 2,
				       .off = 64 + i * 8192,
				       .stored_len = 1000 * (i + 1)};

		memset(ch.key.b, (int)(i + 1), 16);
		memset(ch.digest.b, (int)(i + 101), 32);
		cr_assert_eq(cat_writer_add_chunk(w, &ch, &idx), 0);
	}
	return w;
}

/* The index of the chunk with raw_len 1000 * (i + 1) in a decoded catalog. */
static uint32_t chunk_of(const struct cat *c, uint32_t i)
{
	for (uint32_t k = 0; k < c->n_chunks; k++)
		if (c->chunks[k].raw_len == 1000 * (i + 1))
			return k;
	cr_assert_fail("chunk %u missing", i);
	return 0;
}

static struct cat *finish_decode(struct cat_writer *w)
{
	void *data;
	size_t len;
	uint8_t sha[32];
	chunk_digest d;
	struct cat *c = NULL;

	cr_assert_eq(cat_writer_finish(w, &data, &len, sha), 0);
	hash_digest(data, len, &d);
	cr_assert_eq(memcmp(d.b, sha, 32), 0);
	cr_assert_eq(cat_decode(data, len, &c), 0);
	free(data);
	return c;
}

Test(catalog, roundtrip_entry_types)
{
	struct cat_writer *w = writer_with_tables(CAT_DELTA, NULL);
	struct cat_extent ext[3] = {{2000, 1}, {777, CAT_HOLE}, {1000, 0}};
	struct cat_entry es[] = {
		{.path = "lib/x.so",
		 .type = CAT_E_FILE,
		 .mode = S_IFREG | 0755,
		 .uid = 1,
		 .gid = 2,
		 .mtime = -5,
		 .stamp = 9,
		 .size = 3777,
		 .n_ext = 3,
		 .ext = ext},
		{.path = "lib",
		 .type = CAT_E_DIR,
		 .mode = S_IFDIR | 0700,
		 .uid = 3,
		 .gid = 4,
		 .mtime = 6,
		 .stamp = INT64_MAX},
		{.path = "lib/link",
		 .type = CAT_E_SYMLINK,
		 .mode = S_IFLNK | 0777,
		 .mtime = 7,
		 .stamp = 0,
		 .size = 8,
		 .target = "x.so/../"},
		{.path = "old", .type = CAT_E_GONE, .uid = 5, .stamp = 11},
		{.path = "empty", .type = CAT_E_FILE, .mode = S_IFREG, .stamp = 12},
	};
	static const char *const sorted[] = {"empty", "lib", "lib/link", "lib/x.so", "old"};
	struct cat *c;

	for (size_t i = 0; i < ARRAY_SIZE(es); i++)
		cr_assert_eq(cat_writer_add_entry(w, &es[i]), 0, "entry %zu", i);
	c = finish_decode(w);
	cr_assert_eq(c->kind, CAT_DELTA);
	cr_assert_eq(c->created, 42);
	cr_assert_eq(memcmp(c->host, host_id, 16), 0);
	cr_assert_eq(c->chunk_min, MIN_);
	cr_assert_eq(c->chunk_avg, AVG_);
	cr_assert_eq(c->chunk_max, MAX_);
	cr_assert_eq(c->n_packs, 2);
	cr_assert_eq(c->n_chunks, 3);
	cr_assert_eq(c->chunks[2].off, 64 + 2 * 8192);
	cr_assert_eq(c->chunks[1].pack, 1);
	cr_assert_eq(c->n_entries, ARRAY_SIZE(es));
	for (size_t i = 0; i < c->n_entries; i++) {
		const struct cat_entry *e = &c->entries[i], *o = NULL;

		cr_assert_str_eq(e->path, sorted[i]);
		for (size_t k = 0; k < ARRAY_SIZE(es); k++)
			if (strcmp(es[k].path, e->path) == 0)
				o = &es[k];
		cr_assert_eq(e->type, o->type);
		cr_assert_eq(e->mode, o->mode);
		cr_assert_eq(e->uid, o->uid);
		cr_assert_eq(e->gid, o->gid);
		cr_assert_eq(e->mtime, o->mtime);
		cr_assert_eq(e->stamp, o->stamp);
		cr_assert_eq(e->size, o->size);
		cr_assert_eq(e->n_ext, o->n_ext);
		if (o->target)
			cr_assert_str_eq(e->target, o->target);
		else
			cr_assert_null(e->target);
		for (uint32_t k = 0; k < e->n_ext; k++) {
			cr_assert_eq(e->ext[k].len, o->ext[k].len);
			cr_assert_eq(e->ext[k].chunk, o->ext[k].chunk);
		}
		if (e->n_ext == 0)
			cr_assert_null(e->ext);
	}
	cat_free(c);
}

Test(catalog, roundtrip_kinds)
{
	static const uint32_t kinds[] = {CAT_DELTA, CAT_SNAPSHOT, CAT_TRACE, CAT_CONDEMNED,
					 CAT_BUNDLE};

	for (size_t k = 0; k < ARRAY_SIZE(kinds); k++) {
		struct cat_writer *w = writer_with_tables(kinds[k], NULL);
		struct cat_extent ext = {1000, 0};
		struct cat_entry f = {.path = "f",
				      .type = CAT_E_FILE,
				      .mode = S_IFREG | 0644,
				      .size = 1000,
				      .n_ext = 1,
				      .ext = &ext};
		struct cat_entry r = {.path = "a/b", .type = CAT_E_READ, .stamp = 3};
		struct cat *c;

		if (kinds[k] == CAT_TRACE) {
			cr_assert_eq(cat_writer_add_entry(w, &r), 0);
			cr_assert_eq(cat_writer_add_entry(w, &f), -EINVAL);
		} else if (kinds[k] == CAT_CONDEMNED) {
			cr_assert_eq(cat_writer_add_entry(w, &r), -EINVAL);
			cr_assert_eq(cat_writer_add_entry(w, &f), -EINVAL);
		} else {
			cr_assert_eq(cat_writer_add_entry(w, &f), 0);
			cr_assert_eq(cat_writer_add_entry(w, &r), -EINVAL);
		}
		c = finish_decode(w);
		cr_assert_eq(c->kind, kinds[k]);
		cr_assert_eq(c->n_packs, 2);
		cr_assert_eq(c->n_chunks, kinds[k] == CAT_CONDEMNED ? 0 : 3);
		cr_assert_eq(c->n_entries, kinds[k] == CAT_CONDEMNED ? 0 : 1);
		if (kinds[k] == CAT_TRACE) {
			cr_assert_str_eq(c->entries[0].path, "a/b");
			cr_assert_eq(c->entries[0].type, CAT_E_READ);
			cr_assert_eq(c->entries[0].stamp, 3);
		}
		cat_free(c);
	}
}

Test(catalog, roundtrip_empty_and_large)
{
	struct cat_writer *w = NULL;
	struct cat *c;
	uint32_t idx;
	uint8_t name[32] = {0};

	cr_assert_eq(cat_writer_new(CAT_SNAPSHOT, host_id, 0, MIN_, AVG_, MAX_, &w), 0);
	c = finish_decode(w);
	cr_assert_eq(c->n_packs + c->n_chunks + c->n_entries, 0);
	cat_free(c);

	/* enough of everything to make the writer's sets grow many times */
	cr_assert_eq(cat_writer_new(CAT_SNAPSHOT, host_id, 0, MIN_, AVG_, MAX_, &w), 0);
	for (uint32_t i = 0; i < 300; i++) {
		memcpy(name, &i, sizeof(i));
		cr_assert_eq(cat_writer_add_pack(w, name, PSIZE, &idx), 0);
		cr_assert_eq(idx, i);
	}
	for (uint32_t i = 0; i < 20000; i++) {
		struct cat_chunk ch = {.raw_len = 100 + i % 50,
				       .pack = i % 300,
				       .off = 64,
				       .stored_len = 100 + i % 50};
		struct cat_extent ext = {ch.raw_len, 0};
		struct cat_entry e = {.type = CAT_E_FILE,
				      .mode = S_IFREG | 0600,
				      .size = ch.raw_len,
				      .n_ext = 1,
				      .ext = &ext};
		char path[32];

		memcpy(ch.key.b, &i, sizeof(i));
		cr_assert_eq(cat_writer_add_chunk(w, &ch, &ext.chunk), 0);
		cr_assert_eq(ext.chunk, i);
		snprintf(path, sizeof(path), "d%u/f%u", i % 97, i);
		e.path = path;
		cr_assert_eq(cat_writer_add_entry(w, &e), 0);
	}
	c = finish_decode(w);
	cr_assert_eq(c->n_packs, 300);
	cr_assert_eq(c->n_chunks, 20000);
	cr_assert_eq(c->n_entries, 20000);
	for (size_t i = 1; i < c->n_entries; i++)
		cr_assert_lt(strcmp(c->entries[i - 1].path, c->entries[i].path), 0);
	cat_free(c);
}

Test(catalog, writer_dedup)
{
	struct cat_writer *w = writer_with_tables(CAT_DELTA, NULL);
	uint8_t name[32];
	uint32_t idx = 99;
	struct cat_chunk ch = {.raw_len = 2000, .pack = 0, .off = 999, .stored_len = 2000};
	struct cat *c;

	memset(name, 0xbb, 32);
	cr_assert_eq(cat_writer_add_pack(w, name, 12345, &idx), 0);
	cr_assert_eq(idx, 1);
	memset(ch.key.b, 2, 16);
	memset(ch.digest.b, 102, 32);
	cr_assert_eq(cat_writer_add_chunk(w, &ch, &idx), 0);
	cr_assert_eq(idx, 1);
	/* the same key with another digest is another chunk */
	ch.digest.b[31] ^= 1;
	cr_assert_eq(cat_writer_add_chunk(w, &ch, &idx), 0);
	cr_assert_eq(idx, 3);
	/* the same identity with another length is a caller bug */
	ch.raw_len = ch.stored_len = 2001;
	idx = 99;
	cr_assert_eq(cat_writer_add_chunk(w, &ch, &idx), -EINVAL);
	cr_assert_eq(idx, 99);
	c = finish_decode(w);
	cr_assert_eq(c->n_packs, 2);
	cr_assert_eq(c->packs[1].size, PSIZE); /* the first size is kept */
	cr_assert_eq(c->n_chunks, 4);
	cr_assert_eq(c->chunks[1].off, 64 + 8192); /* the first location is kept */
	cr_assert_eq(c->chunks[3].off, 999);
	cat_free(c);
}

Test(catalog, writer_rejects)
{
	struct cat_writer *w = NULL;
	struct cat_extent ext[2] = {{1000, 0}, {10, CAT_HOLE}};
	struct cat_extent bad_ext[][1] = {
		{{999, 0}}, {{0, CAT_HOLE}}, {{PACK_MAX_CHUNK + 1, CAT_HOLE}}, {{1000, 3}}};
	char longcomp[300], longpath[4200];
	struct cat_entry ok = {.path = "p",
			       .type = CAT_E_FILE,
			       .mode = S_IFREG | 0644,
			       .size = 1010,
			       .n_ext = 2,
			       .ext = ext};
	struct cat_entry e;
	uint32_t idx = 77;

	cr_assert_eq(cat_writer_new(0, host_id, 0, MIN_, AVG_, MAX_, &w), -EINVAL);
	cr_assert_eq(cat_writer_new(6, host_id, 0, MIN_, AVG_, MAX_, &w), -EINVAL);
	cr_assert_eq(cat_writer_new(CAT_DELTA, host_id, 0, MIN_, 3000, MAX_, &w), -EINVAL);
	cr_assert_eq(cat_writer_new(CAT_DELTA, host_id, 0, MAX_, AVG_, MIN_, &w), -EINVAL);
	cr_assert_null(w);

	w = writer_with_tables(CAT_DELTA, NULL);
	memset(longcomp, 'x', sizeof(longcomp));
	longcomp[256] = '\0';
	for (size_t i = 0; i < sizeof(longpath); i += 2)
		memcpy(longpath + i, "y/", 2);
	longpath[4096] = '\0';

	{
		const char *bad_paths[] = {"",    "/p",   "p/",     "p//q",   ".",     "..",
					   "p/.", "../p", "p/../q", longcomp, longpath};

		for (size_t i = 0; i < ARRAY_SIZE(bad_paths); i++) {
			e = ok;
			e.path = bad_paths[i];
			cr_expect_eq(cat_writer_add_entry(w, &e), -EINVAL, "path %zu", i);
			cr_expect(!cat_path_valid(bad_paths[i]), "path %zu", i);
		}
	}
#define REJECT(what)                                                                               \
	do {                                                                                       \
		e = ok;                                                                            \
		what;                                                                              \
		cr_expect_eq(cat_writer_add_entry(w, &e), -EINVAL, "%s", #what);                   \
	} while (0)
	REJECT(e.path = NULL);
	REJECT(e.type = 0);
	REJECT(e.type = 6);
	REJECT(e.type = CAT_E_READ; e.mode = 0; e.size = 0; e.n_ext = 0);
	REJECT(e.mode = S_IFDIR | 0644);
	REJECT(e.mode = 0644);
	REJECT(e.mode = S_IFREG | 0100000 | 010000);
	REJECT(e.size = 1011);
	REJECT(e.n_ext = 1);
	REJECT(e.ext = NULL);
	REJECT(e.target = "x");
	REJECT(e.ext = bad_ext[0]; e.n_ext = 1; e.size = 999);
	REJECT(e.ext = bad_ext[1]; e.n_ext = 1; e.size = 0);
	REJECT(e.ext = bad_ext[2]; e.n_ext = 1; e.size = PACK_MAX_CHUNK + 1);
	REJECT(e.ext = bad_ext[3]; e.n_ext = 1; e.size = 1000);
	REJECT(e.type = CAT_E_DIR; e.mode = S_IFDIR | 0755; e.size = 0);
	REJECT(e.type = CAT_E_DIR; e.mode = S_IFDIR | 0755; e.size = 1; e.n_ext = 0);
	REJECT(e.type = CAT_E_GONE; e.mode = 0; e.size = 0);
	REJECT(e.type = CAT_E_GONE; e.mode = S_IFREG; e.size = 0; e.n_ext = 0);
	REJECT(e.type = CAT_E_GONE; e.mode = 0; e.size = 1; e.n_ext = 0);
	REJECT(e.type = CAT_E_SYMLINK; e.mode = S_IFLNK | 0777; e.size = 1; e.n_ext = 0);
	REJECT(e.type = CAT_E_SYMLINK; e.mode = S_IFLNK | 0777; e.size = 0; e.n_ext = 0;
	       e.target = "");
	REJECT(e.type = CAT_E_SYMLINK; e.mode = S_IFLNK | 0777; e.size = 2; e.n_ext = 0;
	       e.target = "x");
	REJECT(e.type = CAT_E_SYMLINK; e.mode = S_IFLNK | 0777; e.size = 4096; e.n_ext = 0;
	       e.target = longpath);
	REJECT(e.type = CAT_E_SYMLINK; e.mode = S_IFREG | 0777; e.size = 1; e.n_ext = 0;
	       e.target = "x");
#undef REJECT

	cr_assert_eq(cat_writer_add_entry(w, &ok), 0);
	e = ok;
	e.type = CAT_E_GONE;
	e.mode = 0;
	e.size = 0;
	e.n_ext = 0;
	cr_assert_eq(cat_writer_add_entry(w, &e), -EEXIST);

	{
		struct cat_chunk good = {.raw_len = 100, .pack = 1, .off = 64, .stored_len = 100};
		struct cat_chunk bad[] = {good, good, good, good, good, good, good, good, good};

		bad[0].pack = 2;
		bad[1].raw_len = bad[1].stored_len = 0;
		bad[2].raw_len = bad[2].stored_len = PACK_MAX_CHUNK + 1;
		bad[3].flags = 2;
		bad[4].stored_len = 99;
		bad[5].flags = PACK_F_ZSTD;
		bad[5].stored_len = 0;
		bad[6].flags = PACK_F_ZSTD;
		bad[6].stored_len = 101;
		bad[7].off = PSIZE - 72 - 99;
		bad[8].off = UINT64_MAX - 50;
		for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
			cr_expect_eq(cat_writer_add_chunk(w, &bad[i], &idx), -EINVAL, "chunk %zu",
				     i);
		good.off = PSIZE - 72 - 100;
		cr_assert_eq(cat_writer_add_chunk(w, &good, &idx), 0);
		cr_assert_eq(idx, 3);
	}
	cat_writer_free(w);

	w = writer_with_tables(CAT_CONDEMNED, NULL);
	{
		struct cat_chunk ch = {.raw_len = 100, .pack = 1, .off = 64, .stored_len = 100};

		cr_assert_eq(cat_writer_add_chunk(w, &ch, &idx), -EINVAL);
	}
	cat_writer_free(w);
	cat_writer_free(NULL);
	cat_free(NULL);
}

Test(catalog, path_valid)
{
	char comp255[300];

	cr_assert(cat_path_valid("a"));
	cr_assert(cat_path_valid("a/b/c"));
	cr_assert(cat_path_valid("..."));
	cr_assert(cat_path_valid(".a/..b/c."));
	cr_assert(cat_path_valid("a b/\xff\xfe"));
	memset(comp255, 'z', 255);
	comp255[255] = '\0';
	cr_assert(cat_path_valid(comp255));
	cr_assert(!cat_path_valid(NULL));
	cr_assert(!cat_path_valid("a/"));
	cr_assert(!cat_path_valid("/"));
	cr_assert(!cat_path_valid("./a"));
}

/* A small valid catalog of every entry type, for damage tests. */
static void small_object(uint8_t **ret, size_t *ret_len)
{
	struct cat_writer *w = writer_with_tables(CAT_DELTA, NULL);
	struct cat_extent ext[3] = {{3000, 2}, {5, CAT_HOLE}, {1000, 0}};
	struct cat_entry es[] = {
		{.path = "d", .type = CAT_E_DIR, .mode = S_IFDIR | 0755},
		{.path = "d/f",
		 .type = CAT_E_FILE,
		 .mode = S_IFREG | 0644,
		 .size = 4005,
		 .n_ext = 3,
		 .ext = ext},
		{.path = "d/l",
		 .type = CAT_E_SYMLINK,
		 .mode = S_IFLNK | 0777,
		 .size = 1,
		 .target = "f"},
		{.path = "g", .type = CAT_E_GONE, .stamp = 4},
	};
	uint8_t sha[32];
	void *data;

	for (size_t i = 0; i < ARRAY_SIZE(es); i++)
		cr_assert_eq(cat_writer_add_entry(w, &es[i]), 0);
	cr_assert_eq(cat_writer_finish(w, &data, ret_len, sha), 0);
	*ret = data;
}

Test(catalog, truncation_at_every_offset)
{
	uint8_t *o, *copy;
	size_t len;
	struct cat *c = NULL;

	small_object(&o, &len);
	for (size_t n = 0; n < len; n++) {
		copy = malloc(n ? n : 1);
		memcpy(copy, o, n);
		cr_assert_eq(cat_decode(copy, n, &c), -EBADMSG, "length %zu", n);
		/* re-sealed, so that the frame and the body are what fails */
		if (n >= HDR + TRAILER) {
			seal(copy, n);
			cr_assert_eq(cat_decode(copy, n, &c), -EBADMSG, "sealed length %zu", n);
		}
		free(copy);
	}
	cr_assert_null(c);
	cr_assert_eq(cat_decode(o, len, &c), 0);
	cat_free(c);
	free(o);
}

/* Decompress the body of an object, let mutate change it, and rebuild the object around it. */
static struct buf rebody(const uint8_t *o, size_t len, uint64_t *seed, unsigned flips)
{
	size_t zlen = len - HDR - TRAILER;
	unsigned long long blen = ZSTD_getFrameContentSize(o + HDR, zlen);
	struct buf body = {0}, out;
	struct hdrf h = hdr_default;

	body.p = malloc(blen);
	body.len = body.cap = blen;
	cr_assert_eq(ZSTD_decompress(body.p, blen, o + HDR, zlen), blen);
	for (unsigned i = 0; i < flips; i++) {
		uint64_t r = rnd(seed);

		body.p[r % blen] ^= (uint8_t)(1u << ((r >> 32) % 8));
	}
	h.n_packs = o[52] | (uint32_t)o[53] << 8;
	h.n_chunks = o[56] | (uint32_t)o[57] << 8;
	h.n_entries = o[60] | (uint32_t)o[61] << 8;
	out = obj_make(&h, &body, NULL);
	free(body.p);
	return out;
}

Test(catalog, random_damage)
{
	uint8_t *o, *copy;
	size_t len;
	uint64_t seed = 12345;
	unsigned accepted = 0, rejected = 0;

	small_object(&o, &len);
	copy = malloc(len);
	for (int iter = 0; iter < 20000; iter++) {
		struct cat *c = NULL;
		unsigned flips = 1 + (unsigned)(rnd(&seed) % 4);
		int r;

		memcpy(copy, o, len);
		for (unsigned i = 0; i < flips; i++) {
			uint64_t x = rnd(&seed);

			copy[x % len] ^= (uint8_t)(1u << ((x >> 32) % 8));
		}
		r = cat_decode(copy, len, &c);
		/* the trailer catches any flip (unless two undid each other); a flipped version
		 * field may say "newer" */
		if (memcmp(copy, o, len) != 0)
			cr_assert(r == -EBADMSG || r == -EPROTONOSUPPORT, "iter %d: %d", iter, r);
		cat_free(c);
		c = NULL;
		seal(copy, len);
		r = cat_decode(copy, len, &c);
		cr_assert(r == 0 || r == -EBADMSG || r == -EPROTONOSUPPORT, "iter %d: %d", iter, r);
		cat_free(c);
		c = NULL;

		/* damage in the body itself, behind a good frame and trailer */
		if (iter % 4 == 0) {
			struct buf b = rebody(o, len, &seed, flips);

			r = cat_decode(b.p, b.len, &c);
			cr_assert(r == 0 || r == -EBADMSG, "iter %d body: %d", iter, r);
			if (r == 0)
				accepted++;
			else
				rejected++;
			cat_free(c);
			free(b.p);
		}
	}
	cr_log_info("body damage: %u decoded, %u rejected", accepted, rejected);
	cr_assert_gt(rejected, 0);
	free(copy);
	free(o);
}

Test(catalog, signature_independent_of_tables)
{
	static const uint32_t order_a[3] = {0, 1, 2}, order_b[3] = {2, 0, 1};
	struct cat_writer *wa = writer_with_tables(CAT_DELTA, order_a);
	struct cat_writer *wb = writer_with_tables(CAT_SNAPSHOT, order_b);
	struct cat_extent ea[3] = {{1000, 0}, {9, CAT_HOLE}, {3000, 2}};
	struct cat_extent eb[3] = {{1000, 1}, {9, CAT_HOLE}, {3000, 0}};
	struct cat_entry fa = {.path = "f",
			       .type = CAT_E_FILE,
			       .mode = S_IFREG | 0644,
			       .uid = 1,
			       .gid = 2,
			       .mtime = 3,
			       .stamp = 4,
			       .size = 4009,
			       .n_ext = 3,
			       .ext = ea};
	struct cat_entry fb = fa;
	struct cat *ca, *cb;
	uint8_t sa[16], sb[16];
	struct cat_sig s;

	fb.ext = eb;
	fb.stamp = 99; /* the stamp is not content */
	cr_assert_eq(cat_writer_add_entry(wa, &fa), 0);
	cr_assert_eq(cat_writer_add_entry(wb, &fb), 0);
	ca = finish_decode(wa);
	cb = finish_decode(wb);
	cr_assert_eq(ca->chunks[0].raw_len, 1000);
	cr_assert_eq(cb->chunks[0].raw_len, 3000);
	cat_entry_sig(&ca->entries[0], ca->chunks, sa);
	cat_entry_sig(&cb->entries[0], cb->chunks, sb);
	cr_assert_eq(memcmp(sa, sb, 16), 0);

	/* the streaming form, from rows that are not a chunk table */
	cat_sig_begin(&s, CAT_E_FILE, S_IFREG | 0644, 1, 2, 3, 4009, NULL);
	cat_sig_extent(&s, 1000, &ca->chunks[chunk_of(ca, 0)].key,
		       &ca->chunks[chunk_of(ca, 0)].digest);
	cat_sig_extent(&s, 9, NULL, NULL);
	cat_sig_extent(&s, 3000, &cb->chunks[chunk_of(cb, 2)].key,
		       &cb->chunks[chunk_of(cb, 2)].digest);
	cat_sig_end(&s, sb);
	cr_assert_eq(memcmp(sa, sb, 16), 0);
	cat_free(ca);
	cat_free(cb);
}

static void sig_of(const struct cat_entry *e, const struct cat_chunk *chunks, uint8_t out[16])
{
	cat_entry_sig(e, chunks, out);
}

Test(catalog, signature_covers_every_field)
{
	struct cat_chunk ch[3] = {0};
	struct cat_extent ext[2] = {{1000, 0}, {5, CAT_HOLE}};
	struct cat_extent ext2[2];
	const struct cat_entry f = {.path = "f",
				    .type = CAT_E_FILE,
				    .mode = S_IFREG | 0644,
				    .uid = 1,
				    .gid = 2,
				    .mtime = 3,
				    .stamp = 4,
				    .size = 1005,
				    .n_ext = 2,
				    .ext = ext};
	const struct cat_entry d = {.path = "d",
				    .type = CAT_E_DIR,
				    .mode = S_IFDIR | 0755,
				    .uid = 1,
				    .gid = 2,
				    .mtime = 3};
	const struct cat_entry l = {.path = "l",
				    .type = CAT_E_SYMLINK,
				    .mode = S_IFLNK | 0777,
				    .uid = 1,
				    .gid = 2,
				    .mtime = 3,
				    .size = 3,
				    .target = "abc"};
	const struct cat_entry g = {.path = "g", .type = CAT_E_GONE, .stamp = 5};
	struct cat_entry e;
	uint8_t base[16], s[16];

	for (int i = 0; i < 3; i++) {
		memset(ch[i].key.b, i + 1, 16);
		memset(ch[i].digest.b, i + 50, 32);
		ch[i].raw_len = 1000;
	}
	ch[2].key = ch[0].key; /* same key, other digest */

#define DIFFERS(from, what)                                                                        \
	do {                                                                                       \
		e = from;                                                                          \
		sig_of(&e, ch, base);                                                              \
		what;                                                                              \
		sig_of(&e, ch, s);                                                                 \
		cr_expect_neq(memcmp(base, s, 16), 0, "%s", #what);                                \
	} while (0)
#define SAME(from, what)                                                                           \
	do {                                                                                       \
		e = from;                                                                          \
		sig_of(&e, ch, base);                                                              \
		what;                                                                              \
		sig_of(&e, ch, s);                                                                 \
		cr_expect_eq(memcmp(base, s, 16), 0, "%s", #what);                                 \
	} while (0)
	DIFFERS(f, e.type = CAT_E_DIR);
	DIFFERS(f, e.mode ^= 1);
	DIFFERS(f, e.uid++);
	DIFFERS(f, e.gid++);
	DIFFERS(f, e.mtime++);
	DIFFERS(f, e.size++);
	DIFFERS(f, memcpy(ext2, ext, sizeof(ext)); ext2[0].chunk = 1; e.ext = ext2);
	DIFFERS(f, memcpy(ext2, ext, sizeof(ext)); ext2[0].chunk = 2; e.ext = ext2);
	DIFFERS(f, memcpy(ext2, ext, sizeof(ext)); ext2[1].len = 6; e.ext = ext2);
	DIFFERS(f, memcpy(ext2, ext, sizeof(ext)); ext2[0].chunk = CAT_HOLE; e.ext = ext2);
	DIFFERS(f, e.n_ext = 1);
	SAME(f, e.stamp++);
	SAME(f, e.path = "other");
	DIFFERS(d, e.mode ^= 1);
	DIFFERS(d, e.uid++);
	DIFFERS(d, e.gid++);
	SAME(d, e.mtime++);
	DIFFERS(l, e.mode ^= 1);
	DIFFERS(l, e.uid++);
	DIFFERS(l, e.gid++);
	DIFFERS(l, e.mtime++);
	DIFFERS(l, e.target = "abd");
	DIFFERS(l, e.target = "ab"; e.size = 2);
	DIFFERS(g, e.type = CAT_E_READ);
	SAME(g, e.uid++; e.mtime++; e.stamp++);
#undef DIFFERS
#undef SAME

	/* a hole and a data extent can not be confused through the bytes that follow */
	{
		uint8_t a[16], b[16];
		struct cat_sig sg;

		cat_sig_begin(&sg, CAT_E_FILE, S_IFREG, 0, 0, 0, 10, NULL);
		cat_sig_extent(&sg, 5, NULL, NULL);
		cat_sig_extent(&sg, 5, NULL, NULL);
		cat_sig_end(&sg, a);
		cat_sig_begin(&sg, CAT_E_FILE, S_IFREG, 0, 0, 0, 10, NULL);
		cat_sig_extent(&sg, 10, NULL, NULL);
		cat_sig_end(&sg, b);
		cr_assert_neq(memcmp(a, b, 16), 0);
	}
}

Test(catalog, signature_golden)
{
	/* The encoding is shared with the local index: pin it. */
	const struct cat_entry d = {
		.path = "d", .type = CAT_E_DIR, .mode = S_IFDIR | 0755, .uid = 1000, .gid = 1000};
	uint8_t enc[13] = {CAT_E_DIR, 0xed, 0x41, 0, 0, 0xe8, 3, 0, 0, 0xe8, 3, 0, 0};
	uint8_t s[16];
	chunk_key k;

	cat_entry_sig(&d, NULL, s);
	hash_key(enc, sizeof(enc), &k);
	cr_assert_eq(memcmp(s, k.b, 16), 0);
}

Test(catalog, lww_order)
{
	struct cat_chunk ch[1] = {0};
	struct cat_extent ext = {10, CAT_HOLE};
	struct cat_entry f = {.path = "p",
			      .type = CAT_E_FILE,
			      .mode = S_IFREG | 0644,
			      .stamp = 10,
			      .size = 10,
			      .n_ext = 1,
			      .ext = &ext};
	struct cat_entry d = {.path = "p", .type = CAT_E_DIR, .mode = S_IFDIR | 0755, .stamp = 10};
	struct cat_entry l = {.path = "p",
			      .type = CAT_E_SYMLINK,
			      .mode = S_IFLNK | 0777,
			      .stamp = 10,
			      .size = 1,
			      .target = "x"};
	struct cat_entry g = {.path = "p", .type = CAT_E_GONE, .stamp = 10};
	struct cat_entry f2 = f, g_late = g, f_copy = f;
	const struct cat_entry *all[] = {&f, &d, &l, &g, &f2};

	f2.mtime = 1;
	g_late.stamp = 11;
	/* the greater stamp wins whatever the type */
	cr_assert_gt(cat_entry_cmp_lww(&g_late, ch, &d, ch), 0);
	cr_assert_lt(cat_entry_cmp_lww(&d, ch, &g_late, ch), 0);
	/* equal stamps: anything beats a tombstone, a directory beats the rest */
	cr_assert_gt(cat_entry_cmp_lww(&f, ch, &g, ch), 0);
	cr_assert_gt(cat_entry_cmp_lww(&l, ch, &g, ch), 0);
	cr_assert_gt(cat_entry_cmp_lww(&d, ch, &f, ch), 0);
	cr_assert_gt(cat_entry_cmp_lww(&d, ch, &l, ch), 0);
	/* then the signature decides, the same way from both sides */
	cr_assert_neq(cat_entry_cmp_lww(&f, ch, &f2, ch), 0);
	cr_assert_neq(cat_entry_cmp_lww(&f, ch, &l, ch), 0);
	cr_assert_eq(cat_entry_cmp_lww(&f, ch, &f_copy, ch), 0);
	f_copy.uid = 5;
	f_copy.path = "q";
	for (size_t i = 0; i < ARRAY_SIZE(all); i++)
		for (size_t k = 0; k < ARRAY_SIZE(all); k++) {
			int x = cat_entry_cmp_lww(all[i], ch, all[k], ch);
			int y = cat_entry_cmp_lww(all[k], ch, all[i], ch);

			cr_assert_eq(x, -y, "%zu %zu", i, k);
			cr_assert_eq(x == 0, i == k, "%zu %zu", i, k);
		}
	{
		struct cat_lww a = {.stamp = 1, .type = CAT_E_FILE}, b = a;

		b.sig[15] = 1;
		cr_assert_lt(cat_lww_cmp(&a, &b), 0);
		cr_assert_gt(cat_lww_cmp(&b, &a), 0);
	}
}
