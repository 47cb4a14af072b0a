/* SPDX-License-Identifier: MIT */
/*
 * Thin wrappers over libxxhash and OpenSSL so that the rest of the code never includes either.
 */
#include "hash.h"

#include <string.h>

#include <openssl/sha.h>
#include <xxhash.h>

void hash_key(const void *data, size_t len, chunk_key *ret)
{
	XXH128_hash_t h = XXH3_128bits(data, len);
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, h);
	memcpy(ret->b, c.digest, sizeof(ret->b));
}

void hash_digest(const void *data, size_t len, chunk_digest *ret)
{
	SHA256(data, len, ret->b);
}

bool hash_key_equal(const chunk_key *a, const chunk_key *b)
{
	return memcmp(a->b, b->b, sizeof(a->b)) == 0;
}

bool hash_digest_equal(const chunk_digest *a, const chunk_digest *b)
{
	return memcmp(a->b, b->b, sizeof(a->b)) == 0;
}

char *hash_hex(const uint8_t *bytes, size_t size, char *buf)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < size; i++) {
		buf[2 * i] = digits[bytes[i] >> 4];
		buf[2 * i + 1] = digits[bytes[i] & 0xf];
	}
	buf[2 * size] = '\0';
	return buf;
}

uint64_t hash_check64(const void *data, size_t len)
{
	return XXH3_64bits(data, len);
}
