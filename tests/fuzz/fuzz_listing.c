/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for what the http and s3 remotes parse out of a server's answers (built and
 * run by tests/fuzz/run-fuzz.sh, not by meson). The first byte of an input chooses the parser
 * (its value modulo 6), the second is a parameter of some; the rest is the answer:
 *
 *   0  PROPFIND multistatus (remote_parse_propfind); the second byte chooses the collection asked
 *   1  nginx JSON autoindex (remote_parse_autoindex_json)
 *   2  S3 ListObjectsV2 XML (remote_parse_s3_list); the second byte chooses the key prefix
 *   3  response header lines, split at '\n' as curl hands them over (remote_parse_header:
 *      Retry-After, Content-Range, status lines)
 *   4  XML character data (remote_xml_text)
 *   5  an HTML directory listing (remote_parse_html_listing: nginx autoindex, Apache
 *      mod_autoindex, python http.server); the second byte chooses the collection asked
 *
 * Invariants: a parser returns 0, -EIO or -ENOMEM; every name it found is a string, not empty
 * for PROPFIND and HTML (nor holding '/', nor "." or "..") and S3 (the part after the prefix
 * listed); a continuation token is at most 4096 bytes; Retry-After stays within 0..3600 seconds (-1
 * after a status line); XML text decodes to no more bytes than it had.
 *
 * Seeds: answers captured from the servers of tests/remote/servers.sh (nginx JSON autoindex,
 * s3rver ListObjectsV2, nginx and python Retry-After and Content-Range headers) and from lighttpd
 * mod_webdav (PROPFIND), the HTML listings of nginx autoindex, Apache mod_autoindex and python's
 * http.server (tests/remote/real-servers.sh), plus a few broken ones; they are files in the repo,
 * with no generator.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "remote_priv.h"

static const char *const dirs[] = {"/dav/ns/", "/", "/cache/a%20b/", "/dav/"};
static const char *const prefixes[] = {"prefix/ns/", "", "prefix/", "ns/"};

static void check_entries(struct remote_entries *e, int r, bool nonempty, bool no_slash)
{
	CHECK(r == 0 || r == -EIO || r == -ENOMEM);
	CHECK(e->n <= e->cap);
	for (size_t i = 0; i < e->n; i++) {
		const char *n = e->v[i].name;

		CHECK(n);
		CHECK(!nonempty || *n);
		CHECK(!no_slash || !strchr(n, '/'));
		/* What remote_list does with each name. */
		(void)remote_name_valid(n);
	}
	remote_entries_release(e);
}

static void headers(const char *p, size_t len)
{
	struct remote_xfer x = {0};
	long retry_after = -2;

	while (len) {
		const char *nl = memchr(p, '\n', len);
		size_t n = nl ? (size_t)(nl - p) + 1 : len;

		remote_parse_header(p, n, &retry_after, &x);
		CHECK(retry_after >= -2 && retry_after <= 3600);
		p += n;
		len -= n;
	}
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	struct remote_entries e = {0};
	const char *body;
	size_t len;
	char *s, *token = NULL;
	int r;

	if (size < 2)
		return 0;
	body = (const char *)data + 2;
	len = size - 2;
	switch (data[0] % 6) {
	case 0:
		r = remote_parse_propfind(body, len, dirs[data[1] % 4], &e);
		check_entries(&e, r, true, true);
		break;
	case 1:
		r = remote_parse_autoindex_json(body, len, &e);
		check_entries(&e, r, false, false);
		break;
	case 2:
		r = remote_parse_s3_list(body, len, prefixes[data[1] % 4], &e, &token);
		if (r == 0 && token) {
			CHECK(strlen(token) <= 4096);
			free(token);
		}
		check_entries(&e, r, true, false);
		break;
	case 3:
		headers(body, len);
		break;
	case 4:
		s = remote_xml_text(body, len);
		if (s) {
			CHECK(strlen(s) <= len);
			free(s);
		}
		break;
	case 5:
		r = remote_parse_html_listing(body, len, dirs[data[1] % 4], &e);
		for (size_t i = 0; r == 0 && i < e.n; i++)
			CHECK(strcmp(e.v[i].name, ".") && strcmp(e.v[i].name, ".."));
		check_entries(&e, r, true, true);
		break;
	}
	return 0;
}
