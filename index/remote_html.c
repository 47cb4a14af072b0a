/* SPDX-License-Identifier: MIT */
/*
 * The HTML directory listing parser of the http(s):// remote: what a server without PROPFIND and
 * without nginx's JSON autoindex sends for GET of a directory (nginx "autoindex on", Apache
 * mod_autoindex, python's http.server, most static servers and mirrors).
 *
 * The answer is untrusted and arbitrary HTML. Only the targets of <a href=...> count; everything
 * else is skipped tag by tag. The scan is strict on structure (a tag, comment or quoted attribute
 * left open is -EIO, as is a body without a single tag) and lenient on content: a link that does
 * not name a file directly inside the listed directory (sort links "?C=N;O=D", the parent, sub
 * collections ending '/', other hosts or paths, over-long or undecodable hrefs) is ignored. It
 * reads each byte a bounded number of times, allocates per entry only, and never writes outside
 * the entries it returns.
 */
#include "remote_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Longest href considered: a name of REMOTE_NAME_MAX bytes, all percent-encoded, plus a path. */
#define HTML_HREF_MAX (3 * REMOTE_NAME_MAX + 1024)

static bool html_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode s in place; false on a malformed escape or an escaped NUL. */
static bool pct_decode_strict(char *s)
{
	char *o = s;

	for (char *p = s; *p; p++) {
		if (*p != '%') {
			*o++ = *p;
			continue;
		}
		if (hexval(p[1]) < 0 || hexval(p[2]) < 0)
			return false;
		*o = (char)(hexval(p[1]) * 16 + hexval(p[2]));
		if (!*o)
			return false;
		o++;
		p += 2;
	}
	*o = '\0';
	return true;
}

/*
 * One href value (raw, entities not decoded): add the file it names when that file is directly
 * in the directory want (decoded, ending '/'). Links that do not qualify are 0, not errors.
 */
static int html_link(const char *v, size_t n, const char *want, struct remote_entries *e)
{
	char *href, *path;
	size_t k, wl = strlen(want);
	int ret = 0;

	if (n == 0 || n > HTML_HREF_MAX)
		return 0;
	href = remote_xml_text(v, n);
	if (!href)
		return 0; /* an entity HTML has and XML has not (&nbsp;): no object name has one */
	if (strpbrk(href, "?#"))
		goto out_free;
	path = href;
	if (strncasecmp(path, "http://", 7) == 0 || strncasecmp(path, "https://", 8) == 0 ||
	    strncmp(path, "//", 2) == 0) {
		path = strchr(strstr(path, "//") + 2, '/');
		if (!path)
			goto out_free;
	} else {
		char *colon = strchr(path, ':'), *slash = strchr(path, '/');

		if (colon && (!slash || colon < slash))
			goto out_free; /* mailto:, javascript:, ... */
	}
	if (!pct_decode_strict(path))
		goto out_free;
	if (path[0] == '/') {
		if (strncmp(path, want, wl) != 0)
			goto out_free;
		path += wl;
	} else {
		while (path[0] == '.' && path[1] == '/')
			path += 2;
	}
	k = strlen(path);
	if (k == 0 || strchr(path, '/') || strcmp(path, ".") == 0 || strcmp(path, "..") == 0)
		goto out_free;
	/* Listings that link a name twice (an icon and the name) do it on adjacent links. */
	if (e->n && strcmp(e->v[e->n - 1].name, path) == 0)
		goto out_free;
	ret = remote_entries_add(e, path, k, UINT64_MAX);
out_free:
	free(href);
	return ret;
}

/*
 * The attributes of the tag whose name ends at p (inside [p, end)): *ret_gt gets its '>', and
 * when want_href, the href value [*ret_v, *ret_v + *ret_n) (*ret_v NULL when none). -EIO when the
 * tag or a quoted value is not closed.
 */
static int html_attrs(const char *p, const char *end, bool want_href, const char **ret_gt,
		      const char **ret_v, size_t *ret_n)
{
	*ret_v = NULL;
	*ret_n = 0;
	for (;;) {
		const char *name, *v;
		size_t nlen, vlen;

		while (p < end && (html_space(*p) || *p == '/'))
			p++;
		if (p >= end)
			return -EIO;
		if (*p == '>') {
			*ret_gt = p;
			return 0;
		}
		name = p;
		while (p < end && !html_space(*p) && *p != '=' && *p != '>' && *p != '/')
			p++;
		nlen = (size_t)(p - name);
		while (p < end && html_space(*p))
			p++;
		if (p >= end)
			return -EIO;
		if (*p != '=')
			continue; /* a bare attribute */
		p++;
		while (p < end && html_space(*p))
			p++;
		if (p >= end)
			return -EIO;
		if (*p == '"' || *p == '\'') {
			const char *q = memchr(p + 1, *p, (size_t)(end - p - 1));

			if (!q)
				return -EIO;
			v = p + 1;
			vlen = (size_t)(q - v);
			p = q + 1;
		} else {
			v = p;
			while (p < end && !html_space(*p) && *p != '>')
				p++;
			vlen = (size_t)(p - v);
		}
		if (want_href && nlen == 4 && strncasecmp(name, "href", 4) == 0 && !*ret_v) {
			*ret_v = v;
			*ret_n = vlen;
		}
	}
}

int remote_parse_html_listing(const char *html, size_t len, const char *dir_path,
			      struct remote_entries *e)
{
	const char *p = html, *end = html + len;
	bool tags = false;
	char *want;
	int ret = 0;

	if (!dir_path[0] || dir_path[strlen(dir_path) - 1] != '/')
		return -EINVAL;
	want = strdup(dir_path);
	if (!want)
		return -ENOMEM;
	if (!pct_decode_strict(want)) {
		ret = -EINVAL;
		goto out_free;
	}
	while (p < end) {
		const char *lt = memchr(p, '<', (size_t)(end - p)), *t, *gt, *v;
		size_t vlen;
		bool is_a;

		if (!lt)
			break;
		if (end - lt >= 4 && memcmp(lt, "<!--", 4) == 0) {
			const char *c = memmem(lt + 4, (size_t)(end - lt - 4), "-->", 3);

			if (!c)
				goto out_bad;
			p = c + 3;
			continue;
		}
		t = lt + 1;
		if (t < end && *t == '/')
			t++;
		if (t >= end)
			goto out_bad;
		if (*t == '!' || *t == '?') {
			gt = memchr(t, '>', (size_t)(end - t));
			if (!gt)
				goto out_bad;
			tags = true;
			p = gt + 1;
			continue;
		}
		if (!((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z'))) {
			p = lt + 1; /* a lone '<' in text */
			continue;
		}
		is_a = (*t == 'a' || *t == 'A') && t == lt + 1 && t + 1 < end &&
		       (html_space(t[1]) || t[1] == '>');
		while (t < end && !html_space(*t) && *t != '>' && *t != '/')
			t++;
		ret = html_attrs(t, end, is_a, &gt, &v, &vlen);
		if (ret < 0)
			goto out_free;
		tags = true;
		if (is_a && v) {
			ret = html_link(v, vlen, want, e);
			if (ret < 0)
				goto out_free;
		}
		p = gt + 1;
	}
	if (tags)
		goto out_free;
out_bad:
	ret = -EIO;
out_free:
	free(want);
	return ret;
}
