/* SPDX-License-Identifier: MIT */
/*
 * Tests for the FastCDC chunker.
 *
 * Two kinds. Golden vectors pin the gear table, the masks and the cut points of fixed inputs: a
 * change to any of them moves cut points, which silently ends dedup against every chunk already
 * in a store, so such a change must fail here and be a deliberate format change. Invariants
 * check what dedup relies on: chunk sizes within bounds, cut points independent of how the input
 * is split into calls, cuts that depend only on a 64-byte window, and cuts that fall back in
 * step after an insertion or a deletion.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chunker.h"
#include "hash.h"

#define KiB (1u << 10)
#define MiB (1u << 20)

/* splitmix64 (Steele, Lea, Flood 2014): the same generator the gear table was made with. */
static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* len bytes of splitmix64 output from seed, each word in little-endian order. The caller frees. */
static uint8_t *random_bytes(uint64_t seed, size_t len)
{
	uint8_t *buf = malloc(len);
	uint64_t state = seed;

	cr_assert_not_null(buf);
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = splitmix64(&state);

		for (size_t k = 0; k < 8 && i + k < len; k++)
			buf[i + k] = (uint8_t)(v >> (8 * k));
	}
	return buf;
}

/*
 * How a test splits its input into chunker_scan calls: fixed pieces of `piece` bytes, or, when
 * piece is 0, random pieces of 1..max_piece bytes drawn from `state`.
 */
struct feed {
	size_t piece;
	size_t max_piece;
	uint64_t state;
};

static size_t feed_next(struct feed *f, size_t left)
{
	size_t n = f->piece ? f->piece : 1 + (size_t)(splitmix64(&f->state) % f->max_piece);

	return n < left ? n : left;
}

/*
 * The cut points (end offsets of every chunk the chunker closed) of buf, fed as f says. The
 * final chunk, closed by end of input rather than by the chunker, is not a cut point; *ret_tail
 * gets its size. Returns the count; *ret_cuts is malloc()ed and freed by the caller.
 */
static size_t chunk_all(const struct chunker_params *p, const uint8_t *buf, size_t len,
			struct feed *f, size_t **ret_cuts, size_t *ret_tail)
{
	/* Every chunk but the last is at least min bytes long. */
	size_t cap = len / p->min + 1;
	size_t *cuts = malloc(cap * sizeof(*cuts));
	struct chunker c;
	size_t n = 0, start = 0, off = 0;

	cr_assert_not_null(cuts);
	chunker_init(&c, p);
	while (off < len) {
		size_t piece = feed_next(f, len - off);
		size_t done = 0;

		while (done < piece) {
			size_t k = chunker_scan(&c, buf + off + done, piece - done);

			if (k == CHUNKER_NO_CUT) {
				done = piece;
				break;
			}
			cr_assert(k >= 1 && k <= piece - done, "scan returned %zu of %zu", k,
				  piece - done);
			done += k;
			cr_assert_lt(n, cap, "more cuts than len / min allows");
			cuts[n++] = off + done;
			start = off + done;
		}
		off += piece;
	}
	*ret_cuts = cuts;
	*ret_tail = len - start;
	return n;
}

static size_t chunk_whole(const struct chunker_params *p, const uint8_t *buf, size_t len,
			  size_t **ret_cuts, size_t *ret_tail)
{
	struct feed f = {.piece = SIZE_MAX};

	return chunk_all(p, buf, len, &f, ret_cuts, ret_tail);
}

/* Parameter sets the invariant tests run over, from tiny (many chunks, every phase exercised
 * often) to the store default, plus the degenerate min == avg == max. */
static const struct chunker_params param_sets[] = {
	{.min = 64, .avg = 256, .max = 1024},
	{.min = 1 * KiB, .avg = 4 * KiB, .max = 16 * KiB},
	{.min = 16 * KiB, .avg = 64 * KiB, .max = 256 * KiB},
	{.min = 100, .avg = 128, .max = 129},
	{.min = 4 * KiB, .avg = 4 * KiB, .max = 4 * KiB},
};

#define N_PARAM_SETS (sizeof(param_sets) / sizeof(param_sets[0]))

Test(chunker_golden, gear_table_checksum)
{
	uint8_t le[sizeof(chunker_gear)];

	/* Serialise little-endian so the pinned value does not depend on the host's byte order. */
	for (size_t i = 0; i < 256; i++)
		for (size_t k = 0; k < 8; k++)
			le[8 * i + k] = (uint8_t)(chunker_gear[i] >> (8 * k));
	cr_assert_eq(hash_check64(le, sizeof(le)), UINT64_C(0x2de56b68535a86a3),
		     "gear table changed: XXH3-64 is %016llx",
		     (unsigned long long)hash_check64(le, sizeof(le)));
	cr_assert_eq(chunker_gear[0], UINT64_C(0x4e4ce4a7b21847f4));
	cr_assert_eq(chunker_gear[255], UINT64_C(0x31529fec0e72de1b));
}

Test(chunker_golden, gear_table_reproducible)
{
	/* The generator documented in chunker.c: splitmix64 seeded with "pkgcache" big-endian. */
	uint64_t state = UINT64_C(0x706b676361636865);

	for (size_t i = 0; i < 256; i++) {
		uint64_t want = splitmix64(&state);

		cr_assert_eq(chunker_gear[i], want, "gear[%zu] is %016llx, generator gives %016llx",
			     i, (unsigned long long)chunker_gear[i], (unsigned long long)want);
	}
}

Test(chunker_golden, default_params_and_masks)
{
	struct chunker c;

	cr_assert_eq(chunker_default_params.min, 16 * KiB);
	cr_assert_eq(chunker_default_params.avg, 64 * KiB);
	cr_assert_eq(chunker_default_params.max, 256 * KiB);
	cr_assert_eq(chunker_params_validate(&chunker_default_params), 0);

	/* avg = 2^16: mask_s is the top 18 bits, mask_l the top 14. */
	chunker_init(&c, &chunker_default_params);
	cr_assert_eq(c.mask_s, UINT64_C(0xffffc00000000000));
	cr_assert_eq(c.mask_l, UINT64_C(0xfffc000000000000));
	cr_assert_eq(c.pos, 0);
	cr_assert_eq(c.hash, 0);
}

Test(chunker_golden, mask_widths)
{
	for (unsigned int bits = 6; bits <= 24; bits++) {
		struct chunker_params p = {.min = 64, .avg = 1u << bits, .max = 1u << bits};
		struct chunker c;

		cr_assert_eq(chunker_params_validate(&p), 0);
		chunker_init(&c, &p);
		cr_assert_eq(__builtin_popcountll(c.mask_s), (int)bits + 2, "avg 2^%u", bits);
		cr_assert_eq(__builtin_popcountll(c.mask_l), (int)bits - 2, "avg 2^%u", bits);
		/* Top bits, contiguous: adding the lowest set bit carries out of the word. */
		cr_assert_eq(c.mask_s + (c.mask_s & -c.mask_s), 0);
		cr_assert_eq(c.mask_l + (c.mask_l & -c.mask_l), 0);
	}
}

/* Cut points of the 8 MiB splitmix64(seed 42) input with the default parameters. */
static const size_t golden_cuts_8m[] = {
	62365,   91814,   135588,  203257,  269129,  335757,  416776,  541079,  608640,  684416,
	758443,  780920,  847526,  937347,  1005112, 1085589, 1178718, 1269405, 1345555, 1442022,
	1561957, 1638470, 1714630, 1792389, 1860868, 1928692, 1994524, 2064421, 2154486, 2216190,
	2289095, 2361034, 2431703, 2530905, 2584205, 2650126, 2716626, 2796291, 2875728, 2942103,
	3020417, 3095982, 3161992, 3240062, 3308633, 3345251, 3424251, 3492177, 3562419, 3609248,
	3644137, 3730239, 3825613, 3872998, 3943238, 4017998, 4168653, 4237455, 4344333, 4411030,
	4496589, 4568891, 4643384, 4735304, 4808661, 4829622, 4933798, 5053407, 5127442, 5209071,
	5249449, 5273811, 5348363, 5426043, 5520070, 5545534, 5616034, 5728738, 5797414, 5887446,
	5953391, 5997333, 6065749, 6163851, 6238075, 6307963, 6375932, 6459629, 6535686, 6559015,
	6647568, 6764171, 6790911, 6863015, 6884367, 6928113, 6999755, 7071883, 7171190, 7268206,
	7344104, 7438778, 7466308, 7558200, 7627489, 7693733, 7761273, 7829230, 7902775, 7991032,
	8059324, 8137162, 8223682, 8342000,
};

#define N_GOLDEN_CUTS_8M (sizeof(golden_cuts_8m) / sizeof(golden_cuts_8m[0]))

Test(chunker_golden, random_8m_cut_points)
{
	size_t len = 8 * MiB, tail;
	uint8_t *buf = random_bytes(42, len);
	size_t *cuts;
	size_t n = chunk_whole(&chunker_default_params, buf, len, &cuts, &tail);

	cr_assert_eq(n, N_GOLDEN_CUTS_8M, "%zu cut points, pinned %zu", n, N_GOLDEN_CUTS_8M);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(cuts[i], golden_cuts_8m[i], "cut %zu at %zu, pinned at %zu", i,
			     cuts[i], golden_cuts_8m[i]);
	cr_assert_eq(tail, 46608);
	free(cuts);
	free(buf);
}

Test(chunker_golden, zero_1m_cut_points)
{
	/*
	 * Over zeros the 64-byte window is constant and its top 18 bits are not all zero, so no
	 * mask ever matches and every chunk is cut at max; the last cut coincides with the end.
	 */
	size_t len = 1 * MiB, tail;
	uint8_t *buf = calloc(1, len);
	size_t *cuts;
	size_t n;

	cr_assert_not_null(buf);
	n = chunk_whole(&chunker_default_params, buf, len, &cuts, &tail);
	cr_assert_eq(n, 4);
	cr_assert_eq(cuts[0], 262144);
	cr_assert_eq(cuts[1], 524288);
	cr_assert_eq(cuts[2], 786432);
	cr_assert_eq(cuts[3], 1048576);
	cr_assert_eq(tail, 0);
	free(cuts);
	free(buf);
}

Test(chunker, sizes_within_bounds)
{
	size_t len = 8 * MiB + 12345;
	uint8_t *buf = random_bytes(7, len);

	for (size_t s = 0; s < N_PARAM_SETS; s++) {
		const struct chunker_params *p = &param_sets[s];
		size_t *cuts, tail, prev = 0, sum = 0;
		size_t n = chunk_whole(p, buf, len, &cuts, &tail);

		cr_assert_eq(chunker_params_validate(p), 0);
		cr_assert_gt(n, 0);
		for (size_t i = 0; i < n; i++) {
			size_t size = cuts[i] - prev;

			cr_assert(size >= p->min && size <= p->max,
				  "set %zu: chunk %zu is %zu bytes, outside [%u, %u]", s, i, size,
				  p->min, p->max);
			sum += size;
			prev = cuts[i];
		}
		cr_assert_leq(tail, p->max, "set %zu: final chunk %zu bytes", s, tail);
		cr_assert_eq(sum + tail, len, "set %zu", s);
		free(cuts);
	}
	free(buf);
}

Test(chunker, mean_size_near_avg)
{
	/*
	 * Catches a mask of the wrong width or a phase boundary in the wrong place: both move the
	 * mean far off. With min = avg / 4 and max = 4 * avg the mean is about 1.15 * avg.
	 */
	static const struct chunker_params sets[] = {
		{.min = 1 * KiB, .avg = 4 * KiB, .max = 16 * KiB},
		{.min = 16 * KiB, .avg = 64 * KiB, .max = 256 * KiB},
	};
	size_t len = 16 * MiB;
	uint8_t *buf = random_bytes(99, len);

	for (size_t s = 0; s < 2; s++) {
		size_t *cuts, tail;
		size_t n = chunk_whole(&sets[s], buf, len, &cuts, &tail);
		double mean = (double)(len - tail) / (double)n;

		cr_assert(mean > 1.0 * sets[s].avg && mean < 1.3 * sets[s].avg,
			  "avg %u: mean chunk %.0f", sets[s].avg, mean);
		free(cuts);
	}
	free(buf);
}

Test(chunker, split_independent)
{
	/* 1 and 7 byte pieces land every phase boundary at every alignment within a call. */
	static const struct feed feeds[] = {
		{.piece = 1},
		{.piece = 7},
		{.piece = 4096},
		{.piece = 0, .max_piece = 3, .state = 1},
		{.piece = 0, .max_piece = 100, .state = 2},
		{.piece = 0, .max_piece = 100000, .state = 3},
	};
	size_t len = 4 * MiB + 3;
	uint8_t *buf = random_bytes(1234, len);

	for (size_t s = 0; s < N_PARAM_SETS; s++) {
		const struct chunker_params *p = &param_sets[s];
		size_t *want, want_tail;
		size_t want_n = chunk_whole(p, buf, len, &want, &want_tail);

		for (size_t f = 0; f < sizeof(feeds) / sizeof(feeds[0]); f++) {
			struct feed fd = feeds[f];
			size_t *got, got_tail;
			size_t got_n = chunk_all(p, buf, len, &fd, &got, &got_tail);

			cr_assert_eq(got_n, want_n, "set %zu feed %zu: %zu cuts, whole gives %zu",
				     s, f, got_n, want_n);
			for (size_t i = 0; i < got_n; i++)
				cr_assert_eq(got[i], want[i], "set %zu feed %zu: cut %zu", s, f, i);
			cr_assert_eq(got_tail, want_tail);
			free(got);
		}
		free(want);
	}
	free(buf);
}

/* The gear hash of the 64 bytes ending at end (exclusive), computed from scratch. */
static uint64_t window_hash(const uint8_t *end)
{
	uint64_t h = 0;

	for (const uint8_t *q = end - 64; q < end; q++)
		h = (h << 1) + chunker_gear[*q];
	return h;
}

Test(chunker, hash_is_a_64_byte_window)
{
	/*
	 * Wherever a chunk starts, at every position where it may cut the hash must equal the
	 * gear hash of just the last 64 bytes: that is what makes a cut independent of where the
	 * chunk began, and so what lets cuts resynchronise after an edit.
	 */
	const struct chunker_params p = {.min = 256, .avg = 1 * KiB, .max = 4 * KiB};
	size_t len = 1 * MiB;
	uint8_t *buf = random_bytes(5, len);
	uint64_t state = 77;
	size_t checked = 0;

	for (int trial = 0; trial < 200; trial++) {
		size_t start = (size_t)(splitmix64(&state) % (len - 2 * p.max));
		struct chunker c;

		chunker_init(&c, &p);
		for (size_t off = start; off < start + p.max; off++) {
			size_t k = chunker_scan(&c, buf + off, 1);

			if (k != CHUNKER_NO_CUT)
				break;
			if (c.pos >= p.min) {
				cr_assert_eq(c.hash, window_hash(buf + off + 1),
					     "start %zu, pos %u", start, c.pos);
				checked++;
			}
		}
	}
	/* Make sure the loop above did not just break out every time. */
	cr_assert_gt(checked, 200 * 100);
	free(buf);
}

Test(chunker, empty_scan_and_reset)
{
	const struct chunker_params p = {.min = 64, .avg = 64, .max = 64};
	uint8_t buf[200] = {0};
	struct chunker c;

	chunker_init(&c, &p);
	cr_assert_eq(chunker_scan(&c, buf, 0), CHUNKER_NO_CUT);
	cr_assert_eq(c.pos, 0);
	cr_assert_eq(chunker_scan(&c, buf, 10), CHUNKER_NO_CUT);
	cr_assert_eq(c.pos, 10);
	cr_assert_eq(chunker_scan(&c, buf, 0), CHUNKER_NO_CUT);
	cr_assert_eq(c.pos, 10);
	/* min == max: the cut is forced 54 bytes on, then the state starts over. */
	cr_assert_eq(chunker_scan(&c, buf, sizeof(buf)), 54);
	cr_assert_eq(c.pos, 0);
	cr_assert_eq(c.hash, 0);
	cr_assert_eq(chunker_scan(&c, buf, sizeof(buf)), 64);
}

/*
 * Chunk orig and a copy edited at off (del bytes removed, ins bytes of fresh data inserted) and
 * check that the cuts before the edit are unchanged and that nearly all cuts after it reappear,
 * shifted by ins - del.
 */
static void check_resync(const uint8_t *orig, size_t len, size_t off, size_t del, size_t ins)
{
	const struct chunker_params *p = &chunker_default_params;
	size_t elen = len - del + ins;
	uint8_t *ed = malloc(elen);
	size_t *a, *b, atail, btail, na, nb;
	size_t before = 0, after = 0, common = 0;

	cr_assert_not_null(ed);
	memcpy(ed, orig, off);
	for (size_t i = 0; i < ins; i++)
		ed[off + i] = (uint8_t)(0xa5 ^ i);
	memcpy(ed + off + ins, orig + off + del, len - off - del);

	na = chunk_whole(p, orig, len, &a, &atail);
	nb = chunk_whole(p, ed, elen, &b, &btail);

	/* A cut at or before off saw no edited byte. */
	while (before < na && a[before] <= off) {
		cr_assert_lt(before, nb);
		cr_assert_eq(b[before], a[before], "cut %zu before the edit moved", before);
		before++;
	}

	/* Past the edit, count the original cuts found again in the edited stream, shifted. */
	for (size_t i = before, j = before; i < na; i++) {
		size_t want = a[i] - del + ins;

		if (a[i] < off + del)
			continue;
		after++;
		while (j < nb && b[j] < want)
			j++;
		if (j < nb && b[j] == want)
			common++;
	}
	cr_assert_gt(after, 50, "edit too close to the end to tell");
	cr_assert_geq(common, after - 2, "edit at %zu (-%zu +%zu): only %zu of %zu cuts survive",
		      off, del, ins, common, after);
	cr_assert_eq(btail, atail, "the final chunk differs");
	free(a);
	free(b);
	free(ed);
}

Test(chunker, resync_after_edit)
{
	size_t len = 8 * MiB;
	uint8_t *buf = random_bytes(42, len);

	check_resync(buf, len, 1000, 0, 5);
	check_resync(buf, len, 10, 3, 0);
	check_resync(buf, len, 100000, 17, 4000);
	check_resync(buf, len, 2 * MiB, 1, 1);
	free(buf);
}

Test(chunker, params_validate)
{
	static const struct {
		struct chunker_params p;
		int want;
	} cases[] = {
		{{16 * KiB, 64 * KiB, 256 * KiB}, 0},
		{{64, 64, 64}, 0},
		{{64, 128, CHUNKER_MAX_LIMIT}, 0},
		{{16 * MiB, 16 * MiB, 16 * MiB}, 0},
		{{65 * KiB, 64 * KiB, 256 * KiB}, -EINVAL},             /* min > avg */
		{{16 * KiB, 64 * KiB + 1, 256 * KiB}, -EINVAL},         /* avg not a power of two */
		{{16 * KiB, 48 * KiB, 256 * KiB}, -EINVAL},             /* avg not a power of two */
		{{16 * KiB, 64 * KiB, 64 * KiB - 1}, -EINVAL},          /* max < avg */
		{{63, 64, 256}, -EINVAL},                               /* min below the limit */
		{{0, 0, 0}, -EINVAL},                                   /* everything zero */
		{{16 * KiB, 64 * KiB, CHUNKER_MAX_LIMIT + 1}, -EINVAL}, /* max above the limit */
		{{32 * MiB, 32 * MiB, 32 * MiB}, -EINVAL},              /* all above the limit */
		{{64, 1u << 31, UINT32_MAX}, -EINVAL},                  /* huge avg, max */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_eq(chunker_params_validate(&cases[i].p), cases[i].want,
			     "case %zu {%u, %u, %u}", i, cases[i].p.min, cases[i].p.avg,
			     cases[i].p.max);
}
