/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for import bundles (built and run by tests/fuzz/run-fuzz.sh, not by meson),
 * end to end through the public sync_import into a store on tmpfs: the bundle header (magic, u64
 * length of the table of contents), the table of contents (a CAT_BUNDLE catalog), the pack after
 * it, each chunk's entry verified and stored, then the entries merged into the namespace.
 *
 * Every input is imported as it is. An input whose table of contents decodes after repair is also
 * imported repaired, so that mutations reach the pack and the merge behind the catalog's checks:
 * a table of contents given in the harness-only raw form of fuzz_catalog.c ("PKGCRAW1", a 72-byte
 * header and the uncompressed body) is compressed and sealed, a "PKGCCAT1" one has its trailer
 * recomputed, and either is re-encoded with its own pack's size set to the bytes that follow.
 *
 * Each input meets a store in the same state: the store is created empty, and made anew after an
 * import that started a pack or succeeded. Invariants: sync_import returns 0, -EBADMSG, -ENOENT
 * (a base not imported), -EPROTO or -EPROTONOSUPPORT (another format or chunk size) or -ENOMEM;
 * after a success, fsck finds the store clean.
 *
 * FUZZ_TMP (default /dev/shm) is where the scratch directory goes; it is removed at exit.
 * Built with -DFUZZ_GEN, a main() that writes the seed corpus: bundles exported by sync_export
 * from a store filled through the vfs (full, incremental, the raw form), and a few broken ones.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "catalog.h"
#include "fuzz.h"
#include "maint.h"
#include "store.h"
#include "sync.h"

#define BHDR 16u
#define CHDR 72u
#define CTRAILER 32u

static char scratch[256], store_path[300], bundle_path[300];
static struct store *st;
static unsigned generation;

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void store_reset(void)
{
	if (st) {
		store_close(st);
		st = NULL;
		nftw(store_path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	}
	snprintf(store_path, sizeof(store_path), "%s/store%u", scratch, generation++);
	CHECK(store_open(store_path, STORE_CREATE | STORE_LOCK, &st, NULL) == 0);
}

static void cleanup(void)
{
	store_close(st);
	if (*scratch)
		nftw(scratch, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
	const char *tmp = getenv("FUZZ_TMP");

	snprintf(scratch, sizeof(scratch), "%s/pkgcachefs-fuzz-bundle-XXXXXX",
		 tmp && *tmp ? tmp : "/dev/shm");
	CHECK(mkdtemp(scratch));
	atexit(cleanup);
	snprintf(bundle_path, sizeof(bundle_path), "%s/in.bundle", scratch);
	store_reset();
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void import(const uint8_t *data, size_t size)
{
	struct sync_report rep;
	int fd, r;

	fd = open(bundle_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0 && write(fd, data, size) == (ssize_t)size && close(fd) == 0);
	r = sync_import(st, bundle_path, NULL, NULL, &rep);
	CHECK(r == 0 || r == -EBADMSG || r == -ENOENT || r == -EPROTO || r == -EPROTONOSUPPORT ||
	      r == -ENOMEM);
	if (r == 0) {
		struct fsck_report fr;
		FILE *out = fopen("/dev/null", "w");

		CHECK(out);
		CHECK(store_seal_active(st) == 0);
		CHECK(maint_fsck(st, false, false, out, &fr, NULL, NULL) == 0);
		CHECK(fsck_clean(&fr));
		fclose(out);
	}
	if (r == 0 || store_active_pack(st) != 0)
		store_reset();
}

/* c re-encoded, with pack `own` of size own_size; NULL when the writer refuses it. */
static void *reencode(const struct cat *c, uint32_t own, uint64_t own_size, size_t *ret_len)
{
	struct cat_writer *w = NULL;
	void *out = NULL;
	uint8_t sha[32];
	uint32_t idx;

	if (cat_writer_new(c->kind, c->host, c->created, c->chunk_min, c->chunk_avg, c->chunk_max,
			   &w) < 0)
		return NULL;
	for (size_t i = 0; i < c->n_packs; i++)
		if (cat_writer_add_pack(w, c->packs[i].name, i == own ? own_size : c->packs[i].size,
					&idx) < 0)
			goto out_free;
	for (size_t i = 0; i < c->n_chunks; i++)
		if (cat_writer_add_chunk(w, &c->chunks[i], &idx) < 0)
			goto out_free;
	for (size_t i = 0; i < c->n_entries; i++)
		if (cat_writer_add_entry(w, &c->entries[i]) < 0)
			goto out_free;
	if (cat_writer_finish(w, &out, ret_len, sha) < 0)
		out = NULL;
	w = NULL;
out_free:
	cat_writer_free(w);
	return out;
}

/* The table of contents toc[0..len) made decodable where the harness can, then re-encoded with
 * the size of its own pack fixed to pack_len, and imported with the pack bytes. */
static void import_repaired(const uint8_t *toc, size_t len, const uint8_t *pack, size_t pack_len)
{
	static const uint8_t base_name[32] = {
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	uint8_t *obj = NULL, *file;
	size_t olen = 0, nlen;
	struct cat *c = NULL;
	uint32_t own = UINT32_MAX;
	chunk_digest d;
	void *n;

	if (len >= CHDR && memcmp(toc, "PKGCRAW1", 8) == 0) {
		size_t body = len - CHDR, bound = ZSTD_compressBound(body), zn;

		obj = malloc(CHDR + bound + CTRAILER);
		CHECK(obj);
		memcpy(obj, toc, CHDR);
		memcpy(obj, "PKGCCAT1", 8);
		put_le64(obj + 64, body);
		zn = ZSTD_compress(obj + CHDR, bound, toc + CHDR, body, 1);
		CHECK(!ZSTD_isError(zn));
		olen = CHDR + zn + CTRAILER;
	} else if (len >= CHDR + CTRAILER && memcmp(toc, "PKGCCAT1", 8) == 0) {
		obj = malloc(len);
		CHECK(obj);
		memcpy(obj, toc, len);
		olen = len;
	} else {
		return;
	}
	hash_digest(obj, olen - CTRAILER, &d);
	memcpy(obj + olen - CTRAILER, d.b, CTRAILER);
	if (cat_decode(obj, olen, &c) < 0 || c->kind != CAT_BUNDLE)
		goto out_free;
	for (size_t i = 0; i < c->n_packs; i++)
		if (memcmp(c->packs[i].name, base_name, 32) != 0)
			own = (uint32_t)i;
	n = reencode(c, own, pack_len, &nlen);
	if (!n)
		goto out_free;
	file = malloc(BHDR + nlen + pack_len);
	CHECK(file);
	memcpy(file, "PKGCBND1", 8);
	put_le64(file + 8, nlen);
	memcpy(file + BHDR, n, nlen);
	memcpy(file + BHDR + nlen, pack, pack_len);
	/* Unchanged: imported as it is already. */
	if (nlen != len || memcmp(n, toc, len) != 0)
		import(file, BHDR + nlen + pack_len);
	free(file);
	free(n);
out_free:
	cat_free(c);
	free(obj);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	uint64_t len;

	if (!st)
		setup();
	import(data, size);
	if (size < BHDR || memcmp(data, "PKGCBND1", 8) != 0)
		return 0;
	len = le64(data + 8);
	if (len > size - BHDR)
		return 0;
	import_repaired(data + BHDR, (size_t)len, data + BHDR + len, size - BHDR - (size_t)len);
	return 0;
}

#ifdef FUZZ_GEN
#include "vfs.h"

static const struct vfs_ctx ctx = {1000, 1000};

static void fill(uint8_t *p, size_t n, uint64_t seed, bool text)
{
	static const char words[] = "def import return self class package wheel version ";

	for (size_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		p[i] = text ? (uint8_t)words[(seed >> 33) % (sizeof(words) - 1)]
			    : (uint8_t)(seed >> 56);
	}
}

static uint64_t put(struct vfs *v, uint64_t parent, const char *name, size_t n, uint64_t seed,
		    bool text)
{
	struct vfs_file *f;
	struct stat s;
	uint8_t *buf = malloc(n + 1);

	CHECK(buf);
	fill(buf, n, seed, text);
	if (vfs_lookup(v, parent, name, &s) == 0) {
		vfs_forget(v, s.st_ino, 1);
		CHECK(vfs_open_file(v, s.st_ino, O_WRONLY | O_TRUNC, &f) == 0);
	} else {
		CHECK(vfs_create(v, &ctx, parent, name, 0644, O_WRONLY, &s, &f) == 0);
	}
	CHECK(vfs_write(v, f, buf, n, 0, NULL, NULL) == (ssize_t)n);
	CHECK(vfs_flush(v, f) == 0);
	vfs_release(v, f);
	free(buf);
	return s.st_ino;
}

static struct vfs *gen_open(const char *dir)
{
	struct vfs_options o = {0};
	struct store *s;
	struct vfs *v;

	CHECK(store_open(dir, STORE_CREATE | STORE_LOCK, &s, NULL) == 0);
	CHECK(vfs_open(s, &o, &v) == 0);
	return v;
}

static void gen_export(const char *dir, const char *base, const char *out)
{
	struct sync_report rep;
	struct store *s;

	CHECK(store_open(dir, 0, &s, NULL) == 0);
	CHECK(sync_export(s, base, out, NULL, NULL, &rep) == 0);
	CHECK(store_close(s) == 0);
}

/* The bundle at path with its table of contents in the harness's raw form. */
static void put_raw(const char *name, const uint8_t *b, size_t blen)
{
	uint64_t tlen = le64(b + 8);
	const uint8_t *toc = b + BHDR;
	unsigned long long body = ZSTD_getFrameContentSize(toc + CHDR, tlen - CHDR - CTRAILER);
	size_t rlen = BHDR + CHDR + body + (blen - BHDR - tlen);
	uint8_t *raw = malloc(rlen);

	CHECK(raw && body < (1u << 24));
	memcpy(raw, b, BHDR);
	put_le64(raw + 8, CHDR + body);
	memcpy(raw + BHDR, toc, CHDR);
	memcpy(raw + BHDR, "PKGCRAW1", 8);
	CHECK(ZSTD_decompress(raw + BHDR + CHDR, body, toc + CHDR, tlen - CHDR - CTRAILER) ==
	      body);
	memcpy(raw + BHDR + CHDR + body, b + BHDR + tlen, blen - BHDR - tlen);
	gen_put(name, raw, rlen);
	free(raw);
}

int main(int argc, char **argv)
{
	char a[400], full[400], inc[400];
	struct vfs *v;
	struct stat s;
	uint64_t pkgs, ino;
	uint8_t *b;
	size_t blen;

	CHECK(argc == 2);
	gen_outdir = argv[1];
	setup();
	snprintf(a, sizeof(a), "%s/a", scratch);
	snprintf(full, sizeof(full), "%s/full.bundle", scratch);
	snprintf(inc, sizeof(inc), "%s/inc.bundle", scratch);

	v = gen_open(a);
	CHECK(vfs_mkdir(v, &ctx, 1, "pkgs", 0755, &s) == 0);
	pkgs = s.st_ino;
	put(v, pkgs, "a.py", 3000, 1, true);
	ino = put(v, pkgs, "b.whl", 5000, 2, false);
	put(v, pkgs, "empty", 0, 3, true);
	put(v, 1, "top.txt", 700, 4, true);
	CHECK(vfs_symlink(v, &ctx, pkgs, "cur", "b.whl", &s) == 0);
	CHECK(vfs_link(v, ino, 1, "hard.whl", &s) == 0);
	CHECK(vfs_close(v) == 0);
	gen_export(a, NULL, full);

	v = gen_open(a);
	CHECK(vfs_lookup(v, 1, "pkgs", &s) == 0);
	pkgs = s.st_ino;
	put(v, pkgs, "a.py", 3100, 5, true);
	put(v, pkgs, "new.bin", 2000, 6, false);
	CHECK(vfs_unlink(v, 1, "top.txt") == 0);
	CHECK(vfs_close(v) == 0);
	gen_export(a, full, inc);

	b = gen_slurp(full, &blen);
	gen_put("valid-full", b, blen);
	put_raw("raw-full", b, blen);
	gen_put("bad-truncated", b, blen - 100);
	b[blen - 50] ^= 1;
	gen_put("bad-data-byte", b, blen);
	b[blen - 50] ^= 1;
	put_le64(b + 8, blen);
	gen_put("bad-toc-len", b, blen);
	free(b);
	b = gen_slurp(inc, &blen);
	gen_put("valid-incremental", b, blen);
	put_raw("raw-incremental", b, blen);
	free(b);
	gen_put("bad-magic-only", "PKGCBND1", 8);
	gen_put("bad-empty", "", 0);
	return 0;
}
#endif
