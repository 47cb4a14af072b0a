/* SPDX-License-Identifier: MIT */
/*
 * pkgcachefs: the command-line entry point and the mount daemon.
 *
 * `mount` forks before touching the store: the child opens and locks the store, mounts, and
 * reports success or the error text through a pipe; the parent prints it and exits with the
 * child's verdict, so `pkgcachefs mount` returns only once the mount is ready (or has failed
 * with a message that says why). SQLite handles and locks are never carried across a fork.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "cli.h"
#include "fetch.h"
#include "loop.h"
#include "remote.h"
#include "sync.h"
#include "ops.h"
#include "report.h"
#include "stats.h"
#include "store.h"
#include "util.h"
#include "vfs.h"

/* What the request loop polls for at most: one-at-a-time clients' next request comes within. */
#define SPIN_US_DEFAULT 50

struct mount_args {
	char *store;
	char *mountpoint;
	char *fuse_opts; /* options passed to the kernel and libfuse */
	struct vfs_options vo;
	bool foreground;
	bool debug;
	bool adopt;
	char *remote; /* --remote URL; NULL: the store's config */
	unsigned push_interval_s;
	unsigned remote_timeout_s;
	bool no_push;
	bool keep_suid;             /* -o keep_suid: pulls keep setuid and setgid bits */
	struct cli_tls tls;         /* -o ca_file=, client_cert=, client_key=: into tls_path */
	char tls_path[3][PATH_MAX]; /* made absolute */
	char *metrics_file;         /* -o metrics_file=PATH (absolute), or NULL */
	unsigned metrics_s;         /* -o metrics_interval=SECS */
	int log_level;              /* -o log_level=..., -1: the default (info; debug with -d) */
	unsigned spin_us;           /* -o spin_us=US: the request loop's longest poll (fs/loop.c) */
};

/* Said to the user with a successful mount (the remote was down, say). */
static char mount_note[512];

static int report_fd = -1; /* write end of the pipe to the waiting parent */
/*
 * The daemon's stderr stays the caller's until the mount is reported, so that what libfuse and
 * fusermount3 print about a failure (an unknown option, allow_other refused) reaches the user;
 * then it becomes /dev/null (stderr_null), and the log goes to syslog.
 */
static int stderr_null = -1;

/* Tell the parent how the mount went; first line wins. */
static void report(int status, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	if (report_fd < 0) {
		if (fmt) {
			va_start(ap, fmt);
			fputs("pkgcachefs: ", stderr);
			vfprintf(stderr, fmt, ap);
			fputc('\n', stderr);
			va_end(ap);
		}
		return;
	}
	buf[0] = (char)status;
	n = 1;
	if (fmt) {
		va_start(ap, fmt);
		n += vsnprintf(buf + 1, sizeof(buf) - 1, fmt, ap);
		va_end(ap);
		if (n > (int)sizeof(buf))
			n = sizeof(buf);
	}
	if (write(report_fd, buf, (size_t)n) < 0)
		log_debug("report: %s", strerror(errno));
	close(report_fd);
	report_fd = -1;
	if (stderr_null >= 0) {
		dup2(stderr_null, 2);
		close(stderr_null);
		stderr_null = -1;
	}
}

static void usage_mount(FILE *f)
{
	fputs("usage: pkgcachefs mount [--store DIR] [--remote URL] [-o OPTIONS] [-f] "
	      "[--no-adopt]\n"
	      "                        MOUNTPOINT\n"
	      "\n"
	      "Mount a pkgcachefs store on MOUNTPOINT (for example ~/.cache/pip). The store is\n"
	      "created on first use. Without -f, returns once the mount is ready and leaves a\n"
	      "daemon running; `pkgcachefs umount MOUNTPOINT` stops it.\n"
	      "\n"
	      "  --store DIR     the store (default: $PKGCACHEFS_STORE, /var/lib/pkgcachefs for\n"
	      "                  root, else ${XDG_DATA_HOME:-~/.local/share}/pkgcachefs)\n"
	      "  -o OPTIONS      comma-separated: max_size=SIZE (evict least recently used files\n"
	      "                  beyond SIZE), commit_interval=MS (group commit period, default\n"
	      "                  1000), log_level=LEVEL (error, warn, info: the default,\n"
	      "                  debug), metrics_file=PATH (a Prometheus text file, rewritten\n"
	      "                  every metrics_interval=SECS, default 15), spin_us=US (after a\n"
	      "                  reply, poll for the next request up to US microseconds,\n"
	      "                  0..1000, default 50, 0: never), allow_other, ro,\n"
	      "                  and other FUSE mount options; with a remote:\n"
	      "                  push_interval=SECS (background push period, default 300, 0:\n"
	      "                  only at unmount), pull_interval=SECS (merge what others pushed,\n"
	      "                  default 60, 0: only at mount, before a push and on `pull`),\n"
	      "                  no_push (never push: for untrusted jobs),\n"
	      "                  keep_suid (keep the setuid and setgid bits of pulled\n"
	      "                  entries; cleared by default. The mount is nosuid,nodev\n"
	      "                  unless given suid or dev),\n"
	      "                  remote_timeout=SECS (per operation, default 30),\n"
	      "                  fetch_workers=N (parallel prefetch connections, 1..32,\n"
	      "                  default 16), fetch_range=SIZE (largest prefetch request,\n"
	      "                  64K..64M, default 8M),\n"
	      "                  ca_file=PATH (https: trust this CA, PEM, instead of the\n"
	      "                  system's), client_cert=PATH,client_key=PATH (https: a\n"
	      "                  client certificate and its key, PEM); without them the\n"
	      "                  store's remote uses the files `pkgcachefs remote` recorded\n"
	      "  --remote URL    the remote this store caches (default: the store's config; see\n"
	      "                  `pkgcachefs remote --help`); `--remote none` for none\n"
	      "  -f              stay in the foreground, logging to stderr (else to syslog)\n"
	      "  -d              debug logging (implies -f)\n"
	      "  --no-adopt      refuse a non-empty MOUNTPOINT instead of importing its files\n",
	      f);
}

/* Split -o: our own options into vo, the rest into a FUSE option string. */
/* "ca_file=PATH" and the like into a->tls, the path made absolute: 0, or -errno (printed). */
static int set_tls_opt(struct mount_args *a, const char *tok)
{
	size_t name_len = (size_t)(strchr(tok, '=') - tok);
	int i = !strncmp(tok, "ca_file=", 8) ? 0 : !strncmp(tok, "client_cert=", 12) ? 1 : 2;
	const char **fields[] = {&a->tls.ca_file, &a->tls.client_cert, &a->tls.client_key};
	char what[16];
	int r;

	snprintf(what, sizeof(what), "%.*s", (int)name_len, tok);
	if (!tok[name_len + 1]) {
		fprintf(stderr, "pkgcachefs: %s needs a path\n", what);
		return -EINVAL;
	}
	r = cli_tls_path(what, tok + name_len + 1, a->tls_path[i]);
	if (r == 0)
		*fields[i] = a->tls_path[i];
	return r;
}

/* A whole number in lo..hi from text: 0, or -EINVAL (empty, trailing characters, out of range). */
static int parse_long(const char *text, long lo, long hi, long *ret)
{
	char *end;
	long v = strtol(text, &end, 10);

	if (!*text || *end || v < lo || v > hi)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* push_interval=, pull_interval=, remote_timeout=: seconds. */
static int parse_interval(const char *tok, struct mount_args *a)
{
	bool push = tok[0] == 'p';
	long v;

	if (parse_long(strchr(tok, '=') + 1, push ? 0 : 1, 86400, &v) < 0) {
		fprintf(stderr, "pkgcachefs: bad value in '%s' (%s..86400 seconds)\n", tok,
			push ? "0" : "1");
		return -EINVAL;
	}
	if (tok[2] == 'l')
		cli_rdaemon_pull_interval((unsigned)v);
	else if (push)
		a->push_interval_s = (unsigned)v;
	else
		a->remote_timeout_s = (unsigned)v;
	return 0;
}

static int parse_log_level(const char *name, struct mount_args *a)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	int lvl = -1;

	for (int i = 0; i < (int)ARRAY_SIZE(names); i++)
		if (!strcmp(name, names[i]))
			lvl = i;
	if (!strcmp(name, "warning"))
		lvl = LOG_LVL_WARN;
	if (lvl < 0) {
		fprintf(stderr, "pkgcachefs: bad log_level '%s' (error, warn, info or debug)\n",
			name);
		return -EINVAL;
	}
	a->log_level = lvl;
	return 0;
}

static int parse_metrics_file(const char *p, struct mount_args *a)
{
	char cwd[4096];

	free(a->metrics_file);
	a->metrics_file = NULL;
	if (!*p) {
		fprintf(stderr, "pkgcachefs: metrics_file= needs a path (for example "
				"/var/lib/node_exporter/pkgcachefs.prom)\n");
		return -EINVAL;
	}
	/* The daemon runs from /: keep a relative path relative to here. */
	if (p[0] == '/')
		a->metrics_file = strdup(p);
	else if (getcwd(cwd, sizeof(cwd)) && asprintf(&a->metrics_file, "%s/%s", cwd, p) < 0)
		a->metrics_file = NULL;
	return a->metrics_file ? 0 : -ENOMEM;
}

/* Options of fstab's and mount(8)'s that mean nothing here, or what is always on. */
static bool ignored_opt(const char *tok)
{
	static const char *const names[] = {"rw",     "defaults", "auto",
					    "noauto", "nofail",   "_netdev",
					    "user",   "users",    "default_permissions"};

	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (!strcmp(tok, names[i]))
			return true;
	return !strncmp(tok, "x-", 2);
}

/* One -o option: 1 when it is ours (applied), 0 when it is for libfuse, or -errno (said why). */
static int parse_one_opt(const char *tok, struct mount_args *a)
{
	long v;

	if (strncmp(tok, "max_size=", 9) == 0) {
		if (parse_size(tok + 9, &a->vo.max_size) < 0) {
			fprintf(stderr, "pkgcachefs: bad size in '%s' (try 10G or 500M)\n", tok);
			return -EINVAL;
		}
	} else if (strncmp(tok, "commit_interval=", 16) == 0) {
		if (parse_long(tok + 16, 1, 600000, &v) < 0) {
			fprintf(stderr, "pkgcachefs: bad commit_interval '%s' (1..600000 ms)\n",
				tok + 16);
			return -EINVAL;
		}
		a->vo.commit_interval_ms = (unsigned)v;
	} else if (strncmp(tok, "push_interval=", 14) == 0 ||
		   strncmp(tok, "pull_interval=", 14) == 0 ||
		   strncmp(tok, "remote_timeout=", 15) == 0) {
		return parse_interval(tok, a) < 0 ? -EINVAL : 1;
	} else if (strncmp(tok, "fetch_workers=", 14) == 0) {
		if (parse_long(tok + 14, 1, FETCH_WORKERS_MAX, &v) < 0) {
			fprintf(stderr, "pkgcachefs: bad fetch_workers '%s' (1..%d)\n", tok + 14,
				FETCH_WORKERS_MAX);
			return -EINVAL;
		}
		a->vo.fetch_workers = (unsigned)v;
	} else if (strncmp(tok, "fetch_range=", 12) == 0) {
		uint64_t sz;

		if (parse_size(tok + 12, &sz) < 0 || sz < FETCH_RANGE_MIN || sz > FETCH_RANGE_MAX) {
			fprintf(stderr, "pkgcachefs: bad fetch_range '%s' (64K..64M)\n", tok + 12);
			return -EINVAL;
		}
		a->vo.fetch_range = (uint32_t)sz;
	} else if (!strcmp(tok, "no_push")) {
		a->no_push = true;
	} else if (!strcmp(tok, "keep_suid")) {
		a->keep_suid = true;
	} else if (!strncmp(tok, "ca_file=", 8) || !strncmp(tok, "client_cert=", 12) ||
		   !strncmp(tok, "client_key=", 11)) {
		int r = set_tls_opt(a, tok);

		return r < 0 ? r : 1;
	} else if (strncmp(tok, "log_level=", 10) == 0) {
		return parse_log_level(tok + 10, a) < 0 ? -EINVAL : 1;
	} else if (strncmp(tok, "metrics_file=", 13) == 0) {
		int r = parse_metrics_file(tok + 13, a);

		return r < 0 ? r : 1;
	} else if (strncmp(tok, "metrics_interval=", 17) == 0) {
		if (parse_long(tok + 17, 1, 86400, &v) < 0) {
			fprintf(stderr,
				"pkgcachefs: bad metrics_interval '%s' (1..86400 seconds)\n",
				tok + 17);
			return -EINVAL;
		}
		a->metrics_s = (unsigned)v;
	} else if (strncmp(tok, "spin_us=", 8) == 0) {
		if (parse_long(tok + 8, 0, 1000, &v) < 0) {
			fprintf(stderr, "pkgcachefs: bad spin_us '%s' (0..1000 microseconds)\n",
				tok + 8);
			return -EINVAL;
		}
		a->spin_us = (unsigned)v;
	} else if (!ignored_opt(tok)) {
		return 0;
	}
	return 1;
}

/* The -o options in (comma-separated): ours applied to a, the rest kept in a->fuse_opts. */
static int parse_opts(const char *in, struct mount_args *a)
{
	char *s = strdup(in), *tok, *save;
	size_t cap = strlen(in) + 64;
	size_t have = a->fuse_opts ? strlen(a->fuse_opts) : 0;
	char *n;
	int r = 0;

	if (!s)
		return -ENOMEM;
	n = realloc(a->fuse_opts, have + cap + 256);
	if (!n) {
		free(s);
		return -ENOMEM;
	}
	a->fuse_opts = n;
	a->fuse_opts[have] = '\0';
	for (tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		r = parse_one_opt(tok, a);
		if (r < 0)
			break;
		if (r == 0) {
			if (a->fuse_opts[0])
				strcat(a->fuse_opts, ",");
			strcat(a->fuse_opts, tok);
		}
		r = 0;
	}
	free(s);
	return r;
}

static int parse_mount_args(int argc, char **argv, struct mount_args *a)
{
	static const struct option longopts[] = {
		{"store", required_argument, NULL, 's'},
		{"help", no_argument, NULL, 'h'},
		{"no-adopt", no_argument, NULL, 'N'},
		{"remote", required_argument, NULL, 'R'},
		{NULL, 0, NULL, 0},
	};
	int c;

	a->adopt = true;
	a->log_level = -1;
	a->metrics_s = 15;
	a->spin_us = SPIN_US_DEFAULT;
	a->push_interval_s = 300;
	a->remote_timeout_s = 30;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+o:fdh", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			free(a->store);
			a->store = strdup(optarg);
			break;
		case 'o':
			if (parse_opts(optarg, a) < 0)
				return 2;
			break;
		case 'f':
			a->foreground = true;
			break;
		case 'd':
			a->foreground = true;
			a->debug = true;
			break;
		case 'N':
			a->adopt = false;
			break;
		case 'R':
			free(a->remote);
			a->remote = strdup(optarg);
			break;
		case 'h':
			usage_mount(stdout);
			exit(0);
		default:
			usage_mount(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "pkgcachefs mount: expected exactly one MOUNTPOINT\n");
		usage_mount(stderr);
		return 2;
	}
	a->mountpoint = realpath(argv[optind], NULL);
	if (!a->mountpoint) {
		if (errno == ENOENT)
			fprintf(stderr,
				"pkgcachefs: mountpoint %s does not exist: create it first (mkdir "
				"-p "
				"%s)\n",
				argv[optind], argv[optind]);
		else if (errno == ENOTCONN)
			fprintf(stderr,
				"pkgcachefs: mountpoint %s: %s: a daemon died and left its mount; "
				"clear it with fusermount3 -u -z %s, then mount again\n",
				argv[optind], strerror(errno), argv[optind]);
		else
			fprintf(stderr, "pkgcachefs: mountpoint %s: %s\n", argv[optind],
				strerror(errno));
		return 1;
	}
	if (!a->store)
		a->store = store_default_dir();
	if (!a->store) {
		fprintf(stderr, "pkgcachefs: no store given and no default (set HOME or "
				"PKGCACHEFS_STORE, or pass --store)\n");
		return 2;
	}
	if (a->store[0] != '/') {
		/* The daemon runs from /, and umount finds the store by the path it mounted. */
		char cwd[4096], *abs;

		if (!getcwd(cwd, sizeof(cwd)) || asprintf(&abs, "%s/%s", cwd, a->store) < 0) {
			fprintf(stderr, "pkgcachefs: cannot make the store path %s absolute\n",
				a->store);
			return 1;
		}
		free(a->store);
		a->store = abs;
	}
	if (strpbrk(a->store, ", \t\n\\")) {
		/* It travels as a mount option and comes back through /proc/self/mountinfo. */
		fprintf(stderr,
			"pkgcachefs: store path %s: commas, blanks and backslashes are not "
			"supported; use another directory\n",
			a->store);
		return 2;
	}
	return 0;
}

static int check_fuse_device(void)
{
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd >= 0) {
		close(fd);
		return 0;
	}
	if (errno == ENOENT)
		fprintf(stderr,
			"pkgcachefs: /dev/fuse does not exist: load the fuse module (sudo modprobe "
			"fuse); in a container, start it with --device /dev/fuse --cap-add "
			"SYS_ADMIN (docker, podman) or bind /dev/fuse into the sandbox\n");
	else if (errno == EACCES || errno == EPERM)
		fprintf(stderr,
			"pkgcachefs: /dev/fuse: %s: this user may not use FUSE. `ls -l /dev/fuse` "
			"should show crw-rw-rw- (sudo chmod 666 /dev/fuse, or a udev rule), or "
			"mount as root; in a container, add --device /dev/fuse --cap-add "
			"SYS_ADMIN\n",
			strerror(errno));
	else
		fprintf(stderr,
			"pkgcachefs: cannot open /dev/fuse: %s (in a container, add "
			"--device /dev/fuse --cap-add SYS_ADMIN)\n",
			strerror(errno));
	return -1;
}

/* Where libfuse looks for fusermount3: its install directory, then PATH. */
static bool have_fusermount(void)
{
	const char *path = getenv("PATH");
	char buf[4096];

	if (access("/usr/bin/fusermount3", X_OK) == 0 || access("/bin/fusermount3", X_OK) == 0)
		return true;
	while (path && *path) {
		size_t n = strcspn(path, ":");

		if (n &&
		    snprintf(buf, sizeof(buf), "%.*s/fusermount3", (int)n, path) <
			    (int)sizeof(buf) &&
		    access(buf, X_OK) == 0)
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

static bool wants_allow_other(const char *opts)
{
	char *s = opts ? strdup(opts) : NULL, *tok, *save;
	bool found = false;

	for (tok = s ? strtok_r(s, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save))
		found |= !strcmp(tok, "allow_other") || !strcmp(tok, "allow_root");
	free(s);
	return found;
}

/* Whether /etc/fuse.conf lets users pass allow_other (fusermount3 reads it the same way). */
static bool user_allow_other(void)
{
	FILE *f = fopen("/etc/fuse.conf", "re");
	char line[256];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *p = line, *end;

		while (*p == ' ' || *p == '\t')
			p++;
		end = p + strcspn(p, " \t\r\n#");
		found = end - p == 16 && !strncmp(p, "user_allow_other", 16);
	}
	fclose(f);
	return found;
}

static int dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int empty = 1;

	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			empty = 0;
			break;
		}
	closedir(d);
	return empty;
}

static struct fuse_session *the_session;
static pid_t adopt_pid;

/* For measuring (tools/bench/fuse-ops.sh): the requests this session received, by operation,
 * and their handlers' time, written at unmount to the file $PKGCACHEFS_FUSE_OPS names. */
static void dump_op_counts(const struct loop_stats *ls)
{
	const char *path = getenv("PKGCACHEFS_FUSE_OPS");
	FILE *f;

	if (!path || !*path)
		return;
	f = fopen(path, "we");
	if (!f) {
		log_warn("cannot write %s: %s", path, strerror(errno));
		return;
	}
	ops_counts_dump(f);
	/* How the loop got its requests (fs/loop.c): a dot in the name, so no time field. */
	fprintf(f, "loop.spun %" PRIu64 "\n", ls->spun);
	fprintf(f, "loop.blocked %" PRIu64 "\n", ls->blocked);
	fprintf(f, "loop.handovers %" PRIu64 "\n", ls->handovers);
	fprintf(f, "loop.rescues %" PRIu64 "\n", ls->rescues);
	fprintf(f, "loop.threads %" PRIu64 "\n", ls->threads);
	if (fclose(f) != 0)
		log_warn("cannot write %s: %s", path, strerror(errno));
}

static void *adopt_waiter(void *arg)
{
	struct mount_args *a = arg;
	int status;

	if (waitpid(adopt_pid, &status, 0) == adopt_pid && WIFEXITED(status) &&
	    WEXITSTATUS(status) == 0) {
		report(0, NULL);
		return NULL;
	}
	report(1,
	       "importing the existing files of %s failed (%s); what was not imported is "
	       "still in the directory under the mount; unmounting",
	       a->mountpoint, WIFEXITED(status) ? strerror(WEXITSTATUS(status)) : "killed");
	fuse_session_exit(the_session);
	fuse_session_unmount(the_session);
	return NULL;
}

/* gc evicted a name: make the kernel forget its cached entry. Called with no lock held. */
static void on_evicted(void *data, uint64_t parent, const char *name)
{
	if (the_session)
		fuse_lowlevel_notify_inval_entry(the_session, parent, name, strlen(name));
}

static struct vfs *the_vfs;
static const char *the_store;

/* `pkgcachefs gc` on a mounted store leaves its --max-size in STORE/gc-request. */
static uint64_t on_gc_request_size(void *data)
{
	uint64_t max = 0;

	cli_read_gc_request(the_store, &max);
	return max;
}

static void on_gc_done(void *data, int r, const struct gc_report *rep)
{
	cli_write_gc_result(the_store, r, rep);
}

static void on_usr1(int sig)
{
	if (the_vfs)
		vfs_request_gc(the_vfs);
}

static void on_remote_report(void *data, const char *msg)
{
	log_warn("remote: %s", msg);
}

/* Traces younger than this feed the prefetch at mount. */
#define PREFETCH_TRACE_AGE_S (7 * 24 * 3600)

static bool unreachable(int r)
{
	return r == -ECONNREFUSED || r == -EHOSTUNREACH || r == -ENETUNREACH || r == -ETIMEDOUT ||
	       r == -EIO;
}

/*
 * With a remote: merge what others pushed, and list what earlier jobs read. A remote that cannot
 * be reached does not stop the mount: it comes up with what is here, and says so. A remote that
 * is misconfigured (bad URL, credentials refused, other chunk sizes) does.
 */
static int open_remote(struct mount_args *a, struct store *st, struct remote **ret,
		       uint64_t **ret_prefetch, size_t *ret_n)
{
	struct remote_options ro = {.timeout_ms = a->remote_timeout_s * 1000};
	/* --remote "" is the store's own, as for push and pull; "none" is none. */
	const char *url = a->remote && *a->remote ? a->remote : store_remote(st);
	bool first = !*store_remote(st);
	struct sync_report rep;
	char err[512] = "";
	int64_t t0;
	int r;

	*ret = NULL;
	/* An untrusted job's store must never push nor export, whoever mounts it next, with a
	 * remote or without (sync.h, trust tiers). */
	if (a->no_push) {
		r = sync_mark_untrusted(st);
		if (r < 0) {
			report(1, "cannot mark store %s untrusted: %s", a->store, strerror(-r));
			return r;
		}
	}
	/* Pulls made later without a mount follow this mount's choice. */
	r = sync_set_keep_suid(st, a->keep_suid);
	if (r < 0) {
		report(1, "cannot record keep_suid in store %s: %s", a->store, strerror(-r));
		return r;
	}
	if (!*url || !strcmp(url, "none"))
		return 0;
	/* S3 keys live in this process's memory from now on: no core dumps, no ptrace by
	 * others of the same uid. */
	if (!strncmp(url, "s3://", 5))
		prctl(PR_SET_DUMPABLE, 0);
	cli_tls_options(st, url, &a->tls, &ro);
	r = remote_open(url, &ro, ret, err, sizeof(err));
	if (r < 0) {
		report(1, "remote: %s", *err ? err : strerror(-r));
		return r;
	}
	r = sync_check_remote(st, *ret, SYNC_REMOTE_BIND | (a->no_push ? 0 : SYNC_REMOTE_CREATE),
			      err, sizeof(err));
	/* The first remote a store is mounted with becomes its default, for push and pull, with
	 * the TLS files it was mounted with; not one that was refused. */
	if (first && (r == 0 || unreachable(r)) && cli_record_remote(st, url, &ro) < 0)
		log_warn("cannot record remote %s in the config of %s", url, a->store);
	t0 = mono_ns();
	if (r == 0)
		r = sync_pull(st, *ret, &(struct sync_options){.bad_catalog = cli_bad_catalog},
			      &rep);
	if (r == 0) {
		log_info("pull from %s at mount: %" PRIu64 " new catalogs, %" PRIu64
			 " entries merged in %.1f s",
			 remote_url(*ret), rep.catalogs_read, rep.applied,
			 (double)(mono_ns() - t0) / 1e9);
		if (sync_recent_reads(st, *ret, PREFETCH_TRACE_AGE_S, ret_prefetch, ret_n) < 0)
			*ret_n = 0;
		return 0;
	}
	if (unreachable(r)) {
		snprintf(mount_note, sizeof(mount_note),
			 "remote %s is unreachable (%s): mounted with what is local; reads of "
			 "data only there fail until it is back, writes are pushed later (check "
			 "the URL, the network and the server)",
			 remote_url(*ret), *err ? err : remote_last_error());
		log_warn("pull from %s at mount failed: %s", remote_url(*ret), mount_note);
		return 0;
	}
	{
		const char *hint = cli_remote_hint(r, url);

		report(1, "remote %s: %s%s%s (or mount with --remote none)", remote_url(*ret),
		       *err ? err : strerror(-r), hint ? "; " : "", hint ? hint : "");
	}
	remote_free(*ret);
	*ret = NULL;
	return r;
}

/*
 * What this session moved to and from the remote, in STORE/remote-stats (key=value lines), for
 * `pkgcachefs stats` and for tests that count bytes; read_wait_us is the time readers spent
 * blocked on the remote, summed over the readers.
 */
static void write_remote_stats(const char *store, struct vfs *v, struct remote *rem)
{
	struct remote_counters rc;
	struct fetcher_stats fs;
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	vfs_fetch_stats(v, &fs);
	remote_get_counters(rem, &rc);
	f = open_memstream(&text, &len);
	if (!f)
		return;
	fprintf(f,
		"remote=%s\nfetched_chunks=%" PRIu64 "\nfetched_bytes=%" PRIu64
		"\nfetch_wire_bytes=%" PRIu64 "\nfetch_failures=%" PRIu64 "\nbytes_in=%" PRIu64
		"\nbytes_out=%" PRIu64 "\nrequests=%" PRIu64 "\nrequest_failures=%" PRIu64
		"\nconnects=%" PRIu64 "\nconnect_us=%" PRIu64 "\ntls_us=%" PRIu64
		"\nfirst_byte_us=%" PRIu64 "\nrequest_us=%" PRIu64 "\nread_wait_us=%" PRIu64 "\n",
		remote_url(rem), fs.chunks, fs.bytes, fs.wire_bytes, fs.failures, rc.bytes_in,
		rc.bytes_out, rc.requests, rc.failures, rc.connects, rc.connect_us, rc.tls_us,
		rc.first_byte_us, rc.total_us, fs.wait_ns / 1000);
	if (fclose(f) == 0)
		store_replace_file(store, "remote-stats", text, len, false);
	free(text);
}

/* The daemon proper: runs in the child (or in the foreground). Returns the exit status. */
/* Open and lock the daemon's store; on failure say why and what to do, and return -1. */
static int open_daemon_store(const struct mount_args *a, struct store **ret)
{
	pid_t owner = 0;
	int r;

	r = store_open(a->store, STORE_CREATE | STORE_LOCK, ret, &owner);
	if (r == -EBUSY) {
		char other[4096];

		if (cli_store_mountpoint(a->store, other, sizeof(other)))
			report(1,
			       "store %s is locked: pkgcachefs pid %d serves it on %s, and one "
			       "daemon "
			       "serves a store (pkgcachefs umount %s first, or use another "
			       "--store)",
			       a->store, (int)owner, other, other);
		else
			report(1,
			       "store %s is locked by another pkgcachefs process (pid %d): one "
			       "daemon per store (stop it first, or use another --store)",
			       a->store, (int)owner);
		return -1;
	}
	if (r == -EPROTO) {
		report(1,
		       "store %s was written by a newer pkgcachefs (this one, %s, reads store "
		       "format %d): upgrade pkgcachefs to mount it, or use another --store",
		       a->store, PKGCACHEFS_VERSION, STORE_FORMAT_VERSION);
		return -1;
	}
	if (r == -EUCLEAN) {
		report(1, "store %s: config or index is damaged; run pkgcachefs fsck --store %s",
		       a->store, a->store);
		return -1;
	}
	if (r == -EPERM) {
		char why[PATH_MAX + 128] =
			"a file or directory in it is a symbolic link, not ours, "
			"or writable by others";

		store_check_dir(a->store, why, sizeof(why));
		report(1,
		       "refusing store %s: %s (another user could swap its files: chown it to the "
		       "user running pkgcachefs, chmod go-w)",
		       a->store, why);
		return -1;
	}
	if (r < 0) {
		report(1, "cannot open store %s: %s", a->store, strerror(-r));
		return -1;
	}
	return 0;
}

/* Readers keep a descriptor per pack open: a big store needs more than 1024. */
static void raise_nofile_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * Make the_session for v with the user's options and mount it on the mountpoint, with libfuse's
 * signal handlers. On failure say why and return -1; the_session is then NULL or unmounted, for
 * the caller to destroy.
 */
static int mount_session(const struct mount_args *a, struct vfs *v, struct fuse_args *fargs)
{
	char opts[8192];

	/* nosuid,nodev whatever libfuse's default: what the remote's writers put in the cache must
	 * not gain privileges or open devices here. An explicit -o suid or dev comes later and
	 * wins. */
	snprintf(opts, sizeof(opts),
		 "-ofsname=%s,subtype=pkgcachefs,default_permissions,nosuid,nodev%s%s", a->store,
		 a->fuse_opts && a->fuse_opts[0] ? "," : "", a->fuse_opts ? a->fuse_opts : "");
	if (fuse_opt_add_arg(fargs, "pkgcachefs") || fuse_opt_add_arg(fargs, opts) ||
	    (a->debug && fuse_opt_add_arg(fargs, "-d"))) {
		report(1, "out of memory");
		return -1;
	}
	the_session = fuse_session_new(fargs, &pkgcachefs_ops, sizeof(pkgcachefs_ops), v);
	if (!the_session) {
		report(1,
		       "unknown or bad mount option in '%s' (libfuse says which above; "
		       "`pkgcachefs mount --help` lists ours)",
		       a->fuse_opts ? a->fuse_opts : "");
		return -1;
	}
	if (fuse_session_mount(the_session, a->mountpoint) != 0) {
		report(1,
		       "cannot mount on %s (the reason is above, from fusermount3 or the kernel): "
		       "a non-root user needs write access to the mountpoint and fusermount3 "
		       "installed setuid root; in a container, add --device /dev/fuse --cap-add "
		       "SYS_ADMIN",
		       a->mountpoint);
		return -1;
	}
	/* libfuse's handlers interrupt the loop's reads (no SA_RESTART): TERM, INT and HUP
	 * unmount cleanly, committing everything, as umount does. */
	if (fuse_set_signal_handlers(the_session) != 0) {
		report(1, "cannot install signal handlers");
		fuse_session_unmount(the_session);
		return -1;
	}
	return 0;
}

/*
 * With the mount up: the remote and stats threads, then the import of what the mount hides
 * (underfd, when not -1). On failure say why and return -1, for the caller to unmount.
 */
static int start_serving(struct mount_args *a, struct vfs *v, struct remote *rem,
			 uint64_t **prefetch, size_t nprefetch, int underfd)
{
	the_vfs = v;
	signal(SIGUSR1, on_usr1);
	/* Started without a remote too: it answers `pkgcachefs push` with "no remote". */
	if (cli_rdaemon_start(v, a->store, rem ? a->push_interval_s : 0, rem && !a->no_push,
			      rem ? remote_url(rem) : NULL, *prefetch, nprefetch) < 0) {
		report(1, "cannot start the remote thread");
		return -1;
	}
	*prefetch = NULL; /* the remote thread owns it */
	if (stats_daemon_start(v, a->store, rem ? remote_url(rem) : "", a->metrics_file,
			       a->metrics_s,
			       a->vo.commit_interval_ms ? a->vo.commit_interval_ms : 1000) < 0)
		log_warn("cannot start the stats thread: read counters and the metrics file stay "
			 "as they are");
	log_info("mounted store %s on %s%s%s", a->store, a->mountpoint, rem ? ", remote " : "",
		 rem ? remote_url(rem) : "");

	if (underfd >= 0) {
		pthread_t waiter;

		/* Imported through the mount once it serves; the waiter reports the outcome. */
		adopt_pid = cli_adopt_start(underfd, a->mountpoint);
		if (adopt_pid < 0 || pthread_create(&waiter, NULL, adopt_waiter, a) != 0) {
			report(1, "cannot import the existing files of %s", a->mountpoint);
			return -1;
		}
		pthread_detach(waiter);
	} else {
		report(0, mount_note[0] ? "%s" : NULL, mount_note);
	}
	return 0;
}

static int run_daemon(struct mount_args *a)
{
	struct fuse_args fargs = FUSE_ARGS_INIT(0, NULL);
	struct loop_stats ls = {0};
	struct store *st = NULL;
	struct vfs *v = NULL;
	struct remote *rem = NULL;
	uint64_t *prefetch = NULL;
	size_t nprefetch = 0;
	int underfd = -1, lockfd;
	int r, status = 1;

	if (a->log_level >= 0)
		log_threshold = (enum log_level)a->log_level;
	else if (a->debug)
		log_threshold = LOG_LVL_DEBUG;
	raise_nofile_limit();
	if (open_daemon_store(a, &st) < 0)
		return 1;
	store_write_pid(st);
	r = open_remote(a, st, &rem, &prefetch, &nprefetch);
	if (r < 0) {
		store_close(st);
		return 1;
	}
	a->vo.remote = rem;
	a->vo.remote_report = on_remote_report;
	/* For tools/bench/remote-bench.sh only: the fetch order before opened files went first. */
	a->vo.open_prefetch_last = getenv("PKGCACHEFS_BENCH_OPEN_PREFETCH_LAST") != NULL;
	a->vo.evicted = on_evicted;
	a->vo.gc_request_size = on_gc_request_size;
	a->vo.gc_done = on_gc_done;
	the_store = a->store;
	r = vfs_open(st, &a->vo, &v);
	if (r < 0) {
		report(1, "cannot start on store %s: %s", a->store, strerror(-r));
		store_close(st);
		remote_free(rem);
		free(prefetch);
		return 1;
	}

	r = dir_is_empty(a->mountpoint);
	if (r == 0) {
		if (!a->adopt) {
			report(1,
			       "mountpoint %s is not empty (drop --no-adopt to import its files)",
			       a->mountpoint);
			goto out_vfs;
		}
		/* Keep a handle on what the mount will hide, to import it once mounted. */
		underfd = open(a->mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}

	if (mount_session(a, v, &fargs) < 0) {
		if (!the_session)
			goto out_vfs;
		goto out_session;
	}
	if (start_serving(a, v, rem, &prefetch, nprefetch, underfd) < 0) {
		fuse_session_unmount(the_session);
		goto out_session;
	}
	live_set_session(the_session);
	r = loop_run(the_session, 16, a->spin_us, &ls);
	live_set_session(NULL);
	dump_op_counts(&ls);
	fuse_remove_signal_handlers(the_session);
	fuse_session_unmount(the_session);
	signal(SIGUSR1, SIG_IGN);
	log_info("unmounted %s; making the store durable", a->mountpoint);
	/* No read comes any more: the read counters are final. */
	stats_daemon_stop();
	/* What this job wrote goes to the remote before the store is released. */
	cli_rdaemon_stop(true);
	the_vfs = NULL;
	/* A signal stops the loop with 0: a clean stop, like umount. */
	status = r < 0 ? 1 : 0;
	if (r < 0)
		log_error("the FUSE loop failed: %s", strerror(-r));
out_session:
	fuse_session_destroy(the_session);
	the_session = NULL;
out_vfs:
	if (underfd >= 0)
		close(underfd);
	/*
	 * `pkgcachefs umount` waits for the store lock, then reads the exit status: keep the lock
	 * (a dup of its descriptor) until the status is written.
	 */
	lockfd = dup(store_lock_fd(st));
	stats_daemon_stop();
	cli_rdaemon_stop(false);
	if (rem)
		write_remote_stats(a->store, v, rem);
	r = vfs_close(v);
	remote_free(rem);
	free(prefetch);
	if (r < 0) {
		log_error("store %s: final sync failed: %s", a->store, strerror(-r));
		status = 1;
	}
	cli_write_exit_status(a->store, status);
	if (status == 0)
		log_info("store %s closed cleanly", a->store);
	if (lockfd >= 0)
		close(lockfd);
	fuse_opt_free_args(&fargs);
	return status;
}

static int do_mount(struct mount_args *a);

static int cmd_mount(int argc, char **argv)
{
	struct mount_args a = {0};
	int status;

	status = parse_mount_args(argc, argv, &a);
	if (status == 0)
		status = do_mount(&a);
	free(a.store);
	free(a.mountpoint);
	free(a.fuse_opts);
	free(a.metrics_file);
	return status;
}

static uint64_t tree_total;

static int add_bytes(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (flag == FTW_F && S_ISREG(st->st_mode))
		tree_total += (uint64_t)st->st_size;
	return 0;
}

/* Bytes of the regular files below path (not crossing into other filesystems). */
static uint64_t tree_bytes(const char *path)
{
	tree_total = 0;
	nftw(path, add_bytes, 64, FTW_PHYS | FTW_MOUNT);
	return tree_total;
}

/*
 * While the daemon adopts the directory, show how much of it the store holds (its committed
 * logical bytes, read through a read-only look at the index) until the daemon reports.
 */
static void show_adopt_progress(int fd, const char *store, uint64_t total)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	while (poll(&p, 1, 500) == 0) {
		struct idx_stats s;
		struct store *st;

		if (store_open(store, 0, &st, NULL) < 0)
			continue;
		if (idx_get_stats(store_idx(st), &s) == 0)
			cli_show_progress("adopt", MIN(s.logical_bytes, total), total);
		store_close(st);
	}
	cli_show_progress("adopt", total, total);
	fputc('\n', stderr);
}

static int do_mount(struct mount_args *ap)
{
	struct mount_args a = *ap;
	uint64_t adopt_total = 0;
	int pfd[2], status;
	char buf[1024];
	ssize_t n;
	pid_t pid;

	if (check_fuse_device() < 0)
		return 1;
	if (cli_is_pkgcachefs_mount(a.mountpoint)) {
		fprintf(stderr,
			"pkgcachefs: %s is busy: a pkgcachefs mount is already there "
			"(pkgcachefs umount %s first)\n",
			a.mountpoint, a.mountpoint);
		return 1;
	}
	if (geteuid() != 0 && !have_fusermount()) {
		fprintf(stderr,
			"pkgcachefs: fusermount3 not found: a non-root user mounts through it; "
			"install the fuse3 package (Debian, Ubuntu: sudo apt-get install fuse3; "
			"Fedora: sudo dnf install fuse3), or mount as root\n");
		return 1;
	}
	if (geteuid() != 0 && wants_allow_other(a.fuse_opts) && !user_allow_other()) {
		fprintf(stderr,
			"pkgcachefs: -o allow_other is refused for a non-root user: /etc/fuse.conf "
			"lacks the line user_allow_other. Add it (echo user_allow_other | sudo tee "
			"-a /etc/fuse.conf), or mount as root, or drop allow_other\n");
		return 1;
	}
	if (a.foreground)
		return run_daemon(&a);
	/* Adopting a non-empty directory copies it through the mount: worth a progress line. */
	if (a.adopt && isatty(2) && dir_is_empty(a.mountpoint) == 0)
		adopt_total = tree_bytes(a.mountpoint);

	if (pipe2(pfd, O_CLOEXEC) < 0) {
		perror("pkgcachefs: pipe");
		return 1;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		perror("pkgcachefs: fork");
		return 1;
	}
	if (pid == 0) {
		int devnull;

		close(pfd[0]);
		report_fd = pfd[1];
		setsid();
		if (chdir("/") < 0)
			_exit(1);
		devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (devnull >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 1);
			/* stderr follows once the mount is reported (see report()). */
			stderr_null = devnull;
		}
		log_use_syslog(true);
		/* exit, not _exit: sanitizers report at exit. */
		exit(run_daemon(&a));
	}
	close(pfd[1]);
	if (adopt_total)
		show_adopt_progress(pfd[0], a.store, adopt_total);
	n = read(pfd[0], buf, sizeof(buf) - 1);
	close(pfd[0]);
	if (n <= 0) {
		waitpid(pid, &status, 0);
		fprintf(stderr, "pkgcachefs: the daemon died while mounting (status %d)\n", status);
		return 1;
	}
	buf[n] = '\0';
	if (buf[0] != 0) {
		fprintf(stderr, "pkgcachefs: %s\n", buf + 1);
		waitpid(pid, &status, 0);
		return 1;
	}
	if (buf[1])
		fprintf(stderr, "pkgcachefs: %s\n", buf + 1);
	return 0;
}

static void usage(FILE *f)
{
	fputs("usage: pkgcachefs COMMAND [ARGS]\n"
	      "\n"
	      "A deduplicating, persistent FUSE filesystem for package-manager caches.\n"
	      "\n"
	      "commands:\n"
	      "  mount [--store DIR] [--remote URL] [-o OPTS] [-f] MOUNTPOINT\n"
	      "                                                  mount a store (created if new)\n"
	      "  umount MOUNTPOINT                               make everything durable, unmount\n"
	      "  stats [--store DIR] [--json]                    files, bytes, dedup ratio\n"
	      "  report [--store DIR] [--json | --markdown]      a job's reads, fetches, pushes\n"
	      "  fsck [--store DIR] [--repair]                   check the index against the "
	      "packs\n"
	      "  gc [--store DIR] [--max-size SIZE]              reclaim space, evict LRU files\n"
	      "  gc --remote URL [--keep-days N]                 retention and gc of a remote\n"
	      "  push [--store DIR] [--remote URL]               upload what the remote lacks\n"
	      "  pull [--store DIR] [--remote URL] [--metadata-only]\n"
	      "                                                  merge and fetch from the remote\n"
	      "  remote [--store DIR] [URL | --clear]            show or set the default remote\n"
	      "  export [--store DIR] [--since BASE] FILE        the store as one bundle file\n"
	      "  import [--store DIR] FILE                       add a bundle's files\n"
	      "\n"
	      "`pkgcachefs COMMAND --help` tells more. Docs: README.md, docs/operations.md.\n",
	      f);
}

int main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "--version")) {
		printf("pkgcachefs %s\n", PKGCACHEFS_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "mount"))
		return cmd_mount(argc - 1, argv + 1);
	if (!strcmp(cmd, "umount") || !strcmp(cmd, "unmount"))
		return cli_umount(argc - 1, argv + 1);
	if (!strcmp(cmd, "stats"))
		return cli_stats(argc - 1, argv + 1);
	if (!strcmp(cmd, "report"))
		return cli_report(argc - 1, argv + 1);
	if (!strcmp(cmd, "fsck"))
		return cli_fsck(argc - 1, argv + 1);
	if (!strcmp(cmd, "gc"))
		return cli_gc(argc - 1, argv + 1);
	if (!strcmp(cmd, "push"))
		return cli_push(argc - 1, argv + 1);
	if (!strcmp(cmd, "pull"))
		return cli_pull(argc - 1, argv + 1);
	if (!strcmp(cmd, "remote"))
		return cli_remote(argc - 1, argv + 1);
	if (!strcmp(cmd, "export"))
		return cli_export(argc - 1, argv + 1);
	if (!strcmp(cmd, "import"))
		return cli_import(argc - 1, argv + 1);
	fprintf(stderr, "pkgcachefs: unknown command '%s' (`pkgcachefs --help` lists them)\n\n",
		cmd);
	usage(stderr);
	return 2;
}
