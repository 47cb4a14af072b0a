/* SPDX-License-Identifier: MIT */
/*
 * Catalog encode and decode speed on a catalog shaped like a package cache: by default 100k
 * files in 2k directories over 160k distinct chunks in 40 packs (six files in ten hold two
 * chunks, one in twenty also a hole), plus 1% symlinks and 1% tombstones. Times the writer,
 * cat_decode and a signature over every entry, and prints the figures; it asserts nothing about
 * time. Built by the cat-bench target of meson.build, not by default.
 *   cat-bench [files [chunks [runs]]]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "catalog.h"
#include "pack.h"
#include "util.h"

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static double ms(int64_t ns)
{
	return (double)ns / 1e6;
}

/* Build the catalog. 0 or -errno. */
static int build(size_t n_files, size_t n_chunks, void **ret_data, size_t *ret_len)
{
	static const uint8_t host[16] = {1};
	struct cat_writer *w = NULL;
	uint32_t *idx, *raw;
	uint64_t seed = 1;
	size_t next = 0;
	uint8_t sha[32];
	int r;

	idx = calloc(n_chunks, sizeof(*idx));
	raw = calloc(n_chunks, sizeof(*raw));
	r = idx && raw ? 0 : -ENOMEM;
	if (r == 0)
		r = cat_writer_new(CAT_SNAPSHOT, host, now_ns(), 16384, 65536, 262144, &w);
	for (uint32_t p = 0; p < 40 && r == 0; p++) {
		uint8_t name[32];
		uint32_t pi;

		for (int i = 0; i < 32; i++)
			name[i] = (uint8_t)rnd(&seed);
		r = cat_writer_add_pack(w, name, UINT64_C(1) << 36, &pi);
	}
	for (size_t i = 0; i < n_chunks && r == 0; i++) {
		struct cat_chunk ch = {.raw_len = 16384 + (uint32_t)(rnd(&seed) % 240000),
				       .pack = (uint32_t)(i % 40),
				       .off = 64 + (uint64_t)(i / 40) * 300000};

		ch.stored_len = ch.raw_len / 2;
		ch.flags = PACK_F_ZSTD;
		for (int k = 0; k < 16; k++)
			ch.key.b[k] = (uint8_t)rnd(&seed);
		for (int k = 0; k < 32; k++)
			ch.digest.b[k] = (uint8_t)rnd(&seed);
		raw[i] = ch.raw_len;
		r = cat_writer_add_chunk(w, &ch, &idx[i]);
	}
	for (size_t d = 0; d < (n_files + 49) / 50 && r == 0; d++) {
		char path[128];
		struct cat_entry e = {.path = path,
				      .type = CAT_E_DIR,
				      .mode = S_IFDIR | 0755,
				      .uid = 1000,
				      .gid = 1000,
				      .stamp = 2};

		snprintf(path, sizeof(path), "lib/python3.11/site-packages/pkg%05zu", d);
		r = cat_writer_add_entry(w, &e);
	}
	for (size_t f = 0; f < n_files + n_files / 50 && r == 0; f++) {
		char path[128];
		struct cat_extent ext[3];
		struct cat_entry e = {.path = path,
				      .type = CAT_E_FILE,
				      .mode = S_IFREG | 0644,
				      .uid = 1000,
				      .gid = 1000,
				      .mtime = (int64_t)f,
				      .stamp = 3,
				      .ext = ext};

		snprintf(path, sizeof(path), "lib/python3.11/site-packages/pkg%05zu/mod_%zu.py",
			 f / 51, f);
		if (f >= n_files && f % 2) {
			e.type = CAT_E_SYMLINK;
			e.mode = S_IFLNK | 0777;
			e.target = "../pkg00000/mod_0.py";
			e.size = strlen(e.target);
		} else if (f >= n_files) {
			e.type = CAT_E_GONE;
			e.mode = e.uid = e.gid = 0;
		} else {
			for (size_t k = 0; k < 1u + (f % 10 < 6); k++) {
				size_t ci = next < n_chunks ? next++ : rnd(&seed) % n_chunks;

				ext[e.n_ext++] = (struct cat_extent){raw[ci], idx[ci]};
				e.size += raw[ci];
			}
			if (f % 20 == 0) {
				ext[e.n_ext++] = (struct cat_extent){4096, CAT_HOLE};
				e.size += 4096;
			}
		}
		r = cat_writer_add_entry(w, &e);
	}
	if (r == 0)
		r = cat_writer_finish(w, ret_data, ret_len, sha);
	else
		cat_writer_free(w);
	free(idx);
	free(raw);
	return r;
}

int main(int argc, char **argv)
{
	size_t n_files = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
	size_t n_chunks = argc > 2 ? strtoul(argv[2], NULL, 10) : 160000;
	int runs = argc > 3 ? atoi(argv[3]) : 7;
	int64_t t, t_build, t_dec[64], t_sig = 0;
	struct cat *c = NULL;
	uint8_t sig[16], acc = 0;
	size_t len;
	void *data;
	int r;

	if (runs < 1 || runs > 64 || n_files == 0) {
		fprintf(stderr, "usage: %s [files [chunks [runs (1..64)]]]\n", argv[0]);
		return 2;
	}
	t = mono_ns();
	r = build(n_files, n_chunks, &data, &len);
	t_build = mono_ns() - t;
	if (r < 0) {
		fprintf(stderr, "build: %s\n", strerror(-r));
		return 1;
	}
	for (int i = 0; i < runs; i++) {
		t = mono_ns();
		r = cat_decode(data, len, &c);
		t_dec[i] = mono_ns() - t;
		if (r < 0) {
			fprintf(stderr, "decode: %s\n", strerror(-r));
			return 1;
		}
		if (i == 0) {
			t = mono_ns();
			for (size_t k = 0; k < c->n_entries; k++) {
				cat_entry_sig(&c->entries[k], c->chunks, sig);
				acc ^= sig[0];
			}
			t_sig = mono_ns() - t;
			printf("catalog: %zu entries, %zu chunks, %zu packs; object %.1f MiB\n",
			       c->n_entries, c->n_chunks, c->n_packs, (double)len / (1 << 20));
		}
		cat_free(c);
	}
	qsort(t_dec, (size_t)runs, sizeof(t_dec[0]), cmp_i64);
	printf("build + encode (add everything, sort, zstd, SHA-256): %.1f ms\n", ms(t_build));
	printf("cat_decode over %d runs: min %.1f ms, median %.1f ms, max %.1f ms\n", runs,
	       ms(t_dec[0]), ms(t_dec[runs / 2]), ms(t_dec[runs - 1]));
	printf("cat_entry_sig over every entry: %.1f ms (%02x)\n", ms(t_sig), acc);
	free(data);
	return 0;
}
