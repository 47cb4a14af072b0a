/* SPDX-License-Identifier: MIT */
/*
 * The remote backends. One conformance check runs against the file backend always, and against
 * WebDAV (nginx) and S3 (s3rver behind nginx) when tests/remote/servers.sh started them and set
 * PKGCACHEFS_TEST_WEBDAV_URL / PKGCACHEFS_TEST_S3_URL (tests/remote/run-remote-unit.sh does).
 * Fault tests kill and restart the servers through the harness, so the binary runs with -j1.
 * The listing parsers get hostile input directly (remote_priv.h).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "remote.h"
#include "remote_priv.h"
#include "util.h"

static char tmpdir[64];

static void make_tmpdir(void)
{
	strcpy(tmpdir, "/tmp/test_remote.XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmpdir(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	cr_expect_eq(system(cmd), 0);
}

static struct remote *open_url(const char *url, const struct remote_options *o)
{
	struct remote *r = NULL;
	char err[256];
	int ret = remote_open(url, o, &r, err, sizeof(err));

	cr_assert_eq(ret, 0, "remote_open(%s): %d %s", url, ret, err);
	return r;
}

static struct remote *open_file_remote(void)
{
	char url[128];

	snprintf(url, sizeof(url), "file://%s", tmpdir);
	return open_url(url, NULL);
}

static void fill(uint8_t *buf, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (uint8_t)(seed >> 16);
	}
}

struct seen {
	char names[64][128];
	uint64_t sizes[64];
	int n;
	int stop_after;
};

static int collect(const char *name, uint64_t size, void *data)
{
	struct seen *s = data;

	if (s->n < 64) {
		snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name);
		s->sizes[s->n] = size;
	}
	s->n++;
	if (s->stop_after && s->n == s->stop_after)
		return 42;
	return 0;
}

static int find(const struct seen *s, const char *name)
{
	for (int i = 0; i < s->n && i < 64; i++)
		if (strcmp(s->names[i], name) == 0)
			return i;
	return -1;
}

/* Everything remote.h promises, on one backend; objects under top/. */
static void conformance(struct remote *r, const char *top)
{
	enum { SIZE = 1 << 20 };
	uint8_t *data = malloc(SIZE), *back = malloc(SIZE);
	char a[128], b[128], c[128], sub[128], dir[64];
	struct seen s = {0};
	void *got;
	size_t got_len;
	uint64_t size = 0;
	int fd;

	cr_assert(data && back);
	fill(data, SIZE, 1);
	snprintf(a, sizeof(a), "%s/packs/aaaa.pack", top);
	snprintf(b, sizeof(b), "%s/packs/bbbb.pack", top);
	snprintf(c, sizeof(c), "%s/packs/empty", top);
	snprintf(sub, sizeof(sub), "%s/packs/sub/deeper.pack", top);
	snprintf(dir, sizeof(dir), "%s/packs/", top);

	/* missing */
	cr_assert_eq(remote_get(r, a, 0, 0, &got, &got_len), -ENOENT, "%s", remote_last_error());
	cr_assert_eq(remote_get_into(r, a, 0, 10, back), -ENOENT);
	cr_assert_eq(remote_head(r, a, &size), 0);
	cr_assert_eq(remote_delete(r, a), 0, "%s", remote_last_error());
	cr_assert_eq(remote_list(r, dir, collect, &s), 0, "%s", remote_last_error());
	cr_assert_eq(s.n, 0);

	/* put, head, whole and ranged reads */
	cr_assert_eq(remote_put(r, a, data, SIZE), 0, "%s", remote_last_error());
	cr_assert_eq(remote_head(r, a, &size), 1, "%s", remote_last_error());
	cr_assert_eq(size, SIZE);
	cr_assert_eq(remote_get(r, a, 0, 0, &got, &got_len), 0, "%s", remote_last_error());
	cr_assert_eq(got_len, SIZE);
	cr_assert_eq(memcmp(got, data, SIZE), 0);
	free(got);
	cr_assert_eq(remote_get(r, a, 1000, 5000, &got, &got_len), 0, "%s", remote_last_error());
	cr_assert_eq(got_len, 5000);
	cr_assert_eq(memcmp(got, data + 1000, 5000), 0);
	free(got);
	cr_assert_eq(remote_get(r, a, SIZE - 100, 0, &got, &got_len), 0, "%s", remote_last_error());
	cr_assert_eq(got_len, 100);
	cr_assert_eq(memcmp(got, data + SIZE - 100, 100), 0);
	free(got);
	cr_assert_eq(remote_get_into(r, a, 0, 4096, back), 0, "%s", remote_last_error());
	cr_assert_eq(memcmp(back, data, 4096), 0);
	cr_assert_eq(remote_get_into(r, a, 777, SIZE - 777, back), 0);
	cr_assert_eq(memcmp(back, data + 777, SIZE - 777), 0);

	/* ranges past the end: truncated object */
	cr_assert_eq(remote_get(r, a, SIZE - 10, 20, &got, &got_len), -EIO);
	cr_assert_eq(remote_get_into(r, a, SIZE - 10, 20, back), -EIO);
	cr_assert_eq(remote_get(r, a, SIZE + 10, 5, &got, &got_len), -EIO);
	cr_assert_eq(remote_get(r, a, SIZE + 10, 0, &got, &got_len), -EIO);
	cr_assert_neq(remote_last_error()[0], '\0');

	/* overwrite */
	fill(data, SIZE, 2);
	cr_assert_eq(remote_put(r, a, data, 4000), 0, "%s", remote_last_error());
	cr_assert_eq(remote_get(r, a, 0, 0, &got, &got_len), 0);
	cr_assert_eq(got_len, 4000);
	cr_assert_eq(memcmp(got, data, 4000), 0);
	free(got);

	/* put from an fd whose position is elsewhere */
	{
		char path[128];

		snprintf(path, sizeof(path), "%s/fdsrc.XXXXXX", tmpdir);
		fd = mkstemp(path);
		cr_assert_geq(fd, 0);
		unlink(path);
		fill(data, SIZE, 3);
		cr_assert_eq(pwrite_all(fd, data, SIZE, 0), 0);
		cr_assert_eq(lseek(fd, 12345, SEEK_SET), 12345);
		cr_assert_eq(remote_put_fd(r, b, fd, SIZE - 1), 0, "%s", remote_last_error());
		cr_assert_eq(lseek(fd, 0, SEEK_CUR), 12345);
		close(fd);
	}
	cr_assert_eq(remote_get_into(r, b, 0, SIZE - 1, back), 0, "%s", remote_last_error());
	cr_assert_eq(memcmp(back, data, SIZE - 1), 0);

	/* empty object */
	cr_assert_eq(remote_put(r, c, NULL, 0), 0, "%s", remote_last_error());
	cr_assert_eq(remote_head(r, c, &size), 1);
	cr_assert_eq(size, 0);
	cr_assert_eq(remote_get(r, c, 0, 0, &got, &got_len), 0, "%s", remote_last_error());
	cr_assert_eq(got_len, 0);
	cr_assert_not_null(got);
	free(got);

	/* listing: direct children only, with sizes, dir with or without '/' */
	cr_assert_eq(remote_put(r, sub, "x", 1), 0, "%s", remote_last_error());
	memset(&s, 0, sizeof(s));
	cr_assert_eq(remote_list(r, dir, collect, &s), 0, "%s", remote_last_error());
	cr_assert_eq(s.n, 3);
	cr_assert_geq(find(&s, a), 0);
	cr_assert_eq(s.sizes[find(&s, a)], 4000);
	cr_assert_eq(s.sizes[find(&s, b)], SIZE - 1);
	cr_assert_eq(s.sizes[find(&s, c)], 0);
	memset(&s, 0, sizeof(s));
	dir[strlen(dir) - 1] = '\0';
	cr_assert_eq(remote_list(r, dir, collect, &s), 0);
	cr_assert_eq(s.n, 3);
	memset(&s, 0, sizeof(s));
	s.stop_after = 2;
	cr_assert_eq(remote_list(r, dir, collect, &s), 42);
	cr_assert_eq(s.n, 2);
	memset(&s, 0, sizeof(s));
	snprintf(dir, sizeof(dir), "%s/nothing-here/", top);
	cr_assert_eq(remote_list(r, dir, collect, &s), 0, "%s", remote_last_error());
	cr_assert_eq(s.n, 0);

	/* delete */
	cr_assert_eq(remote_delete(r, a), 0, "%s", remote_last_error());
	cr_assert_eq(remote_head(r, a, NULL), 0);
	cr_assert_eq(remote_get(r, a, 0, 1, &got, &got_len), -ENOENT);
	cr_assert_eq(remote_delete(r, a), 0);
	cr_assert_eq(remote_delete(r, b), 0);
	cr_assert_eq(remote_delete(r, c), 0);
	cr_assert_eq(remote_delete(r, sub), 0);

	/* names */
	{
		static const char *const bad[] = {"",     "/abs",   "a//b", "a/../b", "./a",
						  "a/",   "sp ace", "q?x",  "x.tmp",  "a/%2e",
						  "a\\b", "..",     "é"};

		for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
			cr_assert_eq(remote_put(r, bad[i], "x", 1), -EINVAL, "%s", bad[i]);
			cr_assert_eq(remote_get(r, bad[i], 0, 0, &got, &got_len), -EINVAL);
			cr_assert_eq(remote_head(r, bad[i], NULL), -EINVAL);
			cr_assert_eq(remote_delete(r, bad[i]), -EINVAL);
		}
		cr_assert_eq(remote_list(r, "../", collect, &s), -EINVAL);
		cr_assert_eq(remote_put(r, NULL, "x", 1), -EINVAL);
	}
	free(data);
	free(back);
}

struct worker {
	struct remote *r;
	const char *top;
	int id;
	int errors;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	uint8_t buf[8192], back[8192];

	for (int i = 0; i < 16; i++) {
		char name[128];
		void *got;
		size_t len;

		snprintf(name, sizeof(name), "%s/ns/w%d-%d.cat", w->top, w->id, i);
		fill(buf, sizeof(buf), (uint32_t)(w->id * 100 + i));
		if (remote_put(w->r, name, buf, sizeof(buf)) != 0)
			w->errors++;
		if (remote_get_into(w->r, name, 100, 1000, back) != 0 ||
		    memcmp(back, buf + 100, 1000) != 0)
			w->errors++;
		if (remote_get(w->r, name, 0, 0, &got, &len) != 0) {
			w->errors++;
		} else {
			if (len != sizeof(buf) || memcmp(got, buf, len) != 0)
				w->errors++;
			free(got);
		}
	}
	return NULL;
}

static void concurrency(struct remote *r, const char *top)
{
	struct worker w[4];
	pthread_t t[4];
	struct seen s = {0};
	char dir[64];

	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){.r = r, .top = top, .id = i};
		cr_assert_eq(pthread_create(&t[i], NULL, work, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(w[i].errors, 0, "thread %d: %d errors", i, w[i].errors);
	}
	snprintf(dir, sizeof(dir), "%s/ns/", top);
	cr_assert_eq(remote_list(r, dir, collect, &s), 0, "%s", remote_last_error());
	cr_assert_eq(s.n, 64);
	for (int i = 0; i < 64 && i < s.n; i++)
		cr_assert_eq(s.sizes[i], 8192);
}

/* ---- file backend ---- */

TestSuite(remote_file, .init = make_tmpdir, .fini = rm_tmpdir);

Test(remote_file, conformance)
{
	struct remote *r = open_file_remote();
	struct remote_counters k;

	conformance(r, "conf");
	remote_get_counters(r, &k);
	cr_assert_gt(k.requests, 20);
	cr_assert_geq(k.bytes_out, (1u << 20) + 4000);
	cr_assert_geq(k.bytes_in, 1u << 20);
	cr_assert_gt(k.failures, 0); /* the truncated reads and bad names */
	remote_free(r);
}

Test(remote_file, concurrent)
{
	struct remote *r = open_file_remote();

	concurrency(r, "conc");
	remote_free(r);
}

Test(remote_file, atomic_put_leaves_no_temp_and_list_skips_temp)
{
	struct remote *r = open_file_remote();
	struct seen s = {0};
	char path[256];
	int fd;

	cr_assert_eq(remote_put(r, "gc/x", "abc", 3), 0);
	snprintf(path, sizeof(path), "%s/gc/x.123.deadbeef.tmp", tmpdir);
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	cr_assert_geq(fd, 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/gc/.hidden", tmpdir);
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	close(fd);
	cr_assert_eq(remote_list(r, "gc", collect, &s), 0);
	cr_assert_eq(s.n, 1);
	cr_assert_str_eq(s.names[0], "gc/x");
	/* top level: objects only, not directories */
	cr_assert_eq(remote_put(r, "config", "v=1\n", 4), 0);
	memset(&s, 0, sizeof(s));
	cr_assert_eq(remote_list(r, "", collect, &s), 0);
	cr_assert_eq(s.n, 1);
	cr_assert_str_eq(s.names[0], "config");
	remote_free(r);
}

Test(remote_file, open_errors)
{
	struct remote *r = NULL;
	char err[256];

	cr_assert_eq(remote_open("file:///nonexistent/pkgcachefs/x", NULL, &r, err, sizeof(err)),
		     -ENOENT);
	cr_assert_not_null(strstr(err, "/nonexistent/pkgcachefs/x"));
	cr_assert_eq(remote_open("file://relative", NULL, &r, err, sizeof(err)), -EINVAL);
	cr_assert_eq(remote_open("ftp://host/x", NULL, &r, err, sizeof(err)), -EINVAL);
	cr_assert_neq(err[0], '\0');
	cr_assert_eq(remote_open("", NULL, &r, err, sizeof(err)), -EINVAL);
	cr_assert_null(r);
	remote_free(NULL);
}

/* ---- URL handling, credentials ---- */

Test(remote_url, http_password_refused_and_not_echoed)
{
	struct remote *r = NULL;
	char err[256];

	cr_assert_eq(remote_open("https://alice:s3cr3tpw@example.org/cache/", NULL, &r, err,
				 sizeof(err)),
		     -EINVAL);
	cr_assert_not_null(strstr(err, "netrc"));
	cr_assert_null(strstr(err, "s3cr3tpw"));
	cr_assert_eq(remote_open("https://example.org/cache/?x=1", NULL, &r, err, sizeof(err)),
		     -EINVAL);
	r = open_url("https://alice@example.org/cache", NULL);
	cr_assert_str_eq(remote_url(r), "https://alice@example.org/cache");
	remote_free(r);
}

Test(remote_url, s3_needs_credentials)
{
	struct remote *r = NULL;
	char err[512];

	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("AWS_SESSION_TOKEN");
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
	/* Not the instance metadata of whatever machine runs the tests. */
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	cr_assert_eq(remote_open("s3://bucket/p", NULL, &r, err, sizeof(err)), -EACCES);
	cr_assert_not_null(strstr(err, "AWS_ACCESS_KEY_ID"));
	cr_assert_not_null(strstr(err, "AWS_SECRET_ACCESS_KEY"));
	setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
	cr_assert_eq(remote_open("s3://bucket/p", NULL, &r, err, sizeof(err)), -EACCES);
}

Test(remote_url, s3_credentials_file_and_options, .init = make_tmpdir, .fini = rm_tmpdir)
{
	struct remote *r = NULL;
	char path[128], err[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/credentials", tmpdir);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("# comment\n[default]\naws_access_key_id = WRONG\naws_secret_access_key=WRONG\n"
	      "[ci]\r\n aws_access_key_id = AKIDCI \r\naws_secret_access_key=SECRETCI\n"
	      "garbage line\n[other]\naws_access_key_id=OTHER\n",
	      f);
	fclose(f);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("AWS_ENDPOINT_URL");
	unsetenv("AWS_ENDPOINT_URL_S3");
	unsetenv("AWS_REGION");
	unsetenv("AWS_DEFAULT_REGION");
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	setenv("AWS_PROFILE", "ci", 1);
	cr_assert_eq(remote_open("s3://my-bucket/a/b/", NULL, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(r->access_key, "AKIDCI");
	cr_assert_str_eq(r->secret_key, "SECRETCI");
	cr_assert_str_eq(r->region, "us-east-1");
	cr_assert_str_eq(r->host, "my-bucket.s3.us-east-1.amazonaws.com");
	cr_assert_str_eq(r->origin, "https://my-bucket.s3.us-east-1.amazonaws.com");
	cr_assert_str_eq(r->root, "/");
	cr_assert_str_eq(r->key_prefix, "a/b/");
	remote_free(r);

	setenv("AWS_REGION", "eu-west-3", 1);
	cr_assert_eq(remote_open("s3://bkt?endpoint=http%3A%2F%2F127.0.0.1%3A9000", NULL, &r, err,
				 sizeof(err)),
		     0, "%s", err);
	cr_assert_str_eq(r->region, "eu-west-3");
	cr_assert_str_eq(r->origin, "http://127.0.0.1:9000");
	cr_assert_str_eq(r->root, "/bkt/");
	cr_assert_str_eq(r->key_prefix, "");
	remote_free(r);

	cr_assert_eq(
		remote_open("s3://bkt?endpoint=https://minio.local&addressing=virtual&region=r1",
			    NULL, &r, err, sizeof(err)),
		0, "%s", err);
	cr_assert_str_eq(r->host, "bkt.minio.local");
	cr_assert_str_eq(r->region, "r1");
	remote_free(r);

	cr_assert_eq(remote_open("s3://bkt?secret=x", NULL, &r, err, sizeof(err)), -EINVAL);
	cr_assert_eq(remote_open("s3://bkt?addressing=sideways", NULL, &r, err, sizeof(err)),
		     -EINVAL);
	cr_assert_eq(remote_open("s3://bkt?endpoint=ftp://x", NULL, &r, err, sizeof(err)), -EINVAL);
	cr_assert_eq(remote_open("s3:///nobucket", NULL, &r, err, sizeof(err)), -EINVAL);
	cr_assert_null(strstr(err, "SECRETCI"));
}

/* Nothing listens on port 1: refused quickly, and said so. */
Test(remote_url, connection_refused)
{
	struct remote_options o = {.timeout_ms = 5000, .retries = 1};
	struct remote *r = open_url("http://127.0.0.1:1/x/", &o);
	struct remote_counters k;
	int64_t t0 = mono_ns();
	void *got;
	size_t len;

	cr_assert_eq(remote_get(r, "packs/a", 0, 0, &got, &len), -ECONNREFUSED);
	cr_assert_lt(mono_ns() - t0, 3000000000ll);
	cr_assert_not_null(strstr(remote_last_error(), "GET http://127.0.0.1:1/x/packs/a"), "%s",
			   remote_last_error());
	remote_get_counters(r, &k);
	cr_assert_eq(k.requests, 2);
	cr_assert_eq(k.failures, 1);
	remote_free(r);
}

/* ---- listing parsers ---- */

Test(remote_parse, propfind)
{
	static const char xml[] =
		"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
		"<D:multistatus xmlns:D=\"DAV:\">"
		"<D:response><D:href>/dav/ns/</D:href><D:propstat><D:prop><D:resourcetype>"
		"<D:collection/></D:resourcetype></D:prop></D:propstat></D:response>"
		"<D:response><D:href>http://h:8/dav/ns/a%2Db.cat</D:href><D:propstat><D:prop>"
		"<D:getcontentlength>123</D:getcontentlength><D:resourcetype/></D:prop>"
		"</D:propstat></D:response>"
		"<d:RESPONSE><d:HREF>/dav/ns/x&amp;y</d:HREF><d:getContentLength> 7 "
		"</d:getContentLength></d:RESPONSE>"
		"<response xmlns=\"DAV:\"><href>/dav/ns/sub/</href><propstat><prop><resourcetype>"
		"<collection/></resourcetype></prop></propstat></response>"
		"<lp1:response><lp1:href>/dav/ns/nolen</lp1:href></lp1:response>"
		"<D:response><D:href>/elsewhere/ns/evil.cat</D:href>"
		"<D:getcontentlength>1</D:getcontentlength></D:response>"
		"<D:response><D:href>/dav/ns/huge</D:href>"
		"<D:getcontentlength>99999999999999999999999</D:getcontentlength></D:response>"
		"</D:multistatus>";
	struct remote_entries e = {0};

	cr_assert_eq(remote_parse_propfind(xml, strlen(xml), "/dav/ns/", &e), 0);
	cr_assert_eq(e.n, 4);
	cr_assert_str_eq(e.v[0].name, "a-b.cat");
	cr_assert_eq(e.v[0].size, 123);
	cr_assert_str_eq(e.v[1].name, "x&y"); /* dropped later by remote_list: not a name */
	cr_assert_eq(e.v[1].size, 7);
	cr_assert_str_eq(e.v[2].name, "nolen");
	cr_assert_eq(e.v[2].size, UINT64_MAX);
	cr_assert_eq(e.v[3].size, UINT64_MAX);
	remote_entries_release(&e);

	cr_assert_eq(remote_parse_propfind("<html>no</html>", 15, "/", &e), -EIO);
	cr_assert_eq(remote_parse_propfind("<D:multistatus", 14, "/", &e), -EIO);
	cr_assert_eq(remote_parse_propfind("", 0, "/", &e), -EIO);
	remote_entries_release(&e);
}

Test(remote_parse, nginx_autoindex_json)
{
	static const char json[] =
		"[\n{ \"name\":\"a.pack\", \"type\":\"file\", \"mtime\":\"Sat, 01 Jan 2000\", "
		"\"size\":42 },\n{ \"name\":\"sub\", \"type\":\"directory\", \"mtime\":\"x\" },\n"
		"{ \"name\":\"q\\\"\\u0041\\u00e9\", \"type\":\"file\", \"size\":1 },\n"
		"{ \"name\":\"b\", \"type\":\"file\" }\n]\n";
	static const char *const bad[] = {"",
					  "{}",
					  "[",
					  "[{\"name\":\"a\",}]",
					  "[{\"name\":[1]}]",
					  "[{\"name\":\"a\"}] x",
					  "[{\"name\":\"a\\q\"}]",
					  "[{\"name\":\"a"};
	struct remote_entries e = {0};

	cr_assert_eq(remote_parse_autoindex_json(json, strlen(json), &e), 0);
	cr_assert_eq(e.n, 3);
	cr_assert_str_eq(e.v[0].name, "a.pack");
	cr_assert_eq(e.v[0].size, 42);
	cr_assert_str_eq(e.v[1].name, "q\"A\x7f");
	cr_assert_eq(e.v[2].size, UINT64_MAX);
	remote_entries_release(&e);
	cr_assert_eq(remote_parse_autoindex_json("[]", 2, &e), 0);
	cr_assert_eq(e.n, 0);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		cr_assert_eq(remote_parse_autoindex_json(bad[i], strlen(bad[i]), &e), -EIO, "%s",
			     bad[i]);
		remote_entries_release(&e);
	}
}

/* What nginx autoindex, Apache mod_autoindex and python http.server send (as captured from them
 * by tests/remote/real-servers.sh, shortened), and the href forms they and others use. */
Test(remote_parse, html_listing)
{
	static const char nginx[] =
		"<html>\n<head><title>Index of /pkgcache/ns/</title></head>\n<body>\n"
		"<h1>Index of /pkgcache/ns/</h1><hr><pre><a href=\"../\">../</a>\n"
		"<a href=\"w0-0.cat\">w0-0.cat</a>      06-Dec-2026 03:05    8192\n"
		"<a "
		"href=\"0000000000000001-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaa.cat\">0000000000000001-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa..&gt;</"
		"a> x\n"
		"</pre><hr></body>\n</html>\n";
	static const char apache[] =
		"<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\" "
		"\"http://www.w3.org/TR/html4/strict.dtd\">\n<html>\n <head>\n"
		"  <title>Index of /pkgcache/ns</title>\n </head>\n <body>\n"
		"<h1>Index of /pkgcache/ns</h1>\n<ul><li><a href=\"/pkgcache/\"> Parent "
		"Directory</a></li>\n<li><a href=\"w0-0.cat\"> w0-0.cat</a></li>\n"
		"<li><a href=\"sub/\"> sub/</a></li>\n</ul>\n</body></html>\n";
	static const char python[] =
		"<!DOCTYPE HTML>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
		"<title>Directory listing for /ns/</title>\n</head>\n<body>\n<ul>\n"
		"<li><a href=\"w0-0.cat\">w0-0.cat</a></li>\n</ul>\n<hr>\n</body>\n</html>\n";
	static const char forms[] =
		"<a href=\"/pkgcache/a%20b/x%2Dy.cat\"><img src=i></a><a href=\"x-y.cat\">x</a>"
		"<a href=\"http://h:1/pkgcache/a%20b/z.pack\">z</a><a "
		"href=//h/pkgcache/a%20b/w>w</a>"
		"<A HREF='./v'>v</A><a title=\"t\" href=\"?C=N;O=D\">sort</a>"
		"<a href=\"mailto:x@y\">m</a><a href=\"/elsewhere/e\">e</a><a href=\"..\">up</a>"
		"<a href=\"%zz\">bad</a><a href=\"a%00b\">nul</a><abbr href=\"no\">"
		"<!-- <a href=\"hidden\"> --><a href=\"a&amp;b\">amp</a>";
	static const char *const bad[] = {"", "no tags at all", "<a href=\"x", "<a href=x",
					  "<!-- <a href=\"x\">"};
	struct remote_entries e = {0};

	cr_assert_eq(remote_parse_html_listing(nginx, strlen(nginx), "/pkgcache/ns/", &e), 0);
	cr_assert_eq(e.n, 2);
	cr_assert_str_eq(e.v[0].name, "w0-0.cat");
	cr_assert_eq(e.v[0].size, UINT64_MAX); /* sizes come from HEAD */
	cr_assert_eq(strlen(e.v[1].name), 16 + 1 + 64 + 4);
	remote_entries_release(&e);

	cr_assert_eq(remote_parse_html_listing(apache, strlen(apache), "/pkgcache/ns/", &e), 0);
	cr_assert_eq(e.n, 1);
	cr_assert_str_eq(e.v[0].name, "w0-0.cat");
	remote_entries_release(&e);

	cr_assert_eq(remote_parse_html_listing(python, strlen(python), "/ns/", &e), 0);
	cr_assert_eq(e.n, 1);
	cr_assert_str_eq(e.v[0].name, "w0-0.cat");
	remote_entries_release(&e);

	/* The listed collection percent-encoded; absolute links decoded before comparing. */
	cr_assert_eq(remote_parse_html_listing(forms, strlen(forms), "/pkgcache/a%20b/", &e), 0);
	cr_assert_eq(e.n, 5, "%zu", e.n);
	cr_assert_str_eq(e.v[0].name, "x-y.cat"); /* and not twice: adjacent duplicate */
	cr_assert_str_eq(e.v[1].name, "z.pack");
	cr_assert_str_eq(e.v[2].name, "w");
	cr_assert_str_eq(e.v[3].name, "v");
	cr_assert_str_eq(e.v[4].name, "a&b"); /* dropped later by remote_list: not a name */
	remote_entries_release(&e);

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		cr_assert_eq(remote_parse_html_listing(bad[i], strlen(bad[i]), "/", &e), -EIO, "%s",
			     bad[i]);
		remote_entries_release(&e);
	}
	cr_assert_eq(remote_parse_html_listing(python, strlen(python), "/ns", &e), -EINVAL);
}

Test(remote_parse, s3_list)
{
	static const char xml[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		"<Name>b</Name><Prefix>p/ns/</Prefix><KeyCount>3</KeyCount>"
		"<IsTruncated>true</IsTruncated>"
		"<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=&amp;"
		"</NextContinuationToken>"
		"<Contents><Key>p/ns/a.cat</Key><Size>10</Size><ETag>&quot;x&quot;</ETag></"
		"Contents>"
		"<Contents><Key>p/ns/b&amp;c&#46;cat</Key><Size>18446744073709551615</Size></"
		"Contents>"
		"<Contents><Key>other/x</Key><Size>1</Size></Contents>"
		"<Contents><Key>p/ns/neg</Key><Size>-1</Size></Contents>"
		"<CommonPrefixes><Prefix>p/ns/sub/</Prefix></CommonPrefixes>"
		"</ListBucketResult>";
	struct remote_entries e = {0};
	char *token = NULL;

	cr_assert_eq(remote_parse_s3_list(xml, strlen(xml), "p/ns/", &e, &token), 0);
	cr_assert_eq(e.n, 3);
	cr_assert_str_eq(e.v[0].name, "a.cat");
	cr_assert_eq(e.v[0].size, 10);
	cr_assert_str_eq(e.v[1].name, "b&c.cat");
	cr_assert_eq(e.v[2].size, UINT64_MAX);
	cr_assert_str_eq(token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=&");
	free(token);
	remote_entries_release(&e);

	cr_assert_eq(remote_parse_s3_list("<Error><Code>x</Code></Error>", 29, "", &e, &token),
		     -EIO);
	{
		static const char trunc_no_token[] =
			"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
		static const char bad_entity[] = "<ListBucketResult><Contents><Key>a&bogus;</Key></"
						 "Contents></ListBucketResult>";

		cr_assert_eq(remote_parse_s3_list(trunc_no_token, strlen(trunc_no_token), "", &e,
						  &token),
			     -EIO);
		cr_assert_eq(remote_parse_s3_list(bad_entity, strlen(bad_entity), "", &e, &token),
			     -EIO);
	}
	remote_entries_release(&e);
}

/* ---- real servers (tests/remote/servers.sh) ---- */

static const char *need_env(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v)
		cr_skip_test("%s not set: run through tests/remote/servers.sh "
			     "(meson test --suite remote)",
			     name);
	return v;
}

static void harness(const char *what)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "bash '%s' %s '%s' >&2", need_env("PKGCACHEFS_TEST_SERVERS_SH"),
		 what, need_env("PKGCACHEFS_TEST_SERVERS_DIR"));
	cr_assert_eq(system(cmd), 0, "%s", cmd);
}

/* Sum of $request_length (PUT) or $bytes_sent (GET) for uri in an access log. */
static uint64_t log_bytes(const char *log, const char *method, const char *uri_suffix)
{
	FILE *f = fopen(log, "r");
	char line[2048], m[16], uri[1024];
	unsigned long long sent, reqlen, total = 0;
	int status;

	cr_assert_not_null(f, "%s", log);
	while (fgets(line, sizeof(line), f)) {
		size_t ul;

		if (sscanf(line, "%15s %1023s %d %llu %llu", m, uri, &status, &sent, &reqlen) != 5)
			continue;
		ul = strlen(uri);
		if (strcmp(m, method) != 0 || ul < strlen(uri_suffix) ||
		    strcmp(uri + ul - strlen(uri_suffix), uri_suffix) != 0)
			continue;
		total += strcmp(method, "PUT") == 0 ? reqlen : sent;
	}
	fclose(f);
	return total;
}

static void server_bytes(struct remote *r, const char *log, const char *top)
{
	enum { SIZE = 3 << 20 };
	uint8_t *data = malloc(SIZE), *back = malloc(4096);
	char name[128], suffix[160];
	struct remote_counters k0, k1;
	uint64_t put_bytes, get_bytes;

	fill(data, SIZE, 9);
	/* unique, since the access log outlives one run */
	snprintf(name, sizeof(name), "%s/packs/counted-%d-%lld.pack", top, (int)getpid(),
		 (long long)mono_ns());
	snprintf(suffix, sizeof(suffix), "/%s", name);
	remote_get_counters(r, &k0);
	cr_assert_eq(remote_put(r, name, data, SIZE), 0, "%s", remote_last_error());
	cr_assert_eq(remote_get_into(r, name, SIZE / 2, 4096, back), 0, "%s", remote_last_error());
	cr_assert_eq(memcmp(back, data + SIZE / 2, 4096), 0);
	remote_get_counters(r, &k1);
	cr_assert_eq(k1.bytes_out - k0.bytes_out, SIZE);
	cr_assert_eq(k1.bytes_in - k0.bytes_in, 4096);
	/* nginx logs when the request ends: give it a moment */
	usleep(200000);
	put_bytes = log_bytes(log, "PUT", suffix);
	get_bytes = log_bytes(log, "GET", suffix);
	cr_assert_geq(put_bytes, SIZE, "server saw %llu bytes of PUT",
		      (unsigned long long)put_bytes);
	cr_assert_lt(put_bytes, SIZE + 4096);
	/* the ranged GET moved the range, not the object */
	cr_assert_geq(get_bytes, 4096);
	cr_assert_lt(get_bytes, 4096 + 2048, "server sent %llu bytes",
		     (unsigned long long)get_bytes);
	free(data);
	free(back);
}

TestSuite(remote_webdav, .init = make_tmpdir, .fini = rm_tmpdir);

Test(remote_webdav, conformance)
{
	struct remote *r = open_url(need_env("PKGCACHEFS_TEST_WEBDAV_URL"), NULL);

	conformance(r, "conf");
	remote_free(r);
}

Test(remote_webdav, concurrent)
{
	struct remote *r = open_url(need_env("PKGCACHEFS_TEST_WEBDAV_URL"), NULL);

	concurrency(r, "conc");
	remote_free(r);
}

Test(remote_webdav, bytes_counted_at_the_server)
{
	struct remote *r = open_url(need_env("PKGCACHEFS_TEST_WEBDAV_URL"), NULL);

	server_bytes(r, need_env("WEBDAV_ACCESS_LOG"), "bytes");
	remote_free(r);
}

/* A server that answers 409 to a PUT under a missing collection gets MKCOLs. */
Test(remote_webdav, mkcol_on_409)
{
	struct remote *r = open_url(need_env("STRICT_DAV_URL"), NULL);
	void *got;
	size_t len;

	cr_assert_eq(remote_put(r, "trace/2026/01/x.trc", "trace", 5), 0, "%s",
		     remote_last_error());
	cr_assert_eq(remote_get(r, "trace/2026/01/x.trc", 0, 0, &got, &len), 0);
	cr_assert_eq(len, 5);
	cr_assert_eq(memcmp(got, "trace", 5), 0);
	free(got);
	remote_free(r);
}

/* A server that ignores Range (200 with the whole object): the range asked, and nothing else. */
Test(remote_webdav, range_ignored_by_the_server)
{
	struct remote *r = open_url(need_env("NORANGE_URL"), NULL);
	uint8_t buf[5000];
	void *got;
	size_t len;

	cr_assert_eq(remote_get_into(r, "300000", 123457, sizeof(buf), buf), 0, "%s",
		     remote_last_error());
	for (size_t i = 0; i < sizeof(buf); i++)
		cr_assert_eq(buf[i], (123457 + i) % 251, "byte %zu", i);
	cr_assert_eq(remote_get(r, "300000", 299990, 10, &got, &len), 0, "%s", remote_last_error());
	cr_assert_eq(len, 10);
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(((uint8_t *)got)[i], (299990 + i) % 251);
	free(got);
	/* From an offset to the end, and the first bytes. */
	cr_assert_eq(remote_get(r, "1000", 990, 0, &got, &len), 0, "%s", remote_last_error());
	cr_assert_eq(len, 10);
	cr_assert_eq(((uint8_t *)got)[0], 990 % 251);
	free(got);
	cr_assert_eq(remote_get_into(r, "1000", 0, 100, buf), 0, "%s", remote_last_error());
	cr_assert_eq(buf[99], 99);
	/* Past the end: short, which remote_get_into calls a truncated object. */
	cr_assert_eq(remote_get_into(r, "1000", 950, 100, buf), -EIO);
	remote_free(r);
}

Test(remote_webdav, retry_after_503)
{
	struct remote_options o = {.timeout_ms = 10000, .retries = 2};
	struct remote *r = open_url(need_env("FAULT503_URL"), &o);
	struct remote_counters k;
	int64_t t0 = mono_ns(), dt;
	void *got;
	size_t len;

	cr_assert_eq(remote_get(r, "packs/x", 0, 0, &got, &len), -EIO);
	dt = mono_ns() - t0;
	/* two waits of Retry-After: 1 */
	cr_assert_geq(dt, 1900000000ll, "%lld ns", (long long)dt);
	cr_assert_lt(dt, 6000000000ll);
	cr_assert_not_null(strstr(remote_last_error(), "HTTP 503 after 3 attempts"), "%s",
			   remote_last_error());
	remote_get_counters(r, &k);
	cr_assert_eq(k.requests, 3);
	cr_assert_eq(k.failures, 1);
	remote_free(r);

	/* A Retry-After past the deadline is not waited for. */
	o.timeout_ms = 500;
	o.retries = 5;
	r = open_url(need_env("FAULT503_URL"), &o);
	t0 = mono_ns();
	cr_assert_eq(remote_get(r, "packs/x", 0, 0, &got, &len), -EIO);
	cr_assert_lt(mono_ns() - t0, 1000000000ll);
	remote_free(r);

	/* No retry at all. */
	o.timeout_ms = 0;
	o.retries = REMOTE_NO_RETRY;
	r = open_url(need_env("FAULT503_URL"), &o);
	cr_assert_eq(remote_head(r, "packs/x", NULL), -EIO);
	remote_get_counters(r, &k);
	cr_assert_eq(k.requests, 1);
	remote_free(r);
}

Test(remote_webdav, transient_503_then_success)
{
	struct remote *r = open_url(need_env("FLAKY_URL"), NULL);
	struct remote_counters k;
	int64_t t0 = mono_ns();
	char name[64];
	void *got;
	size_t len;

	/* the server remembers paths: a fresh one */
	snprintf(name, sizeof(name), "packs/once-%d-%lld", (int)getpid(), (long long)t0);
	cr_assert_eq(remote_get(r, name, 0, 0, &got, &len), 0, "%s", remote_last_error());
	cr_assert_eq(len, 16);
	cr_assert_eq(memcmp(got, "flaky but there\n", 16), 0);
	free(got);
	cr_assert_geq(mono_ns() - t0, 900000000ll);
	remote_get_counters(r, &k);
	cr_assert_eq(k.requests, 2);
	cr_assert_eq(k.failures, 0);
	remote_free(r);
}

struct killer {
	int delay_ms;
};

static void *kill_later(void *arg)
{
	struct killer *kl = arg;

	usleep((useconds_t)kl->delay_ms * 1000);
	harness("kill-webdav");
	return NULL;
}

/* nginx dies in the middle of a slow download: the call fails, fast, and works after restart. */
Test(remote_webdav, server_killed_midway)
{
	enum { SIZE = 4 << 20 };
	struct remote_options o = {.timeout_ms = 8000};
	struct remote *r = open_url(need_env("PKGCACHEFS_TEST_WEBDAV_URL"), NULL);
	struct remote *slow = open_url(need_env("WEBDAV_SLOW_URL"), &o);
	struct killer kl = {.delay_ms = 500};
	uint8_t *data = malloc(SIZE);
	pthread_t t;
	int64_t t0;
	void *got;
	size_t len;
	int ret;

	fill(data, SIZE, 5);
	cr_assert_eq(remote_put(r, "kill/packs/big.pack", data, SIZE), 0, "%s",
		     remote_last_error());
	cr_assert_eq(pthread_create(&t, NULL, kill_later, &kl), 0);
	t0 = mono_ns();
	ret = remote_get(slow, "kill/packs/big.pack", 0, 0, &got, &len);
	pthread_join(t, NULL);
	cr_assert(ret == -ECONNREFUSED || ret == -EIO, "%d %s", ret, remote_last_error());
	cr_assert_lt(mono_ns() - t0, 8000000000ll);
	/* while it is down */
	cr_assert_eq(remote_head(r, "kill/packs/big.pack", NULL), -ECONNREFUSED);
	harness("restart-webdav");
	cr_assert_eq(remote_head(r, "kill/packs/big.pack", NULL), 1, "%s", remote_last_error());
	cr_assert_eq(remote_delete(r, "kill/packs/big.pack"), 0);
	free(data);
	remote_free(slow);
	remote_free(r);
}

TestSuite(remote_s3, .init = make_tmpdir, .fini = rm_tmpdir);

Test(remote_s3, conformance)
{
	struct remote *r = open_url(need_env("PKGCACHEFS_TEST_S3_URL"), NULL);

	conformance(r, "conf");
	remote_free(r);
}

Test(remote_s3, concurrent)
{
	struct remote *r = open_url(need_env("PKGCACHEFS_TEST_S3_URL"), NULL);

	concurrency(r, "conc");
	remote_free(r);
}

Test(remote_s3, bytes_counted_at_the_server)
{
	struct remote *r = open_url(need_env("PKGCACHEFS_TEST_S3_URL"), NULL);

	server_bytes(r, need_env("S3_ACCESS_LOG"), "bytes");
	remote_free(r);
}

/* More keys than one ListObjectsV2 page (1000): continuation tokens are followed. */
Test(remote_s3, list_pages)
{
	struct remote *r = open_url(need_env("PKGCACHEFS_TEST_S3_URL"), NULL);
	struct seen s = {0};

	for (int i = 0; i < 1005; i++) {
		char name[64];

		snprintf(name, sizeof(name), "pages/gc/%04d", i);
		cr_assert_eq(remote_put(r, name, "", 0), 0, "%s", remote_last_error());
	}
	cr_assert_eq(remote_list(r, "pages/gc/", collect, &s), 0, "%s", remote_last_error());
	cr_assert_eq(s.n, 1005);
	remote_free(r);
}

Test(remote_s3, server_down)
{
	struct remote_options o = {.timeout_ms = 5000, .retries = 2};
	struct remote *r = open_url(need_env("PKGCACHEFS_TEST_S3_URL"), &o);
	int64_t t0;
	int ret;

	cr_assert_eq(remote_put(r, "down/x", "x", 1), 0, "%s", remote_last_error());
	harness("kill-s3");
	t0 = mono_ns();
	/* the proxy is up, its upstream is not: 502 */
	ret = remote_head(r, "down/x", NULL);
	cr_assert_eq(ret, -EIO, "%d %s", ret, remote_last_error());
	cr_assert_lt(mono_ns() - t0, 5500000000ll);
	cr_assert_not_null(strstr(remote_last_error(), "HTTP 502"), "%s", remote_last_error());
	cr_assert_null(strstr(remote_last_error(), "S3RVER"));
	harness("restart-s3");
	cr_assert_eq(remote_head(r, "down/x", NULL), 1, "%s", remote_last_error());
	remote_free(r);
}

/* ---- S3 credentials from endpoints, kept fresh (remote_creds.c) ---- */

/*
 * A loopback stand-in for the credential endpoints, one request per connection: the container
 * endpoint (GET /creds, Authorization required) and IMDSv2 (PUT /latest/api/token, then GETs that
 * must carry the token). Both answer the key id of the moment, which the test changes.
 */
static struct {
	int fd, port;
	pthread_t thread;
	char key_id[32];
	char expiration[32];
	int served;
	/* GET /bucket/...: a stand-in S3 answering s3_status with <Code>s3_code</Code>, the
	 * request kept in s3_req */
	int s3_status;
	char s3_code[64];
	char s3_req[16384];
} cred_srv;

static void cred_reply(int c, int status, const char *body)
{
	char head[256];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			 status, strlen(body));

	cr_assert_eq(write(c, head, (size_t)n), n);
	cr_assert_eq(write(c, body, strlen(body)), (ssize_t)strlen(body));
}

static void *cred_serve(void *arg)
{
	for (;;) {
		char req[16384], body[1024];
		size_t len = 0;
		ssize_t n;
		int c = accept(cred_srv.fd, NULL, NULL);

		if (c < 0)
			return NULL;
		while (len < sizeof(req) - 1 &&
		       (n = read(c, req + len, sizeof(req) - 1 - len)) > 0) {
			len += (size_t)n;
			req[len] = '\0';
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		req[len] = '\0';
		snprintf(body, sizeof(body),
			 "{\"AccessKeyId\" : \"%s\", \"SecretAccessKey\": \"secret-%s\", "
			 "\"Token\": \"token-%s\", \"Expiration\": \"%s\"}",
			 cred_srv.key_id, cred_srv.key_id, cred_srv.key_id, cred_srv.expiration);
		if (!strncmp(req, "GET /bucket/", 12)) {
			memcpy(cred_srv.s3_req, req, len + 1);
			snprintf(body, sizeof(body), "<Error><Code>%s</Code></Error>",
				 cred_srv.s3_code);
			cred_reply(c, cred_srv.s3_status, body);
		} else if (!strncmp(req, "GET /creds ", 11)) {
			if (strstr(req, "\r\nAuthorization: Bearer sesame\r\n"))
				cred_reply(c, 200, body);
			else
				cred_reply(c, 401, "");
		} else if (!strncmp(req, "PUT /latest/api/token ", 22)) {
			cred_reply(c,
				   strstr(req, "X-aws-ec2-metadata-token-ttl-seconds:") ? 200 : 400,
				   "imds-session");
		} else if (!strstr(req, "X-aws-ec2-metadata-token: imds-session\r\n")) {
			cred_reply(c, 401, "");
		} else if (!strncmp(req, "GET /latest/meta-data/iam/security-credentials/ ", 48)) {
			cred_reply(c, 200, "runner-role\n");
		} else if (!strncmp(req,
				    "GET /latest/meta-data/iam/security-credentials/runner-role ",
				    59)) {
			cred_reply(c, 200, body);
		} else {
			cred_reply(c, 404, "");
		}
		__atomic_add_fetch(&cred_srv.served, 1, __ATOMIC_SEQ_CST);
		close(c);
	}
}

static void cred_set(const char *key_id, int64_t expires_in)
{
	time_t t = time(NULL) + expires_in;
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(cred_srv.key_id, sizeof(cred_srv.key_id), "%s", key_id);
	strftime(cred_srv.expiration, sizeof(cred_srv.expiration), "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void cred_start(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);

	make_tmpdir();
	cred_srv.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(cred_srv.fd, 0);
	cr_assert_eq(bind(cred_srv.fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(cred_srv.fd, 16), 0);
	cr_assert_eq(getsockname(cred_srv.fd, (struct sockaddr *)&a, &alen), 0);
	cred_srv.port = ntohs(a.sin_port);
	cr_assert_eq(pthread_create(&cred_srv.thread, NULL, cred_serve, NULL), 0);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	unsetenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	unsetenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	unsetenv("AWS_EC2_METADATA_DISABLED");
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
}

static void cred_stop(void)
{
	shutdown(cred_srv.fd, SHUT_RDWR);
	close(cred_srv.fd);
	pthread_join(cred_srv.thread, NULL);
	rm_tmpdir();
}

/* The key id the next request would be signed with. */
static void assert_key(struct remote *r, const char *want)
{
	char *id, *secret, *token;
	char sw[64], tw[64];

	cr_assert_eq(remote_s3_credentials(r, &id, &secret, &token), 0);
	snprintf(sw, sizeof(sw), "secret-%s", want);
	snprintf(tw, sizeof(tw), "token-%s", want);
	cr_assert_str_eq(id, want);
	cr_assert_str_eq(secret, sw);
	cr_assert_not_null(token);
	cr_assert_str_eq(token, tw);
	free(id);
	free(secret);
	free(token);
}

#define S3_NOWHERE "s3://bucket/p?endpoint=http://127.0.0.1:9&region=us-east-1"

/* Container credentials (ECS, EKS Pod Identity): fetched again 5 minutes before they expire. */
Test(remote_creds, container_endpoint_refreshed_before_expiry, .init = cred_start,
     .fini = cred_stop)
{
	struct remote *r = NULL;
	char url[128], err[512] = "";

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/creds", cred_srv.port);
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
	setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer wrong", 1);
	cred_set("AKIDONE", 3600);
	cr_assert_eq(remote_open(S3_NOWHERE, NULL, &r, err, sizeof(err)), -EACCES);
	cr_assert_not_null(strstr(err, "HTTP 401"), "%s", err);
	setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer sesame", 1);
	cr_assert_eq(remote_open(S3_NOWHERE, NULL, &r, err, sizeof(err)), 0, "%s", err);
	assert_key(r, "AKIDONE");
	/* An hour left: nothing fetched. */
	cred_set("AKIDTWO", 3600);
	assert_key(r, "AKIDONE");
	remote_free(r);

	/* Two minutes left: the next request fetches new ones. */
	cred_set("AKIDONE", 120);
	cr_assert_eq(remote_open(S3_NOWHERE, NULL, &r, err, sizeof(err)), 0, "%s", err);
	cred_set("AKIDTWO", 3600);
	assert_key(r, "AKIDTWO");
	/* The endpoint is down: the keys held stay in use. */
	r->creds_expires = 1;
	unsetenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
	assert_key(r, "AKIDTWO");
	remote_free(r);
	unsetenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");

	/* Plain http to another host would hand the token to the network. */
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://192.0.2.1/creds", 1);
	cr_assert_eq(remote_open(S3_NOWHERE, NULL, &r, err, sizeof(err)), -EACCES);
	cr_assert_not_null(strstr(err, "https://"), "%s", err);
	unsetenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
}

/* EC2 instance metadata, IMDSv2 only: a session token first, then the role's credentials. */
Test(remote_creds, imdsv2, .init = cred_start, .fini = cred_stop)
{
	struct remote *r = NULL;
	char url[128], err[512] = "";

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", cred_srv.port);
	setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url, 1);
	cred_set("AKIDIMDS", 100);
	cr_assert_eq(remote_open(S3_NOWHERE, NULL, &r, err, sizeof(err)), 0, "%s", err);
	assert_key(r, "AKIDIMDS");
	cred_set("AKIDIMDS2", 3600);
	assert_key(r, "AKIDIMDS2"); /* 100 s were left: refreshed */
	remote_free(r);
	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	cr_assert_eq(remote_open(S3_NOWHERE, NULL, &r, err, sizeof(err)), -EACCES);
	unsetenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
}

/* A credentials file rewritten during a long mount (a helper rotating keys) is read again. */
Test(remote_creds, credentials_file_reread_when_it_changes, .init = cred_start, .fini = cred_stop)
{
	struct remote *r = NULL;
	char path[128], err[512] = "";
	FILE *f;

	setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
	snprintf(path, sizeof(path), "%s/credentials", tmpdir);
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	f = fopen(path, "w");
	fprintf(f, "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = "
		   "secret-AKIDFILE\naws_session_token = token-AKIDFILE\n");
	fclose(f);
	cr_assert_eq(remote_open(S3_NOWHERE, NULL, &r, err, sizeof(err)), 0, "%s", err);
	assert_key(r, "AKIDFILE");
	f = fopen(path, "w");
	fprintf(f, "[default]\naws_access_key_id = AKIDFILE22\naws_secret_access_key = "
		   "secret-AKIDFILE22\naws_session_token = token-AKIDFILE22\n");
	fclose(f);
	r->creds_checked = 0; /* rather than waiting the 10 s between checks */
	assert_key(r, "AKIDFILE22");
	/* The server said ExpiredToken: reloaded at once, whatever the clock. */
	f = fopen(path, "w");
	fprintf(f, "[default]\naws_access_key_id = AKIDFILE3\naws_secret_access_key = "
		   "secret-AKIDFILE3\naws_session_token = token-AKIDFILE3\n");
	fclose(f);
	r->creds_checked = time(NULL);
	atomic_store(&r->creds_stale, true);
	assert_key(r, "AKIDFILE3");
	remote_free(r);
}

/* What an error answer means: S3's codes about keys and tokens are the credentials whatever the
 * status (AWS answers ExpiredToken with 400), radosgw's InvalidArgument only with a token. */
Test(remote_s3, answer_errno)
{
	cr_assert_eq(remote_answer_errno(403, "AccessDenied", false), -EACCES);
	cr_assert_eq(remote_answer_errno(403, "", false), -EACCES);
	cr_assert_eq(remote_answer_errno(400, "ExpiredToken", true), -EACCES);
	cr_assert_eq(remote_answer_errno(400, "InvalidToken", true), -EACCES);
	cr_assert_eq(remote_answer_errno(400, "AuthorizationHeaderMalformed", false), -EACCES);
	cr_assert_eq(remote_answer_errno(400, "InvalidArgument", true), -EACCES);
	cr_assert_eq(remote_answer_errno(400, "InvalidArgument", false), -EREMOTEIO);
	cr_assert_eq(remote_answer_errno(400, "", true), -EREMOTEIO);
	cr_assert_eq(remote_answer_errno(404, "NoSuchKey", true), -ENOENT);
	cr_assert_eq(remote_answer_errno(416, "InvalidRange", true), -EIO);
	cr_assert_eq(remote_answer_errno(503, "SlowDown", true), -EIO);
	/* A 5xx stays an outage whatever its code says. */
	cr_assert_eq(remote_answer_errno(500, "AccessDenied", false), -EIO);
}

/*
 * A session token longer than any fixed buffer (STS does not bound its size) goes out whole and
 * signed, and the server's 400 to a garbled token (radosgw: InvalidArgument) is a credentials
 * error, which it is not without a token.
 */
Test(remote_s3, long_session_token_sent_whole, .init = cred_start, .fini = cred_stop)
{
	static char token[6001];
	struct remote *r = NULL;
	char url[160], want[6100], err[512] = "";
	char buf[16];

	for (size_t i = 0; i < sizeof(token) - 1; i++)
		token[i] =
			"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i % 64];
	token[sizeof(token) - 2] = '=';
	snprintf(url, sizeof(url), "s3://bucket/p?endpoint=http://127.0.0.1:%d&region=us-east-1",
		 cred_srv.port);
	setenv("AWS_ACCESS_KEY_ID", "AKIDLONG", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "secret-AKIDLONG", 1);
	setenv("AWS_SESSION_TOKEN", token, 1);
	cred_srv.s3_status = 400;
	snprintf(cred_srv.s3_code, sizeof(cred_srv.s3_code), "InvalidArgument");
	cr_assert_eq(remote_open(url, NULL, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(remote_get_into(r, "config", 0, sizeof(buf), buf), -EACCES, "%s",
		     remote_last_error());
	cr_assert_not_null(strstr(remote_last_error(), "HTTP 400 (InvalidArgument)"), "%s",
			   remote_last_error());
	snprintf(want, sizeof(want), "\r\nx-amz-security-token: %s\r\n", token);
	cr_assert_not_null(strstr(cred_srv.s3_req, want), "the token did not go out whole");
	cr_assert_not_null(strstr(cred_srv.s3_req, ";x-amz-security-token, Signature="),
			   "the token is not signed: %.400s", cred_srv.s3_req);
	remote_free(r);

	/* Without a token, InvalidArgument is about the request. */
	unsetenv("AWS_SESSION_TOKEN");
	cr_assert_eq(remote_open(url, NULL, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(remote_get_into(r, "config", 0, sizeof(buf), buf), -EREMOTEIO, "%s",
		     remote_last_error());
	cr_assert_null(strstr(cred_srv.s3_req, "x-amz-security-token"));
	remote_free(r);

	/* AWS's answer to an expired token. */
	setenv("AWS_SESSION_TOKEN", "short-token", 1);
	snprintf(cred_srv.s3_code, sizeof(cred_srv.s3_code), "ExpiredToken");
	cr_assert_eq(remote_open(url, NULL, &r, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(remote_get_into(r, "config", 0, sizeof(buf), buf), -EACCES, "%s",
		     remote_last_error());
	remote_free(r);
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
}
