/*
 * raw.h - hostile clients for integration tests: raw TLS connections to
 * h2d's native and NBD ports, and probes of the server process.
 *
 * libh2client never sends a malformed frame and always reads its
 * replies; these clients send whatever a test builds (native frames with
 * proto/frame.h, NBD messages with nbd_proto.h's constants) and read
 * only what the test asks for.  Every blocking call is bounded (socket
 * timeouts of H2T_RAW_GUARD_SEC) so that a server that hangs fails the
 * test instead of hanging it.
 *
 * Not thread-safe per connection; separate connections may be used from
 * separate threads.
 */
#ifndef H2_TEST_RAW_H
#define H2_TEST_RAW_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "frame.h"
#include "harness.h"

#define H2T_RAW_GUARD_SEC 30 /* socket timeouts: hang guards only */

struct h2t_raw {
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;
	uint8_t *in; /* received, not yet consumed */
	size_t inlen, incap;
	/* The payload of the last response h2t_raw_recv returned (points
	 * into in; valid until the next call). */
	const uint8_t *payload;
	uint64_t payload_len;
};

/* A blocking TCP connection to "HOST:PORT" (IPv4), with the guard
 * timeouts set; asserts success. */
int h2t_tcp_connect(const char *addr);

/* The same without assertions, for other threads: the fd, or -1 with
 * errno set. */
int h2t_tcp_try_connect(const char *addr);

/* A TLS client context with the server's dev CA and admin certificate;
 * caller frees with SSL_CTX_free. */
SSL_CTX *h2t_tls_ctx(const struct h2t_srv *s);

/* TLS (dev admin certificate) on a connected socket fd, which the
 * connection takes; asserts the handshake succeeds. */
struct h2t_raw *h2t_raw_tls(const struct h2t_srv *s, int fd);

/* A TLS connection to the native port (no Hello yet). */
struct h2t_raw *h2t_raw_connect(const struct h2t_srv *s);

/* Close the socket without a close_notify and free r.  NULL: no-op. */
void h2t_raw_close(struct h2t_raw *r);

/* Send all of buf; asserts it went. */
void h2t_raw_send(struct h2t_raw *r, const void *buf, size_t len);

/* Send all of buf; false if the connection refused it (closed, reset,
 * or the send timeout passed). */
bool h2t_raw_try_send(struct h2t_raw *r, const void *buf, size_t len);

/* Frame q (its payload_len set to len) and send it with the payload. */
void h2t_raw_send_req(struct h2t_raw *r, H2__Request *q, const void *payload,
		      size_t len);

/*
 * The next response (r->payload and r->payload_len: its payload), or NULL
 * when the server closed the connection (EOF, close_notify or reset).
 * Fails the test on a timeout, a TLS error, or a malformed frame.
 * Caller frees with h2_frame_response_free.
 */
H2__Response *h2t_raw_recv(struct h2t_raw *r);

/* Read (and drop) responses until the server closes; fails the test if
 * it does not within the guard timeout. */
void h2t_raw_expect_closed(struct h2t_raw *r);

/* Send q and return its response, asserting the connection stayed up and
 * the response's id is q's. */
H2__Response *h2t_raw_call(struct h2t_raw *r, H2__Request *q);

/* Hello (version 1), asserting OK. */
void h2t_raw_hello(struct h2t_raw *r);

/* VolumeCreate(name, size) unless it exists, and VolumeOpen(name,
 * write): the handle. */
uint64_t h2t_raw_open(struct h2t_raw *r, const char *name, uint64_t size);

/*
 * NBD: connect to the NBD port, negotiate fixed newstyle, STARTTLS, TLS
 * (dev admin certificate) and NBD_OPT_GO for export; the connection is
 * then in the transmission phase (simple replies).  *size: the export's.
 */
struct h2t_raw *h2t_nbd_connect(const struct h2t_srv *s, const char *export,
				uint64_t *size);

/* Build an NBD request (28 bytes) into out. */
void h2t_nbd_request(uint8_t out[28], uint16_t flags, uint16_t type,
		     uint64_t cookie, uint64_t offset, uint32_t length);

/* Read exactly len bytes from the TLS connection; false on close. */
bool h2t_raw_read_exact(struct h2t_raw *r, void *buf, size_t len);

/*
 * Poll the server's Stat (through c, which is one of its native
 * connections) until it reports native and nbd open connections, at most
 * timeout_ms; false (with the last figures in *got_native, *got_nbd) if
 * it never did.
 */
bool h2t_wait_conns(h2_client *c, uint64_t native, uint64_t nbd, int timeout_ms,
		    uint64_t *got_native, uint64_t *got_nbd);

/* Probes of a process, from /proc. */
long h2t_proc_rss_kib(pid_t pid);   /* VmRSS */
double h2t_proc_cpu_sec(pid_t pid); /* user + system time */
int h2t_proc_fds(pid_t pid);	    /* open file descriptors */

/* A monotonic clock in milliseconds (double) and nanoseconds. */
double h2t_now_ms(void);
uint64_t h2t_now_ns(void);

/* Whether this is a sanitizer build (memory figures do not apply). */
bool h2t_sanitized(void);

#endif
