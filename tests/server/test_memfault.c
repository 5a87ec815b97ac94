/*
 * test_memfault.c - running out of memory in the server's request path.
 *
 * A scripted client workload runs against a real server (server.c,
 * dispatch.c, nbd.c, the worker pool and the engine with its flusher
 * thread, on a store file in /dev/shm) while mfault.h fails the Nth
 * allocation made by the server's side: h2's own code, libevent,
 * protobuf-c and, in the TLS walk, OpenSSL.  The
 * walk takes N = 1, 2, ... until a run of the workload makes fewer than N
 * allocations, so every allocation the workload causes fails once, in
 * turn; a second mode fails SPAN allocations in a row from the Nth on
 * (memory stays short for a while).
 *
 * The native session comes from server.c's H2_FUZZ entry points (as in
 * tests/fuzz/fuzz_session.c): a socketpair whose server end is adopted as
 * a connection that passed its TLS handshake.  NBD goes through the real
 * plaintext listener on 127.0.0.1 port 0.  The TLS walk runs a short
 * native session through the real TLS listener (h2_server_new, on
 * 127.0.0.1 port 0, development certificates): accept, handshake,
 * client identity.
 *
 * What each N must show:
 *   - no crash, no abort, no hang (every request is answered or the
 *     connection is closed);
 *   - a request that fails because of the allocation is answered with
 *     INTERNAL "out of memory ..." (NBD: ENOMEM, or an error reply to an
 *     option), or its connection is closed; every reply that says OK is
 *     right (reads return the data acknowledged before them);
 *   - the client tries again (reconnecting if need be): the server keeps
 *     working and the step succeeds within span + 2 tries; a request
 *     refused with an error was not carried out (a volume or snapshot
 *     create refused with INTERNAL does not exist afterwards);
 *   - afterwards, with failures off, fresh native and NBD sessions on the
 *     same server read back exactly the data acknowledged, the snapshot
 *     and volume created, and the store closes cleanly and checks clean;
 *   - in the sanitizer build, LeakSanitizer finds nothing once the walk
 *     is done (ASAN_OPTIONS=detect_leaks=1, set by ctest).
 *
 * H2_TEST_QUICK=1 (the sanitizer build) walks every 2nd N; the TLS walk
 * every 61st (a handshake is some 7,500 allocations of OpenSSL's);
 * H2_SOAK=1 (scripts/soak) walks the persistent mode with spans of 4, 16
 * and 64, and TLS, every N.  MF_STRIDE=k takes every kth N, MF_START=n
 * starts at n; MF_N=n runs only N = n (with MF_TRACE=1, mfault.c prints
 * where it failed; MF_VERBOSE=1 prints each run, MF_LOG=1 the server's
 * log).  OpenSSL's caches warm up in the first run of a process: the
 * same N may land elsewhere alone than in a walk.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

#include "check.h"
#include "config.h"
#include "dev.h"
#include "evglue.h"
#include "frame.h"
#include "h2core.h"
#include "log.h"
#include "mfault.h"
#include "nbd.h"
#include "nbd_proto.h"
#include "server.h"
#include "srv.h"
#include "tls.h"

#define VOL_SIZE   (1u << 20)
#define DEV_SIZE   (32ull << 20)
#define SPAN	   16	     /* persistent mode: failures in a row */
#define IDLE_TURNS 20000     /* loop turns without progress: a hang */

/* ---------------------------------------------------------------------- */
/* The server under test.                                                 */

/*
 * The store is a file in /dev/shm (tmpfs: its fdatasync costs nothing),
 * through the engine's real file device: a fault-injecting device would
 * allocate in its writes, and they would count.
 */
static char mt_base[64], mt_path[64]; /* base image, a run's copy */
static char mt_tlsdir[64];	      /* development certificates */
static uint64_t mt_n;		      /* the run's first failing allocation */
static uint64_t mt_tries;	      /* a step must get through within */
static uint8_t mt_base_data[VOL_SIZE];

/* Byte i of the contents a write with this fill leaves at offset off. */
static uint8_t pat(uint8_t fill, uint64_t off)
{
	return (uint8_t)(fill ^ (off * 131 >> 7) ^ off);
}

static void pat_fill(uint8_t *buf, uint8_t fill, uint64_t off, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = pat(fill, off + i);
}

/* Copy file src to dst, holes as holes. */
static void copy_sparse(const char *src, const char *dst)
{
	static uint8_t buf[1 << 20];
	int in = open(src, O_RDONLY), out;
	off_t end, data = 0, hole;

	cr_assert_geq(in, 0);
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(out, 0);
	end = lseek(in, 0, SEEK_END);
	cr_assert_eq(ftruncate(out, end), 0);
	while ((data = lseek(in, data, SEEK_DATA)) >= 0 && data < end) {
		hole = lseek(in, data, SEEK_HOLE);
		while (data < hole) {
			size_t n = hole - data < (off_t)sizeof(buf)
				       ? (size_t)(hole - data)
				       : sizeof(buf);

			cr_assert_eq(pread(in, buf, n, data), (ssize_t)n);
			cr_assert_eq(pwrite(out, buf, n, data), (ssize_t)n);
			data += (off_t)n;
		}
	}
	close(in);
	close(out);
}

static const char *const mt_tlsfiles[] = {"ca.crt",     "ca.key",
					   "server.crt", "server.key",
					   "client.crt", "client.key"};

/* dir/name (four at a time). */
static const char *tls_file(const char *name)
{
	static char bufs[4][128];
	static unsigned k;
	char *p = bufs[k++ % 4];

	snprintf(p, sizeof(bufs[0]), "%s/%s", mt_tlsdir, name);
	return p;
}

static void base_cleanup(void)
{
	unlink(mt_base);
	unlink(mt_path);
	if (mt_tlsdir[0]) {
		for (size_t i = 0; i < 6; i++)
			unlink(tls_file(mt_tlsfiles[i]));
		rmdir(mt_tlsdir);
	}
}

static void base_init(void)
{
	struct h2_store_opts so = {.no_flusher = true};
	struct h2_store *st;
	struct h2_dev *dev;
	struct h2_vol *v;

	if (mt_base[0])
		return;
	snprintf(mt_base, sizeof(mt_base), "/dev/shm/h2-memfault-%d-base",
		 (int)getpid());
	snprintf(mt_path, sizeof(mt_path), "/dev/shm/h2-memfault-%d",
		 (int)getpid());
	atexit(base_cleanup);
	cr_assert_eq(h2_dev_create_file(mt_base, DEV_SIZE, true, &dev), 0);
	cr_assert_eq(h2_store_format(dev, NULL), 0, "%s", h2_core_errmsg());
	cr_assert_eq(h2_store_open(dev, &so, &st), 0);
	cr_assert_eq(h2_vol_create(st, "a", VOL_SIZE, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "a", &v), 0);
	/* Data everywhere but in the second quarter (holes there). */
	pat_fill(mt_base_data, 0xa0, 0, VOL_SIZE);
	memset(mt_base_data + VOL_SIZE / 4, 0, VOL_SIZE / 4);
	cr_assert_eq(h2_vol_write(v, mt_base_data, 0, VOL_SIZE / 4, 0), 0);
	cr_assert_eq(h2_vol_write(v, mt_base_data + VOL_SIZE / 2, VOL_SIZE / 2,
				  VOL_SIZE / 2, 0),
		     0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
}

struct mt {
	struct h2_store *st;
	struct h2_config cfg;
	struct h2_server *srv;
	struct event_base *base;
	char nbd_addr[64]; /* plaintext NBD */
	/* TLS: the clients' context, the native and NBD TLS listeners */
	bool tls;
	SSL_CTX *cctx;
	char listen[64], nbd_tls[64];
	/* the model: volume a as acknowledged, and snapshot s1 */
	uint8_t model[VOL_SIZE];
	uint8_t snap[VOL_SIZE];
	bool have_snap, have_c;
	bool closed_seen; /* a connection was closed by the server */
	unsigned errors_seen; /* failed replies seen */
};

/*
 * The clients' TLS context, and the development certificates of the
 * server and of client "admin" (made once per process).
 */
static SSL_CTX *tls_client_ctx(void)
{
	char err[512];
	SSL_CTX *ctx;

	if (!mt_tlsdir[0]) {
		snprintf(mt_tlsdir, sizeof(mt_tlsdir),
			 "/dev/shm/h2-memfault-%d-tls", (int)getpid());
		cr_assert_eq(h2_tls_dev_certs(mt_tlsdir, "admin", err,
					      sizeof(err)),
			     0, "%s", err);
	}
	ctx = SSL_CTX_new(TLS_client_method());
	cr_assert_not_null(ctx);
	cr_assert_eq(SSL_CTX_use_certificate_chain_file(
			 ctx, tls_file("client.crt")),
		     1);
	cr_assert_eq(SSL_CTX_use_PrivateKey_file(ctx, tls_file("client.key"),
						 SSL_FILETYPE_PEM),
		     1);
	cr_assert_eq(SSL_CTX_load_verify_locations(ctx, tls_file("ca.crt"),
						   NULL),
		     1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
				  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return ctx;
}

/*
 * A server on a fresh copy of the base store: plaintext only (native
 * connections adopted, NBD on its loopback listener), or with TLS too
 * (h2_server_new: native and NBD TLS listeners on 127.0.0.1 port 0).
 */
static void mt_start(struct mt *t, bool tls)
{
	struct h2_store_opts so = {.flush_interval_ms = 600000,
				   .dirty_max = 32 << 20};
	struct h2_dev *dev;
	char err[512];

	memset(t, 0, sizeof(*t));
	t->tls = tls;
	copy_sparse(mt_base, mt_path);
	cr_assert_eq(h2_dev_open_file(mt_path, 0, &dev), 0);
	cr_assert_eq(h2_store_open(dev, &so, &t->st), 0);
	h2_config_defaults(&t->cfg);
	t->cfg.workers = 1;
	free(t->cfg.nbd_listen);
	t->cfg.nbd_listen = strdup(tls ? "127.0.0.1:0" : "");
	t->cfg.nbd_plain_listen = strdup("127.0.0.1:0");
	t->cfg.nbd_plain_identity = strdup("admin");
	t->cfg.acl = h2_acl_new();
	cr_assert(t->cfg.nbd_listen && t->cfg.nbd_plain_listen &&
		  t->cfg.nbd_plain_identity && t->cfg.acl);
	cr_assert_eq(h2_acl_add(t->cfg.acl, "admin", "admin:*", err,
				sizeof(err)),
		     0);
	if (tls) {
		t->cctx = tls_client_ctx();
		free(t->cfg.listen);
		t->cfg.listen = strdup("127.0.0.1:0");
		t->cfg.tls_ca = strdup(tls_file("ca.crt"));
		t->cfg.tls_cert = strdup(tls_file("server.crt"));
		t->cfg.tls_key = strdup(tls_file("server.key"));
		cr_assert(t->cfg.listen && t->cfg.tls_ca && t->cfg.tls_cert &&
			  t->cfg.tls_key);
		cr_assert_eq(h2_server_new(&t->cfg, t->st, &t->srv, err,
					   sizeof(err)),
			     0, "%s", err);
		snprintf(t->listen, sizeof(t->listen), "%s",
			 h2_server_listen_addr(t->srv));
		snprintf(t->nbd_tls, sizeof(t->nbd_tls), "%s",
			 h2_nbdsrv_listen_addr(t->srv));
	} else {
		cr_assert_eq(h2_server_new_plain(&t->cfg, t->st, &t->srv), 0);
		cr_assert_eq(h2_nbdsrv_start(t->srv, err, sizeof(err)), 0,
			     "%s", err);
	}
	snprintf(t->nbd_addr, sizeof(t->nbd_addr), "%s",
		 h2_nbdsrv_plain_addr(t->srv));
	t->base = h2_server_base(t->srv);
	memcpy(t->model, mt_base_data, VOL_SIZE);
}

/*
 * One turn of the server's loop (never counted as the test's own
 * allocations): waits for a worker if one is busy.  Returns whether
 * anything may still be in motion.
 */
static bool mt_turn(struct mt *t)
{
	bool busy;

	mf_exempt(false);
	event_base_loop(t->base, EVLOOP_NONBLOCK);
	busy = h2_pool_pending(t->srv->pool) > 0;
	if (busy)
		event_base_loop(t->base, EVLOOP_ONCE);
	mf_exempt(true);
	return busy;
}

static void mt_stop(struct mt *t)
{
	struct h2_check_report *rep;
	struct h2_store_stats ss;
	struct h2_dev *dev;
	int r;

	/* What the clients left running finishes. */
	for (int i = 0; i < 100 && mt_turn(t); i++)
		;
	/* Every install phase found what it needed set aside. */
	h2_store_stat(t->st, &ss);
	cr_assert_eq(ss.unreserved_allocs, 0,
		     "N=%llu: %llu allocations beyond a transaction's reserve",
		     (unsigned long long)mt_n,
		     (unsigned long long)ss.unreserved_allocs);
	h2_server_free(t->srv);
	h2_config_free(&t->cfg);
	r = h2_store_close(t->st);
	cr_assert_eq(r, 0, "closing the store: %s", h2_core_errmsg());
	cr_assert_eq(h2_dev_open_file(mt_path, H2_DEV_RDONLY, &dev), 0);
	cr_assert_eq(h2_check(dev, &rep), 0);
	for (size_t i = 0; i < rep->nproblems; i++)
		fprintf(stderr, "check: %s: %s\n", rep->problems[i].where,
			rep->problems[i].what);
	cr_assert_eq(rep->status, H2_CHECK_CLEAN,
		     "the store does not check clean");
	h2_check_report_free(rep);
	h2_dev_close(dev);
	SSL_CTX_free(t->cctx);
}

/* ---------------------------------------------------------------------- */
/* A socket client end, driven together with the loop.                    */

struct sock {
	int fd;
	SSL *ssl; /* TLS on fd, or NULL */
	uint8_t *in;
	size_t inlen, incap;
	bool closed; /* the server closed it */
};

static void sock_set(struct sock *s, int fd)
{
	memset(s, 0, sizeof(*s));
	s->fd = fd;
	cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

static void sock_close(struct mt *t, struct sock *s)
{
	SSL_free(s->ssl);
	s->ssl = NULL;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	free(s->in);
	s->in = NULL;
	s->inlen = s->incap = 0;
	/* Let the server see the EOF and tear down. */
	for (int i = 0; i < 4; i++)
		mt_turn(t);
}

/* Read what arrived; false if nothing did. */
static bool sock_pull(struct sock *s)
{
	bool got = false;

	while (!s->closed) {
		ssize_t n;

		if (s->incap - s->inlen < 65536) {
			s->incap = s->incap ? 2 * s->incap : 1 << 18;
			s->in = realloc(s->in, s->incap);
			cr_assert_not_null(s->in);
		}
		if (s->ssl) {
			int r = SSL_read(s->ssl, s->in + s->inlen,
					 (int)(s->incap - s->inlen));
			int e = r > 0 ? 0 : SSL_get_error(s->ssl, r);

			ERR_clear_error();
			if (r > 0) {
				s->inlen += (size_t)r;
				got = true;
			} else if (e == SSL_ERROR_WANT_READ ||
				   e == SSL_ERROR_WANT_WRITE) {
				break;
			} else {
				s->closed = true; /* close_notify, EOF, a
						     reset or an alert */
			}
			continue;
		}
		n = read(s->fd, s->in + s->inlen, s->incap - s->inlen);
		if (n > 0) {
			s->inlen += (size_t)n;
			got = true;
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			s->closed = true; /* EOF, or a reset */
		} else if (errno == EAGAIN) {
			break;
		}
	}
	return got;
}

static void sock_consume(struct sock *s, size_t n)
{
	memmove(s->in, s->in + n, s->inlen - n);
	s->inlen -= n;
}

/* Send all of buf, turning the loop while the socket is full. */
static void sock_send(struct mt *t, struct sock *s, const void *buf,
		      size_t len)
{
	const uint8_t *p = buf;
	unsigned idle = 0;

	while (len && !s->closed) {
		ssize_t n;

		if (s->ssl) {
			int r = SSL_write(s->ssl, p, (int)len);
			int e = r > 0 ? 0 : SSL_get_error(s->ssl, r);

			ERR_clear_error();
			n = r;
			if (r <= 0 && e != SSL_ERROR_WANT_READ &&
			    e != SSL_ERROR_WANT_WRITE)
				errno = EPIPE;
			else if (r <= 0)
				errno = EAGAIN;
		} else {
			n = send(s->fd, p, len, MSG_NOSIGNAL);
		}
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			idle = 0;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			s->closed = true;
			break;
		}
		sock_pull(s);
		mt_turn(t);
		cr_assert_lt(++idle, IDLE_TURNS,
			     "N=%llu: the server stopped reading",
			     (unsigned long long)mt_n);
	}
}

/*
 * Turn the loop until have(arg, s) says a complete answer is in s->in
 * (returns its size), or the server closed the connection (0).
 */
static size_t sock_wait(struct mt *t, struct sock *s,
			size_t (*have)(struct sock *s, void *arg), void *arg)
{
	unsigned idle = 0;

	for (;;) {
		size_t n = have(s, arg);
		bool busy;

		if (n)
			return n;
		if (s->closed)
			return 0;
		busy = mt_turn(t);
		if (sock_pull(s) || busy)
			idle = 0;
		else
			cr_assert_lt(++idle, IDLE_TURNS,
				     "N=%llu: no answer and no close: a "
				     "request hangs",
				     (unsigned long long)mt_n);
	}
}

/* A TCP connection to "127.0.0.1:PORT" (non-blocking once made). */
static void tcp_connect(struct sock *s, const char *addr)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	int fd, one = 1;

	sa.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Loopback: the kernel completes this without the server. */
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	sock_set(s, fd);
}

/*
 * TLS on s, its handshake driven together with the loop; false if the
 * server ended it (running out of memory there fails the handshake).
 */
static bool sock_tls(struct mt *t, struct sock *s)
{
	unsigned idle = 0;

	s->ssl = SSL_new(t->cctx);
	cr_assert_not_null(s->ssl);
	cr_assert_eq(SSL_set_fd(s->ssl, s->fd), 1);
	for (;;) {
		int r = SSL_connect(s->ssl);
		int e = r == 1 ? 0 : SSL_get_error(s->ssl, r);

		ERR_clear_error();
		if (r == 1)
			return true;
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
			s->closed = true;
			return false;
		}
		if (!mt_turn(t))
			cr_assert_lt(++idle, IDLE_TURNS,
				     "N=%llu: a TLS handshake hangs",
				     (unsigned long long)mt_n);
	}
}

/* ---------------------------------------------------------------------- */
/* The native protocol.                                                   */

struct nat {
	struct sock s;
	bool up;	/* Hello done */
	uint64_t handle; /* volume a, read-write; 0: none */
	uint64_t next_id;
};

/* A reply: status, message, the decoded response and its payload. */
struct nreply {
	int status; /* -1: the connection was closed */
	char msg[512];
	H2__Response *resp;
	uint8_t *payload;
	uint64_t plen;
};

static void nreply_free(struct nreply *r)
{
	h2_frame_response_free(r->resp);
	free(r->payload);
	memset(r, 0, sizeof(*r));
}

static size_t nat_have(struct sock *s, void *arg)
{
	struct h2_frame_info info;
	H2__Response *resp = NULL;
	int r = h2_frame_decode_response(NULL, s->in, s->inlen, &info, &resp);

	(void)arg;
	if (r == H2_FRAME_NEED_MORE)
		return 0;
	cr_assert_eq(r, 0, "the server sent a malformed frame (%d)", r);
	h2_frame_response_free(resp);
	if (s->inlen - info.header_bytes < info.payload_len)
		return 0;
	return info.header_bytes + info.payload_len;
}

/* Send req (with payload) and wait for its answer. */
static void nat_call(struct mt *t, struct nat *c, H2__Request *req,
		     const void *payload, size_t plen, struct nreply *out)
{
	struct h2_frame_buf b = {0};
	struct h2_frame_info info;
	size_t n;

	memset(out, 0, sizeof(*out));
	req->id = ++c->next_id;
	req->payload_len = plen;
	cr_assert_eq(h2_frame_append_request(&b, req), 0);
	cr_assert_eq(h2_frame_buf_append(&b, payload, plen), 0);
	sock_send(t, &c->s, b.data, b.len);
	h2_frame_buf_free(&b);
	n = sock_wait(t, &c->s, nat_have, NULL);
	if (!n) {
		out->status = -1;
		t->closed_seen = true;
		return;
	}
	cr_assert_eq(h2_frame_decode_response(NULL, c->s.in, n, &info,
					      &out->resp),
		     0);
	cr_assert_eq(info.id, req->id, "a reply to another request");
	out->status = out->resp->status;
	snprintf(out->msg, sizeof(out->msg), "%s",
		 out->resp->message ? out->resp->message : "");
	out->plen = info.payload_len;
	if (out->plen) {
		out->payload = malloc(out->plen);
		cr_assert_not_null(out->payload);
		memcpy(out->payload, c->s.in + info.header_bytes, out->plen);
	}
	sock_consume(&c->s, n);
	if (out->status)
		t->errors_seen++;
}

/*
 * Whether a failed answer is one that running out of memory may cause:
 * the connection closed, or INTERNAL saying so.  Anything else fails the
 * test.
 */
static bool nat_oom(const struct nreply *r, const char *what)
{
	if (r->status == -1)
		return true;
	cr_assert_eq(r->status, H2__STATUS__INTERNAL,
		     "%s: unexpected status %s (%s)", what,
		     h2_status_name(r->status), r->msg);
	cr_assert(strstr(r->msg, "memory"),
		  "%s: INTERNAL without \"memory\": %s", what, r->msg);
	return true;
}

static void nat_drop(struct mt *t, struct nat *c)
{
	sock_close(t, &c->s);
	c->up = false;
	c->handle = 0;
}

/* A new connection (its server end adopted as from accept). */
static bool nat_connect(struct mt *t, struct nat *c)
{
	struct bufferevent *bev;
	int sv[2];
	int r;

	c->up = false;
	c->handle = 0;
	if (t->tls) {
		/* The real listener, handshake and identity. */
		tcp_connect(&c->s, t->listen);
		if (!sock_tls(t, &c->s)) {
			t->closed_seen = true;
			nat_drop(t, c);
			return false;
		}
		return true;
	}
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	sock_set(&c->s, sv[0]);
	cr_assert_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	c->up = false;
	c->handle = 0;
	/* As a listener would make it (evglue.h). */
	mf_exempt(false);
	h2_ev_guard_begin();
	bev = bufferevent_socket_new(t->base, sv[1], BEV_OPT_CLOSE_ON_FREE);
	if (h2_ev_guard_end() && bev) {
		bufferevent_free(bev); /* closes sv[1] */
		sv[1] = -1;
		bev = NULL;
	}
	r = bev ? h2_server_adopt(t->srv, bev, "admin") : -ENOMEM;
	mf_exempt(true);
	if (!bev && sv[1] >= 0)
		close(sv[1]);
	if (r < 0) {
		cr_assert_eq(r, -ENOMEM);
		nat_drop(t, c);
		return false;
	}
	return true;
}

static void nat_hello(struct mt *t, struct nat *c, struct nreply *out)
{
	H2__Request q = H2__REQUEST__INIT;
	H2__Hello h = H2__HELLO__INIT;

	h.version = 1;
	h.client_name = "memfault";
	q.op_case = H2__REQUEST__OP_HELLO;
	q.hello = &h;
	nat_call(t, c, &q, NULL, 0, out);
}

static void nat_open(struct mt *t, struct nat *c, const char *name,
		     bool write, struct nreply *out)
{
	H2__Request q = H2__REQUEST__INIT;
	H2__VolumeOpen o = H2__VOLUME_OPEN__INIT;

	o.name = (char *)name;
	o.write = write;
	q.op_case = H2__REQUEST__OP_VOLUME_OPEN;
	q.volume_open = &o;
	nat_call(t, c, &q, NULL, 0, out);
}

/* Connect, Hello and open volume a for writing, as far as needed. */
static bool nat_ensure(struct mt *t, struct nat *c)
{
	struct nreply r;

	if (c->s.fd < 0 || c->s.closed)
		nat_drop(t, c);
	if (c->s.fd < 0 && !nat_connect(t, c))
		return false;
	if (!c->up) {
		nat_hello(t, c, &r);
		if (r.status) {
			nat_oom(&r, "hello");
			nreply_free(&r);
			/* A failed Hello may leave the connection waiting
			 * for another, or closed: start again. */
			nat_drop(t, c);
			return false;
		}
		nreply_free(&r);
		c->up = true;
	}
	if (!c->handle) {
		nat_open(t, c, "a", true, &r);
		if (r.status) {
			nat_oom(&r, "open a");
			nreply_free(&r);
			return false;
		}
		c->handle = r.resp->volume_open->handle;
		nreply_free(&r);
	}
	return true;
}

/* The native steps. */
enum nop {
	N_LIST,
	N_WRITE,
	N_WRITE_FUA,
	N_READ,
	N_TRIM,
	N_ZERO,
	N_ZERO_NOHOLE,
	N_TXN,
	N_FLUSH,
	N_STATUS,
	N_STAT,
	N_SNAP_CREATE,
	N_SNAP_LIST,
	N_VOL_CREATE,
	N_VOL_INFO,
	N_READ_SNAP,
	N_RESIZE,
	N_SNAP_DELETE,
	N_CLONE,
	N_VOL_DELETE,
	N_ROLLBACK,
};

struct nstep {
	enum nop op;
	uint64_t off, len;
	uint8_t fill;
	const char *name; /* snapshot (create, delete) or volume (delete) */
	int variant;	  /* N_TXN: which transaction */
};

static const struct nstep nat_script[] = {
	{N_LIST},
	{N_WRITE, 0, 4096, 0x11},
	{N_WRITE, 65536, 65536, 0x12},
	{N_WRITE, 5000, 3000, 0x13},
	{N_READ, 0, 16384},
	{N_TRIM, 65536 + 8192, 4096},
	{N_ZERO, 65536 + 16384, 8192},
	{N_ZERO_NOHOLE, 65536 + 32768, 6000},
	{N_TXN, 200000, 8192, 0x14},
	{N_FLUSH},
	{N_STATUS, 0, VOL_SIZE},
	{N_STAT},
	{N_SNAP_CREATE, .name = "s1"},
	{N_WRITE, 0, 8192, 0x15},
	{N_SNAP_LIST},
	{N_VOL_CREATE},
	{N_VOL_INFO},
	{N_READ_SNAP, 0, 16384},
	{N_WRITE_FUA, 512 << 10, 4096, 0x16},
	{N_READ, 0, 131072},
	{N_RESIZE},
	/* A block of this epoch taken apart slot by slot: its level-1
	 * block is copied by the write, then wholly trimmed. */
	{N_WRITE, 768 << 10, 16384, 0x17},
	{N_TRIM, 768 << 10, 256 << 10},
	/* A transaction that trims what it just wrote. */
	{N_TXN, 540 << 10, 16384, 0x18, .variant = 1},
	{N_READ, 512 << 10, 256 << 10},
	{N_SNAP_CREATE, .name = "s2"},
	{N_SNAP_DELETE, .name = "s2"},
	{N_CLONE},
	{N_VOL_DELETE, .name = "d"},
	{N_ROLLBACK},
	{N_READ, 0, 256 << 10},
	{N_WRITE, 4096, 4096, 0x19},
	{N_FLUSH},
};

static void model_write(uint8_t *m, uint64_t off, uint64_t len, uint8_t fill)
{
	pat_fill(m + off, fill, off, len);
}

static void model_zero(uint8_t *m, uint64_t off, uint64_t len)
{
	memset(m + off, 0, len);
}

/*
 * The transactions of N_TXN: variant 0 writes [off, off+len), trims
 * TXN_TRIM_OFF and zeroes TXN_ZERO_OFF (no hole); variant 1 writes
 * [off, off+len), trims it all and zeroes 5000 bytes of it at off+100.
 */
#define TXN_TRIM_OFF 262144
#define TXN_ZERO_OFF 300000

/* Check a read's data against the model. */
static void check_data(const uint8_t *got, const uint8_t *want, uint64_t off,
		       uint64_t len, const char *what)
{
	for (uint64_t i = 0; i < len; i++)
		if (got[i] != want[off + i])
			cr_assert_fail("%s: byte %llu is %02x, acknowledged "
				       "%02x",
				       what, (unsigned long long)(off + i),
				       got[i], want[off + i]);
}

/*
 * One attempt at step s: 1 done, 0 failed as running out of memory may
 * make it fail (try again).  *refused: it failed with an error reply (so
 * it was not carried out), as opposed to a closed connection.  may_exist:
 * an earlier attempt may have run (its answer was lost), so the create
 * may find what it creates, the delete not find what it deletes.
 */
static int nat_try(struct mt *t, struct nat *c, const struct nstep *s,
		   bool may_exist, bool *refused)
{
	static uint8_t buf[VOL_SIZE];
	H2__Request q = H2__REQUEST__INIT;
	H2__Write w = H2__WRITE__INIT;
	H2__Read rd = H2__READ__INIT;
	H2__Trim tr = H2__TRIM__INIT;
	H2__WriteZeroes wz = H2__WRITE_ZEROES__INIT;
	H2__Txn tx = H2__TXN__INIT;
	H2__TxnOp o[3] = {H2__TXN_OP__INIT, H2__TXN_OP__INIT,
			  H2__TXN_OP__INIT};
	H2__TxnOp *ops[3] = {&o[0], &o[1], &o[2]};
	H2__Flush fl = H2__FLUSH__INIT;
	H2__BlockStatus bs = H2__BLOCK_STATUS__INIT;
	H2__StatReq sq = H2__STAT_REQ__INIT;
	H2__VolumeList vl = H2__VOLUME_LIST__INIT;
	H2__SnapshotCreate sc = H2__SNAPSHOT_CREATE__INIT;
	H2__SnapshotList sl = H2__SNAPSHOT_LIST__INIT;
	H2__VolumeCreate vc = H2__VOLUME_CREATE__INIT;
	H2__VolumeInfoReq vi = H2__VOLUME_INFO_REQ__INIT;
	H2__VolumeResize vr = H2__VOLUME_RESIZE__INIT;
	H2__SnapshotDelete sd = H2__SNAPSHOT_DELETE__INIT;
	H2__Clone cl = H2__CLONE__INIT;
	H2__VolumeDelete vd = H2__VOLUME_DELETE__INIT;
	H2__Rollback rb = H2__ROLLBACK__INIT;
	const void *payload = NULL;
	size_t plen = 0;
	struct nreply r;
	int done = 1;

	*refused = false;
	if (!nat_ensure(t, c))
		return 0;
	switch (s->op) {
	case N_LIST:
		q.op_case = H2__REQUEST__OP_VOLUME_LIST;
		q.volume_list = &vl;
		break;
	case N_WRITE:
	case N_WRITE_FUA:
		pat_fill(buf, s->fill, s->off, s->len);
		w.handle = c->handle;
		w.offset = s->off;
		w.fua = s->op == N_WRITE_FUA;
		q.op_case = H2__REQUEST__OP_WRITE;
		q.write = &w;
		payload = buf;
		plen = s->len;
		break;
	case N_READ:
		rd.handle = c->handle;
		rd.offset = s->off;
		rd.length = s->len;
		q.op_case = H2__REQUEST__OP_READ;
		q.read = &rd;
		break;
	case N_TRIM:
		tr.handle = c->handle;
		tr.offset = s->off;
		tr.length = s->len;
		q.op_case = H2__REQUEST__OP_TRIM;
		q.trim = &tr;
		break;
	case N_ZERO:
	case N_ZERO_NOHOLE:
		wz.handle = c->handle;
		wz.offset = s->off;
		wz.length = s->len;
		wz.no_hole = s->op == N_ZERO_NOHOLE;
		q.op_case = H2__REQUEST__OP_WRITE_ZEROES;
		q.write_zeroes = &wz;
		break;
	case N_TXN:
		pat_fill(buf, s->fill, s->off, s->len);
		o[0].type = H2__TXN_OP__TYPE__WRITE;
		o[0].offset = s->off;
		o[0].length = s->len;
		o[1].type = H2__TXN_OP__TYPE__TRIM;
		o[1].offset = s->variant ? s->off : TXN_TRIM_OFF;
		o[1].length = s->variant ? s->len : 4096;
		o[2].type = H2__TXN_OP__TYPE__ZERO;
		o[2].offset = s->variant ? s->off + 100 : TXN_ZERO_OFF;
		o[2].length = 5000;
		o[2].no_hole = !s->variant;
		tx.handle = c->handle;
		tx.n_ops = 3;
		tx.ops = ops;
		q.op_case = H2__REQUEST__OP_TXN;
		q.txn = &tx;
		payload = buf;
		plen = s->len;
		break;
	case N_FLUSH:
		fl.handle = c->handle;
		q.op_case = H2__REQUEST__OP_FLUSH;
		q.flush = &fl;
		break;
	case N_STATUS:
		bs.handle = c->handle;
		bs.offset = s->off;
		bs.length = s->len;
		q.op_case = H2__REQUEST__OP_BLOCK_STATUS;
		q.block_status = &bs;
		break;
	case N_STAT:
		sq.volume = "";
		sq.after = "";
		q.op_case = H2__REQUEST__OP_STAT;
		q.stat = &sq;
		break;
	case N_SNAP_CREATE:
		sc.volume = "a";
		sc.name = (char *)s->name;
		q.op_case = H2__REQUEST__OP_SNAPSHOT_CREATE;
		q.snapshot_create = &sc;
		break;
	case N_SNAP_DELETE:
		sd.volume = "a";
		sd.name = (char *)s->name;
		q.op_case = H2__REQUEST__OP_SNAPSHOT_DELETE;
		q.snapshot_delete = &sd;
		break;
	case N_CLONE:
		cl.volume = "a";
		cl.snapshot = "s1";
		cl.new_volume = "d";
		q.op_case = H2__REQUEST__OP_CLONE;
		q.clone = &cl;
		break;
	case N_VOL_DELETE:
		vd.name = (char *)s->name;
		q.op_case = H2__REQUEST__OP_VOLUME_DELETE;
		q.volume_delete = &vd;
		break;
	case N_ROLLBACK:
		rb.volume = "a";
		rb.snapshot = "s1";
		rb.force = true;
		q.op_case = H2__REQUEST__OP_ROLLBACK;
		q.rollback = &rb;
		break;
	case N_SNAP_LIST:
		sl.volume = "a";
		sl.after_volume = "";
		sl.after_name = "";
		q.op_case = H2__REQUEST__OP_SNAPSHOT_LIST;
		q.snapshot_list = &sl;
		break;
	case N_VOL_CREATE:
		vc.name = "c";
		vc.size = 65536;
		q.op_case = H2__REQUEST__OP_VOLUME_CREATE;
		q.volume_create = &vc;
		break;
	case N_VOL_INFO:
		vi.name = "c";
		q.op_case = H2__REQUEST__OP_VOLUME_INFO;
		q.volume_info = &vi;
		break;
	case N_RESIZE:
		vr.name = "c";
		vr.size = 3 << 20;
		q.op_case = H2__REQUEST__OP_VOLUME_RESIZE;
		q.volume_resize = &vr;
		break;
	case N_READ_SNAP: {
		struct nreply ro;
		uint64_t h;

		/* Its own handle, opened and closed around the read. */
		nat_open(t, c, "a@s1", false, &ro);
		if (ro.status) {
			nat_oom(&ro, "open a@s1");
			*refused = ro.status != -1;
			nreply_free(&ro);
			return 0;
		}
		h = ro.resp->volume_open->handle;
		nreply_free(&ro);
		rd.handle = h;
		rd.offset = s->off;
		rd.length = s->len;
		q.op_case = H2__REQUEST__OP_READ;
		q.read = &rd;
		nat_call(t, c, &q, NULL, 0, &r);
		if (r.status == 0) {
			cr_assert_eq(r.plen, s->len);
			check_data(r.payload, t->snap, s->off, s->len,
				   "native read of a@s1");
		} else {
			nat_oom(&r, "read a@s1");
			done = 0;
		}
		nreply_free(&r);
		if (c->s.closed)
			return done;
		{
			H2__Request cq = H2__REQUEST__INIT;
			H2__VolumeClose vcl = H2__VOLUME_CLOSE__INIT;

			vcl.handle = h;
			cq.op_case = H2__REQUEST__OP_VOLUME_CLOSE;
			cq.volume_close = &vcl;
			nat_call(t, c, &cq, NULL, 0, &r);
			/* Closing a handle allocates nothing: it answers. */
			cr_assert(r.status == 0 || r.status == -1,
				  "close: %s", r.msg);
			nreply_free(&r);
		}
		return done;
	}
	}
	nat_call(t, c, &q, payload, plen, &r);
	if (r.status == -1) {
		nreply_free(&r);
		return 0;
	}
	if (may_exist &&
	    ((r.status == H2__STATUS__ALREADY_EXISTS &&
	      (s->op == N_SNAP_CREATE || s->op == N_VOL_CREATE ||
	       s->op == N_CLONE)) ||
	     (r.status == H2__STATUS__NOT_FOUND &&
	      (s->op == N_SNAP_DELETE || s->op == N_VOL_DELETE)))) {
		/* An earlier attempt ran but its answer was lost with its
		 * connection.  (One refused with an error did not run:
		 * then may_exist is false, and this fails the test.) */
		r.status = 0;
	} else if (r.status) {
		nat_oom(&r, "native step");
		*refused = true;
		nreply_free(&r);
		return 0;
	}
	switch (s->op) {
	case N_WRITE:
	case N_WRITE_FUA:
		model_write(t->model, s->off, s->len, s->fill);
		break;
	case N_READ:
		cr_assert_eq(r.plen, s->len);
		check_data(r.payload, t->model, s->off, s->len, "native read");
		break;
	case N_TRIM:
	case N_ZERO:
	case N_ZERO_NOHOLE:
		model_zero(t->model, s->off, s->len);
		break;
	case N_TXN:
		model_write(t->model, s->off, s->len, s->fill);
		if (s->variant) {
			model_zero(t->model, s->off, s->len);
		} else {
			model_zero(t->model, TXN_TRIM_OFF, 4096);
			model_zero(t->model, TXN_ZERO_OFF, 5000);
		}
		break;
	case N_SNAP_CREATE:
		if (strcmp(s->name, "s1") == 0) {
			memcpy(t->snap, t->model, VOL_SIZE);
			t->have_snap = true;
		}
		break;
	case N_ROLLBACK:
		memcpy(t->model, t->snap, VOL_SIZE);
		break;
	case N_SNAP_LIST:
		cr_assert_eq(r.resp->result_case,
			     H2__RESPONSE__RESULT_SNAPSHOT_LIST);
		cr_assert_eq(r.resp->snapshot_list->n_snapshots, 1);
		break;
	case N_VOL_CREATE:
		t->have_c = true;
		break;
	case N_LIST:
		cr_assert_eq(r.resp->result_case,
			     H2__RESPONSE__RESULT_VOLUME_LIST);
		cr_assert_eq(r.resp->volume_list->n_volumes, 1);
		break;
	case N_STATUS:
		cr_assert_eq(r.resp->result_case,
			     H2__RESPONSE__RESULT_BLOCK_STATUS);
		cr_assert_gt(r.resp->block_status->n_extents, 0);
		break;
	default:
		break;
	}
	nreply_free(&r);
	return 1;
}

/* Run the native script; every step must get through in mt_tries. */
static void nat_run(struct mt *t, const struct nstep *steps, size_t n)
{
	struct nat c = {.s.fd = -1};

	for (size_t i = 0; i < n; i++) {
		const struct nstep *s = &steps[i];
		bool refused = false, unknown = false;
		int tries = 0;

		while (!nat_try(t, &c, s, unknown, &refused)) {
			/* Only an attempt whose answer was lost may have
			 * been carried out. */
			unknown |= !refused;
			cr_assert_lt(++tries, mt_tries,
				     "N=%llu: native step %zu never got "
				     "through",
				     (unsigned long long)mt_n, i);
		}
	}
	nat_drop(t, &c);
}

static void nat_script_run(struct mt *t)
{
	nat_run(t, nat_script, sizeof(nat_script) / sizeof(nat_script[0]));
}

/* ---------------------------------------------------------------------- */
/* NBD.                                                                   */

struct nbd {
	struct sock s;
	bool up; /* transmitting */
	uint64_t cookie;
};

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static uint8_t *put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
	p = put16(p, (uint16_t)(v >> 16));
	return put16(p, (uint16_t)v);
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
	p = put32(p, (uint32_t)(v >> 32));
	return put32(p, (uint32_t)v);
}

static size_t have_n(struct sock *s, void *arg)
{
	size_t n = *(size_t *)arg;

	return s->inlen >= n ? n : 0;
}

/* An option reply: header (20 bytes) and its data. */
static size_t have_optrep(struct sock *s, void *arg)
{
	(void)arg;
	if (s->inlen < 20)
		return 0;
	cr_assert_eq(be64(s->in), NBD_REP_MAGIC, "bad option reply magic");
	if (s->inlen - 20 < be32(s->in + 16))
		return 0;
	return 20 + be32(s->in + 16);
}

/* A transmission reply: simple (16 bytes + read data) or one chunk. */
static size_t have_reply(struct sock *s, void *arg)
{
	uint64_t readlen = *(uint64_t *)arg;
	uint32_t magic;

	if (s->inlen < 4)
		return 0;
	magic = be32(s->in);
	if (magic == NBD_SIMPLE_REPLY_MAGIC) {
		size_t n = 16;

		if (s->inlen >= 8 && be32(s->in + 4) == 0)
			n += readlen; /* structured replies: never for data */
		return s->inlen >= n ? n : 0;
	}
	cr_assert_eq(magic, NBD_STRUCTURED_REPLY_MAGIC, "bad reply magic");
	if (s->inlen < 20 || s->inlen - 20 < be32(s->in + 16))
		return 0;
	return 20 + be32(s->in + 16);
}

static void nbd_drop(struct mt *t, struct nbd *c)
{
	sock_close(t, &c->s);
	c->up = false;
}

/* Send an option; 0 and the first reply's type in *type, or -1 closed. */
static int nbd_opt(struct mt *t, struct nbd *c, uint32_t opt,
		   const void *data, uint32_t len)
{
	uint8_t h[16], *p = h;

	p = put64(p, NBD_IHAVEOPT);
	p = put32(p, opt);
	put32(p, len);
	sock_send(t, &c->s, h, sizeof(h));
	sock_send(t, &c->s, data, len);
	return c->s.closed ? -1 : 0;
}

/*
 * Read option replies until the final one: 1 ACK, 0 an error reply
 * (message in msg), -1 the connection closed.
 */
static int nbd_opt_done(struct mt *t, struct nbd *c, uint32_t opt,
			char *msg, size_t msglen)
{
	for (;;) {
		size_t n = sock_wait(t, &c->s, have_optrep, NULL);
		uint32_t type, len;

		if (!n)
			return -1;
		cr_assert_eq(be32(c->s.in + 8), opt, "reply to another option");
		type = be32(c->s.in + 12);
		len = be32(c->s.in + 16);
		if (type & NBD_REP_FLAG_ERROR) {
			snprintf(msg, msglen, "%.*s", (int)len, c->s.in + 20);
			sock_consume(&c->s, n);
			return 0;
		}
		sock_consume(&c->s, n);
		if (type == NBD_REP_ACK)
			return 1;
	}
}

/* An option error that running out of memory may cause. */
static void nbd_opt_oom(const char *what, const char *msg)
{
	cr_assert(strstr(msg, "memory") || strstr(msg, "Cannot allocate"),
		  "%s refused: %s", what, msg);
}


/* Connect and negotiate up to transmission of volume a. */
static bool nbd_ensure(struct mt *t, struct nbd *c)
{
	static const char meta[] = "base:allocation";
	uint8_t b[64], *p;
	char msg[512] = "";
	size_t n = 18;
	int r = 1;

	if (c->up && !c->s.closed)
		return true;
	if (c->s.fd >= 0)
		nbd_drop(t, c);
	tcp_connect(&c->s, t->tls ? t->nbd_tls : t->nbd_addr);
	/* The greeting: NBDMAGIC, IHAVEOPT, flags. */
	if (!sock_wait(t, &c->s, have_n, &n))
		goto closed;
	cr_assert_eq(be64(c->s.in), NBD_MAGIC);
	sock_consume(&c->s, 18);
	put32(b, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	sock_send(t, &c->s, b, 4);
	/* TLS: STARTTLS, its ACK, then the handshake (the server puts its
	 * TLS filter over the socket: nbd.c, upgrade_tls). */
	if (t->tls && (nbd_opt(t, c, NBD_OPT_STARTTLS, NULL, 0) < 0 ||
		       (r = nbd_opt_done(t, c, NBD_OPT_STARTTLS, msg,
					 sizeof(msg))) <= 0))
		goto fail;
	if (t->tls && !sock_tls(t, &c->s))
		goto closed;
	/* The export list (a worker job), structured replies,
	 * base:allocation, and GO (a job that opens the volume). */
	if (nbd_opt(t, c, NBD_OPT_LIST, NULL, 0) < 0 ||
	    (r = nbd_opt_done(t, c, NBD_OPT_LIST, msg, sizeof(msg))) <= 0)
		goto fail;
	if (nbd_opt(t, c, NBD_OPT_STRUCTURED_REPLY, NULL, 0) < 0 ||
	    (r = nbd_opt_done(t, c, NBD_OPT_STRUCTURED_REPLY, msg,
			      sizeof(msg))) <= 0)
		goto fail;
	p = put32(b, 1);
	memcpy(p, "a", 1);
	p = put32(p + 1, 1);
	p = put32(p, sizeof(meta) - 1);
	memcpy(p, meta, sizeof(meta) - 1);
	p += sizeof(meta) - 1;
	if (nbd_opt(t, c, NBD_OPT_SET_META_CONTEXT, b, (uint32_t)(p - b)) < 0 ||
	    (r = nbd_opt_done(t, c, NBD_OPT_SET_META_CONTEXT, msg,
			      sizeof(msg))) <= 0)
		goto fail;
	p = put32(b, 1);
	memcpy(p, "a", 1);
	p = put16(p + 1, 0);
	if (nbd_opt(t, c, NBD_OPT_GO, b, (uint32_t)(p - b)) < 0 ||
	    (r = nbd_opt_done(t, c, NBD_OPT_GO, msg, sizeof(msg))) <= 0)
		goto fail;
	c->up = true;
	return true;
fail:
	if (r == 0) {
		t->errors_seen++;
		nbd_opt_oom("an NBD option", msg);
	} else {
		t->closed_seen = true;
	}
	nbd_drop(t, c);
	return false;
closed:
	t->closed_seen = true;
	nbd_drop(t, c);
	return false;
}

/*
 * One command: 1 done (a read's data in out), 0 an error reply (checked
 * to be ENOMEM), -1 the connection closed.
 */
static int nbd_cmd(struct mt *t, struct nbd *c, uint16_t type, uint16_t flags,
		   uint64_t off, uint32_t len, const void *data, uint8_t *out)
{
	uint8_t h[28], *p = h;
	uint64_t zero = 0;
	size_t n;
	int ret = 1;

	p = put32(p, NBD_REQUEST_MAGIC);
	p = put16(p, flags);
	p = put16(p, type);
	p = put64(p, ++c->cookie);
	p = put64(p, off);
	put32(p, len);
	sock_send(t, &c->s, h, sizeof(h));
	if (type == NBD_CMD_WRITE)
		sock_send(t, &c->s, data, len);
	n = sock_wait(t, &c->s, have_reply, &zero);
	if (!n) {
		t->closed_seen = true;
		return -1;
	}
	p = c->s.in;
	if (be32(p) == NBD_SIMPLE_REPLY_MAGIC) {
		cr_assert_eq(be64(p + 8), c->cookie, "reply to another cookie");
		cr_assert_neq(type, NBD_CMD_READ,
			      "a simple reply to a read after "
			      "structured replies were negotiated");
		if (be32(p + 4)) {
			cr_assert_eq(be32(p + 4), NBD_ENOMEM,
				     "NBD error %u, not ENOMEM", be32(p + 4));
			ret = 0;
		}
	} else {
		uint16_t ctype = be16(p + 6);

		cr_assert_eq(be64(p + 8), c->cookie, "reply to another cookie");
		cr_assert(be16(p + 4) & NBD_REPLY_FLAG_DONE);
		if (ctype == NBD_REPLY_TYPE_ERROR) {
			cr_assert_eq(be32(p + 20), NBD_ENOMEM,
				     "NBD error %u, not ENOMEM: %.*s",
				     be32(p + 20), (int)be16(p + 24), p + 26);
			ret = 0;
		} else if (type == NBD_CMD_READ) {
			cr_assert_eq(ctype, NBD_REPLY_TYPE_OFFSET_DATA);
			cr_assert_eq(be32(p + 16), 8 + len);
			cr_assert_eq(be64(p + 20), off);
			memcpy(out, p + 28, len);
		} else if (type == NBD_CMD_BLOCK_STATUS) {
			cr_assert_eq(ctype, NBD_REPLY_TYPE_BLOCK_STATUS);
		} else {
			cr_assert_fail("unexpected chunk type %u", ctype);
		}
	}
	sock_consume(&c->s, n);
	if (!ret)
		t->errors_seen++;
	return ret;
}

enum bop { B_WRITE, B_WRITE_FUA, B_READ, B_FLUSH, B_TRIM, B_ZERO, B_STATUS };

struct bstep {
	enum bop op;
	uint64_t off, len;
	uint8_t fill;
};

static const struct bstep nbd_script[] = {
	{B_WRITE, 600 << 10, 4096, 0x21},
	{B_WRITE, 640 << 10, 65536, 0x22},
	{B_READ, 600 << 10, 16384},
	{B_FLUSH},
	{B_TRIM, 640 << 10, 4096},
	{B_ZERO, 660 << 10, 8192},
	{B_STATUS, 512 << 10, 256 << 10},
	{B_WRITE_FUA, 700 << 10, 4096, 0x23},
	{B_READ, 600 << 10, 131072},
};

/* One attempt at an NBD step: 1 done, 0 try again. */
static int nbd_try(struct mt *t, struct nbd *c, const struct bstep *s)
{
	static uint8_t buf[VOL_SIZE];
	uint16_t type = 0, flags = 0;
	int r;

	if (!nbd_ensure(t, c))
		return 0;
	switch (s->op) {
	case B_WRITE:
	case B_WRITE_FUA:
		type = NBD_CMD_WRITE;
		flags = s->op == B_WRITE_FUA ? NBD_CMD_FLAG_FUA : 0;
		pat_fill(buf, s->fill, s->off, s->len);
		break;
	case B_READ:
		type = NBD_CMD_READ;
		break;
	case B_FLUSH:
		type = NBD_CMD_FLUSH;
		break;
	case B_TRIM:
		type = NBD_CMD_TRIM;
		break;
	case B_ZERO:
		type = NBD_CMD_WRITE_ZEROES;
		break;
	case B_STATUS:
		type = NBD_CMD_BLOCK_STATUS;
		break;
	}
	r = nbd_cmd(t, c, type, flags, s->off, (uint32_t)s->len, buf, buf);
	if (r <= 0)
		return 0;
	switch (s->op) {
	case B_WRITE:
	case B_WRITE_FUA:
		model_write(t->model, s->off, s->len, s->fill);
		break;
	case B_READ:
		check_data(buf, t->model, s->off, s->len, "NBD read");
		break;
	case B_TRIM:
	case B_ZERO:
		model_zero(t->model, s->off, s->len);
		break;
	default:
		break;
	}
	return 1;
}

static void nbd_disc(struct mt *t, struct nbd *c)
{
	uint8_t h[28], *p = h;

	if (c->up && !c->s.closed) {
		p = put32(p, NBD_REQUEST_MAGIC);
		p = put16(p, 0);
		p = put16(p, NBD_CMD_DISC);
		p = put64(p, ++c->cookie);
		p = put64(p, 0);
		put32(p, 0);
		sock_send(t, &c->s, h, sizeof(h));
	}
	nbd_drop(t, c);
}

static void nbd_run(struct mt *t, const struct bstep *steps, size_t n)
{
	struct nbd c = {.s.fd = -1};

	for (size_t i = 0; i < n; i++) {
		int tries = 0;

		while (!nbd_try(t, &c, &steps[i]))
			cr_assert_lt(++tries, mt_tries,
				     "N=%llu: NBD step %zu never got through",
				     (unsigned long long)mt_n, i);
	}
	nbd_disc(t, &c);
}

static void nbd_script_run(struct mt *t)
{
	nbd_run(t, nbd_script, sizeof(nbd_script) / sizeof(nbd_script[0]));
}

/*
 * Over TLS (the walk's server listens with TLS): a native session, its
 * accept, handshake and identity, Hello, open, a little I/O; the rest of
 * its code is the plaintext script's.  Not NBD over TLS: libevent's
 * filter BIO drops ciphertext it cannot queue and says it was written
 * (README, "Running out of memory"), which this cannot tell from a hang.
 */
static const struct nstep nat_tls_script[] = {
	{N_WRITE, 0, 16384, 0x31},
	{N_READ, 0, 16384},
	{N_FLUSH},
};

static void tls_script_run(struct mt *t)
{
	nat_run(t, nat_tls_script,
		sizeof(nat_tls_script) / sizeof(nat_tls_script[0]));
}

/* ---------------------------------------------------------------------- */
/* After the workload: the same server, failures off.                     */

static void verify(struct mt *t)
{
	static uint8_t buf[VOL_SIZE];
	struct nat c = {.s.fd = -1};
	struct nbd b = {.s.fd = -1};
	H2__Request q = H2__REQUEST__INIT;
	H2__Read rd = H2__READ__INIT;
	H2__SnapshotList sl = H2__SNAPSHOT_LIST__INIT;
	H2__VolumeInfoReq vi = H2__VOLUME_INFO_REQ__INIT;
	struct nreply r;

	cr_assert(nat_ensure(t, &c), "no native session after the faults");
	for (int snap = 0; snap < 2; snap++) {
		uint64_t h = c.handle;

		if (snap) {
			if (!t->have_snap)
				break;
			nat_open(t, &c, "a@s1", false, &r);
			cr_assert_eq(r.status, 0, "open a@s1: %s", r.msg);
			h = r.resp->volume_open->handle;
			nreply_free(&r);
		}
		for (uint64_t off = 0; off < VOL_SIZE; off += 256 << 10) {
			rd.handle = h;
			rd.offset = off;
			rd.length = 256 << 10;
			q.op_case = H2__REQUEST__OP_READ;
			q.read = &rd;
			nat_call(t, &c, &q, NULL, 0, &r);
			cr_assert_eq(r.status, 0, "read: %s", r.msg);
			check_data(r.payload, snap ? t->snap : t->model, off,
				   rd.length,
				   snap ? "a@s1 afterwards" : "a afterwards");
			nreply_free(&r);
		}
	}
	sl.volume = "a";
	sl.after_volume = "";
	sl.after_name = "";
	q.op_case = H2__REQUEST__OP_SNAPSHOT_LIST;
	q.snapshot_list = &sl;
	nat_call(t, &c, &q, NULL, 0, &r);
	cr_assert_eq(r.status, 0);
	cr_assert_eq(r.resp->snapshot_list->n_snapshots, t->have_snap ? 1 : 0);
	nreply_free(&r);
	vi.name = "c";
	q.op_case = H2__REQUEST__OP_VOLUME_INFO;
	q.volume_info = &vi;
	nat_call(t, &c, &q, NULL, 0, &r);
	cr_assert_eq(r.status, t->have_c ? 0 : H2__STATUS__NOT_FOUND,
		     "volume c: %s", r.msg);
	nreply_free(&r);
	vi.name = "d"; /* the clone, deleted (or never made) */
	nat_call(t, &c, &q, NULL, 0, &r);
	cr_assert_eq(r.status, H2__STATUS__NOT_FOUND, "volume d: %s", r.msg);
	nreply_free(&r);
	nat_drop(t, &c);

	cr_assert(nbd_ensure(t, &b), "no NBD session after the faults");
	cr_assert_eq(nbd_cmd(t, &b, NBD_CMD_READ, 0, 512 << 10, 256 << 10,
			     NULL, buf),
		     1);
	check_data(buf, t->model, 512 << 10, 256 << 10, "NBD afterwards");
	nbd_disc(t, &b);
}

/* ---------------------------------------------------------------------- */
/* The walk.                                                              */

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *e = getenv(name);

	return e && *e ? strtoull(e, NULL, 0) : dflt;
}

/*
 * Run the workload with allocations n .. n + span - 1 failing, for n =
 * 1, 1 + stride, ... until a run makes fewer than n allocations.
 */
/* OpenSSL allocates through these: malloc here is counted (mfault.h). */
static void *mt_crypto_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return malloc(n);
}

static void *mt_crypto_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return realloc(p, n);
}

static void mt_crypto_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	free(p);
}

/*
 * Before anything of OpenSSL allocates: at load (the test runner has
 * used it by the time a test starts).
 */
static bool mt_crypto_hooked;

__attribute__((constructor)) static void mt_crypto_hook(void)
{
	mt_crypto_hooked = CRYPTO_set_mem_functions(
			       mt_crypto_malloc, mt_crypto_realloc,
			       mt_crypto_free) == 1;
}

static void walk(const char *name, void (*script)(struct mt *t),
		 uint64_t span, uint64_t stride, bool tls)
{
	uint64_t only = env_u64("MF_N", 0), n, runs = 0, points = 0;
	uint64_t errors = 0, closes = 0;
	struct mt *t;

	cr_assert(mt_crypto_hooked || !tls,
		  "OpenSSL allocated before its hooks were set");
	t = malloc(sizeof(*t));
	cr_assert_not_null(t);
	/* Each failed try takes at least one failing allocation. */
	mt_tries = span + 2;
	mf_init();
	mf_exempt(true);
	h2_log_set_level(getenv("MF_LOG") ? H2_LOG_DEBUG : H2_LOG_ERROR);
	base_init();
	for (n = only ? only : env_u64("MF_START", 1);; n += stride) {
		uint64_t seen;

		mt_n = n;
		if (getenv("MF_VERBOSE"))
			fprintf(stderr, "memfault %s: N=%llu\n", name,
				(unsigned long long)n);
		mt_start(t, tls);
		mf_arm(n, span);
		script(t);
		mf_disarm();
		seen = mf_seen();
		if (seen >= n)
			cr_assert_gt(mf_failed(), 0);
		errors += t->errors_seen;
		closes += t->closed_seen;
		if (getenv("MF_VERBOSE"))
			fprintf(stderr, "memfault %s: N=%llu: %u error "
					"replies%s\n",
				name, (unsigned long long)n, t->errors_seen,
				t->closed_seen ? ", connection closed" : "");
		verify(t);
		mt_stop(t);
		runs++;
		if (seen < n || only) {
			points = seen;
			break;
		}
	}
	fprintf(stderr,
		"memfault %s: %llu allocations in the workload, %llu runs "
		"(span %llu, stride %llu): %llu error replies, %llu runs "
		"with a connection closed\n",
		name, (unsigned long long)points, (unsigned long long)runs,
		(unsigned long long)span, (unsigned long long)stride,
		(unsigned long long)errors, (unsigned long long)closes);
	free(t);
#ifdef __SANITIZE_ADDRESS__
	/* Now, in the test: a report at exit would not fail it (Criterion
	 * has collected the result by then).  Everything the runs
	 * allocated has been freed; what is left is reachable. */
	cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
		     "LeakSanitizer found leaks (reported above)");
#endif
}

static uint64_t stride(void)
{
	return env_u64("MF_STRIDE", getenv("H2_TEST_QUICK") ? 2 : 1);
}

/*
 * A TLS session is some 7,700 allocations, nearly all of them OpenSSL's
 * handshake: every 61st N (H2_SOAK=1: every one).
 */
static uint64_t tls_stride(void)
{
	return env_u64("MF_STRIDE", getenv("H2_SOAK") ? 1 : 61);
}

/* The persistent walks: SPAN, or with H2_SOAK=1 several spans. */
static void walk_persistent(const char *name, void (*script)(struct mt *t),
			    bool tls)
{
	static const uint64_t soak[] = {4, SPAN, 64};
	bool long_mode = getenv("H2_SOAK") != NULL;

	for (size_t i = 0; i < (long_mode ? 3 : 1); i++)
		walk(name, script, long_mode ? soak[i] : SPAN,
		     tls ? tls_stride() : long_mode ? 1 : stride(), tls);
}

Test(memfault, native_request_fails_alone_once)
{
	walk("native, once", nat_script_run, 1, stride(), false);
}

Test(memfault, native_request_fails_alone_persistent)
{
	walk_persistent("native, persistent", nat_script_run, false);
}

Test(memfault, nbd_command_fails_alone_once)
{
	walk("NBD, once", nbd_script_run, 1, stride(), false);
}

Test(memfault, nbd_command_fails_alone_persistent)
{
	walk_persistent("NBD, persistent", nbd_script_run, false);
}

Test(memfault, tls_connection_fails_alone_once)
{
	walk("TLS, once", tls_script_run, 1, tls_stride(), true);
}

Test(memfault, tls_connection_fails_alone_persistent)
{
	walk_persistent("TLS, persistent", tls_script_run, true);
}
