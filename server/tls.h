/*
 * tls.h - TLS contexts for h2d and the development certificate authority.
 *
 * The server context requires a client certificate signed by the
 * configured CA (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT),
 * speaks TLS 1.3 only unless allow_tls12 is set, and loads the server
 * certificate chain and key from PEM files.
 *
 * A client's identity is its certificate's subject CN; if there is no CN,
 * the first DNS or email subjectAltName.
 *
 * Thread-safety: contexts are reference counted by OpenSSL and may be used
 * from several threads; reload builds a new context and swaps it.
 */
#ifndef H2D_TLS_H
#define H2D_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

struct h2_tls_files {
	const char *ca;	  /* CA bundle that client certificates must chain to */
	const char *cert; /* server certificate (chain) */
	const char *key;  /* server private key */
};

/*
 * Build the server context.  On failure returns NULL and writes a
 * sentence naming the file and the OpenSSL reason into err.
 */
SSL_CTX *h2_tls_server_ctx(const struct h2_tls_files *files, bool allow_tls12,
			   char *err, size_t errlen);

/*
 * The verified peer's identity (see above) into out; -ENOENT if the
 * connection has no verified client certificate (or it names no
 * identity), -EINVAL if the name holds a NUL or control character,
 * -ERANGE if it does not fit in outlen bytes.
 */
int h2_tls_peer_identity(SSL *ssl, char *out, size_t outlen);

/*
 * Development certificates: create dir (mode 0700) and, for each file
 * missing, write ca.crt/ca.key (a self-signed CA), server.crt/server.key
 * (SANs localhost and 127.0.0.1), client.crt/client.key (CN
 * client_identity).  Keys are ECDSA P-256, files 0600 (certs 0644),
 * valid for 10 years.  Existing files are kept.  0 or -errno with err set.
 * A key whose certificate is missing gets a new certificate; a
 * certificate whose key is missing, or one not signed by ca.crt, is an
 * error (remove it to have it made again).  Files are written atomically
 * (temporary file, fsync, rename), each key before its certificate.
 */
int h2_tls_dev_certs(const char *dir, const char *client_identity, char *err,
		     size_t errlen);

/*
 * Issue a certificate signed by the CA in ca_crt/ca_key: for a client
 * (CN identity) or a server (SANs from the comma-separated san list,
 * "DNS:localhost,IP:127.0.0.1").  days may be negative (an expired
 * certificate, for tests).  Writes crt_out and key_out.
 *
 * A non-empty san makes a server certificate (extendedKeyUsage
 * serverAuth, CN cn if not NULL, else an empty subject and a critical
 * SAN); otherwise cn is required and it is a client certificate
 * (clientAuth).  days > 0: valid from an hour ago for days days;
 * days < 0: expired since -days days; 0 and |days| > 36500 are -EINVAL.
 * The outputs are replaced atomically (key 0600, certificate 0644).
 * 0 or -errno with err set.
 */
int h2_tls_issue(const char *ca_crt, const char *ca_key, const char *cn,
		 const char *san, int days, const char *crt_out,
		 const char *key_out, char *err, size_t errlen);

#endif
