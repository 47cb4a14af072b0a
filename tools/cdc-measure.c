/* SPDX-License-Identifier: MIT */
/*
 * cdc-measure: how well would a corpus dedup at each average chunk size?
 *
 * Chunks every given file (directories are walked recursively, symlinks not followed) with the
 * store's chunker at several averages, min = avg / 4 and max = 4 * avg, and counts chunks by their
 * XXH3-128 key across the whole corpus. Prints one row per average: logical bytes, unique chunk
 * bytes, chunk counts, dedup ratio, an estimate of the index size it would cost (120 bytes per
 * unique chunk row, 40 per extent row, one extent per chunk of a file) and the chunker's speed.
 * It exists to choose the store's default average on a real package-cache corpus; it is not
 * installed.
 *
 * Each file is mapped once and chunked at every average while it is in memory, so the corpus is
 * read once. Only chunker_scan is timed for the MB/s column (the key is timed apart), and pages
 * are faulted in before timing so the column measures the chunker, not the disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chunker.h"
#include "hash.h"

#define MAX_RUNS 16
#define ROW_CHUNK 120u
#define ROW_EXTENT 40u

struct keyset_entry {
	chunk_key key;
	uint32_t size; /* 0: the slot is empty */
};

/* Unique keys seen so far: open addressing, linear probing. */
struct keyset {
	struct keyset_entry *slots;
	size_t cap; /* a power of two */
	size_t used;
};

/* One average chunk size and everything counted for it. */
struct run {
	struct chunker_params p;
	struct keyset set;
	uint64_t logical;
	uint64_t unique_bytes;
	uint64_t chunks;
	uint64_t unique_chunks;
	double scan_seconds;
	double key_seconds;
};

struct measure {
	struct run runs[MAX_RUNS];
	size_t n_runs;
	size_t *cuts; /* scratch: the cut points of one file */
	size_t cuts_cap;
	uint64_t files;
	uint64_t errors;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int keyset_grow(struct keyset *s)
{
	size_t cap = s->cap ? 2 * s->cap : 1u << 16;
	struct keyset_entry *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t i = 0; i < s->cap; i++) {
		struct keyset_entry *e = &s->slots[i];
		size_t h;

		if (!e->size)
			continue;
		/* The keys are hash outputs already: any 8 of their bytes make a fine index. */
		memcpy(&h, e->key.b, sizeof(h));
		for (h &= cap - 1; slots[h].size; h = (h + 1) & (cap - 1))
			;
		slots[h] = *e;
	}
	free(s->slots);
	s->slots = slots;
	s->cap = cap;
	return 0;
}

/* 1 when key was new and is now in the set, 0 when it was there already, -errno on failure. */
static int keyset_add(struct keyset *s, const chunk_key *key, uint32_t size)
{
	size_t h;
	int r;

	/* Keep the load under 1/2 so that probes stay short. */
	if (2 * (s->used + 1) > s->cap) {
		r = keyset_grow(s);
		if (r < 0)
			return r;
	}
	memcpy(&h, key->b, sizeof(h));
	for (h &= s->cap - 1; s->slots[h].size; h = (h + 1) & (s->cap - 1))
		if (hash_key_equal(&s->slots[h].key, key))
			return 0;
	s->slots[h].key = *key;
	s->slots[h].size = size;
	s->used++;
	return 1;
}

static void keyset_release(struct keyset *s)
{
	free(s->slots);
	s->slots = NULL;
	s->cap = s->used = 0;
}

static int push_cut(struct measure *m, size_t *n, size_t off)
{
	if (*n == m->cuts_cap) {
		size_t cap = m->cuts_cap ? 2 * m->cuts_cap : 4096;
		size_t *cuts = realloc(m->cuts, cap * sizeof(*cuts));

		if (!cuts)
			return -ENOMEM;
		m->cuts = cuts;
		m->cuts_cap = cap;
	}
	m->cuts[(*n)++] = off;
	return 0;
}

/* Chunk one in-memory file at one average and count its chunks. */
static int measure_run(struct measure *m, struct run *run, const uint8_t *data, size_t len)
{
	struct chunker c;
	size_t n = 0, off = 0, start = 0;
	double t0, t1;
	int r;

	/* Find all cut points first, so that only the chunker is inside the timed region. */
	chunker_init(&c, &run->p);
	t0 = now();
	while (off < len) {
		size_t k = chunker_scan(&c, data + off, len - off);

		if (k == CHUNKER_NO_CUT)
			break;
		off += k;
		r = push_cut(m, &n, off);
		if (r < 0)
			return r;
	}
	t1 = now();
	run->scan_seconds += t1 - t0;
	/* End of file closes the final chunk. */
	if (n == 0 || m->cuts[n - 1] != len) {
		r = push_cut(m, &n, len);
		if (r < 0)
			return r;
	}

	t0 = now();
	for (size_t i = 0; i < n; i++) {
		size_t size = m->cuts[i] - start;
		chunk_key key;

		hash_key(data + start, size, &key);
		r = keyset_add(&run->set, &key, (uint32_t)size);
		if (r < 0)
			return r;
		if (r == 1) {
			run->unique_chunks++;
			run->unique_bytes += size;
		}
		run->chunks++;
		start = m->cuts[i];
	}
	run->key_seconds += now() - t0;
	run->logical += len;
	return 0;
}

static int measure_file(struct measure *m, const char *path)
{
	struct stat st;
	uint8_t *data;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out_close_fd;
	}
	if (!S_ISREG(st.st_mode))
		goto out_close_fd;
	m->files++;
	if (st.st_size == 0)
		goto out_close_fd;

	/* MAP_POPULATE: fault every page in now, so the disk stays out of the timings. */
	data = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
	if (data == MAP_FAILED) {
		r = -errno;
		goto out_close_fd;
	}
	for (size_t i = 0; i < m->n_runs; i++) {
		r = measure_run(m, &m->runs[i], data, (size_t)st.st_size);
		if (r < 0)
			break;
	}
	munmap(data, (size_t)st.st_size);
out_close_fd:
	close(fd);
	return r;
}

/* nftw() passes no user pointer, so the walk reaches its state through this. */
static struct measure *walk_measure;

static int walk_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	int r;

	(void)ftw;
	if (type == FTW_DNR || type == FTW_NS) {
		fprintf(stderr, "cdc-measure: %s: cannot read\n", path);
		walk_measure->errors++;
		return 0;
	}
	if (type != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	r = measure_file(walk_measure, path);
	if (r == -ENOMEM) {
		/* Stop the walk; measure_path() reports it from errno. */
		errno = ENOMEM;
		return -1;
	}
	if (r < 0) {
		fprintf(stderr, "cdc-measure: %s: %s\n", path, strerror(-r));
		walk_measure->errors++;
	}
	return 0;
}

static int measure_path(struct measure *m, const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return measure_file(m, path);
	walk_measure = m;
	if (nftw(path, walk_one, 64, FTW_PHYS) != 0)
		return errno ? -errno : -ENOMEM;
	return 0;
}

static double mib(uint64_t bytes)
{
	return (double)bytes / (1024.0 * 1024.0);
}

static double mb_per_s(uint64_t bytes, double seconds)
{
	return seconds > 0 ? (double)bytes / seconds / 1e6 : 0;
}

static void print_table(const struct measure *m)
{
	printf("files: %" PRIu64 "\n", m->files);
	printf("%8s %8s %8s %12s %12s %10s %10s %9s %7s %11s %6s %9s %9s\n", "avg", "min", "max",
	       "logical_MiB", "unique_MiB", "chunks", "unique", "mean_KiB", "dedup", "index_MiB",
	       "index%", "cdc_MB/s", "key_MB/s");
	for (size_t i = 0; i < m->n_runs; i++) {
		const struct run *r = &m->runs[i];
		uint64_t index = ROW_CHUNK * r->unique_chunks + ROW_EXTENT * r->chunks;

		printf("%8" PRIu32 " %8" PRIu32 " %8" PRIu32 " %12.2f %12.2f %10" PRIu64
		       " %10" PRIu64 " %9.1f %7.3f %11.2f %6.3f %9.0f"
		       " %9.0f\n",
		       r->p.avg, r->p.min, r->p.max, mib(r->logical), mib(r->unique_bytes),
		       r->chunks, r->unique_chunks,
		       r->chunks ? (double)r->logical / (double)r->chunks / 1024.0 : 0,
		       r->unique_bytes ? (double)r->logical / (double)r->unique_bytes : 0,
		       mib(index),
		       r->unique_bytes ? 100.0 * (double)index / (double)r->unique_bytes : 0,
		       mb_per_s(r->logical, r->scan_seconds), mb_per_s(r->logical, r->key_seconds));
	}
}

static void usage(FILE *f)
{
	fprintf(f, "usage: cdc-measure [--avg N[K|M]]... FILE|DIR...\n"
		   "Chunk the files with min = avg/4, max = avg*4 at each average (default 16K 32K "
		   "64K 128K 256K)\nand report dedup, index overhead and chunking speed.\n");
}

/* A size with an optional binary K or M suffix; 0 when it does not parse. */
static uint32_t parse_size(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return 0;
	if (*end == 'K' || *end == 'k') {
		v <<= 10;
		end++;
	} else if (*end == 'M' || *end == 'm') {
		v <<= 20;
		end++;
	}
	if (*end || v > UINT32_MAX)
		return 0;
	return (uint32_t)v;
}

static int add_run(struct measure *m, uint32_t avg)
{
	struct chunker_params p = {.min = avg / 4, .avg = avg, .max = avg * 4};

	if (avg == 0 || avg > CHUNKER_MAX_LIMIT / 4 || chunker_params_validate(&p) < 0)
		return -EINVAL;
	if (m->n_runs == MAX_RUNS)
		return -E2BIG;
	m->runs[m->n_runs++].p = p;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{"avg", required_argument, NULL, 'a'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	static struct measure m;
	int opt, status = 0;

	while ((opt = getopt_long(argc, argv, "a:h", options, NULL)) != -1) {
		switch (opt) {
		case 'a':
			if (add_run(&m, parse_size(optarg)) < 0) {
				fprintf(stderr,
					"cdc-measure: --avg %s: want a power of two, 256..4M, "
					"at most %d of them\n",
					optarg, MAX_RUNS);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind == argc) {
		usage(stderr);
		return 2;
	}
	if (m.n_runs == 0)
		for (uint32_t avg = 16u << 10; avg <= 256u << 10; avg <<= 1)
			add_run(&m, avg);

	for (int i = optind; i < argc; i++) {
		int r = measure_path(&m, argv[i]);

		if (r == -ENOMEM) {
			fprintf(stderr, "cdc-measure: out of memory\n");
			return 1;
		}
		if (r < 0) {
			fprintf(stderr, "cdc-measure: %s: %s\n", argv[i], strerror(-r));
			m.errors++;
		}
	}

	print_table(&m);
	if (m.errors) {
		fprintf(stderr, "cdc-measure: %" PRIu64 " files or directories could not be read\n",
			m.errors);
		status = 1;
	}
	for (size_t i = 0; i < m.n_runs; i++)
		keyset_release(&m.runs[i].set);
	free(m.cuts);
	return status;
}
