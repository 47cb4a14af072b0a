/* SPDX-License-Identifier: MIT */
/*
 * The remote, seen from the command line and the daemon: `push`, `pull` and `remote`, and the
 * daemon's remote thread, which prefetches what earlier jobs read, pushes periodically and on
 * request (SIGUSR2 from `pkgcachefs push`), and leaves the final push to the unmount.
 *
 * The remote URL comes from --remote, else the store's config (`pkgcachefs remote URL` sets
 * it). Credentials never come from the command line (docs/operations.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "cli.h"
#include "fetch.h"
#include "remote.h"
#include "store.h"
#include "sync.h"
#include "util.h"
#include "vfs.h"

const char *cli_remote_hint(int r, const char *url)
{
	if (r == -EACCES || r == -EPERM)
		return !strncmp(url, "s3://", 5)
			       ? "the server refused the credentials: check AWS_ACCESS_KEY_ID and "
				 "AWS_SECRET_ACCESS_KEY (or ~/.aws/credentials, AWS_PROFILE), with "
				 "temporary credentials their current AWS_SESSION_TOKEN, and that "
				 "they may read and write the bucket (AccessDenied to a PUT or "
				 "DELETE "
				 "while reads work: these credentials may only read, as a "
				 "read-only "
				 "bucket policy allows; mount such jobs with -o no_push, and push "
				 "from a job allowed s3:PutObject and s3:DeleteObject)"
			       : "the server refused the credentials: put them in ~/.netrc "
				 "(machine "
				 "HOST login USER password PASSWORD), and check that the user may "
				 "read "
				 "and write that path";
	if (r == -EOPNOTSUPP)
		return "the server does not allow that method: enable WebDAV for this path (nginx: "
		       "\"dav_methods PUT DELETE MKCOL;\" and dav-ext \"dav_ext_methods PROPFIND "
		       "OPTIONS;\" or \"autoindex on;\"; Apache: \"Dav On\" in the <Directory>; "
		       "rclone: serve webdav without --read-only), or mount with -o no_push for a "
		       "read-only mirror";
	if (r == -ENOTDIR)
		return "the server refused to create the path (HTTP 409): create the remote's "
		       "directory on the server and check that the WebDAV user may write it "
		       "(nginx: \"create_full_put_path on;\", Apache: the directory must be "
		       "writable by the server's user)";
	if (r == -EKEYREJECTED)
		return "TLS failed: the server's certificate is not trusted, does not name that "
		       "host, or the server refused this client's certificate. For a private CA "
		       "give its certificate: mount -o ca_file=PATH, or `pkgcachefs remote "
		       "--ca-file PATH URL` for mount, push and pull; for a server that asks for a "
		       "client certificate, -o client_cert=PATH,client_key=PATH (--client-cert, "
		       "--client-key)";
	if (r == -ENOKEY)
		return "TLS failed: a CA, client certificate or key file cannot be used: check "
		       "that "
		       "ca_file, client_cert and client_key are PEM files, readable, and that the "
		       "key belongs to the certificate";
	if (r == -EREMOTEIO && !strncmp(url, "https://", 8))
		return "the server refused the request: check the URL (it must name the remote's "
		       "directory) and the server's configuration; a server that requires a client "
		       "certificate answers 400 without one (nginx: ssl_verify_client): give "
		       "client_cert and client_key";
	if (r == -EREMOTEIO)
		return "the server refused the request: check the URL (it must name the remote's "
		       "directory) and the server's configuration";
	if (r == -EBADMSG)
		return "the server's directory listing cannot be read: enable WebDAV PROPFIND or "
		       "an autoindex for that path, or check that the URL names a pkgcachefs "
		       "remote";
	if (r == -ECONNREFUSED || r == -EHOSTUNREACH || r == -ENETUNREACH || r == -ETIMEDOUT ||
	    r == -EIO)
		return "the remote cannot be reached: check the URL, the network and that the "
		       "server "
		       "is up (nothing was lost: the data stays in the store)";
	return NULL;
}

void cli_tls_options(const struct store *st, const char *url, const struct cli_tls *tls,
		     struct remote_options *o)
{
	const struct store_remote_cfg *rc = store_remote_config(st);

	if (tls && (tls->ca_file || tls->client_cert || tls->client_key)) {
		o->ca_file = tls->ca_file;
		o->client_cert = tls->client_cert;
		o->client_key = tls->client_key;
	} else if (!url || !*url || !strcmp(url, rc->url)) {
		/* The store's own remote: the files recorded with it. */
		o->ca_file = rc->ca_file;
		o->client_cert = rc->client_cert;
		o->client_key = rc->client_key;
	}
}

int cli_tls_path(const char *what, const char *path, char *out)
{
	if (!realpath(path, out)) {
		int e = errno;

		fprintf(stderr, "pkgcachefs: %s %s: %s\n", what, path, strerror(e));
		return -e;
	}
	return 0;
}

int cli_open_remote(struct store *st, const char *url, const struct cli_tls *tls, unsigned flags,
		    struct remote **ret)
{
	struct remote_options o = {0};
	char err[512] = "";
	int r;

	cli_tls_options(st, url, tls, &o);
	if (!url || !*url)
		url = store_remote(st);
	if (!*url) {
		fprintf(stderr,
			"pkgcachefs: store %s has no remote: pass --remote URL, or set one with "
			"`pkgcachefs remote --store %s URL`\n",
			store_dir(st), store_dir(st));
		return -EINVAL;
	}
	if (!strncmp(url, "s3://", 5))
		prctl(PR_SET_DUMPABLE, 0); /* the keys are in memory: no core dumps */
	r = remote_open(url, &o, ret, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "pkgcachefs: remote: %s\n", *err ? err : strerror(-r));
		return r;
	}
	r = sync_check_remote(st, *ret, flags, err, sizeof(err));
	if (r < 0) {
		const char *hint = cli_remote_hint(r, url);

		fprintf(stderr, "pkgcachefs: remote %s: %s%s%s\n", remote_url(*ret),
			*err ? err : strerror(-r), hint ? "; " : "", hint ? hint : "");
		remote_free(*ret);
		return r;
	}
	return 0;
}

void cli_format_push(const struct sync_report *rep, char *buf, size_t len)
{
	char b1[32];

	snprintf(buf, len,
		 "push: %" PRIu64 " changed, %" PRIu64 " deleted, %" PRIu64
		 " new chunks in %" PRIu64 " packs (%s)%s%s%s",
		 rep->upserts, rep->tombstones, rep->chunks_uploaded, rep->packs_uploaded,
		 format_size(rep->bytes_uploaded + rep->catalog_uploaded_bytes, b1, sizeof(b1)),
		 rep->packs_present ? ", packs of an interrupted push found there" : "",
		 rep->skipped ? ", some files left for the next push" : "",
		 rep->upserts + rep->tombstones ? "" : " (nothing new)");
	if (rep->too_long) {
		size_t n = strlen(buf);

		snprintf(buf + n, len - n,
			 "; %" PRIu64
			 " entries deeper than the %d-byte path limit stay local%s%s%s",
			 rep->too_long, IDX_PATH_MAX, *rep->too_long_path ? " (the first: " : "",
			 rep->too_long_path,
			 *rep->too_long_path ? ")" : " (the daemon's log names one)");
	}
}

void cli_bad_catalog(void *data, const char *name, int err)
{
	const char *why = err == -EBADMSG           ? "damaged, truncated or forged"
			  : err == -EPROTONOSUPPORT ? "written by a newer pkgcachefs"
						    : "written for other chunk sizes";

	if (isatty(2))
		fputc('\n', stderr);
	log_warn("remote catalog %s left out: %s; the files it records stay missing until it is "
		 "replaced (a remote gc compacts over it)",
		 name, why);
}

/*
 * A progress line per phase on a terminal: "uploading: 1.2 GiB of 3.4 GiB (35%), 80 MiB/s, 28 s
 * left" for phases counted in bytes (their name ends in " bytes"), "catalogs: 3 of 12" for the
 * others. At most five times a second, and a newline when a phase is done.
 */
static void sync_progress(void *data, const char *what, uint64_t done, uint64_t total)
{
	static char phase[64];
	static int64_t start, last;
	int64_t now = mono_ns();
	size_t len = strlen(what);
	bool bytes = len > 6 && !strcmp(what + len - 6, " bytes");
	char b1[32], b2[32], b3[32];

	if (strncmp(phase, what, sizeof(phase) - 1) != 0) {
		snprintf(phase, sizeof(phase), "%s", what);
		start = now;
		last = 0;
	}
	if (now - last < 200000000 && done < total)
		return;
	last = now;
	if (!bytes) {
		fprintf(stderr, "\r\033[K%s: %" PRIu64 " of %" PRIu64, what, done, total);
	} else {
		double secs = (double)(now - start) / 1e9,
		       rate = secs > 0 ? (double)done / secs : 0;

		fprintf(stderr, "\r\033[K%.*s: %s of %s (%.0f%%), %s/s", (int)(len - 6), what,
			format_size(done, b1, sizeof(b1)), format_size(total, b2, sizeof(b2)),
			total ? 100.0 * (double)done / (double)total : 100.0,
			format_size((uint64_t)rate, b3, sizeof(b3)));
		if (rate > 0 && total > done)
			fprintf(stderr, ", %.0f s left", (double)(total - done) / rate);
	}
	if (done >= total)
		fputc('\n', stderr);
	fflush(stderr);
}

/* ---- the daemon's remote thread ---- */

struct rdaemon {
	struct vfs *v;
	const char *store;
	unsigned interval_s;      /* 0: no periodic push */
	bool push;                /* pushes at all (false: a read-only consumer, or no remote) */
	bool remote;              /* the mount has a remote */
	const char *url;          /* its URL, or NULL */
	int efd;                  /* eventfd: a push or a pull was requested, or stop */
	bool stop;                /* atomic */
	unsigned pull_interval_s; /* 0: pull only on request (and before each push) */
	unsigned pull_fails;      /* pulls failed in a row: the next waits longer */
	uint64_t *prefetch;
	size_t nprefetch;
	pthread_t th;
};

static struct rdaemon *the_rd;

static void write_push_result(const char *store, int r, const struct sync_report *rep)
{
	char buf[512];
	int n;

	n = snprintf(buf, sizeof(buf),
		     "%lld %d %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
		     " %" PRIu64 " %" PRIu64 "\n",
		     (long long)mono_ns(), r, rep->upserts, rep->tombstones, rep->chunks_uploaded,
		     rep->packs_uploaded, rep->bytes_uploaded, rep->catalog_uploaded_bytes,
		     rep->skipped, rep->too_long);
	store_replace_file(store, "push-result", buf, (size_t)n, false);
}

static void write_pull_result(const char *store, int r, const struct sync_report *rep,
			      const struct fetcher_stats *fs, int64_t ns)
{
	char path[4096], tmp[4200], buf[512];
	int fd, n;

	snprintf(path, sizeof(path), "%s/pull-result", store);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	n = snprintf(buf, sizeof(buf),
		     "%lld %d %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
		     " %" PRIu64 " %lld\n",
		     (long long)mono_ns(), r, rep->catalogs_read, rep->catalog_bytes, rep->applied,
		     rep->kept_local, fs->chunks, fs->bytes, fs->failures, (long long)ns);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (pwrite_all(fd, buf, (size_t)n, 0) == 0)
		rename(tmp, path);
	close(fd);
}

static int daemon_pull(struct rdaemon *rd, bool requested, bool fetch_data, const char *when);

/*
 * One push of the daemon, and its one log line: at info when it moved something, was asked
 * for, or is the last one (at unmount); a periodic push with nothing new logs at debug.
 */
static int daemon_push(struct rdaemon *rd, bool requested, const char *when)
{
	struct sync_report rep;
	int64_t t0 = mono_ns();
	char line[512];
	int r;

	/* Merge first: a push never undoes a newer remote write it had not seen. */
	daemon_pull(rd, false, false, "before push");
	r = vfs_push(rd->v, &(struct sync_options){.bad_catalog = cli_bad_catalog}, &rep);
	if (r == -EPERM) {
		log_warn(
			"push %s refused: this store was mounted with no_push before (an untrusted "
			"job); use a fresh store for trusted jobs",
			when);
	} else if (r < 0) {
		log_warn("push %s failed: %s (%s); the data stays here and the next push sends it",
			 when, strerror(-r), remote_last_error());
	} else {
		cli_format_push(&rep, line, sizeof(line));
		log_msg(rep.upserts + rep.tombstones || requested || !strcmp(when, "at unmount")
				? LOG_LVL_INFO
				: LOG_LVL_DEBUG,
			"%s (%s, %.1f s)", line, when, (double)(mono_ns() - t0) / 1e9);
	}
	if (requested)
		write_push_result(rd->store, r, &rep);
	return r;
}

/*
 * One merge of the daemon (live_pull) and its summary: in the log (info when it applied
 * something or was asked for, debug otherwise; a failure once, when the remote goes away, and
 * once when it is back), in the stats file (the last merge) and, when asked for, in pull-result.
 */
static int daemon_pull(struct rdaemon *rd, bool requested, bool fetch_data, const char *when)
{
	struct fetcher_stats f0, f1;
	struct sync_report rep;
	int64_t t0 = mono_ns(), wall = now_ns();
	uint64_t invals = 0;
	char b1[32];
	int r;

	if (!rd->remote) {
		if (requested)
			write_pull_result(rd->store, -ENOTCONN, &rep, &(struct fetcher_stats){0},
					  0);
		return -ENOTCONN;
	}
	vfs_fetch_stats(rd->v, &f0);
	r = live_pull(rd->v, fetch_data, &(struct sync_options){.bad_catalog = cli_bad_catalog},
		      &rep, &invals);
	vfs_fetch_stats(rd->v, &f1);
	f1.chunks -= f0.chunks;
	f1.bytes -= f0.bytes;
	f1.failures -= f0.failures;
	live_record(rd->store, r, wall, mono_ns() - t0, &rep);
	if (r < 0) {
		if (rd->pull_fails++ == 0 || requested)
			log_warn("pull %s failed: %s (%s); retried at the next pull_interval, less "
				 "often while it fails",
				 when, strerror(-r), remote_last_error());
	} else {
		if (rd->pull_fails)
			log_info("pull %s: the remote answers again after %u failed pulls", when,
				 rd->pull_fails);
		rd->pull_fails = 0;
		log_msg(rep.applied || requested ? LOG_LVL_INFO : LOG_LVL_DEBUG,
			"pull %s: %" PRIu64 " catalogs (%s), %" PRIu64 " entries applied, %" PRIu64
			" local changes kept, %" PRIu64 " names told to the kernel (%.3f s)",
			when, rep.catalogs_read, format_size(rep.catalog_bytes, b1, sizeof(b1)),
			rep.applied, rep.kept_local, invals, (double)(mono_ns() - t0) / 1e9);
	}
	if (requested)
		write_pull_result(rd->store, r, &rep, &f1, mono_ns() - t0);
	return r;
}

/* A pull was asked for (pull-request, written by `pkgcachefs pull`): 1 and whether to fetch the
 * data too, 0 when none. */
static int pull_requested(const char *store, bool *fetch_data)
{
	char path[4096], buf[8] = "";
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/pull-request", store);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	unlink(path);
	*fetch_data = n > 0 && buf[0] == 'd';
	return 1;
}

/* The wait before the next periodic pull: the interval, doubled for each failure in a row (at
 * most 64 times, and at most a day). */
static int64_t pull_wait_ns(const struct rdaemon *rd)
{
	int64_t s = (int64_t)rd->pull_interval_s << MIN(rd->pull_fails, 6u);

	return MIN(s, 86400) * 1000000000;
}

static void *rdaemon_thread(void *arg)
{
	struct rdaemon *rd = arg;
	int64_t next = rd->interval_s ? mono_ns() + (int64_t)rd->interval_s * 1000000000 : 0;
	int64_t next_pull = rd->pull_interval_s && rd->remote ? mono_ns() + pull_wait_ns(rd) : 0;

	/* What the last jobs read is likely what this one reads: fetch it ahead. */
	for (size_t i = 0; i < rd->nprefetch && !__atomic_load_n(&rd->stop, __ATOMIC_RELAXED); i++)
		vfs_prefetch_ino(rd->v, rd->prefetch[i]);
	while (!__atomic_load_n(&rd->stop, __ATOMIC_RELAXED)) {
		struct pollfd p = {.fd = rd->efd, .events = POLLIN};
		int timeout = 1000;
		uint64_t ev;

		int64_t first = next && (!next_pull || next < next_pull) ? next : next_pull;
		bool fetch_data = false;

		if (first) {
			int64_t left = (first - mono_ns()) / 1000000;

			timeout = (int)MAX(0, MIN(left, 60000));
		}
		if (poll(&p, 1, first ? timeout : -1) > 0 && read(rd->efd, &ev, sizeof(ev)) > 0) {
			if (__atomic_load_n(&rd->stop, __ATOMIC_RELAXED))
				break;
			if (pull_requested(rd->store, &fetch_data)) {
				daemon_pull(rd, true, fetch_data, "requested");
				if (next_pull)
					next_pull = mono_ns() + pull_wait_ns(rd);
				continue;
			}
			if (rd->push)
				daemon_push(rd, true, "requested");
			else
				write_push_result(rd->store, rd->remote ? -EROFS : -ENOTCONN,
						  &(struct sync_report){0});
			continue;
		}
		if (next && mono_ns() >= next) {
			if (rd->push)
				daemon_push(rd, false, "periodic");
			next = mono_ns() + (int64_t)rd->interval_s * 1000000000;
		}
		if (next_pull && mono_ns() >= next_pull) {
			daemon_pull(rd, false, false, "periodic");
			next_pull = mono_ns() + pull_wait_ns(rd);
		}
	}
	return NULL;
}

static void on_usr2(int sig)
{
	uint64_t one = 1;

	if (the_rd && write(the_rd->efd, &one, sizeof(one)) < 0) {
		/* nothing to do in a signal handler */
	}
}

static unsigned pull_interval_s = 60;

void cli_rdaemon_pull_interval(unsigned secs)
{
	pull_interval_s = secs;
}

int cli_rdaemon_start(struct vfs *v, const char *store, unsigned interval_s, bool push,
		      const char *remote_url, uint64_t *prefetch, size_t nprefetch)
{
	struct rdaemon *rd = calloc(1, sizeof(*rd));

	if (!rd)
		return -ENOMEM;
	rd->pull_interval_s = pull_interval_s;
	rd->v = v;
	rd->store = store;
	rd->interval_s = interval_s;
	rd->push = push;
	rd->remote = remote_url != NULL;
	rd->url = remote_url;
	rd->prefetch = prefetch;
	rd->nprefetch = nprefetch;
	rd->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (rd->efd < 0 || pthread_create(&rd->th, NULL, rdaemon_thread, rd) != 0) {
		if (rd->efd >= 0)
			close(rd->efd);
		free(rd);
		return -EAGAIN;
	}
	the_rd = rd;
	signal(SIGUSR2, on_usr2);
	return 0;
}

int cli_rdaemon_stop(bool final_push)
{
	struct rdaemon *rd = the_rd;
	uint64_t one = 1;
	int r = 0;

	if (!rd)
		return 0;
	signal(SIGUSR2, SIG_IGN);
	__atomic_store_n(&rd->stop, true, __ATOMIC_RELAXED);
	if (write(rd->efd, &one, sizeof(one)) < 0)
		log_debug("eventfd: %s", strerror(errno));
	pthread_join(rd->th, NULL);
	the_rd = NULL;
	if (final_push && rd->push) {
		char path[4096];

		r = daemon_push(rd, false, "at unmount");
		/* For `pkgcachefs umount`, which says so. */
		snprintf(path, sizeof(path), "%s/push-failed", rd->store);
		if (r < 0) {
			FILE *f = fopen(path, "we");

			if (f) {
				const char *hint = cli_remote_hint(r, rd->url ? rd->url : "");

				/* The request and the server's answer; on a line of its own, what
				 * to change. */
				if (*remote_last_error())
					fprintf(f, "%s (%s)\n", remote_last_error(), strerror(-r));
				else
					fprintf(f, "%s\n", strerror(-r));
				if (hint)
					fprintf(f, "%s\n", hint);
				fclose(f);
			}
		} else {
			unlink(path);
		}
	}
	close(rd->efd);
	free(rd->prefetch);
	free(rd);
	return r;
}

/* ---- push ---- */

#define TLS_USAGE                                                                                  \
	"  --ca-file PATH  https: trust the CA certificates in PATH (PEM) instead of the\n"        \
	"                  system's, for a server with a private CA\n"                             \
	"  --client-cert PATH, --client-key PATH\n"                                                \
	"                  https: the client certificate and its key (PEM) for a server that\n"    \
	"                  asks for one (mTLS)\n"

static const char push_usage[] =
	"usage: pkgcachefs push [--store DIR] [--remote URL] [--ca-file PATH]\n"
	"                       [--client-cert PATH --client-key PATH]\n"
	"\n"
	"Upload what the remote lacks: new chunks, grouped into packs, then one catalog of the\n"
	"files changed since the last push. Rerunning an interrupted push completes it; pushing\n"
	"twice uploads nothing new. On a mounted store the daemon pushes, and this command\n"
	"waits for it (a mounted store also pushes at unmount and every push_interval).\n"
	"\n"
	"Without TLS options, the store's remote uses the files `pkgcachefs remote` "
	"recorded.\n" TLS_USAGE;

static const char pull_usage[] =
	"usage: pkgcachefs pull [--store DIR] [--remote URL] [--metadata-only] [--ca-file PATH]\n"
	"                       [--client-cert PATH --client-key PATH]\n"
	"\n"
	"Merge what others pushed into this store's namespace, then fetch the data of every\n"
	"file that is only on the remote (not with --metadata-only), so the store works\n"
	"offline. On a mounted store the daemon merges, and this command waits for it (a\n"
	"mounted store also merges when it starts, before each push and every pull_interval).\n"
	"\n"
	"Without TLS options, the store's remote uses the files `pkgcachefs remote` "
	"recorded.\n" TLS_USAGE;

static const char remote_usage[] =
	"usage: pkgcachefs remote [--store DIR] [--clear | URL [--ca-file PATH]\n"
	"                         [--client-cert PATH --client-key PATH]]\n"
	"\n"
	"Show or set the store's default remote, used by mount, push and pull when no --remote\n"
	"is given (remote gc, which deletes, always takes --remote explicitly). URL: file:///path, "
	"s3://bucket/prefix[?endpoint=URL&region=R],\n"
	"http(s)://host/path (WebDAV). S3 credentials come from AWS_ACCESS_KEY_ID and\n"
	"AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) or ~/.aws/credentials; HTTP ones from\n"
	"~/.netrc; never from the command line. Setting a URL replaces the TLS files recorded\n"
	"with the old one; mount, push and pull use these for the store's remote.\n" TLS_USAGE;

struct rargs {
	char *store;
	const char *remote;
	bool metadata_only, clear;
	const char *positional;
	struct cli_tls tls;         /* pointing into tls_path */
	char tls_path[3][PATH_MAX]; /* --ca-file, --client-cert, --client-key, absolute */
};

/* Which of parse_rargs' options a command takes. */
enum {
	OPT_REMOTE = 1 << 0,
	OPT_METADATA_ONLY = 1 << 1,
	OPT_CLEAR = 1 << 2,
	OPT_TLS = 1 << 3,
};

/* --ca-file and the like into a->tls: 0, or -errno (printed). */
static int set_tls(struct rargs *a, int c, const char *path)
{
	static const char *const names[] = {"--ca-file", "--client-cert", "--client-key"};
	const char **fields[] = {&a->tls.ca_file, &a->tls.client_cert, &a->tls.client_key};
	int i = c == 'A' ? 0 : c == 'c' ? 1 : 2;
	int r = cli_tls_path(names[i], path, a->tls_path[i]);

	if (r == 0)
		*fields[i] = a->tls_path[i];
	return r;
}

static int parse_rargs(int argc, char **argv, const char *usage, bool positional, unsigned allow,
		       struct rargs *a)
{
	static const struct option longopts[] = {
		{"store", required_argument, NULL, 's'},
		{"remote", required_argument, NULL, 'R'},
		{"metadata-only", no_argument, NULL, 'M'},
		{"clear", no_argument, NULL, 'C'},
		{"ca-file", required_argument, NULL, 'A'},
		{"client-cert", required_argument, NULL, 'c'},
		{"client-key", required_argument, NULL, 'k'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			a->store = optarg;
			break;
		case 'R':
			a->remote = optarg;
			break;
		case 'M':
			a->metadata_only = true;
			break;
		case 'C':
			a->clear = true;
			break;
		case 'A':
		case 'c':
		case 'k':
			if (!(allow & OPT_TLS))
				break; /* refused below */
			if (set_tls(a, c, optarg) < 0)
				return 2;
			break;
		case 'h':
			fputs(usage, stdout);
			exit(0);
		default:
			fputs(usage, stderr);
			return 2;
		}
		if ((c == 'R' && !(allow & OPT_REMOTE)) ||
		    (c == 'M' && !(allow & OPT_METADATA_ONLY)) ||
		    (c == 'C' && !(allow & OPT_CLEAR)) ||
		    ((c == 'A' || c == 'c' || c == 'k') && !(allow & OPT_TLS))) {
			fprintf(stderr, "pkgcachefs: %s does not take that option\n", argv[0]);
			fputs(usage, stderr);
			return 2;
		}
	}
	if (positional && optind == argc - 1)
		a->positional = argv[optind++];
	if (optind != argc) {
		fprintf(stderr, "pkgcachefs: unexpected argument '%s'\n", argv[optind]);
		fputs(usage, stderr);
		return 2;
	}
	if (!a->store)
		a->store = store_default_dir();
	if (!a->store) {
		fprintf(stderr, "pkgcachefs: no store given and no default (pass --store)\n");
		return 2;
	}
	return 0;
}

/* 1 when a daemon holds the store (and *ret_pid), 0 when not, -errno. */
static int store_daemon(const char *store, pid_t *ret_pid)
{
	char path[4096];
	pid_t pid = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/lock", store);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
		close(fd);
		return 0;
	}
	close(fd);
	/* Only a process holding this store's lock gets signalled, whatever the pid file says. */
	if (store_daemon_pid(store, &pid) < 0)
		return -ESRCH;
	*ret_pid = pid;
	return 1;
}

static int push_mounted(const char *store, pid_t pid)
{
	char path[4096];
	long long before = 0, stamp = 0;
	struct sync_report rep = {0};
	int r = 0;

	snprintf(path, sizeof(path), "%s/push-result", store);
	for (int round = 0;; round++) {
		FILE *f = fopen(path, "re");
		int got = 0;

		if (f) {
			got = fscanf(f,
				     "%lld %d %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
				     " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64,
				     &stamp, &r, &rep.upserts, &rep.tombstones,
				     &rep.chunks_uploaded, &rep.packs_uploaded, &rep.bytes_uploaded,
				     &rep.catalog_uploaded_bytes, &rep.skipped, &rep.too_long);
			fclose(f);
		}
		if (round == 0) {
			before = got >= 9 ? stamp : 0;
			if (kill(pid, SIGUSR2) < 0) {
				fprintf(stderr,
					"pkgcachefs: cannot signal the daemon (pid %d): %s\n",
					(int)pid, strerror(errno));
				return 1;
			}
		} else if (got >= 9 && stamp != before) {
			break;
		}
		if (kill(pid, 0) < 0) {
			fprintf(stderr, "pkgcachefs: the daemon (pid %d) went away\n", (int)pid);
			return 1;
		}
		usleep(100000);
	}
	if (r == -EROFS) {
		fprintf(stderr, "pkgcachefs: the mount was started with -o no_push\n");
		return 1;
	}
	if (r == -ENOTCONN) {
		fprintf(stderr, "pkgcachefs: the mount has no remote (mount it with --remote URL, "
				"or set one with `pkgcachefs remote`)\n");
		return 1;
	}
	if (r < 0) {
		fprintf(stderr,
			"pkgcachefs: push failed: %s (details in the daemon's log); nothing local "
			"was lost, rerun to complete it\n",
			strerror(-r));
		return 1;
	}
	{
		char line[512];

		cli_format_push(&rep, line, sizeof(line));
		printf("%s\n", line);
	}
	return 0;
}

int cli_push(int argc, char **argv)
{
	struct sync_options so = {.progress = isatty(2) ? sync_progress : NULL,
				  .bad_catalog = cli_bad_catalog};
	struct rargs a = {0};
	struct sync_report rep;
	struct store *st;
	struct remote *rem;
	pid_t owner = 0, pid = 0;
	char line[512];
	int rr;

	rr = parse_rargs(argc, argv, push_usage, false, OPT_REMOTE | OPT_TLS, &a);
	if (rr)
		return rr;
	rr = store_daemon(a.store, &pid);
	if (rr == 1) {
		if (a.remote)
			fprintf(stderr,
				"pkgcachefs: the store is mounted: its daemon pushes to the "
				"remote it was mounted with; --remote is ignored\n");
		return push_mounted(a.store, pid);
	}
	rr = store_open(a.store, STORE_LOCK, &st, &owner);
	if (rr < 0) {
		cli_store_error(a.store, rr, owner);
		return 1;
	}
	if (cli_open_remote(st, a.remote, &a.tls, SYNC_REMOTE_CREATE | SYNC_REMOTE_BIND, &rem) <
	    0) {
		store_close(st);
		return 1;
	}
	rr = sync_push(st, rem, NULL, &so, &rep);
	if (rr == -EPERM)
		fprintf(stderr,
			"pkgcachefs: store %s was mounted with no_push (an untrusted job): "
			"its content must not reach the remote; use a fresh store for "
			"trusted jobs\n",
			a.store);
	else if (rr < 0)
		fprintf(stderr,
			"pkgcachefs: push to %s failed: %s (%s); nothing local was lost, rerun to "
			"complete it\n",
			remote_url(rem), strerror(-rr), remote_last_error());
	else {
		cli_format_push(&rep, line, sizeof(line));
		printf("%s\n", line);
	}
	remote_free(rem);
	if (store_close(st) < 0 && rr == 0)
		rr = -EIO;
	return rr < 0 ? 1 : 0;
}

/* ---- pull ---- */

/* Ask the daemon of a mounted store to pull (pull-request, then SIGUSR2) and wait for its
 * answer in pull-result. */
static int pull_mounted(const char *store, pid_t pid, bool fetch_data)
{
	char path[4096], req[4200];
	long long before = 0, stamp = 0, ns = 0;
	struct sync_report rep = {0};
	struct fetcher_stats fs = {0};
	char b1[32], b2[32];
	int r = 0, fd;

	snprintf(path, sizeof(path), "%s/pull-result", store);
	snprintf(req, sizeof(req), "%s/pull-request", store);
	for (int round = 0;; round++) {
		FILE *f = fopen(path, "re");
		int got = 0;

		if (f) {
			got = fscanf(f,
				     "%lld %d %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
				     " %" SCNu64 " %" SCNu64 " %" SCNu64 " %lld",
				     &stamp, &r, &rep.catalogs_read, &rep.catalog_bytes,
				     &rep.applied, &rep.kept_local, &fs.chunks, &fs.bytes,
				     &fs.failures, &ns);
			fclose(f);
		}
		if (round == 0) {
			before = got >= 10 ? stamp : 0;
			fd = open(req, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
			if (fd < 0 || write(fd, fetch_data ? "d" : "m", 1) != 1) {
				fprintf(stderr, "pkgcachefs: cannot write %s: %s\n", req,
					strerror(errno));
				if (fd >= 0)
					close(fd);
				return 1;
			}
			close(fd);
			if (kill(pid, SIGUSR2) < 0) {
				fprintf(stderr,
					"pkgcachefs: cannot signal the daemon (pid %d): %s\n",
					(int)pid, strerror(errno));
				unlink(req);
				return 1;
			}
		} else if (got >= 10 && stamp != before) {
			break;
		}
		if (kill(pid, 0) < 0) {
			fprintf(stderr, "pkgcachefs: the daemon (pid %d) went away\n", (int)pid);
			return 1;
		}
		usleep(100000);
	}
	if (r == -ENOTCONN) {
		fprintf(stderr, "pkgcachefs: the mount has no remote (mount it with --remote URL, "
				"or set one with `pkgcachefs remote`)\n");
		return 1;
	}
	if (r < 0) {
		fprintf(stderr,
			"pkgcachefs: pull failed: %s (details in the daemon's log); what was "
			"merged stays, rerun to complete it\n",
			strerror(-r));
		return 1;
	}
	printf("pull: %" PRIu64 " catalogs (%s), %" PRIu64 " entries applied, %" PRIu64
	       " local changes kept (%.3f s)\n",
	       rep.catalogs_read, format_size(rep.catalog_bytes, b1, sizeof(b1)), rep.applied,
	       rep.kept_local, (double)ns / 1e9);
	if (fetch_data)
		printf("pull: fetched %" PRIu64 " chunks, %s%s\n", fs.chunks,
		       format_size(fs.bytes, b2, sizeof(b2)),
		       fs.failures
			       ? "; some could not be fetched (the log says why), rerun to retry"
			       : "");
	return fs.failures ? 1 : 0;
}

int cli_pull(int argc, char **argv)
{
	struct sync_options so = {.progress = isatty(2) ? sync_progress : NULL,
				  .bad_catalog = cli_bad_catalog};
	struct rargs a = {0};
	struct sync_report rep;
	struct store *st;
	struct remote *rem;
	pid_t owner = 0, pid = 0;
	char b1[32];
	int rr;

	rr = parse_rargs(argc, argv, pull_usage, false, OPT_REMOTE | OPT_METADATA_ONLY | OPT_TLS,
			 &a);
	if (rr)
		return rr;
	if (store_daemon(a.store, &pid) == 1) {
		if (a.remote)
			fprintf(stderr,
				"pkgcachefs: the store is mounted: its daemon pulls from the "
				"remote it was mounted with; --remote is ignored\n");
		return pull_mounted(a.store, pid, !a.metadata_only);
	}
	rr = store_open(a.store, STORE_CREATE | STORE_LOCK, &st, &owner);
	if (rr < 0) {
		cli_store_error(a.store, rr, owner);
		return 1;
	}
	if (cli_open_remote(st, a.remote, &a.tls, SYNC_REMOTE_BIND, &rem) < 0) {
		store_close(st);
		return 1;
	}
	rr = sync_pull(st, rem, &so, &rep);
	if (rr < 0) {
		fprintf(stderr, "pkgcachefs: pull from %s failed: %s (%s); nothing was changed\n",
			remote_url(rem), strerror(-rr), remote_last_error());
		goto out;
	}
	printf("pull: %" PRIu64 " catalogs (%s), %" PRIu64 " entries applied, %" PRIu64
	       " local changes kept\n",
	       rep.catalogs_read, format_size(rep.catalog_bytes, b1, sizeof(b1)), rep.applied,
	       rep.kept_local);
	if (a.metadata_only)
		goto out;

	{
		struct fetcher_stats fs;

		rr = sync_fetch_all(st, rem, isatty(2) ? cli_show_progress : NULL, "pull", &fs);
		if (isatty(2))
			fputc('\n', stderr);
		printf("pull: fetched %" PRIu64 " chunks, %s%s\n", fs.chunks,
		       format_size(fs.bytes, b1, sizeof(b1)),
		       fs.failures
			       ? "; some could not be fetched (the log says why), rerun to retry"
			       : "");
		if (rr == 0 && fs.failures)
			rr = -EIO;
	}
out:
	remote_free(rem);
	if (store_close(st) < 0 && rr == 0)
		rr = -EIO;
	return rr < 0 ? 1 : 0;
}

/* ---- remote ---- */

int cli_record_remote(struct store *st, const char *url, const struct remote_options *o)
{
	const char *in[] = {url, o->ca_file, o->client_cert, o->client_key};
	struct store_remote_cfg rc;
	char *out[] = {rc.url, rc.ca_file, rc.client_cert, rc.client_key};

	memset(&rc, 0, sizeof(rc));
	for (size_t i = 0; i < ARRAY_SIZE(in); i++) {
		if (!in[i])
			continue;
		if (strlen(in[i]) >= STORE_REMOTE_MAX || strpbrk(in[i], " \t\n"))
			return -EINVAL;
		strcpy(out[i], in[i]);
	}
	return store_set_remote_config(st, &rc);
}

int cli_remote(int argc, char **argv)
{
	struct rargs a = {0};
	struct store *st;
	pid_t owner = 0;
	int rr;

	rr = parse_rargs(argc, argv, remote_usage, true, OPT_CLEAR | OPT_TLS, &a);
	if (rr)
		return rr;
	rr = store_open(a.store, STORE_CREATE, &st, &owner);
	if (rr < 0) {
		cli_store_error(a.store, rr, owner);
		return 1;
	}
	if ((a.tls.ca_file || a.tls.client_cert || a.tls.client_key) && !a.positional) {
		fprintf(stderr, "pkgcachefs: remote: TLS files go with a URL: pkgcachefs remote "
				"--ca-file PATH URL\n");
		store_close(st);
		return 2;
	}
	if (a.clear) {
		struct store_remote_cfg none;

		memset(&none, 0, sizeof(none));
		rr = store_set_remote_config(st, &none);
	} else if (a.positional) {
		struct remote_options o = {.ca_file = a.tls.ca_file,
					   .client_cert = a.tls.client_cert,
					   .client_key = a.tls.client_key};
		struct remote *rem = NULL;
		char err[512] = "";

		rr = remote_open(a.positional, &o, &rem, err, sizeof(err));
		if (rr < 0) {
			fprintf(stderr, "pkgcachefs: remote: %s\n", *err ? err : strerror(-rr));
			store_close(st);
			return 1;
		}
		remote_free(rem);
		rr = cli_record_remote(st, a.positional, &o);
	}
	if (rr == -EINVAL)
		fprintf(stderr,
			"pkgcachefs: remote: the URL and the TLS file paths must be under %d "
			"bytes, without spaces\n",
			STORE_REMOTE_MAX);
	else if (rr < 0)
		fprintf(stderr, "pkgcachefs: cannot write the config of %s: %s\n", a.store,
			strerror(-rr));
	if (!a.clear && !a.positional) {
		const struct store_remote_cfg *rc = store_remote_config(st);

		printf("%s\n", *rc->url ? rc->url : "(none)");
		if (*rc->ca_file)
			printf("ca_file %s\n", rc->ca_file);
		if (*rc->client_cert)
			printf("client_cert %s\nclient_key %s\n", rc->client_cert, rc->client_key);
	}
	store_close(st);
	return rr < 0 ? 1 : 0;
}

/* ---- export and import ---- */

static const char export_usage[] =
	"usage: pkgcachefs export [--store DIR] [--since BASE] FILE\n"
	"\n"
	"Write the store (names and data) as one bundle FILE, for CI systems whose cache is one\n"
	"archive per key. With --since BASE (an earlier bundle), only the data BASE and its own\n"
	"bases lack goes in; importing it then needs BASE imported first. Works on a mounted\n"
	"store too (files still being written are left for the next export).\n";

static const char import_usage[] =
	"usage: pkgcachefs import [--store DIR] FILE\n"
	"\n"
	"Add a bundle's files to the store (created if new), every chunk verified against its\n"
	"SHA-256; local changes newer than the bundle's stay. The store must not be mounted.\n";

static void export_progress(void *data, uint64_t done, uint64_t total)
{
	sync_progress(data, "export: files", done, total);
}

int cli_export(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"store", required_argument, NULL, 's'},
		{"since", required_argument, NULL, 'b'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store = NULL, *base = NULL;
	struct sync_report rep;
	struct store *st;
	char b1[32];
	int c, rr;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			store = optarg;
			break;
		case 'b':
			base = optarg;
			break;
		case 'h':
			fputs(export_usage, stdout);
			return 0;
		default:
			fputs(export_usage, stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fputs(export_usage, stderr);
		return 2;
	}
	if (!store)
		store = store_default_dir();
	rr = store ? store_open(store, 0, &st, NULL) : -EINVAL;
	if (rr < 0) {
		fprintf(stderr, "pkgcachefs: cannot open store %s: %s\n", store ? store : "(none)",
			strerror(-rr));
		return 1;
	}
	rr = sync_export(st, base, argv[optind], isatty(2) ? export_progress : NULL, NULL, &rep);
	store_close(st);
	if (rr == -EPERM) {
		fprintf(stderr,
			"pkgcachefs: store %s was mounted with no_push (an untrusted job): its "
			"content must not leave this host, by push or by bundle; export from a "
			"store only trusted jobs used\n",
			store);
		return 1;
	}
	if (rr < 0) {
		fprintf(stderr, "pkgcachefs: export to %s failed: %s%s\n", argv[optind],
			strerror(-rr),
			rr == -EBADMSG || rr == -EPROTO ? " (is --since a bundle of this store's "
							  "chunk sizes?)"
							: "");
		return 1;
	}
	printf("export: %" PRIu64 " entries, %" PRIu64 " chunks, %s%s\n", rep.upserts,
	       rep.chunks_uploaded, format_size(rep.bytes_uploaded, b1, sizeof(b1)),
	       rep.skipped ? "; files whose data is only on the remote were left out (pull first)"
			   : "");
	return 0;
}

int cli_import(int argc, char **argv)
{
	struct rargs a = {0};
	struct sync_report rep;
	struct store *st;
	pid_t owner = 0, pid = 0;
	char b1[32];
	int rr;

	rr = parse_rargs(argc, argv, import_usage, true, 0, &a);
	if (rr)
		return rr;
	if (!a.positional) {
		fputs(import_usage, stderr);
		return 2;
	}
	if (store_daemon(a.store, &pid) == 1) {
		fprintf(stderr,
			"pkgcachefs: store %s is mounted (daemon pid %d): unmount to import\n",
			a.store, (int)pid);
		return 1;
	}
	rr = store_open(a.store, STORE_CREATE | STORE_LOCK, &st, &owner);
	if (rr < 0) {
		cli_store_error(a.store, rr, owner);
		return 1;
	}
	rr = sync_import(st, a.positional, isatty(2) ? cli_show_progress : NULL, "import", &rep);
	if (isatty(2))
		fputc('\n', stderr);
	if (store_close(st) < 0 && rr == 0)
		rr = -EIO;
	if (rr < 0) {
		fprintf(stderr, "pkgcachefs: import of %s failed: %s; the store is unchanged\n",
			a.positional,
			rr == -ENOENT    ? "it was exported --since a base bundle not imported here"
			: rr == -EBADMSG ? "the bundle is damaged or truncated"
			: rr == -EPROTO  ? "not a bundle of a store with these chunk sizes"
					 : strerror(-rr));
		return 1;
	}
	printf("import: %" PRIu64 " entries added or updated, %" PRIu64
	       " kept (changed here since), %" PRIu64 " new chunks (%s)\n",
	       rep.applied, rep.kept_local, rep.chunks_uploaded,
	       format_size(rep.bytes_uploaded, b1, sizeof(b1)));
	return 0;
}
