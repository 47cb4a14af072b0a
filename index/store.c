/* SPDX-License-Identifier: MIT */
/*
 * The store directory: layout, config, lock, and the set of packs. See store.h.
 *
 * Read descriptors of packs are kept in a small table indexed by pack id, protected by
 * fds_lock, so that concurrent readers never reopen a pack per read. The active pack writer is
 * used only under the caller's writer lock.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <limits.h>

#include "util.h"

/* Space kept free so the index can always commit and nothing half-written is left behind. */
#define STORE_RESERVE (8ull << 20)

struct store {
	char *dir;
	int dirfd, packsfd, stagingfd, lockfd;
	bool locked; /* we hold the lock, and own daemon.pid */
	struct chunker_params params;
	struct store_remote_cfg remote; /* the config's remote */
	struct idx *idx;

	uint64_t pack_target;       /* seal packs past this size */
	int64_t space_checked;      /* mono ns of the last statvfs; caller's writer lock */
	uint64_t space_avail;       /* bytes free then, less what was appended since */
	struct pack_writer *writer; /* active pack; caller's writer lock */
	uint64_t writer_id;

	pthread_mutex_t fds_lock;
	int *fds; /* fds[id] or -1; fds_lock */
	size_t nfds;
};

char *store_default_dir(void)
{
	const char *env = getenv("PKGCACHEFS_STORE");
	const char *xdg, *home;
	char *p;

	if (env && *env)
		return strdup(env);
	if (geteuid() == 0)
		return strdup("/var/lib/pkgcachefs");
	xdg = getenv("XDG_DATA_HOME");
	if (xdg && *xdg) {
		if (asprintf(&p, "%s/pkgcachefs", xdg) < 0)
			return NULL;
		return p;
	}
	home = getenv("HOME");
	if (!home || !*home)
		return NULL;
	if (asprintf(&p, "%s/.local/share/pkgcachefs", home) < 0)
		return NULL;
	return p;
}

void store_pack_name(uint64_t id, char *buf, size_t len)
{
	snprintf(buf, len, "%016llx.pack", (unsigned long long)id);
}

static int mkdir_p(const char *path, mode_t mode)
{
	char *p = strdup(path), *s;
	int r = 0;

	if (!p)
		return -ENOMEM;
	for (s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			r = -errno;
			goto out;
		}
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		r = -errno;
out:
	free(p);
	return r;
}

/*
 * Like ssh's StrictModes: a directory of the store, and every directory above the store, must
 * belong to us or to root and be writable by nobody else (a world-writable directory with the
 * sticky bit, like /tmp, is fine: others cannot rename or remove what we made in it). Otherwise
 * another user could swap files under a daemon running as root. 0, or -EPERM with the reason.
 */
static int check_dir_stat(const struct stat *sb, char *why, size_t len, const char *what)
{
	uid_t me = geteuid();

	if (!S_ISDIR(sb->st_mode)) {
		snprintf(why, len, "%s is not a directory (a symbolic link?)", what);
		return -EPERM;
	}
	if (sb->st_uid != me && sb->st_uid != 0) {
		snprintf(why, len, "%s belongs to uid %u, not to uid %u or root", what,
			 (unsigned)sb->st_uid, (unsigned)me);
		return -EPERM;
	}
	if ((sb->st_mode & (S_IWGRP | S_IWOTH)) && !(sb->st_mode & S_ISVTX)) {
		snprintf(why, len, "%s is writable by its group or others (mode %04o)", what,
			 (unsigned)(sb->st_mode & 07777));
		return -EPERM;
	}
	return 0;
}

int store_check_dir(const char *dir, char *why, size_t len)
{
	char path[PATH_MAX], *slash;
	struct stat sb;
	int r;

	if (!realpath(dir, path))
		return -errno;
	if (stat(path, &sb) < 0)
		return -errno;
	sb.st_mode &= ~(mode_t)S_ISVTX; /* the store itself gets no sticky-bit excuse */
	r = check_dir_stat(&sb, why, len, path);
	if (r < 0)
		return r;
	while ((slash = strrchr(path, '/'))) {
		if (slash == path)
			slash[1] = '\0';
		else
			*slash = '\0';
		if (stat(path, &sb) < 0)
			return -errno;
		r = check_dir_stat(&sb, why, len, path);
		if (r < 0)
			return r;
		if (slash == path)
			break;
	}
	return 0;
}

/* The same check on a directory of the store open as fd (named name in messages). */
static int check_dirfd(int fd, const char *name)
{
	char why[256];
	struct stat sb;
	int r;

	if (fstat(fd, &sb) < 0)
		return -errno;
	sb.st_mode &= ~(mode_t)S_ISVTX;
	r = check_dir_stat(&sb, why, sizeof(why), name);
	if (r < 0)
		log_msg(LOG_LVL_DEBUG, "store: %s", why);
	return r;
}

int store_openat(const char *dir, const char *name, int flags, mode_t mode)
{
	int dfd, fd, r;

	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	r = check_dirfd(dfd, dir);
	if (r < 0) {
		close(dfd);
		return r;
	}
	fd = openat(dfd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode);
	r = fd < 0 ? -errno : fd;
	if (fd >= 0 && (flags & O_ACCMODE) != O_RDONLY) {
		struct stat sb;

		/* A hard link planted before the directory was ours: never write through it. */
		if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_nlink > 1) {
			close(fd);
			r = -EPERM;
		}
	}
	close(dfd);
	return r;
}

int store_unlinkat(const char *dir, const char *name)
{
	int dfd, r = 0;

	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	if (unlinkat(dfd, name, 0) < 0)
		r = -errno;
	close(dfd);
	return r;
}

int store_replace_file(const char *dir, const char *name, const void *buf, size_t len, bool durable)
{
	char tmp[NAME_MAX + 1];
	int dfd, fd, r;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", name) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	r = check_dirfd(dfd, dir);
	if (r < 0)
		goto out_close_dir;
	/* A leftover (or planted) tmp goes first: O_EXCL never follows or reuses it. */
	unlinkat(dfd, tmp, 0);
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		goto out_close_dir;
	}
	r = pwrite_all(fd, buf, len, 0);
	if (r == 0 && durable && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && renameat(dfd, tmp, dfd, name) < 0)
		r = -errno;
	if (r < 0)
		unlinkat(dfd, tmp, 0);
out_close_dir:
	close(dfd);
	return r;
}

/* Does pid hold the lock file with this device and inode open? Only the daemon does. */
static bool pid_holds(pid_t pid, dev_t dev, ino_t ino)
{
	char path[64];
	struct dirent *de;
	struct stat sb;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return false;
	while (!found && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(d), de->d_name, &sb, 0) == 0 && sb.st_dev == dev &&
		    sb.st_ino == ino)
			found = true;
	}
	closedir(d);
	return found;
}

int store_daemon_pid(const char *dir, pid_t *ret_pid)
{
	char buf[32], *end;
	struct stat lk;
	ssize_t n;
	long pid;
	int fd;

	fd = store_openat(dir, "lock", O_RDONLY, 0);
	if (fd < 0)
		return fd;
	if (fstat(fd, &lk) < 0 || !S_ISREG(lk.st_mode)) {
		close(fd);
		return -ESRCH;
	}
	close(fd);
	fd = store_openat(dir, "daemon.pid", O_RDONLY, 0);
	if (fd < 0)
		return -ESRCH;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
	errno = 0;
	pid = strtol(buf, &end, 10);
	if (errno || end == buf || (*end && *end != '\n') || pid <= 1 || pid > INT_MAX)
		return -ESRCH;
	if (!pid_holds((pid_t)pid, lk.st_dev, lk.st_ino))
		return -ESRCH;
	*ret_pid = (pid_t)pid;
	return 0;
}

/* The config's "remote..." lines: each key of struct store_remote_cfg, in this order. */
static const struct {
	const char *key;
	size_t off;
} remote_keys[] = {
	{"remote", offsetof(struct store_remote_cfg, url)},
	{"remote_ca_file", offsetof(struct store_remote_cfg, ca_file)},
	{"remote_client_cert", offsetof(struct store_remote_cfg, client_cert)},
	{"remote_client_key", offsetof(struct store_remote_cfg, client_key)},
};

static char *remote_field(struct store_remote_cfg *rc, size_t i)
{
	return (char *)rc + remote_keys[i].off;
}

static int write_config(int dirfd, const struct chunker_params *p,
			const struct store_remote_cfg *rc)
{
	char buf[STORE_CONFIG_MAX];
	int fd, n, r = 0;

	n = snprintf(
		buf, sizeof(buf),
		"# pkgcachefs store. The chunker parameters are fixed at creation; the remote\n"
		"# (pkgcachefs remote --store DIR URL) is the default for mount, push and pull.\n"
		"format = %d\nchunk_min = %u\nchunk_avg = %u\nchunk_max = %u\n",
		STORE_FORMAT_VERSION, p->min, p->avg, p->max);
	for (size_t i = 0; i < ARRAY_SIZE(remote_keys); i++) {
		const char *v = remote_field((struct store_remote_cfg *)rc, i);

		if (*v)
			n += snprintf(buf + n, sizeof(buf) - (size_t)n, "%s = %s\n",
				      remote_keys[i].key, v);
	}
	unlinkat(dirfd, "config.tmp", 0);
	fd = openat(dirfd, "config.tmp", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	if (fd < 0)
		return -errno;
	r = pwrite_all(fd, buf, (size_t)n, 0);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && renameat(dirfd, "config.tmp", dirfd, "config") < 0)
		r = -errno;
	if (r == 0 && fsync(dirfd) < 0)
		r = -errno;
	return r;
}

/* A value of struct store_remote_cfg: under STORE_REMOTE_MAX, no whitespace, TLS paths absolute. */
static bool remote_value_ok(size_t i, const char *v)
{
	return strlen(v) < STORE_REMOTE_MAX && !strpbrk(v, " \t\n") &&
	       (i == 0 || v[0] == '/' || v[0] == '\0');
}

/* "remote... = VALUE" into rc: 0, or -EUCLEAN for an unknown key, a repeat or a bad value. */
static int parse_remote_line(const char *line, struct store_remote_cfg *rc)
{
	for (size_t i = 0; i < ARRAY_SIZE(remote_keys); i++) {
		size_t n = strlen(remote_keys[i].key);
		char *f = remote_field(rc, i);

		if (strncmp(line, remote_keys[i].key, n) != 0 || strncmp(line + n, " = ", 3) != 0)
			continue;
		if (*f || !line[n + 3] || !remote_value_ok(i, line + n + 3))
			return -EUCLEAN;
		strcpy(f, line + n + 3);
		return 0;
	}
	return -EUCLEAN;
}

/* The config is untrusted: unknown keys and bad values are errors, not guesses. */
int store_parse_config(const char *text, size_t len, struct chunker_params *p,
		       struct store_remote_cfg *rc)
{
	char buf[STORE_CONFIG_MAX], *line, *save;
	long format = -1;

	memset(p, 0, sizeof(*p));
	memset(rc, 0, sizeof(*rc));
	if (len >= sizeof(buf) - 1)
		return -EUCLEAN;
	memcpy(buf, text, len);
	buf[len] = '\0';
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char key[32];
		unsigned long long v;
		char extra;

		if (line[0] == '#' || line[0] == '\0')
			continue;
		if (strncmp(line, "remote", 6) == 0) {
			if (parse_remote_line(line, rc) < 0)
				return -EUCLEAN;
			continue;
		}
		if (sscanf(line, "%31[a-z_] = %llu %c", key, &v, &extra) != 2 || v > UINT32_MAX)
			return -EUCLEAN;
		if (strcmp(key, "format") == 0)
			format = (long)v;
		else if (strcmp(key, "chunk_min") == 0)
			p->min = (uint32_t)v;
		else if (strcmp(key, "chunk_avg") == 0)
			p->avg = (uint32_t)v;
		else if (strcmp(key, "chunk_max") == 0)
			p->max = (uint32_t)v;
		else
			return -EUCLEAN;
	}
	if (format > STORE_FORMAT_VERSION)
		return -EPROTO;
	if (format != STORE_FORMAT_VERSION || chunker_params_validate(p) < 0)
		return -EUCLEAN;
	return 0;
}

static int read_config(int dirfd, struct chunker_params *p, struct store_remote_cfg *rc)
{
	char buf[STORE_CONFIG_MAX];
	ssize_t n;
	int fd;

	memset(p, 0, sizeof(*p));
	memset(rc, 0, sizeof(*rc));
	fd = openat(dirfd, "config", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP ? -EPERM : -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	return store_parse_config(buf, (size_t)n, p, rc);
}

/* A subdirectory of the store: never a symbolic link, and as safe as the store itself. */
static int open_subdir(int dirfd, const char *name, bool create)
{
	int fd, r;

	if (create && mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
		return -errno;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP || errno == ENOTDIR ? -EPERM : -errno;
	r = check_dirfd(fd, name);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

static int take_lock(struct store *st, pid_t *ret_owner)
{
	char buf[32];
	ssize_t n;
	int fd;

	st->lockfd = openat(st->dirfd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (st->lockfd < 0)
		return errno == ELOOP ? -EPERM : -errno;
	if (flock(st->lockfd, LOCK_EX | LOCK_NB) == 0) {
		st->locked = true;
		return 0;
	}
	if (errno != EWOULDBLOCK)
		return -errno;
	if (ret_owner) {
		*ret_owner = 0;
		fd = openat(st->dirfd, "daemon.pid",
			    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd >= 0) {
			n = read(fd, buf, sizeof(buf) - 1);
			if (n > 0) {
				buf[n] = '\0';
				*ret_owner = (pid_t)atoi(buf);
			}
			close(fd);
		}
	}
	return -EBUSY;
}

/* Remove scratch files left by a crash: their data was never committed. */
static void clear_staging(int fd)
{
	DIR *d;
	struct dirent *de;
	int dfd = dup(fd);

	if (dfd < 0)
		return;
	d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return;
	}
	/* fd was opened O_NOFOLLOW and checked: these are our own scratch files. */
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			unlinkat(fd, de->d_name, 0);
	closedir(d);
}

int store_open(const char *dir, int flags, struct store **ret, pid_t *ret_owner)
{
	bool create = flags & STORE_CREATE;
	struct store *st;
	char path[4096];
	int r;

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->dirfd = st->packsfd = st->stagingfd = st->lockfd = -1;
	pthread_mutex_init(&st->fds_lock, NULL);
	st->dir = strdup(dir);
	if (!st->dir) {
		r = -ENOMEM;
		goto out_free;
	}
	if (create) {
		r = mkdir_p(dir, 0700);
		if (r < 0)
			goto out_free;
	}
	{
		char why[PATH_MAX + 128];

		r = store_check_dir(dir, why, sizeof(why));
		if (r < 0)
			goto out_free;
	}
	st->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->dirfd < 0) {
		r = -errno;
		goto out_free;
	}
	r = check_dirfd(st->dirfd, dir);
	if (r < 0)
		goto out_free;
	if (flags & STORE_LOCK) {
		r = take_lock(st, ret_owner);
		if (r < 0)
			goto out_free;
	}
	r = read_config(st->dirfd, &st->params, &st->remote);
	if (r == -ENOENT && create) {
		/* A new store, or one whose creation was interrupted before config was written. */
		st->params = chunker_default_params;
		r = write_config(st->dirfd, &st->params, &st->remote);
	}
	if (r < 0)
		goto out_free;
	st->packsfd = open_subdir(st->dirfd, "packs", true);
	if (st->packsfd < 0) {
		r = st->packsfd;
		goto out_free;
	}
	st->stagingfd = open_subdir(st->dirfd, "staging", true);
	if (st->stagingfd < 0) {
		r = st->stagingfd;
		goto out_free;
	}
	if (flags & STORE_LOCK)
		clear_staging(st->stagingfd);
	{
		/*
		 * Packs are at most 1/32 of the filesystem, so that gc, which copies a pack's live
		 * chunks before deleting it, can work on a nearly full small disk.
		 */
		struct statvfs sv;
		uint64_t fs = 0;

		if (fstatvfs(st->dirfd, &sv) == 0)
			fs = (uint64_t)sv.f_blocks * sv.f_frsize;
		st->pack_target = MAX(1ull << 20, MIN(STORE_PACK_TARGET, fs / 32));
	}
	snprintf(path, sizeof(path), "%s/index.db", dir);
	r = idx_open(path, true, &st->idx);
	if (r == 0 && st->locked)
		r = idx_cache_inodes(st->idx); /* every change to the index is then ours */
	if (r < 0)
		goto out_free;
	chmod(path, 0600);
	*ret = st;
	return 0;
out_free:
	store_close(st);
	return r;
}

int store_close(struct store *st)
{
	int r = 0;

	if (!st)
		return 0;
	if (st->writer) {
		r = pack_writer_seal(st->writer);
		pack_writer_free(st->writer);
	}
	idx_close(st->idx);
	for (size_t i = 0; i < st->nfds; i++)
		if (st->fds[i] >= 0)
			close(st->fds[i]);
	free(st->fds);
	if (st->locked)
		unlinkat(st->dirfd, "daemon.pid", 0);
	if (st->lockfd >= 0)
		close(st->lockfd);
	if (st->stagingfd >= 0)
		close(st->stagingfd);
	if (st->packsfd >= 0)
		close(st->packsfd);
	if (st->dirfd >= 0)
		close(st->dirfd);
	pthread_mutex_destroy(&st->fds_lock);
	free(st->dir);
	free(st);
	return r;
}

const char *store_dir(const struct store *st)
{
	return st->dir;
}

const char *store_remote(const struct store *st)
{
	return st->remote.url;
}

const struct store_remote_cfg *store_remote_config(const struct store *st)
{
	return &st->remote;
}

int store_set_remote_config(struct store *st, const struct store_remote_cfg *rc)
{
	struct store_remote_cfg c;
	int r;

	memset(&c, 0, sizeof(c));
	/* No TLS files without a URL: clearing the remote clears them. */
	for (size_t i = 0; rc->url[0] && i < ARRAY_SIZE(remote_keys); i++) {
		const char *v = remote_field((struct store_remote_cfg *)rc, i);

		if (!memchr(v, '\0', STORE_REMOTE_MAX) || !remote_value_ok(i, v))
			return -EINVAL;
		strcpy(remote_field(&c, i), v);
	}
	r = write_config(st->dirfd, &st->params, &c);
	if (r == 0)
		st->remote = c;
	return r;
}

const struct chunker_params *store_chunker_params(const struct store *st)
{
	return &st->params;
}

struct idx *store_idx(struct store *st)
{
	return st->idx;
}

int store_staging_fd(const struct store *st)
{
	return st->stagingfd;
}

int store_packs_fd(const struct store *st)
{
	return st->packsfd;
}

int store_lock_fd(const struct store *st)
{
	return st->locked ? st->lockfd : -1;
}

int store_write_pid(struct store *st)
{
	char buf[32];
	int fd, n, r;

	n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	unlinkat(st->dirfd, "daemon.pid", 0);
	fd = openat(st->dirfd, "daemon.pid", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	if (fd < 0)
		return -errno;
	r = pwrite_all(fd, buf, (size_t)n, 0);
	close(fd);
	return r;
}

int store_check_space(struct store *st, uint64_t need)
{
	struct statvfs sv;
	int64_t now = mono_ns();

	/* statvfs at most every 50 ms while there is plenty of room; every time when tight. */
	if (now - st->space_checked > 50000000 || st->space_avail < need + 4 * STORE_RESERVE) {
		if (fstatvfs(st->dirfd, &sv) < 0)
			return -errno;
		st->space_avail = (uint64_t)sv.f_bavail * sv.f_frsize;
		st->space_checked = now;
	}
	if (st->space_avail < need + STORE_RESERVE)
		return -ENOSPC;
	st->space_avail -= MIN(need, st->space_avail);
	return 0;
}

/* Start a new pack. Ids come from the index; a file left by a crash under the same id held
 * only chunks that were never committed, so it is replaced. */
static int start_pack(struct store *st)
{
	char name[32];
	uint64_t id;
	int r;

	r = idx_add_pack(st->idx, &id);
	if (r < 0)
		return r;
	store_pack_name(id, name, sizeof(name));
	r = pack_writer_create(st->packsfd, name, id, &st->writer);
	if (r == -EEXIST) {
		unlinkat(st->packsfd, name, 0);
		r = pack_writer_create(st->packsfd, name, id, &st->writer);
	}
	if (r < 0)
		return r;
	st->writer_id = id;
	return 0;
}

int store_append_chunk(struct store *st, const chunk_key *key, const chunk_digest *digest,
		       const void *data, uint32_t len, uint64_t *ret_pack, struct pack_loc *ret_loc)
{
	int r;

	r = store_check_space(st, (uint64_t)len + 4096);
	if (r < 0)
		return r;
	/*
	 * A rolled-back operation may have taken the active pack's row with it: everything in
	 * that pack was appended by the undone work, so the pack goes too. Appending on would
	 * name a pack the index does not know, which the next mount deletes as a crash leftover.
	 */
	if (st->writer && idx_pack_exists(st->idx, st->writer_id) == 0) {
		char name[32];

		pack_writer_free(st->writer);
		st->writer = NULL;
		store_pack_name(st->writer_id, name, sizeof(name));
		unlinkat(st->packsfd, name, 0);
		st->writer_id = 0;
	}
	if (st->writer && pack_writer_size(st->writer) >= st->pack_target) {
		r = store_seal_active(st);
		if (r < 0)
			return r;
	}
	if (!st->writer) {
		r = start_pack(st);
		if (r < 0)
			return r;
	}
	r = pack_writer_append(st->writer, key, digest, data, len, true, ret_loc);
	if (r < 0)
		return r;
	*ret_pack = st->writer_id;
	return 0;
}

int store_seal_active(struct store *st)
{
	int r;

	if (!st->writer)
		return 0;
	r = idx_set_pack_size(st->idx, st->writer_id, pack_writer_size(st->writer));
	if (r < 0)
		return r;
	r = pack_writer_seal(st->writer);
	pack_writer_free(st->writer);
	st->writer = NULL;
	return r;
}

uint64_t store_active_pack(const struct store *st)
{
	return st->writer ? st->writer_id : 0;
}

int store_sync_packs(struct store *st)
{
	int r;

	if (!st->writer)
		return 0;
	/* Record the active pack's size in the transaction about to commit. */
	r = idx_set_pack_size(st->idx, st->writer_id, pack_writer_size(st->writer));
	return r < 0 ? r : pack_writer_sync(st->writer);
}

int store_open_unsynced_pack(struct store *st)
{
	char name[32];

	if (!pack_writer_unsynced(st->writer))
		return -1;
	/* An open file of its own, not a dup: a write-back error is reported once per open file,
	 * and the writer's own sync must still see one that this descriptor's sync reports. */
	store_pack_name(st->writer_id, name, sizeof(name));
	return openat(st->packsfd, name, O_RDONLY | O_CLOEXEC);
}

static int pack_fd(struct store *st, uint64_t id)
{
	char name[32];
	int fd;

	pthread_mutex_lock(&st->fds_lock);
	if (id < st->nfds && st->fds[id] >= 0) {
		fd = st->fds[id];
		goto out_unlock;
	}
	if (id >= st->nfds) {
		size_t n = MAX((size_t)id + 1, st->nfds * 2);
		int *v = realloc(st->fds, n * sizeof(*v));

		if (!v) {
			fd = -ENOMEM;
			goto out_unlock;
		}
		for (size_t i = st->nfds; i < n; i++)
			v[i] = -1;
		st->fds = v;
		st->nfds = n;
	}
	store_pack_name(id, name, sizeof(name));
	fd = openat(st->packsfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fd = -errno;
	else
		st->fds[id] = fd;
out_unlock:
	pthread_mutex_unlock(&st->fds_lock);
	return fd;
}

int store_read_chunk(struct store *st, uint64_t pack, const struct pack_loc *loc,
		     const chunk_key *key, void *buf, uint32_t raw_len)
{
	int fd;

	if (pack == 0 || pack > (1ull << 40))
		return -EIO;
	fd = pack_fd(st, pack);
	if (fd == -ENOENT)
		return -EIO;
	if (fd < 0)
		return fd;
	return pack_read_chunk(fd, loc, key, buf, raw_len);
}

void store_drop_pack_fds(struct store *st)
{
	pthread_mutex_lock(&st->fds_lock);
	for (size_t i = 0; i < st->nfds; i++) {
		if (st->fds[i] >= 0)
			close(st->fds[i]);
		st->fds[i] = -1;
	}
	pthread_mutex_unlock(&st->fds_lock);
}
