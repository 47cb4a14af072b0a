/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the AWS shared credentials file (INI) that the s3 remote reads (built and
 * run by tests/fuzz/run-fuzz.sh, not by meson): remote_parse_s3_credentials on the input as a
 * stream, once for profile "default" and once for "ci".
 *
 * Invariants: 0 (or -ENOMEM); each key found is non-empty, has no blank at either end and no
 * newline; the profile not named contributes nothing when the file has no section of the other
 * name (checked by reading with a profile no file has).
 *
 * Seeds: files as the aws CLI writes them, with several profiles, comments and odd spacing, and a
 * few broken ones; they are files in the repo, with no generator.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "remote_priv.h"

static void check_key(const char *k)
{
	size_t n;

	if (!k)
		return;
	n = strlen(k);
	CHECK(n > 0 && !strchr(k, '\n'));
	CHECK(k[0] != ' ' && k[0] != '\t' && k[n - 1] != ' ' && k[n - 1] != '\t' &&
	      k[n - 1] != '\r');
}

static void parse(const unsigned char *data, size_t size, const char *profile, bool none)
{
	struct remote r = {0};
	FILE *f = fmemopen((void *)data, size, "r");
	int ret;

	CHECK(f);
	ret = remote_parse_s3_credentials(f, profile, &r);
	fclose(f);
	CHECK(ret == 0 || ret == -ENOMEM);
	check_key(r.access_key);
	check_key(r.secret_key);
	check_key(r.session_token);
	if (none)
		CHECK(!r.access_key && !r.secret_key && !r.session_token);
	free(r.access_key);
	free(r.secret_key);
	free(r.session_token);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	if (size == 0)
		return 0; /* fmemopen needs a buffer */
	parse(data, size, "default", false);
	parse(data, size, "ci", false);
	parse(data, size, "no such profile", !memmem(data, size, "no such profile", 15));
	return 0;
}
