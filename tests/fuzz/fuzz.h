/* SPDX-License-Identifier: MIT */
/*
 * What the libFuzzer targets share: an abort that names the failed check, and the seed writer of
 * their corpus generators (built with -DFUZZ_GEN by run-fuzz.sh --gen-corpus). Header-only: each
 * target is one translation unit compiled with the core sources it needs.
 */
#pragma once

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

#define CHECK(x)                                                                                   \
	do {                                                                                       \
		if (!(x)) {                                                                        \
			fprintf(stderr, "check failed: %s (%s:%d)\n", #x, __FILE__, __LINE__);     \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#ifdef FUZZ_GEN
static const char *gen_outdir;

/* Write one seed, name inside gen_outdir. */
static void gen_put(const char *name, const void *data, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", gen_outdir, name);
	f = fopen(path, "wb");
	CHECK(f && fwrite(data, 1, len, f) == len && fclose(f) == 0);
}

/* The bytes of a file, malloc'ed. */
static void *gen_slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 1 << 16, n = 0, k;
	char *buf = malloc(cap);

	CHECK(f && buf);
	while ((k = fread(buf + n, 1, cap - n, f)) > 0) {
		n += k;
		if (n == cap) {
			buf = realloc(buf, cap *= 2);
			CHECK(buf);
		}
	}
	fclose(f);
	*ret_len = n;
	return buf;
}
#endif
