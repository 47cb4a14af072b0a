/* SPDX-License-Identifier: MIT */
/*
 * The HTTP engine that the http (WebDAV) and s3 backends share: remote_http_exec runs one
 * request as a series of attempts on a curl easy handle taken from the remote's pool (idle
 * handles keep their connections open, so consecutive requests reuse them).
 *
 * Each attempt gets what is left of the operation's deadline as its curl timeout, and a low-speed
 * limit so that a stalled server fails the attempt early. Transient failures are retried after
 * 100 ms, 200 ms, 400 ms... with +-50% jitter, or after Retry-After when the server asks for
 * longer, never past the deadline. Response bodies go to a sink with a hard limit: a server that
 * sends more than was asked is an -EIO, never a larger allocation. What an answer means (an
 * outage, retried; or configuration, not) is decided here once, for every backend.
 *
 * Threads: any number at once; the pool is guarded by r->pool_lock, the counters are atomics.
 */
#include "remote_priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#ifndef PKGCACHEFS_VERSION
#define PKGCACHEFS_VERSION "dev"
#endif

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
		if (!remote_name_char(b[i]))
			return;
	memcpy(out, b, n);
	out[n] = '\0';
}

/*
 * The request's headers, then the backend's signature (s3): into *ret (the caller frees it).
 * *ret_token: whether they carry a session token, which an error answer may then be about.
 */
static int build_headers(struct remote *r, struct remote_xfer *x, const char *what,
			 struct curl_slist **ret, bool *ret_token)
{
	struct curl_slist *hdrs = NULL, *h;
	int ret_sign;

	*ret_token = false;
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
		ret_sign = r->ops->sign(r, x, &hdrs);
		if (ret_sign < 0) {
			curl_slist_free_all(hdrs);
			remote_set_error("%s: cannot sign the request (%s)", what,
					 strerror(-ret_sign));
			return ret_sign;
		}
		for (h = hdrs; h; h = h->next)
			if (!strncasecmp(h->data, "x-amz-security-token:", 21))
				*ret_token = true;
	}
	*ret = hdrs;
	return 0;
out_oom:
	curl_slist_free_all(hdrs);
	return -ENOMEM;
}

/* Set up a's handle for one attempt at url with hdrs, left ms before the deadline. */
static void setup_handle(struct attempt *a, const char *url, struct curl_slist *hdrs, char *errbuf,
			 int64_t left)
{
	const struct remote *r = a->r;
	const struct remote_xfer *x = a->x;
	const char *ca = getenv("CURL_CA_BUNDLE");
	CURL *c = a->c;

	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "pkgcachefs/" PKGCACHEFS_VERSION);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	if (r->netrc)
		curl_easy_setopt(c, CURLOPT_NETRC, (long)CURL_NETRC_OPTIONAL);
	if (r->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, r->ca_file);
	else if (ca && *ca)
		curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	if (r->client_cert) {
		curl_easy_setopt(c, CURLOPT_SSLCERT, r->client_cert);
		curl_easy_setopt(c, CURLOPT_SSLKEY, r->client_key);
	}
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)left);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)MIN((int64_t)r->connect_timeout_ms, left));
	/* A stalled transfer: under 1 byte/s for a third of the deadline (1..30 s). */
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)MAX(1u, MIN(30u, r->timeout_ms / 3000u)));
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
	if (strcmp(x->method, "HEAD") == 0) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else if (strcmp(x->method, "PUT") == 0 && x->body) {
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(c, CURLOPT_READDATA, a);
		curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(c, CURLOPT_SEEKDATA, a);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->body->len);
	} else if (strcmp(x->method, "GET") != 0) {
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, x->method);
	}
}

/* Whether curl's result rc means an HTTP answer came (whole, or all of what was asked). */
static bool answered(CURLcode rc, const struct attempt *a)
{
	return rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && a->enough);
}

/*
 * What one performed attempt came to: 0 on a 2xx answer, else -errno with the thread's last
 * error set, and *ret_retriable when another attempt may succeed.
 */
static int attempt_outcome(struct attempt *a, CURLcode rc, const char *errbuf, const char *what,
			   bool with_token, bool *ret_retriable)
{
	struct remote_xfer *x = a->x;
	int ret;

	*ret_retriable = false;
	if (answered(rc, a)) {
		if (x->status >= 200 && x->status < 300)
			return 0;
		s3_error_code(a->errbody, x->s3_code, sizeof(x->s3_code));
		/* Temporary credentials ran out: the next request reloads them. */
		if (!strcmp(x->s3_code, "ExpiredToken") ||
		    !strcmp(x->s3_code, "TokenRefreshRequired") ||
		    !strcmp(x->s3_code, "InvalidToken") ||
		    !strcmp(x->s3_code, "InvalidAccessKeyId") ||
		    (with_token && !strcmp(x->s3_code, "InvalidArgument")))
			atomic_store(&a->r->creds_stale, true);
		ret = remote_answer_errno(x->status, x->s3_code, with_token);
		*ret_retriable = status_retriable(x->status);
		remote_set_error("%s: HTTP %ld%s%s%s after %d attempt%s", what, x->status,
				 x->s3_code[0] ? " (" : "", x->s3_code, x->s3_code[0] ? ")" : "",
				 x->attempts, x->attempts == 1 ? "" : "s");
	} else if (rc == CURLE_WRITE_ERROR && x->sink && x->sink->overflow) {
		remote_set_error("%s: the server sent more than the %zu bytes asked", what,
				 x->sink->limit);
		ret = -EIO;
	} else if (rc == CURLE_ABORTED_BY_CALLBACK || a->read_errno) {
		ret = a->read_errno ? -a->read_errno : -EIO;
		remote_set_error("%s: reading the data to send: %s", what, strerror(-ret));
	} else {
		ret = curl_errno(rc, errbuf, ret_retriable);
		remote_set_error("%s: %s after %d attempt%s", what,
				 errbuf[0] ? errbuf : curl_easy_strerror(rc), x->attempts,
				 x->attempts == 1 ? "" : "s");
	}
	return ret;
}

/* One attempt at x: 0, or -errno as attempt_outcome says. */
static int run_attempt(struct attempt *a, const char *url, const char *what, int64_t left,
		       bool *ret_retriable)
{
	struct remote *r = a->r;
	struct remote_xfer *x = a->x;
	struct curl_slist *hdrs = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	bool with_token;
	CURLcode rc;
	int ret;

	*ret_retriable = false;
	x->status = 0;
	x->have_range = false;
	x->have_length = false;
	x->s3_code[0] = '\0';
	if (x->sink) {
		x->sink->len = 0;
		x->sink->overflow = false;
	}
	a->c = pool_get(r);
	if (!a->c)
		return -ENOMEM;
	ret = build_headers(r, x, what, &hdrs, &with_token);
	if (ret < 0) {
		pool_put(r, a->c);
		return ret;
	}
	setup_handle(a, url, hdrs, errbuf, left);
	rc = curl_easy_perform(a->c);
	atomic_fetch_add(&r->requests, 1);
	count_timings(r, a->c);
	x->attempts++;
	x->skipped = a->skipped;
	if (answered(rc, a)) {
		curl_off_t cl = -1;

		curl_easy_getinfo(a->c, CURLINFO_RESPONSE_CODE, &x->status);
		if (curl_easy_getinfo(a->c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK &&
		    cl >= 0) {
			x->have_length = true;
			x->length = (uint64_t)cl;
		}
	}
	/* Keep the handle (and its connection cache) unless the transfer was cut short. */
	if (rc == CURLE_OK)
		pool_put(r, a->c);
	else
		curl_easy_cleanup(a->c);
	curl_slist_free_all(hdrs);
	return attempt_outcome(a, rc, errbuf, what, with_token, ret_retriable);
}

/* The wait before attempt number attempt + 1: exponential with +-50% jitter, or Retry-After. */
static int64_t retry_delay(unsigned attempt, long retry_after)
{
	int64_t delay = 100ll << MIN(attempt, 10u);

	delay = delay / 2 + (int64_t)(rand64() % (uint64_t)delay);
	if (retry_after >= 0)
		delay = MAX(delay, retry_after * 1000ll);
	return delay;
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
		int64_t left = deadline - mono_ms(), delay;
		bool retriable;

		if (left <= 0) {
			remote_set_error("%s: no answer within %u ms after %d attempts", what,
					 r->timeout_ms, x->attempts);
			ret = -ETIMEDOUT;
			break;
		}
		ret = run_attempt(&a, url, what, left, &retriable);
		if (ret == 0 || !retriable || attempt >= retries)
			break;
		delay = retry_delay(attempt, a.retry_after);
		if (mono_ms() + delay >= deadline)
			break; /* waiting would overrun the deadline: report the last failure */
		sleep_ms(delay);
	}
	free(url);
	return ret;
}
