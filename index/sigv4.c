/* SPDX-License-Identifier: MIT */
/*
 * AWS Signature Version 4 (sigv4.h). The canonical request is built in a growing buffer, hashed,
 * and the string to sign is HMAC'ed with a key derived from the secret through the date, region
 * and service. Intermediate keys are wiped before returning; nothing here logs.
 */
#include "sigv4.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SIGV4_MAX_HEADERS 64

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static bool unreserved(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

static void sb_encode(struct sbuf *b, const char *s, size_t n, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[3] = {'%', hex[c >> 4], hex[c & 15]};

		if (unreserved(c) || (keep_slash && c == '/'))
			sb_add(b, (const char *)&s[i], 1);
		else
			sb_add(b, esc, 3);
	}
}

int sigv4_uri_encode(const char *s, int keep_slash, char *buf, size_t len)
{
	struct sbuf b = {0};
	int r = 0;

	sb_encode(&b, s, strlen(s), keep_slash);
	if (b.oom)
		r = -ENOMEM;
	else if (b.len + 1 > len)
		r = -ENOSPC;
	else
		memcpy(buf, b.p ? b.p : "", b.len + 1);
	free(b.p);
	return r;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Percent-decode s[0..n) into a new string (a malformed escape stays literal). */
static char *pct_decode(const char *s, size_t n)
{
	char *out = malloc(n + 1);
	size_t o = 0;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	return out;
}

struct pair {
	char *a,
		*b; /* query: encoded key and value; headers: lower-case name and canonical value */
	size_t order;
};

static int pair_cmp(const void *x, const void *y)
{
	const struct pair *p = x, *q = y;
	int c = strcmp(p->a, q->a);

	if (c)
		return c;
	c = strcmp(p->b, q->b);
	if (c)
		return c;
	return p->order < q->order ? -1 : p->order > q->order;
}

static void pairs_free(struct pair *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].a);
		free(v[i].b);
	}
	free(v);
}

/* Encode one side of a query pair: decode what the caller encoded, then encode the AWS way. */
static char *query_part(const char *s, size_t n)
{
	struct sbuf b = {0};
	char *dec = pct_decode(s, n);

	if (!dec)
		return NULL;
	sb_encode(&b, dec, strlen(dec), false);
	sb_add(&b, "", 0);
	free(dec);
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

static int canonical_query(const char *q, struct sbuf *out)
{
	struct pair *v = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	while (q && *q) {
		const char *amp = strchr(q, '&'), *end = amp ? amp : q + strlen(q);
		const char *eq = memchr(q, '=', (size_t)(end - q));

		if (end > q) {
			if (n == cap) {
				struct pair *nv;

				cap = cap ? cap * 2 : 8;
				nv = realloc(v, cap * sizeof(*v));
				if (!nv) {
					r = -ENOMEM;
					goto out_free;
				}
				v = nv;
			}
			v[n].a = query_part(q, (size_t)((eq ? eq : end) - q));
			v[n].b =
				eq ? query_part(eq + 1, (size_t)(end - eq - 1)) : query_part("", 0);
			v[n].order = n;
			n++;
			if (!v[n - 1].a || !v[n - 1].b) {
				r = -ENOMEM;
				goto out_free;
			}
		}
		q = amp ? amp + 1 : end;
	}
	if (n)
		qsort(v, n, sizeof(*v), pair_cmp);
	for (size_t i = 0; i < n; i++) {
		if (i)
			sb_puts(out, "&");
		sb_puts(out, v[i].a);
		sb_puts(out, "=");
		sb_puts(out, v[i].b);
	}
out_free:
	pairs_free(v, n);
	return r;
}

/* Lower-case name; value trimmed with inner runs of spaces and tabs collapsed to one space. */
static int header_pair(const char *name, size_t nlen, const char *value, struct pair *ret)
{
	struct sbuf b = {0};
	char *lname;
	bool space = false;

	while (nlen && (name[nlen - 1] == ' ' || name[nlen - 1] == '\t'))
		nlen--;
	if (!nlen)
		return -EINVAL;
	lname = malloc(nlen + 1);
	if (!lname)
		return -ENOMEM;
	for (size_t i = 0; i < nlen; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c <= ' ' || c >= 127) {
			free(lname);
			return -EINVAL;
		}
		lname[i] = (char)tolower(c);
	}
	lname[nlen] = '\0';
	while (*value == ' ' || *value == '\t')
		value++;
	for (; *value; value++) {
		if (*value == ' ' || *value == '\t') {
			space = true;
			continue;
		}
		if (*value == '\r' || *value == '\n') {
			free(lname);
			free(b.p);
			return -EINVAL;
		}
		if (space)
			sb_add(&b, " ", 1);
		space = false;
		sb_add(&b, value, 1);
	}
	sb_add(&b, "", 0);
	if (b.oom) {
		free(lname);
		free(b.p);
		return -ENOMEM;
	}
	ret->a = lname;
	ret->b = b.p;
	return 0;
}

static int header_cmp(const void *x, const void *y)
{
	const struct pair *p = x, *q = y;
	int c = strcmp(p->a, q->a);

	if (c)
		return c;
	return p->order < q->order ? -1 : p->order > q->order;
}

static int add_header(struct pair *h, size_t *n, const char *name, const char *value)
{
	int r = header_pair(name, strlen(name), value, &h[*n]);

	if (r)
		return r;
	h[*n].order = *n;
	(*n)++;
	return 0;
}

static bool valid_date(const char *d)
{
	if (!d || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
		return false;
	for (int i = 0; i < 15; i++)
		if (i != 8 && !isdigit((unsigned char)d[i]))
			return false;
	return true;
}

static bool valid_token(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < ' ' || *s == 127)
			return false;
	return true;
}

int sigv4_sha256_hex(const void *data, size_t len, char ret[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
		return -EIO;
	for (unsigned i = 0; i < 32; i++) {
		ret[2 * i] = hex[md[i] >> 4];
		ret[2 * i + 1] = hex[md[i] & 15];
	}
	ret[64] = '\0';
	return 0;
}

static int hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
	unsigned int olen = 0;

	if (!HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out,
		  &olen) ||
	    olen != 32)
		return -EIO;
	return 0;
}

static int signature(const struct sigv4_request *r, const char *scope_date, const char *sts,
		     char out[65])
{
	static const char hex[] = "0123456789abcdef";
	size_t slen = strlen(r->secret_key);
	unsigned char k[32], sig[32];
	char *k0 = malloc(slen + 5);
	int ret = -ENOMEM;

	if (!k0)
		return -ENOMEM;
	memcpy(k0, "AWS4", 4);
	memcpy(k0 + 4, r->secret_key, slen + 1);
	ret = hmac(k0, slen + 4, scope_date, k);
	if (!ret)
		ret = hmac(k, 32, r->region, k);
	if (!ret)
		ret = hmac(k, 32, r->service, k);
	if (!ret)
		ret = hmac(k, 32, "aws4_request", k);
	if (!ret)
		ret = hmac(k, 32, sts, sig);
	if (!ret) {
		for (unsigned i = 0; i < 32; i++) {
			out[2 * i] = hex[sig[i] >> 4];
			out[2 * i + 1] = hex[sig[i] & 15];
		}
		out[64] = '\0';
	}
	OPENSSL_cleanse(k0, slen + 4);
	OPENSSL_cleanse(k, sizeof(k));
	free(k0);
	return ret;
}

static bool request_valid(const struct sigv4_request *r)
{
	return r && r->method && *r->method && valid_token(r->host) && r->path &&
	       r->path[0] == '/' && r->payload_sha256 && *r->payload_sha256 &&
	       valid_date(r->amz_date) && valid_token(r->region) && valid_token(r->service) &&
	       valid_token(r->access_key) && r->secret_key && *r->secret_key &&
	       (!r->session_token || valid_token(r->session_token)) &&
	       r->n_headers <= SIGV4_MAX_HEADERS && (!r->n_headers || r->headers);
}

/* The headers to sign into h (*ret_n of them), sorted by name; the caller frees them. */
static int collect_headers(const struct sigv4_request *r, struct pair *h, size_t *ret_n)
{
	size_t nh = 0;
	int ret;

	ret = add_header(h, &nh, "host", r->host);
	if (!ret)
		ret = add_header(h, &nh, "x-amz-date", r->amz_date);
	if (!ret && strcmp(r->service, "s3") == 0)
		ret = add_header(h, &nh, "x-amz-content-sha256", r->payload_sha256);
	if (!ret && r->session_token)
		ret = add_header(h, &nh, "x-amz-security-token", r->session_token);
	for (size_t i = 0; !ret && i < r->n_headers; i++) {
		const char *colon = r->headers[i] ? strchr(r->headers[i], ':') : NULL;

		if (!colon) {
			ret = -EINVAL;
			break;
		}
		ret = header_pair(r->headers[i], (size_t)(colon - r->headers[i]), colon + 1,
				  &h[nh]);
		if (!ret) {
			h[nh].order = nh;
			nh++;
		}
	}
	*ret_n = nh;
	if (ret)
		return ret;
	/* By name only: repeated names keep their order and are joined with ',' below. */
	qsort(h, nh, sizeof(h[0]), header_cmp);
	return 0;
}

/* The canonical request into creq, and the signed headers' names (a;b;c) into signed_hdrs. */
static int canonical_request(const struct sigv4_request *r, const struct pair *h, size_t nh,
			     struct sbuf *creq, struct sbuf *signed_hdrs)
{
	int ret;

	sb_puts(creq, r->method);
	sb_puts(creq, "\n");
	sb_puts(creq, r->path);
	sb_puts(creq, "\n");
	ret = canonical_query(r->query, creq);
	if (ret)
		return ret;
	sb_puts(creq, "\n");
	for (size_t i = 0; i < nh; i++) {
		bool same = i > 0 && strcmp(h[i].a, h[i - 1].a) == 0;

		if (same) {
			sb_puts(creq, ",");
		} else {
			if (i > 0)
				sb_puts(creq, "\n");
			sb_puts(creq, h[i].a);
			sb_puts(creq, ":");
			if (signed_hdrs->len)
				sb_puts(signed_hdrs, ";");
			sb_puts(signed_hdrs, h[i].a);
		}
		sb_puts(creq, h[i].b);
	}
	sb_puts(creq, "\n\n");
	sb_puts(creq, signed_hdrs->p ? signed_hdrs->p : "");
	sb_puts(creq, "\n");
	sb_puts(creq, r->payload_sha256);
	return creq->oom || signed_hdrs->oom ? -ENOMEM : 0;
}

/* DATE/REGION/SERVICE/aws4_request: the credential scope. */
static void put_scope(struct sbuf *b, const struct sigv4_request *r, const char *scope_date)
{
	sb_puts(b, scope_date);
	sb_puts(b, "/");
	sb_puts(b, r->region);
	sb_puts(b, "/");
	sb_puts(b, r->service);
	sb_puts(b, "/aws4_request");
}

int sigv4_authorization(const struct sigv4_request *r, char *buf, size_t len)
{
	struct pair h[SIGV4_MAX_HEADERS + 4];
	struct sbuf creq = {0}, signed_hdrs = {0}, sts = {0}, auth = {0};
	char scope_date[9], creq_hash[65], sig[65];
	size_t nh = 0;
	int ret;

	if (!request_valid(r))
		return -EINVAL;
	memcpy(scope_date, r->amz_date, 8);
	scope_date[8] = '\0';

	ret = collect_headers(r, h, &nh);
	if (!ret)
		ret = canonical_request(r, h, nh, &creq, &signed_hdrs);
	if (!ret)
		ret = sigv4_sha256_hex(creq.p, creq.len, creq_hash);
	if (ret)
		goto out_free;

	sb_puts(&sts, "AWS4-HMAC-SHA256\n");
	sb_puts(&sts, r->amz_date);
	sb_puts(&sts, "\n");
	put_scope(&sts, r, scope_date);
	sb_puts(&sts, "\n");
	sb_puts(&sts, creq_hash);
	if (sts.oom) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = signature(r, scope_date, sts.p, sig);
	if (ret)
		goto out_free;

	sb_puts(&auth, "AWS4-HMAC-SHA256 Credential=");
	sb_puts(&auth, r->access_key);
	sb_puts(&auth, "/");
	put_scope(&auth, r, scope_date);
	sb_puts(&auth, ", SignedHeaders=");
	sb_puts(&auth, signed_hdrs.p);
	sb_puts(&auth, ", Signature=");
	sb_puts(&auth, sig);
	OPENSSL_cleanse(sig, sizeof(sig));
	if (auth.oom)
		ret = -ENOMEM;
	else if (auth.len + 1 > len)
		ret = -ENOSPC;
	else
		memcpy(buf, auth.p, auth.len + 1);
out_free:
	for (size_t i = 0; i < nh; i++) {
		free(h[i].a);
		free(h[i].b);
	}
	free(creq.p);
	free(signed_hdrs.p);
	free(sts.p);
	if (auth.p)
		OPENSSL_cleanse(auth.p, auth.len);
	free(auth.p);
	return ret;
}
