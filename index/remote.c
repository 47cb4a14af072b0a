/* SPDX-License-Identifier: MIT */
/*
 * Remote object stores (remote.h): URL dispatch, name checks, errors and counters common to the
 * backends, and the HTTP engine that the http and s3 backends share.
 *
 * The engine runs one operation as a series of attempts on a curl easy handle taken from the
 * remote's pool (idle handles keep their connections open, so consecutive requests reuse them).
 * Each attempt gets what is left of the operation's deadline as its curl timeout, and a low-speed
 * limit so that a stalled server fails the attempt early. Transient failures are retried after
 * 100 ms, 200 ms, 400 ms... with +-50% jitter, or after Retry-After when the server asks for
 * longer, never past the deadline. Response bodies go to a sink with a hard limit: a server that
 * sends more than was asked is an -EIO, never a larger allocation.
 */
#include "remote_priv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#ifndef PKGCACHEFS_VERSION
#define PKGCACHEFS_VERSION "dev"
#endif

static __thread char last_error[512];
static __thread bool error_set;
static __thread bool list_stopped;

void remote_set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	error_set = true;
}

const char *remote_last_error(void)
{
	return last_error;
}

void remote_carry_error(const char *msg)
{
	remote_set_error("%s", msg);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/*
 * Copy o's TLS files into r, each checked now (an absolute path to a readable regular file), so
 * that a typo is a clear error at mount rather than a failed handshake later.
 */
static int tls_options(struct remote *r, const struct remote_options *o, char *err, size_t errlen)
{
	const char *const names[] = {"ca_file", "client_cert", "client_key"};
	const char *in[] = {o ? o->ca_file : NULL, o ? o->client_cert : NULL,
			    o ? o->client_key : NULL};
	char **out[] = {&r->ca_file, &r->client_cert, &r->client_key};

	for (size_t i = 0; i < ARRAY_SIZE(in); i++) {
		struct stat st;
		int fd;

		if (!in[i] || !*in[i])
			continue;
		if (in[i][0] != '/') {
			set_err(err, errlen, "%s %s: give an absolute path", names[i], in[i]);
			return -EINVAL;
		}
		fd = open(in[i], O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			int e = fd < 0 ? errno : EINVAL;

			if (fd >= 0)
				close(fd);
			set_err(err, errlen, "%s %s: %s", names[i], in[i],
				e == EINVAL ? "not a regular file" : strerror(e));
			return -e;
		}
		close(fd);
		*out[i] = strdup(in[i]);
		if (!*out[i]) {
			set_err(err, errlen, "out of memory");
			return -ENOMEM;
		}
	}
	if (!r->client_cert != !r->client_key) {
		set_err(err, errlen,
			"a client certificate needs its key: give both client_cert "
			"and client_key, or neither");
		return -EINVAL;
	}
	return 0;
}

void remote_url_host(const char *url, char *out, size_t outlen)
{
	const char *h = strstr(url, "://"), *at, *end;

	h = h ? h + 3 : url;
	at = strchr(h, '@');
	if (at && at < h + strcspn(h, "/"))
		h = at + 1;
	if (*h == '[') {
		h++;
		end = strchr(h, ']');
	} else {
		end = h + strcspn(h, ":/");
	}
	if (!end)
		end = h + strlen(h);
	snprintf(out, outlen, "%.*s", (int)(end - h), h);
}

bool remote_loopback_host(const char *host)
{
	struct in_addr a4;

	if (!strcasecmp(host, "localhost") || !strcmp(host, "::1"))
		return true;
	return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/* Whether ~/.netrc (which libcurl reads) has an entry that would send a password to host. */
static bool netrc_has(const char *host)
{
	const char *home = getenv("HOME");
	char path[PATH_MAX], tok[256], prev[256] = "";
	bool found = false;
	FILE *f;

	if (!home || snprintf(path, sizeof(path), "%s/.netrc", home) >= (int)sizeof(path))
		return false;
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fscanf(f, "%255s", tok) == 1) {
		found = !strcmp(tok, "default") || (!strcmp(prev, "machine") && !strcmp(tok, host));
		snprintf(prev, sizeof(prev), "%s", tok);
	}
	fclose(f);
	return found;
}

/*
 * Secrets that would cross the network in clear: a ~/.netrc password, or an S3 session token
 * (sent as a header), over http:// to a host that is not this one. Refused unless
 * PKGCACHEFS_ALLOW_CLEARTEXT=1, and then logged as a warning on every open.
 */
static int check_cleartext(const struct remote *r, char *err, size_t errlen)
{
	const char *allow = getenv("PKGCACHEFS_ALLOW_CLEARTEXT");
	const char *what;
	char host[256];

	if (!r->origin || strncmp(r->origin, "http://", 7) != 0)
		return 0;
	remote_url_host(r->origin, host, sizeof(host));
	if (remote_loopback_host(host))
		return 0;
	if (r->session_token)
		what = "the S3 session token (AWS_SESSION_TOKEN)";
	else if (r->netrc && netrc_has(host))
		what = "the ~/.netrc password";
	else
		return 0;
	if (allow && !strcmp(allow, "1")) {
		log_warn("remote %s: %s goes to %s over plain http://, readable by anyone on the "
			 "network (PKGCACHEFS_ALLOW_CLEARTEXT=1): use https://",
			 r->url, what, host);
		return 0;
	}
	set_err(err, errlen,
		"%s would go to %s over plain http://, readable by anyone on the network: use "
		"https:// (or, on a network you trust, set PKGCACHEFS_ALLOW_CLEARTEXT=1)",
		what, host);
	return -EPERM;
}

int remote_open(const char *url, const struct remote_options *o, struct remote **ret, char *err,
		size_t errlen)
{
	struct remote *r;
	int rc;

	set_err(err, errlen, "%s", "");
	if (!url || !*url) {
		set_err(err, errlen,
			"no remote URL given: use file:///dir, https://host/path or "
			"s3://bucket/prefix");
		return -EINVAL;
	}
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK) {
		set_err(err, errlen, "libcurl failed to initialise: %s",
			curl_easy_strerror(curl_init_rc));
		return -EIO;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&r->pool_lock, NULL);
	r->timeout_ms = o && o->timeout_ms ? o->timeout_ms : REMOTE_DEFAULT_TIMEOUT_MS;
	r->connect_timeout_ms = o && o->connect_timeout_ms ? o->connect_timeout_ms
							   : REMOTE_DEFAULT_CONNECT_TIMEOUT_MS;
	r->retries = !o || !o->retries               ? REMOTE_DEFAULT_RETRIES
		     : o->retries == REMOTE_NO_RETRY ? 0
						     : MIN(o->retries, 100u);
	rc = tls_options(r, o, err, errlen);
	if (rc < 0) {
		remote_free(r);
		return rc;
	}

	if (strncmp(url, "file://", 7) == 0) {
		rc = remote_file_open(r, url, err, errlen);
	} else if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0) {
		rc = remote_http_open(r, url, err, errlen);
	} else if (strncmp(url, "s3://", 5) == 0) {
		rc = remote_s3_open(r, url, err, errlen);
	} else {
		set_err(err, errlen,
			"unsupported remote URL scheme: use file:///dir, https://host/path "
			"or s3://bucket/prefix");
		rc = -EINVAL;
	}
	if (rc == 0)
		rc = check_cleartext(r, err, errlen);
	if (rc < 0) {
		remote_free(r);
		return rc;
	}
	*ret = r;
	return 0;
}

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

void remote_free(struct remote *r)
{
	if (!r)
		return;
	if (r->ops && r->ops->free)
		r->ops->free(r);
	for (size_t i = 0; i < r->n_pool; i++)
		curl_easy_cleanup(r->pool[i]);
	pthread_mutex_destroy(&r->pool_lock);
	free(r->url);
	free(r->dir);
	free(r->origin);
	free(r->root);
	free(r->host);
	free(r->key_prefix);
	free(r->region);
	free(r->ca_file);
	free(r->client_cert);
	free(r->client_key);
	wipe_free(r->access_key);
	wipe_free(r->secret_key);
	wipe_free(r->session_token);
	free(r->creds_file);
	if (r->creds_lock_made)
		pthread_mutex_destroy(&r->creds_lock);
	free(r);
}

const char *remote_url(const struct remote *r)
{
	return r->url;
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

bool remote_name_valid(const char *name)
{
	size_t n, comp = 0;

	if (!name)
		return false;
	n = strnlen(name, REMOTE_NAME_MAX + 1);
	if (n == 0 || n > REMOTE_NAME_MAX || name[0] == '/' || name[n - 1] == '/')
		return false;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || name[i] == '/') {
			size_t clen = i - comp;

			if (clen == 0 || (clen == 1 && name[comp] == '.') ||
			    (clen == 2 && name[comp] == '.' && name[comp + 1] == '.'))
				return false;
			comp = i + 1;
		} else if (!name_char(name[i])) {
			return false;
		}
	}
	return !(n >= 4 && strcmp(name + n - 4, ".tmp") == 0);
}

/* Common entry and exit of every operation: the error slot and the counters. */
static void op_begin(void)
{
	error_set = false;
	list_stopped = false;
	last_error[0] = '\0';
}

static int op_end(struct remote *r, const char *op, const char *name, int ret)
{
	if (ret >= 0) {
		last_error[0] = '\0';
		return ret;
	}
	if (ret < 0 && ret != -ENOENT)
		atomic_fetch_add(&r->failures, 1);
	if (ret < 0 && !error_set)
		remote_set_error("%s %s%s%s: %s", op, r->url,
				 r->url[0] && r->url[strlen(r->url) - 1] == '/' ? "" : "/", name,
				 strerror(-ret));
	return ret;
}

static int bad_name(struct remote *r, const char *op, const char *name)
{
	remote_set_error("%s %s: invalid object name \"%.100s\"", op, r->url,
			 name ? name : "(null)");
	return -EINVAL;
}

int remote_get(struct remote *r, const char *name, uint64_t off, uint64_t len, void **ret_data,
	       size_t *ret_len)
{
	struct remote_sink s = {0};
	int ret;

	op_begin();
	if (!remote_name_valid(name))
		return bad_name(r, "GET", name);
	if (len > REMOTE_MAX_WHOLE_GET || off > UINT64_MAX - len) {
		remote_set_error("GET %s/%s: range too large", r->url, name);
		return op_end(r, "GET", name, -EFBIG);
	}
	s.limit = len ? len : REMOTE_MAX_WHOLE_GET;
	if (len) {
		s.buf = malloc(len);
		if (!s.buf)
			return op_end(r, "GET", name, -ENOMEM);
		s.fixed = true;
	}
	ret = r->ops->get(r, name, off, len, &s);
	if (ret == 0 && len && s.len != len) {
		remote_set_error("GET %s/%s: %zu bytes at %llu, %llu asked (truncated object)",
				 r->url, name, s.len, (unsigned long long)off,
				 (unsigned long long)len);
		ret = -EIO;
	}
	if (ret == 0 && !s.buf) {
		s.buf = malloc(1);
		if (!s.buf)
			ret = -ENOMEM;
	}
	if (ret < 0) {
		free(s.buf);
		return op_end(r, "GET", name, ret);
	}
	*ret_data = s.buf;
	*ret_len = s.len;
	return 0;
}

int remote_get_into(struct remote *r, const char *name, uint64_t off, uint64_t len, void *buf)
{
	struct remote_sink s = {.buf = buf, .limit = len, .fixed = true};
	int ret;

	op_begin();
	if (!remote_name_valid(name))
		return bad_name(r, "GET", name);
	if (len == 0 || len > SIZE_MAX || off > UINT64_MAX - len) {
		remote_set_error("GET %s/%s: invalid range", r->url, name);
		return op_end(r, "GET", name, -EINVAL);
	}
	ret = r->ops->get(r, name, off, len, &s);
	if (ret == 0 && s.len != len) {
		remote_set_error("GET %s/%s: %zu bytes at %llu, %llu asked (truncated object)",
				 r->url, name, s.len, (unsigned long long)off,
				 (unsigned long long)len);
		ret = -EIO;
	}
	return op_end(r, "GET", name, ret);
}

int remote_put(struct remote *r, const char *name, const void *data, size_t len)
{
	struct remote_src src = {.data = data, .fd = -1, .len = len};

	op_begin();
	if (!remote_name_valid(name))
		return bad_name(r, "PUT", name);
	if (len && !data)
		return op_end(r, "PUT", name, -EINVAL);
	return op_end(r, "PUT", name, r->ops->put(r, name, &src));
}

int remote_put_fd(struct remote *r, const char *name, int fd, uint64_t len)
{
	struct remote_src src = {.fd = fd, .len = len};

	op_begin();
	if (!remote_name_valid(name))
		return bad_name(r, "PUT", name);
	if (fd < 0)
		return op_end(r, "PUT", name, -EBADF);
	return op_end(r, "PUT", name, r->ops->put(r, name, &src));
}

int remote_head(struct remote *r, const char *name, uint64_t *ret_size)
{
	uint64_t size = 0;
	int ret;

	op_begin();
	if (!remote_name_valid(name))
		return bad_name(r, "HEAD", name);
	ret = r->ops->head(r, name, &size);
	if (ret == -ENOENT) {
		last_error[0] = '\0';
		return 0;
	}
	if (ret < 0)
		return op_end(r, "HEAD", name, ret);
	if (ret_size)
		*ret_size = size;
	return 1;
}

int remote_delete(struct remote *r, const char *name)
{
	int ret;

	op_begin();
	if (!remote_name_valid(name))
		return bad_name(r, "DELETE", name);
	ret = r->ops->del(r, name);
	if (ret == -ENOENT) {
		last_error[0] = '\0';
		ret = 0;
	}
	return op_end(r, "DELETE", name, ret);
}

int remote_list(struct remote *r, const char *dir,
		int (*cb)(const char *name, uint64_t size, void *data), void *data)
{
	struct remote_entries e = {0};
	char d[REMOTE_NAME_MAX + 2], full[2 * REMOTE_NAME_MAX + 2];
	size_t n;
	int ret;

	op_begin();
	if (!dir || !cb)
		return bad_name(r, "LIST", dir);
	n = strnlen(dir, REMOTE_NAME_MAX + 1);
	if (n > REMOTE_NAME_MAX)
		return bad_name(r, "LIST", dir);
	memcpy(d, dir, n + 1);
	if (n && d[n - 1] == '/')
		d[--n] = '\0';
	if (n && !remote_name_valid(d))
		return bad_name(r, "LIST", dir);
	if (n) {
		d[n++] = '/';
		d[n] = '\0';
	}
	ret = r->ops->list(r, d, &e);
	if (ret == -ENOENT)
		ret = 0;
	for (size_t i = 0; ret == 0 && i < e.n; i++) {
		snprintf(full, sizeof(full), "%s%s", d, e.v[i].name);
		if (strchr(e.v[i].name, '/') || !remote_name_valid(full) ||
		    e.v[i].size == UINT64_MAX)
			continue;
		ret = cb(full, e.v[i].size, data);
		if (ret)
			list_stopped = true;
	}
	remote_entries_release(&e);
	if (list_stopped)
		return ret;
	return op_end(r, "LIST", d, ret);
}

void remote_get_counters(const struct remote *r, struct remote_counters *ret)
{
	struct remote *m = (struct remote *)r;

	ret->bytes_in = atomic_load(&m->bytes_in);
	ret->bytes_out = atomic_load(&m->bytes_out);
	ret->requests = atomic_load(&m->requests);
	ret->failures = atomic_load(&m->failures);
	ret->connects = atomic_load(&m->connects);
	ret->connect_us = atomic_load(&m->connect_us);
	ret->tls_us = atomic_load(&m->tls_us);
	ret->first_byte_us = atomic_load(&m->first_byte_us);
	ret->total_us = atomic_load(&m->total_us);
}

int remote_entries_add(struct remote_entries *e, const char *name, size_t len, uint64_t size)
{
	char *s;

	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 64;
		struct remote_entry *v;

		if (cap > (1u << 24))
			return -EIO; /* more entries than any listing of ours can hold */
		v = realloc(e->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		e->v = v;
		e->cap = cap;
	}
	s = strndup(name, len);
	if (!s)
		return -ENOMEM;
	e->v[e->n].name = s;
	e->v[e->n].size = size;
	e->n++;
	return 0;
}

void remote_entries_release(struct remote_entries *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->v[i].name);
	free(e->v);
	*e = (struct remote_entries){0};
}

char *remote_xml_text(const char *s, size_t n)
{
	static const struct {
		const char *name;
		char c;
	} ents[] = {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}};
	char *out = malloc(n + 1);
	size_t o = 0;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		size_t k;

		if (s[i] != '&') {
			out[o++] = s[i];
			continue;
		}
		for (k = 0; k < ARRAY_SIZE(ents); k++) {
			size_t el = strlen(ents[k].name);

			if (n - i - 1 >= el && memcmp(s + i + 1, ents[k].name, el) == 0) {
				out[o++] = ents[k].c;
				i += el;
				break;
			}
		}
		if (k < ARRAY_SIZE(ents))
			continue;
		if (i + 2 < n && s[i + 1] == '#') {
			unsigned long v = 0;
			size_t j = i + 2;
			bool hex = s[j] == 'x' || s[j] == 'X';
			size_t digits = 0;

			if (hex)
				j++;
			for (; j < n && s[j] != ';' && digits < 8; j++, digits++) {
				char c = s[j];
				int d = c >= '0' && c <= '9'          ? c - '0'
					: hex && c >= 'a' && c <= 'f' ? c - 'a' + 10
					: hex && c >= 'A' && c <= 'F' ? c - 'A' + 10
								      : -1;

				if (d < 0)
					break;
				v = v * (hex ? 16 : 10) + (unsigned long)d;
			}
			if (j < n && s[j] == ';' && digits > 0 && v > 0) {
				/* Object names are ASCII; anything else becomes a byte no name has.
				 */
				out[o++] = v < 128 ? (char)v : '\x7f';
				i = j;
				continue;
			}
		}
		free(out);
		return NULL;
	}
	out[o] = '\0';
	return out;
}

/* ---- the HTTP engine ---- */

static CURL *pool_get(struct remote *r)
{
	CURL *c = NULL;

	pthread_mutex_lock(&r->pool_lock);
	if (r->n_pool)
		c = r->pool[--r->n_pool];
	pthread_mutex_unlock(&r->pool_lock);
	if (c)
		curl_easy_reset(c);
	else
		c = curl_easy_init();
	return c;
}

/*
 * Add one attempt's timings to the counters. curl's times are cumulative from the start of the
 * attempt: connect includes name lookup, appconnect (TLS) includes connect; each phase is counted
 * as its own share, and a reused connection counts 0 for both.
 */
static void count_timings(struct remote *r, CURL *c)
{
	curl_off_t conn = 0, tls = 0, first = 0, total = 0;
	long nconn = 0;

	curl_easy_getinfo(c, CURLINFO_CONNECT_TIME_T, &conn);
	curl_easy_getinfo(c, CURLINFO_APPCONNECT_TIME_T, &tls);
	curl_easy_getinfo(c, CURLINFO_STARTTRANSFER_TIME_T, &first);
	curl_easy_getinfo(c, CURLINFO_TOTAL_TIME_T, &total);
	curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &nconn);
	atomic_fetch_add(&r->connects, (uint64_t)MAX(nconn, 0L));
	atomic_fetch_add(&r->connect_us, (uint64_t)MAX(conn, (curl_off_t)0));
	atomic_fetch_add(&r->tls_us, (uint64_t)(tls > conn ? tls - conn : 0));
	atomic_fetch_add(&r->first_byte_us, (uint64_t)MAX(first, (curl_off_t)0));
	atomic_fetch_add(&r->total_us, (uint64_t)MAX(total, (curl_off_t)0));
}

static void pool_put(struct remote *r, CURL *c)
{
	pthread_mutex_lock(&r->pool_lock);
	if (r->n_pool < REMOTE_POOL_MAX) {
		r->pool[r->n_pool++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&r->pool_lock);
	if (c)
		curl_easy_cleanup(c);
}

struct attempt {
	struct remote *r;
	struct remote_xfer *x;
	CURL *c;
	uint64_t body_pos;
	int read_errno;
	long retry_after; /* seconds, -1 when absent */
	bool enough;      /* a whole-object 200 to a range: got what was asked, stopped */
	uint64_t skipped; /* of such a 200: bytes before the range, dropped */
	char errbody[2048];
	size_t errbody_len;
};

static size_t on_read(char *p, size_t size, size_t n, void *ud)
{
	struct attempt *a = ud;
	const struct remote_src *src = a->x->body;
	size_t want = size * n;
	uint64_t left = src->len - a->body_pos;

	if (want > left)
		want = (size_t)left;
	if (!want)
		return 0;
	if (src->fd < 0) {
		memcpy(p, (const char *)src->data + a->body_pos, want);
	} else {
		ssize_t got;

		do
			got = pread(src->fd, p, want, (off_t)a->body_pos);
		while (got < 0 && errno == EINTR);
		if (got <= 0) {
			a->read_errno = got < 0 ? errno : EIO;
			return CURL_READFUNC_ABORT;
		}
		want = (size_t)got;
	}
	a->body_pos += want;
	atomic_fetch_add(&a->r->bytes_out, want);
	return want;
}

static int on_seek(void *ud, curl_off_t off, int origin)
{
	struct attempt *a = ud;

	if (origin != SEEK_SET || off < 0 || (uint64_t)off > a->x->body->len)
		return CURL_SEEKFUNC_CANTSEEK;
	a->body_pos = (uint64_t)off;
	return CURL_SEEKFUNC_OK;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
	struct attempt *a = ud;
	struct remote_sink *s = a->x->sink;
	size_t len = size * n, consumed = len;
	long status = 0;

	curl_easy_getinfo(a->c, CURLINFO_RESPONSE_CODE, &status);
	atomic_fetch_add(&a->r->bytes_in, len);
	if (status < 200 || status >= 300) {
		size_t room = sizeof(a->errbody) - 1 - a->errbody_len;
		size_t k = MIN(room, len);

		memcpy(a->errbody + a->errbody_len, p, k);
		a->errbody_len += k;
		a->errbody[a->errbody_len] = '\0';
		return len;
	}
	if (!s)
		return len;
	/* A server that ignores Range and sends the whole object (python's http.server): drop
	 * what comes before the range, keep what was asked, stop there. */
	if (status == 200 && a->x->ranged) {
		size_t skip = (size_t)MIN((uint64_t)len, a->x->range_off - a->skipped);

		a->skipped += skip;
		p += skip;
		len -= skip;
		if (!len)
			return size * n;
		if (a->x->range_len && len >= s->limit - s->len) {
			consumed = len == s->limit - s->len ? size * n : 0;
			len = s->limit - s->len;
			a->enough = true;
		}
	}
	if (len > s->limit - s->len) {
		s->overflow = true;
		return 0;
	}
	if (!s->fixed && s->len + len > s->cap) {
		size_t cap = s->cap ? s->cap : 64 << 10;
		char *nb;

		while (cap < s->len + len)
			cap = cap > s->limit / 2 ? s->limit : cap * 2;
		nb = realloc(s->buf, cap);
		if (!nb) {
			s->overflow = true;
			return 0;
		}
		s->buf = nb;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, p, len);
	s->len += len;
	return consumed;
}

static bool header_is(const char *line, size_t n, const char *name, const char **ret_value)
{
	size_t k = strlen(name);

	if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
		return false;
	*ret_value = line + k + 1;
	return true;
}

void remote_parse_header(const char *p, size_t len, long *retry_after, struct remote_xfer *x)
{
	const char *v;
	char tmp[128];

	if (len >= sizeof(tmp))
		return;
	memcpy(tmp, p, len);
	tmp[len] = '\0';
	if (strncmp(tmp, "HTTP/", 5) == 0) {
		/* A new response (after 100 Continue): forget the previous one's headers. */
		*retry_after = -1;
		x->have_range = false;
		return;
	}
	if (header_is(tmp, len, "retry-after", &v)) {
		char *end;
		long s;

		while (*v == ' ' || *v == '\t')
			v++;
		errno = 0;
		s = strtol(v, &end, 10);
		if (!errno && end != v && s >= 0)
			*retry_after = MIN(s, 3600L);
	} else if (header_is(tmp, len, "content-range", &v)) {
		unsigned long long start;

		while (*v == ' ' || *v == '\t')
			v++;
		if (sscanf(v, "bytes %llu-", &start) == 1) {
			x->have_range = true;
			x->range_start = start;
		}
	}
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	struct attempt *a = ud;

	remote_parse_header(p, size * n, &a->retry_after, a->x);
	return size * n;
}

static int64_t mono_ms(void)
{
	return mono_ns() / 1000000;
}

static _Atomic uint64_t jitter_state;
static __thread uint64_t rng;

static uint64_t rand64(void)
{
	if (!rng)
		rng = (uint64_t)mono_ns() ^ (uint64_t)pthread_self() ^
		      atomic_fetch_add(&jitter_state, 0x9e3779b97f4a7c15ull);
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static bool status_retriable(long status)
{
	/* 501 and 505 are what the server is, not how it is doing: asking again changes nothing. */
	return status == 408 || status == 429 ||
	       (status >= 500 && status <= 599 && status != 501 && status != 505);
}

static int status_errno(long status)
{
	switch (status) {
	case 404:
	case 410:
		return -ENOENT;
	case 401:
	case 403:
		return -EACCES;
	case 405:
	case 501:
		return -EOPNOTSUPP; /* the method is not enabled: a server setting */
	case 409:
		return -ENOTDIR; /* a parent collection is missing */
	default:
		/* Outages (5xx, 408, 429) stay -EIO; other answers are configuration. */
		return status >= 400 && status < 500 ? -EREMOTEIO : -EIO;
	}
}

int remote_answer_errno(long status, const char *s3_code, bool session_token)
{
	/*
	 * S3 says "these credentials" with an error code, whatever the status: AWS answers
	 * ExpiredToken, InvalidToken and TokenRefreshRequired with 400, which by status alone
	 * would read as a bad URL. radosgw answers a session token it cannot decrypt (a garbled
	 * one) with 400 InvalidArgument and no message: with a token in the request, the token
	 * is the likely cause, and the credentials' hint names it.
	 */
	static const char *const creds_codes[] = {
		"AccessDenied",       "ExpiredToken",
		"InvalidToken",       "TokenRefreshRequired",
		"InvalidAccessKeyId", "SignatureDoesNotMatch",
		"InvalidSecurity",    "AuthorizationHeaderMalformed",
	};

	if (status >= 400 && status < 500 && s3_code && *s3_code) {
		for (size_t i = 0; i < ARRAY_SIZE(creds_codes); i++)
			if (!strcmp(s3_code, creds_codes[i]))
				return -EACCES;
		if (session_token && !strcmp(s3_code, "InvalidArgument"))
			return -EACCES;
	}
	return status == 416 ? -EIO : status_errno(status);
}

/*
 * What a failed transfer means. Outages (refused, timed out, cut) are retried and let a mount come
 * up on local data; TLS failures are configuration, never retried: -EKEYREJECTED when the
 * server's certificate is not trusted or the server refused ours (its TLS alert is in errbuf:
 * "alert certificate required", "alert handshake failure"), -ENOKEY when our own CA, certificate
 * or key file cannot be used.
 */
static int curl_errno(CURLcode rc, const char *errbuf, bool *ret_retriable)
{
	*ret_retriable = true;
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_RECV_ERROR:
		if (strstr(errbuf, " alert ")) {
			*ret_retriable = false;
			return -EKEYREJECTED;
		}
		return -EIO;
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return -EIO;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
		*ret_retriable = false;
		return -EKEYREJECTED;
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CRL_BADFILE:
		*ret_retriable = false;
		return -ENOKEY;
	case CURLE_OUT_OF_MEMORY:
		*ret_retriable = false;
		return -ENOMEM;
	default:
		*ret_retriable = false;
		return -EIO;
	}
}

/* "<Code>SlowDown</Code>" of an S3 error body, checked to be a plain word. */
static void s3_error_code(const char *body, char *out, size_t outlen)
{
	const char *b = strstr(body, "<Code>"), *e;
	size_t n;

	out[0] = '\0';
	if (!b)
		return;
	b += 6;
	e = strstr(b, "</Code>");
	if (!e || (n = (size_t)(e - b)) == 0 || n >= outlen)
		return;
	for (size_t i = 0; i < n; i++)
		if (!name_char(b[i]))
			return;
	memcpy(out, b, n);
	out[n] = '\0';
}

int remote_http_exec(struct remote *r, struct remote_xfer *x)
{
	int64_t start = mono_ms(), deadline = start + r->timeout_ms;
	unsigned retries = x->zero_retry ? 0 : r->retries;
	size_t ulen =
		strlen(r->origin) + strlen(x->path) + (x->query ? strlen(x->query) + 1 : 0) + 1;
	char *url = malloc(ulen);
	char what[512];
	int ret = -EIO;

	if (!url)
		return -ENOMEM;
	snprintf(url, ulen, "%s%s%s%s", r->origin, x->path, x->query ? "?" : "",
		 x->query ? x->query : "");
	/* Messages name the request without its query (continuation tokens are noise). */
	snprintf(what, sizeof(what), "%s %s%s", x->method, r->origin, x->path);
	x->attempts = 0;

	for (unsigned attempt = 0;; attempt++) {
		struct attempt a = {.r = r, .x = x, .retry_after = -1};
		struct curl_slist *hdrs = NULL, *h;
		int64_t now = mono_ms(), left = deadline - now, delay;
		CURLcode rc;
		bool retriable = false, with_token = false;
		char errbuf[CURL_ERROR_SIZE] = "";
		const char *ca = getenv("CURL_CA_BUNDLE");

		if (left <= 0) {
			remote_set_error("%s: no answer within %u ms after %d attempts", what,
					 r->timeout_ms, x->attempts);
			ret = -ETIMEDOUT;
			break;
		}
		x->status = 0;
		x->have_range = false;
		x->have_length = false;
		x->s3_code[0] = '\0';
		if (x->sink) {
			x->sink->len = 0;
			x->sink->overflow = false;
		}
		a.c = pool_get(r);
		if (!a.c) {
			ret = -ENOMEM;
			break;
		}
		for (size_t i = 0; i < ARRAY_SIZE(x->headers) && x->headers[i]; i++) {
			h = curl_slist_append(hdrs, x->headers[i]);
			if (!h)
				goto out_oom;
			hdrs = h;
		}
		/* No "Expect: 100-continue" round trip before bodies. */
		h = curl_slist_append(hdrs, "Expect:");
		if (!h)
			goto out_oom;
		hdrs = h;
		if (r->ops->sign) {
			ret = r->ops->sign(r, x, &hdrs);
			if (ret < 0) {
				curl_slist_free_all(hdrs);
				pool_put(r, a.c);
				remote_set_error("%s: cannot sign the request (%s)", what,
						 strerror(-ret));
				break;
			}
			/* Whether an error answer may be about the session token. */
			for (h = hdrs; h; h = h->next)
				if (!strncasecmp(h->data, "x-amz-security-token:", 21))
					with_token = true;
		}

		curl_easy_setopt(a.c, CURLOPT_URL, url);
		curl_easy_setopt(a.c, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(a.c, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(a.c, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(a.c, CURLOPT_USERAGENT, "pkgcachefs/" PKGCACHEFS_VERSION);
		curl_easy_setopt(a.c, CURLOPT_ERRORBUFFER, errbuf);
		curl_easy_setopt(a.c, CURLOPT_TCP_KEEPALIVE, 1L);
		if (r->netrc)
			curl_easy_setopt(a.c, CURLOPT_NETRC, (long)CURL_NETRC_OPTIONAL);
		if (r->ca_file)
			curl_easy_setopt(a.c, CURLOPT_CAINFO, r->ca_file);
		else if (ca && *ca)
			curl_easy_setopt(a.c, CURLOPT_CAINFO, ca);
		if (r->client_cert) {
			curl_easy_setopt(a.c, CURLOPT_SSLCERT, r->client_cert);
			curl_easy_setopt(a.c, CURLOPT_SSLKEY, r->client_key);
		}
		curl_easy_setopt(a.c, CURLOPT_TIMEOUT_MS, (long)left);
		curl_easy_setopt(a.c, CURLOPT_CONNECTTIMEOUT_MS,
				 (long)MIN((int64_t)r->connect_timeout_ms, left));
		/* A stalled transfer: under 1 byte/s for a third of the deadline (1..30 s). */
		curl_easy_setopt(a.c, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(a.c, CURLOPT_LOW_SPEED_TIME,
				 (long)MAX(1u, MIN(30u, r->timeout_ms / 3000u)));
		curl_easy_setopt(a.c, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(a.c, CURLOPT_WRITEFUNCTION, on_write);
		curl_easy_setopt(a.c, CURLOPT_WRITEDATA, &a);
		curl_easy_setopt(a.c, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(a.c, CURLOPT_HEADERDATA, &a);
		if (strcmp(x->method, "HEAD") == 0) {
			curl_easy_setopt(a.c, CURLOPT_NOBODY, 1L);
		} else if (strcmp(x->method, "PUT") == 0 && x->body) {
			curl_easy_setopt(a.c, CURLOPT_UPLOAD, 1L);
			curl_easy_setopt(a.c, CURLOPT_READFUNCTION, on_read);
			curl_easy_setopt(a.c, CURLOPT_READDATA, &a);
			curl_easy_setopt(a.c, CURLOPT_SEEKFUNCTION, on_seek);
			curl_easy_setopt(a.c, CURLOPT_SEEKDATA, &a);
			curl_easy_setopt(a.c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->body->len);
		} else if (strcmp(x->method, "GET") != 0) {
			curl_easy_setopt(a.c, CURLOPT_CUSTOMREQUEST, x->method);
		}

		rc = curl_easy_perform(a.c);
		atomic_fetch_add(&r->requests, 1);
		count_timings(r, a.c);
		x->attempts++;
		x->skipped = a.skipped;
		if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && a.enough)) {
			curl_off_t cl = -1;

			curl_easy_getinfo(a.c, CURLINFO_RESPONSE_CODE, &x->status);
			if (curl_easy_getinfo(a.c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) ==
				    CURLE_OK &&
			    cl >= 0) {
				x->have_length = true;
				x->length = (uint64_t)cl;
			}
		}
		/* Keep the handle (and its connection cache) unless the transfer was cut short. */
		if (rc == CURLE_OK)
			pool_put(r, a.c);
		else
			curl_easy_cleanup(a.c);
		curl_slist_free_all(hdrs);

		if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && a.enough)) {
			if (x->status >= 200 && x->status < 300) {
				ret = 0;
				break;
			}
			s3_error_code(a.errbody, x->s3_code, sizeof(x->s3_code));
			/* Temporary credentials ran out: the next request reloads them. */
			if (!strcmp(x->s3_code, "ExpiredToken") ||
			    !strcmp(x->s3_code, "TokenRefreshRequired") ||
			    !strcmp(x->s3_code, "InvalidToken") ||
			    !strcmp(x->s3_code, "InvalidAccessKeyId") ||
			    (with_token && !strcmp(x->s3_code, "InvalidArgument")))
				atomic_store(&r->creds_stale, true);
			ret = remote_answer_errno(x->status, x->s3_code, with_token);
			retriable = status_retriable(x->status);
			remote_set_error("%s: HTTP %ld%s%s%s after %d attempt%s", what, x->status,
					 x->s3_code[0] ? " (" : "", x->s3_code,
					 x->s3_code[0] ? ")" : "", x->attempts,
					 x->attempts == 1 ? "" : "s");
		} else if (rc == CURLE_WRITE_ERROR && x->sink && x->sink->overflow) {
			remote_set_error("%s: the server sent more than the %zu bytes asked", what,
					 x->sink->limit);
			ret = -EIO;
		} else if (rc == CURLE_ABORTED_BY_CALLBACK || a.read_errno) {
			ret = a.read_errno ? -a.read_errno : -EIO;
			remote_set_error("%s: reading the data to send: %s", what, strerror(-ret));
		} else {
			ret = curl_errno(rc, errbuf, &retriable);
			remote_set_error("%s: %s after %d attempt%s", what,
					 errbuf[0] ? errbuf : curl_easy_strerror(rc), x->attempts,
					 x->attempts == 1 ? "" : "s");
		}
		if (!retriable || attempt >= retries)
			break;
		delay = 100ll << MIN(attempt, 10u);
		delay = delay / 2 + (int64_t)(rand64() % (uint64_t)delay);
		if (a.retry_after >= 0)
			delay = MAX(delay, a.retry_after * 1000ll);
		if (mono_ms() + delay >= deadline) {
			/* Waiting would overrun the deadline: report the last failure. */
			break;
		}
		sleep_ms(delay);
		continue;
	out_oom:
		curl_slist_free_all(hdrs);
		pool_put(r, a.c);
		ret = -ENOMEM;
		break;
	}
	free(url);
	return ret;
}
