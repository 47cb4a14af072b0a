/* SPDX-License-Identifier: MIT */
/*
 * S3 credentials, where they come from, and keeping them fresh for a mount that stays up for
 * weeks. Sources, first found wins (as the AWS SDKs):
 *
 *   env        AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN: fixed for the process
 *   file       $AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile $AWS_PROFILE or
 *              "default": read again when its mtime or size changes (checked every 10 s), so a
 *              credentials helper that rewrites the file is followed
 *   container  AWS_CONTAINER_CREDENTIALS_FULL_URI (loopback http or https only), or
 *              AWS_CONTAINER_CREDENTIALS_RELATIVE_URI on http://169.254.170.2, with the
 *              Authorization of AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (read each time) or
 *              AWS_CONTAINER_AUTHORIZATION_TOKEN (ECS, EKS Pod Identity)
 *   imds       EC2 instance metadata, IMDSv2 (a PUT for a session token first), at
 *              AWS_EC2_METADATA_SERVICE_ENDPOINT or http://169.254.169.254, unless
 *              AWS_EC2_METADATA_DISABLED=true; tried last, with a 1 s connect timeout
 *
 * Credentials from an endpoint carry an Expiration and are fetched again 5 minutes before it;
 * an answer of ExpiredToken (or the like) makes the next request reload whatever the source.
 * Lock: r->creds_lock guards the three strings and the source state; s3_sign copies them out.
 */
#include "remote_priv.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define CREDS_REFRESH_BEFORE_S 300 /* fetch endpoint credentials again this long before expiry */
#define CREDS_FILE_CHECK_S 10      /* stat the credentials file at most this often */
#define CREDS_ENDPOINT_MAX (64 << 10)

const char *remote_env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		*--e = '\0';
	return s;
}

static void wipe_free(char **s)
{
	if (*s) {
		explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

static void creds_clear(struct remote *r)
{
	wipe_free(&r->access_key);
	wipe_free(&r->secret_key);
	wipe_free(&r->session_token);
}

int remote_parse_s3_credentials(FILE *f, const char *profile, struct remote *r)
{
	char line[8192];
	bool in_profile = false;
	int ret = 0;

	while (fgets(line, sizeof(line), f)) {
		char *s = trim(line), *eq, *k, *v, **slot = NULL;

		if (!*s || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *close = strchr(s, ']');

			if (close) {
				*close = '\0';
				in_profile = strcmp(trim(s + 1), profile) == 0;
			}
			continue;
		}
		if (!in_profile || !(eq = strchr(s, '=')))
			continue;
		*eq = '\0';
		k = trim(s);
		v = trim(eq + 1);
		if (strcasecmp(k, "aws_access_key_id") == 0)
			slot = &r->access_key;
		else if (strcasecmp(k, "aws_secret_access_key") == 0)
			slot = &r->secret_key;
		else if (strcasecmp(k, "aws_session_token") == 0)
			slot = &r->session_token;
		if (slot && *v) {
			wipe_free(slot);
			*slot = strdup(v);
			if (!*slot)
				ret = -ENOMEM;
		}
	}
	explicit_bzero(line, sizeof(line));
	return ret;
}

/* ---- the shared credentials file ---- */

static char *credentials_path(void)
{
	const char *file = remote_env("AWS_SHARED_CREDENTIALS_FILE"), *home = remote_env("HOME");
	char *path = NULL;

	if (file)
		return strdup(file);
	if (home && asprintf(&path, "%s/.aws/credentials", home) < 0)
		return NULL;
	return path;
}

/* Read the profile's keys from the file at r->creds_file into r: 0 (found or not), -errno. */
static int read_credentials_file(struct remote *r, char *err, size_t errlen)
{
	const char *profile = remote_env("AWS_PROFILE") ? remote_env("AWS_PROFILE") : "default";
	struct stat st;
	FILE *f;
	int fd, ret;

	fd = open(r->creds_file, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		ret = errno == ENOENT ? 0 : -errno;
		if (ret)
			snprintf(err, errlen, "cannot read AWS credentials file %s: %s",
				 r->creds_file, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 20)) {
		snprintf(err, errlen, "AWS credentials file %s is not a regular file under 1 MiB",
			 r->creds_file);
		close(fd);
		return -EINVAL;
	}
	r->creds_file_mtime = st.st_mtim;
	r->creds_file_size = st.st_size;
	f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	creds_clear(r);
	ret = remote_parse_s3_credentials(f, profile, r);
	fclose(f);
	return ret;
}

/* ---- credential endpoints: container and instance metadata ---- */

struct body {
	char buf[CREDS_ENDPOINT_MAX];
	size_t len;
};

static size_t body_write(char *p, size_t size, size_t n, void *data)
{
	struct body *b = data;
	size_t len = size * n;

	if (len > sizeof(b->buf) - 1 - b->len)
		return 0; /* too large: the transfer fails */
	memcpy(b->buf + b->len, p, len);
	b->len += len;
	b->buf[b->len] = '\0';
	return len;
}

/* method url with the header lines hdr (may be NULL) into *b: the HTTP status, or -errno. */
static long endpoint_call(const char *method, const char *url, const char *const *hdr,
			  struct body *b)
{
	struct curl_slist *hl = NULL;
	CURL *c = curl_easy_init();
	long status = 0;
	CURLcode rc;

	if (!c)
		return -ENOMEM;
	for (size_t i = 0; hdr && hdr[i]; i++) {
		struct curl_slist *h = curl_slist_append(hl, hdr[i]);

		if (!h) {
			curl_slist_free_all(hl);
			curl_easy_cleanup(c);
			return -ENOMEM;
		}
		hl = h;
	}
	b->len = 0;
	b->buf[0] = '\0';
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*"); /* metadata is never fetched through a proxy */
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 3000L);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hl);
	curl_easy_cleanup(c);
	return rc == CURLE_OK ? status : rc == CURLE_COULDNT_CONNECT ? -ECONNREFUSED : -EIO;
}

/* The JSON string value of "key" in json (escapes decoded; malloc'ed), or NULL. */
static char *json_string(const char *json, const char *key)
{
	char pat[64];
	const char *p;
	char *out, *o;

	snprintf(pat, sizeof(pat), "\"%s\"", key);
	p = strstr(json, pat);
	if (!p)
		return NULL;
	p += strlen(pat);
	while (isspace((unsigned char)*p))
		p++;
	if (*p++ != ':')
		return NULL;
	while (isspace((unsigned char)*p))
		p++;
	if (*p++ != '"')
		return NULL;
	out = o = malloc(strlen(p) + 1);
	if (!out)
		return NULL;
	for (; *p && *p != '"'; p++) {
		if (*p == '\\' && p[1])
			p++;
		if ((unsigned char)*p < 0x20) {
			free(out);
			return NULL;
		}
		*o++ = *p;
	}
	*o = '\0';
	if (*p != '"' || o == out) {
		free(out);
		return NULL;
	}
	return out;
}

/* "2026-12-06T19:00:00Z" as seconds since the epoch; 0 when it is not one. */
static int64_t parse_expiration(const char *s)
{
	struct tm tm = {0};
	const char *end;

	if (!s)
		return 0;
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end)
		return 0;
	return (int64_t)timegm(&tm);
}

/* The credentials of an endpoint's JSON answer into r: 0, or -EACCES (err says why). */
static int take_json(struct remote *r, const char *json, const char *from, char *err, size_t errlen)
{
	char *id = json_string(json, "AccessKeyId"), *secret = json_string(json, "SecretAccessKey");
	char *token = json_string(json, "Token"), *exp = json_string(json, "Expiration");

	if (!id || !secret) {
		snprintf(err, errlen, "%s answered without AccessKeyId and SecretAccessKey", from);
		free(id);
		wipe_free(&secret);
		wipe_free(&token);
		free(exp);
		return -EACCES;
	}
	creds_clear(r);
	r->access_key = id;
	r->secret_key = secret;
	r->session_token = token;
	r->creds_expires = parse_expiration(exp);
	free(exp);
	return 0;
}

/* An http URL is allowed for container credentials only to this host, or to the ECS and EKS
 * link-local endpoints (the SDKs' rule). */
static bool local_endpoint(const char *url)
{
	char host[256];

	if (!strncmp(url, "https://", 8))
		return true;
	if (strncmp(url, "http://", 7) != 0)
		return false;
	remote_url_host(url, host, sizeof(host));
	return remote_loopback_host(host) || !strcmp(host, "169.254.170.2") ||
	       !strcmp(host, "169.254.170.23");
}

static int container_credentials(struct remote *r, char *err, size_t errlen)
{
	const char *full = remote_env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *rel = remote_env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *tok_file = remote_env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	const char *tok = remote_env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
	char url[2048], auth[4200] = "";
	const char *hdr[2] = {NULL, NULL};
	struct body *b;
	long st;
	int ret;

	if (rel)
		snprintf(url, sizeof(url), "http://169.254.170.2%s", rel);
	else
		snprintf(url, sizeof(url), "%s", full);
	if (!rel && !local_endpoint(url)) {
		snprintf(err, errlen,
			 "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https:// or http:// to this "
			 "host");
		return -EACCES;
	}
	if (tok_file) {
		FILE *f = fopen(tok_file, "re");
		char line[4096] = "";

		if (!f || !fgets(line, sizeof(line), f)) {
			snprintf(err, errlen,
				 "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %s", tok_file);
			if (f)
				fclose(f);
			return -EACCES;
		}
		fclose(f);
		snprintf(auth, sizeof(auth), "Authorization: %s", trim(line));
		explicit_bzero(line, sizeof(line));
	} else if (tok) {
		snprintf(auth, sizeof(auth), "Authorization: %s", tok);
	}
	if (*auth)
		hdr[0] = auth;
	b = malloc(sizeof(*b));
	if (!b)
		return -ENOMEM;
	st = endpoint_call("GET", url, hdr, b);
	explicit_bzero(auth, sizeof(auth));
	if (st != 200) {
		snprintf(err, errlen, "the container credentials endpoint %s answered %s%ld", url,
			 st < 0 ? "error " : "HTTP ", st < 0 ? -st : st);
		ret = -EACCES;
	} else {
		ret = take_json(r, b->buf, "the container credentials endpoint", err, errlen);
	}
	explicit_bzero(b, sizeof(*b));
	free(b);
	return ret;
}

/* IMDSv2: 1 found, 0 none there (no instance metadata service), -errno. */
static int imds_credentials(struct remote *r, char *err, size_t errlen)
{
	const char *endpoint = remote_env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	char base[900], url[1200], token_hdr[1200], role[256] = "";
	const char *hdr[2] = {NULL, NULL};
	struct body *b;
	long st;
	int ret = 0;

	if (remote_env("AWS_EC2_METADATA_DISABLED") &&
	    !strcasecmp(remote_env("AWS_EC2_METADATA_DISABLED"), "true"))
		return 0;
	snprintf(base, sizeof(base), "%s", endpoint ? endpoint : "http://169.254.169.254");
	while (*base && base[strlen(base) - 1] == '/')
		base[strlen(base) - 1] = '\0';
	b = malloc(sizeof(*b));
	if (!b)
		return -ENOMEM;
	snprintf(url, sizeof(url), "%s/latest/api/token", base);
	hdr[0] = "X-aws-ec2-metadata-token-ttl-seconds: 21600";
	st = endpoint_call("PUT", url, hdr, b);
	if (st < 0 || st == 404) {
		free(b);
		return 0; /* not on EC2 (or IMDS off): not a source here */
	}
	if (st != 200 || b->len == 0 || b->len > 1000) {
		snprintf(err, errlen,
			 "the instance metadata service refused a session token (HTTP %ld)", st);
		free(b);
		return -EACCES;
	}
	snprintf(token_hdr, sizeof(token_hdr), "X-aws-ec2-metadata-token: %s", trim(b->buf));
	hdr[0] = token_hdr;
	snprintf(url, sizeof(url), "%s/latest/meta-data/iam/security-credentials/", base);
	st = endpoint_call("GET", url, hdr, b);
	if (st == 200)
		snprintf(role, sizeof(role), "%.*s", (int)strcspn(b->buf, "\r\n"), b->buf);
	if (st != 200 || !*role || strchr(role, '/')) {
		snprintf(err, errlen, "the instance has no IAM role (instance metadata: HTTP %ld)",
			 st);
		ret = -EACCES;
		goto out;
	}
	snprintf(url, sizeof(url), "%s/latest/meta-data/iam/security-credentials/%s", base, role);
	st = endpoint_call("GET", url, hdr, b);
	if (st != 200) {
		snprintf(err, errlen, "instance metadata: credentials of role %s: HTTP %ld", role,
			 st);
		ret = -EACCES;
		goto out;
	}
	ret = take_json(r, b->buf, "the instance metadata service", err, errlen);
	if (ret == 0)
		ret = 1;
out:
	explicit_bzero(token_hdr, sizeof(token_hdr));
	explicit_bzero(b, sizeof(*b));
	free(b);
	return ret;
}

/* ---- choosing and refreshing ---- */

static int load_from(struct remote *r, char *err, size_t errlen)
{
	int ret;

	switch (r->creds_source) {
	case CREDS_FILE:
		return read_credentials_file(r, err, errlen);
	case CREDS_CONTAINER:
		return container_credentials(r, err, errlen);
	case CREDS_IMDS:
		ret = imds_credentials(r, err, errlen);
		return ret == 0 ? -EACCES : MIN(ret, 0);
	default:
		return 0;
	}
}

int remote_s3_load_credentials(struct remote *r, char *err, size_t errlen)
{
	const char *id = remote_env("AWS_ACCESS_KEY_ID"),
		   *secret = remote_env("AWS_SECRET_ACCESS_KEY");
	int ret;

	pthread_mutex_init(&r->creds_lock, NULL);
	r->creds_lock_made = true;
	if (id || secret) {
		if (!id || !secret) {
			snprintf(err, errlen,
				 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set "
				 "together");
			return -EACCES;
		}
		r->creds_source = CREDS_ENV;
		r->access_key = strdup(id);
		r->secret_key = strdup(secret);
		if (remote_env("AWS_SESSION_TOKEN"))
			r->session_token = strdup(remote_env("AWS_SESSION_TOKEN"));
		if (!r->access_key || !r->secret_key ||
		    (remote_env("AWS_SESSION_TOKEN") && !r->session_token))
			return -ENOMEM;
		return 0;
	}
	r->creds_file = credentials_path();
	if (r->creds_file) {
		r->creds_source = CREDS_FILE;
		ret = read_credentials_file(r, err, errlen);
		if (ret < 0)
			return ret;
		if (r->access_key && r->secret_key)
			return 0;
	}
	if (remote_env("AWS_CONTAINER_CREDENTIALS_FULL_URI") ||
	    remote_env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")) {
		r->creds_source = CREDS_CONTAINER;
		return container_credentials(r, err, errlen);
	}
	ret = imds_credentials(r, err, errlen);
	if (ret == 1) {
		r->creds_source = CREDS_IMDS;
		return 0;
	}
	if (ret < 0)
		return ret;
	snprintf(err, errlen,
		 "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
		 "AWS_SESSION_TOKEN if temporary), or put them in ~/.aws/credentials "
		 "(AWS_SHARED_CREDENTIALS_FILE, profile AWS_PROFILE), or run where a container "
		 "or instance credentials endpoint serves them");
	return -EACCES;
}

/* Whether the source may have newer credentials than r holds (r->creds_lock held). */
static bool creds_due(struct remote *r, int64_t now)
{
	struct stat st;

	if (atomic_exchange(&r->creds_stale, false))
		return r->creds_source != CREDS_ENV;
	switch (r->creds_source) {
	case CREDS_FILE:
		if (now - r->creds_checked < CREDS_FILE_CHECK_S)
			return false;
		r->creds_checked = now;
		if (stat(r->creds_file, &st) < 0)
			return false; /* gone for now: keep what we have */
		return st.st_mtim.tv_sec != r->creds_file_mtime.tv_sec ||
		       st.st_mtim.tv_nsec != r->creds_file_mtime.tv_nsec ||
		       st.st_size != r->creds_file_size;
	case CREDS_CONTAINER:
	case CREDS_IMDS:
		return r->creds_expires && now >= r->creds_expires - CREDS_REFRESH_BEFORE_S;
	default:
		return false;
	}
}

int remote_s3_credentials(struct remote *r, char **ret_id, char **ret_secret, char **ret_token)
{
	char err[256] = "";
	int ret = 0;

	*ret_id = *ret_secret = *ret_token = NULL;
	pthread_mutex_lock(&r->creds_lock);
	if (creds_due(r, (int64_t)time(NULL))) {
		/* A failed refresh keeps the old keys: they may still work a while. */
		char *id = r->access_key, *secret = r->secret_key, *token = r->session_token;
		int64_t expires = r->creds_expires;

		r->access_key = r->secret_key = r->session_token = NULL;
		ret = load_from(r, err, sizeof(err));
		if (ret < 0 || !r->access_key || !r->secret_key) {
			log_warn("S3 credentials could not be refreshed (%s): using the ones held",
				 *err ? err : "none in the source now");
			creds_clear(r);
			r->access_key = id;
			r->secret_key = secret;
			r->session_token = token;
			r->creds_expires = expires;
		} else {
			static const char *const names[] = {"environment", "credentials file",
							    "container endpoint",
							    "instance metadata"};

			log_info("S3 credentials refreshed from the %s", names[r->creds_source]);
			wipe_free(&id);
			wipe_free(&secret);
			wipe_free(&token);
		}
		ret = 0;
	}
	*ret_id = r->access_key ? strdup(r->access_key) : NULL;
	*ret_secret = r->secret_key ? strdup(r->secret_key) : NULL;
	if (r->session_token)
		*ret_token = strdup(r->session_token);
	if (!*ret_id || !*ret_secret || (r->session_token && !*ret_token))
		ret = -ENOMEM;
	pthread_mutex_unlock(&r->creds_lock);
	if (ret < 0) {
		wipe_free(ret_id);
		wipe_free(ret_secret);
		wipe_free(ret_token);
	}
	return ret;
}
