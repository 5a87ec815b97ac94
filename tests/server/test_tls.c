/*
 * TLS: development certificates, the server context, issuing
 * certificates, and real handshakes over an in-memory BIO pair.
 */
#define _XOPEN_SOURCE 700
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls.h"

static char tmpdir[64];
static char devdir[96];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/h2-tls-test-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
	snprintf(devdir, sizeof(devdir), "%s/tls", tmpdir);
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void teardown(void)
{
	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(tls, .init = setup, .fini = teardown);

/* dir/name in one of a few rotating buffers (several live at once). */
static const char *in(const char *dir, const char *name)
{
	static char bufs[8][192];
	static unsigned next;
	char *p = bufs[next++ % 8];

	snprintf(p, sizeof(bufs[0]), "%s/%s", dir, name);
	return p;
}

/* Development certificates in dir for identity; they must be made. */
static void make_dev(const char *dir, const char *identity)
{
	char err[512];

	cr_assert_eq(h2_tls_dev_certs(dir, identity, err, sizeof(err)), 0, "%s",
		     err);
}

static X509 *load_crt(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	cr_assert_not_null(f, "%s", path);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(x, "%s is not a certificate", path);
	return x;
}

static EVP_PKEY *load_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k;

	cr_assert_not_null(f, "%s", path);
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(k, "%s is not a key", path);
	return k;
}

/* X509_V_OK if crt_path chains to ca_path for purpose, else the error. */
static int verify(const char *ca_path, const char *crt_path, int purpose)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509 *crt = load_crt(crt_path);
	int r;

	cr_assert_eq(X509_STORE_load_file(store, ca_path), 1);
	cr_assert_eq(X509_STORE_CTX_init(ctx, store, crt, NULL), 1);
	X509_STORE_CTX_set_purpose(ctx, purpose);
	r = X509_verify_cert(ctx) == 1 ? X509_V_OK
				       : X509_STORE_CTX_get_error(ctx);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	X509_free(crt);
	ERR_clear_error();
	return r;
}

/* Whole file contents (caller frees), its length in *len. */
static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf = malloc(65536);

	cr_assert_not_null(f, "%s", path);
	*len = fread(buf, 1, 65536, f);
	fclose(f);
	return buf;
}

static mode_t mode_of(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0, "%s", path);
	return st.st_mode & 07777;
}

static const char *const dev_files[] = {
    "ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"};

/* ---------------------------------------------------------------------- */
/* Development certificates.                                              */

Test(tls, dev_certs_have_private_modes_whatever_the_umask)
{
	static const mode_t umasks[] = {0, 022, 077};

	for (size_t u = 0; u < 3; u++) {
		char dir[160];
		DIR *d;
		struct dirent *e;
		int n = 0;

		snprintf(dir, sizeof(dir), "%s/u%zu/tls", tmpdir, u);
		umask(umasks[u]);
		make_dev(dir, "admin");
		cr_assert_eq(mode_of(dir), 0700, "umask %03o",
			     (unsigned)umasks[u]);
		for (size_t i = 0; i < 6; i++) {
			bool key = strstr(dev_files[i], ".key") != NULL;

			cr_assert_eq(mode_of(in(dir, dev_files[i])),
				     key ? 0600 : 0644, "%s, umask %03o",
				     dev_files[i], (unsigned)umasks[u]);
		}
		/* No temporary files are left behind. */
		d = opendir(dir);
		while ((e = readdir(d)))
			n += e->d_name[0] != '.';
		closedir(d);
		cr_assert_eq(n, 6);
	}
	umask(022);
}

Test(tls, dev_certs_are_kept_on_second_call)
{
	char *before[6];
	size_t len[6], len2;

	make_dev(devdir, "admin");
	for (size_t i = 0; i < 6; i++)
		before[i] = slurp(in(devdir, dev_files[i]), &len[i]);
	make_dev(devdir, "someone-else");
	for (size_t i = 0; i < 6; i++) {
		char *after = slurp(in(devdir, dev_files[i]), &len2);

		cr_assert(len2 == len[i] && memcmp(before[i], after, len2) == 0,
			  "%s changed", dev_files[i]);
		free(after);
		free(before[i]);
	}
}

Test(tls, dev_certs_have_the_documented_properties)
{
	X509 *ca, *srv, *cli;
	EVP_PKEY *key;
	X509_EXTENSION *ext;
	char cn[64], group[64];
	int day, sec;
	BIGNUM *serial;

	make_dev(devdir, "admin");
	ca = load_crt(in(devdir, "ca.crt"));
	srv = load_crt(in(devdir, "server.crt"));
	cli = load_crt(in(devdir, "client.crt"));

	/* CA: CA:TRUE critical, keyCertSign + cRLSign. */
	cr_assert_eq(X509_check_ca(ca), 1);
	ext = X509_get_ext(ca,
			   X509_get_ext_by_NID(ca, NID_basic_constraints, -1));
	cr_assert_eq(X509_EXTENSION_get_critical(ext), 1);
	cr_assert_eq(X509_get_key_usage(ca) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN),
		     KU_KEY_CERT_SIGN | KU_CRL_SIGN);

	/* Server: SANs localhost and 127.0.0.1, serverAuth, not a CA. */
	cr_assert_eq(X509_check_host(srv, "localhost", 0, 0, NULL), 1);
	cr_assert_eq(X509_check_ip_asc(srv, "127.0.0.1", 0), 1);
	cr_assert(X509_get_extended_key_usage(srv) & XKU_SSL_SERVER);
	cr_assert_not(X509_get_extended_key_usage(srv) & XKU_SSL_CLIENT);
	cr_assert_eq(X509_check_ca(srv), 0);

	/* Client: CN = identity, clientAuth. */
	X509_NAME_get_text_by_NID(X509_get_subject_name(cli), NID_commonName,
				  cn, sizeof(cn));
	cr_assert_str_eq(cn, "admin");
	cr_assert(X509_get_extended_key_usage(cli) & XKU_SSL_CLIENT);
	cr_assert_not(X509_get_extended_key_usage(cli) & XKU_SSL_SERVER);

	X509 *all[] = {ca, srv, cli};
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(X509_get_version(all[i]), X509_VERSION_3);
		cr_assert_eq(X509_get_signature_nid(all[i]),
			     NID_ecdsa_with_SHA256);
		key = X509_get0_pubkey(all[i]);
		cr_assert(EVP_PKEY_is_a(key, "EC"));
		cr_assert_eq(EVP_PKEY_get_utf8_string_param(
				 key, OSSL_PKEY_PARAM_GROUP_NAME, group,
				 sizeof(group), NULL),
			     1);
		cr_assert_str_eq(group, "prime256v1");
		/* 10 years from now, give or take a day. */
		cr_assert_eq(ASN1_TIME_diff(&day, &sec, NULL,
					    X509_get0_notAfter(all[i])),
			     1);
		cr_assert(day >= 3649 && day <= 3650, "%d days", day);
		cr_assert_not_null(X509_get0_subject_key_id(all[i]));
		cr_assert_not_null(X509_get0_authority_key_id(all[i]));
		cr_assert_eq(
		    ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(all[i]),
					  X509_get0_subject_key_id(ca)),
		    0, "AKID is not the CA's key id");
		/* A random 128-bit serial: more than 64 bits, all distinct. */
		serial =
		    ASN1_INTEGER_to_BN(X509_get0_serialNumber(all[i]), NULL);
		cr_assert_gt(BN_num_bits(serial), 64);
		cr_assert_leq(BN_num_bits(serial), 128);
		BN_free(serial);
	}
	cr_assert_neq(ASN1_INTEGER_cmp(X509_get0_serialNumber(srv),
				       X509_get0_serialNumber(cli)),
		      0);
	cr_assert_eq(verify(in(devdir, "ca.crt"), in(devdir, "server.crt"),
			    X509_PURPOSE_SSL_SERVER),
		     X509_V_OK);
	cr_assert_eq(verify(in(devdir, "ca.crt"), in(devdir, "client.crt"),
			    X509_PURPOSE_SSL_CLIENT),
		     X509_V_OK);
	X509_free(ca);
	X509_free(srv);
	X509_free(cli);
}

Test(tls, dev_cert_missing_its_certificate_is_reissued_for_the_same_key)
{
	X509 *crt;
	EVP_PKEY *key;

	make_dev(devdir, "admin");
	cr_assert_eq(unlink(in(devdir, "client.crt")), 0);
	make_dev(devdir, "admin");
	crt = load_crt(in(devdir, "client.crt"));
	key = load_key(in(devdir, "client.key"));
	cr_assert_eq(X509_check_private_key(crt, key), 1);
	cr_assert_eq(verify(in(devdir, "ca.crt"), in(devdir, "client.crt"),
			    X509_PURPOSE_SSL_CLIENT),
		     X509_V_OK);
	X509_free(crt);
	EVP_PKEY_free(key);
}

Test(tls, lost_ca_certificate_is_remade_and_old_leaves_still_verify)
{
	make_dev(devdir, "admin");
	cr_assert_eq(unlink(in(devdir, "ca.crt")), 0);
	make_dev(devdir, "admin");
	cr_assert_eq(verify(in(devdir, "ca.crt"), in(devdir, "server.crt"),
			    X509_PURPOSE_SSL_SERVER),
		     X509_V_OK);
}

Test(tls, dev_cert_without_its_key_is_an_error_naming_both)
{
	char err[512];

	make_dev(devdir, "admin");
	cr_assert_eq(unlink(in(devdir, "server.key")), 0);
	cr_assert_lt(h2_tls_dev_certs(devdir, "admin", err, sizeof(err)), 0);
	cr_assert_not_null(strstr(err, "server.key"), "%s", err);
	cr_assert_not_null(strstr(err, "server.crt"), "%s", err);
	cr_assert_not_null(strstr(err, "missing"), "%s", err);
}

Test(tls, dev_certs_from_a_replaced_ca_are_reported)
{
	char err[512];

	make_dev(devdir, "admin");
	cr_assert_eq(unlink(in(devdir, "ca.crt")), 0);
	cr_assert_eq(unlink(in(devdir, "ca.key")), 0);
	cr_assert_lt(h2_tls_dev_certs(devdir, "admin", err, sizeof(err)), 0);
	cr_assert_not_null(strstr(err, "not signed"), "%s", err);
}

Test(tls, dev_certs_refuse_an_empty_identity)
{
	char err[512];

	cr_assert_eq(h2_tls_dev_certs(devdir, "", err, sizeof(err)), -EINVAL);
	cr_assert_eq(h2_tls_dev_certs(devdir, "a\nb", err, sizeof(err)),
		     -EINVAL);
}

/* ---------------------------------------------------------------------- */
/* Server context.                                                        */

/* The server context from dir's development files. */
static SSL_CTX *dev_server_ctx(const char *dir, bool tls12)
{
	struct h2_tls_files files = {in(dir, "ca.crt"), in(dir, "server.crt"),
				     in(dir, "server.key")};
	char err[512];
	SSL_CTX *ctx = h2_tls_server_ctx(&files, tls12, err, sizeof(err));

	cr_assert_not_null(ctx, "%s", err);
	return ctx;
}

Test(tls, server_ctx_builds_from_dev_certs_with_the_documented_policy)
{
	SSL_CTX *ctx;

	make_dev(devdir, "admin");
	ctx = dev_server_ctx(devdir, false);
	cr_assert_eq(SSL_CTX_get_verify_mode(ctx),
		     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
	cr_assert_eq(SSL_CTX_get_min_proto_version(ctx), TLS1_3_VERSION);
	cr_assert_eq(sk_X509_NAME_num(SSL_CTX_get_client_CA_list(ctx)), 1);
	SSL_CTX_free(ctx);
	ctx = dev_server_ctx(devdir, true);
	cr_assert_eq(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
	SSL_CTX_free(ctx);
}

Test(tls, server_ctx_missing_key_error_names_the_file)
{
	struct h2_tls_files files;
	char err[512];

	make_dev(devdir, "admin");
	files = (struct h2_tls_files){in(devdir, "ca.crt"),
				      in(devdir, "server.crt"),
				      in(devdir, "nothere.key")};
	cr_assert_null(h2_tls_server_ctx(&files, false, err, sizeof(err)));
	cr_assert_not_null(strstr(err, files.key), "%s", err);
	cr_assert_not_null(strstr(err, "No such file"), "%s", err);
}

Test(tls, server_ctx_mismatched_key_error_names_both_files_and_reason)
{
	struct h2_tls_files files;
	char err[512];

	make_dev(devdir, "admin");
	files = (struct h2_tls_files){in(devdir, "ca.crt"),
				      in(devdir, "server.crt"),
				      in(devdir, "client.key")};
	cr_assert_null(h2_tls_server_ctx(&files, false, err, sizeof(err)));
	cr_assert_not_null(strstr(err, "does not match"), "%s", err);
	cr_assert_not_null(strstr(err, files.key), "%s", err);
	cr_assert_not_null(strstr(err, files.cert), "%s", err);
	cr_assert_not_null(strstr(err, "mismatch"), "no OpenSSL reason: %s",
			   err);
}

Test(tls, server_ctx_garbage_certificate_error_gives_openssl_reason)
{
	struct h2_tls_files files;
	char err[512];
	FILE *f;

	make_dev(devdir, "admin");
	f = fopen(in(devdir, "junk.crt"), "w");
	fputs("this is not PEM\n", f);
	fclose(f);
	files =
	    (struct h2_tls_files){in(devdir, "ca.crt"), in(devdir, "junk.crt"),
				  in(devdir, "server.key")};
	cr_assert_null(h2_tls_server_ctx(&files, false, err, sizeof(err)));
	cr_assert_not_null(strstr(err, files.cert), "%s", err);
	cr_assert_not_null(strstr(err, "error:"), "no OpenSSL reason: %s", err);
	/* The CA file, too. */
	files = (struct h2_tls_files){in(devdir, "junk.crt"),
				      in(devdir, "server.crt"),
				      in(devdir, "server.key")};
	cr_assert_null(h2_tls_server_ctx(&files, false, err, sizeof(err)));
	cr_assert_not_null(strstr(err, files.ca), "%s", err);
}

Test(tls, server_ctx_unset_file_is_reported)
{
	struct h2_tls_files files = {NULL, "/x.crt", "/x.key"};
	char err[512];

	cr_assert_null(h2_tls_server_ctx(&files, false, err, sizeof(err)));
	cr_assert_not_null(strstr(err, "CA file"), "%s", err);
}

/* ---------------------------------------------------------------------- */
/* Issuing.                                                               */

Test(tls, issued_client_cert_verifies_against_the_ca)
{
	char err[512];

	make_dev(devdir, "admin");
	cr_assert_eq(h2_tls_issue(in(devdir, "ca.crt"), in(devdir, "ca.key"),
				  "bob", NULL, 30, in(tmpdir, "bob.crt"),
				  in(tmpdir, "bob.key"), err, sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(verify(in(devdir, "ca.crt"), in(tmpdir, "bob.crt"),
			    X509_PURPOSE_SSL_CLIENT),
		     X509_V_OK);
	cr_assert_eq(mode_of(in(tmpdir, "bob.key")), 0600);
	cr_assert_eq(mode_of(in(tmpdir, "bob.crt")), 0644);
}

Test(tls, expired_cert_does_not_verify)
{
	char err[512];

	make_dev(devdir, "admin");
	cr_assert_eq(h2_tls_issue(in(devdir, "ca.crt"), in(devdir, "ca.key"),
				  "old", NULL, -1, in(tmpdir, "old.crt"),
				  in(tmpdir, "old.key"), err, sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(verify(in(devdir, "ca.crt"), in(tmpdir, "old.crt"),
			    X509_PURPOSE_SSL_CLIENT),
		     X509_V_ERR_CERT_HAS_EXPIRED);
}

Test(tls, issued_server_cert_carries_the_sans_and_no_cn_if_none_given)
{
	char err[512], cn[64];
	X509 *x;

	make_dev(devdir, "admin");
	cr_assert_eq(h2_tls_issue(in(devdir, "ca.crt"), in(devdir, "ca.key"),
				  NULL, "DNS:h2.example,IP:10.0.0.7", 30,
				  in(tmpdir, "s.crt"), in(tmpdir, "s.key"), err,
				  sizeof(err)),
		     0, "%s", err);
	x = load_crt(in(tmpdir, "s.crt"));
	cr_assert_eq(X509_check_host(x, "h2.example", 0, 0, NULL), 1);
	cr_assert_eq(X509_check_ip_asc(x, "10.0.0.7", 0), 1);
	cr_assert_eq(X509_check_host(x, "localhost", 0, 0, NULL), 0);
	cr_assert(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
	cr_assert_eq(X509_NAME_get_text_by_NID(X509_get_subject_name(x),
					       NID_commonName, cn, sizeof(cn)),
		     -1);
	X509_free(x);
	cr_assert_eq(verify(in(devdir, "ca.crt"), in(tmpdir, "s.crt"),
			    X509_PURPOSE_SSL_SERVER),
		     X509_V_OK);
}

struct issue_bad {
	char cn[16];
	char san[32];
	int days;
	char want[48];
};

ParameterizedTestParameters(tls, issue_rejects_bad_requests)
{
	static struct issue_bad cases[] = {
	    {"bob", "", 0, "days"},
	    {"bob", "", 40000, "days"},
	    {"", "", 30, "needs a CN"},
	    {"", "FOO:bar", 30, "Subject Alternative Name \"FOO:bar\""},
	    {"a\tb", "", 30, "control"},
	};

	return cr_make_param_array(struct issue_bad, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct issue_bad *b, tls, issue_rejects_bad_requests)
{
	char err[512] = "";

	make_dev(devdir, "admin");
	cr_assert_lt(h2_tls_issue(in(devdir, "ca.crt"), in(devdir, "ca.key"),
				  b->cn[0] ? b->cn : NULL,
				  b->san[0] ? b->san : NULL, b->days,
				  in(tmpdir, "x.crt"), in(tmpdir, "x.key"), err,
				  sizeof(err)),
		     0);
	cr_assert_not_null(strstr(err, b->want), "want \"%s\" in \"%s\"",
			   b->want, err);
	cr_assert_eq(access(in(tmpdir, "x.key"), F_OK), -1);
}

Test(tls, issue_refuses_a_leaf_as_ca_and_a_mismatched_ca_key)
{
	char err[512];

	make_dev(devdir, "admin");
	cr_assert_lt(h2_tls_issue(in(devdir, "client.crt"),
				  in(devdir, "client.key"), "bob", NULL, 30,
				  in(tmpdir, "x.crt"), in(tmpdir, "x.key"), err,
				  sizeof(err)),
		     0);
	cr_assert_not_null(strstr(err, "not a CA"), "%s", err);
	cr_assert_lt(h2_tls_issue(in(devdir, "ca.crt"),
				  in(devdir, "client.key"), "bob", NULL, 30,
				  in(tmpdir, "x.crt"), in(tmpdir, "x.key"), err,
				  sizeof(err)),
		     0);
	cr_assert_not_null(strstr(err, "does not match"), "%s", err);
}

/* ---------------------------------------------------------------------- */
/* Handshakes over a BIO pair.                                            */

enum hs_result {
	HS_OK,
	HS_SERVER_FAILED,
	HS_CLIENT_FAILED,
};

/* A client context trusting ca, presenting crt/key unless NULL. */
static SSL_CTX *client_ctx(const char *ca, const char *crt, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	cr_assert_not_null(ctx);
	cr_assert_eq(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (crt) {
		cr_assert_eq(SSL_CTX_use_certificate_chain_file(ctx, crt), 1);
		cr_assert_eq(
		    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
	}
	return ctx;
}

/*
 * Run a handshake between a server and a client over a BIO pair, taking
 * turns until both finish or one fails.  *server_out (caller frees) is
 * the server's SSL, for the identity and the verify result.
 */
static enum hs_result handshake(SSL_CTX *sctx, SSL_CTX *cctx, SSL **server_out)
{
	BIO *sbio, *cbio;
	SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
	bool sdone = false, cdone = false;
	enum hs_result res = HS_OK;

	cr_assert(s && c);
	cr_assert_eq(BIO_new_bio_pair(&sbio, 0, &cbio, 0), 1);
	SSL_set_bio(s, sbio, sbio);
	SSL_set_bio(c, cbio, cbio);
	SSL_set_accept_state(s);
	SSL_set_connect_state(c);
	cr_assert_eq(SSL_set1_host(c, "localhost"), 1);
	for (int i = 0; i < 100 && !(sdone && cdone); i++) {
		int r, e;

		if (!cdone) {
			r = SSL_do_handshake(c);
			e = SSL_get_error(c, r);
			if (r == 1)
				cdone = true;
			else if (e != SSL_ERROR_WANT_READ &&
				 e != SSL_ERROR_WANT_WRITE) {
				res = HS_CLIENT_FAILED;
				break;
			}
		}
		if (!sdone) {
			r = SSL_do_handshake(s);
			e = SSL_get_error(s, r);
			if (r == 1)
				sdone = true;
			else if (e != SSL_ERROR_WANT_READ &&
				 e != SSL_ERROR_WANT_WRITE) {
				res = HS_SERVER_FAILED;
				break;
			}
		}
	}
	cr_assert(res != HS_OK || (sdone && cdone), "handshake stalled");
	ERR_clear_error();
	SSL_free(c);
	*server_out = s;
	return res;
}

Test(tls, handshake_with_dev_client_cert_succeeds_with_identity_admin)
{
	SSL_CTX *sctx, *cctx;
	char id[256];
	SSL *s;

	make_dev(devdir, "admin");
	sctx = dev_server_ctx(devdir, false);
	cctx = client_ctx(in(devdir, "ca.crt"), in(devdir, "client.crt"),
			  in(devdir, "client.key"));
	cr_assert_eq(handshake(sctx, cctx, &s), HS_OK);
	cr_assert_eq(SSL_version(s), TLS1_3_VERSION);
	cr_assert_eq(h2_tls_peer_identity(s, id, sizeof(id)), 0);
	cr_assert_str_eq(id, "admin");
	cr_assert_eq(h2_tls_peer_identity(s, id, 5), -ERANGE);
	SSL_free(s);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

Test(tls, handshake_without_client_cert_is_refused)
{
	SSL_CTX *sctx, *cctx;
	char id[256];
	SSL *s;

	make_dev(devdir, "admin");
	sctx = dev_server_ctx(devdir, false);
	cctx = client_ctx(in(devdir, "ca.crt"), NULL, NULL);
	cr_assert_eq(handshake(sctx, cctx, &s), HS_SERVER_FAILED);
	cr_assert_eq(h2_tls_peer_identity(s, id, sizeof(id)), -ENOENT);
	SSL_free(s);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

Test(tls, handshake_with_client_cert_from_another_ca_is_refused)
{
	char other[160];
	SSL_CTX *sctx, *cctx;
	SSL *s;

	make_dev(devdir, "admin");
	snprintf(other, sizeof(other), "%s/other", tmpdir);
	make_dev(other, "admin");
	sctx = dev_server_ctx(devdir, false);
	/* Trusts the right server, but its own cert is from the other CA. */
	cctx = client_ctx(in(devdir, "ca.crt"), in(other, "client.crt"),
			  in(other, "client.key"));
	cr_assert_eq(handshake(sctx, cctx, &s), HS_SERVER_FAILED);
	cr_assert_neq(SSL_get_verify_result(s), X509_V_OK);
	SSL_free(s);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

Test(tls, handshake_with_expired_client_cert_is_refused)
{
	SSL_CTX *sctx, *cctx;
	char err[512];
	SSL *s;

	make_dev(devdir, "admin");
	cr_assert_eq(h2_tls_issue(in(devdir, "ca.crt"), in(devdir, "ca.key"),
				  "admin", NULL, -2, in(tmpdir, "old.crt"),
				  in(tmpdir, "old.key"), err, sizeof(err)),
		     0, "%s", err);
	sctx = dev_server_ctx(devdir, false);
	cctx = client_ctx(in(devdir, "ca.crt"), in(tmpdir, "old.crt"),
			  in(tmpdir, "old.key"));
	cr_assert_eq(handshake(sctx, cctx, &s), HS_SERVER_FAILED);
	cr_assert_eq(SSL_get_verify_result(s), X509_V_ERR_CERT_HAS_EXPIRED);
	SSL_free(s);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

Test(tls, tls12_client_is_refused_unless_allowed)
{
	SSL_CTX *sctx, *cctx;
	char id[256];
	SSL *s;

	make_dev(devdir, "admin");
	cctx = client_ctx(in(devdir, "ca.crt"), in(devdir, "client.crt"),
			  in(devdir, "client.key"));
	cr_assert_eq(SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION), 1);

	sctx = dev_server_ctx(devdir, false);
	cr_assert_eq(handshake(sctx, cctx, &s), HS_SERVER_FAILED);
	SSL_free(s);
	SSL_CTX_free(sctx);

	sctx = dev_server_ctx(devdir, true);
	cr_assert_eq(handshake(sctx, cctx, &s), HS_OK);
	cr_assert_eq(SSL_version(s), TLS1_2_VERSION);
	cr_assert_eq(h2_tls_peer_identity(s, id, sizeof(id)), 0);
	cr_assert_str_eq(id, "admin");
	SSL_free(s);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

Test(tls, server_with_issued_cert_is_accepted_by_a_client_checking_names)
{
	struct h2_tls_files files;
	SSL_CTX *sctx, *cctx;
	char err[512];
	SSL *s;

	make_dev(devdir, "admin");
	cr_assert_eq(h2_tls_issue(in(devdir, "ca.crt"), in(devdir, "ca.key"),
				  NULL, "DNS:localhost", 30,
				  in(tmpdir, "s.crt"), in(tmpdir, "s.key"), err,
				  sizeof(err)),
		     0, "%s", err);
	files = (struct h2_tls_files){in(devdir, "ca.crt"), in(tmpdir, "s.crt"),
				      in(tmpdir, "s.key")};
	sctx = h2_tls_server_ctx(&files, false, err, sizeof(err));
	cr_assert_not_null(sctx, "%s", err);
	cctx = client_ctx(in(devdir, "ca.crt"), in(devdir, "client.crt"),
			  in(devdir, "client.key"));
	cr_assert_eq(handshake(sctx, cctx, &s), HS_OK);
	SSL_free(s);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

/*
 * A client certificate with no CN, only subjectAltNames (email first),
 * signed by dir's CA: h2_tls_issue cannot make one (no CN means server).
 */
static void make_san_only_client(const char *dir, const char *san,
				 const char *crt_path, const char *key_path)
{
	X509 *ca = load_crt(in(dir, "ca.crt")), *x = X509_new();
	EVP_PKEY *ca_key = load_key(in(dir, "ca.key"));
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	FILE *f;

	cr_assert(x && key);
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, key);
	X509_set_issuer_name(x, X509_get_subject_name(ca));
	X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
	X509V3_set_ctx_nodb(&v3);
	ext = X509V3_EXT_nconf_nid(NULL, &v3, NID_subject_alt_name, san);
	cr_assert_not_null(ext);
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_nconf_nid(NULL, &v3, NID_ext_key_usage, "clientAuth");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	cr_assert(X509_sign(x, ca_key, EVP_sha256()));
	f = fopen(crt_path, "w");
	PEM_write_X509(f, x);
	fclose(f);
	f = fopen(key_path, "w");
	PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	X509_free(x);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
}

Test(tls, identity_without_cn_is_the_first_dns_or_email_san)
{
	SSL_CTX *sctx, *cctx;
	char id[256];
	SSL *s;

	make_dev(devdir, "admin");
	make_san_only_client(devdir,
			     "critical,IP:10.1.1.1,email:bob@example.com,"
			     "DNS:bob.example",
			     in(tmpdir, "bob.crt"), in(tmpdir, "bob.key"));
	sctx = dev_server_ctx(devdir, false);
	cctx = client_ctx(in(devdir, "ca.crt"), in(tmpdir, "bob.crt"),
			  in(tmpdir, "bob.key"));
	cr_assert_eq(handshake(sctx, cctx, &s), HS_OK);
	cr_assert_eq(h2_tls_peer_identity(s, id, sizeof(id)), 0);
	cr_assert_str_eq(id, "bob@example.com");
	SSL_free(s);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

Test(tls, peer_identity_before_any_handshake_is_enoent)
{
	SSL_CTX *sctx;
	char id[256];
	SSL *s;

	make_dev(devdir, "admin");
	sctx = dev_server_ctx(devdir, false);
	s = SSL_new(sctx);
	cr_assert_eq(h2_tls_peer_identity(s, id, sizeof(id)), -ENOENT);
	SSL_free(s);
	SSL_CTX_free(sctx);
}
