/* SPDX-License-Identifier: MIT */
/*
 * The subcommands umount, stats, fsck and gc, and the import of a directory's existing files
 * when a mount adopts it. Each prints what it did and chooses the exit status: 0 success,
 * 1 failure (with a message naming the problem), 2 bad usage.
 */
#include "cli.h"
#include "remote.h"
#include "sync.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "maint.h"
#include "stats.h"
#include "store.h"
#include "util.h"

/* ---- shared argument handling ---- */

struct store_args {
	char *store;
	bool json, prometheus, repair;
	uint64_t max_size;
	const char *remote;
	long keep_days, grace_hours;
};

static int parse_store_args(int argc, char **argv, struct store_args *a, const char *usage,
			    const char *shortopts, const struct option *extra)
{
	struct option longopts[8] = {
		{"store", required_argument, NULL, 's'},
		{"help", no_argument, NULL, 'h'},
	};
	int c, n = 2;

	for (const struct option *o = extra; o && o->name && n < 7; o++)
		longopts[n++] = *o;
	optind = 1;
	while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			a->store = optarg;
			break;
		case 'j':
			a->json = true;
			break;
		case 'P':
			a->prometheus = true;
			break;
		case 'r':
			a->repair = true;
			break;
		case 'm':
			if (parse_size(optarg, &a->max_size) < 0 || a->max_size == 0) {
				fprintf(stderr, "pkgcachefs: bad size '%s' (try 10G or 500M)\n",
					optarg);
				return 2;
			}
			break;
		case 'R':
			a->remote = optarg;
			break;
		case 'k':
		case 'g': {
			char *end;
			long v = strtol(optarg, &end, 10);

			if (*end || v < (c == 'k' ? 1 : 0) || v > 36500) {
				fprintf(stderr, "pkgcachefs: bad number '%s'\n", optarg);
				return 2;
			}
			if (c == 'k')
				a->keep_days = v;
			else
				a->grace_hours = v;
			break;
		}
		case 'h':
			fputs(usage, stdout);
			exit(0);
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
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

/* Open a store for a subcommand; prints the reason on failure. */
static int open_store(const char *dir, int flags, struct store **ret, bool *ret_live)
{
	pid_t owner = 0;
	int r;

	*ret_live = false;
	r = store_open(dir, flags, ret, &owner);
	if (r < 0) {
		cli_store_error(dir, r, owner);
		return r;
	}
	if (!(flags & STORE_LOCK)) {
		/* Is a daemon writing it? Then checks read one snapshot and skip what it owns. */
		char path[PATH_MAX];
		int fd;

		snprintf(path, sizeof(path), "%s/lock", dir);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			if (flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK)
				*ret_live = true;
			close(fd);
		}
	}
	return 0;
}

/* ---- stats ---- */

static const char stats_usage[] =
	"usage: pkgcachefs stats [--store DIR] [--json | --prometheus]\n"
	"\n"
	"Files, directories, logical bytes, stored bytes, dedup ratio, chunks, packs, the space\n"
	"gc could reclaim, and reads served locally, fetched from the remote and failed; then the\n"
	"same per top-level directory (each entry under the mount's root: pip, uv, npm, ...).\n"
	"Works while the store is mounted (read counters lag by a second or so).\n"
	"\n"
	"  --json          one JSON object (keys in pkgcachefs-stats(1))\n"
	"  --prometheus    Prometheus text format (a mount can keep such a file: see\n"
	"                  metrics_file in `pkgcachefs mount --help`)\n";

int cli_stats(int argc, char **argv)
{
	static const struct option extra[] = {{"json", no_argument, NULL, 'j'},
					      {"prometheus", no_argument, NULL, 'P'},
					      {NULL, 0, NULL, 0}};
	struct store_args a = {0};
	char remote[STORE_REMOTE_MAX];
	struct stats_report rep;
	struct store *st;
	bool live;
	int r;

	r = parse_store_args(argc, argv, &a, stats_usage, "h", extra);
	if (r)
		return r;
	if (a.json && a.prometheus) {
		fprintf(stderr, "pkgcachefs: stats: --json or --prometheus, not both\n");
		return 2;
	}
	if (open_store(a.store, 0, &st, &live) < 0)
		return 1;
	snprintf(remote, sizeof(remote), "%s", store_remote(st));
	if (!*remote) {
		/* Mounted with --remote: the last session says which. */
		char path[PATH_MAX], line[STORE_REMOTE_MAX + 16];
		FILE *f;

		snprintf(path, sizeof(path), "%s/remote-stats", a.store);
		f = fopen(path, "re");
		if (f && fgets(line, sizeof(line), f) && !strncmp(line, "remote=", 7)) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(remote, sizeof(remote), "%.*s", STORE_REMOTE_MAX - 1, line + 7);
		}
		if (f)
			fclose(f);
	}
	r = stats_collect(a.store, store_idx(st), live, remote, NULL, &rep);
	store_close(st);
	if (r < 0) {
		fprintf(stderr, "pkgcachefs: reading the index of %s: %s\n", a.store, strerror(-r));
		stats_report_release(&rep);
		return 1;
	}
	if (a.json)
		stats_print_json(stdout, &rep);
	else if (a.prometheus)
		stats_print_prometheus(stdout, &rep);
	else
		stats_print_text(stdout, &rep);
	stats_report_release(&rep);
	return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- progress on a terminal ---- */

/* "fsck: 1.2 GiB of 9.8 GiB (12%), 310 MiB/s, 26 s left", at most five times a second. */
void cli_show_progress(void *data, uint64_t done, uint64_t total)
{
	static int64_t start, last;
	int64_t now = mono_ns();
	char b1[32], b2[32], b3[32];
	double secs, rate;

	if (!start)
		start = now;
	if (now - last < 200000000 && done < total)
		return;
	last = now;
	secs = (double)(now - start) / 1e9;
	rate = secs > 0 ? (double)done / secs : 0;
	fprintf(stderr, "\r\033[K%s: %s of %s (%.0f%%), %s/s", (const char *)data,
		format_size(done, b1, sizeof(b1)), format_size(total, b2, sizeof(b2)),
		total ? 100.0 * (double)done / (double)total : 100.0,
		format_size((uint64_t)rate, b3, sizeof(b3)));
	if (rate > 0 && total > done)
		fprintf(stderr, ", %.0f s left", (double)(total - done) / rate);
	fflush(stderr);
}

/* ---- fsck ---- */

static const char fsck_usage[] =
	"usage: pkgcachefs fsck [--store DIR] [--repair]\n"
	"\n"
	"Check that every chunk the index references is in its pack with the right hash, that\n"
	"reference and link counts are right, and that nothing is orphaned. --repair (store not\n"
	"mounted) fixes counts, orphans and leaked packs; damaged data is reported, never "
	"dropped.\n"
	"Exit status: 0 clean, 1 problems remain, 2 usage.\n";

int cli_fsck(int argc, char **argv)
{
	static const struct option extra[] = {{"repair", no_argument, NULL, 'r'},
					      {NULL, 0, NULL, 0}};
	struct store_args a = {0};
	struct fsck_report rep;
	struct store *st;
	bool live;
	int r;

	r = parse_store_args(argc, argv, &a, fsck_usage, "h", extra);
	if (r)
		return r;
	if (open_store(a.store, a.repair ? STORE_LOCK : 0, &st, &live) < 0)
		return 1;
	r = maint_fsck(st, a.repair, live, stdout, &rep, isatty(2) ? cli_show_progress : NULL,
		       (void *)"fsck");
	if (isatty(2))
		fputs("\r\033[K", stderr);
	store_close(st);
	if (r < 0) {
		fprintf(stderr, "pkgcachefs: fsck of %s failed: %s\n", a.store, strerror(-r));
		return 1;
	}
	printf("checked %" PRIu64 " files, %" PRIu64 " chunks, %" PRIu64 " bytes%s\n", rep.inodes,
	       rep.chunks, rep.bytes_checked, live ? " (live snapshot of a mounted store)" : "");
	if (rep.repaired)
		printf("repaired %" PRIu64 " problems\n", rep.repaired);
	if (!fsck_clean(&rep)) {
		printf("%" PRIu64 " problems remain%s\n", rep.unrepaired,
		       a.repair ? "" : " (pkgcachefs fsck --repair fixes counts and leaks)");
		return 1;
	}
	printf("clean\n");
	return 0;
}

/* ---- gc ---- */

static const char gc_usage[] =
	"usage: pkgcachefs gc [--store DIR] [--max-size SIZE]\n"
	"       pkgcachefs gc --remote URL [--keep-days N] [--grace-hours H] [--store DIR]\n"
	"\n"
	"Reclaim the space of data no file uses: packs that are mostly dead are rewritten, dead\n"
	"ones deleted. With --max-size (e.g. 20G), first evict least recently used files until\n"
	"the data fits (with a remote, only local copies of pushed data go: names stay). On a\n"
	"mounted store the daemon does the work (files open are never evicted) and this command\n"
	"waits for it.\n"
	"\n"
	"With --remote, collect the remote instead: files neither written nor read for N days\n"
	"leave the namespace (--keep-days), packs nothing uses are condemned, and packs\n"
	"condemned more than H hours ago (--grace-hours, default 48: longer than any job) and\n"
	"still unused are deleted; then the catalogs are compacted into one.\n";

int cli_read_gc_request(const char *store, uint64_t *ret_max)
{
	char buf[32];
	ssize_t n;
	int fd;

	*ret_max = 0;
	fd = store_openat(store, "gc-request", O_RDONLY | O_NONBLOCK, 0);
	if (fd < 0)
		return fd;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	store_unlinkat(store, "gc-request");
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return parse_size(buf, ret_max);
}

void cli_write_gc_result(const char *store, int r, const struct gc_report *rep)
{
	char buf[256];
	int n;

	n = snprintf(buf, sizeof(buf),
		     "%lld %d %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
		     "\n",
		     (long long)mono_ns(), r, rep->evicted_files, rep->chunks_dropped,
		     rep->packs_deleted, rep->packs_rewritten, rep->bytes_before, rep->bytes_after);
	store_replace_file(store, "gc-result", buf, (size_t)n, false);
}

static int read_gc_result(const char *store, long long *stamp, int *r, struct gc_report *rep)
{
	FILE *f;
	int got, fd;

	fd = store_openat(store, "gc-result", O_RDONLY | O_NONBLOCK, 0);
	if (fd < 0)
		return fd;
	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return -errno;
	}
	got = fscanf(f,
		     "%lld %d %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64,
		     stamp, r, &rep->evicted_files, &rep->chunks_dropped, &rep->packs_deleted,
		     &rep->packs_rewritten, &rep->bytes_before, &rep->bytes_after);
	fclose(f);
	return got == 8 ? 0 : -EIO;
}

/* gc of a mounted store: ask its daemon and wait for the outcome. */
static int gc_mounted(const char *store, uint64_t max_size, struct gc_report *rep)
{
	char buf[32];
	long long before = 0, stamp = 0;
	int n, r = 0;
	pid_t pid;

	if (store_daemon_pid(store, &pid) < 0) {
		fprintf(stderr,
			"pkgcachefs: store %s is locked but no pkgcachefs daemon of it holds the "
			"lock (the pid file names none): nothing signalled\n",
			store);
		return -ESRCH;
	}
	read_gc_result(store, &before, &r, rep);
	if (max_size) {
		n = snprintf(buf, sizeof(buf), "%llu\n", (unsigned long long)max_size);
		r = store_replace_file(store, "gc-request", buf, (size_t)n, false);
		if (r < 0)
			return r;
	}
	if (kill(pid, SIGUSR1) < 0)
		return -errno;
	for (int waited = 0; waited < 36000; waited++) {
		usleep(100000);
		if (read_gc_result(store, &stamp, &r, rep) == 0 && stamp != before)
			return r;
		if (kill(pid, 0) < 0)
			return -ESRCH;
	}
	return -ETIMEDOUT;
}

static int gc_remote(const struct store_args *a)
{
	struct sync_options so = {.bad_catalog = cli_bad_catalog};
	struct sync_gc_report rep;
	struct remote *rem;
	struct store *st;
	char b1[32];
	pid_t owner = 0;
	int rr;

	/* The store gives the chunker parameters the catalogs must match. */
	rr = store_open(a->store, STORE_CREATE, &st, &owner);
	if (rr < 0) {
		cli_store_error(a->store, rr, owner);
		return 1;
	}
	if (cli_open_remote(st, a->remote, NULL, 0, &rem) < 0) { /* gc keeps no local sync state */
		store_close(st);
		return 1;
	}
	rr = sync_gc(st, rem, a->keep_days * 86400, a->grace_hours * 3600, &so, &rep);
	if (rr < 0)
		fprintf(stderr, "pkgcachefs: gc of %s failed: %s (%s); nothing live was deleted\n",
			remote_url(rem), strerror(-rr), remote_last_error());
	else
		printf("gc %s: %" PRIu64 " catalogs, %" PRIu64 " files expired, %" PRIu64
		       " packs condemned, %" PRIu64 " deleted (%s), %" PRIu64 " traces deleted\n",
		       remote_url(rem), rep.catalogs, rep.files_expired, rep.packs_condemned,
		       rep.packs_deleted, format_size(rep.bytes_deleted, b1, sizeof(b1)),
		       rep.traces_deleted);
	remote_free(rem);
	store_close(st);
	return rr < 0 ? 1 : 0;
}

int cli_gc(int argc, char **argv)
{
	static const struct option extra[] = {{"max-size", required_argument, NULL, 'm'},
					      {"remote", required_argument, NULL, 'R'},
					      {"keep-days", required_argument, NULL, 'k'},
					      {"grace-hours", required_argument, NULL, 'g'},
					      {NULL, 0, NULL, 0}};
	struct store_args a = {0};
	struct gc_report rep;
	struct store *st;
	char b1[32], b2[32];
	bool live;
	int r;

	a.grace_hours = 48;
	r = parse_store_args(argc, argv, &a, gc_usage, "h", extra);
	if (r)
		return r;
	if (a.remote)
		return gc_remote(&a);
	if (open_store(a.store, 0, &st, &live) < 0)
		return 1;
	store_close(st);
	if (live) {
		r = gc_mounted(a.store, a.max_size, &rep);
	} else {
		if (open_store(a.store, STORE_LOCK, &st, &live) < 0)
			return 1;
		r = maint_gc(st, a.max_size, isatty(2) ? stderr : NULL, NULL, &rep);
		if (store_close(st) < 0 && r == 0)
			r = -EIO;
	}
	if (r < 0) {
		fprintf(stderr, "pkgcachefs: gc of %s failed: %s (nothing was lost)\n", a.store,
			strerror(-r));
		return 1;
	}
	printf("gc: %" PRIu64 " files evicted, %" PRIu64 " chunks dropped, %" PRIu64
	       " packs deleted, %" PRIu64 " rewritten; packs %s -> %s\n",
	       rep.evicted_files, rep.chunks_dropped, rep.packs_deleted, rep.packs_rewritten,
	       format_size(rep.bytes_before, b1, sizeof(b1)),
	       format_size(rep.bytes_after, b2, sizeof(b2)));
	return 0;
}

/* ---- umount ---- */

static const char umount_usage[] =
	"usage: pkgcachefs umount [--require-push] MOUNTPOINT\n"
	"\n"
	"Make everything written to the mount durable, then unmount it. Exits 0 only when all\n"
	"data is on disk. A mount with a remote pushes at unmount; when that push fails, umount\n"
	"says why and what to change, the data stays in the store for the next push, and the\n"
	"exit status is still 0 (the data is safe here), or 3 with --require-push (for a job\n"
	"whose purpose is to fill the remote).\n";

static int run(const char *prog, const char *a1, const char *a2)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execlp(prog, prog, a1, a2, (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

void cli_write_exit_status(const char *store, int status)
{
	char buf[16];
	int n;

	n = snprintf(buf, sizeof(buf), "%d\n", status);
	store_replace_file(store, "exit-status", buf, (size_t)n, true);
}

int cli_umount(int argc, char **argv)
{
	char store[4096], path[PATH_MAX + 32], buf[16];
	char *mnt;
	int fd, r, waited = 0, status = 0;
	bool require_push = false;
	ssize_t n;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(umount_usage, stdout);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "--require-push")) {
		require_push = true;
		argv++;
		argc--;
	}
	if (argc != 2) {
		fputs(umount_usage, stderr);
		return 2;
	}
	mnt = realpath(argv[1], NULL);
	if (!mnt) {
		/* A dead daemon's mount cannot be stat'ed; use the path as given. */
		mnt = strdup(argv[1]);
	}
	if (!cli_mount_store(mnt, store, sizeof(store))) {
		fprintf(stderr, "pkgcachefs: %s is not a pkgcachefs mount\n", mnt);
		free(mnt);
		return 1;
	}
	store_unlinkat(store, "exit-status");
	r = run("fusermount3", "-u", mnt);
	if (r != 0) {
		fprintf(stderr, "pkgcachefs: cannot unmount %s: %s\n", mnt,
			r == 127 ? "fusermount3 not found (install fuse3)"
				 : "it is busy (a process has files open or its cwd there: see "
				   "`fuser -vm MOUNTPOINT`)");
		free(mnt);
		return 1;
	}
	/* The daemon commits and syncs, then releases the store lock: wait for that. */
	snprintf(path, sizeof(path), "%s/lock", store);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "pkgcachefs: store %s: %s\n", store, strerror(errno));
		free(mnt);
		return 1;
	}
	while (flock(fd, LOCK_SH | LOCK_NB) < 0) {
		if (waited == 50)
			fprintf(stderr,
				"pkgcachefs: waiting for the daemon to finish writing...\n");
		usleep(100000);
		waited++;
	}
	close(fd);
	fd = store_openat(store, "exit-status", O_RDONLY | O_NONBLOCK, 0);
	n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (n <= 0) {
		fprintf(stderr,
			"pkgcachefs: the daemon of %s had died: data written after its last "
			"sync may be lost; run pkgcachefs fsck --store %s\n",
			mnt, store);
		free(mnt);
		return 1;
	}
	buf[n] = '\0';
	if (atoi(buf) != 0) {
		fprintf(stderr,
			"pkgcachefs: the daemon of %s failed to make everything durable; "
			"see the system log\n",
			mnt);
		free(mnt);
		return 1;
	}
	/* The data is safe here either way; but a CI job should hear that the remote lacks it. */
	snprintf(path, sizeof(path), "%s/push-failed", store);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		char why[2048], *hint;

		n = read(fd, why, sizeof(why) - 1);
		close(fd);
		if (n > 0) {
			why[n] = '\0';
			hint = why + strcspn(why, "\n");
			if (*hint)
				*hint++ = '\0';
			hint[strcspn(hint, "\n")] = '\0';
			fprintf(stderr,
				"pkgcachefs: %s: the push at unmount failed: %s%s%s; the data "
				"stays in %s: `pkgcachefs push --store %s` sends it\n",
				require_push ? "error" : "warning", why, *hint ? "; " : "", hint,
				store, store);
			if (require_push)
				status = 3;
		}
	}
	free(mnt);
	return status;
}

/* ---- adopting a non-empty mountpoint ---- */

static int copy_file(int sfd, int dfd)
{
	static char buf[1 << 20];
	off_t off = 0;

	for (;;) {
		ssize_t n = read(sfd, buf, sizeof(buf));

		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		if (pwrite_all(dfd, buf, (size_t)n, off) < 0)
			return -errno;
		off += n;
	}
}

static void copy_meta(int dirfd, const char *name, const struct stat *st)
{
	struct timespec ts[2] = {st->st_atim, st->st_mtim};

	if (fchownat(dirfd, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0)
		log_debug("adopt: chown %s: %s", name, strerror(errno));
	if (!S_ISLNK(st->st_mode))
		fchmodat(dirfd, name, st->st_mode & 07777, 0);
	utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW);
}

/* Copy the tree below src into dst (both directory fds); the originals stay. */
static int adopt_dir(int src, int dst)
{
	DIR *d;
	struct dirent *de;
	int dupfd = dup(src), r = 0;

	if (dupfd < 0)
		return -errno;
	d = fdopendir(dupfd);
	if (!d) {
		close(dupfd);
		return -errno;
	}
	while (r == 0 && (de = readdir(d))) {
		const char *name = de->d_name;
		struct stat st;

		if (!strcmp(name, ".") || !strcmp(name, ".."))
			continue;
		if (fstatat(src, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = -errno;
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			int s2, d2;

			if (mkdirat(dst, name, 0700) < 0 && errno != EEXIST) {
				r = -errno;
				break;
			}
			s2 = openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			d2 = openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (s2 < 0 || d2 < 0) {
				r = -errno;
			} else {
				r = adopt_dir(s2, d2);
			}
			if (s2 >= 0)
				close(s2);
			if (d2 >= 0)
				close(d2);
			if (r == 0)
				copy_meta(dst, name, &st);
		} else if (S_ISREG(st.st_mode)) {
			int sfd = openat(src, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			int dfd = sfd < 0 ? -1
					  : openat(dst, name,
						   O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW |
							   O_CLOEXEC,
						   0600);

			if (sfd < 0 || dfd < 0)
				r = -errno;
			else
				r = copy_file(sfd, dfd);
			if (dfd >= 0 && close(dfd) < 0 && r == 0)
				r = -errno;
			if (sfd >= 0)
				close(sfd);
			if (r == 0)
				copy_meta(dst, name, &st);
		} else if (S_ISLNK(st.st_mode)) {
			char target[PATH_MAX];
			ssize_t n = readlinkat(src, name, target, sizeof(target) - 1);

			if (n < 0) {
				r = -errno;
				break;
			}
			target[n] = '\0';
			unlinkat(dst, name, 0);
			if (symlinkat(target, dst, name) < 0) {
				r = -errno;
				break;
			}
			copy_meta(dst, name, &st);
		} else {
			unlinkat(dst, name, 0);
			if (mknodat(dst, name, st.st_mode, st.st_rdev) < 0) {
				r = -errno;
				break;
			}
			copy_meta(dst, name, &st);
		}
	}
	closedir(d);
	return r;
}

/* Remove everything below the directory open as fd. */
static int remove_tree(int fd)
{
	DIR *d;
	struct dirent *de;
	int dupfd = dup(fd), r = 0;

	if (dupfd < 0)
		return -errno;
	d = fdopendir(dupfd);
	if (!d) {
		close(dupfd);
		return -errno;
	}
	rewinddir(d); /* dup shares the offset, which the copy left at the end */
	while ((de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(fd, de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sub >= 0) {
				remove_tree(sub);
				close(sub);
			}
			if (unlinkat(fd, de->d_name, AT_REMOVEDIR) < 0 && !r)
				r = -errno;
		} else if (unlinkat(fd, de->d_name, 0) < 0 && !r) {
			r = -errno;
		}
	}
	closedir(d);
	return r;
}

pid_t cli_adopt_start(int underfd, const char *mountpoint)
{
	/* The mount is served by this very process: the copy runs in a child, or we deadlock. */
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int mfd = open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		int r;

		if (mfd < 0)
			_exit(EIO);
		/*
		 * Copy everything, make it durable (fsync of a directory on the mount commits and
		 * syncs the whole store), and only then remove the originals: a crash at any point
		 * leaves every file in one place or both.
		 */
		r = adopt_dir(underfd, mfd);
		if (r == 0 && fsync(mfd) < 0)
			r = -errno;
		if (r == 0)
			r = remove_tree(underfd);
		close(mfd);
		_exit(r < 0 ? (-r & 0xff) : 0);
	}
	return pid;
}
