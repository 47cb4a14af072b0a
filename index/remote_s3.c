/* SPDX-License-Identifier: MIT */
/*
 * The s3:// remote: S3 or an S3-compatible server, every request signed with SigV4 (sigv4.h).
 *
 *   s3://bucket[/prefix][?endpoint=URL&region=R&addressing=path|virtual]
 *
 * Objects are keys "<prefix>/<name>". Credentials: remote_creds.c (the environment, the shared
 * credentials file, the container and instance credentials endpoints, kept fresh).
 * Region: region=, AWS_REGION, AWS_DEFAULT_REGION, us-east-1. Endpoint: endpoint=,
 * AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, https://s3.<region>.amazonaws.com. A custom endpoint
 * means path-style addressing (host/bucket/key), AWS virtual-hosted (bucket.host/key).
 *
 * Each attempt is signed anew (its x-amz-date is the attempt's), with the payload's SHA-256 as
 * x-amz-content-sha256: a body corrupted on the way is refused by the server. Listing is
 * ListObjectsV2 with delimiter '/', page by page, each page capped at REMOTE_MAX_LIST_RESPONSE.
 */
#include "remote_priv.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "sigv4.h"
#include "util.h"

/* Pages of a listing followed at most: 10 million keys at S3's 1000 per page. */
#define S3_MAX_PAGES 10000

static void wipe_token(char *token)
{
	if (token) {
		explicit_bzero(token, strlen(token));
		free(token);
	}
}

static int s3_sign(struct remote *r, const struct remote_xfer *x, struct curl_slist **hdrs)
{
	const char *signed_hdrs[ARRAY_SIZE(x->headers)];
	const char *payload = x->payload_sha256 ? x->payload_sha256 : SIGV4_EMPTY_SHA256;
	char date[17], line[1100], auth[1024];
	struct sigv4_request q = {
		.method = x->method,
		.host = r->host,
		.path = x->path,
		.query = x->query ? x->query : "",
		.headers = signed_hdrs,
		.payload_sha256 = payload,
		.amz_date = date,
		.region = r->region,
		.service = "s3",
	};
	char *id, *secret, *token;
	struct curl_slist *h;
	struct tm tm;
	time_t now = time(NULL);
	int ret;

	for (size_t i = 0; i < ARRAY_SIZE(x->headers) && x->headers[i]; i++)
		signed_hdrs[q.n_headers++] = x->headers[i];
	if (!gmtime_r(&now, &tm) || strftime(date, sizeof(date), "%Y%m%dT%H%M%SZ", &tm) != 16)
		return -EIO;
	ret = remote_s3_credentials(r, &id, &secret, &token);
	if (ret < 0)
		return ret;
	q.access_key = id;
	q.secret_key = secret;
	q.session_token = token;
	ret = sigv4_authorization(&q, auth, sizeof(auth));
	explicit_bzero(secret, strlen(secret));
	free(secret);
	free(id);
	if (ret < 0) {
		wipe_token(token);
		return ret;
	}

	snprintf(line, sizeof(line), "Host: %s", r->host);
	h = curl_slist_append(*hdrs, line);
	if (h) {
		*hdrs = h;
		snprintf(line, sizeof(line), "x-amz-date: %s", date);
		h = curl_slist_append(*hdrs, line);
	}
	if (h) {
		*hdrs = h;
		snprintf(line, sizeof(line), "x-amz-content-sha256: %s", payload);
		h = curl_slist_append(*hdrs, line);
	}
	if (h && token) {
		/* Its own allocation: STS does not bound a token's size (AWS's grow with session
		 * policies and tags), and a cut one would not match the signature over it. */
		size_t n = strlen("x-amz-security-token: ") + strlen(token) + 1;
		char *tline = malloc(n);

		*hdrs = h;
		h = NULL;
		if (tline) {
			snprintf(tline, n, "x-amz-security-token: %s", token);
			h = curl_slist_append(*hdrs, tline);
			explicit_bzero(tline, n);
			free(tline);
		}
	}
	if (h) {
		*hdrs = h;
		snprintf(line, sizeof(line), "Authorization: %s", auth);
		h = curl_slist_append(*hdrs, line);
		explicit_bzero(line, sizeof(line));
	}
	explicit_bzero(auth, sizeof(auth));
	wipe_token(token);
	if (!h)
		return -ENOMEM;
	*hdrs = h;
	return 0;
}

static char *obj_path(const struct remote *r, const char *name)
{
	char *p;

	if (asprintf(&p, "%s%s%s", r->root, r->key_prefix, name) < 0)
		return NULL;
	return p;
}

static int s3_get(struct remote *r, const char *name, uint64_t off, uint64_t len,
		  struct remote_sink *s)
{
	char *path = obj_path(r, name);
	int ret;

	if (!path)
		return -ENOMEM;
	ret = remote_http_get_path(r, path, off, len, s);
	free(path);
	return ret;
}

/* SHA-256 of len bytes of src, reading an fd by pread. */
static int payload_hash(const struct remote_src *src, char ret[65])
{
	EVP_MD_CTX *ctx;
	unsigned char md[32];
	static const char hex[] = "0123456789abcdef";
	char *buf = NULL;
	uint64_t done = 0;
	int r = 0;

	if (src->fd < 0)
		return sigv4_sha256_hex(src->data, src->len, ret);
	ctx = EVP_MD_CTX_new();
	buf = malloc(1 << 20);
	if (!ctx || !buf || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		r = !ctx || !buf ? -ENOMEM : -EIO;
		goto out_free;
	}
	while (done < src->len) {
		size_t n = (size_t)MIN(src->len - done, (uint64_t)(1 << 20));

		r = pread_all(src->fd, buf, n, (off_t)done);
		if (r)
			goto out_free;
		if (!EVP_DigestUpdate(ctx, buf, n)) {
			r = -EIO;
			goto out_free;
		}
		done += n;
	}
	if (!EVP_DigestFinal_ex(ctx, md, NULL)) {
		r = -EIO;
		goto out_free;
	}
	for (int i = 0; i < 32; i++) {
		ret[2 * i] = hex[md[i] >> 4];
		ret[2 * i + 1] = hex[md[i] & 15];
	}
	ret[64] = '\0';
out_free:
	free(buf);
	EVP_MD_CTX_free(ctx);
	return r;
}

static int s3_put(struct remote *r, const char *name, const struct remote_src *src)
{
	char *path = obj_path(r, name), sha[65];
	int ret;

	if (!path)
		return -ENOMEM;
	ret = payload_hash(src, sha);
	if (ret == 0)
		ret = remote_http_put_path(r, path, src, sha, false);
	free(path);
	return ret;
}

static int s3_head(struct remote *r, const char *name, uint64_t *ret_size)
{
	char *path = obj_path(r, name);
	int ret;

	if (!path)
		return -ENOMEM;
	ret = remote_http_head_path(r, path, ret_size);
	free(path);
	return ret;
}

static int s3_del(struct remote *r, const char *name)
{
	char *path = obj_path(r, name);
	int ret;

	if (!path)
		return -ENOMEM;
	ret = remote_http_del_path(r, path);
	free(path);
	return ret;
}

/* The text of the first <tag>...</tag> in [p, end), or NULL. */
static const char *xml_find(const char *p, const char *end, const char *tag, const char **ret_end)
{
	char open[64], close[64];
	const char *b, *e;
	size_t ol, cl;

	ol = (size_t)snprintf(open, sizeof(open), "<%s>", tag);
	cl = (size_t)snprintf(close, sizeof(close), "</%s>", tag);
	b = memmem(p, (size_t)(end - p), open, ol);
	if (!b)
		return NULL;
	b += ol;
	e = memmem(b, (size_t)(end - b), close, cl);
	if (!e)
		return NULL;
	*ret_end = e;
	return b;
}

int remote_parse_s3_list(const char *xml, size_t len, const char *key_prefix,
			 struct remote_entries *e, char **ret_token)
{
	const char *p = xml, *end = xml + len, *b, *be, *tb, *te;
	size_t plen = strlen(key_prefix);
	bool truncated = false;
	char *token = NULL;
	int ret = 0;

	if (!memmem(xml, len, "<ListBucketResult", 17))
		return -EIO;
	while ((b = xml_find(p, end, "Contents", &be))) {
		const char *kb, *ke, *sb, *se;
		uint64_t size = 0;
		char *key;
		bool size_ok = true;

		kb = xml_find(b, be, "Key", &ke);
		sb = xml_find(b, be, "Size", &se);
		if (!kb)
			return -EIO;
		if (sb) {
			size = 0;
			for (const char *c = sb; c < se; c++) {
				if (*c < '0' || *c > '9' || size > (UINT64_MAX - 9) / 10) {
					size_ok = false;
					break;
				}
				size = size * 10 + (uint64_t)(*c - '0');
			}
			if (se == sb)
				size_ok = false;
		}
		key = remote_xml_text(kb, (size_t)(ke - kb));
		if (!key)
			return -EIO;
		if (strncmp(key, key_prefix, plen) == 0 && key[plen])
			ret = remote_entries_add(e, key + plen, strlen(key + plen),
						 sb && size_ok ? size : UINT64_MAX);
		free(key);
		if (ret)
			return ret;
		p = be + 11;
	}
	tb = xml_find(xml, end, "IsTruncated", &te);
	if (tb && te - tb == 4 && memcmp(tb, "true", 4) == 0)
		truncated = true;
	if (truncated) {
		tb = xml_find(xml, end, "NextContinuationToken", &te);
		if (!tb || te == tb || te - tb > 4096)
			return -EIO;
		token = remote_xml_text(tb, (size_t)(te - tb));
		if (!token)
			return -EIO;
	}
	*ret_token = token;
	return 0;
}

static int s3_list(struct remote *r, const char *dir, struct remote_entries *e)
{
	struct remote_sink s = {.limit = REMOTE_MAX_LIST_RESPONSE};
	char *prefix = NULL, *path = NULL, *token = NULL, *query = NULL;
	char *eprefix = NULL, *etoken = NULL;
	size_t n;
	int ret = 0;

	if (asprintf(&prefix, "%s%s", r->key_prefix, dir) < 0)
		return -ENOMEM;
	/* ListObjectsV2 addresses the bucket itself: "/" virtual-hosted, "/bucket" path-style. */
	n = strlen(r->root);
	path = strndup(r->root, n > 1 ? n - 1 : n);
	eprefix = malloc(3 * strlen(prefix) + 1);
	if (!path || !eprefix) {
		ret = -ENOMEM;
		goto out_free;
	}
	sigv4_uri_encode(prefix, 0, eprefix, 3 * strlen(prefix) + 1);
	for (int page = 0;; page++) {
		struct remote_xfer x = {.method = "GET", .path = path, .sink = &s};
		char *next = NULL;

		if (page >= S3_MAX_PAGES) {
			remote_set_error("LIST %s%s: more than %d pages", r->url, dir,
					 S3_MAX_PAGES);
			ret = -EIO;
			break;
		}
		free(query);
		query = NULL;
		if (token) {
			free(etoken);
			etoken = malloc(3 * strlen(token) + 1);
			if (!etoken) {
				ret = -ENOMEM;
				break;
			}
			sigv4_uri_encode(token, 0, etoken, 3 * strlen(token) + 1);
		}
		if (asprintf(&query, "list-type=2&delimiter=%%2F&prefix=%s%s%s", eprefix,
			     token ? "&continuation-token=" : "", token ? etoken : "") < 0) {
			query = NULL;
			ret = -ENOMEM;
			break;
		}
		x.query = query;
		ret = remote_http_exec(r, &x);
		if (ret < 0)
			break;
		ret = remote_parse_s3_list(s.buf, s.len, prefix, e, &next);
		if (ret == -EIO)
			remote_set_error("LIST %s%s: malformed ListObjectsV2 answer", r->url, dir);
		if (ret)
			break;
		if (!next)
			break;
		if (token && strcmp(next, token) == 0) {
			free(next);
			remote_set_error("LIST %s%s: the server repeats its continuation token",
					 r->url, dir);
			ret = -EIO;
			break;
		}
		free(token);
		token = next;
	}
out_free:
	free(s.buf);
	free(prefix);
	free(path);
	free(token);
	free(query);
	free(eprefix);
	free(etoken);
	return ret;
}

static const struct remote_ops s3_ops = {
	.scheme = "s3",
	.get = s3_get,
	.put = s3_put,
	.head = s3_head,
	.del = s3_del,
	.list = s3_list,
	.sign = s3_sign,
};

static bool valid_chars(const char *s, const char *extra)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr(extra, *s))
			return false;
	return true;
}

static int hexdig(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static char *query_value(const char *s, size_t n)
{
	char *out = malloc(n + 1);
	size_t o = 0;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n && hexdig(s[i + 1]) >= 0 && hexdig(s[i + 2]) >= 0) {
			out[o++] = (char)(hexdig(s[i + 1]) * 16 + hexdig(s[i + 2]));
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	out[o] = '\0';
	return out;
}

/* Split "http(s)://host[:port][/]" into scheme and host; -EINVAL for anything else. */
static int parse_endpoint(const char *ep, char **ret_scheme, char **ret_host)
{
	const char *h;
	size_t n;

	if (strncmp(ep, "https://", 8) == 0)
		h = ep + 8;
	else if (strncmp(ep, "http://", 7) == 0)
		h = ep + 7;
	else
		return -EINVAL;
	n = strcspn(h, "/");
	if (n == 0 || (h[n] && strcmp(h + n, "/") != 0))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)h[i]) && !strchr(".-:[]", h[i]))
			return -EINVAL;
	*ret_scheme = strndup(ep, (size_t)(h - ep));
	*ret_host = strndup(h, n);
	return *ret_scheme && *ret_host ? 0 : -ENOMEM;
}

/* What an s3:// URL says, before the environment fills in the rest. All strings are owned. */
struct s3_url {
	char *bucket, *prefix; /* the prefix without leading or trailing slashes */
	char *endpoint, *region, *addressing;
};

static void s3_url_release(struct s3_url *u)
{
	free(u->bucket);
	free(u->prefix);
	free(u->endpoint);
	free(u->region);
	free(u->addressing);
}

/* The prefix of s3://bucket/prefix/ (at b, n bytes): trimmed of slashes, and checked. */
static int parse_prefix(const char *b, size_t n, struct s3_url *u, char *err, size_t errlen)
{
	char *p;

	u->prefix = strndup(b, n);
	if (!u->prefix)
		return -ENOMEM;
	for (p = u->prefix; *p == '/'; p++)
		;
	memmove(u->prefix, p, strlen(p) + 1);
	n = strlen(u->prefix);
	while (n && u->prefix[n - 1] == '/')
		u->prefix[--n] = '\0';
	if (n && !remote_name_valid(u->prefix)) {
		snprintf(err, errlen, "S3 prefix may hold only A-Z a-z 0-9 . _ - and '/'");
		return -EINVAL;
	}
	return 0;
}

/* The query of an s3:// URL (after '?'): only endpoint=, region= and addressing=. */
static int parse_query(const char *p, struct s3_url *u, char *err, size_t errlen)
{
	while (p && *p) {
		size_t n = strcspn(p, "&"), kl = strcspn(p, "=&");
		char *v = kl < n ? query_value(p + kl + 1, n - kl - 1) : NULL, **slot = NULL;

		if (kl == 8 && strncmp(p, "endpoint", 8) == 0)
			slot = &u->endpoint;
		else if (kl == 6 && strncmp(p, "region", 6) == 0)
			slot = &u->region;
		else if (kl == 10 && strncmp(p, "addressing", 10) == 0)
			slot = &u->addressing;
		if (!slot || !v || !*v) {
			free(v);
			snprintf(err, errlen,
				 "S3 URL query may only set endpoint=URL, region=R and "
				 "addressing=path|virtual");
			return -EINVAL;
		}
		free(*slot);
		*slot = v;
		p += n + (p[n] == '&');
	}
	return 0;
}

static int parse_s3_url(const char *url, struct s3_url *u, char *err, size_t errlen)
{
	const char *b = url + 5, *q = strchr(b, '?');
	size_t blen = strcspn(b, "/?");
	int ret;

	u->bucket = strndup(b, blen);
	if (!u->bucket)
		return -ENOMEM;
	if (!valid_chars(u->bucket, ".-_") || blen > 255) {
		snprintf(err, errlen, "S3 URL needs a bucket name: s3://bucket[/prefix]");
		return -EINVAL;
	}
	ret = parse_prefix(b + blen, q ? (size_t)(q - b - blen) : strlen(b + blen), u, err, errlen);
	return ret ? ret : parse_query(q ? q + 1 : NULL, u, err, errlen);
}

/* The first of the environment variables a and b that is set, copied; NULL when neither is. */
static char *env_either(const char *a, const char *b)
{
	const char *v = remote_env(a) ? remote_env(a) : remote_env(b);

	return v ? strdup(v) : NULL;
}

/*
 * What the URL left out, from the environment (AWS_REGION, AWS_ENDPOINT_URL_S3, ...) or AWS's
 * defaults. *ret_path_style: path-style addressing (any endpoint of one's own, unless the URL
 * says addressing=virtual).
 */
static int fill_defaults(struct s3_url *u, bool *ret_path_style, char *err, size_t errlen)
{
	bool custom_endpoint = true;

	if (!u->region)
		u->region = env_either("AWS_REGION", "AWS_DEFAULT_REGION");
	if (!u->region)
		u->region = strdup("us-east-1");
	if (!u->region)
		return -ENOMEM;
	if (!valid_chars(u->region, "-_")) {
		snprintf(err, errlen, "S3 region must be a name such as eu-west-1");
		return -EINVAL;
	}
	if (!u->endpoint)
		u->endpoint = env_either("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
	if (!u->endpoint) {
		custom_endpoint = false;
		if (asprintf(&u->endpoint, "https://s3.%s.amazonaws.com", u->region) < 0)
			u->endpoint = NULL;
	}
	if (!u->endpoint)
		return -ENOMEM;
	*ret_path_style = custom_endpoint;
	if (u->addressing && strcmp(u->addressing, "path") == 0) {
		*ret_path_style = true;
	} else if (u->addressing && strcmp(u->addressing, "virtual") == 0) {
		*ret_path_style = false;
	} else if (u->addressing) {
		snprintf(err, errlen, "S3 addressing must be path or virtual");
		return -EINVAL;
	}
	return 0;
}

/* r's host, root, origin and key prefix for u, at the endpoint's scheme and host. */
static int set_addresses(struct remote *r, const struct s3_url *u, const char *scheme,
			 const char *ehost, bool path_style)
{
	if (path_style) {
		r->host = strdup(ehost);
		if (asprintf(&r->root, "/%s/", u->bucket) < 0)
			r->root = NULL;
	} else {
		if (asprintf(&r->host, "%s.%s", u->bucket, ehost) < 0)
			r->host = NULL;
		r->root = strdup("/");
	}
	if (!r->host || !r->root)
		return -ENOMEM;
	if (asprintf(&r->origin, "%s%s", scheme, r->host) < 0) {
		r->origin = NULL;
		return -ENOMEM;
	}
	if (asprintf(&r->key_prefix, "%s%s", u->prefix, *u->prefix ? "/" : "") < 0) {
		r->key_prefix = NULL;
		return -ENOMEM;
	}
	return 0;
}

int remote_s3_open(struct remote *r, const char *url, char *err, size_t errlen)
{
	struct s3_url u = {0};
	char *scheme = NULL, *ehost = NULL;
	bool path_style = false;
	int ret;

	ret = parse_s3_url(url, &u, err, errlen);
	if (ret == 0)
		ret = fill_defaults(&u, &path_style, err, errlen);
	if (ret)
		goto out_free;
	ret = parse_endpoint(u.endpoint, &scheme, &ehost);
	if (ret == -EINVAL)
		snprintf(err, errlen, "S3 endpoint must be http(s)://host[:port], without a path");
	if (ret == 0)
		ret = remote_s3_load_credentials(r, err, errlen);
	if (ret)
		goto out_free;
	r->url = strdup(url);
	ret = r->url ? set_addresses(r, &u, scheme, ehost, path_style) : -ENOMEM;
	if (ret)
		goto out_free;
	r->region = u.region;
	u.region = NULL;
	r->ops = &s3_ops;
out_free:
	s3_url_release(&u);
	free(scheme);
	free(ehost);
	return ret;
}
