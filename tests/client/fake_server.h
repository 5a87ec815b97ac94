/*
 * fake_server.h - a small in-process h2 server for testing libh2client.
 *
 * One thread accepts TLS connections on 127.0.0.1 (port 0) and serves
 * them one at a time with blocking I/O and proto/frame.h.  It keeps a
 * toy volume "vm1" (handle FAKE_HANDLE, FAKE_DISK bytes) in memory, whose
 * snapshots "vm1@..." open read-only on the same handle, three snapshots
 * to list (vm1@a, vm1@b, vm2@c; two per reply, so that the client must
 * page; deleting vm1@b is HAS_DEPENDENTS), and
 * logs every request it receives, so tests can check what the client put
 * on the wire.  The mode decides how it answers:
 *
 *   FAKE_SERVE    reads whatever requests are already there (up to 16)
 *                 and answers them in reverse order: out-of-order replies
 *                 whenever the client pipelines.
 *   FAKE_REVERSE  answers other requests at once, but waits for n I/O
 *                 requests (Read .. BlockStatus), then answers them in
 *                 reverse order.
 *   FAKE_CLOSE    answers other requests at once, but reads n I/O
 *                 requests (Read .. BlockStatus) without answering and
 *                 then drops the connection (no close_notify).
 *   FAKE_HOLD     answers other requests at once, never answers an I/O
 *                 request (nor Hello when hold_hello is set), until the
 *                 client goes away.
 *   FAKE_LIMIT    collects I/O requests until n are outstanding,
 *                 then checks for 50 ms that no more arrive (max_held
 *                 records the most ever outstanding) and answers them.
 *   FAKE_STOP     plays h2d stopping: answers other requests at once,
 *                 reads n I/O requests without running them, answers
 *                 them UNAVAILABLE, then closes with close_notify (and
 *                 reads until the client's EOF, as h2d lingers).
 *
 * For FAKE_CLOSE and FAKE_STOP, drop_op (when set) names the requests
 * counted instead of I/O ones, and `once` limits the mode to the first
 * connection: later ones (a client reconnecting) are served as
 * FAKE_SERVE.  Each connection k (1, 2, ...) hands out volume handle
 * FAKE_HANDLE + 100 * (k - 1), and says instance k in its HelloResult
 * (1 always with same_instance), as h2d processes would.
 *
 * Nothing in the fake asserts: it records the first thing that surprised
 * it in `error`, and fake_stop() returns it for the test to check.
 */
#ifndef H2_TEST_FAKE_SERVER_H
#define H2_TEST_FAKE_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "frame.h"

#define FAKE_HANDLE    7u
#define FAKE_DISK      (4u << 20)
#define FAKE_MAX_BATCH 256

enum fake_mode {
	FAKE_SERVE,
	FAKE_REVERSE,
	FAKE_CLOSE,
	FAKE_HOLD,
	FAKE_LIMIT,
	FAKE_STOP,
};

/* One request as received: decoded header and a copy of its payload. */
struct fake_rec {
	H2__Request *rq;
	uint8_t *payload;
	unsigned conn; /* the connection it came on: 1, 2, ... */
};

struct fake {
	/* Configuration: set before fake_start. */
	const char *cert, *key, *ca; /* server cert, key; CA for clients */
	enum fake_mode mode;
	unsigned n;
	bool hold_hello;
	bool tls12_only;	 /* refuse TLS 1.3 */
	uint64_t max_payload;	 /* HelloResult.max_payload (0: 32 MiB) */
	uint32_t max_inflight;	 /* HelloResult.max_inflight (0: 64) */
	H2__Status flush_status; /* Flush is answered with this */
	const char *flush_msg;
	bool stat_stuck; /* Stat pages never advance */
	H2__Request__OpCase drop_op; /* FAKE_CLOSE, FAKE_STOP: see above */
	bool once;		     /* ... on the first connection only */
	bool stop_stays_open;	     /* FAKE_STOP: no close after it */
	bool same_instance;	     /* every connection says instance 1 */
	bool reopen_fails;	     /* VolumeOpen NOT_FOUND after the first
					connection */
	unsigned refuse_after;	     /* connections after this many (0:
					none) are closed at once, no TLS */

	/* Under mu: the volume, the log and what the fake saw. */
	pthread_mutex_t mu;
	uint8_t *disk;
	struct fake_rec *log;
	size_t nlog, caplog;
	char error[512];	/* first surprise, "" if none */
	char accept_error[256]; /* why the last TLS accept failed */
	unsigned accepted;	/* TLS handshakes completed */
	unsigned refused;	/* connections closed for refuse_after */
	pthread_cond_t cv;	/* signalled when accepted/refused grow */
	unsigned max_held;	/* FAKE_LIMIT */
	uint64_t max_read_len;	/* longest Read asked for */

	/* Private. */
	int conn_fd;   /* the connection being served, -1; under mu */
	unsigned conn; /* its number (accepted when it started); under mu */
	bool stopping; /* under mu */
	SSL_CTX *ctx;
	int lfd, stop[2];
	uint16_t port;
	pthread_t thr;
};

/* Listen on 127.0.0.1:0 and start serving; false with f->error set. */
bool fake_start(struct fake *f);
/* Stop, free; returns a copy of f->error (static buffer), "" if none. */
const char *fake_stop(struct fake *f);
/* Requests logged so far (locks mu). */
size_t fake_count(struct fake *f);
/* The i-th logged request (valid until fake_stop; read under no lock is
 * fine once the client has the reply to it). */
const struct fake_rec *fake_get(struct fake *f, size_t i);
/* The last logged request with this op, or NULL. */
const struct fake_rec *fake_last(struct fake *f, H2__Request__OpCase op);
/* How many logged requests have this op. */
size_t fake_count_op(struct fake *f, H2__Request__OpCase op);
/* refused so far (locks mu: the fake's thread counts while it runs). */
unsigned fake_refused(struct fake *f);
/* Wait (at most timeout_ms) until refused >= n; false on timeout. */
bool fake_wait_refused(struct fake *f, unsigned n, int timeout_ms);
/*
 * Make test certificates in dir with the openssl command line: a CA
 * (ca.crt, ca.key), a server certificate with SAN IP:127.0.0.1 and
 * DNS:localhost (server.crt, server.key), a client certificate "alice"
 * (client.crt, client.key) and an unrelated CA (other-ca.crt).
 */
bool fake_make_certs(const char *dir);
/* The handle connection k gives vm1. */
#define FAKE_CONN_HANDLE(k) (FAKE_HANDLE + 100u * ((k)-1))

#endif /* H2_TEST_FAKE_SERVER_H */
