/* SPDX-License-Identifier: MIT */
/*
 * AWS Signature Version 4 for request headers: a pure function from a request's method, path,
 * query, headers, payload hash and credentials to the value of its Authorization header. No
 * network, no clock: the caller passes the date, so the function is checked against the published
 * test vectors (tests/test_sigv4.c).
 *
 * The canonical request follows the AWS rules: the query is split into pairs, each key and value
 * percent-decoded and re-encoded (only A-Z a-z 0-9 - _ . ~ stay literal, hex digits upper case),
 * and sorted by key then value; header names are lower-cased, values trimmed with inner runs of
 * spaces collapsed, repeated names joined with ',', and sorted by name. The path is taken as
 * given (S3 signs the path once-encoded, exactly as sent).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The SHA-256 of the empty string, as x-amz-content-sha256 wants it for bodiless requests. */
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct sigv4_request {
	const char *method;
	const char *host;  /* as in the Host header, with :port when not the scheme's default */
	const char *path;  /* already URI-encoded absolute path, e.g. "/bucket/packs/ab.pack" */
	const char *query; /* raw query without '?', may be "" or NULL */
	/* Extra "Name:value" headers to sign besides those added here (see below). */
	const char *const *headers;
	size_t n_headers;
	const char *payload_sha256; /* lowercase hex, or "UNSIGNED-PAYLOAD" */
	const char *amz_date;       /* "YYYYMMDDTHHMMSSZ" */
	const char *region, *service, *access_key, *secret_key;
	const char *session_token; /* NULL if none */
};

/*
 * Write the value of the Authorization header ("AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
 * Signature=...") into buf. The headers signed are host, x-amz-date (amz_date),
 * x-amz-content-sha256 (payload_sha256) when the service is "s3", x-amz-security-token when
 * session_token is set, and r->headers; the caller must send all of them with exactly these values
 * and must not list those four in r->headers. Returns 0, -ENOSPC when len is too small, -EINVAL on
 * bad input (a missing field, a malformed date, a header without ':'), -ENOMEM.
 */
int sigv4_authorization(const struct sigv4_request *r, char *buf, size_t len);

/* SHA-256 of data as 64 lowercase hex digits and a NUL, into ret. 0 or -EIO (libcrypto failed). */
int sigv4_sha256_hex(const void *data, size_t len, char ret[65]);

/*
 * Percent-encode s into buf the AWS way: A-Z a-z 0-9 - _ . ~ literal, '/' literal when keep_slash,
 * everything else %XX with upper-case hex. 0, or -ENOSPC when len is too small.
 */
int sigv4_uri_encode(const char *s, int keep_slash, char *buf, size_t len);
