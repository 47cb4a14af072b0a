/* SPDX-License-Identifier: MIT */
/*
 * The store directory (index/store.c) and the read counters (index/counters.c), without a
 * mount: the lock, the config and its damage, the recorded remote, chunks appended and read back
 * verified, and the counters file's round trip and its malformed forms.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunker.h"
#include "counters.h"
#include "hash.h"
#include "idx.h"
#include "store.h"

static char dir[] = "/tmp/pkgcachefs-test-store-XXXXXX";
static char sdir[sizeof(dir) + 8];

static void setup(void)
{
	cr_assert_not_null(mkdtemp(dir));
	snprintf(sdir, sizeof(sdir), "%s/s", dir);
}

static void teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(store, .init = setup, .fini = teardown);
TestSuite(counters, .init = setup, .fini = teardown);

static size_t read_config(char *buf, size_t len)
{
	char path[300];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/config", sdir);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	n = fread(buf, 1, len - 1, f);
	fclose(f);
	buf[n] = '\0';
	return n;
}

Test(store, one_lock_holder_at_a_time)
{
	struct store *a, *b;

	cr_assert_eq(store_open(sdir, STORE_LOCK, &a, NULL), -ENOENT, "no store, no CREATE");
	cr_assert_eq(store_open(sdir, STORE_CREATE | STORE_LOCK, &a, NULL), 0);
	cr_assert_geq(store_lock_fd(a), 0);
	cr_assert_eq(store_open(sdir, STORE_LOCK, &b, NULL), -EBUSY, "a second holder");
	cr_assert_eq(store_open(sdir, 0, &b, NULL), 0, "readers need no lock");
	cr_assert_eq(store_lock_fd(b), -1);
	cr_assert_eq(store_close(b), 0);
	cr_assert_eq(store_close(a), 0);
	cr_assert_eq(store_open(sdir, STORE_LOCK, &a, NULL), 0, "the lock is released by close");
	cr_assert_eq(store_close(a), 0);
	cr_assert_eq(store_close(NULL), 0);
}

/*
 * Only the lock holder caches inode rows: a store opened without the lock (fsck, stats beside a
 * running daemon) must see each change the holder commits, not a row it read before.
 */
Test(store, an_unlocked_open_sees_what_the_lock_holder_commits)
{
	struct idx_inode in = {.mode = 0100644, .nlink = 1}, out;
	struct store *holder, *other;
	uint64_t ino;

	cr_assert_eq(store_open(sdir, STORE_CREATE | STORE_LOCK, &holder, NULL), 0);
	cr_assert_eq(idx_begin(store_idx(holder)), 0);
	cr_assert_eq(idx_new_inode(store_idx(holder), &in, &ino), 0);
	cr_assert_eq(idx_commit(store_idx(holder)), 0);

	cr_assert_eq(store_open(sdir, 0, &other, NULL), 0);
	cr_assert_eq(idx_get_inode(store_idx(other), ino, &out), 1);
	cr_assert_eq(out.uid, 0);

	cr_assert_eq(idx_begin(store_idx(holder)), 0);
	out.uid = 42;
	cr_assert_eq(idx_put_inode(store_idx(holder), &out), 0);
	cr_assert_eq(idx_commit(store_idx(holder)), 0);

	cr_assert_eq(idx_get_inode(store_idx(other), ino, &out), 1);
	cr_assert_eq(out.uid, 42, "the unlocked open answered from a stale row (uid %u)", out.uid);
	store_close(other);
	store_close(holder);
}

Test(store, the_config_it_writes_parses_and_damage_is_refused)
{
	struct chunker_params p;
	struct store_remote_cfg rc;
	struct store *st;
	char text[STORE_CONFIG_MAX], bad[STORE_CONFIG_MAX + 64];
	size_t n;

	cr_assert_eq(store_open(sdir, STORE_CREATE, &st, NULL), 0);
	cr_assert_eq(store_close(st), 0);
	n = read_config(text, sizeof(text));
	cr_assert_eq(store_parse_config(text, n, &p, &rc), 0, "%s", text);
	cr_assert_eq(p.avg, 65536, "the default average chunk: %u", (unsigned)p.avg);
	cr_assert_str_empty(rc.url);

	snprintf(bad, sizeof(bad), "%scolour = blue\n", text);
	cr_assert_eq(store_parse_config(bad, strlen(bad), &p, &rc), -EUCLEAN, "an unknown key");
	snprintf(bad, sizeof(bad), "format = 99\n");
	cr_assert_eq(store_parse_config(bad, strlen(bad), &p, &rc), -EPROTO, "a newer format");
	snprintf(bad, sizeof(bad),
		 "format = 1\nchunk_min = 16384\nchunk_avg = 1000\nchunk_max = 2\n");
	cr_assert_eq(store_parse_config(bad, strlen(bad), &p, &rc), -EUCLEAN, "bad chunker sizes");
	memset(bad, '#', sizeof(bad));
	cr_assert_eq(store_parse_config(bad, STORE_CONFIG_MAX, &p, &rc), -EUCLEAN, "too long");

	/* A damaged config on disk: store_open says so rather than guessing. */
	{
		char path[300];
		FILE *f;

		snprintf(path, sizeof(path), "%s/config", sdir);
		f = fopen(path, "w");
		cr_assert_not_null(f);
		fputs("format = 1\nchunk_avg = banana\n", f);
		fclose(f);
	}
	cr_assert_eq(store_open(sdir, 0, &st, NULL), -EUCLEAN);
}

Test(store, the_recorded_remote_survives_reopen_and_bad_values_are_refused)
{
	struct store_remote_cfg rc = {0};
	struct store *st;

	cr_assert_eq(store_open(sdir, STORE_CREATE | STORE_LOCK, &st, NULL), 0);
	snprintf(rc.url, sizeof(rc.url), "https://cache.example/pkg/");
	snprintf(rc.ca_file, sizeof(rc.ca_file), "ca.pem");
	cr_assert_eq(store_set_remote_config(st, &rc), -EINVAL, "a relative TLS path");
	snprintf(rc.ca_file, sizeof(rc.ca_file), "/etc/ca dir/ca.pem");
	cr_assert_eq(store_set_remote_config(st, &rc), -EINVAL, "whitespace");
	snprintf(rc.ca_file, sizeof(rc.ca_file), "/etc/pkgcachefs/ca.pem");
	cr_assert_eq(store_set_remote_config(st, &rc), 0);
	cr_assert_eq(store_close(st), 0);

	cr_assert_eq(store_open(sdir, 0, &st, NULL), 0);
	cr_assert_str_eq(store_remote(st), "https://cache.example/pkg/");
	cr_assert_str_eq(store_remote_config(st)->ca_file, "/etc/pkgcachefs/ca.pem");
	cr_assert_str_empty(store_remote_config(st)->client_cert);
	cr_assert_eq(store_close(st), 0);
}

Test(store, chunks_read_back_verified_and_damage_is_eio)
{
	static uint8_t data[100000], back[100000];
	chunk_key key, other;
	chunk_digest digest;
	struct pack_loc loc;
	struct store *st;
	uint64_t pack;
	char name[32];
	int fd;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + i / 251);
	hash_key(data, sizeof(data), &key);
	hash_digest(data, sizeof(data), &digest);
	cr_assert_eq(store_open(sdir, STORE_CREATE | STORE_LOCK, &st, NULL), 0);
	cr_assert_eq(idx_begin(store_idx(st)), 0);
	cr_assert_eq(store_append_chunk(st, &key, &digest, data, sizeof(data), &pack, &loc), 0);
	cr_assert_eq(store_active_pack(st), pack);
	cr_assert_eq(store_sync_packs(st), 0);
	cr_assert_eq(idx_commit(store_idx(st)), 0);

	cr_assert_eq(store_read_chunk(st, pack, &loc, &key, back, sizeof(back)), 0);
	cr_assert_eq(memcmp(back, data, sizeof(data)), 0);
	other = key;
	other.b[0] ^= 1;
	cr_assert_eq(store_read_chunk(st, pack, &loc, &other, back, sizeof(back)), -EIO,
		     "the key in the pack must be the one asked for");

	store_pack_name(pack, name, sizeof(name));
	fd = openat(store_packs_fd(st), name, O_WRONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, "\xff\xff\xff\xff", 4, (off_t)(loc.offset + loc.stored_len / 2)),
		     4);
	close(fd);
	store_drop_pack_fds(st);
	cr_assert_eq(store_read_chunk(st, pack, &loc, &key, back, sizeof(back)), -EIO,
		     "damaged bytes are never returned");
	cr_assert_eq(store_close(st), 0);
}

Test(counters, saved_and_loaded_with_names_of_any_bytes)
{
	struct counters c = COUNTERS_INIT, d = COUNTERS_INIT;
	const uint64_t v1[CTR_COUNT] = {1, 100, 2, 200, 3}, v2[CTR_COUNT] = {10, 20, 30, 40, 50};
	const char *odd = "a dir%with \xc3\xa9 and\ttab";
	const struct counters_row *row;
	char path[300];

	snprintf(path, sizeof(path), "%s/counters", dir);
	cr_assert_eq(counters_load(path, &c), 0, "no file yet: nothing, no error");
	cr_assert_eq(c.n, 0);
	cr_assert_eq(counters_add(&c, "pip", v1), 0);
	cr_assert_eq(counters_add(&c, odd, v2), 0);
	cr_assert_eq(counters_add(&c, CTR_OTHER, v1), 0);
	cr_assert_eq(counters_add(&c, "pip", v2), 0, "adds to the existing row");
	cr_assert_eq(c.n, 3);
	cr_assert_eq(counters_save(path, &c), 0);

	cr_assert_eq(counters_load(path, &d), 0);
	cr_assert_eq(d.n, 3);
	row = counters_find(&d, "pip");
	cr_assert_not_null(row);
	for (int i = 0; i < CTR_COUNT; i++)
		cr_assert_eq(row->v[i], v1[i] + v2[i]);
	row = counters_find(&d, odd);
	cr_assert_not_null(row, "a name with spaces, %%, tabs and UTF-8 comes back as it was");
	cr_assert_eq(row->v[CTR_READS_FAILED], 50);
	cr_assert_not_null(counters_find(&d, CTR_OTHER));
	cr_assert_null(counters_find(&d, "npm"));
	/* Loading again adds: the daemon adds this session's counts to what earlier ones left. */
	cr_assert_eq(counters_load(path, &d), 0);
	cr_assert_eq(counters_find(&d, "pip")->v[CTR_READS_LOCAL], 2 * (v1[0] + v2[0]));
	counters_release(&c);
	counters_release(&d);
	cr_assert_eq(d.n, 0);
}

static int load_text(const char *text, struct counters *c)
{
	char path[300];
	FILE *f;

	snprintf(path, sizeof(path), "%s/counters", dir);
	f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	return counters_load(path, c);
}

Test(counters, a_malformed_file_is_an_error_and_keeps_what_came_before)
{
	static const char *const bad[] = {
		"not-counters 1\n",
		"pkgcachefs-counters 2\n",
		"pkgcachefs-counters 1\n1 2 3 4 pip\n",
		"pkgcachefs-counters 1\n1 2 3 4 x5 pip\n",
		"pkgcachefs-counters 1\n1 2 3 4 5 bad%zzname\n",
		"pkgcachefs-counters 1\n99999999999999999999999 2 3 4 5 pip\n",
	};
	struct counters c = COUNTERS_INIT;
	char big[600], out[CTR_NAME_MAX + 1];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_eq(load_text(bad[i], &c), -EBADMSG, "accepted: %s", bad[i]);
		counters_release(&c);
	}
	cr_assert_eq(load_text("pkgcachefs-counters 1\n1 2 3 4 5 pip\n1 2 x\n", &c), -EBADMSG);
	cr_assert_not_null(counters_find(&c, "pip"), "the good line before the bad one is kept");
	counters_release(&c);

	memset(big, 'n', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	cr_assert_eq(counters_decode_name(big, out), -EBADMSG, "a name over CTR_NAME_MAX");
}

Test(counters, names_encode_and_decode_both_ways)
{
	const char *names[] = {"pip", "a b", "100%", "\x01\x7f\xff", CTR_OTHER};
	char out[CTR_NAME_MAX + 1];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *text = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&text, &len);

		counters_encode_name(f, names[i]);
		fclose(f);
		cr_assert_null(strpbrk(text, " \t\n"), "a field of its own: '%s'", text);
		cr_assert_eq(counters_decode_name(text, out), 0, "%s", text);
		cr_assert_str_eq(out, names[i], "'%s' came back as '%s'", names[i], out);
		free(text);
	}
}
