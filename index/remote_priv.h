/* SPDX-License-Identifier: MIT */
/*
 * Inside the remote module: struct remote, the backend operations table, the HTTP engine that the
 * http and s3 backends share (remote.c), and the listing parsers, declared here so that the tests
 * can feed them hostile input. Not for use outside index/remote*.c and tests/test_remote.c.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>

#include <curl/curl.h>

#include "remote.h"

#define REMOTE_POOL_MAX 40

/* Where the bytes of a GET go: a caller's buffer of fixed size or a malloc'ed growing one. */
struct remote_sink {
	char *buf;
	size_t len;   /* bytes stored */
	size_t limit; /* most bytes accepted: more is an overflow */
	size_t cap;   /* allocated, when not fixed */
	bool fixed;   /* buf belongs to the caller and has room for limit bytes */
	bool overflow;
};

/* Where the bytes of a PUT come from: data when fd < 0, else pread from fd at 0. */
struct remote_src {
	const void *data;
	int fd;
	uint64_t len;
};

/* Object names found by a listing parser: names relative to the listed directory. */
struct remote_entry {
	char *name;
	uint64_t size; /* UINT64_MAX when the listing did not say */
};
struct remote_entries {
	struct remote_entry *v;
	size_t n, cap;
};

struct remote_xfer;

struct remote_ops {
	const char *scheme;
	int (*get)(struct remote *r, const char *name, uint64_t off, uint64_t len,
		   struct remote_sink *s);
	int (*put)(struct remote *r, const char *name, const struct remote_src *src);
	int (*head)(struct remote *r, const char *name, uint64_t *ret_size);
	int (*del)(struct remote *r, const char *name);
	/* dir is "" or ends with '/'. Fills e with names relative to dir. */
	int (*list)(struct remote *r, const char *dir, struct remote_entries *e);
	/* http engine: append the headers that authenticate attempt x (s3: SigV4); may be NULL */
	int (*sign)(struct remote *r, const struct remote_xfer *x, struct curl_slist **hdrs);
	void (*free)(struct remote *r);
};

struct remote {
	const struct remote_ops *ops;
	char *url; /* safe to log */
	unsigned timeout_ms, connect_timeout_ms, retries;

	/* file: the directory, without a trailing '/' */
	char *dir;

	/* http and s3: scheme://[user@]host[:port] that requests go to */
	char *origin;
	/* http: absolute path of the root collection, ending with '/'; s3: path of the bucket's
	 * root ("/" virtual-hosted, "/bucket/" path-style) */
	char *root;
	bool netrc;                               /* http: credentials from ~/.netrc */
	char *ca_file, *client_cert, *client_key; /* https: remote_options' files, or NULL */
	_Atomic bool no_propfind; /* http: the server refused PROPFIND once: list by autoindex */

	/* s3 */
	char *host;       /* the Host header, signed */
	char *key_prefix; /* "" or "prefix/" */
	char *region;
	/* s3 credentials (remote_creds.c): creds_lock guards them and the source's state */
	pthread_mutex_t creds_lock;
	bool creds_lock_made;
	char *access_key, *secret_key, *session_token;
	enum { CREDS_ENV, CREDS_FILE, CREDS_CONTAINER, CREDS_IMDS } creds_source;
	char *creds_file;                 /* CREDS_FILE: its path */
	struct timespec creds_file_mtime; /* CREDS_FILE: as last read */
	off_t creds_file_size;            /* CREDS_FILE: as last read */
	int64_t creds_checked;            /* CREDS_FILE: wall s of the last stat */
	int64_t creds_expires;            /* endpoint credentials: wall s, 0: none said */
	_Atomic bool creds_stale;         /* the server said they expired: reload */

	pthread_mutex_t pool_lock;
	CURL *pool[REMOTE_POOL_MAX]; /* idle easy handles: pool_lock */
	size_t n_pool;               /* pool_lock */

	_Atomic uint64_t bytes_in, bytes_out, requests, failures;
	_Atomic uint64_t connects, connect_us, tls_us, first_byte_us, total_us; /* HTTP timings */
};

/* Set the calling thread's last error (printf format). */
void remote_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One HTTP exchange with retries (remote.c). */
struct remote_xfer {
	const char *method;     /* GET PUT HEAD DELETE PROPFIND MKCOL */
	const char *path;       /* absolute, URI-encoded */
	const char *query;      /* without '?', or NULL */
	const char *headers[6]; /* extra "Name: value" lines, NULL-terminated, signed for s3 */
	const struct remote_src *body;
	struct remote_sink *sink;   /* 2xx body; NULL: discarded */
	uint64_t range_off;         /* with ranged: the first byte asked */
	uint64_t range_len;         /* with ranged: how many, 0 for up to the end */
	bool ranged;                /* a Range header is among headers */
	bool zero_retry;            /* this call only: no retries (probes) */
	const char *payload_sha256; /* s3: of body, NULL for the empty payload */

	/* out */
	long status;
	int attempts;
	bool have_length;
	uint64_t length; /* Content-Length (HEAD) */
	bool have_range;
	uint64_t range_start; /* from Content-Range */
	uint64_t skipped;     /* of a 200 to a range (Range ignored): bytes before it, dropped */
	char s3_code[64];     /* <Code> of an S3 error body, or "" */
};

/* ---- remote_engine.c: the HTTP engine of the http and s3 backends ---- */

/*
 * Run x against r->origin, retrying transient failures within r's deadline. 0 on a 2xx answer;
 * otherwise -errno (404 -ENOENT, 401/403 -EACCES, 416 -EIO, refused -ECONNREFUSED, unresolved or
 * unreachable -EHOSTUNREACH, deadline -ETIMEDOUT, else -EIO) with x->status set when an answer
 * came, and the thread's last error set. The s3 backend signs each attempt.
 */
int remote_http_exec(struct remote *r, struct remote_xfer *x);

/* The -errno of an HTTP error answer (status >= 300) whose S3 <Code> is s3_code ("" if none),
 * to a request that carried a session token or not: -EACCES for the credentials (401, 403, and
 * S3 codes about keys, signatures and tokens whatever the status), as remote_http_exec says. */
int remote_answer_errno(long status, const char *s3_code, bool session_token);

/* Requests on one path, shared by the http and s3 backends (remote_http.c). get checks the answer
 * against the range asked; put retries once after MKCOL of the parents on a 409 when mkcol. */
int remote_http_get_path(struct remote *r, const char *path, uint64_t off, uint64_t len,
			 struct remote_sink *s);
int remote_http_put_path(struct remote *r, const char *path, const struct remote_src *src,
			 const char *payload_sha256, bool mkcol);
int remote_http_head_path(struct remote *r, const char *path, uint64_t *ret_size);
int remote_http_del_path(struct remote *r, const char *path);

/* Entries. */
int remote_entries_add(struct remote_entries *e, const char *name, size_t len, uint64_t size);
void remote_entries_release(struct remote_entries *e);

/* Parsers of listing responses; 0, -EIO when malformed, -ENOMEM. */
int remote_parse_propfind(const char *xml, size_t len, const char *dir_path,
			  struct remote_entries *e);
int remote_parse_autoindex_json(const char *json, size_t len, struct remote_entries *e);
/* An HTML directory listing (nginx autoindex, Apache mod_autoindex, python http.server;
 * remote_html.c) of dir_path (absolute, percent-encoded, ending '/'): the files its <a href>
 * links name directly in that directory, relative or absolute, sizes UINT64_MAX. -EIO when it
 * is not HTML or a tag is left open, -EINVAL for a bad dir_path, -ENOMEM. */
int remote_parse_html_listing(const char *html, size_t len, const char *dir_path,
			      struct remote_entries *e);
/* Keys under key_prefix (the full prefix listed, e.g. "pre/ns/"): the part after it. *ret_token
 * gets a malloc'ed NextContinuationToken when the listing is truncated, else NULL. */
int remote_parse_s3_list(const char *xml, size_t len, const char *key_prefix,
			 struct remote_entries *e, char **ret_token);
/* One response header line as curl hands it over (p[0..len), CRLF included, not
 * NUL-terminated): a status line resets *retry_after to -1 and x->have_range; Retry-After sets
 * *retry_after (seconds, at most 3600); Content-Range sets x->have_range and x->range_start.
 * Other lines, and lines of 128 bytes or more, are ignored. */
void remote_parse_header(const char *p, size_t len, long *retry_after, struct remote_xfer *x);
/* The profile's keys in an AWS shared credentials file (INI) read from f: each of
 * aws_access_key_id, aws_secret_access_key and aws_session_token found replaces r's (malloc'ed,
 * wiped when freed by remote_free). 0 found or not, -ENOMEM. */
int remote_parse_s3_credentials(FILE *f, const char *profile, struct remote *r);
/* The host of "scheme://[user@]host[:port][/path]", without brackets, into out. */
void remote_url_host(const char *url, char *out, size_t outlen);
/* localhost, 127.0.0.0/8 or ::1. */
bool remote_loopback_host(const char *host);
/* getenv, with an empty value taken as unset (the AWS SDKs' rule). */
const char *remote_env(const char *name);
/* Find the S3 credentials (remote_creds.c has the sources): 0, or -EACCES / -errno with err. */
int remote_s3_load_credentials(struct remote *r, char *err, size_t errlen);
/* Copies of the current credentials (refreshed first when due), malloc'ed, for one signature;
 * *ret_token NULL without a session token. The caller wipes and frees them. 0 or -ENOMEM. */
int remote_s3_credentials(struct remote *r, char **ret_id, char **ret_secret, char **ret_token);
/* Decode XML character references and the five predefined entities of s[0..n) into a malloc'ed
 * string; NULL on a malformed reference or out of memory. */
char *remote_xml_text(const char *s, size_t n);
/* Whether c may appear in an object name (and in an S3 error code): [A-Za-z0-9._-]. */
bool remote_name_char(char c);

/* Backends' constructors: fill r (already holding url, options, pool lock); -errno and err. */
int remote_file_open(struct remote *r, const char *url, char *err, size_t errlen);
int remote_http_open(struct remote *r, const char *url, char *err, size_t errlen);
int remote_s3_open(struct remote *r, const char *url, char *err, size_t errlen);
