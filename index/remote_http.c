/* SPDX-License-Identifier: MIT */
/*
 * The http(s):// remote: WebDAV, or any server that takes PUT and serves GET with Range, HEAD and
 * DELETE (nginx with its dav module is the reference, tests/remote/servers.sh).
 *
 * Objects live at <root><name>. A PUT answered 409 (the parent collection is missing, on servers
 * that do not create paths) is retried once after MKCOL of each parent. Listing asks PROPFIND
 * Depth: 1 and, where the server refuses it (405, 501: plain nginx), falls back to GET of the
 * directory parsed as nginx's "autoindex_format json"; the fallback is remembered. Both answers are
 * parsed defensively: capped at REMOTE_MAX_LIST_RESPONSE, names that are not object names dropped.
 *
 * Ranged reads must come back 206 starting at the asked offset; a 200 (server ignored Range) is
 * accepted only for a range that starts at 0, keeping the first len bytes. Credentials come from
 * ~/.netrc only: a password in the URL is refused, since command lines and logs are not secret.
 */
#include "remote_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---- requests shared with the s3 backend ---- */

int remote_http_get_path(struct remote *r, const char *path, uint64_t off, uint64_t len,
			 struct remote_sink *s)
{
	struct remote_xfer x = {
		.method = "GET", .path = path, .sink = s, .range_off = off, .range_len = len};
	char range[64];
	int ret;

	if (len) {
		snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-%" PRIu64, off,
			 off + len - 1);
		x.headers[0] = range;
		x.ranged = true;
	} else if (off) {
		snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-", off);
		x.headers[0] = range;
		x.ranged = true;
	}
	ret = remote_http_exec(r, &x);
	if (ret == -EIO && x.status == 416) {
		remote_set_error("GET %s%s: range %" PRIu64 "+%" PRIu64
				 " is past the end of the object (HTTP 416, truncated object)",
				 r->origin, path, off, len);
		return -EIO;
	}
	if (ret == -EIO && s->overflow && !s->fixed) {
		remote_set_error("GET %s%s: larger than %zu bytes: read it by ranges", r->origin,
				 path, s->limit);
		return -EFBIG;
	}
	if (ret < 0)
		return ret;
	if (x.ranged && x.status == 206) {
		if (x.have_range && x.range_start != off) {
			remote_set_error("GET %s%s: asked bytes from %" PRIu64
					 ", the server sent from %" PRIu64,
					 r->origin, path, off, x.range_start);
			return -EIO;
		}
		return 0;
	}
	if (x.status == 200 && (!x.ranged || off == 0))
		return 0;
	/* Range ignored (python's http.server): on_write dropped what came before it. */
	if (x.status == 200 && x.ranged && x.skipped == off && (len == 0 || s->len == s->limit))
		return 0;
	remote_set_error("GET %s%s: unexpected HTTP %ld to a%s request", r->origin, path, x.status,
			 x.ranged ? " range" : "");
	return -EIO;
}

/*
 * MKCOL each collection of path, outermost first. An existing one answers 405
 * (RFC 4918); one that another client creates at the same moment may answer 403 (Apache) or
 * 409: so a refusal is not final here, the PUT retried after it is. *ret_status gets the first
 * answer other than 2xx and 405, for the message when that PUT fails too. Only an outage or an
 * error of ours (-ENOMEM, no answer at all) stops it.
 */
static int mkcol_parents(struct remote *r, const char *path, long *ret_status)
{
	char *p = strdup(path);
	int ret = 0;

	*ret_status = 0;
	if (!p)
		return -ENOMEM;
	/* From the top: the remote's own directory may be missing too (a first push to
	 * .../team/cache/ on Apache). Those above it that exist answer 405, or 403 where the
	 * user may not write, which the PUT then tells apart. */
	for (char *s = p + 1; (s = strchr(s, '/')); s++) {
		struct remote_xfer x = {.method = "MKCOL", .path = p};
		char save = s[1];

		s[1] = '\0';
		ret = remote_http_exec(r, &x);
		s[1] = save;
		if (ret < 0 && x.status == 0)
			break;
		if (ret < 0 && x.status != 405 && !*ret_status)
			*ret_status = x.status;
		ret = 0;
	}
	free(p);
	return ret;
}

int remote_http_put_path(struct remote *r, const char *path, const struct remote_src *src,
			 const char *payload_sha256, bool mkcol)
{
	struct remote_xfer x = {
		.method = "PUT", .path = path, .body = src, .payload_sha256 = payload_sha256};
	int ret = remote_http_exec(r, &x);
	long first = x.status, mkcol_status;

	/* A PUT into a missing collection: 409 as RFC 4918 says (Apache mod_dav, and nginx
	 * without create_full_put_path), 404 from rclone. Create the collections and retry. */
	if (ret < 0 && mkcol && (x.status == 409 || x.status == 404)) {
		ret = mkcol_parents(r, path, &mkcol_status);
		if (ret == 0) {
			memset(&x, 0, sizeof(x));
			x.method = "PUT";
			x.path = path;
			x.body = src;
			x.payload_sha256 = payload_sha256;
			ret = remote_http_exec(r, &x);
		}
		if (ret < 0 && x.status && mkcol_status)
			remote_set_error(
				"PUT %s%s: HTTP %ld, and MKCOL of its collections HTTP %ld: "
				"the WebDAV user may not create collections there",
				r->origin, path, first, mkcol_status);
	}
	return ret;
}

/* HEAD; *ret_no_length tells a 2xx answer without Content-Length (-EIO). */
static int head_path(struct remote *r, const char *path, uint64_t *ret_size, bool *ret_no_length)
{
	struct remote_xfer x = {.method = "HEAD", .path = path};
	int ret = remote_http_exec(r, &x);

	*ret_no_length = false;
	if (ret < 0)
		return ret;
	if (!x.have_length) {
		remote_set_error("HEAD %s%s: no Content-Length in the answer", r->origin, path);
		*ret_no_length = true;
		return -EIO;
	}
	*ret_size = x.length;
	return 0;
}

int remote_http_head_path(struct remote *r, const char *path, uint64_t *ret_size)
{
	bool no_length;

	return head_path(r, path, ret_size, &no_length);
}

/* The size of path over WebDAV: HEAD, and when the answer has no Content-Length (Apache's to a
 * HEAD of an empty file), a GET whose body must fit a small sink, so that this never downloads
 * an object. */
static int dav_size(struct remote *r, const char *path, uint64_t *ret_size)
{
	struct remote_sink s = {.limit = 4096};
	bool no_length;
	int ret = head_path(r, path, ret_size, &no_length);

	if (!no_length)
		return ret;
	ret = remote_http_get_path(r, path, 0, 0, &s);
	free(s.buf);
	if (ret == 0)
		*ret_size = s.len;
	else if (ret == -EFBIG)
		remote_set_error("HEAD %s%s: no Content-Length in the answer", r->origin, path);
	return ret == -EFBIG ? -EIO : ret;
}

int remote_http_del_path(struct remote *r, const char *path)
{
	struct remote_xfer x = {.method = "DELETE", .path = path};

	return remote_http_exec(r, &x);
}

/* ---- listing parsers ---- */

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

/* Percent-decode in place; a malformed escape stays literal. */
static void pct_decode(char *s)
{
	char *o = s;

	for (char *p = s; *p; p++) {
		if (p[0] == '%' && hexdig(p[1]) >= 0 && hexdig(p[2]) >= 0) {
			*o++ = (char)(hexdig(p[1]) * 16 + hexdig(p[2]));
			p += 2;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
}

static bool parse_u64(const char *s, size_t n, uint64_t *ret)
{
	uint64_t v = 0;

	while (n && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
		s++, n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
		n--;
	if (!n || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*ret = v;
	return true;
}

/* The local name (after any namespace prefix) of the tag at t, which follows '<' or '</'. */
static bool tag_is(const char *t, const char *end, const char *local)
{
	const char *n = t, *colon = NULL;
	size_t k = strlen(local);

	while (n < end && *n != ' ' && *n != '\t' && *n != '\r' && *n != '\n' && *n != '/' &&
	       *n != '>') {
		if (*n == ':')
			colon = n;
		n++;
	}
	if (colon)
		t = colon + 1;
	return (size_t)(n - t) == k && strncasecmp(t, local, k) == 0;
}

static int propfind_emit(const char *href, const char *want, bool collection, uint64_t size,
			 struct remote_entries *e)
{
	char *p = strdup(href), *path, *slash;
	size_t n;
	int ret = 0;

	if (!p)
		return -ENOMEM;
	path = p;
	if (strncasecmp(path, "http://", 7) == 0 || strncasecmp(path, "https://", 8) == 0) {
		path = strchr(strstr(path, "://") + 3, '/');
		if (!path)
			goto out_free;
	}
	pct_decode(path);
	n = strlen(path);
	while (n > 1 && path[n - 1] == '/')
		path[--n] = '\0';
	slash = strrchr(path, '/');
	if (collection || !slash || !slash[1] || strlen(want) != (size_t)(slash + 1 - path) ||
	    strncmp(path, want, (size_t)(slash + 1 - path)) != 0)
		goto out_free;
	ret = remote_entries_add(e, slash + 1, strlen(slash + 1), size);
out_free:
	free(p);
	return ret;
}

int remote_parse_propfind(const char *xml, size_t len, const char *dir_path,
			  struct remote_entries *e)
{
	const char *p = xml, *end = xml + len, *text = NULL;
	char *want = strdup(dir_path), *href = NULL;
	enum { T_NONE, T_HREF, T_LEN } capture = T_NONE;
	bool in_response = false, collection = false, multistatus = false;
	uint64_t size = UINT64_MAX;
	int ret = 0;

	if (!want)
		return -ENOMEM;
	pct_decode(want);
	while (p < end) {
		const char *lt = memchr(p, '<', (size_t)(end - p)), *gt, *t;
		bool closing, selfclose;

		if (!lt)
			break;
		if (end - lt >= 4 && memcmp(lt, "<!--", 4) == 0) {
			const char *c = memmem(lt, (size_t)(end - lt), "-->", 3);

			if (!c)
				goto out_bad;
			p = c + 3;
			continue;
		}
		gt = memchr(lt, '>', (size_t)(end - lt));
		if (!gt)
			goto out_bad;
		closing = lt + 1 < gt && lt[1] == '/';
		selfclose = gt[-1] == '/';
		t = lt + 1 + closing;
		if (lt[1] == '?' || lt[1] == '!') {
			p = gt + 1;
			continue;
		}
		if (tag_is(t, gt, "multistatus")) {
			multistatus = true;
		} else if (tag_is(t, gt, "response")) {
			if (closing && in_response && href) {
				ret = propfind_emit(href, want, collection, size, e);
				if (ret)
					goto out_free;
			}
			in_response = !closing && !selfclose;
			free(href);
			href = NULL;
			collection = false;
			size = UINT64_MAX;
		} else if (tag_is(t, gt, "href") || tag_is(t, gt, "getcontentlength")) {
			bool is_href = tag_is(t, gt, "href");

			if (!closing && !selfclose) {
				capture = is_href ? T_HREF : T_LEN;
				text = gt + 1;
			} else if (closing && capture == (is_href ? T_HREF : T_LEN) &&
				   in_response) {
				if (is_href) {
					free(href);
					href = remote_xml_text(text, (size_t)(lt - text));
					if (!href)
						goto out_bad;
				} else if (!parse_u64(text, (size_t)(lt - text), &size)) {
					size = UINT64_MAX;
				}
				capture = T_NONE;
			}
		} else if (tag_is(t, gt, "collection") && in_response && !closing) {
			collection = true;
		}
		p = gt + 1;
	}
	if (!multistatus)
		goto out_bad;
	goto out_free;
out_bad:
	ret = -EIO;
out_free:
	free(href);
	free(want);
	return ret;
}

/* A JSON string at *pp (after the opening quote) into a malloc'ed buffer; non-ASCII becomes
 * 0x7f, which no object name contains. */
static char *json_string(const char **pp, const char *end)
{
	const char *p = *pp;
	size_t cap = 64, n = 0;
	char *out = malloc(cap);

	if (!out)
		return NULL;
	while (p < end && *p != '"') {
		char c = *p++;

		if ((unsigned char)c < 0x20)
			goto out_bad;
		if (c == '\\') {
			if (p >= end)
				goto out_bad;
			c = *p++;
			switch (c) {
			case '"':
			case '\\':
			case '/':
				break;
			case 'b':
			case 'f':
			case 'n':
			case 'r':
			case 't':
				c = '\x7f';
				break;
			case 'u': {
				unsigned v = 0;

				if (end - p < 4)
					goto out_bad;
				for (int i = 0; i < 4; i++) {
					int d = hexdig(p[i]);

					if (d < 0)
						goto out_bad;
					v = v * 16 + (unsigned)d;
				}
				p += 4;
				c = v > 0 && v < 0x80 ? (char)v : '\x7f';
				break;
			}
			default:
				goto out_bad;
			}
		}
		if (n + 2 > cap) {
			char *nb;

			if (cap > (1u << 16))
				goto out_bad;
			nb = realloc(out, cap *= 2);
			if (!nb)
				goto out_bad;
			out = nb;
		}
		out[n++] = c;
	}
	if (p >= end)
		goto out_bad;
	out[n] = '\0';
	*pp = p + 1;
	return out;
out_bad:
	free(out);
	return NULL;
}

static const char *json_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

int remote_parse_autoindex_json(const char *json, size_t len, struct remote_entries *e)
{
	const char *p = json, *end = json + len;
	int ret = 0;

	p = json_ws(p, end);
	if (p >= end || *p++ != '[')
		return -EIO;
	p = json_ws(p, end);
	if (p < end && *p == ']')
		return json_ws(p + 1, end) == end ? 0 : -EIO;
	for (;;) {
		char *name = NULL, *type = NULL;
		uint64_t size = UINT64_MAX;

		p = json_ws(p, end);
		if (p >= end || *p++ != '{')
			return -EIO;
		for (;;) {
			char *key;

			p = json_ws(p, end);
			if (p < end && *p == '}' && !name && !type) {
				p++;
				break;
			}
			if (p >= end || *p++ != '"')
				goto out_bad;
			key = json_string(&p, end);
			if (!key)
				goto out_bad;
			p = json_ws(p, end);
			if (p >= end || *p++ != ':') {
				free(key);
				goto out_bad;
			}
			p = json_ws(p, end);
			if (p < end && *p == '"') {
				char *v;

				p++;
				v = json_string(&p, end);
				if (!v) {
					free(key);
					goto out_bad;
				}
				if (strcmp(key, "name") == 0 && !name) {
					name = v;
				} else if (strcmp(key, "type") == 0 && !type) {
					type = v;
				} else {
					free(v);
				}
			} else {
				const char *v = p;

				while (p < end && *p != ',' && *p != '}' && *p != '{' &&
				       *p != '[' && *p != ']' && *p != '"')
					p++;
				if (p >= end || *p == '{' || *p == '[' || *p == ']' || *p == '"') {
					free(key);
					goto out_bad;
				}
				if (strcmp(key, "size") == 0 &&
				    !parse_u64(v, (size_t)(p - v), &size))
					size = UINT64_MAX;
			}
			free(key);
			p = json_ws(p, end);
			if (p < end && *p == ',') {
				p++;
				continue;
			}
			if (p < end && *p == '}') {
				p++;
				break;
			}
			goto out_bad;
		}
		if (name && type && strcmp(type, "file") == 0) {
			ret = remote_entries_add(e, name, strlen(name), size);
			if (ret) {
				free(name);
				free(type);
				return ret;
			}
		}
		free(name);
		free(type);
		p = json_ws(p, end);
		if (p < end && *p == ',') {
			p++;
			continue;
		}
		if (p < end && *p == ']')
			return json_ws(p + 1, end) == end ? 0 : -EIO;
		return -EIO;
	out_bad:
		free(name);
		free(type);
		return -EIO;
	}
}

/* ---- the backend ---- */

static char *obj_path(const struct remote *r, const char *name)
{
	char *p;

	if (asprintf(&p, "%s%s", r->root, name) < 0)
		return NULL;
	return p;
}

static int http_get(struct remote *r, const char *name, uint64_t off, uint64_t len,
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

static int http_put(struct remote *r, const char *name, const struct remote_src *src)
{
	char *path = obj_path(r, name);
	int ret;

	if (!path)
		return -ENOMEM;
	ret = remote_http_put_path(r, path, src, NULL, true);
	free(path);
	return ret;
}

static int http_head(struct remote *r, const char *name, uint64_t *ret_size)
{
	char *path = obj_path(r, name);
	int ret;

	if (!path)
		return -ENOMEM;
	ret = dav_size(r, path, ret_size);
	free(path);
	return ret;
}

static int http_del(struct remote *r, const char *name)
{
	char *path = obj_path(r, name);
	int ret;

	if (!path)
		return -ENOMEM;
	ret = remote_http_del_path(r, path);
	free(path);
	return ret;
}

static int http_list(struct remote *r, const char *dir, struct remote_entries *e)
{
	struct remote_sink s = {.limit = REMOTE_MAX_LIST_RESPONSE};
	struct remote_xfer x = {.sink = &s};
	char *path = obj_path(r, dir);
	int ret = 0;

	if (!path)
		return -ENOMEM;
	if (!atomic_load(&r->no_propfind)) {
		x.method = "PROPFIND";
		x.path = path;
		x.headers[0] = "Depth: 1";
		x.headers[1] = "Content-Type: application/xml";
		ret = remote_http_exec(r, &x);
		if (ret == 0 && x.status == 207) {
			ret = remote_parse_propfind(s.buf, s.len, path, e);
			if (ret == -EIO) {
				remote_set_error(
					"PROPFIND %s%s: the 207 Multi-Status answer cannot "
					"be read",
					r->origin, path);
				ret = -EBADMSG;
			}
			goto out_free;
		}
		/* A 2xx other than 207: a static server that answered as to GET. */
		if (ret == 0)
			x.status = 405;
		if (x.status != 405 && x.status != 501 && x.status != 400)
			goto out_free;
		atomic_store(&r->no_propfind, true);
	}
	memset(&x, 0, sizeof(x));
	x.method = "GET";
	x.path = path;
	x.sink = &s;
	x.headers[0] = "Accept: application/json";
	ret = remote_http_exec(r, &x);
	if (ret == 0) {
		/* JSON autoindex, else an HTML listing (nginx, Apache, python http.server). */
		size_t n0 = e->n;

		ret = remote_parse_autoindex_json(s.buf, s.len, e);
		if (ret == -EIO) {
			while (e->n > n0)
				free(e->v[--e->n].name);
			ret = remote_parse_html_listing(s.buf, s.len, path, e);
		}
		if (ret == -EIO || ret == -EINVAL) {
			remote_set_error(
				"GET %s%s: the directory listing is neither a WebDAV PROPFIND "
				"answer, "
				"nor an nginx JSON autoindex, nor an HTML index: enable WebDAV "
				"listing (nginx dav-ext \"dav_ext_methods PROPFIND\", Apache \"Dav "
				"On\"), or \"autoindex on\" (nginx) / \"Options +Indexes\" "
				"(Apache)",
				r->origin, path);
			ret = -EBADMSG;
		}
	}
out_free:
	/* Sizes the listing left out: ask for each. */
	for (size_t i = 0; ret == 0 && i < e->n; i++) {
		char *p;

		if (e->v[i].size != UINT64_MAX)
			continue;
		if (asprintf(&p, "%s%s", path, e->v[i].name) < 0) {
			ret = -ENOMEM;
			break;
		}
		ret = dav_size(r, p, &e->v[i].size);
		free(p);
		if (ret == -ENOENT)
			ret = 0; /* deleted meanwhile: remote_list skips UINT64_MAX */
	}
	free(s.buf);
	free(path);
	return ret;
}

static const struct remote_ops http_ops = {
	.scheme = "http",
	.get = http_get,
	.put = http_put,
	.head = http_head,
	.del = http_del,
	.list = http_list,
};

int remote_http_open(struct remote *r, const char *url, char *err, size_t errlen)
{
	const char *auth = strstr(url, "://") + 3, *slash = strchr(auth, '/'), *at;
	size_t alen = slash ? (size_t)(slash - auth) : strlen(auth);
	const char *path = slash ? slash : "/";
	size_t plen = strlen(path);

	at = memchr(auth, '@', alen);
	if (at && memchr(auth, ':', (size_t)(at - auth))) {
		snprintf(err, errlen,
			 "remote URL holds a password, which would show in process lists "
			 "and logs: remove it and put the credentials in ~/.netrc "
			 "(machine HOST login USER password PASS)");
		return -EINVAL;
	}
	if (alen == 0 || (at && at + 1 == auth + alen)) {
		snprintf(err, errlen, "remote URL has no host: use http(s)://host[:port]/path");
		return -EINVAL;
	}
	for (const char *c = url; *c; c++) {
		if ((unsigned char)*c <= ' ' || *c == 127 || *c == '?' || *c == '#' || *c == '\\') {
			snprintf(err, errlen,
				 "remote URL must be http(s)://host[:port]/path without "
				 "spaces, query or fragment");
			return -EINVAL;
		}
	}
	r->url = strdup(url);
	r->origin = strndup(url, (size_t)(auth - url) + alen);
	r->root = malloc(plen + 2);
	if (!r->url || !r->origin || !r->root)
		return -ENOMEM;
	memcpy(r->root, path, plen + 1);
	if (r->root[plen - 1] != '/')
		strcat(r->root, "/");
	r->netrc = true;
	r->ops = &http_ops;
	return 0;
}
