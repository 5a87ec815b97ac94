/*
 * tls.c - h2d's TLS server context, peer identities, and a small
 * certificate authority for development and tests.
 *
 * OpenSSL 3 APIs only (the build has -Werror, deprecated calls would not
 * compile).  Every public function starts by clearing this thread's
 * OpenSSL error queue, so the reason appended to an error sentence is the
 * one the failing call queued, never a stale one; and leaves it empty.
 *
 * Certificates made here (see tls_make_cert):
 *
 *   CA       CN "h2 development CA", basicConstraints critical CA:TRUE,
 *            keyUsage critical keyCertSign,cRLSign
 *   server   CN "localhost" (or none), SAN list, EKU serverAuth
 *   client   CN = identity, EKU clientAuth
 *
 * all ECDSA P-256 with SHA-256, version 3, a random 128-bit serial,
 * subjectKeyIdentifier and authorityKeyIdentifier.  Leaves carry
 * basicConstraints critical CA:FALSE and keyUsage digitalSignature.
 *
 * Files: a key is written before its certificate and each through a
 * temporary file, fsync and rename, so a crash leaves either the old file
 * or the whole new one, never a torn key.  A key without its certificate
 * (a crash between the two renames) is completed by issuing a certificate
 * for that key; a certificate without its key is an error, because
 * nothing can be done with it.
 */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "log.h"

#define TLS_DEV_DAYS	 3650  /* development certificates: 10 years */
#define TLS_MAX_DAYS	 36500 /* h2_tls_issue: at most 100 years either way */
#define TLS_SERIAL_BYTES 16    /* 128-bit random serial numbers */
#define TLS_CURVE	 "P-256"

enum tls_kind {
	TLS_CA,
	TLS_SERVER,
	TLS_CLIENT,
};

/* A certificate and its private key. */
struct tls_pair {
	X509 *crt;
	EVP_PKEY *key;
};

/* ---------------------------------------------------------------------- */
/* Errors.                                                                */

/*
 * Write the sentence fmt into err, followed by ": <reason>" for the
 * earliest error OpenSSL queued (the root cause: "No such file", "no
 * start line", "key values mismatch"), then clear the queue.
 */
static void tls_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void tls_err(char *err, size_t errlen, const char *fmt, ...)
{
	unsigned long e = ERR_peek_error();
	char reason[256];
	va_list ap;
	int n;

	if (!err || errlen == 0) {
		ERR_clear_error();
		return;
	}
	va_start(ap, fmt);
	n = vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (e && n >= 0 && (size_t)n < errlen) {
		ERR_error_string_n(e, reason, sizeof(reason));
		snprintf(err + n, errlen - (size_t)n, " (%s)", reason);
	}
	ERR_clear_error();
}

/* Never prompt on a terminal for a key's passphrase: refuse instead. */
static int tls_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* 0 if path names a readable file, else -errno with err set. */
static int tls_readable(const char *what, const char *path, char *err,
			size_t errlen)
{
	int fd;

	if (!path || !*path) {
		snprintf(err, errlen,
			 "no %s is configured (set it in the "
			 "[tls] section or with a flag)",
			 what);
		return -EINVAL;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int r = -errno;

		snprintf(err, errlen, "cannot read the %s %s: %s", what, path,
			 strerror(-r));
		return r;
	}
	close(fd);
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Server context and peer identity.                                      */

/* True if OpenSSL error e says a key does not match its certificate. */
static bool tls_is_mismatch(unsigned long e)
{
	return ERR_GET_LIB(e) == ERR_LIB_X509 &&
	       ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
}

/* Log a warning if the certificate in ctx is outside its validity. */
static void tls_warn_validity(SSL_CTX *ctx, const char *path)
{
	X509 *crt = SSL_CTX_get0_certificate(ctx);

	if (!crt)
		return;
	if (X509_cmp_current_time(X509_get0_notAfter(crt)) < 0)
		h2_log_warn("tls",
			    "the server certificate %s has expired; "
			    "clients will refuse it",
			    path);
	else if (X509_cmp_current_time(X509_get0_notBefore(crt)) > 0)
		h2_log_warn("tls",
			    "the server certificate %s is not valid "
			    "yet (is the clock right?)",
			    path);
}

/*
 * OpenSSL works out a certificate's extensions (key usage, basic
 * constraints, ...) the first time it needs them and keeps the result in
 * the X509 object, a failure too: if an allocation fails then, during a
 * client's handshake, the CA certificate is marked invalid for good, and
 * every later client certificate fails to verify, until the next reload.
 * So work them out now, for every certificate the context holds.
 */
static void tls_cache_extensions(SSL_CTX *ctx)
{
	STACK_OF(X509_OBJECT) *objs =
	    X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
	STACK_OF(X509) *chain = NULL;
	X509 *crt = SSL_CTX_get0_certificate(ctx);

	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));

		if (x)
			X509_get_extension_flags(x);
	}
	if (crt)
		X509_get_extension_flags(crt);
	if (SSL_CTX_get0_chain_certs(ctx, &chain) == 1)
		for (int i = 0; i < sk_X509_num(chain); i++)
			X509_get_extension_flags(sk_X509_value(chain, i));
}

SSL_CTX *h2_tls_server_ctx(const struct h2_tls_files *files, bool allow_tls12,
			   char *err, size_t errlen)
{
	STACK_OF(X509_NAME) * names;
	SSL_CTX *ctx;
	int ok;

	ERR_clear_error();
	if (!files) {
		snprintf(err, errlen, "no TLS files are configured");
		return NULL;
	}
	if (tls_readable("CA file", files->ca, err, errlen) < 0 ||
	    tls_readable("server certificate", files->cert, err, errlen) < 0 ||
	    tls_readable("server key", files->key, err, errlen) < 0)
		return NULL;

	ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		tls_err(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	if (!SSL_CTX_set_min_proto_version(ctx, allow_tls12 ? TLS1_2_VERSION
							    : TLS1_3_VERSION)) {
		tls_err(err, errlen, "cannot set the lowest TLS version");
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
				     SSL_OP_CIPHER_SERVER_PREFERENCE |
				     SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_default_passwd_cb(ctx, tls_no_passphrase);
	if (SSL_CTX_use_certificate_chain_file(ctx, files->cert) != 1) {
		tls_err(err, errlen,
			"cannot load the server certificate %s; it must hold a "
			"PEM certificate, optionally followed by its "
			"intermediate CAs",
			files->cert);
		goto fail;
	}
	/*
	 * A readable key that belongs to another certificate already fails
	 * here with "key values mismatch"; report it like the check below.
	 */
	ok = SSL_CTX_use_PrivateKey_file(ctx, files->key, SSL_FILETYPE_PEM);
	if (!ok && !tls_is_mismatch(ERR_peek_error())) {
		tls_err(err, errlen,
			"cannot load the server key %s; it must hold an "
			"unencrypted PEM private key",
			files->key);
		goto fail;
	}
	if (!ok || SSL_CTX_check_private_key(ctx) != 1) {
		tls_err(err, errlen,
			"the server key %s does not match the certificate %s; "
			"give the key the certificate was issued for",
			files->key, files->cert);
		goto fail;
	}
	if (SSL_CTX_load_verify_locations(ctx, files->ca, NULL) != 1) {
		tls_err(err, errlen,
			"cannot load the CA file %s; it must hold the PEM "
			"certificates that client certificates chain to",
			files->ca);
		goto fail;
	}
	names = SSL_load_client_CA_file(files->ca);
	if (!names) {
		tls_err(err, errlen,
			"cannot read the CA names from %s; it must hold PEM "
			"certificates",
			files->ca);
		goto fail;
	}
	SSL_CTX_set_client_CA_list(ctx, names); /* takes ownership */
	SSL_CTX_set_verify(
	    ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	/* Needed for session resumption whenever peers are verified. */
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"h2d", 3);
	tls_warn_validity(ctx, files->cert);
	tls_cache_extensions(ctx);
	ERR_clear_error();
	return ctx;

fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/*
 * Copy an ASN.1 string into out as UTF-8: -ENOENT if it is empty,
 * -EINVAL if it holds a NUL or control character (an identity must print
 * as itself in logs and rules), -ERANGE if it does not fit.
 */
static int tls_copy_name(const ASN1_STRING *s, char *out, size_t outlen)
{
	unsigned char *utf8 = NULL;
	int n = ASN1_STRING_to_UTF8(&utf8, s), r = 0;

	if (n < 0) {
		ERR_clear_error();
		return -EINVAL;
	}
	if (n == 0) {
		r = -ENOENT;
		goto out;
	}
	for (int i = 0; i < n; i++) {
		if (utf8[i] < 0x20 || utf8[i] == 0x7f) {
			r = -EINVAL;
			goto out;
		}
	}
	if ((size_t)n >= outlen) {
		r = -ERANGE;
		goto out;
	}
	memcpy(out, utf8, (size_t)n);
	out[n] = '\0';
out:
	OPENSSL_free(utf8);
	return r;
}

/* The first DNS or email subjectAltName of crt into out, or -ENOENT. */
static int tls_san_identity(X509 *crt, char *out, size_t outlen)
{
	GENERAL_NAMES *sans;
	int r = -ENOENT;

	sans = X509_get_ext_d2i(crt, NID_subject_alt_name, NULL, NULL);
	if (!sans) {
		ERR_clear_error();
		return -ENOENT;
	}
	for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);

		if (g->type == GEN_DNS) {
			r = tls_copy_name(g->d.dNSName, out, outlen);
			break;
		}
		if (g->type == GEN_EMAIL) {
			r = tls_copy_name(g->d.rfc822Name, out, outlen);
			break;
		}
	}
	GENERAL_NAMES_free(sans);
	return r;
}

int h2_tls_peer_identity(SSL *ssl, char *out, size_t outlen)
{
	X509_NAME *subject;
	X509 *crt;
	int idx, r;

	if (!ssl || !out || outlen == 0)
		return -EINVAL;
	crt = SSL_get0_peer_certificate(ssl);
	if (!crt || SSL_get_verify_result(ssl) != X509_V_OK)
		return -ENOENT;
	subject = X509_get_subject_name(crt);
	idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
	if (idx >= 0) {
		X509_NAME_ENTRY *e = X509_NAME_get_entry(subject, idx);

		r = tls_copy_name(X509_NAME_ENTRY_get_data(e), out, outlen);
		if (r != -ENOENT)
			return r;
	}
	return tls_san_identity(crt, out, outlen);
}

/* ---------------------------------------------------------------------- */
/* Files.                                                                 */

/* Create path and its missing parents, each with mode 0700. */
static int tls_mkdirs(const char *path, char *err, size_t errlen)
{
	char buf[PATH_MAX];
	struct stat stt;
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf)) {
		snprintf(err, errlen, "bad directory name \"%s\"", path);
		return -EINVAL;
	}
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;

		*p = '\0';
		if (mkdir(buf, 0700) == 0) {
			/* Exactly 0700, whatever bits the umask took away. */
			if (chmod(buf, 0700) < 0) {
				int r = -errno;

				snprintf(err, errlen, "cannot chmod %s: %s",
					 buf, strerror(-r));
				return r;
			}
		} else if (errno != EEXIST) {
			int r = -errno;

			snprintf(err, errlen, "cannot create directory %s: %s",
				 buf, strerror(-r));
			return r;
		}
		*p = saved;
		if (!saved)
			break;
	}
	if (stat(path, &stt) < 0 || !S_ISDIR(stt.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a directory", path);
		return -ENOTDIR;
	}
	return 0;
}

/*
 * Replace path with len bytes of data, atomically: a temporary file in the
 * same directory with exactly mode, fsync, rename.
 */
static int tls_write_file(const char *path, const void *data, size_t len,
			  mode_t mode, char *err, size_t errlen)
{
	const char *p = data;
	char tmp[PATH_MAX];
	int fd, r = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path,
			     (long)getpid()) >= sizeof(tmp)) {
		snprintf(err, errlen, "path too long: %s", path);
		return -ENAMETOOLONG;
	}
	unlink(tmp); /* left over by a crashed run with the same pid */
	/* Created private, widened by fchmod: never briefly readable. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create %s: %s", tmp,
			 strerror(-r));
		return r;
	}
	if (fchmod(fd, mode) < 0) {
		r = -errno;
		goto fail;
	}
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto fail;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) < 0) {
		r = -errno;
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = -errno;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = -errno;
		goto fail;
	}
	return 0;

fail:
	snprintf(err, errlen, "cannot write %s: %s", path, strerror(-r));
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return r;
}

/* Write key (0600) as unencrypted PKCS#8 PEM to path. */
static int tls_write_key(const char *path, EVP_PKEY *key, char *err,
			 size_t errlen)
{
	/* Secure memory BIO: the PEM text is wiped when it is freed. */
	BIO *b = BIO_new(BIO_s_secmem());
	char *data;
	long len;
	int r;

	if (!b ||
	    !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)) {
		tls_err(err, errlen, "cannot encode the key for %s", path);
		BIO_free(b);
		return -ENOMEM;
	}
	len = BIO_get_mem_data(b, &data);
	r = tls_write_file(path, data, (size_t)len, 0600, err, errlen);
	BIO_free(b);
	return r;
}

/* Write crt (0644) as PEM to path. */
static int tls_write_cert(const char *path, X509 *crt, char *err, size_t errlen)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data;
	long len;
	int r;

	if (!b || !PEM_write_bio_X509(b, crt)) {
		tls_err(err, errlen, "cannot encode the certificate for %s",
			path);
		BIO_free(b);
		return -ENOMEM;
	}
	len = BIO_get_mem_data(b, &data);
	r = tls_write_file(path, data, (size_t)len, 0644, err, errlen);
	BIO_free(b);
	return r;
}

/* Read a PEM certificate; NULL with err set. */
static X509 *tls_load_cert(const char *path, char *err, size_t errlen)
{
	BIO *b = BIO_new_file(path, "r");
	X509 *crt;

	if (!b) {
		tls_err(err, errlen, "cannot read the certificate %s", path);
		return NULL;
	}
	crt = PEM_read_bio_X509(b, NULL, tls_no_passphrase, NULL);
	BIO_free(b);
	if (!crt)
		tls_err(err, errlen, "%s does not hold a PEM certificate",
			path);
	return crt;
}

/* Read an unencrypted PEM private key; NULL with err set. */
static EVP_PKEY *tls_load_key(const char *path, char *err, size_t errlen)
{
	BIO *b = BIO_new_file(path, "r");
	EVP_PKEY *key;

	if (!b) {
		tls_err(err, errlen, "cannot read the key %s", path);
		return NULL;
	}
	key = PEM_read_bio_PrivateKey(b, NULL, tls_no_passphrase, NULL);
	BIO_free(b);
	if (!key)
		tls_err(err, errlen,
			"%s does not hold an unencrypted PEM private key",
			path);
	return key;
}

/* 1 if path exists, 0 if it does not, -errno (err set) if unknown. */
static int tls_exists(const char *path, char *err, size_t errlen)
{
	struct stat stt;
	int r;

	if (stat(path, &stt) == 0)
		return 1;
	if (errno == ENOENT)
		return 0;
	r = -errno;
	snprintf(err, errlen, "cannot stat %s: %s", path, strerror(-r));
	return r;
}

/* ---------------------------------------------------------------------- */
/* Making certificates.                                                   */

/* A fresh ECDSA P-256 key; NULL with err set. */
static EVP_PKEY *tls_new_key(char *err, size_t errlen)
{
	EVP_PKEY *key = EVP_EC_gen(TLS_CURVE);

	if (!key)
		tls_err(err, errlen, "cannot generate an ECDSA %s key",
			TLS_CURVE);
	return key;
}

/* Add extension nid = value (OpenSSL config syntax) to crt. */
static int tls_add_ext(X509 *crt, X509V3_CTX *v3, int nid, const char *value,
		       char *err, size_t errlen)
{
	X509_EXTENSION *ext;
	int ok;

	ext = X509V3_EXT_nconf_nid(NULL, v3, nid, value);
	if (!ext) {
		/* Show the value as given, without our "critical," prefix. */
		tls_err(err, errlen, "bad %s \"%s\"", OBJ_nid2ln(nid),
			value + (strncmp(value, "critical,", 9) ? 0 : 9));
		return -EINVAL;
	}
	ok = X509_add_ext(crt, ext, -1);
	X509_EXTENSION_free(ext);
	if (!ok) {
		tls_err(err, errlen, "cannot add %s", OBJ_nid2ln(nid));
		return -ENOMEM;
	}
	return 0;
}

/* A random positive serial of TLS_SERIAL_BYTES bytes into crt. */
static int tls_set_serial(X509 *crt)
{
	unsigned char b[TLS_SERIAL_BYTES];
	BIGNUM *bn = NULL;
	int r = -EIO;

	do {
		if (RAND_bytes(b, sizeof(b)) != 1)
			return -EIO;
		bn = BN_bin2bn(b, sizeof(b), bn);
		if (!bn)
			return -ENOMEM;
	} while (BN_is_zero(bn));
	if (BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(crt)))
		r = 0;
	BN_free(bn);
	return r;
}

/*
 * Validity: days > 0 is [now - 1 hour, now + days] (the hour absorbs
 * clock skew between machines); days < 0 is the day before
 * now + days, an already expired certificate.
 */
static int tls_set_validity(X509 *crt, int days)
{
	if (days > 0) {
		if (!X509_gmtime_adj(X509_getm_notBefore(crt), -3600))
			return -EINVAL;
	} else if (!X509_time_adj_ex(X509_getm_notBefore(crt), days - 1, 0,
				     NULL)) {
		return -EINVAL;
	}
	if (!X509_time_adj_ex(X509_getm_notAfter(crt), days, 0, NULL))
		return -EINVAL;
	return 0;
}

/*
 * Make a certificate of the given kind for key: subject CN cn (none if
 * NULL), subjectAltNames san (server only; critical when there is no CN),
 * signed by issuer/issuer_key, or self-signed by key when issuer is NULL.
 * NULL with err set.
 */
static X509 *tls_make_cert(enum tls_kind kind, const char *cn, const char *san,
			   EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
			   int days, char *err, size_t errlen)
{
	X509 *crt = X509_new();
	X509_NAME *subject;
	X509V3_CTX v3;
	char sanbuf[1024];

	if (!crt) {
		tls_err(err, errlen, "out of memory");
		return NULL;
	}
	if (!X509_set_version(crt, X509_VERSION_3) || tls_set_serial(crt) < 0 ||
	    tls_set_validity(crt, days) < 0 || !X509_set_pubkey(crt, key)) {
		tls_err(err, errlen, "cannot fill in a certificate");
		goto fail;
	}
	subject = X509_get_subject_name(crt);
	if (cn && *cn &&
	    !X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
					(const unsigned char *)cn, -1, -1, 0)) {
		tls_err(err, errlen, "bad common name \"%s\"", cn);
		goto fail;
	}
	if (!X509_set_issuer_name(crt, issuer ? X509_get_subject_name(issuer)
					      : subject)) {
		tls_err(err, errlen, "cannot set the issuer name");
		goto fail;
	}

	X509V3_set_ctx(&v3, issuer ? issuer : crt, crt, NULL, NULL, 0);
	X509V3_set_ctx_nodb(&v3);
	if (kind == TLS_CA) {
		if (tls_add_ext(crt, &v3, NID_basic_constraints,
				"critical,CA:TRUE", err, errlen) < 0 ||
		    tls_add_ext(crt, &v3, NID_key_usage,
				"critical,keyCertSign,cRLSign", err,
				errlen) < 0)
			goto fail;
	} else {
		if (tls_add_ext(crt, &v3, NID_basic_constraints,
				"critical,CA:FALSE", err, errlen) < 0 ||
		    tls_add_ext(crt, &v3, NID_key_usage,
				"critical,digitalSignature", err, errlen) < 0 ||
		    tls_add_ext(crt, &v3, NID_ext_key_usage,
				kind == TLS_SERVER ? "serverAuth"
						   : "clientAuth",
				err, errlen) < 0)
			goto fail;
	}
	if (san && *san) {
		/* RFC 5280 4.2.1.6: critical when the subject is empty. */
		if ((size_t)snprintf(sanbuf, sizeof(sanbuf), "%s%s",
				     cn && *cn ? "" : "critical,",
				     san) >= sizeof(sanbuf)) {
			snprintf(err, errlen, "subjectAltName list too long");
			goto fail;
		}
		if (tls_add_ext(crt, &v3, NID_subject_alt_name, sanbuf, err,
				errlen) < 0)
			goto fail;
	}
	/* The subject key id must exist before a self-signed AKID uses it. */
	if (tls_add_ext(crt, &v3, NID_subject_key_identifier, "hash", err,
			errlen) < 0 ||
	    tls_add_ext(crt, &v3, NID_authority_key_identifier, "keyid:always",
			err, errlen) < 0)
		goto fail;
	if (!X509_sign(crt, issuer ? issuer_key : key, EVP_sha256())) {
		tls_err(err, errlen, "cannot sign the certificate");
		goto fail;
	}
	return crt;

fail:
	X509_free(crt);
	return NULL;
}

/* True if s holds a control character. */
static bool tls_has_cntrl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* ---------------------------------------------------------------------- */
/* Development certificates.                                              */

/*
 * Make sure dir/name.crt and dir/name.key exist and belong together,
 * creating what is missing (see the file comment), and load both into
 * out.  ca is the issuer, NULL for the self-signed CA itself.
 */
static int tls_dev_pair(const char *dir, const char *name, enum tls_kind kind,
			const char *cn, const char *san,
			const struct tls_pair *ca, struct tls_pair *out,
			char *err, size_t errlen)
{
	char crt_path[PATH_MAX], key_path[PATH_MAX];
	struct tls_pair p = {NULL, NULL};
	int have_crt, have_key, r;

	if ((size_t)snprintf(crt_path, sizeof(crt_path), "%s/%s.crt", dir,
			     name) >= sizeof(crt_path) ||
	    (size_t)snprintf(key_path, sizeof(key_path), "%s/%s.key", dir,
			     name) >= sizeof(key_path)) {
		snprintf(err, errlen, "directory name too long: %s", dir);
		return -ENAMETOOLONG;
	}
	have_crt = tls_exists(crt_path, err, errlen);
	if (have_crt < 0)
		return have_crt;
	have_key = tls_exists(key_path, err, errlen);
	if (have_key < 0)
		return have_key;
	if (have_crt && !have_key) {
		snprintf(err, errlen,
			 "%s exists but its key %s is missing; remove %s to "
			 "have a new pair created",
			 crt_path, key_path, crt_path);
		return -ENOENT;
	}

	r = -EINVAL;
	p.key = have_key ? tls_load_key(key_path, err, errlen)
			 : tls_new_key(err, errlen);
	if (!p.key)
		goto fail;
	if (have_crt) {
		p.crt = tls_load_cert(crt_path, err, errlen);
		if (!p.crt)
			goto fail;
		if (X509_check_private_key(p.crt, p.key) != 1) {
			tls_err(err, errlen,
				"%s does not match its key %s; remove both to "
				"have a new pair created",
				crt_path, key_path);
			goto fail;
		}
		if (ca && X509_verify(p.crt, ca->key) != 1) {
			tls_err(err, errlen,
				"%s was not signed by %s/ca.crt (was the CA "
				"replaced?); remove %s and %s to have them "
				"issued again",
				crt_path, dir, crt_path, key_path);
			goto fail;
		}
	} else {
		p.crt = tls_make_cert(kind, cn, san, p.key, ca ? ca->crt : NULL,
				      ca ? ca->key : NULL, TLS_DEV_DAYS, err,
				      errlen);
		if (!p.crt)
			goto fail;
	}
	if (!have_key) {
		r = tls_write_key(key_path, p.key, err, errlen);
		if (r < 0)
			goto fail;
	}
	if (!have_crt) {
		r = tls_write_cert(crt_path, p.crt, err, errlen);
		if (r < 0)
			goto fail;
	}
	*out = p;
	return 0;

fail:
	X509_free(p.crt);
	EVP_PKEY_free(p.key);
	return r;
}

int h2_tls_dev_certs(const char *dir, const char *client_identity, char *err,
		     size_t errlen)
{
	struct tls_pair ca = {NULL, NULL}, srv = {NULL, NULL},
			cli = {NULL, NULL};
	int r;

	ERR_clear_error();
	if (!dir || !client_identity || !*client_identity ||
	    tls_has_cntrl(client_identity)) {
		snprintf(err, errlen,
			 "development certificates need a "
			 "directory and a printable client "
			 "identity");
		return -EINVAL;
	}
	r = tls_mkdirs(dir, err, errlen);
	if (r < 0)
		return r;
	r = tls_dev_pair(dir, "ca", TLS_CA, "h2 development CA", NULL, NULL,
			 &ca, err, errlen);
	if (r < 0)
		goto out;
	r = tls_dev_pair(dir, "server", TLS_SERVER, "localhost",
			 "DNS:localhost,IP:127.0.0.1", &ca, &srv, err, errlen);
	if (r < 0)
		goto out;
	r = tls_dev_pair(dir, "client", TLS_CLIENT, client_identity, NULL, &ca,
			 &cli, err, errlen);
out:
	X509_free(cli.crt);
	EVP_PKEY_free(cli.key);
	X509_free(srv.crt);
	EVP_PKEY_free(srv.key);
	X509_free(ca.crt);
	EVP_PKEY_free(ca.key);
	ERR_clear_error();
	return r;
}

int h2_tls_issue(const char *ca_crt, const char *ca_key, const char *cn,
		 const char *san, int days, const char *crt_out,
		 const char *key_out, char *err, size_t errlen)
{
	bool server = san && *san;
	struct tls_pair ca = {NULL, NULL}, p = {NULL, NULL};
	int r = -EINVAL;

	ERR_clear_error();
	if (!ca_crt || !ca_key || !crt_out || !key_out) {
		snprintf(err, errlen,
			 "issuing a certificate needs the CA "
			 "certificate and key and two output "
			 "paths");
		return -EINVAL;
	}
	if (!server && !(cn && *cn)) {
		snprintf(err, errlen,
			 "a certificate needs a CN (a client "
			 "identity) or subjectAltNames (a "
			 "server)");
		return -EINVAL;
	}
	if (cn && tls_has_cntrl(cn)) {
		snprintf(err, errlen,
			 "the CN must not contain control "
			 "characters");
		return -EINVAL;
	}
	if (days == 0 || days > TLS_MAX_DAYS || days < -TLS_MAX_DAYS) {
		snprintf(err, errlen,
			 "validity of %d days: give a number of days between "
			 "1 and %d (negative for an expired certificate)",
			 days, TLS_MAX_DAYS);
		return -EINVAL;
	}
	ca.crt = tls_load_cert(ca_crt, err, errlen);
	if (!ca.crt)
		goto out;
	ca.key = tls_load_key(ca_key, err, errlen);
	if (!ca.key)
		goto out;
	if (X509_check_private_key(ca.crt, ca.key) != 1) {
		tls_err(err, errlen, "the CA key %s does not match %s", ca_key,
			ca_crt);
		goto out;
	}
	if (X509_check_ca(ca.crt) == 0) {
		snprintf(err, errlen, "%s is not a CA certificate", ca_crt);
		goto out;
	}
	p.key = tls_new_key(err, errlen);
	if (!p.key)
		goto out;
	p.crt = tls_make_cert(server ? TLS_SERVER : TLS_CLIENT, cn, san, p.key,
			      ca.crt, ca.key, days, err, errlen);
	if (!p.crt)
		goto out;
	r = tls_write_key(key_out, p.key, err, errlen);
	if (r < 0)
		goto out;
	r = tls_write_cert(crt_out, p.crt, err, errlen);
out:
	X509_free(p.crt);
	EVP_PKEY_free(p.key);
	X509_free(ca.crt);
	EVP_PKEY_free(ca.key);
	ERR_clear_error();
	return r;
}
