/* SPDX-License-Identifier: MIT */
/*
 * iojournal: an LD_PRELOAD shim for the power-loss crash test (powerloss.sh). Test code only.
 *
 * It interposes the libc calls by which the daemon (and the SQLite library it links) changes
 * files under one directory, the store ($PCF_IOJ_ROOT), and appends one record per operation,
 * with the bytes written, to a journal ($PCF_IOJ_JOURNAL). replay.py rebuilds from the journal
 * the store as a power loss at any point would have left it.
 *
 * Ordering.  One mutex orders the journal: a data or namespace operation is performed and
 * recorded while it is held, so the journal order is an order the operations really took
 * effect in. A sync records SYNC_BEGIN under the mutex, runs unlocked (other threads go on),
 * then records SYNC_END with the same token: it covers every operation recorded before its
 * SYNC_BEGIN on the same file (or directory), and nothing concurrent with it. The journal is
 * opened O_APPEND, one writev per record, so the test's writer can append MARK records to it
 * (what its fsyncs made durable) in the same order.
 *
 * Identity.  Records carry st_ino; CREATE says that name now holds a new inode (an O_CREAT
 * open that made the file, checked under the mutex before the call), so replay.py can tell
 * a reused inode number from the old file.
 *
 * Not captured: stores through mmap (SQLite's -shm; msync is only recorded), stdio writes
 * (fopen'ed status files), writes through io_uring or by other processes. Record layout:
 * 56-byte header (magic "IOJ1", u32 type, u64 ino, off, len, token, u32 plen, p2len, dlen,
 * flags), then path, path2 (relative to the root) and data.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
	R_WRITE = 1, R_TRUNC, R_CREATE, R_RENAME, R_UNLINK, R_MKDIR, R_RMDIR, R_SYNC_BEGIN,
	R_SYNC_END, R_MMAP, R_MSYNC, R_SFR, R_FALLOC, R_MARK, R_OTHER
};

struct hdr {
	char magic[4];
	uint32_t type;
	uint64_t ino, off, len, token;
	uint32_t plen, p2len, dlen, flags;
};

static pthread_mutex_t mu = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static int jfd = -2;
static char root[PATH_MAX];
static size_t rootlen;
static uint64_t next_token = 1;

#define REAL(name) static __typeof__(name) *real_##name
#define GET(name) ((__typeof__(real_##name))resolve((void **)&real_##name, #name))

static void *resolve(void **p, const char *name)
{
	if (!*p)
		*p = dlsym(RTLD_NEXT, name);
	return *p;
}

/* Declared here: the build may or may not see the 64-bit aliases in the headers. */
int open64(const char *, int, ...);
int openat64(int, const char *, int, ...);
ssize_t pwrite64(int, const void *, size_t, off_t);
ssize_t pwritev64(int, const struct iovec *, int, off_t);
int ftruncate64(int, off_t);
int __open_2(const char *, int);
int __open64_2(const char *, int);
int __openat_2(int, const char *, int);
int __openat64_2(int, const char *, int);

REAL(open); REAL(open64); REAL(openat); REAL(openat64);
REAL(write); REAL(pwrite); REAL(pwrite64); REAL(writev); REAL(pwritev); REAL(pwritev64);
REAL(ftruncate); REAL(ftruncate64); REAL(rename); REAL(renameat); REAL(renameat2);
REAL(unlink); REAL(unlinkat); REAL(mkdir); REAL(mkdirat); REAL(rmdir);
REAL(fsync); REAL(fdatasync); REAL(sync_file_range); REAL(msync); REAL(fallocate);
REAL(mmap); REAL(mmap64);

static int raw_write_all(int fd, const struct iovec *iov, int n)
{
	/* The journal itself is written with the system call, never through ourselves. */
	struct iovec v[8];
	size_t total = 0, done = 0;

	memcpy(v, iov, sizeof(*iov) * (size_t)n);
	for (int i = 0; i < n; i++)
		total += v[i].iov_len;
	while (done < total) {
		ssize_t w = syscall(SYS_writev, fd, v, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += (size_t)w;
		if (done == total)
			break;
		/* A short write to a regular file: continue (only on a full disk). */
		size_t skip = (size_t)w;
		for (int i = 0; i < n; i++) {
			size_t k = skip < v[i].iov_len ? skip : v[i].iov_len;
			v[i].iov_base = (char *)v[i].iov_base + k;
			v[i].iov_len -= k;
			skip -= k;
		}
	}
	return 0;
}

static void init(void)
{
	const char *j, *r;

	if (jfd != -2)
		return;
	jfd = -1;
	j = getenv("PCF_IOJ_JOURNAL");
	r = getenv("PCF_IOJ_ROOT");
	if (!j || !r || !realpath(r, root))
		return;
	rootlen = strlen(root);
	jfd = (int)syscall(SYS_openat, AT_FDCWD, j, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
}

/* Path of fd relative to the root, or NULL when it is not under it. buf: PATH_MAX. */
static const char *fd_rel(int fd, char *buf)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, PATH_MAX - 1);
	if (n < 0)
		return NULL;
	buf[n] = 0;
	if (strncmp(buf, root, rootlen) != 0)
		return NULL;
	if (buf[rootlen] == 0)
		return ".";
	if (buf[rootlen] != '/')
		return NULL;
	return buf + rootlen + 1;
}

/* dirfd + path made absolute (not normalised beyond that), relative to the root, or NULL. */
static const char *at_rel(int dirfd, const char *path, char *buf)
{
	char tmp[PATH_MAX];

	if (path[0] == '/') {
		snprintf(tmp, sizeof(tmp), "%s", path);
	} else if (dirfd == AT_FDCWD) {
		if (!getcwd(tmp, sizeof(tmp)))
			return NULL;
		size_t l = strlen(tmp);
		snprintf(tmp + l, sizeof(tmp) - l, "/%s", path);
	} else {
		char link[64];
		ssize_t n;

		snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
		n = readlink(link, tmp, sizeof(tmp) - 1);
		if (n < 0)
			return NULL;
		tmp[n] = 0;
		snprintf(tmp + n, sizeof(tmp) - (size_t)n, "/%s", path);
	}
	/* Drop "./" components, which our daemon does not use but SQLite might. */
	{
		char *s;
		while ((s = strstr(tmp, "/./")))
			memmove(s, s + 2, strlen(s + 2) + 1);
	}
	if (strncmp(tmp, root, rootlen) != 0 || tmp[rootlen] != '/')
		return NULL;
	snprintf(buf, PATH_MAX, "%s", tmp + rootlen + 1);
	return buf;
}

static void emit(uint32_t type, uint64_t ino, uint64_t off, uint64_t len, uint64_t token,
		 uint32_t flags, const char *p, const char *p2, const struct iovec *data, int ndata)
{
	struct hdr h = {.magic = {'I', 'O', 'J', '1'}, .type = type, .ino = ino, .off = off,
			.len = len, .token = token, .flags = flags};
	struct iovec v[8];
	int n = 0;
	size_t dl = 0;

	if (jfd < 0)
		return;
	for (int i = 0; i < ndata; i++)
		dl += data[i].iov_len;
	h.plen = p ? (uint32_t)strlen(p) : 0;
	h.p2len = p2 ? (uint32_t)strlen(p2) : 0;
	h.dlen = (uint32_t)dl;
	v[n++] = (struct iovec){&h, sizeof(h)};
	if (h.plen)
		v[n++] = (struct iovec){(void *)p, h.plen};
	if (h.p2len)
		v[n++] = (struct iovec){(void *)p2, h.p2len};
	for (int i = 0; i < ndata && n < 8; i++)
		v[n++] = data[i];
	if (raw_write_all(jfd, v, n) < 0) {
		/* A journal that misses records would make the test lie: stop the daemon. */
		abort();
	}
}

/* Truncates the iovecs to the first `len` bytes (what a short write really wrote). */
static int clip(const struct iovec *in, int n, size_t len, struct iovec *out)
{
	int k = 0;

	for (int i = 0; i < n && len > 0 && k < 6; i++) {
		size_t l = in[i].iov_len < len ? in[i].iov_len : len;
		out[k++] = (struct iovec){in[i].iov_base, l};
		len -= l;
	}
	return k;
}

static void log_write(int fd, off_t off, const struct iovec *iov, int n, ssize_t w)
{
	char buf[PATH_MAX];
	const char *rel;
	struct stat st;
	struct iovec c[6];
	int k;

	if (w <= 0 || !(rel = fd_rel(fd, buf)) || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return;
	if (n > 6) {
		/* Flatten: the daemon never writes with more than a few iovecs. */
		char *flat = malloc((size_t)w);
		size_t pos = 0;
		if (!flat)
			abort();
		for (int i = 0; i < n && pos < (size_t)w; i++) {
			size_t l = iov[i].iov_len < (size_t)w - pos ? iov[i].iov_len : (size_t)w - pos;
			memcpy(flat + pos, iov[i].iov_base, l);
			pos += l;
		}
		struct iovec one = {flat, (size_t)w};
		emit(R_WRITE, st.st_ino, (uint64_t)off, (uint64_t)w, 0, 0, rel, NULL, &one, 1);
		free(flat);
		return;
	}
	k = clip(iov, n, (size_t)w, c);
	emit(R_WRITE, st.st_ino, (uint64_t)off, (uint64_t)w, 0, 0, rel, NULL, c, k);
}

/* The offset a write() at the file position lands at. Called with the mutex held. */
static off_t cur_off(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	struct stat st;

	if (fl >= 0 && (fl & O_APPEND) && fstat(fd, &st) == 0)
		return st.st_size;
	return lseek(fd, 0, SEEK_CUR);
}

static int do_open(int dirfd, const char *path, int flags, mode_t mode, int which)
{
	char buf[PATH_MAX];
	const char *rel;
	struct stat st;
	int existed = 1, fd;

	init();
	if (jfd < 0 || !(flags & (O_CREAT | O_TRUNC)) || !(rel = at_rel(dirfd, path, buf))) {
		switch (which) {
		case 0: return GET(open)(path, flags, mode);
		case 1: return GET(open64)(path, flags, mode);
		case 2: return GET(openat)(dirfd, path, flags, mode);
		default: return GET(openat64)(dirfd, path, flags, mode);
		}
	}
	pthread_mutex_lock(&mu);
	if ((flags & O_CREAT) && fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
		existed = 0;
	switch (which) {
	case 0: fd = GET(open)(path, flags, mode); break;
	case 1: fd = GET(open64)(path, flags, mode); break;
	case 2: fd = GET(openat)(dirfd, path, flags, mode); break;
	default: fd = GET(openat64)(dirfd, path, flags, mode); break;
	}
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
		int e = errno;
		if (!existed)
			emit(R_CREATE, st.st_ino, 0, 0, 0, 0, rel, NULL, NULL, 0);
		else if (flags & O_TRUNC)
			emit(R_TRUNC, st.st_ino, 0, 0, 0, 0, rel, NULL, NULL, 0);
		errno = e;
	}
	pthread_mutex_unlock(&mu);
	return fd;
}

#define MODE_ARG                                                                                   \
	mode_t mode = 0;                                                                           \
	if (flags & (O_CREAT | __O_TMPFILE)) {                                                     \
		va_list ap;                                                                        \
		va_start(ap, flags);                                                               \
		mode = va_arg(ap, mode_t);                                                         \
		va_end(ap);                                                                        \
	}

int open(const char *path, int flags, ...) { MODE_ARG; return do_open(AT_FDCWD, path, flags, mode, 0); }
int open64(const char *path, int flags, ...) { MODE_ARG; return do_open(AT_FDCWD, path, flags, mode, 1); }
int openat(int d, const char *path, int flags, ...) { MODE_ARG; return do_open(d, path, flags, mode, 2); }
int openat64(int d, const char *path, int flags, ...) { MODE_ARG; return do_open(d, path, flags, mode, 3); }
int __open_2(const char *path, int flags) { return do_open(AT_FDCWD, path, flags, 0, 0); }
int __open64_2(const char *path, int flags) { return do_open(AT_FDCWD, path, flags, 0, 1); }
int __openat_2(int d, const char *path, int flags) { return do_open(d, path, flags, 0, 2); }
int __openat64_2(int d, const char *path, int flags) { return do_open(d, path, flags, 0, 3); }
int creat(const char *path, mode_t mode) { return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 0); }
int creat64(const char *path, mode_t mode) { return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 1); }

#define WRAP_WRITE(call, offexpr, iovexpr, niov)                                                   \
	ssize_t w;                                                                                 \
	init();                                                                                    \
	if (jfd < 0)                                                                               \
		return call;                                                                       \
	pthread_mutex_lock(&mu);                                                                   \
	off_t o_ = (offexpr);                                                                      \
	w = call;                                                                                  \
	int e_ = errno;                                                                            \
	log_write(fd, o_, iovexpr, niov, w);                                                       \
	pthread_mutex_unlock(&mu);                                                                 \
	errno = e_;                                                                                \
	return w

ssize_t write(int fd, const void *b, size_t n)
{
	struct iovec v = {(void *)b, n};
	if (fd == jfd)
		return syscall(SYS_write, fd, b, n);
	WRAP_WRITE(GET(write)(fd, b, n), cur_off(fd), &v, 1);
}
ssize_t pwrite(int fd, const void *b, size_t n, off_t off)
{
	struct iovec v = {(void *)b, n};
	WRAP_WRITE(GET(pwrite)(fd, b, n, off), off, &v, 1);
}
ssize_t pwrite64(int fd, const void *b, size_t n, off_t off)
{
	struct iovec v = {(void *)b, n};
	WRAP_WRITE(GET(pwrite64)(fd, b, n, off), off, &v, 1);
}
ssize_t writev(int fd, const struct iovec *iov, int n)
{
	WRAP_WRITE(GET(writev)(fd, iov, n), cur_off(fd), iov, n);
}
ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	WRAP_WRITE(GET(pwritev)(fd, iov, n, off), off, iov, n);
}
ssize_t pwritev64(int fd, const struct iovec *iov, int n, off_t off)
{
	WRAP_WRITE(GET(pwritev64)(fd, iov, n, off), off, iov, n);
}

static int do_trunc(int fd, off_t len, int is64)
{
	char buf[PATH_MAX];
	const char *rel;
	struct stat st;
	int r, e;

	init();
	if (jfd < 0)
		return is64 ? GET(ftruncate64)(fd, len) : GET(ftruncate)(fd, len);
	pthread_mutex_lock(&mu);
	r = is64 ? GET(ftruncate64)(fd, len) : GET(ftruncate)(fd, len);
	e = errno;
	if (r == 0 && (rel = fd_rel(fd, buf)) && fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		emit(R_TRUNC, st.st_ino, 0, (uint64_t)len, 0, 0, rel, NULL, NULL, 0);
	pthread_mutex_unlock(&mu);
	errno = e;
	return r;
}
int ftruncate(int fd, off_t len) { return do_trunc(fd, len, 0); }
int ftruncate64(int fd, off_t len) { return do_trunc(fd, len, 1); }

int fallocate(int fd, int mode, off_t off, off_t len)
{
	char buf[PATH_MAX];
	const char *rel;
	struct stat st;
	int r, e;

	init();
	pthread_mutex_lock(&mu);
	r = GET(fallocate)(fd, mode, off, len);
	e = errno;
	if (r == 0 && jfd >= 0 && (rel = fd_rel(fd, buf)) && fstat(fd, &st) == 0)
		emit(R_FALLOC, st.st_ino, (uint64_t)off, (uint64_t)len, 0, (uint32_t)mode, rel,
		     NULL, NULL, 0);
	pthread_mutex_unlock(&mu);
	errno = e;
	return r;
}

/* Namespace operations: performed and recorded under the mutex. */
static int ns_op(int type, int d1, const char *p1, int d2, const char *p2, int r)
{
	/* Called after the operation with its result; only records. */
	char b1[PATH_MAX], b2[PATH_MAX];
	const char *r1, *r2 = NULL;

	if (r != 0 || jfd < 0)
		return r;
	r1 = at_rel(d1, p1, b1);
	if (p2)
		r2 = at_rel(d2, p2, b2);
	if (type == R_RENAME) {
		if (r1 && r2)
			emit(R_RENAME, 0, 0, 0, 0, 0, r1, r2, NULL, 0);
		else if (r1 || r2)
			emit(R_OTHER, 0, 0, 0, 0, 1, r1 ? r1 : "?", r2 ? r2 : "?", NULL, 0);
	} else if (r1) {
		emit((uint32_t)type, 0, 0, 0, 0, 0, r1, NULL, NULL, 0);
	}
	return r;
}

#define NS(type, d1, p1, d2, p2, call)                                                             \
	int r_, e_;                                                                                \
	init();                                                                                    \
	pthread_mutex_lock(&mu);                                                                   \
	r_ = call;                                                                                 \
	e_ = errno;                                                                                \
	ns_op(type, d1, p1, d2, p2, r_);                                                           \
	pthread_mutex_unlock(&mu);                                                                 \
	errno = e_;                                                                                \
	return r_

int rename(const char *a, const char *b) { NS(R_RENAME, AT_FDCWD, a, AT_FDCWD, b, GET(rename)(a, b)); }
int renameat(int da, const char *a, int db, const char *b) { NS(R_RENAME, da, a, db, b, GET(renameat)(da, a, db, b)); }
int renameat2(int da, const char *a, int db, const char *b, unsigned fl) { NS(R_RENAME, da, a, db, b, GET(renameat2)(da, a, db, b, fl)); }
int unlink(const char *a) { NS(R_UNLINK, AT_FDCWD, a, 0, NULL, GET(unlink)(a)); }
int unlinkat(int d, const char *a, int fl) { NS((fl & AT_REMOVEDIR) ? R_RMDIR : R_UNLINK, d, a, 0, NULL, GET(unlinkat)(d, a, fl)); }
int mkdir(const char *a, mode_t m) { NS(R_MKDIR, AT_FDCWD, a, 0, NULL, GET(mkdir)(a, m)); }
int mkdirat(int d, const char *a, mode_t m) { NS(R_MKDIR, d, a, 0, NULL, GET(mkdirat)(d, a, m)); }
int rmdir(const char *a) { NS(R_RMDIR, AT_FDCWD, a, 0, NULL, GET(rmdir)(a)); }

static int do_sync(int fd, int datasync)
{
	char buf[PATH_MAX];
	const char *rel = NULL;
	struct stat st;
	uint64_t tok = 0;
	int r, e;

	init();
	if (jfd >= 0) {
		pthread_mutex_lock(&mu);
		if ((rel = fd_rel(fd, buf)) && fstat(fd, &st) == 0) {
			tok = next_token++;
			emit(R_SYNC_BEGIN, st.st_ino, 0, 0, tok,
			     (S_ISDIR(st.st_mode) ? 1u : 0u) | (datasync ? 2u : 0u), rel, NULL, NULL,
			     0);
		}
		pthread_mutex_unlock(&mu);
	}
	r = datasync ? GET(fdatasync)(fd) : GET(fsync)(fd);
	e = errno;
	if (tok) {
		pthread_mutex_lock(&mu);
		/* A failed sync guarantees nothing: recorded with len 1, replay ignores it. */
		emit(R_SYNC_END, 0, 0, r == 0 ? 0 : 1, tok, 0, NULL, NULL, NULL, 0);
		pthread_mutex_unlock(&mu);
	}
	errno = e;
	return r;
}
int fsync(int fd) { return do_sync(fd, 0); }
int fdatasync(int fd) { return do_sync(fd, 1); }

int sync_file_range(int fd, off_t off, off_t n, unsigned int fl)
{
	char buf[PATH_MAX];
	const char *rel;
	struct stat st;
	int r = GET(sync_file_range)(fd, off, n, fl), e = errno;

	init();
	if (jfd >= 0 && (rel = fd_rel(fd, buf)) && fstat(fd, &st) == 0) {
		pthread_mutex_lock(&mu);
		emit(R_SFR, st.st_ino, (uint64_t)off, (uint64_t)n, 0, fl, rel, NULL, NULL, 0);
		pthread_mutex_unlock(&mu);
	}
	errno = e;
	return r;
}

int msync(void *a, size_t n, int fl)
{
	int r = GET(msync)(a, n, fl), e = errno;

	init();
	if (jfd >= 0) {
		pthread_mutex_lock(&mu);
		emit(R_MSYNC, 0, (uint64_t)(uintptr_t)a, n, 0, (uint32_t)fl, NULL, NULL, NULL, 0);
		pthread_mutex_unlock(&mu);
	}
	errno = e;
	return r;
}

static void note_mmap(void *p, size_t n, int prot, int flags, int fd, off_t off)
{
	char buf[PATH_MAX];
	const char *rel;
	struct stat st;

	if (p == MAP_FAILED || fd < 0 || !(prot & PROT_WRITE) || !(flags & MAP_SHARED))
		return;
	init();
	if (jfd >= 0 && (rel = fd_rel(fd, buf)) && fstat(fd, &st) == 0) {
		pthread_mutex_lock(&mu);
		emit(R_MMAP, st.st_ino, (uint64_t)off, n, 0, (uint32_t)prot, rel, NULL, NULL, 0);
		pthread_mutex_unlock(&mu);
	}
}
void *mmap(void *a, size_t n, int prot, int flags, int fd, off_t off)
{
	void *p = GET(mmap)(a, n, prot, flags, fd, off);
	int e = errno;
	note_mmap(p, n, prot, flags, fd, off);
	errno = e;
	return p;
}
void *mmap64(void *a, size_t n, int prot, int flags, int fd, off_t off)
{
	void *p = GET(mmap64)(a, n, prot, flags, fd, off);
	int e = errno;
	note_mmap(p, n, prot, flags, fd, off);
	errno = e;
	return p;
}
