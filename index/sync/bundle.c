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

int sync_export(struct store *st, const char *base, const char *out,
		void (*progress)(void *data, uint64_t done, uint64_t total), void *data,
		struct sync_report *ret)
{
	const struct chunker_params *cp = store_chunker_params(st);
	struct push p = {.st = st, .rep = ret};
	struct smap inbase = {0}, packed = {0};
	struct pack_writer *w = NULL;
	struct cat_writer *cw = NULL;
	uint8_t host[16] = {0}, sha[32], *buf = NULL, hdr[BUNDLE_HDR];
	char tmp[4200], pfile[64];
	void *toc = NULL;
	size_t toclen = 0;
	uint64_t psize = 0;
	uint32_t base_idx = 0, own_idx = 0;
	int fd = -1, pfd = -1, rr;

	memset(ret, 0, sizeof(*ret));
	if (base) {
		struct cat *b;
		uint64_t poff, size;

		fd = open(base, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		rr = bundle_toc(st, fd, &b, &poff, &size);
		close(fd);
		fd = -1;
		if (rr < 0)
			return rr;
		for (size_t i = 0; i < b->n_chunks && rr == 0; i++) {
			char id[97];

			chunk_id_hex(&b->chunks[i].key, &b->chunks[i].digest, id);
			rr = smap_put(&inbase, id, (void *)1);
		}
		cat_free(b);
		if (rr < 0)
			goto out;
	}
	/* Every entry, from a snapshot of the index: an empty base makes all of them changes. */
	rr = snap_open(&p);
	if (rr == 0)
		rr = snap_walk(&p, IDX_ROOT_INO, "");
	if (rr < 0)
		goto out;
	buf = malloc(PACK_MAX_CHUNK);
	snprintf(pfile, sizeof(pfile), "export-%d.pack", (int)getpid());
	unlinkat(store_staging_fd(st), pfile, 0);
	rr = buf ? pack_writer_create(store_staging_fd(st), pfile, 0, &w) : -ENOMEM;
	if (rr == 0)
		rr = cat_writer_new(CAT_BUNDLE, host, now_ns(), cp->min, cp->avg, cp->max, &cw);
	/* The pack's name and size are known only at the end: placeholders, fixed below. */
	if (rr == 0)
		rr = cat_writer_add_pack(cw, base_pack_name, UINT64_MAX, &base_idx);
	for (size_t i = 0; i < p.npe && rr == 0; i++) {
		struct pentry *pe = &p.pe[i];

		if (progress)
			progress(data, i, p.npe);
		for (size_t j = 0; j < pe->nnx && rr == 0; j++) {
			const struct idx_extent *e = pe->nx[j].e;
			struct pack_loc *loc;
			char id[97];

			if (!pe->nx[j].chunk)
				continue;
			chunk_id_hex(&e->key, &e->digest, id);
			if (smap_get(&inbase, id) || smap_get(&packed, id))
				continue;
			if (!e->pack) {
				pe->skip = true; /* only on the remote: pull first */
				continue;
			}
			rr = store_read_chunk(st, e->pack, &e->loc, &e->key, buf, e->len);
			if (rr < 0) {
				pe->skip = true;
				rr = 0;
				continue;
			}
			loc = malloc(sizeof(*loc));
			rr = loc ? pack_writer_append(w, &e->key, &e->digest, buf, e->len, true,
						      loc)
				 : -ENOMEM;
			if (rr == 0)
				rr = smap_put(&packed, id, loc);
			if (rr < 0) {
				free(loc);
				break;
			}
			ret->chunks_uploaded++;
		}
	}
	if (rr == 0)
		rr = pack_writer_seal(w);
	if (rr < 0)
		goto out;
	psize = pack_writer_size(w);
	pack_writer_free(w);
	w = NULL;
	/* The pack goes into the bundle as it is; its SHA-256 names it in the table of contents. */
	pfd = openat(store_staging_fd(st), pfile, O_RDONLY | O_CLOEXEC);
	if (pfd < 0) {
		rr = -errno;
		goto out;
	}
	{
		uint8_t *all = malloc(psize);
		chunk_digest d;

		rr = all ? pread_all(pfd, all, psize, 0) : -ENOMEM;
		if (rr == 0) {
			hash_digest(all, psize, &d);
			memcpy(sha, d.b, 32);
		}
		free(all);
		if (rr < 0)
			goto out;
	}
	rr = cat_writer_add_pack(cw, sha, psize, &own_idx);
	for (size_t i = 0; i < p.npe && rr == 0; i++) {
		struct pentry *pe = &p.pe[i];
		struct cat_extent *cx = NULL;
		struct cat_entry ce;

		if (pe->skip) {
			ret->skipped++;
			continue;
		}
		if (pe->nnx) {
			cx = calloc(pe->nnx, sizeof(*cx));
			if (!cx) {
				rr = -ENOMEM;
				break;
			}
		}
		for (size_t j = 0; j < pe->nnx && rr == 0; j++) {
			const struct idx_extent *e = pe->nx[j].e;
			struct cat_chunk ch;
			struct pack_loc *loc;
			char id[97];

			cx[j].len = pe->nx[j].len;
			cx[j].chunk = CAT_HOLE;
			if (!pe->nx[j].chunk)
				continue;
			memset(&ch, 0, sizeof(ch));
			ch.key = e->key;
			ch.digest = e->digest;
			ch.raw_len = e->len;
			chunk_id_hex(&e->key, &e->digest, id);
			loc = smap_get(&packed, id);
			if (loc) {
				ch.pack = own_idx;
				ch.off = loc->offset;
				ch.stored_len = loc->stored_len;
				ch.flags = loc->flags;
			} else {
				ch.pack = base_idx;
				ch.stored_len = e->len;
			}
			rr = cat_writer_add_chunk(cw, &ch, &cx[j].chunk);
		}
		ce = cat_entry_of(pe, cx);
		if (rr == 0)
			rr = cat_writer_add_entry(cw, &ce);
		ret->upserts++;
		free(cx);
	}
	if (rr == 0)
		rr = cat_writer_finish(cw, &toc, &toclen, sha);
	cw = NULL;
	if (rr < 0)
		goto out;

	/* Header, table of contents, pack: written to a temp name, synced, renamed. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", out);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rr = -errno;
		goto out;
	}
	memcpy(hdr, bundle_magic, 8);
	for (int i = 0; i < 8; i++)
		hdr[8 + i] = (uint8_t)((uint64_t)toclen >> (8 * i));
	rr = pwrite_all(fd, hdr, sizeof(hdr), 0);
	if (rr == 0)
		rr = pwrite_all(fd, toc, toclen, BUNDLE_HDR);
	for (uint64_t off = 0; rr == 0 && off < psize;) {
		size_t n = (size_t)MIN((uint64_t)PACK_MAX_CHUNK, psize - off);

		rr = pread_all(pfd, buf, n, (off_t)off);
		if (rr == 0)
			rr = pwrite_all(fd, buf, n, (off_t)(BUNDLE_HDR + toclen + off));
		off += n;
	}
	if (rr == 0 && fsync(fd) < 0)
		rr = -errno;
	close(fd);
	fd = -1;
	if (rr == 0 && rename(tmp, out) < 0)
		rr = -errno;
	if (rr < 0)
		unlink(tmp);
	ret->bytes_uploaded = BUNDLE_HDR + toclen + psize;
	if (progress)
		progress(data, p.npe, p.npe);
out:
	if (pfd >= 0)
		close(pfd);
	unlinkat(store_staging_fd(st), pfile, 0);
	pack_writer_free(w);
	cat_writer_free(cw);
	free(toc);
	free(buf);
	smap_free(&inbase, NULL);
	smap_free(&packed, free);
	push_free(&p);
	return rr;
}

int sync_import(struct store *st, const char *file,
		void (*progress)(void *data, uint64_t done, uint64_t total), void *data,
		struct sync_report *ret)
{
	struct idx *x = store_idx(st);
	struct merge m = {.st = st, .x = x, .rep = ret, .local_only = true};
	uint64_t poff = 0, size = 0, done = 0;
	uint8_t *raw = NULL, *ent = NULL;
	struct cat *c = NULL;
	uint32_t own = UINT32_MAX;
	size_t missing = 0;
	int fd, rr;

	memset(ret, 0, sizeof(*ret));
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rr = bundle_toc(st, fd, &c, &poff, &size);
	if (rr < 0)
		goto out;
	for (size_t i = 0; i < c->n_packs; i++)
		if (memcmp(c->packs[i].name, base_pack_name, 32) != 0)
			own = (uint32_t)i;
	if (own != UINT32_MAX && c->packs[own].size != size - poff) {
		rr = -EBADMSG; /* truncated or padded */
		goto out;
	}
	raw = malloc(PACK_MAX_CHUNK);
	ent = malloc(PACK_ENTRY_HDR_SIZE + PACK_MAX_CHUNK + 65536);
	if (!raw || !ent) {
		rr = -ENOMEM;
		goto out;
	}
	rr = idx_begin(x);
	if (rr == 0)
		rr = idx_init_root(x, getuid(), getgid(), now_ns());
	/* Chunks first, each verified against its key and SHA-256 as it is read. */
	for (size_t i = 0; i < c->n_chunks && rr == 0; i++) {
		const struct cat_chunk *ch = &c->chunks[i];
		struct pack_loc loc = chunk_rloc(ch), nloc;
		uint64_t id, pack;
		size_t len = PACK_ENTRY_HDR_SIZE + ch->stored_len;
		int found;

		found = idx_find_chunk(x, &ch->key, &ch->digest, &id, &pack, NULL);
		if (found < 0) {
			rr = found;
			break;
		}
		if (ch->pack != own) {
			/* The base's: it must be here (or on the remote) already. */
			if (!found)
				missing++;
			continue;
		}
		if (found && pack)
			continue;
		rr = pread_all(fd, ent, len, (off_t)(poff + ch->off));
		if (rr == 0)
			rr = pack_decode_entry(ent, len, &loc, &ch->key, &ch->digest, raw,
					       ch->raw_len);
		if (rr < 0) {
			rr = -EBADMSG;
			break;
		}
		rr = store_append_chunk(st, &ch->key, &ch->digest, raw, ch->raw_len, &pack, &nloc);
		if (rr == 0)
			rr = found ? idx_set_chunk_local(x, id, &ch->key, pack, &nloc)
				   : idx_add_chunk(x, &ch->key, &ch->digest, ch->raw_len, pack,
						   &nloc, &id);
		done += ch->raw_len;
		ret->chunks_uploaded++;
		if (progress && i % 64 == 0)
			progress(data, done, size - poff);
	}
	if (rr == 0 && missing) {
		log_debug("%zu chunks of the base are missing", missing);
		rr = -ENOENT;
	}
	/* Then the names: a local change newer than the bundle's entry stays. */
	for (size_t i = 0; i < c->n_entries && rr == 0; i++) {
		const struct cat_entry *e = &c->entries[i];
		uint8_t ltype, lsig[16], sig[16];
		int64_t lstamp;
		int hl;

		cat_entry_sig(e, c->chunks, sig);
		hl = local_entry(&m, e->path, &ltype, &lstamp, lsig);
		if (hl < 0) {
			rr = hl;
			break;
		}
		if (hl && memcmp(lsig, sig, 16) == 0)
			continue; /* here already */
		if (hl && lstamp > e->stamp) {
			ret->kept_local++;
			continue;
		}
		rr = merge_apply(&m, c, NULL, e);
		ret->applied++;
	}
	if (rr == 0)
		rr = store_sync_packs(st);
	if (rr == 0)
		rr = idx_commit(x);
	if (rr < 0)
		idx_rollback(x);
	ret->bytes_uploaded = done;
	if (progress)
		progress(data, done, done);
out:
	smap_free(&m.dirs, NULL);
	cat_free(c);
	free(raw);
	free(ent);
	close(fd);
	return rr;
}
