/* SPDX-License-Identifier: MIT */
/*
 * Signature Version 4 against published vectors, never against values computed here.
 *
 * Sources:
 *  - the AWS SigV4 test suite (aws-sig-v4-test-suite.zip, linked from "Signature Version 4 test
 *    suite" in the AWS General Reference: docs.aws.amazon.com/general/latest/gr/
 *    signature-v4-test-suite.html; also shipped as the *.authz files of awslabs/aws-c-auth
 *    tests/aws-signing-test-suite/v4): credentials AKIDEXAMPLE /
 *    wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20150830T123600Z, us-east-1, service "service",
 *    host example.amazonaws.com;
 *  - the examples of "Signature Calculations for the Authorization Header: Transferring Payload
 *    in a Single Chunk" in the Amazon S3 API Reference (docs.aws.amazon.com/AmazonS3/latest/API/
 *    sig-v4-header-based-auth.html): AKIAIOSFODNN7EXAMPLE /
 *    wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY, 20130524T000000Z, us-east-1, s3,
 *    host examplebucket.s3.amazonaws.com.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "sigv4.h"

#define SUITE_KEY "AKIDEXAMPLE"
#define SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_DATE "20150830T123600Z"
#define SUITE_SCOPE "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
#define S3_KEY "AKIAIOSFODNN7EXAMPLE"
#define S3_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define S3_DATE "20130524T000000Z"
#define S3_SCOPE "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "

/* The test suite's example session token (post-sts-token/readme.txt). */
#define SUITE_TOKEN                                                                                \
	"AQoDYXdzEPT//////////"                                                                    \
	"wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpS"                   \
	"PfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/"                                                   \
	"kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQD"                                     \
	"YwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+" \
	"scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="

static struct sigv4_request suite(const char *method, const char *query)
{
	return (struct sigv4_request){
		.method = method,
		.host = "example.amazonaws.com",
		.path = "/",
		.query = query,
		.payload_sha256 = SIGV4_EMPTY_SHA256,
		.amz_date = SUITE_DATE,
		.region = "us-east-1",
		.service = "service",
		.access_key = SUITE_KEY,
		.secret_key = SUITE_SECRET,
	};
}

static struct sigv4_request s3(const char *method, const char *path, const char *query)
{
	return (struct sigv4_request){
		.method = method,
		.host = "examplebucket.s3.amazonaws.com",
		.path = path,
		.query = query,
		.payload_sha256 = SIGV4_EMPTY_SHA256,
		.amz_date = S3_DATE,
		.region = "us-east-1",
		.service = "s3",
		.access_key = S3_KEY,
		.secret_key = S3_SECRET,
	};
}

static void check(const struct sigv4_request *r, const char *want)
{
	char buf[1024];

	cr_assert_eq(sigv4_authorization(r, buf, sizeof(buf)), 0);
	cr_assert_str_eq(buf, want);
}

Test(sigv4, empty_sha256)
{
	char hex[65];

	cr_assert_eq(sigv4_sha256_hex("", 0, hex), 0);
	cr_assert_str_eq(hex, SIGV4_EMPTY_SHA256);
}

/* get-vanilla/get-vanilla.authz */
Test(sigv4, suite_get_vanilla)
{
	struct sigv4_request r = suite("GET", "");

	check(&r, "AWS4-HMAC-SHA256 " SUITE_SCOPE "SignedHeaders=host;x-amz-date, "
		  "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

/* post-vanilla/post-vanilla.authz */
Test(sigv4, suite_post_vanilla)
{
	struct sigv4_request r = suite("POST", NULL);

	check(&r, "AWS4-HMAC-SHA256 " SUITE_SCOPE "SignedHeaders=host;x-amz-date, "
		  "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
}

/* get-vanilla-query-order-key-case: "GET /?Param2=value2&Param1=value1" */
Test(sigv4, suite_query_order_key_case)
{
	struct sigv4_request r = suite("GET", "Param2=value2&Param1=value1");

	check(&r, "AWS4-HMAC-SHA256 " SUITE_SCOPE "SignedHeaders=host;x-amz-date, "
		  "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
}

/* get-header-value-trim: "My-Header1: value1" and "My-Header2: "a   b   c"" */
Test(sigv4, suite_header_value_trim)
{
	static const char *const h[] = {"My-Header1: value1", "My-Header2: \"a   b   c\""};
	struct sigv4_request r = suite("GET", "");

	r.headers = h;
	r.n_headers = 2;
	check(&r, "AWS4-HMAC-SHA256 " SUITE_SCOPE
		  "SignedHeaders=host;my-header1;my-header2;x-amz-date, "
		  "Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736");
}

/* post-header-value-case: "My-Header1:VALUE1" (values keep their case) */
Test(sigv4, suite_header_value_case)
{
	static const char *const h[] = {"My-Header1:VALUE1"};
	struct sigv4_request r = suite("POST", "");

	r.headers = h;
	r.n_headers = 1;
	check(&r, "AWS4-HMAC-SHA256 " SUITE_SCOPE "SignedHeaders=host;my-header1;x-amz-date, "
		  "Signature=cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d");
}

/* post-x-www-form-urlencoded: a body "Param1=value1" and its Content-Type signed */
Test(sigv4, suite_post_form)
{
	static const char *const h[] = {"Content-Type:application/x-www-form-urlencoded"};
	struct sigv4_request r = suite("POST", "");
	char payload[65];

	cr_assert_eq(sigv4_sha256_hex("Param1=value1", 13, payload), 0);
	r.headers = h;
	r.n_headers = 1;
	r.payload_sha256 = payload;
	check(&r, "AWS4-HMAC-SHA256 " SUITE_SCOPE "SignedHeaders=content-type;host;x-amz-date, "
		  "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a");
}

/* post-sts-token/post-sts-header-before: the session token is a signed header */
Test(sigv4, suite_sts_header_before)
{
	struct sigv4_request r = suite("POST", "");

	r.session_token = SUITE_TOKEN;
	check(&r,
	      "AWS4-HMAC-SHA256 " SUITE_SCOPE "SignedHeaders=host;x-amz-date;x-amz-security-token, "
	      "Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead");
}

/* S3 example "GET Object": the first 10 bytes of test.txt. */
Test(sigv4, s3_get_object_range)
{
	static const char *const h[] = {"Range:bytes=0-9"};
	struct sigv4_request r = s3("GET", "/test.txt", "");

	r.headers = h;
	r.n_headers = 1;
	check(&r, "AWS4-HMAC-SHA256 " S3_SCOPE
		  "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
		  "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

/* S3 example "PUT Object": "Welcome to Amazon S3." into test$file.text, with a Date header. */
Test(sigv4, s3_put_object)
{
	static const char *const h[] = {"Date:Fri, 24 May 2013 00:00:00 GMT",
					"x-amz-storage-class:REDUCED_REDUNDANCY"};
	static const char body[] = "Welcome to Amazon S3.";
	struct sigv4_request r = s3("PUT", "/test%24file.text", "");
	char payload[65];

	cr_assert_eq(sigv4_sha256_hex(body, strlen(body), payload), 0);
	/* The example's x-amz-content-sha256, printed in its canonical request. */
	cr_assert_str_eq(payload,
			 "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
	r.headers = h;
	r.n_headers = 2;
	r.payload_sha256 = payload;
	check(&r, "AWS4-HMAC-SHA256 " S3_SCOPE
		  "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
		  "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

/* S3 example "GET Bucket (List Objects)": "GET /?max-keys=2&prefix=J", here given unsorted. */
Test(sigv4, s3_list_objects)
{
	struct sigv4_request r = s3("GET", "/", "prefix=J&max-keys=2");

	check(&r,
	      "AWS4-HMAC-SHA256 " S3_SCOPE "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
	      "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

/* S3 example "GET Bucket Lifecycle": a key without '=' canonicalises as "lifecycle=". */
Test(sigv4, s3_get_lifecycle)
{
	struct sigv4_request r = s3("GET", "/", "lifecycle");

	check(&r,
	      "AWS4-HMAC-SHA256 " S3_SCOPE "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
	      "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

/* Not from a published vector: the query is re-encoded the AWS way whatever the caller did, so
 * "%2f", "%2F" and a token with '+' and '=' sign the same. */
Test(sigv4, query_reencoding_is_stable)
{
	struct sigv4_request a = s3("GET", "/", "prefix=a%2fb&continuation-token=x%2By%3D");
	struct sigv4_request b = s3("GET", "/", "continuation-token=x%2by%3d&prefix=a%2Fb");
	char ba[512], bb[512];

	cr_assert_eq(sigv4_authorization(&a, ba, sizeof(ba)), 0);
	cr_assert_eq(sigv4_authorization(&b, bb, sizeof(bb)), 0);
	cr_assert_str_eq(ba, bb);
}

Test(sigv4, errors)
{
	static const char *const bad_header[] = {"no colon here"};
	static const char *const crlf[] = {"X-A:b\r\nX-Injected: 1"};
	struct sigv4_request r = suite("GET", "");
	char small[16], buf[512];

	cr_assert_eq(sigv4_authorization(&r, small, sizeof(small)), -ENOSPC);
	r.amz_date = "2015-08-30T12:36";
	cr_assert_eq(sigv4_authorization(&r, buf, sizeof(buf)), -EINVAL);
	r = suite("GET", "");
	r.headers = bad_header;
	r.n_headers = 1;
	cr_assert_eq(sigv4_authorization(&r, buf, sizeof(buf)), -EINVAL);
	r.headers = crlf;
	cr_assert_eq(sigv4_authorization(&r, buf, sizeof(buf)), -EINVAL);
	r = suite("GET", "");
	r.secret_key = "";
	cr_assert_eq(sigv4_authorization(&r, buf, sizeof(buf)), -EINVAL);
	r = suite("GET", "");
	r.path = "relative";
	cr_assert_eq(sigv4_authorization(&r, buf, sizeof(buf)), -EINVAL);
}
