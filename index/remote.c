/* SPDX-License-Identifier: MIT */
/*
 * Remote object stores (remote.h): URL dispatch, TLS and credential options, name checks, the
 * per-thread error message, counters and listing helpers common to the backends. The HTTP engine
 * that the http and s3 backends share is remote_engine.c; nothing here calls a backend except
 * through r->ops.
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
#include <unistd.h>

#include "util.h"

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

bool remote_name_char(char c)
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
		} else if (!remote_name_char(name[i])) {
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
