/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the catalog decoder (built and run by tests/fuzz/run-fuzz.sh, not by
 * meson).
 *
 * An input is tried three ways. As it is: the trailer rejects nearly every mutation, which tests
 * that path but nothing behind it. Re-sealed (the trailer recomputed), so that mutations reach the
 * header checks and the zstd frame. And, for inputs that start with the harness-only magic
 * "PKGCRAW1", as a 72-byte header followed by an uncompressed body, which the harness compresses
 * and seals: mutations then land in the tables and entries themselves.
 *
 * Whatever decodes must survive a round trip: every pack, chunk and entry is given to a writer
 * in order, the result decoded again and compared field by field, signatures included. Any
 * difference, or an error other than -EBADMSG, -EPROTONOSUPPORT or -ENOMEM, aborts.
 *
 * Built with -DFUZZ_CATALOG_GEN instead of -fsanitize=fuzzer, it is a main() that writes the seed
 * corpus into the directory given as its argument (run-fuzz.sh --gen-corpus).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zstd.h>

#include "catalog.h"

#define HDR 72u
#define TRAILER 32u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x)) {                                                                        \
			fprintf(stderr, "check failed: %s (line %d)\n", #x, __LINE__);             \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static void seal(uint8_t *obj, size_t len)
{
	chunk_digest d;

	hash_digest(obj, len - TRAILER, &d);
	memcpy(obj + len - TRAILER, d.b, TRAILER);
}

static bool str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Re-encode c with a writer and check the result decodes to the same catalog. */
static void roundtrip(const struct cat *c)
{
	struct cat_writer *w = NULL;
	struct cat *d = NULL;
	void *data;
	size_t len;
	uint8_t sha[32];
	uint32_t idx;

	CHECK(cat_writer_new(c->kind, c->host, c->created, c->chunk_min, c->chunk_avg, c->chunk_max,
			     &w) == 0);
	for (size_t i = 0; i < c->n_packs; i++) {
		CHECK(cat_writer_add_pack(w, c->packs[i].name, c->packs[i].size, &idx) == 0);
		CHECK(idx == i);
	}
	for (size_t i = 0; i < c->n_chunks; i++) {
		CHECK(cat_writer_add_chunk(w, &c->chunks[i], &idx) == 0);
		CHECK(idx == i);
	}
	for (size_t i = 0; i < c->n_entries; i++) {
		const struct cat_entry *e = &c->entries[i];
		uint8_t sig[16];

		CHECK(cat_path_valid(e->path));
		cat_entry_sig(e, c->chunks, sig);
		CHECK(cat_entry_cmp_lww(e, c->chunks, e, c->chunks) == 0);
		CHECK(cat_writer_add_entry(w, e) == 0);
	}
	CHECK(cat_writer_finish(w, &data, &len, sha) == 0);
	CHECK(cat_decode(data, len, &d) == 0);
	free(data);

	CHECK(d->kind == c->kind && d->created == c->created);
	CHECK(memcmp(d->host, c->host, 16) == 0);
	CHECK(d->chunk_min == c->chunk_min && d->chunk_avg == c->chunk_avg &&
	      d->chunk_max == c->chunk_max);
	CHECK(d->n_packs == c->n_packs && d->n_chunks == c->n_chunks &&
	      d->n_entries == c->n_entries);
	for (size_t i = 0; i < c->n_packs; i++)
		CHECK(memcmp(&d->packs[i], &c->packs[i], sizeof(c->packs[i])) == 0);
	for (size_t i = 0; i < c->n_chunks; i++)
		CHECK(memcmp(&d->chunks[i], &c->chunks[i], sizeof(c->chunks[i])) == 0);
	for (size_t i = 0; i < c->n_entries; i++) {
		const struct cat_entry *a = &c->entries[i], *b = &d->entries[i];
		uint8_t sa[16], sb[16];

		CHECK(str_eq(a->path, b->path) && str_eq(a->target, b->target));
		CHECK(a->type == b->type && a->mode == b->mode && a->uid == b->uid &&
		      a->gid == b->gid && a->mtime == b->mtime && a->stamp == b->stamp &&
		      a->size == b->size && a->n_ext == b->n_ext);
		for (uint32_t k = 0; k < a->n_ext; k++)
			CHECK(a->ext[k].len == b->ext[k].len && a->ext[k].chunk == b->ext[k].chunk);
		cat_entry_sig(a, c->chunks, sa);
		cat_entry_sig(b, d->chunks, sb);
		CHECK(memcmp(sa, sb, 16) == 0);
		CHECK(cat_entry_cmp_lww(a, c->chunks, b, d->chunks) == 0);
	}
	cat_free(d);
}

static void try_decode(const uint8_t *data, size_t size)
{
	struct cat *c = NULL;
	int r = cat_decode(data, size, &c);

	CHECK(r == 0 || r == -EBADMSG || r == -EPROTONOSUPPORT || r == -ENOMEM);
	CHECK((r == 0) == (c != NULL));
	if (r == 0) {
		roundtrip(c);
		cat_free(c);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;

	try_decode(data, size);

	if (size >= HDR + TRAILER && memcmp(data, "PKGCCAT1", 8) == 0) {
		copy = malloc(size);
		CHECK(copy);
		memcpy(copy, data, size);
		seal(copy, size);
		try_decode(copy, size);
		free(copy);
	}

	if (size >= HDR && memcmp(data, "PKGCRAW1", 8) == 0) {
		size_t body_len = size - HDR, bound = ZSTD_compressBound(body_len), zn;

		copy = malloc(HDR + bound + TRAILER);
		CHECK(copy);
		memcpy(copy, data, HDR);
		memcpy(copy, "PKGCCAT1", 8);
		for (unsigned i = 0; i < 8; i++)
			copy[64 + i] = (uint8_t)((uint64_t)body_len >> (8 * i));
		zn = ZSTD_compress(copy + HDR, bound, data + HDR, body_len, 1);
		CHECK(!ZSTD_isError(zn));
		seal(copy, HDR + zn + TRAILER);
		try_decode(copy, HDR + zn + TRAILER);
		free(copy);
	}
	return 0;
}

#ifdef FUZZ_CATALOG_GEN
/* The seed corpus: valid objects of each kind, their raw-body forms, and a few broken ones. */

static const char *outdir;

static void put(const char *name, const void *data, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, name);
	f = fopen(path, "wb");
	CHECK(f && fwrite(data, 1, len, f) == len && fclose(f) == 0);
}

/* The harness's raw form of a valid object: its header and its decompressed body. */
static void put_raw(const char *name, const uint8_t *obj, size_t len)
{
	size_t zlen = len - HDR - TRAILER;
	unsigned long long blen = ZSTD_getFrameContentSize(obj + HDR, zlen);
	uint8_t *raw = malloc(HDR + blen + 1);

	CHECK(raw);
	memcpy(raw, obj, HDR);
	memcpy(raw, "PKGCRAW1", 8);
	CHECK(ZSTD_decompress(raw + HDR, blen, obj + HDR, zlen) == blen);
	put(name, raw, HDR + blen);
	free(raw);
}

static void make(uint32_t kind, void **data, size_t *len)
{
	static const uint8_t host[16] = {0xfe, 0xed};
	struct cat_writer *w = NULL;
	uint8_t name[32], sha[32];
	uint32_t p0, p1, c0, c1;
	struct cat_chunk ch = {.raw_len = 100, .off = 64, .stored_len = 100};
	struct cat_extent ext[3];
	struct cat_entry es[] = {
		{.path = "pkgs", .type = CAT_E_DIR, .mode = S_IFDIR | 0755, .stamp = 1},
		{.path = "pkgs/a.whl",
		 .type = CAT_E_FILE,
		 .mode = S_IFREG | 0644,
		 .uid = 1000,
		 .gid = 1000,
		 .mtime = 5,
		 .stamp = 2,
		 .size = 100 + 7 + 60,
		 .n_ext = 3,
		 .ext = ext},
		{.path = "pkgs/cur",
		 .type = CAT_E_SYMLINK,
		 .mode = S_IFLNK | 0777,
		 .stamp = 3,
		 .size = 5,
		 .target = "a.whl"},
		{.path = "pkgs/old", .type = CAT_E_GONE, .stamp = 4},
	};
	struct cat_entry rd = {.path = "pkgs/a.whl", .type = CAT_E_READ, .stamp = 9};

	CHECK(cat_writer_new(kind, host, 1700000000000000000, 16384, 65536, 262144, &w) == 0);
	memset(name, 0xa1, 32);
	CHECK(cat_writer_add_pack(w, name, 1 << 20, &p0) == 0);
	memset(name, 0xb2, 32);
	CHECK(cat_writer_add_pack(w, name, 4096, &p1) == 0);
	if (kind != CAT_CONDEMNED) {
		memset(ch.key.b, 1, 16);
		memset(ch.digest.b, 2, 32);
		ch.pack = p0;
		CHECK(cat_writer_add_chunk(w, &ch, &c0) == 0);
		memset(ch.key.b, 3, 16);
		ch.raw_len = 60;
		ch.stored_len = 20;
		ch.flags = 1;
		ch.pack = p1;
		CHECK(cat_writer_add_chunk(w, &ch, &c1) == 0);
		ext[0] = (struct cat_extent){100, c0};
		ext[1] = (struct cat_extent){7, CAT_HOLE};
		ext[2] = (struct cat_extent){60, c1};
	}
	if (kind == CAT_TRACE)
		CHECK(cat_writer_add_entry(w, &rd) == 0);
	else if (kind != CAT_CONDEMNED)
		for (size_t i = 0; i < sizeof(es) / sizeof(es[0]); i++)
			CHECK(cat_writer_add_entry(w, &es[i]) == 0);
	CHECK(cat_writer_finish(w, data, len, sha) == 0);
}

int main(int argc, char **argv)
{
	static const char *const names[] = {"",      "delta",     "snapshot",
					    "trace", "condemned", "bundle"};
	void *data;
	uint8_t *o;
	size_t len;

	CHECK(argc == 2);
	outdir = argv[1];
	for (uint32_t k = CAT_DELTA; k <= CAT_BUNDLE; k++) {
		char n[64];

		make(k, &data, &len);
		snprintf(n, sizeof(n), "valid-%s", names[k]);
		put(n, data, len);
		if (k != CAT_SNAPSHOT && k != CAT_BUNDLE) {
			snprintf(n, sizeof(n), "raw-%s", names[k]);
			put_raw(n, data, len);
		}
		free(data);
	}

	make(CAT_DELTA, &data, &len);
	o = data;
	put("bad-truncated", o, len / 2);
	o[len - 1] ^= 1;
	put("bad-trailer", o, len);
	o[len - 1] ^= 1;
	o[8] = 2;
	seal(o, len);
	put("bad-newer-version", o, len);
	o[8] = 1;
	o[60]++; /* one entry more than the body holds */
	seal(o, len);
	put("bad-count", o, len);
	o[60]--;
	o[HDR + 5] ^= 0x40; /* inside the zstd frame header */
	seal(o, len);
	put("bad-frame", o, len);
	free(data);
	put("bad-empty", "", 0);
	put("bad-magic-only", "PKGCCAT1", 8);
	return 0;
}
#endif
