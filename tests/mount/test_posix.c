/* SPDX-License-Identifier: MIT */
/*
 * POSIX behaviour of a mounted filesystem, as package managers rely on it: file data (small,
 * 64 MiB, sparse at far offsets), O_APPEND with concurrent writers, O_EXCL, O_TRUNC, truncation,
 * directories and readdir, symlinks, hard links, special files, permissions, owners, nanosecond
 * times, statvfs, user xattrs, every flavour of rename, unlinked and replaced open files, fsync,
 * flock and fcntl locks, concurrent creators, and the publish patterns of pip and uv.
 *
 * The tests know nothing of pkgcachefs: they run in the directory named by $PKGCACHEFS_TEST_DIR
 * and must pass on ext4, the reference. Each test gets a fresh subdirectory of it, made by the
 * suite's init and made the current directory, so tests use relative paths and never see each
 * other; the fini removes it again. Forked helpers never call Criterion's asserts (those belong
 * to the test process): they print what went wrong and _exit(1), and the test asserts on their
 * exit status.
 *
 * The other_user suite runs only when $PKGCACHEFS_TEST_OTHER_USER names a user and we are root:
 * a child switches to that user with setresuid and checks that it gets exactly what the mode
 * bits grant (the mount needs allow_other for that user to see it at all).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <criterion/logging.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define KiB 1024u
#define MiB (1024u * 1024u)

/* ---- fixture: one fresh directory per test, the current directory while it runs ---- */

static const char *base_dir;    /* $PKGCACHEFS_TEST_DIR */
static char work_dir[PATH_MAX]; /* this test's directory; empty when the test was skipped */

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
	const char *d = getenv("PKGCACHEFS_TEST_DIR");

	if (!d || !*d)
		fprintf(stderr,
			"test_posix: PKGCACHEFS_TEST_DIR is not set: skipping every test. "
			"Set it to a directory on the filesystem to test (an ext4 directory "
			"for the reference run, a mountpoint otherwise), or run through "
			"tests/mount/with-mount.sh.\n");
}

/* A skip that says why on stderr: Criterion shows skip reasons only with --verbose. */
#define skip_test(...)                                                                             \
	do {                                                                                       \
		fprintf(stderr, "[SKIP] %s::%s: ", criterion_current_suite->name,                  \
			criterion_current_test->name);                                             \
		fprintf(stderr, __VA_ARGS__);                                                      \
		fputc('\n', stderr);                                                               \
		cr_skip_test(__VA_ARGS__);                                                         \
	} while (0)

static void setup(void)
{
	work_dir[0] = '\0';
	base_dir = getenv("PKGCACHEFS_TEST_DIR");
	if (!base_dir || !*base_dir)
		cr_skip_test("PKGCACHEFS_TEST_DIR is not set");
	umask(022);
	cr_assert(snprintf(work_dir, sizeof(work_dir), "%s/%s.%s.XXXXXX", base_dir,
			   criterion_current_suite->name,
			   criterion_current_test->name) < (int)sizeof(work_dir));
	if (!mkdtemp(work_dir)) {
		int e = errno;

		work_dir[0] = '\0';
		cr_assert_fail("mkdtemp in PKGCACHEFS_TEST_DIR=%s: %s", base_dir, strerror(e));
	}
	/* mkdtemp makes it 0700; the other_user tests need others to search it. */
	cr_assert_eq(chmod(work_dir, 0755), 0, "chmod %s: %s", work_dir, strerror(errno));
	cr_assert_eq(chdir(work_dir), 0, "chdir %s: %s", work_dir, strerror(errno));
}

static int remove_error; /* errno of the first failed removal in remove_tree() */
static char remove_error_path[PATH_MAX];

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (remove(path) < 0 && !remove_error) {
		remove_error = errno;
		snprintf(remove_error_path, sizeof(remove_error_path), "%s", path);
	}
	return 0;
}

/* Removes a tree (not following symlinks); 0 or the errno of the first failure. */
static int remove_tree(const char *path)
{
	remove_error = 0;
	if (nftw(path, remove_one, 32, FTW_DEPTH | FTW_PHYS) < 0 && !remove_error)
		remove_error = errno;
	return remove_error;
}

static void teardown(void)
{
	int e;

	if (!work_dir[0])
		return;
	if (chdir(base_dir) < 0) {
		cr_log_error("chdir %s: %s", base_dir, strerror(errno));
		return;
	}
	/* An error log makes the run fail: a tree that cannot be removed is a bug too. */
	e = remove_tree(work_dir);
	if (e)
		cr_log_error("%s::%s: removing its directory failed at %s: %s",
			     criterion_current_suite->name, criterion_current_test->name,
			     remove_error_path, strerror(e));
}

/* ---- assertions on system calls ---- */

static const char *errname(int e)
{
	const char *n = e ? strerrorname_np(e) : "no error";

	return n ? n : "unknown errno";
}

/* Fails the test, naming the call and its errno, when a call returned -1; else returns r. */
static long check_call(long r, const char *call, int line)
{
	int e = errno;

	cr_assert(r != -1, "line %d: %s failed: %s (%s)", line, call, errname(e), strerror(e));
	return r;
}

#define CHECK(expr) check_call((long)(expr), #expr, __LINE__)

/* Asserts that a call returns -1 with errno err. */
#define FAILS_WITH(err, expr)                                                                      \
	do {                                                                                       \
		errno = 0;                                                                         \
		long r_ = (long)(expr);                                                            \
		int e_ = errno;                                                                    \
		cr_assert(r_ == -1 && e_ == (err), "%s: expected -1 with %s, got %ld with %s",     \
			  #expr, errname(err), r_, r_ == -1 ? errname(e_) : "no error");           \
	} while (0)

/* In a forked child: say what went wrong and exit; Criterion's asserts are the parent's. */
#define CHILD_CHECK(cond, ...)                                                                     \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			int e_ = errno;                                                            \
			fprintf(stderr, "child %d: %s:%d: ", (int)getpid(), __FILE__, __LINE__);   \
			fprintf(stderr, __VA_ARGS__);                                              \
			fprintf(stderr, " (errno %s)\n", errname(e_));                             \
			_exit(1);                                                                  \
		}                                                                                  \
	} while (0)

/* Waits for n children; each must exit 0. */
static void wait_children(const pid_t *pids, int n, const char *what)
{
	for (int i = 0; i < n; i++) {
		int status;

		cr_assert_eq(waitpid(pids[i], &status, 0), pids[i], "waitpid: %s", strerror(errno));
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			  "%s %d (pid %d) %s %d (its messages are above)", what, i, (int)pids[i],
			  WIFEXITED(status) ? "exited" : "was killed by signal",
			  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	}
}

/* ---- data helpers ---- */

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/*
 * The byte at file offset off of pattern seed: every 8-byte word differs, so a block written at
 * the wrong offset, a torn block or stale data all show up.
 */
static void fill_pattern(void *buf, size_t len, uint64_t seed, uint64_t off)
{
	uint8_t *p = buf;
	uint64_t w = mix64(seed * 0x100000001b3ull ^ (off >> 3));

	for (size_t i = 0; i < len; i++) {
		uint64_t o = off + i;

		if ((o & 7) == 0)
			w = mix64(seed * 0x100000001b3ull ^ (o >> 3));
		p[i] = (uint8_t)(w >> ((o & 7) * 8));
	}
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	cr_assert_not_null(p, "malloc(%zu)", n);
	return p;
}

static void *pattern(size_t len, uint64_t seed)
{
	void *p = xmalloc(len);

	fill_pattern(p, len, seed, 0);
	return p;
}

/* Byte-by-byte comparison that names the first differing offset. */
static void assert_bytes(const char *what, const void *got, const void *want, size_t len,
			 uint64_t base)
{
	const uint8_t *g = got, *w = want;

	if (!memcmp(g, w, len))
		return;
	for (size_t i = 0; i < len; i++)
		cr_assert(g[i] == w[i],
			  "%s: first difference at offset %" PRIu64 ": 0x%02x, expected "
			  "0x%02x (%zu bytes compared)",
			  what, base + i, g[i], w[i], len);
}

static void assert_zero(const char *what, const void *got, size_t len, uint64_t base)
{
	const uint8_t *g = got;

	for (size_t i = 0; i < len; i++)
		cr_assert(g[i] == 0,
			  "%s: byte at offset %" PRIu64 " is 0x%02x, expected 0 (a hole)", what,
			  base + i, g[i]);
}

static void write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		cr_assert(n > 0, "write of %zu bytes: %s", len,
			  n < 0 ? strerror(errno) : "returned 0");
		p += n;
		len -= (size_t)n;
	}
}

static void pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, off);

		cr_assert(n > 0, "pwrite of %zu bytes at %jd: %s", len, (intmax_t)off,
			  n < 0 ? strerror(errno) : "returned 0");
		p += n;
		off += n;
		len -= (size_t)n;
	}
}

/* Reads up to len bytes at off, stopping only at EOF; returns how many were read. */
static size_t pread_full(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, off + (off_t)done);

		cr_assert(n >= 0, "pread of %zu bytes at %jd: %s", len - done,
			  (intmax_t)(off + (off_t)done), strerror(errno));
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return done;
}

static void write_file(const char *path, const void *buf, size_t len, mode_t mode)
{
	int fd = CHECK(open(path, O_WRONLY | O_CREAT | O_TRUNC, mode));

	write_all(fd, buf, len);
	CHECK(close(fd));
}

static void write_str(const char *path, const char *s)
{
	write_file(path, s, strlen(s), 0644);
}

/* Asserts that fd holds exactly want[0..len) from offset 0 to EOF. */
static void assert_fd_content(int fd, const char *what, const void *want, size_t len)
{
	char *got = xmalloc(len + 1);
	size_t n = pread_full(fd, got, len + 1, 0);

	cr_assert(n == len, "%s: %zu bytes read back, expected %zu", what, n, len);
	assert_bytes(what, got, want, len, 0);
	free(got);
}

/* Asserts that path holds exactly want[0..len), by read() and by its st_size. */
static void assert_content(const char *path, const void *want, size_t len)
{
	struct stat st;
	int fd = CHECK(open(path, O_RDONLY));

	CHECK(fstat(fd, &st));
	cr_assert_eq(st.st_size, (off_t)len, "%s: st_size %jd, expected %zu", path,
		     (intmax_t)st.st_size, len);
	assert_fd_content(fd, path, want, len);
	CHECK(close(fd));
}

static void assert_str(const char *path, const char *s)
{
	assert_content(path, s, strlen(s));
}

static struct stat xlstat(const char *path)
{
	struct stat st;

	CHECK(lstat(path, &st));
	return st;
}

static struct stat xstat(const char *path)
{
	struct stat st;

	CHECK(stat(path, &st));
	return st;
}

static void assert_absent(const char *path)
{
	struct stat st;

	FAILS_WITH(ENOENT, lstat(path, &st));
}

static struct timespec now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts;
}

static int64_t ts_ns(struct timespec ts)
{
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The kernel stamps times from a coarse clock, up to a tick behind CLOCK_REALTIME. */
static void assert_time_between(const char *what, struct timespec t, struct timespec lo,
				struct timespec hi)
{
	int64_t v = ts_ns(t), l = ts_ns(lo) - 1000000000, h = ts_ns(hi) + 1000000000;

	cr_assert(v >= l && v <= h,
		  "%s is %jd.%09ld, not within a second of the call (%jd.%09ld .. "
		  "%jd.%09ld)",
		  what, (intmax_t)t.tv_sec, t.tv_nsec, (intmax_t)lo.tv_sec, lo.tv_nsec,
		  (intmax_t)hi.tv_sec, hi.tv_nsec);
}

static int renameat2_(const char *from, const char *to, unsigned int flags)
{
	return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, flags);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

TestSuite(files, .init = setup, .fini = teardown, .timeout = 300);
TestSuite(append, .init = setup, .fini = teardown, .timeout = 300);
TestSuite(trunc, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(dirs, .init = setup, .fini = teardown, .timeout = 300);
TestSuite(links, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(special, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(attrs, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(times, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(xattr, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(rename, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(open, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(sync, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(locks, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(concurrency, .init = setup, .fini = teardown, .timeout = 300);
TestSuite(clients, .init = setup, .fini = teardown, .timeout = 300);
TestSuite(other_user, .init = setup, .fini = teardown, .timeout = 120);

/* ---- regular files ---- */

Test(files, small)
{
	static const char hello[] = "hello, world\n";
	static const size_t sizes[] = {1, 7, 4095, 4096, 4097, 65535, 65536, 65537, 131073};
	char buf[64], name[32];
	struct stat st;
	int fd;

	fd = CHECK(open("f", O_RDWR | O_CREAT | O_EXCL, 0644));
	CHECK(fstat(fd, &st));
	cr_assert(S_ISREG(st.st_mode), "mode 0%o is not a regular file", st.st_mode);
	cr_assert_eq(st.st_mode & 07777, 0644, "mode 0%o, expected 0644", st.st_mode & 07777);
	cr_assert_eq(st.st_size, 0);
	cr_assert_eq(st.st_nlink, 1);
	cr_assert_eq(st.st_uid, geteuid(), "st_uid %u, expected %u", st.st_uid, geteuid());
	cr_assert_eq(st.st_gid, getegid(), "st_gid %u, expected %u", st.st_gid, getegid());

	write_all(fd, hello, sizeof(hello) - 1);
	cr_assert_eq(read(fd, buf, sizeof(buf)), 0, "read at EOF must return 0");
	cr_assert_eq(pread(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(hello) - 1);
	assert_bytes("pread", buf, hello, sizeof(hello) - 1, 0);
	cr_assert_eq(pread(fd, buf, sizeof(buf), 100), 0, "pread past EOF must return 0");
	pwrite_all(fd, "HELLO", 5, 0);
	CHECK(close(fd));
	assert_str("f", "HELLO, world\n");

	/* An empty file, and files around page and 64 KiB boundaries. */
	CHECK(close(CHECK(open("empty", O_WRONLY | O_CREAT | O_EXCL, 0644))));
	assert_content("empty", "", 0);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		void *p = pattern(sizes[i], i + 1);

		snprintf(name, sizeof(name), "s%zu", sizes[i]);
		write_file(name, p, sizes[i], 0644);
		assert_content(name, p, sizes[i]);
		free(p);
	}
}

Test(files, tiny_writes_and_reads)
{
	/* Byte-at-a-time writes, then 7-byte reads: small requests must not lose or reorder data.
	 */
	const size_t len = 20000;
	uint8_t *p = pattern(len, 77), *got = xmalloc(len);
	size_t done = 0;
	int fd;

	fd = CHECK(open("f", O_WRONLY | O_CREAT | O_TRUNC, 0644));
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(write(fd, p + i, 1), 1, "1-byte write %zu: %s", i, strerror(errno));
	CHECK(close(fd));
	fd = CHECK(open("f", O_RDONLY));
	for (;;) {
		ssize_t n = read(fd, got + done, done + 7 <= len ? 7 : len - done + 1);

		cr_assert(n >= 0, "read: %s", strerror(errno));
		if (n == 0)
			break;
		done += (size_t)n;
		cr_assert(done <= len, "read more than the %zu bytes written", len);
	}
	CHECK(close(fd));
	cr_assert_eq(done, len, "read %zu bytes, expected %zu", done, len);
	assert_bytes("f", got, p, len, 0);
	free(p);
	free(got);
}

Test(files, large_64mib)
{
	const size_t len = 64 * MiB;
	static const size_t chunk[] = {MiB, 4096, 128 * KiB + 13, 3 * MiB - 7, 64 * KiB + 1000};
	uint8_t *p = pattern(len, 64), *got = xmalloc(len);
	size_t off = 0, n;
	struct stat st;
	int fd;

	fd = CHECK(open("big", O_WRONLY | O_CREAT | O_TRUNC, 0644));
	for (int i = 0; off < len; i++) {
		n = chunk[i % 5] < len - off ? chunk[i % 5] : len - off;
		write_all(fd, p + off, n);
		off += n;
	}
	CHECK(fsync(fd));
	CHECK(close(fd));
	st = xstat("big");
	cr_assert_eq(st.st_size, (off_t)len, "st_size %jd, expected %zu", (intmax_t)st.st_size,
		     len);

	/* Sequential read in odd-sized pieces. */
	fd = CHECK(open("big", O_RDONLY));
	off = 0;
	for (;;) {
		ssize_t r = read(fd, got + off, off + MiB - 3 <= len ? MiB - 3 : len - off + 1);

		cr_assert(r >= 0, "read at %zu: %s", off, strerror(errno));
		if (r == 0)
			break;
		off += (size_t)r;
		cr_assert(off <= len, "read more than the %zu bytes written", len);
	}
	cr_assert_eq(off, len, "read back %zu bytes, expected %zu", off, len);
	assert_bytes("big, sequential read", got, p, len, 0);

	/* Random preads. */
	srand(64);
	for (int i = 0; i < 200; i++) {
		size_t o = ((size_t)rand() * 4099u) % len, l = (size_t)rand() % (256 * KiB) + 1;

		if (o + l > len)
			l = len - o;
		cr_assert_eq(pread_full(fd, got, l, (off_t)o), l);
		assert_bytes("big, pread", got, p + o, l, o);
	}
	CHECK(close(fd));

	/* Overwrite 1 MiB in the middle at an unaligned offset, then read everything again. */
	fd = CHECK(open("big", O_RDWR));
	off = 33 * MiB + 5;
	fill_pattern(p + off, MiB, 65, off);
	pwrite_all(fd, p + off, MiB, (off_t)off);
	CHECK(close(fd));
	fd = CHECK(open("big", O_RDONLY));
	cr_assert_eq(pread_full(fd, got, len + 1, 0), len);
	assert_bytes("big after overwriting 1 MiB at 33 MiB + 5", got, p, len, 0);
	CHECK(close(fd));
	free(p);
	free(got);
}

/*
 * Writes blocks at far offsets of a new file, past 32 bits; the file's size follows the last
 * block, the blocks read back and every byte between them reads as zero.
 */
static void sparse_check(const off_t *offs, const size_t *lens, int n)
{
	uint8_t *data[8], *got = xmalloc(256 * KiB);
	off_t end = offs[n - 1] + (off_t)lens[n - 1], mid;
	struct stat st;
	int fd;

	cr_assert(n <= 8);
	fd = CHECK(open("sparse", O_RDWR | O_CREAT | O_TRUNC, 0644));
	for (int i = 0; i < n; i++) {
		data[i] = pattern(lens[i], 100 + (uint64_t)i);
		pwrite_all(fd, data[i], lens[i], offs[i]);
	}
	CHECK(fstat(fd, &st));
	cr_assert_eq(st.st_size, end, "st_size %jd, expected %jd", (intmax_t)st.st_size,
		     (intmax_t)end);
	CHECK(fsync(fd));
	CHECK(close(fd));

	fd = CHECK(open("sparse", O_RDONLY));
	CHECK(fstat(fd, &st));
	cr_assert_eq(st.st_size, end, "st_size %jd after reopening, expected %jd",
		     (intmax_t)st.st_size, (intmax_t)end);
	for (int i = 0; i < n; i++) {
		cr_assert_eq(pread_full(fd, got, lens[i], offs[i]), lens[i]);
		assert_bytes("data at a far offset", got, data[i], lens[i], (uint64_t)offs[i]);
	}
	/* Each hole: at its start, in its middle, at its end, and straddling into the data. */
	for (int i = 0; i + 1 < n; i++) {
		off_t hs = offs[i] + (off_t)lens[i], he = offs[i + 1];

		if (he - hs < 256 * KiB)
			continue;
		mid = hs + (he - hs) / 2;
		cr_assert_eq(pread_full(fd, got, 256 * KiB, hs), 256 * KiB);
		assert_zero("start of a hole", got, 256 * KiB, (uint64_t)hs);
		cr_assert_eq(pread_full(fd, got, 256 * KiB, mid), 256 * KiB);
		assert_zero("middle of a hole", got, 256 * KiB, (uint64_t)mid);
		cr_assert_eq(pread_full(fd, got, 256 * KiB, he - 256 * KiB), 256 * KiB);
		assert_zero("end of a hole", got, 256 * KiB, (uint64_t)(he - 256 * KiB));
		cr_assert_eq(pread_full(fd, got, 2000, he - 1000), 2000);
		assert_zero("hole before data", got, 1000, (uint64_t)(he - 1000));
		assert_bytes("data after a hole", got + 1000, data[i + 1], 1000, (uint64_t)he);
	}
	cr_assert_eq(pread(fd, got, 100, end), 0, "pread at EOF must return 0");
	cr_assert_eq(pread(fd, got, 100, end + 12345), 0, "pread past EOF must return 0");
	cr_assert_eq(pread_full(fd, got, 100, end - 10), 10, "pread across EOF returns the tail");
	CHECK(close(fd));

	/* Filling a little of a hole leaves the rest of it zero. */
	mid = offs[n - 2] + (off_t)lens[n - 2] + (offs[n - 1] - offs[n - 2]) / 2;
	fd = CHECK(open("sparse", O_RDWR));
	pwrite_all(fd, "in the hole", 11, mid + 1);
	cr_assert_eq(pread_full(fd, got, 64 * KiB, mid), 64 * KiB);
	cr_assert_eq(got[0], 0);
	assert_bytes("write into a hole", got + 1, "in the hole", 11, (uint64_t)mid + 1);
	assert_zero("rest of the hole", got + 12, 64 * KiB - 12, (uint64_t)mid + 12);
	CHECK(fstat(fd, &st));
	cr_assert_eq(st.st_size, end, "a write inside the file changed st_size");
	CHECK(close(fd));
	for (int i = 0; i < n; i++)
		free(data[i]);
	free(got);
}

Test(files, sparse_far_offsets)
{
	static const off_t offs[] = {0, (1ll << 30) + 12345, (4ll << 30) + 3};
	static const size_t lens[] = {4096, 10000, 5000};

	sparse_check(offs, lens, 3);
}

Test(files, sparse_1tib)
{
	/*
	 * The same 1 TiB away: holes must cost nothing, neither space nor time (a filesystem that
	 * walks the hole byte by byte on fsync takes many minutes here).
	 */
	static const off_t offs[] = {0, (4ll << 30) + 3, (1ll << 40) + 7};
	static const size_t lens[] = {4096, 5000, 3000};

	sparse_check(offs, lens, 3);
}

Test(files, two_fds_coherent)
{
	char buf[16];
	int a = CHECK(open("f", O_RDWR | O_CREAT | O_EXCL, 0644));
	int b = CHECK(open("f", O_RDWR));

	write_all(a, "0123456789", 10);
	cr_assert_eq(pread(b, buf, sizeof(buf), 0), 10,
		     "a write through one fd must be visible "
		     "through another at once");
	assert_bytes("second fd", buf, "0123456789", 10, 0);
	pwrite_all(b, "AB", 2, 4);
	cr_assert_eq(pread(a, buf, sizeof(buf), 0), 10);
	assert_bytes("first fd", buf, "0123AB6789", 10, 0);
	CHECK(close(a));
	CHECK(close(b));
}

Test(files, identical_contents_stay_independent)
{
	/*
	 * Files with the same bytes (which a deduplicating store keeps once) are still separate
	 * files: changing, truncating or removing one leaves the others as they were.
	 */
	const size_t len = 4 * MiB + 123;
	uint8_t *p = pattern(len, 41), *q = pattern(len, 41);
	int fd;

	write_file("a", p, len, 0644);
	write_file("b", p, len, 0644);
	write_file("c", p, len, 0644);
	fd = CHECK(open("a", O_RDWR));
	pwrite_all(fd, "changed", 7, 2 * MiB + 1);
	CHECK(fsync(fd));
	CHECK(close(fd));
	memcpy(q + 2 * MiB + 1, "changed", 7);
	assert_content("a", q, len);
	assert_content("b", p, len);
	CHECK(truncate("b", MiB));
	assert_content("b", p, MiB);
	assert_content("c", p, len);
	CHECK(unlink("a"));
	CHECK(unlink("b"));
	assert_content("c", p, len);
	free(p);
	free(q);
}

Test(files, copy_file_range_and_sendfile)
{
	/* What cp, Rust's std::fs::copy (uv) and Python's shutil.copyfile use. */
	const size_t len = 3 * MiB + 17;
	uint8_t *p = pattern(len, 51);
	off_t off = 0;
	size_t done = 0;
	int in, out;

	write_file("src", p, len, 0644);
	in = CHECK(open("src", O_RDONLY));
	out = CHECK(open("sendfile", O_WRONLY | O_CREAT | O_EXCL, 0644));
	while (done < len) {
		ssize_t n = sendfile(out, in, &off, len - done);

		cr_assert(n > 0, "sendfile at %zu: %s", done,
			  n < 0 ? strerror(errno) : "returned 0");
		done += (size_t)n;
	}
	CHECK(close(out));
	assert_content("sendfile", p, len);

	out = CHECK(open("cfr", O_WRONLY | O_CREAT | O_EXCL, 0644));
	loff_t ioff = 0;

	done = 0;
	while (done < len) {
		ssize_t n = copy_file_range(in, &ioff, out, NULL, len - done, 0);

		if (n < 0 && done == 0 &&
		    (errno == EOPNOTSUPP || errno == EXDEV || errno == ENOSYS)) {
			/* Allowed: the callers fall back to read/write. */
			fprintf(stderr, "[NOTE] copy_file_range: %s; callers fall back\n",
				errname(errno));
			goto out;
		}
		cr_assert(n > 0, "copy_file_range at %zu: %s", done,
			  n < 0 ? strerror(errno) : "returned 0 before the end");
		done += (size_t)n;
	}
	CHECK(close(out));
	assert_content("cfr", p, len);
	out = -1;
out:
	if (out >= 0)
		CHECK(close(out));
	CHECK(close(in));
	free(p);
}

Test(files, posix_fallocate)
{
	uint8_t *want = xmalloc(MiB);
	int fd, r;

	fd = CHECK(open("f", O_RDWR | O_CREAT | O_EXCL, 0644));
	write_all(fd, "head", 4);
	r = posix_fallocate(fd, 0, MiB);
	cr_assert_eq(r, 0, "posix_fallocate: %s", strerror(r));
	memset(want, 0, MiB);
	memcpy(want, "head", 4);
	assert_fd_content(fd, "after posix_fallocate", want, MiB);
	CHECK(close(fd));
	assert_content("f", want, MiB);
	free(want);
}

/* ---- O_APPEND, O_EXCL, O_TRUNC ---- */

Test(append, basic)
{
	int a, b;

	write_str("f", "abc");
	a = CHECK(open("f", O_WRONLY | O_APPEND));
	CHECK(lseek(a, 0, SEEK_SET));
	write_all(a, "def", 3);
	cr_assert_eq(lseek(a, 0, SEEK_CUR), 6, "after an O_APPEND write the offset is the new EOF");
	assert_str("f", "abcdef");

	/* Another open file description extends the file: appends go after its data. */
	b = CHECK(open("f", O_WRONLY));
	pwrite_all(b, "XYZ", 3, 10);
	write_all(a, "gh", 2);
	assert_content("f", "abcdef\0\0\0\0XYZgh", 15);
	CHECK(close(a));
	CHECK(close(b));
}

#define APPEND_WRITERS 4
#define APPEND_RECORDS 500
#define APPEND_REC 100

static void append_record(char *rec, int w, int r)
{
	int n = snprintf(rec, APPEND_REC, "writer %d record %04d ", w, r);

	memset(rec + n, 'a' + w, APPEND_REC - 1 - (size_t)n);
	rec[APPEND_REC - 1] = '\n';
}

Test(append, concurrent_writers)
{
	/*
	 * 4 processes, each with its own open file description, append 500 fixed-size records to
	 * one file with one write() per record: each write lands whole at the end of the file, so
	 * no record is lost, torn or interleaved, and each writer's records keep their order.
	 */
	pid_t pids[APPEND_WRITERS];
	int go[2], seen[APPEND_WRITERS][APPEND_RECORDS] = {{0}}, last[APPEND_WRITERS];
	const size_t total = (size_t)APPEND_WRITERS * APPEND_RECORDS * APPEND_REC;
	char *buf = xmalloc(total + 1), rec[APPEND_REC];
	int fd;

	CHECK(close(CHECK(open("log", O_WRONLY | O_CREAT | O_EXCL, 0644))));
	CHECK(pipe(go));
	for (int w = 0; w < APPEND_WRITERS; w++) {
		pids[w] = CHECK(fork());
		if (pids[w] == 0) {
			char c;

			close(go[1]);
			fd = open("log", O_WRONLY | O_APPEND);
			CHILD_CHECK(fd >= 0, "open log");
			CHILD_CHECK(read(go[0], &c, 1) == 0, "waiting for the start");
			for (int r = 0; r < APPEND_RECORDS; r++) {
				append_record(rec, w, r);
				ssize_t n = write(fd, rec, APPEND_REC);

				CHILD_CHECK(n == APPEND_REC,
					    "writer %d record %d: write returned %zd", w, r, n);
			}
			CHILD_CHECK(close(fd) == 0, "close");
			_exit(0);
		}
	}
	close(go[0]);
	close(go[1]); /* all writers start now */
	wait_children(pids, APPEND_WRITERS, "writer");

	fd = CHECK(open("log", O_RDONLY));
	cr_assert_eq(pread_full(fd, buf, total + 1, 0), total, "log does not hold %zu bytes",
		     total);
	CHECK(close(fd));
	for (int w = 0; w < APPEND_WRITERS; w++)
		last[w] = -1;
	for (size_t off = 0; off < total; off += APPEND_REC) {
		int w, r;

		cr_assert(sscanf(buf + off, "writer %d record %d ", &w, &r) == 2 && w >= 0 &&
				  w < APPEND_WRITERS && r >= 0 && r < APPEND_RECORDS,
			  "no record header at offset %zu: \"%.40s\"", off, buf + off);
		append_record(rec, w, r);
		assert_bytes("record", buf + off, rec, APPEND_REC, off);
		cr_assert(!seen[w][r], "writer %d record %d appears twice", w, r);
		seen[w][r] = 1;
		cr_assert(r == last[w] + 1, "writer %d: record %d follows record %d", w, r,
			  last[w]);
		last[w] = r;
	}
	free(buf);
}

Test(append, o_excl)
{
	struct stat st;
	int fd;

	fd = CHECK(open("f", O_WRONLY | O_CREAT | O_EXCL, 0644));
	write_all(fd, "first", 5);
	CHECK(close(fd));
	FAILS_WITH(EEXIST, open("f", O_WRONLY | O_CREAT | O_EXCL, 0644));
	FAILS_WITH(EEXIST, open("f", O_RDONLY | O_CREAT | O_EXCL, 0644));
	assert_str("f", "first");
	/* Without O_EXCL, O_CREAT opens the existing file untouched. */
	CHECK(close(CHECK(open("f", O_WRONLY | O_CREAT, 0600))));
	assert_str("f", "first");
	cr_assert_eq(xstat("f").st_mode & 07777, 0644);
	/* O_EXCL does not follow symlinks, not even dangling ones. */
	CHECK(symlink("nothing-here", "dangling"));
	FAILS_WITH(EEXIST, open("dangling", O_WRONLY | O_CREAT | O_EXCL, 0644));
	FAILS_WITH(ENOENT, lstat("nothing-here", &st));
	CHECK(mkdir("d", 0755));
	FAILS_WITH(EEXIST, open("d", O_WRONLY | O_CREAT | O_EXCL, 0644));
}

Test(append, o_trunc)
{
	const size_t len = 100 * KiB;
	uint8_t *p = pattern(len, 5), buf[16];
	struct stat st;
	int r, w;

	write_file("f", p, len, 0644);
	r = CHECK(open("f", O_RDONLY));
	w = CHECK(open("f", O_WRONLY | O_TRUNC));
	CHECK(fstat(w, &st));
	cr_assert_eq(st.st_size, 0, "O_TRUNC left st_size %jd", (intmax_t)st.st_size);
	CHECK(fstat(r, &st));
	cr_assert_eq(st.st_size, 0, "another fd sees st_size %jd after O_TRUNC",
		     (intmax_t)st.st_size);
	cr_assert_eq(pread(r, buf, sizeof(buf), 0), 0, "another fd still reads old data");
	write_all(w, "short", 5);
	CHECK(close(w));
	assert_str("f", "short");

	/* Old data must not come back when the file grows again after O_TRUNC. */
	w = CHECK(open("f", O_RDWR | O_TRUNC));
	pwrite_all(w, "end", 3, 50000);
	CHECK(close(w));
	memset(p, 0, 50003);
	memcpy(p + 50000, "end", 3);
	assert_content("f", p, 50003);
	CHECK(close(r));
	free(p);
}

/* ---- truncate and ftruncate ---- */

Test(trunc, truncate_path)
{
	const size_t len = 300000;
	uint8_t *p = pattern(len, 9), *want = xmalloc(len);

	write_file("f", p, len, 0644);
	CHECK(truncate("f", 100001));
	assert_content("f", p, 100001);
	/* Growing exposes zeros, never the data that was cut off. */
	CHECK(truncate("f", 250000));
	memcpy(want, p, 100001);
	memset(want + 100001, 0, 250000 - 100001);
	assert_content("f", want, 250000);
	CHECK(truncate("f", 0));
	assert_content("f", "", 0);
	CHECK(truncate("f", 5000));
	memset(want, 0, 5000);
	assert_content("f", want, 5000);
	free(p);
	free(want);
}

Test(trunc, ftruncate_open_fd)
{
	const size_t len = 3 * MiB;
	uint8_t *model = xmalloc(len), *p = pattern(200000, 10);
	int fd = CHECK(open("f", O_RDWR | O_CREAT | O_TRUNC, 0644));

	memset(model, 0, len);
	write_all(fd, p, 200000);
	memcpy(model, p, 200000);
	CHECK(ftruncate(fd, 70000));
	assert_fd_content(fd, "after shrinking to 70000", model, 70000);
	pwrite_all(fd, "0123456789", 10, 150000);
	memset(model + 70000, 0, 200000 - 70000);
	memcpy(model + 150000, "0123456789", 10);
	assert_fd_content(fd, "after a write past the cut", model, 150010);
	CHECK(ftruncate(fd, MiB));
	assert_fd_content(fd, "after growing to 1 MiB", model, MiB);
	/* Shrink into the middle of a large write, grow far, write at the end. */
	fill_pattern(model, len, 11, 0);
	pwrite_all(fd, model, len, 0);
	CHECK(ftruncate(fd, 777777));
	CHECK(ftruncate(fd, 2 * MiB + 1));
	memset(model + 777777, 0, 2 * MiB + 1 - 777777);
	assert_fd_content(fd, "after shrink to 777777 and growth to 2 MiB + 1", model, 2 * MiB + 1);
	CHECK(fsync(fd));
	CHECK(close(fd));
	assert_content("f", model, 2 * MiB + 1);
	free(model);
	free(p);
}

Test(trunc, errors)
{
	int fd;

	write_str("f", "data");
	CHECK(mkdir("d", 0755));
	FAILS_WITH(EISDIR, truncate("d", 0));
	FAILS_WITH(ENOENT, truncate("missing", 0));
	FAILS_WITH(EINVAL, truncate("f", -1));
	fd = CHECK(open("f", O_RDONLY));
	FAILS_WITH(EINVAL, ftruncate(fd, 0));
	CHECK(close(fd));
	assert_str("f", "data");
}

/* ---- directories ---- */

Test(dirs, mkdir_rmdir)
{
	struct stat st;

	CHECK(mkdir("d", 0777));
	st = xstat("d");
	cr_assert(S_ISDIR(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 0755, "mkdir 0777 with umask 022 gave 0%o",
		     st.st_mode & 07777);
	FAILS_WITH(EEXIST, mkdir("d", 0755));
	write_str("d/f", "x");
	FAILS_WITH(ENOTEMPTY, rmdir("d"));
	write_str("file", "x");
	FAILS_WITH(ENOTDIR, rmdir("file"));
	FAILS_WITH(ENOTDIR, mkdir("file/sub", 0755));
	FAILS_WITH(ENOTDIR, rmdir("file/sub"));
	FAILS_WITH(EISDIR, unlink("d"));
	FAILS_WITH(ENOENT, rmdir("missing"));
	FAILS_WITH(ENOENT, mkdir("missing/sub", 0755));
	FAILS_WITH(EINVAL, rmdir("d/."));
	CHECK(unlink("d/f"));
	CHECK(rmdir("d"));
	assert_absent("d");
	/* The name is free again. */
	CHECK(mkdir("d", 0700));
	cr_assert_eq(xstat("d").st_mode & 07777, 0700);
}

Test(dirs, open_errors)
{
	write_str("f", "x");
	CHECK(mkdir("d", 0755));
	FAILS_WITH(EISDIR, open("d", O_WRONLY));
	FAILS_WITH(EISDIR, open("d", O_RDWR));
	FAILS_WITH(ENOTDIR, open("f", O_RDONLY | O_DIRECTORY));
	FAILS_WITH(ENOTDIR, open("f/x", O_RDONLY));
	FAILS_WITH(ENOENT, open("missing", O_RDONLY));
	FAILS_WITH(ENOENT, open("missing/x", O_WRONLY | O_CREAT, 0644));
	errno = 0;
	cr_assert_null(opendir("f"));
	cr_assert_eq(errno, ENOTDIR, "opendir of a file: %s", errname(errno));
}

#define MANY 2000

static void many_name(char *buf, size_t size, int i)
{
	/* Names of 6 to 200 bytes, so that directory pages of every fill are exercised. */
	int n = snprintf(buf, size, "e%04d-", i);
	size_t pad = (size_t)(i * 37) % 195;

	memset(buf + n, 'a' + i % 26, pad);
	buf[(size_t)n + pad] = '\0';
}

Test(dirs, readdir_2000)
{
	static char seen[MANY];
	char name[256];
	int dots = 0, dotdots = 0, count = 0;
	struct dirent *de;
	DIR *d;

	for (int i = 0; i < MANY; i++) {
		many_name(name, sizeof(name), i);
		CHECK(close(CHECK(open(name, O_WRONLY | O_CREAT | O_EXCL, 0644))));
	}
	d = opendir(".");
	cr_assert_not_null(d, "opendir: %s", strerror(errno));
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de)
			break;
		if (!strcmp(de->d_name, ".")) {
			dots++;
			continue;
		}
		if (!strcmp(de->d_name, "..")) {
			dotdots++;
			continue;
		}
		int i = -1;

		cr_assert(sscanf(de->d_name, "e%4d-", &i) == 1 && i >= 0 && i < MANY,
			  "unexpected entry \"%s\"", de->d_name);
		many_name(name, sizeof(name), i);
		cr_assert_str_eq(de->d_name, name, "entry %d is \"%s\", expected \"%s\"", i,
				 de->d_name, name);
		cr_assert(!seen[i], "\"%s\" listed twice", name);
		seen[i] = 1;
		cr_assert(de->d_type == DT_REG || de->d_type == DT_UNKNOWN, "d_type %d for a file",
			  de->d_type);
		count++;
	}
	cr_assert_eq(errno, 0, "readdir: %s", strerror(errno));
	CHECK(closedir(d));
	cr_assert_eq(dots, 1, "\".\" listed %d times", dots);
	cr_assert_eq(dotdots, 1, "\"..\" listed %d times", dotdots);
	for (int i = 0; i < MANY; i++)
		cr_assert(seen[i], "entry %d missing from readdir (%d of %d listed)", i, count,
			  MANY);
}

Test(dirs, readdir_types_and_inodes)
{
	static const struct {
		const char *name;
		unsigned char type;
	} want[] = {{"f", DT_REG}, {"d", DT_DIR}, {"l", DT_LNK}, {"p", DT_FIFO}};
	int found = 0;
	struct dirent *de;
	DIR *d;

	write_str("f", "x");
	CHECK(mkdir("d", 0755));
	CHECK(symlink("f", "l"));
	CHECK(mkfifo("p", 0644));
	d = opendir(".");
	cr_assert_not_null(d);
	while ((de = readdir(d))) {
		struct stat st;

		CHECK(fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW));
		cr_assert_eq(de->d_ino, st.st_ino, "\"%s\": d_ino %ju, st_ino %ju", de->d_name,
			     (uintmax_t)de->d_ino, (uintmax_t)st.st_ino);
		for (size_t i = 0; i < 4; i++) {
			if (strcmp(de->d_name, want[i].name))
				continue;
			found++;
			cr_assert(de->d_type == want[i].type || de->d_type == DT_UNKNOWN,
				  "\"%s\": d_type %d, expected %d", de->d_name, de->d_type,
				  want[i].type);
		}
	}
	CHECK(closedir(d));
	cr_assert_eq(found, 4);
}

/* Creates the first n many_name() files and opens the directory. */
static DIR *many_dir(int n)
{
	char name[256];
	DIR *d;

	for (int i = 0; i < n; i++) {
		many_name(name, sizeof(name), i);
		write_str(name, "");
	}
	d = opendir(".");
	cr_assert_not_null(d, "opendir: %s", strerror(errno));
	return d;
}

/* Reads d to its end: each many_name() entry below n must come once; returns how many came. */
static int read_rest(DIR *d, int n, char *seen)
{
	struct dirent *de;
	int count = 0, i;

	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de)
			break;
		count++;
		if (sscanf(de->d_name, "e%4d-", &i) != 1 || i < 0 || i >= n)
			continue;
		cr_assert(!seen[i], "\"%s\" listed twice", de->d_name);
		seen[i] = 1;
	}
	cr_assert_eq(errno, 0, "readdir: %s", strerror(errno));
	return count;
}

Test(dirs, rewinddir)
{
	char seen[300] = {0};
	DIR *d = many_dir(300);
	int n;

	for (n = 0; n < 100; n++)
		cr_assert_not_null(readdir(d));
	rewinddir(d);
	n = read_rest(d, 300, seen);
	cr_assert_eq(n, 302, "%d entries after rewinddir, expected 300 and . and ..", n);
	for (int i = 0; i < 300; i++)
		cr_assert(seen[i], "entry %d missing after rewinddir", i);
	CHECK(closedir(d));
}

Test(dirs, rewinddir_sees_changes)
{
	/* POSIX: rewinddir makes the stream show the directory as it is now. */
	struct dirent *de;
	bool added = false;
	DIR *d = many_dir(300);

	for (int n = 0; n < 100; n++)
		cr_assert_not_null(readdir(d));
	write_str("added-after-opendir", "");
	CHECK(unlink("e0000-"));
	rewinddir(d);
	while ((de = readdir(d))) {
		cr_assert_str_neq(de->d_name, "e0000-",
				  "an entry unlinked before rewinddir is listed");
		if (!strcmp(de->d_name, "added-after-opendir"))
			added = true;
	}
	cr_assert(added, "an entry created before rewinddir is not listed");
	CHECK(closedir(d));
}

Test(dirs, seekdir_telldir)
{
	char at_pos[256], seen[300] = {0};
	struct dirent *de;
	long pos;
	DIR *d = many_dir(300);

	for (int n = 0; n < 50; n++)
		cr_assert_not_null(readdir(d));
	pos = telldir(d);
	cr_assert(pos >= 0, "telldir: %s", strerror(errno));
	de = readdir(d);
	cr_assert_not_null(de);
	snprintf(at_pos, sizeof(at_pos), "%s", de->d_name);
	read_rest(d, 300, seen);
	seekdir(d, pos);
	de = readdir(d);
	cr_assert_not_null(de, "readdir after seekdir: %s", strerror(errno));
	cr_assert_str_eq(de->d_name, at_pos, "after seekdir: \"%s\", expected \"%s\"", de->d_name,
			 at_pos);
	CHECK(closedir(d));
}

Test(dirs, unlink_while_reading)
{
	/*
	 * rm -rf and shutil.rmtree unlink entries while they read the directory: every entry that
	 * is not removed yet must still be returned, exactly once.
	 */
	static char seen[500];
	char name[256];
	int count = 0;
	struct dirent *de;
	DIR *d;

	for (int i = 0; i < 500; i++) {
		many_name(name, sizeof(name), i);
		write_str(name, "x");
	}
	d = opendir(".");
	cr_assert_not_null(d);
	for (;;) {
		int i = -1;

		errno = 0;
		de = readdir(d);
		if (!de)
			break;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		cr_assert(sscanf(de->d_name, "e%4d-", &i) == 1 && i >= 0 && i < 500,
			  "unexpected entry \"%s\"", de->d_name);
		cr_assert(!seen[i], "\"%s\" returned again after it was unlinked", de->d_name);
		seen[i] = 1;
		count++;
		CHECK(unlinkat(dirfd(d), de->d_name, 0));
	}
	cr_assert_eq(errno, 0, "readdir: %s", strerror(errno));
	CHECK(closedir(d));
	cr_assert_eq(count, 500, "%d of 500 entries returned while unlinking them", count);
	CHECK(chdir(".."));
	CHECK(rmdir(work_dir));
	CHECK(mkdir(work_dir, 0755)); /* for the fini */
}

Test(dirs, link_counts)
{
	cr_assert_eq(xstat(".").st_nlink, 2, "an empty directory has st_nlink 2");
	CHECK(mkdir("d", 0755));
	cr_assert_eq(xstat("d").st_nlink, 2);
	cr_assert_eq(xstat(".").st_nlink, 3);
	CHECK(mkdir("d/a", 0755));
	CHECK(mkdir("d/b", 0755));
	CHECK(mkdir("d/c", 0755));
	write_str("d/file", "x");
	CHECK(symlink("a", "d/link"));
	cr_assert_eq(xstat("d").st_nlink, 5, "3 subdirectories: st_nlink %ju, expected 5",
		     (uintmax_t)xstat("d").st_nlink);
	CHECK(rmdir("d/a"));
	cr_assert_eq(xstat("d").st_nlink, 4);
	CHECK(mkdir("e", 0755));
	CHECK(rename("d/b", "e/b"));
	cr_assert_eq(xstat("d").st_nlink, 3, "after moving a subdirectory out");
	cr_assert_eq(xstat("e").st_nlink, 3, "after moving a subdirectory in");
	cr_assert_eq(xstat("e/b").st_nlink, 2);
	cr_assert_eq(xstat(".").st_nlink, 4);
}

Test(dirs, names)
{
	static const char *const names[] = {
		"a b",     "caf\xc3\xa9", "\xff\xfe-not-utf8", "line\nbreak", "-dash",
		".hidden", "...",         "back\\slash",       "tab\there",   "*?[]"};
	const size_t n = sizeof(names) / sizeof(names[0]);
	char longname[300];
	bool seen[sizeof(names) / sizeof(names[0])] = {false};
	struct dirent *de;
	struct stat st;
	DIR *d;

	for (size_t i = 0; i < n; i++) {
		write_str(names[i], names[i]);
		assert_str(names[i], names[i]);
	}
	memset(longname, 'n', 255);
	longname[255] = '\0';
	write_str(longname, "255");
	assert_str(longname, "255");
	longname[255] = 'n';
	longname[256] = '\0';
	FAILS_WITH(ENAMETOOLONG, open(longname, O_WRONLY | O_CREAT, 0644));
	FAILS_WITH(ENAMETOOLONG, stat(longname, &st));
	FAILS_WITH(ENAMETOOLONG, mkdir(longname, 0755));
	d = opendir(".");
	cr_assert_not_null(d);
	while ((de = readdir(d)))
		for (size_t i = 0; i < n; i++)
			if (!strcmp(de->d_name, names[i]))
				seen[i] = true;
	CHECK(closedir(d));
	for (size_t i = 0; i < n; i++)
		cr_assert(seen[i], "name %zu not listed byte for byte", i);
}

Test(dirs, remove_tree)
{
	/* What rm -rf does to a cache: every kind of entry, nested, removed bottom-up. */
	char path[64];

	CHECK(mkdir("t", 0755));
	for (int i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "t/d%d", i);
		CHECK(mkdir(path, 0755));
		for (int j = 0; j < 20; j++) {
			snprintf(path, sizeof(path), "t/d%d/f%d", i, j);
			write_str(path, path);
		}
		snprintf(path, sizeof(path), "t/d%d/sub", i);
		CHECK(mkdir(path, 0700));
		snprintf(path, sizeof(path), "t/d%d/sub/link", i);
		CHECK(symlink("../f0", path));
		snprintf(path, sizeof(path), "t/d%d/sub/hard", i);
		CHECK(link("t/d0/f1", path));
		snprintf(path, sizeof(path), "t/d%d/sub/fifo", i);
		CHECK(mkfifo(path, 0600));
	}
	cr_assert_eq(remove_tree("t"), 0, "removing the tree failed at %s: %s", remove_error_path,
		     strerror(remove_error));
	assert_absent("t");
}

/* ---- symlinks and hard links ---- */

Test(links, symlink)
{
	char buf[PATH_MAX];
	struct stat st;
	int fd;

	write_str("target", "content");
	CHECK(symlink("target", "l"));
	st = xlstat("l");
	cr_assert(S_ISLNK(st.st_mode), "lstat mode 0%o is not a symlink", st.st_mode);
	cr_assert_eq(st.st_size, 6, "a symlink's st_size is its target's length, got %jd",
		     (intmax_t)st.st_size);
	memset(buf, 'X', sizeof(buf));
	cr_assert_eq(readlink("l", buf, sizeof(buf)), 6);
	assert_bytes("readlink", buf, "targetX", 7, 0); /* no NUL appended */
	cr_assert_eq(readlink("l", buf, 3), 3, "readlink truncates to the buffer");
	assert_bytes("truncated readlink", buf, "tar", 3, 0);
	st = xstat("l");
	cr_assert(S_ISREG(st.st_mode) && st.st_size == 7, "stat follows the link");
	cr_assert_eq(st.st_ino, xlstat("target").st_ino);
	assert_str("l", "content");
	/* Writing through the link writes the target. */
	fd = CHECK(open("l", O_WRONLY | O_APPEND));
	write_all(fd, "+", 1);
	CHECK(close(fd));
	assert_str("target", "content+");

	/* Dangling. */
	CHECK(symlink("does/not/exist", "dangling"));
	cr_assert(S_ISLNK(xlstat("dangling").st_mode));
	FAILS_WITH(ENOENT, stat("dangling", &st));
	FAILS_WITH(ENOENT, open("dangling", O_RDONLY));
	cr_assert_eq(readlink("dangling", buf, sizeof(buf)), 14);
	assert_bytes("dangling readlink", buf, "does/not/exist", 14, 0);

	FAILS_WITH(ELOOP, open("l", O_RDONLY | O_NOFOLLOW));
	FAILS_WITH(EINVAL, readlink("target", buf, sizeof(buf)));
	FAILS_WITH(EEXIST, symlink("x", "target"));
	FAILS_WITH(EEXIST, symlink("x", "l"));
	CHECK(symlink("loop2", "loop1"));
	CHECK(symlink("loop1", "loop2"));
	FAILS_WITH(ELOOP, open("loop1", O_RDONLY));

	/* Unlinking the link leaves the target. */
	CHECK(unlink("l"));
	assert_absent("l");
	assert_str("target", "content+");
}

Test(links, symlink_long_and_odd_targets)
{
	char target[PATH_MAX], buf[PATH_MAX];
	ssize_t n;

	/* The longest target Linux allows: PATH_MAX - 1 bytes. */
	for (int i = 0; i < PATH_MAX - 1; i++)
		target[i] = (i % 64 == 63) ? '/' : (char)('a' + i % 26);
	target[PATH_MAX - 1] = '\0';
	CHECK(symlink(target, "long"));
	n = readlink("long", buf, sizeof(buf));
	cr_assert_eq(n, PATH_MAX - 1, "readlink of a %d-byte target returned %zd (%s)",
		     PATH_MAX - 1, n, n < 0 ? strerror(errno) : "");
	assert_bytes("long target", buf, target, PATH_MAX - 1, 0);
	cr_assert_eq(xlstat("long").st_size, PATH_MAX - 1);

	static const char odd[] = "../../with space/\xff\xfe/\n/..";

	CHECK(symlink(odd, "odd"));
	cr_assert_eq(readlink("odd", buf, sizeof(buf)), (ssize_t)sizeof(odd) - 1);
	assert_bytes("odd target", buf, odd, sizeof(odd) - 1, 0);
}

Test(links, symlink_to_directory)
{
	char buf[16];

	CHECK(mkdir("d", 0755));
	CHECK(symlink("d", "ld"));
	write_str("ld/f", "via link");
	assert_str("d/f", "via link");
	cr_assert(S_ISDIR(xstat("ld/").st_mode));
	cr_assert(S_ISLNK(xlstat("ld").st_mode));
	FAILS_WITH(ENOTDIR, rmdir("ld"));
	CHECK(unlink("ld"));
	assert_str("d/f", "via link");
	/* A relative link resolves against its own directory. */
	CHECK(symlink("../d/f", "d/up"));
	assert_str("d/up", "via link");
	cr_assert_eq(readlink("d/up", buf, sizeof(buf)), 6);
}

Test(links, hardlink)
{
	struct stat a, b;
	int fd;

	write_str("a", "shared");
	CHECK(link("a", "b"));
	a = xstat("a");
	b = xstat("b");
	cr_assert_eq(a.st_ino, b.st_ino, "hard links have one inode: %ju vs %ju",
		     (uintmax_t)a.st_ino, (uintmax_t)b.st_ino);
	cr_assert_eq(a.st_nlink, 2, "st_nlink %ju after link(), expected 2", (uintmax_t)a.st_nlink);
	cr_assert_eq(b.st_nlink, 2);
	CHECK(mkdir("d", 0755));
	CHECK(link("b", "d/c"));
	cr_assert_eq(xstat("a").st_nlink, 3);

	/* Content is shared both ways, also through an fd opened before. */
	fd = CHECK(open("d/c", O_RDWR));
	pwrite_all(fd, "SH", 2, 0);
	assert_str("a", "SHared");
	write_str("b", "rewritten via b");
	assert_fd_content(fd, "fd on the third link", "rewritten via b", 15);

	/* Unlinking one name keeps the others and the inode. */
	CHECK(unlink("a"));
	assert_absent("a");
	b = xstat("b");
	cr_assert_eq(b.st_nlink, 2, "st_nlink %ju after unlinking one of 3 names",
		     (uintmax_t)b.st_nlink);
	cr_assert_eq(b.st_ino, a.st_ino);
	CHECK(fstat(fd, &b));
	cr_assert_eq(b.st_nlink, 2);
	CHECK(unlink("b"));
	assert_str("d/c", "rewritten via b");
	cr_assert_eq(xstat("d/c").st_nlink, 1);
	CHECK(close(fd));

	FAILS_WITH(EEXIST, link("d/c", "d/c"));
	FAILS_WITH(EPERM, link("d", "d2"));
	FAILS_WITH(ENOENT, link("missing", "x"));
}

/* ---- special files ---- */

Test(special, fifo)
{
	char buf[8];
	struct stat st;
	int fd;

	CHECK(mkfifo("p", 0640));
	st = xlstat("p");
	cr_assert(S_ISFIFO(st.st_mode), "mode 0%o is not a FIFO", st.st_mode);
	cr_assert_eq(st.st_mode & 07777, 0640);
	fd = CHECK(open("p", O_RDWR | O_NONBLOCK));
	write_all(fd, "xyz", 3);
	cr_assert_eq(read(fd, buf, sizeof(buf)), 3);
	assert_bytes("fifo", buf, "xyz", 3, 0);
	CHECK(close(fd));
	FAILS_WITH(EEXIST, mkfifo("p", 0640));
	CHECK(unlink("p"));
	assert_absent("p");
}

Test(special, unix_socket)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX, .sun_path = "s"};
	char buf[8];
	int srv, cli, conn;

	srv = CHECK(socket(AF_UNIX, SOCK_STREAM, 0));
	CHECK(bind(srv, (struct sockaddr *)&addr, sizeof(addr)));
	CHECK(listen(srv, 1));
	cr_assert(S_ISSOCK(xlstat("s").st_mode), "a bound socket is S_IFSOCK");
	cli = CHECK(socket(AF_UNIX, SOCK_STREAM, 0));
	CHECK(connect(cli, (struct sockaddr *)&addr, sizeof(addr)));
	conn = CHECK(accept(srv, NULL, NULL));
	write_all(cli, "ping", 4);
	cr_assert_eq(read(conn, buf, sizeof(buf)), 4);
	assert_bytes("through the socket", buf, "ping", 4, 0);
	CHECK(close(conn));
	CHECK(close(cli));
	CHECK(close(srv));
	FAILS_WITH(EADDRINUSE, bind(CHECK(socket(AF_UNIX, SOCK_STREAM, 0)),
				    (struct sockaddr *)&addr, sizeof(addr)));
	CHECK(unlink("s"));
}

Test(special, mknod_regular)
{
	CHECK(mknod("r", S_IFREG | 0600, 0));
	cr_assert(S_ISREG(xlstat("r").st_mode));
	cr_assert_eq(xlstat("r").st_mode & 07777, 0600);
	write_str("r", "regular");
	assert_str("r", "regular");
}

Test(special, devices)
{
	const dev_t c = makedev(1, 3), b = makedev(7, 0), big = makedev(300, 70000);
	struct stat st;

	if (geteuid() != 0)
		skip_test("mknod of a device needs root");
	CHECK(mknod("c", S_IFCHR | 0600, c));
	st = xlstat("c");
	cr_assert(S_ISCHR(st.st_mode), "mode 0%o is not a char device", st.st_mode);
	cr_assert_eq(st.st_mode & 07777, 0600);
	cr_assert_eq(st.st_rdev, c, "st_rdev %u:%u, expected 1:3", major(st.st_rdev),
		     minor(st.st_rdev));
	CHECK(mknod("b", S_IFBLK | 0640, b));
	st = xlstat("b");
	cr_assert(S_ISBLK(st.st_mode));
	cr_assert_eq(st.st_rdev, b, "st_rdev %u:%u, expected 7:0", major(st.st_rdev),
		     minor(st.st_rdev));
	CHECK(mknod("big", S_IFCHR | 0600, big));
	st = xlstat("big");
	cr_assert_eq(st.st_rdev, big, "st_rdev %u:%u, expected 300:70000", major(st.st_rdev),
		     minor(st.st_rdev));
}

/* ---- modes, owners ---- */

Test(attrs, chmod)
{
	struct stat st;
	int fd;

	write_str("f", "x");
	CHECK(chmod("f", 0600));
	cr_assert_eq(xstat("f").st_mode & 07777, 0600);
	CHECK(chmod("f", 04755));
	cr_assert_eq(xstat("f").st_mode & 07777, 04755, "mode 0%o, expected 04755",
		     xstat("f").st_mode & 07777);
	fd = CHECK(open("f", O_RDONLY));
	CHECK(chmod("f", 0));
	cr_assert_eq(xstat("f").st_mode & 07777, 0);
	CHECK(fchmod(fd, 0640));
	CHECK(fstat(fd, &st));
	cr_assert_eq(st.st_mode & 07777, 0640);
	CHECK(close(fd));
	cr_assert(S_ISREG(xstat("f").st_mode), "chmod must keep the file type");

	CHECK(mkdir("d", 0755));
	CHECK(chmod("d", 01777));
	st = xstat("d");
	cr_assert(S_ISDIR(st.st_mode));
	cr_assert_eq(st.st_mode & 07777, 01777);
	CHECK(chmod("d", 02750));
	cr_assert_eq(xstat("d").st_mode & 07777, 02750);

	/* chmod follows symlinks. */
	CHECK(symlink("f", "l"));
	CHECK(chmod("l", 0604));
	cr_assert_eq(xstat("f").st_mode & 07777, 0604);
	cr_assert(S_ISLNK(xlstat("l").st_mode));
}

Test(attrs, create_mode_and_umask)
{
	CHECK(close(CHECK(open("a", O_WRONLY | O_CREAT, 0777))));
	cr_assert_eq(xstat("a").st_mode & 07777, 0755, "open 0777, umask 022 gave 0%o",
		     xstat("a").st_mode & 07777);
	CHECK(close(CHECK(open("b", O_WRONLY | O_CREAT, 0640))));
	cr_assert_eq(xstat("b").st_mode & 07777, 0640);
	umask(077);
	CHECK(close(CHECK(open("c", O_WRONLY | O_CREAT, 0666))));
	cr_assert_eq(xstat("c").st_mode & 07777, 0600, "open 0666, umask 077 gave 0%o",
		     xstat("c").st_mode & 07777);
	CHECK(mkdir("d", 0777));
	cr_assert_eq(xstat("d").st_mode & 07777, 0700);
	CHECK(mkfifo("p", 0666));
	cr_assert_eq(xlstat("p").st_mode & 07777, 0600);
	umask(0);
	CHECK(mkdir("e", 0777));
	cr_assert_eq(xstat("e").st_mode & 07777, 0777);
	umask(022);
}

Test(attrs, chown)
{
	struct stat st;
	int fd;

	if (geteuid() != 0)
		skip_test("chown to other owners needs root");
	write_str("f", "x");
	CHECK(chown("f", 1234, 5678));
	st = xstat("f");
	cr_assert(st.st_uid == 1234 && st.st_gid == 5678, "owner %u:%u, expected 1234:5678",
		  st.st_uid, st.st_gid);
	CHECK(chown("f", (uid_t)-1, 42));
	st = xstat("f");
	cr_assert(st.st_uid == 1234 && st.st_gid == 42, "owner %u:%u, expected 1234:42", st.st_uid,
		  st.st_gid);
	fd = CHECK(open("f", O_RDONLY));
	CHECK(fchown(fd, 99, (gid_t)-1));
	CHECK(fstat(fd, &st));
	cr_assert(st.st_uid == 99 && st.st_gid == 42, "owner %u:%u, expected 99:42", st.st_uid,
		  st.st_gid);
	CHECK(close(fd));

	/* lchown changes the link, chown through it the target. */
	CHECK(symlink("f", "l"));
	CHECK(lchown("l", 4321, 8765));
	st = xlstat("l");
	cr_assert(st.st_uid == 4321 && st.st_gid == 8765, "link owner %u:%u", st.st_uid, st.st_gid);
	st = xstat("f");
	cr_assert(st.st_uid == 99 && st.st_gid == 42, "lchown changed the target: %u:%u", st.st_uid,
		  st.st_gid);
	CHECK(chown("l", 7, 8));
	st = xstat("f");
	cr_assert(st.st_uid == 7 && st.st_gid == 8);
	cr_assert_eq(xlstat("l").st_uid, 4321);

	CHECK(mkdir("d", 0755));
	CHECK(chown("d", 1000, 1000));
	st = xstat("d");
	cr_assert(st.st_uid == 1000 && st.st_gid == 1000);
}

Test(attrs, chown_clears_setuid)
{
	/* Linux clears set-user-ID and set-group-ID (with group exec) on chown, even for root. */
	if (geteuid() != 0)
		skip_test("chown to other owners needs root");
	write_str("f", "x");
	CHECK(chmod("f", 06755));
	CHECK(chown("f", 1234, 1234));
	cr_assert_eq(xstat("f").st_mode & 07777, 0755, "mode 0%o after chown, expected 0755",
		     xstat("f").st_mode & 07777);
}

Test(attrs, statvfs)
{
	struct statvfs sv, fsv;
	int fd;

	CHECK(statvfs(".", &sv));
	cr_assert(sv.f_bsize > 0, "f_bsize %lu", sv.f_bsize);
	cr_assert(sv.f_frsize > 0, "f_frsize %lu", sv.f_frsize);
	cr_assert(sv.f_blocks > 0, "f_blocks 0");
	cr_assert(sv.f_bfree <= sv.f_blocks, "f_bfree %ju > f_blocks %ju", (uintmax_t)sv.f_bfree,
		  (uintmax_t)sv.f_blocks);
	cr_assert(sv.f_bavail <= sv.f_bfree, "f_bavail %ju > f_bfree %ju", (uintmax_t)sv.f_bavail,
		  (uintmax_t)sv.f_bfree);
	cr_assert(sv.f_bavail > 0, "no space available on a filesystem the tests write to");
	cr_assert(sv.f_ffree <= sv.f_files, "f_ffree %ju > f_files %ju", (uintmax_t)sv.f_ffree,
		  (uintmax_t)sv.f_files);
	cr_assert(sv.f_namemax >= 255, "f_namemax %lu < 255", sv.f_namemax);
	write_str("f", "x");
	fd = CHECK(open("f", O_RDONLY));
	CHECK(fstatvfs(fd, &fsv));
	CHECK(close(fd));
	cr_assert_eq(fsv.f_bsize, sv.f_bsize);
	cr_assert_eq(fsv.f_blocks, sv.f_blocks);
	cr_assert_eq(fsv.f_namemax, sv.f_namemax);
}

/* ---- times ---- */

Test(times, utimensat_nanoseconds)
{
	const struct timespec t[2] = {{1234567890, 123456789}, {1500000000, 987654321}};
	const struct timespec far[2] = {{4102444800, 1}, {4000000000, 999999999}};
	struct stat st;
	int fd;

	write_str("f", "x");
	CHECK(utimensat(AT_FDCWD, "f", t, 0));
	st = xstat("f");
	cr_assert(st.st_atim.tv_sec == t[0].tv_sec && st.st_atim.tv_nsec == t[0].tv_nsec,
		  "atime %jd.%09ld, expected 1234567890.123456789", (intmax_t)st.st_atim.tv_sec,
		  st.st_atim.tv_nsec);
	cr_assert(st.st_mtim.tv_sec == t[1].tv_sec && st.st_mtim.tv_nsec == t[1].tv_nsec,
		  "mtime %jd.%09ld, expected 1500000000.987654321", (intmax_t)st.st_mtim.tv_sec,
		  st.st_mtim.tv_nsec);

	/* Past 2038, through futimens. */
	fd = CHECK(open("f", O_RDONLY));
	CHECK(futimens(fd, far));
	CHECK(fstat(fd, &st));
	CHECK(close(fd));
	cr_assert(st.st_atim.tv_sec == far[0].tv_sec && st.st_atim.tv_nsec == far[0].tv_nsec,
		  "atime %jd.%09ld, expected 4102444800.000000001", (intmax_t)st.st_atim.tv_sec,
		  st.st_atim.tv_nsec);
	cr_assert(st.st_mtim.tv_sec == far[1].tv_sec && st.st_mtim.tv_nsec == far[1].tv_nsec,
		  "mtime %jd.%09ld, expected 4000000000.999999999", (intmax_t)st.st_mtim.tv_sec,
		  st.st_mtim.tv_nsec);
	st = xstat("f");
	cr_assert(st.st_mtim.tv_sec == far[1].tv_sec && st.st_mtim.tv_nsec == far[1].tv_nsec,
		  "mtime by path %jd.%09ld", (intmax_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);

	/* Directories, and symlinks themselves with AT_SYMLINK_NOFOLLOW. */
	CHECK(mkdir("d", 0755));
	CHECK(utimensat(AT_FDCWD, "d", t, 0));
	st = xstat("d");
	cr_assert(st.st_mtim.tv_sec == t[1].tv_sec && st.st_mtim.tv_nsec == t[1].tv_nsec,
		  "directory mtime %jd.%09ld", (intmax_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
	CHECK(symlink("f", "l"));
	CHECK(utimensat(AT_FDCWD, "l", t, AT_SYMLINK_NOFOLLOW));
	st = xlstat("l");
	cr_assert(st.st_mtim.tv_sec == t[1].tv_sec && st.st_mtim.tv_nsec == t[1].tv_nsec,
		  "symlink mtime %jd.%09ld", (intmax_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
	st = xstat("f");
	cr_assert(st.st_mtim.tv_sec == far[1].tv_sec, "AT_SYMLINK_NOFOLLOW changed the target");
}

Test(times, utime_now_and_omit)
{
	const struct timespec t[2] = {{1000000000, 111}, {1100000000, 222}};
	struct timespec req[2], before, after;
	struct stat st;

	write_str("f", "x");
	CHECK(utimensat(AT_FDCWD, "f", t, 0));

	/* atime now, mtime kept. */
	req[0].tv_nsec = UTIME_NOW;
	req[1].tv_nsec = UTIME_OMIT;
	req[0].tv_sec = req[1].tv_sec = 0;
	before = now();
	CHECK(utimensat(AT_FDCWD, "f", req, 0));
	after = now();
	st = xstat("f");
	assert_time_between("atime after UTIME_NOW", st.st_atim, before, after);
	cr_assert(st.st_mtim.tv_sec == t[1].tv_sec && st.st_mtim.tv_nsec == t[1].tv_nsec,
		  "UTIME_OMIT changed mtime to %jd.%09ld", (intmax_t)st.st_mtim.tv_sec,
		  st.st_mtim.tv_nsec);

	/* Both omitted: nothing changes. */
	struct stat st2;

	req[0].tv_nsec = UTIME_OMIT;
	CHECK(utimensat(AT_FDCWD, "f", req, 0));
	st2 = xstat("f");
	cr_assert(st2.st_atim.tv_sec == st.st_atim.tv_sec &&
			  st2.st_atim.tv_nsec == st.st_atim.tv_nsec &&
			  st2.st_mtim.tv_sec == st.st_mtim.tv_sec &&
			  st2.st_mtim.tv_nsec == st.st_mtim.tv_nsec,
		  "UTIME_OMIT for both changed a time");

	/* mtime now, atime kept; then NULL sets both to now. */
	CHECK(utimensat(AT_FDCWD, "f", t, 0));
	req[0].tv_nsec = UTIME_OMIT;
	req[1].tv_nsec = UTIME_NOW;
	before = now();
	CHECK(utimensat(AT_FDCWD, "f", req, 0));
	after = now();
	st = xstat("f");
	assert_time_between("mtime after UTIME_NOW", st.st_mtim, before, after);
	cr_assert(st.st_atim.tv_sec == t[0].tv_sec && st.st_atim.tv_nsec == t[0].tv_nsec,
		  "UTIME_OMIT changed atime to %jd.%09ld", (intmax_t)st.st_atim.tv_sec,
		  st.st_atim.tv_nsec);
	CHECK(utimensat(AT_FDCWD, "f", t, 0));
	before = now();
	CHECK(utimensat(AT_FDCWD, "f", NULL, 0));
	after = now();
	st = xstat("f");
	assert_time_between("atime after utimensat(NULL)", st.st_atim, before, after);
	assert_time_between("mtime after utimensat(NULL)", st.st_mtim, before, after);
}

Test(times, ctime_advances_on_chmod)
{
	struct timespec before, after;
	struct stat st0, st1;

	write_str("f", "x");
	st0 = xstat("f");
	sleep_ms(50); /* several ticks of the kernel's coarse clock */
	before = now();
	CHECK(chmod("f", 0600));
	after = now();
	st1 = xstat("f");
	cr_assert(ts_ns(st1.st_ctim) > ts_ns(st0.st_ctim),
		  "ctime did not advance on chmod: %jd.%09ld, then %jd.%09ld",
		  (intmax_t)st0.st_ctim.tv_sec, st0.st_ctim.tv_nsec, (intmax_t)st1.st_ctim.tv_sec,
		  st1.st_ctim.tv_nsec);
	assert_time_between("ctime after chmod", st1.st_ctim, before, after);
	cr_assert(st1.st_mtim.tv_sec == st0.st_mtim.tv_sec &&
			  st1.st_mtim.tv_nsec == st0.st_mtim.tv_nsec,
		  "chmod changed mtime");
}

Test(times, write_and_truncate_update_mtime)
{
	const struct timespec old[2] = {{1000000000, 0}, {1000000000, 0}};
	struct timespec before, after;
	struct stat st;
	int fd;

	write_str("f", "x");
	CHECK(utimensat(AT_FDCWD, "f", old, 0));
	fd = CHECK(open("f", O_WRONLY));
	before = now();
	write_all(fd, "y", 1);
	CHECK(close(fd));
	after = now();
	st = xstat("f");
	assert_time_between("mtime after a write", st.st_mtim, before, after);
	assert_time_between("ctime after a write", st.st_ctim, before, after);

	CHECK(utimensat(AT_FDCWD, "f", old, 0));
	before = now();
	CHECK(truncate("f", 100));
	after = now();
	st = xstat("f");
	assert_time_between("mtime after truncate", st.st_mtim, before, after);
}

Test(times, directory_mtime_on_entry_changes)
{
	const struct timespec old[2] = {{1000000000, 0}, {1000000000, 0}};
	struct timespec before, after;

	CHECK(mkdir("d", 0755));
	CHECK(mkdir("e", 0755));
	CHECK(utimensat(AT_FDCWD, "d", old, 0));
	before = now();
	write_str("d/f", "x");
	after = now();
	assert_time_between("directory mtime after a create", xstat("d").st_mtim, before, after);
	assert_time_between("directory ctime after a create", xstat("d").st_ctim, before, after);

	CHECK(utimensat(AT_FDCWD, "d", old, 0));
	CHECK(utimensat(AT_FDCWD, "e", old, 0));
	before = now();
	CHECK(rename("d/f", "e/f"));
	after = now();
	assert_time_between("source directory mtime after rename", xstat("d").st_mtim, before,
			    after);
	assert_time_between("target directory mtime after rename", xstat("e").st_mtim, before,
			    after);

	CHECK(utimensat(AT_FDCWD, "e", old, 0));
	before = now();
	CHECK(unlink("e/f"));
	after = now();
	assert_time_between("directory mtime after unlink", xstat("e").st_mtim, before, after);
}

/* ---- user xattrs ---- */

/* Returns the user.* names listxattr gives for path, NUL-separated, in a buffer to free. */
static size_t user_xattrs(const char *path, char **ret)
{
	ssize_t n = listxattr(path, NULL, 0);
	char *all, *out;
	size_t len = 0;

	cr_assert(n >= 0, "listxattr(%s, NULL, 0): %s", path, strerror(errno));
	all = xmalloc((size_t)n + 1);
	out = xmalloc((size_t)n + 1);
	n = listxattr(path, all, (size_t)n);
	cr_assert(n >= 0, "listxattr(%s): %s", path, strerror(errno));
	for (char *p = all; p < all + n; p += strlen(p) + 1) {
		if (strncmp(p, "user.", 5))
			continue; /* security.selinux and the like */
		strcpy(out + len, p);
		len += strlen(p) + 1;
	}
	free(all);
	*ret = out;
	return len;
}

static bool has_name(const char *list, size_t len, const char *name)
{
	for (const char *p = list; p < list + len; p += strlen(p) + 1)
		if (!strcmp(p, name))
			return true;
	return false;
}

Test(xattr, set_get_list_remove)
{
	static const char bin[] = "binary\0value\xff";
	char buf[2048], *list;
	uint8_t *big = pattern(1000, 3);
	size_t len;
	int fd;

	write_str("f", "x");
	if (setxattr("f", "user.probe", "", 0, 0) < 0 && errno == ENOTSUP)
		cr_assert_fail("user xattrs are not supported here (ENOTSUP)");
	CHECK(removexattr("f", "user.probe"));

	CHECK(setxattr("f", "user.a", "value", 5, 0));
	CHECK(setxattr("f", "user.bin", bin, sizeof(bin) - 1, 0));
	CHECK(setxattr("f", "user.empty", "", 0, 0));
	CHECK(setxattr("f", "user.big", big, 1000, 0));

	cr_assert_eq(getxattr("f", "user.a", NULL, 0), 5, "size query");
	cr_assert_eq(getxattr("f", "user.a", buf, sizeof(buf)), 5);
	assert_bytes("user.a", buf, "value", 5, 0);
	cr_assert_eq(getxattr("f", "user.bin", buf, sizeof(buf)), (ssize_t)sizeof(bin) - 1);
	assert_bytes("user.bin", buf, bin, sizeof(bin) - 1, 0);
	cr_assert_eq(getxattr("f", "user.empty", buf, sizeof(buf)), 0);
	cr_assert_eq(getxattr("f", "user.big", buf, sizeof(buf)), 1000);
	assert_bytes("user.big", buf, big, 1000, 0);
	FAILS_WITH(ERANGE, getxattr("f", "user.a", buf, 4));
	FAILS_WITH(ENODATA, getxattr("f", "user.missing", buf, sizeof(buf)));

	len = user_xattrs("f", &list);
	cr_assert(has_name(list, len, "user.a") && has_name(list, len, "user.bin") &&
			  has_name(list, len, "user.empty") && has_name(list, len, "user.big"),
		  "listxattr lacks a name that was set");
	cr_assert_eq(len,
		     sizeof("user.a") + sizeof("user.bin") + sizeof("user.empty") +
			     sizeof("user.big"),
		     "listxattr lists names that were never set");
	free(list);
	cr_assert(listxattr("f", NULL, 0) > 0);
	FAILS_WITH(ERANGE, listxattr("f", buf, 3));

	/* Replacing a value with a shorter one. */
	CHECK(setxattr("f", "user.big", "tiny", 4, 0));
	cr_assert_eq(getxattr("f", "user.big", buf, sizeof(buf)), 4);
	assert_bytes("user.big replaced", buf, "tiny", 4, 0);

	CHECK(removexattr("f", "user.a"));
	FAILS_WITH(ENODATA, getxattr("f", "user.a", buf, sizeof(buf)));
	FAILS_WITH(ENODATA, removexattr("f", "user.a"));
	len = user_xattrs("f", &list);
	cr_assert(!has_name(list, len, "user.a"), "a removed name is still listed");
	free(list);

	/* Through an fd, and on a directory. */
	fd = CHECK(open("f", O_RDONLY));
	CHECK(fsetxattr(fd, "user.fd", "via fd", 6, 0));
	cr_assert_eq(fgetxattr(fd, "user.fd", buf, sizeof(buf)), 6);
	CHECK(close(fd));
	cr_assert_eq(getxattr("f", "user.fd", buf, sizeof(buf)), 6);
	assert_bytes("user.fd", buf, "via fd", 6, 0);
	CHECK(mkdir("d", 0755));
	CHECK(setxattr("d", "user.dir", "on a dir", 8, 0));
	cr_assert_eq(getxattr("d", "user.dir", buf, sizeof(buf)), 8);
	assert_bytes("user.dir", buf, "on a dir", 8, 0);
	free(big);
}

Test(xattr, create_replace_flags)
{
	char buf[16];

	write_str("f", "x");
	CHECK(setxattr("f", "user.k", "one", 3, XATTR_CREATE));
	FAILS_WITH(EEXIST, setxattr("f", "user.k", "two", 3, XATTR_CREATE));
	cr_assert_eq(getxattr("f", "user.k", buf, sizeof(buf)), 3);
	assert_bytes("after a failed XATTR_CREATE", buf, "one", 3, 0);
	FAILS_WITH(ENODATA, setxattr("f", "user.none", "v", 1, XATTR_REPLACE));
	FAILS_WITH(ENODATA, getxattr("f", "user.none", buf, sizeof(buf)));
	CHECK(setxattr("f", "user.k", "three", 5, XATTR_REPLACE));
	cr_assert_eq(getxattr("f", "user.k", buf, sizeof(buf)), 5);
	assert_bytes("after XATTR_REPLACE", buf, "three", 5, 0);
}

Test(xattr, shared_by_hard_links_and_kept_by_rename)
{
	char buf[16];

	write_str("a", "x");
	CHECK(setxattr("a", "user.k", "inode", 5, 0));
	CHECK(link("a", "b"));
	cr_assert_eq(getxattr("b", "user.k", buf, sizeof(buf)), 5, "xattrs belong to the inode");
	CHECK(setxattr("b", "user.k2", "2", 1, 0));
	cr_assert_eq(getxattr("a", "user.k2", buf, sizeof(buf)), 1);
	CHECK(rename("a", "c"));
	cr_assert_eq(getxattr("c", "user.k", buf, sizeof(buf)), 5, "rename lost an xattr");
	assert_bytes("after rename", buf, "inode", 5, 0);
}

/* ---- rename ---- */

Test(rename, overwrite_file)
{
	ino_t ino;

	write_str("a", "content of a");
	write_str("b", "content of b, longer");
	ino = xstat("a").st_ino;
	CHECK(rename("a", "b"));
	assert_absent("a");
	assert_str("b", "content of a");
	cr_assert_eq(xstat("b").st_ino, ino, "rename keeps the inode");
	cr_assert_eq(xstat("b").st_nlink, 1);
}

Test(rename, across_directories)
{
	CHECK(mkdir("d1", 0755));
	CHECK(mkdir("d2", 0755));
	write_str("d1/f", "moving");
	CHECK(rename("d1/f", "d2/g"));
	assert_absent("d1/f");
	assert_str("d2/g", "moving");
	write_str("d1/h", "over");
	CHECK(rename("d2/g", "d1/h"));
	assert_str("d1/h", "moving");
	assert_absent("d2/g");
}

Test(rename, directory_to_new_parent)
{
	struct stat st;

	CHECK(mkdir("d1", 0755));
	CHECK(mkdir("d2", 0755));
	CHECK(mkdir("d1/sub", 0755));
	CHECK(mkdir("d1/sub/deeper", 0755));
	write_str("d1/sub/f", "inside");
	write_str("d1/sub/deeper/g", "deeper");
	CHECK(rename("d1/sub", "d2/moved"));
	assert_absent("d1/sub");
	assert_str("d2/moved/f", "inside");
	assert_str("d2/moved/deeper/g", "deeper");
	st = xstat("d2/moved/..");
	cr_assert_eq(st.st_ino, xstat("d2").st_ino,
		     "\"..\" of a moved directory is its new parent");
	cr_assert_eq(xstat("d1").st_nlink, 2);
	cr_assert_eq(xstat("d2").st_nlink, 3);
	cr_assert_eq(xstat("d2/moved").st_nlink, 3);
}

Test(rename, directory_over_empty_directory)
{
	CHECK(mkdir("a", 0755));
	write_str("a/f", "from a");
	CHECK(mkdir("b", 0755));
	CHECK(rename("a", "b"));
	assert_absent("a");
	assert_str("b/f", "from a");
	cr_assert_eq(xstat(".").st_nlink, 3, "one subdirectory left");
}

Test(rename, errors)
{
	CHECK(mkdir("a", 0755));
	write_str("a/f", "keep");
	CHECK(mkdir("full", 0755));
	write_str("full/g", "keep too");
	write_str("file", "file");
	CHECK(mkdir("a/b", 0755));
	CHECK(mkdir("a/b/c", 0755));

	FAILS_WITH(ENOTEMPTY, rename("a", "full"));
	assert_str("a/f", "keep");
	assert_str("full/g", "keep too");
	FAILS_WITH(EINVAL, rename("a", "a/b/c/inside"));
	FAILS_WITH(EINVAL, rename("a", "a/b/inside"));
	cr_assert(S_ISDIR(xstat("a/b/c").st_mode));
	FAILS_WITH(EISDIR, rename("file", "full"));
	FAILS_WITH(ENOTDIR, rename("full", "file"));
	FAILS_WITH(ENOENT, rename("missing", "x"));
	FAILS_WITH(ENOENT, rename("file", "missing/x"));
	assert_str("file", "file");
}

Test(rename, same_inode_is_a_no_op)
{
	write_str("a", "one inode");
	CHECK(link("a", "b"));
	CHECK(rename("a", "b"));
	/* POSIX: both names stay when they already are the same file. */
	assert_str("a", "one inode");
	assert_str("b", "one inode");
	cr_assert_eq(xstat("a").st_nlink, 2);
}

Test(rename, noreplace)
{
	write_str("a", "a");
	write_str("b", "b");
	FAILS_WITH(EEXIST, renameat2_("a", "b", RENAME_NOREPLACE));
	assert_str("a", "a");
	assert_str("b", "b");
	CHECK(mkdir("d", 0755));
	FAILS_WITH(EEXIST, renameat2_("a", "d", RENAME_NOREPLACE));
	CHECK(renameat2_("a", "c", RENAME_NOREPLACE));
	assert_absent("a");
	assert_str("c", "a");
}

Test(rename, exchange)
{
	ino_t ia, ib;

	write_str("a", "content a");
	write_str("b", "content b");
	ia = xstat("a").st_ino;
	ib = xstat("b").st_ino;
	CHECK(renameat2_("a", "b", RENAME_EXCHANGE));
	assert_str("a", "content b");
	assert_str("b", "content a");
	cr_assert(xstat("a").st_ino == ib && xstat("b").st_ino == ia, "inodes not swapped");

	/* A file and a directory in different parents: link counts follow the directory. */
	CHECK(mkdir("d1", 0755));
	CHECK(mkdir("d2", 0755));
	CHECK(mkdir("d1/sub", 0755));
	write_str("d1/sub/inner", "inner");
	write_str("d2/file", "file");
	CHECK(renameat2_("d1/sub", "d2/file", RENAME_EXCHANGE));
	assert_str("d1/sub", "file");
	assert_str("d2/file/inner", "inner");
	cr_assert_eq(xstat("d1").st_nlink, 2, "d1 lost its subdirectory");
	cr_assert_eq(xstat("d2").st_nlink, 3, "d2 gained a subdirectory");
	cr_assert_eq(xstat("d2/file/..").st_ino, xstat("d2").st_ino);

	FAILS_WITH(ENOENT, renameat2_("a", "missing", RENAME_EXCHANGE));
	FAILS_WITH(EINVAL, renameat2_("a", "b", RENAME_EXCHANGE | RENAME_NOREPLACE));
}

/* ---- open files that lose their name ---- */

Test(open, unlink_open_file)
{
	struct stat st;
	struct dirent *de;
	DIR *dir;
	int fd;

	CHECK(mkdir("d", 0755));
	fd = CHECK(open("d/f", O_RDWR | O_CREAT | O_EXCL, 0644));
	write_all(fd, "before unlink", 13);
	CHECK(unlink("d/f"));
	assert_absent("d/f");
	CHECK(fstat(fd, &st));
	cr_assert_eq(st.st_nlink, 0, "st_nlink %ju for an unlinked open file",
		     (uintmax_t)st.st_nlink);
	/* The fd still reads and writes. */
	assert_fd_content(fd, "unlinked file", "before unlink", 13);
	pwrite_all(fd, ", after", 7, 13);
	assert_fd_content(fd, "unlinked file", "before unlink, after", 20);
	CHECK(fstat(fd, &st));
	cr_assert_eq(st.st_size, 20);
	/* No trace of it remains in the directory, which can go. */
	dir = opendir("d");
	cr_assert_not_null(dir);
	while ((de = readdir(dir)))
		cr_assert(!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."),
			  "\"%s\" listed after the only file was unlinked", de->d_name);
	CHECK(closedir(dir));
	CHECK(rmdir("d"));
	assert_fd_content(fd, "unlinked file after rmdir", "before unlink, after", 20);
	CHECK(close(fd));
}

Test(open, rename_over_open_file)
{
	char buf[32];
	int old, nfd;

	write_str("target", "old content");
	old = CHECK(open("target", O_RDWR));
	write_str("tmp", "new content!");
	CHECK(rename("tmp", "target"));
	assert_fd_content(old, "fd opened before the rename", "old content", 11);
	assert_str("target", "new content!");
	/* Writes through the old fd go to the replaced inode only. */
	pwrite_all(old, "OLD", 3, 0);
	assert_str("target", "new content!");
	nfd = CHECK(open("target", O_RDONLY));
	cr_assert_eq(pread(nfd, buf, sizeof(buf), 0), 12);
	CHECK(close(nfd));
	assert_fd_content(old, "old fd after writing", "OLD content", 11);
	CHECK(close(old));
}

Test(open, mmap_read_and_shared_write)
{
	const size_t len = 3 * 4096 + 100;
	uint8_t *p = pattern(len, 21), *m;
	int fd;

	write_file("f", p, len, 0644);
	fd = CHECK(open("f", O_RDWR));
	m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(m != MAP_FAILED, "mmap MAP_SHARED: %s", strerror(errno));
	assert_bytes("mmap read", m, p, len, 0);
	memcpy(m + 5000, "mapped write", 12);
	memcpy(p + 5000, "mapped write", 12);
	CHECK(msync(m, len, MS_SYNC));
	CHECK(munmap(m, len));
	CHECK(close(fd));
	assert_content("f", p, len);
	free(p);
}

/* ---- durability calls ---- */

Test(sync, fsync_fdatasync_dirs)
{
	int fd, dfd;

	CHECK(mkdir("d", 0755));
	fd = CHECK(open("d/f", O_WRONLY | O_CREAT | O_EXCL, 0644));
	write_all(fd, "durable", 7);
	CHECK(fsync(fd));
	write_all(fd, " and more", 9);
	CHECK(fdatasync(fd));
	CHECK(syncfs(fd));
	CHECK(close(fd));
	fd = CHECK(open("d/f", O_RDONLY));
	CHECK(fsync(fd)); /* allowed on a read-only fd */
	CHECK(close(fd));
	dfd = CHECK(open("d", O_RDONLY | O_DIRECTORY));
	CHECK(fsync(dfd));
	CHECK(fdatasync(dfd));
	CHECK(close(dfd));
	dfd = CHECK(open(".", O_RDONLY | O_DIRECTORY));
	CHECK(fsync(dfd));
	CHECK(close(dfd));
	assert_str("d/f", "durable and more");
}

/* ---- locks ---- */

Test(locks, flock_between_open_file_descriptions)
{
	int a, b;

	write_str("f", "x");
	a = CHECK(open("f", O_RDONLY));
	b = CHECK(open("f", O_RDWR));
	CHECK(flock(a, LOCK_EX | LOCK_NB));
	FAILS_WITH(EWOULDBLOCK, flock(b, LOCK_EX | LOCK_NB));
	FAILS_WITH(EWOULDBLOCK, flock(b, LOCK_SH | LOCK_NB));
	CHECK(flock(a, LOCK_UN));
	CHECK(flock(b, LOCK_SH | LOCK_NB));
	CHECK(flock(a, LOCK_SH | LOCK_NB));
	FAILS_WITH(EWOULDBLOCK, flock(a, LOCK_EX | LOCK_NB));
	CHECK(flock(b, LOCK_UN));
	CHECK(flock(a, LOCK_EX | LOCK_NB)); /* upgrade once alone */
	/* Closing the last fd of a description releases its lock. */
	CHECK(close(a));
	CHECK(flock(b, LOCK_EX | LOCK_NB));
	CHECK(close(b));
}

Test(locks, fcntl_setlk_between_processes)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100};
	int fd, to_child[2], to_parent[2];
	pid_t pid;
	char c;

	write_str("f", "0123456789");
	fd = CHECK(open("f", O_RDWR));
	CHECK(fcntl(fd, F_SETLK, &fl));
	CHECK(pipe(to_child));
	CHECK(pipe(to_parent));
	pid = CHECK(fork());
	if (pid == 0) {
		struct flock g = {
			.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 50, .l_len = 10};
		int cfd = open("f", O_RDWR);
		int r;

		CHILD_CHECK(cfd >= 0, "open");
		r = fcntl(cfd, F_SETLK, &g);
		CHILD_CHECK(r == -1 && (errno == EAGAIN || errno == EACCES),
			    "F_SETLK on a range the parent holds returned %d", r);
		g.l_type = F_RDLCK;
		r = fcntl(cfd, F_SETLK, &g);
		CHILD_CHECK(r == -1 && (errno == EAGAIN || errno == EACCES),
			    "read lock under the parent's write lock returned %d", r);
		g.l_type = F_WRLCK;
		CHILD_CHECK(fcntl(cfd, F_GETLK, &g) == 0, "F_GETLK");
		CHILD_CHECK(g.l_type == F_WRLCK && g.l_pid == getppid() && g.l_start == 0 &&
				    g.l_len == 100,
			    "F_GETLK: type %d pid %d range %jd+%jd, expected the parent's "
			    "write lock %d 0+100",
			    g.l_type, (int)g.l_pid, (intmax_t)g.l_start, (intmax_t)g.l_len,
			    (int)getppid());
		g = (struct flock){
			.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 100};
		CHILD_CHECK(fcntl(cfd, F_SETLK, &g) == 0, "a disjoint range must lock");
		CHILD_CHECK(write(to_parent[1], "1", 1) == 1, "pipe");
		CHILD_CHECK(read(to_child[0], &c, 1) == 1, "pipe");
		/* The parent has unlocked: now the range is free. */
		g = (struct flock){
			.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 50, .l_len = 10};
		CHILD_CHECK(fcntl(cfd, F_SETLK, &g) == 0, "lock after the parent unlocked");
		_exit(0);
	}
	cr_assert_eq(read(to_parent[0], &c, 1), 1, "child died before its checks (above)");
	/* The child holds 100+100 now. */
	struct flock h = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 150, .l_len = 1};

	errno = 0;
	cr_assert(fcntl(fd, F_SETLK, &h) == -1 && (errno == EAGAIN || errno == EACCES),
		  "F_SETLK on the child's range: %s", errname(errno));
	fl.l_type = F_UNLCK;
	CHECK(fcntl(fd, F_SETLK, &fl));
	CHECK(write(to_child[1], "1", 1));
	wait_children(&pid, 1, "child");
	/* Its locks died with it. */
	CHECK(fcntl(fd, F_SETLK, &h));
	CHECK(close(fd));
}

/* ---- concurrency ---- */

#define CREATORS 8
#define CREATOR_FILES 200

static size_t creator_len(int c, int i)
{
	return (size_t)((c * 7919 + i * 104729) % 70000) + (size_t)i % 3;
}

Test(concurrency, creators_writers_renamers)
{
	/*
	 * 8 processes each create 200 files under temporary names, write them, and rename them
	 * into one shared directory; every file must then hold exactly what its writer wrote.
	 */
	pid_t pids[CREATORS];
	char name[64], tmp[64];
	int go[2], count = 0;
	struct dirent *de;
	DIR *d;

	CHECK(mkdir("out", 0755));
	CHECK(mkdir("tmp", 0755));
	CHECK(pipe(go));
	for (int c = 0; c < CREATORS; c++) {
		pids[c] = CHECK(fork());
		if (pids[c] == 0) {
			uint8_t *buf = malloc(70003);
			char ch;

			close(go[1]);
			CHILD_CHECK(buf, "malloc");
			CHILD_CHECK(read(go[0], &ch, 1) == 0, "waiting for the start");
			for (int i = 0; i < CREATOR_FILES; i++) {
				size_t len = creator_len(c, i), done = 0;
				int fd;

				snprintf(tmp, sizeof(tmp), "tmp/c%d-%d.tmp", c, i);
				snprintf(name, sizeof(name), "out/c%d-%d", c, i);
				fill_pattern(buf, len, (uint64_t)c << 32 | (uint64_t)i, 0);
				fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
				CHILD_CHECK(fd >= 0, "create %s", tmp);
				while (done < len) {
					ssize_t n = write(fd, buf + done, len - done);

					CHILD_CHECK(n > 0, "write %s", tmp);
					done += (size_t)n;
				}
				CHILD_CHECK(close(fd) == 0, "close %s", tmp);
				CHILD_CHECK(rename(tmp, name) == 0, "rename %s to %s", tmp, name);
			}
			free(buf);
			_exit(0);
		}
	}
	close(go[0]);
	close(go[1]);
	wait_children(pids, CREATORS, "creator");

	uint8_t *want = xmalloc(70003);

	for (int c = 0; c < CREATORS; c++) {
		for (int i = 0; i < CREATOR_FILES; i++) {
			size_t len = creator_len(c, i);

			snprintf(name, sizeof(name), "out/c%d-%d", c, i);
			fill_pattern(want, len, (uint64_t)c << 32 | (uint64_t)i, 0);
			assert_content(name, want, len);
		}
	}
	free(want);
	d = opendir("out");
	cr_assert_not_null(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			count++;
	CHECK(closedir(d));
	cr_assert_eq(count, CREATORS * CREATOR_FILES, "out/ lists %d files, expected %d", count,
		     CREATORS * CREATOR_FILES);
	CHECK(rmdir("tmp")); /* every temporary name is gone */
}

/* ---- package-manager patterns ---- */

Test(clients, pip_publish)
{
	/*
	 * pip's cache (adjacent_tmp_file + replace): write a temp file next to the target, make it
	 * world-readable, fsync it, rename it over the target. A reader that opened the old file
	 * keeps reading the old version.
	 */
	const size_t len = 300 * KiB;
	uint8_t *p = pattern(len, 31), *old = pattern(1000, 32);
	int fd, reader;

	CHECK(mkdir("http", 0755));
	write_file("http/entry", old, 1000, 0600);
	reader = CHECK(open("http/entry", O_RDONLY));
	for (int round = 0; round < 3; round++) {
		fd = CHECK(open("http/entry.tmp123", O_WRONLY | O_CREAT | O_EXCL, 0600));
		write_all(fd, p, len);
		CHECK(fchmod(fd, 0644));
		CHECK(fsync(fd));
		CHECK(close(fd));
		CHECK(rename("http/entry.tmp123", "http/entry"));
		assert_content("http/entry", p, len);
		cr_assert_eq(xstat("http/entry").st_mode & 07777, 0644);
		assert_absent("http/entry.tmp123");
		fill_pattern(p, len, 33 + (uint64_t)round, 0);
	}
	assert_fd_content(reader, "reader of the first version", old, 1000);
	CHECK(close(reader));
	free(p);
	free(old);
}

/* Writes the tree uv would unpack: nested dirs, files, an executable, a symlink. */
static void make_tree(const char *root, uint64_t seed)
{
	char path[PATH_MAX];
	uint8_t *p = pattern(50000, seed);

	CHECK(mkdir(root, 0755));
	snprintf(path, sizeof(path), "%s/pkg", root);
	CHECK(mkdir(path, 0755));
	snprintf(path, sizeof(path), "%s/pkg/__init__.py", root);
	write_file(path, p, 1234, 0644);
	snprintf(path, sizeof(path), "%s/pkg/_native.so", root);
	write_file(path, p, 50000, 0755);
	snprintf(path, sizeof(path), "%s/pkg-1.0.dist-info", root);
	CHECK(mkdir(path, 0755));
	snprintf(path, sizeof(path), "%s/pkg-1.0.dist-info/RECORD", root);
	write_file(path, p + 100, 500, 0644);
	snprintf(path, sizeof(path), "%s/pkg/link.py", root);
	CHECK(symlink("__init__.py", path));
	free(p);
}

static void check_tree(const char *root, uint64_t seed)
{
	char path[PATH_MAX], buf[32];
	uint8_t *p = pattern(50000, seed);

	snprintf(path, sizeof(path), "%s/pkg/__init__.py", root);
	assert_content(path, p, 1234);
	snprintf(path, sizeof(path), "%s/pkg/_native.so", root);
	assert_content(path, p, 50000);
	cr_assert_eq(xstat(path).st_mode & 07777, 0755);
	snprintf(path, sizeof(path), "%s/pkg-1.0.dist-info/RECORD", root);
	assert_content(path, p + 100, 500);
	snprintf(path, sizeof(path), "%s/pkg/link.py", root);
	cr_assert_eq(readlink(path, buf, sizeof(buf)), 11);
	assert_bytes("link.py", buf, "__init__.py", 11, 0);
	assert_content(path, p, 1234);
	free(p);
}

Test(clients, uv_tempdir_rename)
{
	/*
	 * uv unpacks into a temporary directory in the cache, then renames it into place. A second
	 * unpacker of the same archive loses the race: RENAME_NOREPLACE (or a plain rename onto the
	 * non-empty winner) fails, and it throws its copy away.
	 */
	CHECK(mkdir("archive-v0", 0755));
	CHECK(mkdir(".tmp", 0755));
	make_tree(".tmp/tmpA", 1);
	CHECK(rename(".tmp/tmpA", "archive-v0/abc123"));
	check_tree("archive-v0/abc123", 1);
	make_tree(".tmp/tmpB", 2);
	FAILS_WITH(EEXIST, renameat2_(".tmp/tmpB", "archive-v0/abc123", RENAME_NOREPLACE));
	FAILS_WITH(ENOTEMPTY, rename(".tmp/tmpB", "archive-v0/abc123"));
	cr_assert_eq(remove_tree(".tmp/tmpB"), 0, "removing the losing copy failed at %s: %s",
		     remove_error_path, strerror(remove_error));
	check_tree("archive-v0/abc123", 1);
	CHECK(rmdir(".tmp"));
}

#define LOCKERS 4
#define LOCK_ROUNDS 100

Test(clients, uv_noreplace_lock)
{
	/*
	 * RENAME_NOREPLACE as a lock: each round, 4 processes race to rename their own file onto
	 * the round's lock name; exactly one must win each round, and the lock holds its content.
	 */
	pid_t pids[LOCKERS];
	int go[2], res[2], wins[LOCK_ROUNDS] = {0};
	char name[64], buf[32];
	unsigned char rec[2];
	ssize_t n;

	CHECK(pipe(go));
	CHECK(pipe(res));
	for (int w = 0; w < LOCKERS; w++) {
		pids[w] = CHECK(fork());
		if (pids[w] == 0) {
			char mine[64], lock[64], c;

			close(go[1]);
			close(res[0]);
			CHILD_CHECK(read(go[0], &c, 1) == 0, "waiting for the start");
			for (int r = 0; r < LOCK_ROUNDS; r++) {
				int fd;

				snprintf(mine, sizeof(mine), "w%d.r%d", w, r);
				snprintf(lock, sizeof(lock), "lock.%d", r);
				fd = open(mine, O_WRONLY | O_CREAT | O_EXCL, 0644);
				CHILD_CHECK(fd >= 0, "create %s", mine);
				CHILD_CHECK(write(fd, mine, strlen(mine)) == (ssize_t)strlen(mine),
					    "write");
				CHILD_CHECK(close(fd) == 0, "close");
				if (renameat2_(mine, lock, RENAME_NOREPLACE) == 0) {
					unsigned char msg[2] = {(unsigned char)w, (unsigned char)r};

					CHILD_CHECK(write(res[1], msg, 2) == 2, "pipe");
				} else {
					CHILD_CHECK(errno == EEXIST, "losing rename of %s", mine);
					CHILD_CHECK(unlink(mine) == 0, "unlink %s", mine);
				}
			}
			_exit(0);
		}
	}
	close(go[0]);
	close(res[1]);
	close(go[1]);
	while ((n = read(res[0], rec, 2)) == 2) {
		cr_assert(rec[1] < LOCK_ROUNDS);
		wins[rec[1]]++;
		snprintf(name, sizeof(name), "lock.%d", rec[1]);
		snprintf(buf, sizeof(buf), "w%d.r%d", rec[0], rec[1]);
		assert_str(name, buf);
	}
	close(res[0]);
	wait_children(pids, LOCKERS, "locker");
	for (int r = 0; r < LOCK_ROUNDS; r++)
		cr_assert_eq(wins[r], 1, "round %d: %d winners of the RENAME_NOREPLACE lock", r,
			     wins[r]);
}

/* ---- another user, through allow_other ---- */

struct other_user {
	uid_t uid;
	gid_t gid;
	const char *name;
};

static struct other_user other_user(void)
{
	const char *name = getenv("PKGCACHEFS_TEST_OTHER_USER");
	struct passwd *pw;

	if (!name || !*name)
		skip_test("PKGCACHEFS_TEST_OTHER_USER is not set (posix-allow-other sets it)");
	if (geteuid() != 0)
		skip_test("switching to user %s needs root", name);
	pw = getpwnam(name);
	cr_assert_not_null(pw, "PKGCACHEFS_TEST_OTHER_USER=%s: no such user", name);
	cr_assert_neq(pw->pw_uid, 0, "PKGCACHEFS_TEST_OTHER_USER must not be root");
	return (struct other_user){pw->pw_uid, pw->pw_gid, name};
}

/* Forks a child that becomes u and runs fn; the test fails unless fn returns. */
static void as_other_user(const struct other_user *u, void (*fn)(const struct other_user *))
{
	pid_t pid = CHECK(fork());

	if (pid == 0) {
		CHILD_CHECK(setgroups(0, NULL) == 0, "setgroups");
		CHILD_CHECK(setresgid(u->gid, u->gid, u->gid) == 0, "setresgid");
		CHILD_CHECK(setresuid(u->uid, u->uid, u->uid) == 0, "setresuid");
		CHILD_CHECK(geteuid() == u->uid && getegid() == u->gid, "still privileged");
		fn(u);
		_exit(0);
	}
	wait_children(&pid, 1, "child running as the other user");
}

#define OTHER_FAILS_WITH(err, expr)                                                                \
	do {                                                                                       \
		errno = 0;                                                                         \
		long r_ = (long)(expr);                                                            \
		CHILD_CHECK(r_ == -1 && errno == (err), "as %s: %s: expected -1 with %s, got %ld", \
			    u->name, #expr, errname(err), r_);                                     \
	} while (0)

static void other_private_file(const struct other_user *u)
{
	OTHER_FAILS_WITH(EACCES, open("f600", O_RDONLY));
	OTHER_FAILS_WITH(EACCES, open("f600", O_WRONLY));
}

Test(other_user, mode_0600_file_is_closed)
{
	struct other_user u = other_user();

	write_file("f600", "secret", 6, 0600);
	as_other_user(&u, other_private_file);
}

static void other_readable_file(const struct other_user *u)
{
	char buf[16];
	int fd = open("f644", O_RDONLY);

	CHILD_CHECK(fd >= 0, "as %s: open of a 0644 file for reading", u->name);
	CHILD_CHECK(read(fd, buf, sizeof(buf)) == 6 && !memcmp(buf, "public", 6),
		    "as %s: reading a 0644 file", u->name);
	close(fd);
	OTHER_FAILS_WITH(EACCES, open("f644", O_WRONLY));
	OTHER_FAILS_WITH(EACCES, open("f644", O_RDWR));
	OTHER_FAILS_WITH(EACCES, open("f644", O_RDONLY | O_TRUNC));
	OTHER_FAILS_WITH(EACCES, truncate("f644", 0));
	OTHER_FAILS_WITH(EACCES, access("f644", W_OK));
	CHILD_CHECK(access("f644", R_OK) == 0, "as %s: access(R_OK) of a 0644 file", u->name);
	OTHER_FAILS_WITH(EPERM, chmod("f644", 0666));
	OTHER_FAILS_WITH(EPERM, chown("f644", u->uid, u->gid));
	OTHER_FAILS_WITH(EACCES, utimensat(AT_FDCWD, "f644", NULL, 0));
	OTHER_FAILS_WITH(EACCES, setxattr("f644", "user.k", "v", 1, 0));
	CHILD_CHECK(getxattr("f644", "user.k", buf, sizeof(buf)) == 6 && !memcmp(buf, "public", 6),
		    "as %s: reading a user xattr of a readable file", u->name);
}

Test(other_user, mode_0644_file_is_readable)
{
	struct other_user u = other_user();

	write_file("f644", "public", 6, 0644);
	CHECK(setxattr("f644", "user.k", "public", 6, 0));
	as_other_user(&u, other_readable_file);
	assert_str("f644", "public");
	cr_assert_eq(xstat("f644").st_mode & 07777, 0644);
}

static void other_writable_file(const struct other_user *u)
{
	const struct timespec t[2] = {{1000000000, 0}, {1000000000, 0}};
	int fd = open("f666", O_WRONLY | O_APPEND);

	CHILD_CHECK(fd >= 0, "as %s: open of a 0666 file for writing", u->name);
	CHILD_CHECK(write(fd, "+other", 6) == 6, "as %s: write to a 0666 file", u->name);
	close(fd);
	CHILD_CHECK(utimensat(AT_FDCWD, "f666", NULL, 0) == 0,
		    "as %s: setting a writable file's times to now", u->name);
	OTHER_FAILS_WITH(EPERM, utimensat(AT_FDCWD, "f666", t, 0));
	OTHER_FAILS_WITH(EPERM, chmod("f666", 0600));
}

Test(other_user, mode_0666_file_is_writable)
{
	struct other_user u = other_user();

	write_file("f666", "root", 4, 0666);
	CHECK(chmod("f666", 0666));
	as_other_user(&u, other_writable_file);
	assert_str("f666", "root+other");
	cr_assert_eq(xstat("f666").st_uid, 0, "a write by another user changed the owner");
}

static void other_closed_dir(const struct other_user *u)
{
	struct stat st;
	DIR *d;

	OTHER_FAILS_WITH(EACCES, open("d755/new", O_WRONLY | O_CREAT, 0644));
	OTHER_FAILS_WITH(EACCES, mkdir("d755/newdir", 0755));
	OTHER_FAILS_WITH(EACCES, unlink("d755/f"));
	OTHER_FAILS_WITH(EACCES, rename("d755/f", "d755/g"));
	CHILD_CHECK(stat("d755/f", &st) == 0, "as %s: stat in a 0755 directory", u->name);
	d = opendir("d755");
	CHILD_CHECK(d != NULL, "as %s: listing a 0755 directory", u->name);
	closedir(d);
	OTHER_FAILS_WITH(EACCES, stat("d700/f", &st));
	errno = 0;
	d = opendir("d700");
	CHILD_CHECK(d == NULL && errno == EACCES, "as %s: listing a 0700 directory", u->name);
}

Test(other_user, mode_0755_dir_is_read_only)
{
	struct other_user u = other_user();

	CHECK(mkdir("d755", 0755));
	write_str("d755/f", "x");
	CHECK(mkdir("d700", 0700));
	write_str("d700/f", "x");
	as_other_user(&u, other_closed_dir);
	assert_absent("d755/new");
	assert_absent("d755/newdir");
	assert_str("d755/f", "x");
}

static void other_open_dir(const struct other_user *u)
{
	struct stat st;
	char buf[16];
	int fd;

	fd = open("d777/mine", O_RDWR | O_CREAT | O_EXCL, 0644);
	CHILD_CHECK(fd >= 0, "as %s: create in a 0777 directory", u->name);
	CHILD_CHECK(fstat(fd, &st) == 0 && st.st_uid == u->uid && st.st_gid == u->gid,
		    "as %s: the new file is owned by %u:%u, expected %u:%u", u->name, st.st_uid,
		    st.st_gid, u->uid, u->gid);
	CHILD_CHECK(write(fd, "by other", 8) == 8, "write");
	CHILD_CHECK(pread(fd, buf, sizeof(buf), 0) == 8 && !memcmp(buf, "by other", 8), "read");
	close(fd);
	CHILD_CHECK(mkdir("d777/mydir", 0755) == 0, "as %s: mkdir in a 0777 directory", u->name);
	CHILD_CHECK(rename("d777/mine", "d777/mydir/moved") == 0, "as %s: rename", u->name);
	/* The sticky bit: others' files cannot be removed. */
	OTHER_FAILS_WITH(EPERM, unlink("d1777/roots"));
	CHILD_CHECK(close(open("d1777/own", O_WRONLY | O_CREAT, 0644)) == 0, "create in 01777");
	CHILD_CHECK(unlink("d1777/own") == 0, "as %s: unlink own file in a 01777 dir", u->name);
}

Test(other_user, mode_0777_dir_is_writable)
{
	struct other_user u = other_user();
	struct stat st;

	CHECK(mkdir("d777", 0777));
	CHECK(chmod("d777", 0777));
	CHECK(mkdir("d1777", 0777));
	CHECK(chmod("d1777", 01777));
	write_str("d1777/roots", "root's");
	as_other_user(&u, other_open_dir);
	assert_str("d777/mydir/moved", "by other");
	st = xstat("d777/mydir/moved");
	cr_assert(st.st_uid == u.uid && st.st_gid == u.gid, "owner %u:%u, expected %u:%u",
		  st.st_uid, st.st_gid, u.uid, u.gid);
	assert_str("d1777/roots", "root's");
}
