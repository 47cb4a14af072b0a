/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the two config texts (built and run by tests/fuzz/run-fuzz.sh, not by
 * meson): the store's STORE/config (store_parse_config, what store_open reads) and a remote's
 * "config" object (parsed by sync_check_remote, reached through the public API: the input is put
 * as the config of a file:// remote in a tmpfs directory, checked against a store created once
 * there, and bound to it).
 *
 * Invariants. Store config: 0, -EUCLEAN or -EPROTO; what parses has valid chunker parameters and
 * a remote without blanks, and writing it back the way store_open does (same lines) parses to the
 * same values. Remote config: 0 or -EPROTO with a NUL-terminated message; 0 only when the text
 * has a line for each of the store's chunk sizes.
 *
 * FUZZ_TMP (default /dev/shm) is where the scratch directory goes; it is removed at exit.
 * Built with -DFUZZ_GEN, a main() that writes the seed corpus: a store's config and a remote's
 * config written by the real code, and a few broken ones.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "remote.h"
#include "store.h"
#include "sync.h"

static char scratch[256];
static struct store *st;
static struct remote *rem;
static char cfg_path[300];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void cleanup(void)
{
	store_close(st);
	remote_free(rem);
	if (*scratch)
		nftw(scratch, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
	const char *tmp = getenv("FUZZ_TMP");
	char path[300], url[320], err[256];

	snprintf(scratch, sizeof(scratch), "%s/pkgcachefs-fuzz-config-XXXXXX",
		 tmp && *tmp ? tmp : "/dev/shm");
	CHECK(mkdtemp(scratch));
	atexit(cleanup);
	snprintf(path, sizeof(path), "%s/store", scratch);
	CHECK(store_open(path, STORE_CREATE | STORE_LOCK, &st, NULL) == 0);
	snprintf(path, sizeof(path), "%s/remote", scratch);
	CHECK(mkdir(path, 0700) == 0);
	snprintf(url, sizeof(url), "file://%s", path);
	CHECK(remote_open(url, NULL, &rem, err, sizeof(err)) == 0);
	snprintf(cfg_path, sizeof(cfg_path), "%s/remote/config", scratch);
}

static void store_config(const uint8_t *data, size_t size)
{
	static struct store_remote_cfg rc, rc2;
	static char text[STORE_CONFIG_MAX];
	const char *keys[] = {"remote", "remote_ca_file", "remote_client_cert",
			      "remote_client_key"};
	const char *vals[] = {rc.url, rc.ca_file, rc.client_cert, rc.client_key};
	struct chunker_params p, p2;
	int r, n;

	r = store_parse_config((const char *)data, size, &p, &rc);
	CHECK(r == 0 || r == -EUCLEAN || r == -EPROTO);
	if (r != 0)
		return;
	CHECK(chunker_params_validate(&p) == 0);
	n = snprintf(text, sizeof(text),
		     "# comment\nformat = %d\nchunk_min = %u\nchunk_avg = %u\n"
		     "chunk_max = %u\n",
		     STORE_FORMAT_VERSION, p.min, p.avg, p.max);
	for (size_t i = 0; i < 4; i++) {
		CHECK(strlen(vals[i]) < STORE_REMOTE_MAX && !strpbrk(vals[i], " \t\n"));
		CHECK(i == 0 || !*vals[i] || vals[i][0] == '/');
		if (*vals[i])
			n += snprintf(text + n, sizeof(text) - (size_t)n, "%s = %s\n", keys[i],
				      vals[i]);
	}
	CHECK(store_parse_config(text, (size_t)n, &p2, &rc2) == 0);
	CHECK(p.min == p2.min && p.avg == p2.avg && p.max == p2.max);
	CHECK(memcmp(&rc, &rc2, sizeof(rc)) == 0);
}

static void remote_config(const uint8_t *data, size_t size)
{
	char err[256];
	int fd, r;

	fd = open(cfg_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0 && write(fd, data, size) == (ssize_t)size && close(fd) == 0);
	memset(err, 'x', sizeof(err));
	r = sync_check_remote(st, rem, SYNC_REMOTE_BIND, err, sizeof(err));
	CHECK(r == 0 || r == -EPROTO);
	if (r < 0) {
		CHECK(memchr(err, '\0', sizeof(err)));
		return;
	}
	/* Each of the store's sizes was read from a line of its own. */
	CHECK(memmem(data, size, "format", 6) && memmem(data, size, "chunk_min", 9) &&
	      memmem(data, size, "chunk_avg", 9) && memmem(data, size, "chunk_max", 9));
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	if (!st)
		setup();
	store_config(data, size);
	remote_config(data, size);
	return 0;
}

#ifdef FUZZ_GEN
static void gen_puts(const char *name, const char *text)
{
	gen_put(name, text, strlen(text));
}

int main(int argc, char **argv)
{
	char err[256], path[600], url[600];
	struct remote *r;
	uint8_t *p;
	size_t len;

	CHECK(argc == 2);
	gen_outdir = argv[1];
	setup();
	snprintf(path, sizeof(path), "%s/store/config", scratch);
	p = gen_slurp(path, &len);
	gen_put("store-default", p, len);
	free(p);
	CHECK(store_set_remote_config(
		      st,
		      &(struct store_remote_cfg){
			      .url = "s3://bucket/prefix?endpoint=http://127.0.0.1:9000"}) == 0);
	p = gen_slurp(path, &len);
	gen_put("store-with-remote", p, len);
	free(p);
	CHECK(store_set_remote_config(
		      st, &(struct store_remote_cfg){.url = "https://cache.example.com/pkgcache/",
						     .ca_file = "/etc/pkgcachefs/ca.pem",
						     .client_cert = "/etc/pkgcachefs/runner.pem",
						     .client_key = "/etc/pkgcachefs/runner.key"}) ==
	      0);
	p = gen_slurp(path, &len);
	gen_put("store-with-tls", p, len);
	free(p);

	/* The config a new remote gets from the first store that meets it. */
	snprintf(path, sizeof(path), "%s/new-remote", scratch);
	CHECK(mkdir(path, 0700) == 0);
	snprintf(url, sizeof(url), "file://%s", path);
	CHECK(remote_open(url, NULL, &r, err, sizeof(err)) == 0);
	CHECK(sync_check_remote(st, r, SYNC_REMOTE_CREATE, err, sizeof(err)) == 0);
	remote_free(r);
	snprintf(path, sizeof(path), "%s/new-remote/config", scratch);
	p = gen_slurp(path, &len);
	gen_put("remote-new", p, len);
	free(p);

	gen_puts("remote-no-id", "format = 1\nchunk_min = 16384\nchunk_avg = 65536\n"
				 "chunk_max = 262144\n");
	gen_puts("bad-newer-format", "format = 2\nchunk_min = 16384\nchunk_avg = 65536\n"
				     "chunk_max = 262144\n");
	gen_puts("bad-params", "format = 1\nchunk_min = 65536\nchunk_avg = 16384\n"
			       "chunk_max = 262144\n");
	gen_puts("bad-unknown-key", "format = 1\nchunk_min = 16384\nchunk_avg = 65536\n"
				    "chunk_max = 262144\ncolour = 3\n");
	gen_puts("bad-remote-space", "format = 1\nremote = file:///a b\n");
	gen_puts("bad-relative-ca",
		 "format = 1\nchunk_min = 16384\nchunk_avg = 65536\n"
		 "chunk_max = 262144\nremote = https://h/\nremote_ca_file = ca.pem\n");
	gen_puts("bad-empty", "");
	return 0;
}
#endif
