/* SPDX-License-Identifier: MIT */
/*
 * Remote object stores: where a store pushes its packs, namespace catalogues, traces and gc
 * records so that other machines can mount them.
 *
 * A remote holds immutable objects named by relative paths ("packs/<64 hex>.pack", "ns/<...>.cat",
 * "trace/<...>.trc", "gc/<...>", "config"). Three backends sit behind one interface:
 *
 *   file:///abs/dir        a directory, typically on NFS/SMB: puts are write-temp, fsync, rename
 *   http(s)://host/path    WebDAV or any server with PUT, ranged GET, HEAD and DELETE; listing
 *                          through PROPFIND, or nginx's JSON autoindex where PROPFIND is refused
 *   s3://bucket[/prefix]   S3-compatible, every request signed with SigV4 (sigv4.h)
 *
 * Everything a server sends is untrusted: sizes, ranges and listings are bounds-checked and a
 * mismatch is -EIO. Network operations retry transient failures (connection errors, a timed-out
 * attempt, HTTP 5xx, 408, 429) with exponential backoff and jitter, honouring Retry-After, all
 * within one deadline per operation. Every function may be called from many threads at once on
 * the same struct remote; connections are reused through a pool of curl handles.
 *
 * Credentials never travel in URLs: http takes them from ~/.netrc, S3 from the AWS environment
 * variables or the shared credentials file. Neither they nor signatures appear in any message.
 */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct remote;

/* retries value for no retry at all (0 means the default). */
#define REMOTE_NO_RETRY UINT_MAX
#define REMOTE_DEFAULT_TIMEOUT_MS 30000u
#define REMOTE_DEFAULT_CONNECT_TIMEOUT_MS 5000u
#define REMOTE_DEFAULT_RETRIES 4u

/* Largest object remote_get reads whole (len 0) into memory; larger ones are read by ranges. */
#define REMOTE_MAX_WHOLE_GET (1ull << 30)
/* Largest listing response accepted from a server (one page for S3). */
#define REMOTE_MAX_LIST_RESPONSE (64u << 20)
/* Longest object name. */
#define REMOTE_NAME_MAX 1024

struct remote_options {
	unsigned timeout_ms; /* deadline for one whole operation including retries; 0: 30000 */
	unsigned connect_timeout_ms; /* 0: 5000 */
	unsigned retries; /* extra attempts on transient failures; 0: 4; REMOTE_NO_RETRY */
	/* https: the CA certificates to trust (PEM) instead of the system's, and a client
	 * certificate and its key (PEM, both or neither) for servers that ask for one. NULL or ""
	 * for none; absolute paths, read at each new connection. */
	const char *ca_file, *client_cert, *client_key;
};

/*
 * Parse url and set up the backend:
 *   file:///abs/dir
 *   http://host[:port]/path, https://...
 *   s3://bucket[/prefix][?endpoint=URL&region=R&addressing=path|virtual]
 * o may be NULL (all defaults). Nothing is sent over the network; a file:// directory must exist.
 * On failure returns -errno (-EINVAL for a malformed or unsupported URL, -EACCES for missing S3
 * credentials, -ENOENT for a missing directory) and writes a one-line message saying what is wrong
 * and what to do into err (errlen bytes, may be 0); the message never holds a secret.
 * *ret is released by remote_free.
 */
int remote_open(const char *url, const struct remote_options *o, struct remote **ret, char *err,
		size_t errlen);

/* Accepts NULL. Wipes the credentials it held. */
void remote_free(struct remote *r);

/* The URL as given, minus any password or secret: safe to log. Lives as long as r. */
const char *remote_url(const struct remote *r);

/*
 * True when name may name an object: 1..REMOTE_NAME_MAX bytes of [A-Za-z0-9._-] and '/', no
 * leading, trailing or doubled '/', no "." or ".." component, and not ending in ".tmp" (reserved
 * for uploads in flight on the file backend). Every function below returns -EINVAL otherwise.
 */
bool remote_name_valid(const char *name);

/*
 * Read bytes [off, off+len) of object name into a malloc'ed buffer *ret_data (the caller frees) of
 * *ret_len bytes. len 0 reads to the end: the whole object when off is 0 (an empty object gives
 * *ret_len 0 and a non-NULL buffer), else from off, which must then be inside the object. Whole
 * reads are capped at REMOTE_MAX_WHOLE_GET (-EFBIG). -ENOENT when the object does not exist; -EIO
 * when fewer bytes than asked come back (a range past the end of the object), or any other
 * mismatch with what was asked.
 */
int remote_get(struct remote *r, const char *name, uint64_t off, uint64_t len, void **ret_data,
	       size_t *ret_len);

/* The same into buf of exactly len bytes (len > 0): -EIO if the server returns fewer or more. */
int remote_get_into(struct remote *r, const char *name, uint64_t off, uint64_t len, void *buf);

/*
 * Create or replace object name with len bytes from data, or from fd starting at offset 0 (pread:
 * fd's position is irrelevant and unchanged). On the file backend readers never see a partial
 * object (temp file, fsync, rename, fsync of the directory); HTTP and S3 servers give the same
 * guarantee for a single PUT.
 */
int remote_put(struct remote *r, const char *name, const void *data, size_t len);
int remote_put_fd(struct remote *r, const char *name, int fd, uint64_t len);

/* 1 and *ret_size (may be NULL) when the object exists, 0 when not, -errno. */
int remote_head(struct remote *r, const char *name, uint64_t *ret_size);

/* Delete; deleting a missing object is 0. */
int remote_delete(struct remote *r, const char *name);

/*
 * Call cb for each object directly under dir ("ns/" or "ns"; "" for the top level), in no
 * particular order, with its full name ("ns/abc.cat") and size. Sub-directories, entries whose
 * names are not valid object names and uploads in flight are skipped. A non-zero return from cb
 * stops the walk and is returned. A missing dir has no entries: 0.
 */
int remote_list(struct remote *r, const char *dir,
		int (*cb)(const char *name, uint64_t size, void *data), void *data);

/*
 * The calling thread's last failure, e.g. "GET http://127.0.0.1:8080/x/packs/ab.pack: HTTP 503
 * after 5 attempts". Never holds credentials or signatures. Thread-local: valid until this thread's
 * next remote_* call. "" when there was none.
 */
const char *remote_last_error(void);
/* Make msg this thread's last error: for a caller whose remote requests ran in threads of its
 * own (push's uploaders), so that its caller can say why. */
void remote_carry_error(const char *msg);

/*
 * Counters since remote_open, updated atomically: body bytes received and sent, requests made
 * (each HTTP attempt, each file operation), and failed operations (returned -errno other than
 * -ENOENT; a retried attempt that later succeeds is not a failure).
 */
struct remote_counters {
	uint64_t bytes_in, bytes_out, requests, failures;
	/*
	 * Where the time of HTTP attempts went (microseconds, summed over attempts; file:// leaves
	 * them 0): new connections opened, time to connect (name lookup and TCP), to finish the TLS
	 * handshake, to the first byte of the answer, and in all.
	 */
	uint64_t connects, connect_us, tls_us, first_byte_us, total_us;
};
void remote_get_counters(const struct remote *r, struct remote_counters *ret);
