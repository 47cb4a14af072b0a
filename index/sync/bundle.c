/* SPDX-License-Identifier: MIT */
/*
 * Bundles: export the namespace and the data of the store (or what an earlier bundle lacks) as one
 * file, and import one. Export reads a snapshot (snapshot.c) and takes no lock; import writes the
 * index of a store that is not serving, also with no lock.
 */
#include "sync_priv.h"

static const char bundle_magic[8] = {'P', 'K', 'G', 'C', 'B', 'N', 'D', '1'};
#define BUNDLE_HDR 16u
/* Chunks the base bundle has sit in this pseudo-pack of the table of contents. */
static const uint8_t base_pack_name[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

/* Read and decode a bundle's table of contents; *ret_pack_off gets where its pack starts. */
static int bundle_toc(struct store *st, int fd, struct cat **ret, uint64_t *ret_pack_off,
		      uint64_t *ret_size)
{
	const struct chunker_params *cp = store_chunker_params(st);
	uint8_t hdr[BUNDLE_HDR];
	struct stat stt;
	uint64_t len = 0;
	void *toc;
	int r;

	if (fstat(fd, &stt) < 0)
		return -errno;
	if (pread_all(fd, hdr, sizeof(hdr), 0) < 0 || memcmp(hdr, bundle_magic, 8) != 0)
		return -EBADMSG;
	for (int i = 0; i < 8; i++)
		len |= (uint64_t)hdr[8 + i] << (8 * i);
	if (len == 0 || len > CAT_MAX_BODY || len > (uint64_t)stt.st_size - BUNDLE_HDR)
		return -EBADMSG;
	toc = malloc(len);
	if (!toc)
		return -ENOMEM;
	r = pread_all(fd, toc, len, BUNDLE_HDR);
	if (r == 0)
		r = cat_decode(toc, len, ret);
	free(toc);
	if (r < 0)
		return r == -EIO ? -EBADMSG : r;
	if ((*ret)->kind != CAT_BUNDLE || (*ret)->chunk_min != cp->min ||
	    (*ret)->chunk_avg != cp->avg || (*ret)->chunk_max != cp->max) {
		cat_free(*ret);
		*ret = NULL;
		return -EPROTO;
	}
	*ret_pack_off = BUNDLE_HDR + len;
	*ret_size = (uint64_t)stt.st_size;
	return 0;
}

/* An export under way. */
struct export
{
	struct store *st;
	struct push p;      /* the snapshot's walk: every entry is a change against no base */
	struct smap inbase; /* chunk id (hex) -> 1, for the chunks the base bundle has */
	struct smap packed; /* chunk id (hex) -> struct pack_loc * in the bundle's pack */
	struct pack_writer *w;
	struct cat_writer *cw;
	uint8_t *buf; /* PACK_MAX_CHUNK bytes */
	char pfile[64];
	int pfd;
	uint64_t psize;
	uint32_t base_idx, own_idx;
	void *toc;
	size_t toclen;
	struct sync_report *rep;
	void (*progress)(void *data, uint64_t done, uint64_t total);
	void *data;
};

/* The chunks of bundle base (and so of its own bases), by id. */
static int export_read_base(struct export *x, const char *base)
{
	struct cat *b;
	uint64_t poff, size;
	int fd, r;

	fd = open(base, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = bundle_toc(x->st, fd, &b, &poff, &size);
	close(fd);
	if (r < 0)
		return r;
	for (size_t i = 0; i < b->n_chunks && r == 0; i++) {
		char id[97];

		chunk_id_hex(&b->chunks[i].key, &b->chunks[i].digest, id);
		r = smap_put(&x->inbase, id, (void *)1);
	}
	cat_free(b);
	return r;
}

/* Append the chunks of pe that the base lacks to the bundle's pack; pe->skip when one is not
 * readable here. */
static int export_entry_chunks(struct export *x, struct pentry *pe)
{
	int r = 0;

	for (size_t j = 0; j < pe->nnx && r == 0; j++) {
		const struct idx_extent *e = pe->nx[j].e;
		struct pack_loc *loc;
		char id[97];

		if (!pe->nx[j].chunk)
			continue;
		chunk_id_hex(&e->key, &e->digest, id);
		if (smap_get(&x->inbase, id) || smap_get(&x->packed, id))
			continue;
		if (!e->pack) {
			pe->skip = true; /* only on the remote: pull first */
			continue;
		}
		if (store_read_chunk(x->st, e->pack, &e->loc, &e->key, x->buf, e->len) < 0) {
			pe->skip = true;
			continue;
		}
		loc = malloc(sizeof(*loc));
		r = loc ? pack_writer_append(x->w, &e->key, &e->digest, x->buf, e->len, true, loc)
			: -ENOMEM;
		if (r == 0)
			r = smap_put(&x->packed, id, loc);
		if (r < 0) {
			free(loc);
			break;
		}
		x->rep->chunks_uploaded++;
	}
	return r;
}

/* The bundle's pack in STORE/staging, with every chunk the base lacks; sealed. */
static int export_pack(struct export *x)
{
	const struct chunker_params *cp = store_chunker_params(x->st);
	uint8_t host[16] = {0};
	int r;

	x->buf = malloc(PACK_MAX_CHUNK);
	snprintf(x->pfile, sizeof(x->pfile), "export-%d.pack", (int)getpid());
	unlinkat(store_staging_fd(x->st), x->pfile, 0);
	r = x->buf ? pack_writer_create(store_staging_fd(x->st), x->pfile, 0, &x->w) : -ENOMEM;
	if (r == 0)
		r = cat_writer_new(CAT_BUNDLE, host, now_ns(), cp->min, cp->avg, cp->max, &x->cw);
	/* The pack's name and size are known only at the end: placeholders, fixed below. */
	if (r == 0)
		r = cat_writer_add_pack(x->cw, base_pack_name, UINT64_MAX, &x->base_idx);
	for (size_t i = 0; i < x->p.npe && r == 0; i++) {
		if (x->progress)
			x->progress(x->data, i, x->p.npe);
		r = export_entry_chunks(x, &x->p.pe[i]);
	}
	if (r == 0)
		r = pack_writer_seal(x->w);
	if (r < 0)
		return r;
	x->psize = pack_writer_size(x->w);
	pack_writer_free(x->w);
	x->w = NULL;
	return 0;
}

/* The pack goes into the bundle as it is; its SHA-256 names it in the table of contents. */
static int export_name_pack(struct export *x)
{
	uint8_t *all;
	chunk_digest d;
	int r;

	x->pfd = openat(store_staging_fd(x->st), x->pfile, O_RDONLY | O_CLOEXEC);
	if (x->pfd < 0)
		return -errno;
	all = malloc(x->psize);
	r = all ? pread_all(x->pfd, all, x->psize, 0) : -ENOMEM;
	if (r == 0)
		hash_digest(all, x->psize, &d);
	free(all);
	if (r < 0)
		return r;
	return cat_writer_add_pack(x->cw, d.b, x->psize, &x->own_idx);
}

/* Entry pe into the table of contents, its chunks in the bundle's pack or in the base's. */
static int export_toc_entry(struct export *x, const struct pentry *pe)
{
	struct cat_extent *cx = NULL;
	struct cat_entry ce;
	int r = 0;

	if (pe->nnx) {
		cx = calloc(pe->nnx, sizeof(*cx));
		if (!cx)
			return -ENOMEM;
	}
	for (size_t j = 0; j < pe->nnx && r == 0; j++) {
		const struct idx_extent *e = pe->nx[j].e;
		struct cat_chunk ch = {0};
		struct pack_loc *loc;
		char id[97];

		cx[j].len = pe->nx[j].len;
		cx[j].chunk = CAT_HOLE;
		if (!pe->nx[j].chunk)
			continue;
		ch.key = e->key;
		ch.digest = e->digest;
		ch.raw_len = e->len;
		chunk_id_hex(&e->key, &e->digest, id);
		loc = smap_get(&x->packed, id);
		if (loc) {
			ch.pack = x->own_idx;
			ch.off = loc->offset;
			ch.stored_len = loc->stored_len;
			ch.flags = loc->flags;
		} else {
			ch.pack = x->base_idx;
			ch.stored_len = e->len;
		}
		r = cat_writer_add_chunk(x->cw, &ch, &cx[j].chunk);
	}
	ce = cat_entry_of(pe, cx);
	if (r == 0)
		r = cat_writer_add_entry(x->cw, &ce);
	x->rep->upserts++;
	free(cx);
	return r;
}

/* The table of contents: every entry whose data could be read. */
static int export_toc(struct export *x)
{
	uint8_t sha[32];
	int r = 0;

	for (size_t i = 0; i < x->p.npe && r == 0; i++) {
		if (x->p.pe[i].skip)
			x->rep->skipped++;
		else
			r = export_toc_entry(x, &x->p.pe[i]);
	}
	if (r == 0)
		r = cat_writer_finish(x->cw, &x->toc, &x->toclen, sha);
	x->cw = NULL;
	return r;
}

/* Header, table of contents, pack: written to a temp name, synced, renamed. Once the file is
 * open, the report counts its bytes even when writing fails. */
static int export_write(struct export *x, const char *out)
{
	uint8_t hdr[BUNDLE_HDR];
	char tmp[4200];
	int fd, r;

	snprintf(tmp, sizeof(tmp), "%s.tmp", out);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	memcpy(hdr, bundle_magic, 8);
	for (int i = 0; i < 8; i++)
		hdr[8 + i] = (uint8_t)((uint64_t)x->toclen >> (8 * i));
	r = pwrite_all(fd, hdr, sizeof(hdr), 0);
	if (r == 0)
		r = pwrite_all(fd, x->toc, x->toclen, BUNDLE_HDR);
	for (uint64_t off = 0; r == 0 && off < x->psize;) {
		size_t n = (size_t)MIN((uint64_t)PACK_MAX_CHUNK, x->psize - off);

		r = pread_all(x->pfd, x->buf, n, (off_t)off);
		if (r == 0)
			r = pwrite_all(fd, x->buf, n, (off_t)(BUNDLE_HDR + x->toclen + off));
		off += n;
	}
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (r == 0 && rename(tmp, out) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	x->rep->bytes_uploaded = BUNDLE_HDR + x->toclen + x->psize;
	if (x->progress)
		x->progress(x->data, x->p.npe, x->p.npe);
	return r;
}

static void export_free(struct export *x)
{
	if (x->pfd >= 0)
		close(x->pfd);
	if (x->pfile[0])
		unlinkat(store_staging_fd(x->st), x->pfile, 0);
	pack_writer_free(x->w);
	cat_writer_free(x->cw);
	free(x->toc);
	free(x->buf);
	smap_free(&x->inbase, NULL);
	smap_free(&x->packed, free);
	push_free(&x->p);
}

int sync_export(struct store *st, const char *base, const char *out,
		void (*progress)(void *data, uint64_t done, uint64_t total), void *data,
		struct sync_report *ret)
{
	struct export x = {.st = st,
			   .p = {.st = st, .rep = ret},
			   .pfd = -1,
			   .rep = ret,
			   .progress = progress,
			   .data = data};
	int r = 0;

	memset(ret, 0, sizeof(*ret));
	r = sync_store_untrusted(st, NULL);
	if (r != 0)
		return r < 0 ? r : -EPERM; /* an untrusted job's files do not leave by a bundle */
	if (base) {
		r = export_read_base(&x, base);
		if (r < 0) {
			smap_free(&x.inbase, NULL);
			return r;
		}
	}
	/* Every entry, from a snapshot of the index: an empty base makes all of them changes. */
	r = snap_open(&x.p);
	if (r == 0)
		r = snap_walk(&x.p, IDX_ROOT_INO, "");
	if (r == 0)
		r = export_pack(&x);
	if (r == 0)
		r = export_name_pack(&x);
	if (r == 0)
		r = export_toc(&x);
	if (r == 0)
		r = export_write(&x, out);
	export_free(&x);
	return r;
}

/* An import under way. */
struct import {
	struct store *st;
	struct idx *x;
	int fd;
	struct cat *c; /* the table of contents */
	uint64_t poff; /* where the bundle's pack starts */
	uint64_t size; /* of the file */
	uint32_t own;  /* the bundle's own pack in c, UINT32_MAX when it has none */
	uint8_t *raw, *ent;
	uint64_t done; /* raw bytes stored */
	struct sync_report *rep;
	void (*progress)(void *data, uint64_t done, uint64_t total);
	void *data;
};

/* Store chunk i of the bundle's pack here, verified against its key and SHA-256 as it is read. */
static int import_chunk(struct import *im, size_t i, int found, uint64_t id)
{
	const struct cat_chunk *ch = &im->c->chunks[i];
	struct pack_loc loc = chunk_rloc(ch), nloc;
	size_t len = PACK_ENTRY_HDR_SIZE + ch->stored_len;
	uint64_t pack;
	int r;

	r = pread_all(im->fd, im->ent, len, (off_t)(im->poff + ch->off));
	if (r == 0)
		r = pack_decode_entry(im->ent, len, &loc, &ch->key, &ch->digest, im->raw,
				      ch->raw_len);
	if (r < 0)
		return -EBADMSG;
	r = store_append_chunk(im->st, &ch->key, &ch->digest, im->raw, ch->raw_len, &pack, &nloc);
	if (r == 0)
		r = found ? idx_set_chunk_local(im->x, id, &ch->key, pack, &nloc)
			  : idx_add_chunk(im->x, &ch->key, &ch->digest, ch->raw_len, pack, &nloc,
					  &id);
	im->done += ch->raw_len;
	im->rep->chunks_uploaded++;
	if (im->progress && i % 64 == 0)
		im->progress(im->data, im->done, im->size - im->poff);
	return r;
}

/* Chunks first: those of the bundle's pack not here yet are stored; those of the base must be
 * here (or on the remote) already: -ENOENT when some are not. */
static int import_chunks(struct import *im)
{
	size_t missing = 0;
	int r = 0;

	for (size_t i = 0; i < im->c->n_chunks && r == 0; i++) {
		const struct cat_chunk *ch = &im->c->chunks[i];
		uint64_t id, pack;
		int found;

		found = idx_find_chunk(im->x, &ch->key, &ch->digest, &id, &pack, NULL);
		if (found < 0)
			return found;
		if (ch->pack != im->own) {
			if (!found)
				missing++;
			continue;
		}
		if (found && pack)
			continue;
		r = import_chunk(im, i, found, id);
	}
	if (r == 0 && missing) {
		log_debug("%zu chunks of the base are missing", missing);
		r = -ENOENT;
	}
	return r;
}

/* Then the names: a local change newer than the bundle's entry stays. */
static int import_entries(struct import *im, struct merge *m)
{
	const struct cat *c = im->c;
	unsigned flags = pull_pick_flags(im->x);
	uint64_t cleared = 0, refused = 0;
	int r = 0;

	for (size_t i = 0; i < c->n_entries && r == 0; i++) {
		struct cat_entry own = c->entries[i];
		const struct cat_entry *e = &own;
		uint8_t ltype, lsig[16], sig[16];
		int64_t lstamp;
		int hl;

		/* A bundle is treated as a pull is (docs/security.md). */
		if (own.type == CAT_E_SYMLINK && !symlink_target_contained(own.path, own.target)) {
			if (refused++ == 0)
				log_warn("refused symbolic link %s of the bundle: its target is "
					 "absolute or leaves the mount",
					 own.path);
			continue;
		}
		if (!(flags & PICK_KEEP_SUID) && (own.mode & (S_ISUID | S_ISGID))) {
			own.mode &= ~(uint32_t)(S_ISUID | S_ISGID);
			cleared++;
		}
		cat_entry_sig(e, c->chunks, sig);
		hl = local_entry(m, e->path, &ltype, &lstamp, lsig);
		if (hl < 0)
			return hl;
		if (hl && memcmp(lsig, sig, 16) == 0)
			continue; /* here already */
		if (hl && lstamp > e->stamp) {
			im->rep->kept_local++;
			continue;
		}
		r = merge_apply(m, c, NULL, e);
		im->rep->applied++;
	}
	if (cleared)
		log_info("cleared the setuid and setgid bits of %" PRIu64 " entries of the bundle",
			 cleared);
	if (refused > 1)
		log_warn("refused %" PRIu64 " symbolic links of the bundle in all", refused);
	return r;
}

/* The table of contents of the open bundle, checked against the file's size. */
static int import_open(struct import *im)
{
	int r = bundle_toc(im->st, im->fd, &im->c, &im->poff, &im->size);

	if (r < 0)
		return r;
	for (size_t i = 0; i < im->c->n_packs; i++)
		if (memcmp(im->c->packs[i].name, base_pack_name, 32) != 0)
			im->own = (uint32_t)i;
	if (im->own != UINT32_MAX && im->c->packs[im->own].size != im->size - im->poff)
		return -EBADMSG; /* truncated or padded */
	im->raw = malloc(PACK_MAX_CHUNK);
	im->ent = malloc(PACK_ENTRY_HDR_SIZE + PACK_MAX_CHUNK + 65536);
	return im->raw && im->ent ? 0 : -ENOMEM;
}

int sync_import(struct store *st, const char *file,
		void (*progress)(void *data, uint64_t done, uint64_t total), void *data,
		struct sync_report *ret)
{
	struct idx *x = store_idx(st);
	struct merge m = {.st = st, .x = x, .rep = ret, .local_only = true};
	struct import im = {.st = st,
			    .x = x,
			    .own = UINT32_MAX,
			    .rep = ret,
			    .progress = progress,
			    .data = data};
	int r;

	memset(ret, 0, sizeof(*ret));
	im.fd = open(file, O_RDONLY | O_CLOEXEC);
	if (im.fd < 0)
		return -errno;
	r = import_open(&im);
	if (r < 0)
		goto out;
	r = idx_begin(x);
	if (r == 0)
		r = idx_init_root(x, getuid(), getgid(), now_ns());
	if (r == 0)
		r = import_chunks(&im);
	if (r == 0)
		r = import_entries(&im, &m);
	if (r == 0)
		r = store_sync_packs(st);
	if (r == 0)
		r = idx_commit(x);
	if (r < 0)
		idx_rollback(x);
	ret->bytes_uploaded = im.done;
	if (progress)
		progress(data, im.done, im.done);
out:
	smap_free(&m.dirs, NULL);
	cat_free(im.c);
	free(im.raw);
	free(im.ent);
	close(im.fd);
	return r;
}
