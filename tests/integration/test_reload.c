/*
 * SIGHUP ("systemctl reload h2d") against a real h2d: a rotated server
 * certificate is served to new connections while a connection made
 * before goes on working, and access rules follow the config file while
 * those given with --access (and --dev's) stay.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "harness.h"
#include "tls.h"

#define MiB (1024ull * 1024)

static struct h2t_srv srv;
static char conf[64];

static void stop_server(void)
{
	h2t_cleanup(&srv);
	if (conf[0])
		unlink(conf);
	conf[0] = 0;
}

TestSuite(reload, .fini = stop_server, .timeout = 120);

/* The serial number of a certificate, in hex (static buffer). */
static const char *serial_of(X509 *x)
{
	static char out[128];
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;

	cr_assert_not_null(hex);
	snprintf(out, sizeof(out), "%s", hex);
	OPENSSL_free(hex);
	BN_free(bn);
	return out;
}

/* The serial of the certificate in a PEM file. */
static void file_serial(const char *path, char *out, size_t len)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	cr_assert_not_null(f, "%s", path);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	cr_assert_not_null(x);
	snprintf(out, len, "%s", serial_of(x));
	X509_free(x);
}

/* The serial of the certificate h2d shows a new TLS connection (made
 * with the development admin's certificate, verified against the CA). */
static void served_serial(char *out, size_t len)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	char path[256];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl;
	X509 *x;
	int fd;

	cr_assert_not_null(ctx);
	snprintf(path, sizeof(path), "%s/ca.crt", srv.tls);
	cr_assert_eq(SSL_CTX_load_verify_locations(ctx, path, NULL), 1);
	snprintf(path, sizeof(path), "%s/client.crt", srv.tls);
	cr_assert_eq(SSL_CTX_use_certificate_chain_file(ctx, path), 1);
	snprintf(path, sizeof(path), "%s/client.key", srv.tls);
	cr_assert_eq(SSL_CTX_use_PrivateKey_file(ctx, path, SSL_FILETYPE_PEM),
		     1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	sa.sin_port = htons((uint16_t)atoi(strrchr(srv.addr, ':') + 1));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	cr_assert_eq(SSL_connect(ssl), 1, "TLS handshake with h2d failed");
	cr_assert_eq(SSL_get_verify_result(ssl), X509_V_OK);
	x = SSL_get1_peer_certificate(ssl);
	cr_assert_not_null(x);
	snprintf(out, len, "%s", serial_of(x));
	X509_free(x);
	SSL_shutdown(ssl);
	SSL_free(ssl);
	close(fd);
	SSL_CTX_free(ctx);
}

/* Write a block, read it back, flush: the connection works. */
static void io_works(h2_volume *v, uint64_t seed)
{
	uint8_t buf[4096], got[4096];

	h2t_pattern(buf, sizeof(buf), seed);
	cr_assert_eq(h2_pwrite(v, buf, sizeof(buf), seed * 4096, 0), 0, "%s",
		     h2_last_error());
	cr_assert_eq(h2_pread(v, got, sizeof(got), seed * 4096), 0);
	cr_assert_eq(memcmp(buf, got, sizeof(buf)), 0);
	cr_assert_eq(h2_flush(v), 0);
}

Test(reload, rotated_certificate_goes_to_new_connections_old_ones_go_on)
{
	char before[128], after[128], want[128], crt[256], key[256], tmpc[256],
	    tmpk[256], ca[256], cak[256], err[512];
	h2_client *c, *fresh;
	h2_volume *v;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	cr_assert_eq(h2_volume_create(c, "r", 4 * MiB), 0);
	cr_assert_eq(h2_volume_open(c, "r", H2_OPEN_RW, &v), 0);
	io_works(v, 1);
	served_serial(before, sizeof(before));
	snprintf(crt, sizeof(crt), "%s/server.crt", srv.tls);
	snprintf(key, sizeof(key), "%s/server.key", srv.tls);
	file_serial(crt, want, sizeof(want));
	cr_assert_str_eq(before, want);

	/* Rotate as h2-certs does: a new key and certificate from the same
	 * CA, each renamed into place. */
	snprintf(ca, sizeof(ca), "%s/ca.crt", srv.tls);
	snprintf(cak, sizeof(cak), "%s/ca.key", srv.tls);
	snprintf(tmpc, sizeof(tmpc), "%s/.server.crt.new", srv.tls);
	snprintf(tmpk, sizeof(tmpk), "%s/.server.key.new", srv.tls);
	cr_assert_eq(h2_tls_issue(ca, cak, NULL, "DNS:localhost,IP:127.0.0.1",
				  30, tmpc, tmpk, err, sizeof(err)),
		     0, "%s", err);
	cr_assert_eq(rename(tmpk, key), 0);
	cr_assert_eq(rename(tmpc, crt), 0);
	file_serial(crt, want, sizeof(want));
	cr_assert_str_neq(want, before);
	/* Until the reload, h2d keeps showing the old one. */
	served_serial(after, sizeof(after));
	cr_assert_str_eq(after, before);
	io_works(v, 2);

	kill(srv.pid, SIGHUP);
	cr_assert(h2t_wait_log(&srv, "reloaded certificates", 1, 30000));
	served_serial(after, sizeof(after));
	cr_assert_str_eq(after, want, "a new connection got %s, not %s", after,
			 want);
	/* The connection made before keeps its session and works. */
	io_works(v, 3);
	cr_assert_str_eq(h2_client_identity(c), "admin");
	/* And libh2client verifies the new certificate. */
	fresh = h2t_connect(&srv);
	cr_assert_eq(h2_sync(fresh), 0);
	h2_disconnect(fresh);
	io_works(v, 4);
	h2_volume_close(v);
	h2_disconnect(c);
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0);
}

/* Write the config file. */
static void write_conf(const char *text)
{
	FILE *f = fopen(conf, "w");

	cr_assert_not_null(f);
	fputs(text, f);
	cr_assert_eq(fclose(f), 0);
}

/* What identity's client sees of volume x: -1 invisible, else its
 * strongest right (1 read, 2 write, 3 admin). */
static int right_on_x(h2_client *c)
{
	h2_volume_info info;
	int r = h2_volume_info_get(c, "x", &info);

	if (r == H2_ENOENT)
		return -1;
	cr_assert_eq(r, 0, "%s", h2_last_error());
	return info.can_admin ? 3 : info.can_write ? 2 : info.can_read ? 1 : 0;
}

/* A client with a fresh certificate for identity who. */
static h2_client *connect_as(const char *who)
{
	char crt[64], key[64];
	h2_client *c = NULL;

	h2t_issue_client(&srv, who, who, 30, false);
	snprintf(crt, sizeof(crt), "%s.crt", who);
	snprintf(key, sizeof(key), "%s.key", who);
	cr_assert_eq(h2t_connect_with(&srv, h2t_path(&srv, crt),
				      h2t_path(&srv, key), &c),
		     0, "%s", h2_last_error());
	return c;
}

/* On SIGHUP the rules are the file's as it is now plus --access and
 * --dev's: a changed [access] section changes its rules, a removed one
 * removes them, and the flags' stay (they used to be dropped). */
Test(reload, access_rules_follow_the_file_and_keep_the_flags)
{
	const char *extra[] = {"--config", NULL, "--access", "carol=write:*",
			       NULL};
	h2_client *admin, *bob, *carol;
	int fd;

	snprintf(conf, sizeof(conf), "/tmp/h2-reload-XXXXXX");
	fd = mkstemp(conf);
	cr_assert_geq(fd, 0);
	close(fd);
	write_conf("[access]\nbob = read:*\n");
	extra[1] = conf;
	h2t_start(&srv, extra);
	admin = h2t_connect(&srv);
	cr_assert_eq(h2_volume_create(admin, "x", MiB), 0);
	bob = connect_as("bob");
	carol = connect_as("carol");
	cr_assert_eq(right_on_x(bob), 1);
	cr_assert_eq(right_on_x(carol), 2);

	/* The file changes: bob's rule changes, carol's (a flag) stays.
	 * Open connections see it from their next request. */
	write_conf("[access]\nbob = write:*\n");
	kill(srv.pid, SIGHUP);
	cr_assert(
	    h2t_wait_log(&srv, "reloaded certificates and access", 1, 30000));
	cr_assert_eq(right_on_x(bob), 2);
	cr_assert_eq(right_on_x(carol), 2, "the --access rule was dropped");
	cr_assert_eq(right_on_x(admin), 3);

	/* The section goes: so do its rules. */
	write_conf("[server]\nworkers = 4\n");
	kill(srv.pid, SIGHUP);
	cr_assert(
	    h2t_wait_log(&srv, "reloaded certificates and access", 2, 30000));
	cr_assert_eq(right_on_x(bob), -1, "the removed rule is still there");
	cr_assert_eq(right_on_x(carol), 2);
	cr_assert_eq(right_on_x(admin), 3, "--dev's rule was dropped");

	/* A file that no longer parses changes nothing. */
	write_conf("[access]\nbob = frobnicate:*\n");
	kill(srv.pid, SIGHUP);
	cr_assert(h2t_wait_log(&srv, "reload failed", 1, 30000));
	cr_assert_eq(right_on_x(bob), -1);
	cr_assert_eq(right_on_x(carol), 2);
	h2_disconnect(bob);
	h2_disconnect(carol);
	h2_disconnect(admin);
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0);
}
