/* SPDX-License-Identifier: MIT */
/*
 * Tests for chunk identities: XXH3-128 keys, SHA-256 digests, XXH3-64 header checksums, hex
 * formatting and comparison.
 *
 * Keys and checksums are stored on disk and compared across machines and library versions, so
 * they are pinned against known answers: the XXH3 values were computed with the xxh128sum and
 * `xxhsum -H3` command-line tools (xxHash 0.8.1), the SHA-256 values are the FIPS 180-2 examples.
 * A key must be in canonical (big-endian) order, the order xxh128sum prints, so comparing hex
 * strings checks the byte order too.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "hash.h"

/* Bytes i % 251 for i in [0, len): a pattern with no period that divides a power of two. */
static uint8_t *pattern(size_t len)
{
	uint8_t *buf = malloc(len ? len : 1);

	cr_assert_not_null(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(i % 251);
	return buf;
}

static void assert_key(const void *data, size_t len, const char *want)
{
	char hex[2 * HASH_KEY_SIZE + 1];
	chunk_key k;

	hash_key(data, len, &k);
	hash_hex(k.b, sizeof(k.b), hex);
	cr_assert_str_eq(hex, want, "XXH3-128 of %zu bytes", len);
}

static void assert_digest(const void *data, size_t len, const char *want)
{
	char hex[2 * HASH_DIGEST_SIZE + 1];
	chunk_digest d;

	hash_digest(data, len, &d);
	hash_hex(d.b, sizeof(d.b), hex);
	cr_assert_str_eq(hex, want, "SHA-256 of %zu bytes", len);
}

Test(hash, key_known_answers)
{
	/* Lengths chosen to go through each of XXH3's length-specific code paths. */
	assert_key("", 0, "99aa06d3014798d86001c324468d497f");
	assert_key("a", 1, "a96faf705af16834e6c632b61e964e1f");
	assert_key("abc", 3, "06b05ab6733a618578af5f94892f3950");
	assert_key("The quick brown fox jumps over the lazy dog", 43,
		   "ddd650205ca3e7fa24a1cc2e3a8a7651");
}

Test(hash, key_known_answers_long)
{
	uint8_t *p200 = pattern(200);
	uint8_t *p1m = pattern(1u << 20);

	assert_key(p200, 200, "cb0395310643ba0edd97e9af3609d9f5");
	assert_key(p1m, 1u << 20, "53738d98098cabba6e0d7ac36b8c10ff");
	free(p200);
	free(p1m);
}

Test(hash, key_is_big_endian)
{
	chunk_key k;

	hash_key("", 0, &k);
	cr_assert_eq(k.b[0], 0x99);
	cr_assert_eq(k.b[1], 0xaa);
	cr_assert_eq(k.b[15], 0x7f);
}

Test(hash, digest_known_answers)
{
	uint8_t *million_a = malloc(1000000);

	assert_digest("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_digest("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
		      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

	cr_assert_not_null(million_a);
	memset(million_a, 'a', 1000000);
	assert_digest(million_a, 1000000,
		      "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	free(million_a);
}

Test(hash, check64_known_answers)
{
	uint8_t *p200 = pattern(200);

	cr_assert_eq(hash_check64("", 0), UINT64_C(0x2d06800538d394c2));
	cr_assert_eq(hash_check64("abc", 3), UINT64_C(0x78af5f94892f3950));
	cr_assert_eq(hash_check64("The quick brown fox jumps over the lazy dog", 43),
		     UINT64_C(0xce7d19a5418fb365));
	cr_assert_eq(hash_check64(p200, 200), UINT64_C(0xf42a8864feaf0703));
	free(p200);
}

Test(hash, hex)
{
	static const uint8_t bytes[] = {0x00, 0x01, 0x09, 0x0a, 0x7f, 0x80, 0xab, 0xff};
	char buf[2 * sizeof(bytes) + 2];

	/* The byte after the terminator must survive: the contract is 2 * size + 1 bytes. */
	memset(buf, 'X', sizeof(buf));
	cr_assert_eq(hash_hex(bytes, sizeof(bytes), buf), buf);
	cr_assert_str_eq(buf, "0001090a7f80abff");
	cr_assert_eq(buf[sizeof(buf) - 1], 'X');

	memset(buf, 'X', sizeof(buf));
	cr_assert_eq(hash_hex(bytes, 0, buf), buf);
	cr_assert_eq(buf[0], '\0');
	cr_assert_eq(buf[1], 'X');
}

Test(hash, key_equal)
{
	chunk_key a, b, c;

	hash_key("abc", 3, &a);
	hash_key("abc", 3, &b);
	hash_key("abd", 3, &c);
	cr_assert(hash_key_equal(&a, &a));
	cr_assert(hash_key_equal(&a, &b));
	cr_assert_not(hash_key_equal(&a, &c));

	/* One bit anywhere makes a difference, the first and the last byte included. */
	for (size_t i = 0; i < sizeof(a.b); i++) {
		b = a;
		b.b[i] ^= 0x01;
		cr_assert_not(hash_key_equal(&a, &b), "flip in byte %zu", i);
		cr_assert_not(hash_key_equal(&b, &a), "flip in byte %zu", i);
	}
}

Test(hash, digest_equal)
{
	chunk_digest a, b, c;

	hash_digest("abc", 3, &a);
	hash_digest("abc", 3, &b);
	hash_digest("abd", 3, &c);
	cr_assert(hash_digest_equal(&a, &a));
	cr_assert(hash_digest_equal(&a, &b));
	cr_assert_not(hash_digest_equal(&a, &c));

	for (size_t i = 0; i < sizeof(a.b); i++) {
		b = a;
		b.b[i] ^= 0x80;
		cr_assert_not(hash_digest_equal(&a, &b), "flip in byte %zu", i);
		cr_assert_not(hash_digest_equal(&b, &a), "flip in byte %zu", i);
	}
}
