/* SPDX-License-Identifier: MIT */
/*
 * FastCDC content-defined chunking with normalized chunking (Xia et al., USENIX ATC 2016).
 *
 * The chunker is a pure function of its parameters and the bytes of the current chunk: a cut point
 * never depends on how the caller splits its input into buffers, nor on bytes before the previous
 * cut. Parameters are fixed when a store is created and kept in its config; the gear table and
 * masks are frozen by golden-vector tests, since any change silently ends dedup against old data.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHUNKER_MIN_LIMIT 64u
#define CHUNKER_MAX_LIMIT (16u << 20)

struct chunker_params {
	uint32_t min; /* no cut before this many bytes */
	uint32_t avg; /* power of two: the target average */
	uint32_t max; /* always cut here */
};

/* The store default: min 16 KiB, avg 64 KiB, max 256 KiB (see docs/architecture.md). */
extern const struct chunker_params chunker_default_params;

/* 0 when min <= avg <= max, avg a power of two, all within the limits above; -EINVAL otherwise. */
int chunker_params_validate(const struct chunker_params *p);

/* Streaming state, held by value: no allocation. */
struct chunker {
	struct chunker_params p;
	uint64_t mask_s; /* harder mask, used before avg */
	uint64_t mask_l; /* easier mask, used after avg */
	uint64_t hash;
	uint32_t pos; /* bytes of the current chunk seen so far */
};

#define CHUNKER_NO_CUT SIZE_MAX

/* Start a new stream. p must have been validated. */
void chunker_init(struct chunker *c, const struct chunker_params *p);

/*
 * Feed len bytes. Returns the number of bytes of buf that complete the current chunk (1..len),
 * after which the state is reset for the next chunk and the caller feeds the rest of buf again; or
 * CHUNKER_NO_CUT when all of buf belongs to the current chunk. At end of stream, whatever the
 * caller has buffered since the last cut is the final chunk.
 */
size_t chunker_scan(struct chunker *c, const void *buf, size_t len);

/* The frozen gear table, exposed for the golden-vector test. */
extern const uint64_t chunker_gear[256];
