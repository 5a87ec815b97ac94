/*
 * server.c - the event loop, the TLS listener and connections.
 *
 * A connection is a small state machine:
 *
 *   HANDSHAKE --TLS done, identity known--> HELLO --Hello--> READY
 *        \ timeout / failure                     \ anything else
 *         `--> closed                             `--> FAILED_PRECONDITION, closed
 *
 * Input is parsed frame by frame straight from the bufferevent's input
 * buffer.  Backpressure: a connection stops reading new requests while it
 * has max_inflight requests in flight, or max_inflight_bytes in running
 * jobs (payloads, read buffers) and replies not yet taken by TLS
 * together, and the input buffer's high watermark bounds what libevent
 * buffers for it.  Nothing grows
 * without bound when a client writes faster than the disk, or stops
 * reading its replies.
 *
 * Shutdown (SIGTERM, SIGINT), the "clean disconnect" of the native
 * protocol:
 *   1. Stop accepting.  Requests already read run to completion and are
 *      answered as usual.
 *   2. Connections keep being read: every request that arrives from now
 *      on is answered UNAVAILABLE ("h2d is shutting down; the request was
 *      not executed") without being run.
 *   3. Once no job is left on the worker pool, a final store sync runs.
 *   4. Then every connection sends its remaining replies and, only if that
 *      sync succeeded, a TLS close_notify; the socket is half-closed and
 *      drained until the client closes it (at most LINGER_SEC), so no
 *      reply is lost to a TCP reset from unread input.
 * So a client that receives close_notify knows two things: every request
 * h2d did not answer was not executed, and every write h2d acknowledged
 * on that connection is durable.  h2d sends close_notify nowhere else (a
 * connection closed for any other reason is just closed).  Clients that
 * do not read their replies are torn down after STOP_GRACE_SEC, without
 * close_notify.  The NBD frontend (nbd.c) shares the loop, the worker
 * pool and this shutdown: its connections answer ESHUTDOWN to new
 * commands, and are closed and counted here too.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/err.h>

#include "evglue.h"
#include "listen_guard.h"
#include "log.h"
#include "metrics_http.h"
#include "nbd.h"
#include "server.h"
#include "srv.h"
#include "tls.h"

#define STOP_GRACE_SEC 30 /* clients that never read their replies */
#define LINGER_SEC 2	  /* a closed connection waits for the client's EOF */
#define TRIM_DELAY_MS 1000 /* memory back to the system after closes */

/* A connection after close_notify: half-closed, drained until EOF. */
struct h2_linger {
	struct h2_linger *next, *prev;
	struct h2_server *srv;
	evutil_socket_t fd;
	struct event *ev;
};

/* ---------------------------------------------------------------------- */
/* Memory.                                                                */

/*
 * glibc keeps memory freed below the top of its heaps: a connection's
 * TLS buffers (about 40 KiB each) and the 1 MiB buffers of its reads are
 * interleaved with what lives on, so once a thousand connections are
 * gone, their memory stays counted in h2d's RSS (measured: 55 MiB after
 * 1,200 handshakes left hanging were dropped).  malloc_trim() gives the
 * free pages back, wherever they are.  It walks every arena under its
 * lock, so it runs from a timer, TRIM_DELAY_MS after a connection object
 * was freed (with its last request, which may finish after the close):
 * at most once a second however fast connections come and go.
 * (A fixed mmap threshold would not do: the TLS buffers are far below
 * any threshold, and 1 MiB read buffers taken from the heap are reused
 * rather than mapped and faulted in again for every read, ten times
 * cheaper.)  Request buffers, reads' as well as writes', are taken on
 * this thread: they then live in the main arena, whose top malloc_trim
 * gives back too, while a worker's arena keeps a top up to a threshold
 * that freeing 1 MiB buffers raises to several MiB.
 */
static void trim_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	malloc_trim(0);
}

void h2_server_trim_soon(struct h2_server *srv)
{
	struct timeval tv = {TRIM_DELAY_MS / 1000,
			     (TRIM_DELAY_MS % 1000) * 1000};

	if (srv->trim_timer && !evtimer_pending(srv->trim_timer, NULL))
		evtimer_add(srv->trim_timer, &tv);
}

/* ---------------------------------------------------------------------- */
/* Connection lifetime.                                                   */

void h2_conn_ref(struct h2_conn *c)
{
	c->refs++;
}

void h2_conn_unref(struct h2_conn *c)
{
	struct h2_server *srv = c->srv;

	if (--c->refs > 0)
		return;
	h2_dispatch_conn_free(c);
	free(c);
	/* The last reference may be a request that finished after the
	 * close, freeing its buffers only now. */
	h2_server_trim_soon(srv);
}

static void check_stopped(struct h2_server *srv);

/* Close a lingering socket and forget it. */
static void linger_free(struct h2_linger *l)
{
	struct h2_server *srv = l->srv;

	if (l->prev)
		l->prev->next = l->next;
	else
		srv->lingers = l->next;
	if (l->next)
		l->next->prev = l->prev;
	event_free(l->ev);
	evutil_closesocket(l->fd);
	free(l);
}

/* The same, then see whether shutdown can go on. */
static void linger_end(struct h2_linger *l)
{
	struct h2_server *srv = l->srv;

	linger_free(l);
	check_stopped(srv);
}

/* Discard what the client still sends until its EOF or the timeout. */
static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
	char buf[16384];
	ssize_t n;

	if (what & EV_READ) {
		do
			n = recv(fd, buf, sizeof(buf), 0);
		while (n > 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
			      errno == EINTR))
			return;
	}
	linger_end(arg);
}

/*
 * After close_notify: keep the socket (a duplicate: the bufferevent
 * closes its own) half-closed and drained until the client closes it.
 * Closing a socket with unread input makes the kernel send a reset,
 * which may destroy replies the client has not read yet.
 */
static void linger_start(struct h2_server *srv, evutil_socket_t fd)
{
	struct timeval tv = {LINGER_SEC, 0};
	struct h2_linger *l = calloc(1, sizeof(*l));
	evutil_socket_t dup_fd = l ? dup(fd) : -1;

	if (dup_fd < 0) {
		free(l);
		return; /* the plain close that follows is all we can do */
	}
	l->srv = srv;
	l->fd = dup_fd;
	l->ev = event_new(srv->base, dup_fd, EV_READ | EV_PERSIST, linger_cb,
			  l);
	if (!l->ev || event_add(l->ev, &tv) < 0) {
		if (l->ev)
			event_free(l->ev);
		evutil_closesocket(dup_fd);
		free(l);
		return;
	}
	shutdown(dup_fd, SHUT_WR);
	l->next = srv->lingers;
	if (srv->lingers)
		srv->lingers->prev = l;
	srv->lingers = l;
}

/* Tear the transport down now (loop thread).  The output is flushed
 * (or abandoned); c->goodbye sends close_notify first, see above. */
static void conn_teardown(struct h2_conn *c)
{
	struct h2_server *srv = c->srv;

	if (!c->open)
		return;
	c->open = false;
	if (c->hs_timer) {
		event_free(c->hs_timer);
		c->hs_timer = NULL;
	}
	if (c->goodbye && c->tls_up) {
		SSL *ssl = bufferevent_openssl_get_ssl(c->bev);

		/* The socket BIO writes the alert straight to the socket,
		 * behind the replies already handed to it. */
		SSL_shutdown(ssl);
		ERR_clear_error();
		linger_start(srv, bufferevent_getfd(c->bev));
	}
	bufferevent_free(c->bev);
	c->bev = NULL;
	h2_frame_request_free(c->pending);
	c->pending = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->nconns--;
	h2_metrics_conn_close(srv->metrics, H2_MPROTO_NATIVE);
	h2_log_debug("conn", "closed peer=%s identity=%s", c->peer,
		     c->identity[0] ? c->identity : "-");
	h2_conn_unref(c);
	check_stopped(srv);
}

/*
 * A closing connection goes once every request it read has been answered
 * and the answers have left: a client that sends a valid request and
 * then garbage gets the request's reply before the close.
 */
static void closing_check(struct h2_conn *c)
{
	if (c->open && c->state == H2_CONN_CLOSING && c->inflight == 0 &&
	    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_teardown(c);
}

void h2_conn_close(struct h2_conn *c, const char *why)
{
	if (!c->open || c->state == H2_CONN_CLOSING)
		return;
	if (why)
		h2_log_info("conn", "closing peer=%s identity=%s reason=\"%s\"",
			    c->peer, c->identity[0] ? c->identity : "-", why);
	c->state = H2_CONN_CLOSING;
	bufferevent_disable(c->bev, EV_READ);
	/* Now, or when the last request completes or the output drains. */
	closing_check(c);
}

/* ---------------------------------------------------------------------- */
/* Replies and backpressure.                                              */

static uint64_t out_limit(const struct h2_conn *c)
{
	return c->srv->cfg->max_inflight_bytes;
}

/*
 * One cap on what a connection holds: requests in flight (their payloads
 * and read buffers) plus replies queued and not yet taken by TLS.  Two
 * separate caps would let a client that reads nothing hold both in full:
 * a queue of replies at the cap, and as much again in reads that finish
 * after it and queue their replies on top.
 */
static bool over_limits(const struct h2_conn *c)
{
	return c->inflight >= c->srv->cfg->max_inflight ||
	       c->inflight_bytes +
			       evbuffer_get_length(
				       bufferevent_get_output(c->bev)) >=
		       out_limit(c);
}

static void process_input(struct h2_conn *c);

/* Resume reading when below the limits again. */
static void maybe_resume(struct h2_conn *c)
{
	if (!c->open || !c->read_paused || c->state == H2_CONN_CLOSING ||
	    over_limits(c))
		return;
	c->read_paused = false;
	if (bufferevent_enable(c->bev, EV_READ) < 0) {
		/* Never read again, the client would wait forever. */
		h2_conn_close(c, "out of memory resuming reads");
		return;
	}
	/* Bytes may already sit in the input buffer: no new read event
	 * would come for them. */
	process_input(c);
}

void h2_conn_reply(struct h2_conn *c, H2__Response *resp, const void *payload,
		   size_t len)
{
	uint8_t small[512], *hdr = small;
	size_t n;
	int r;

	if (!c->open || c->out_failed)
		return;
	resp->payload_len = len;
	n = h2_frame_response_size(resp);
	if (n > sizeof(small)) {
		hdr = malloc(n);
		if (!hdr) {
			h2_conn_close(c, "out of memory for a reply");
			return;
		}
	}
	r = h2_frame_pack_response(resp, hdr, n);
	if (r < 0) {
		h2_log_error("conn", "cannot encode a reply: %s",
			     strerror(-r));
		h2_conn_close(c, "reply encoding failed");
	} else {
		struct evbuffer *out = bufferevent_get_output(c->bev);

		if (evbuffer_add(out, hdr, (size_t)r) < 0 ||
		    (len && evbuffer_add(out, payload, len) < 0)) {
			/* The client would wait for this reply forever, or
			 * read the next one as this one's payload: nothing
			 * more goes out, and the connection ends once what
			 * is queued has (the client then sees a frame cut
			 * short, and the connection closed). */
			c->out_failed = true;
			h2_conn_close(c, "out of memory for a reply");
		}
	}
	if (hdr != small)
		free(hdr);
}

void h2_conn_reply_error(struct h2_conn *c, uint64_t id, int err,
			 const char *msg)
{
	H2__Response resp = H2__RESPONSE__INIT;

	resp.id = id;
	resp.status = h2_status_from_errno(err);
	resp.message = (char *)(msg ? msg : "");
	h2_conn_reply(c, &resp, NULL, 0);
}

void h2_conn_request_done(struct h2_conn *c, uint64_t bytes)
{
	c->inflight--;
	c->inflight_bytes -= bytes < c->inflight_bytes ? bytes
						       : c->inflight_bytes;
	maybe_resume(c);
	closing_check(c);
	check_stopped(c->srv);
}

/* ---------------------------------------------------------------------- */
/* Input.                                                                 */

/* Parse and dispatch every complete request in the input buffer. */
static void process_input(struct h2_conn *c)
{
	struct evbuffer *in;

	if (!c->open)
		return;
	/* Dispatching can close (and unref) the connection: keep it alive
	 * until this loop is done looking at it. */
	h2_conn_ref(c);
	in = bufferevent_get_input(c->bev);
	/* Also while stopping: what arrives then is answered UNAVAILABLE
	 * (dispatch.c), which tells the client at once. */
	while (c->open && c->state >= H2_CONN_HELLO &&
	       c->state != H2_CONN_CLOSING) {
		struct h2_frame_info info = {0};
		H2__Request *req = NULL;
		size_t avail = evbuffer_get_length(in), want;
		uint8_t *buf;
		int r;

		if (c->pending) {
			uint8_t *payload;

			if (avail < c->pending_payload)
				break;
			payload = malloc(c->pending_payload);
			if (!payload) {
				/* Only this request fails: its payload is
				 * skipped, the stream goes on. */
				h2_conn_reply_error(c, c->pending->id, -ENOMEM,
						    "out of memory for the "
						    "request's payload");
				h2_dispatch_count_failed(c, c->pending,
							 -ENOMEM);
				evbuffer_drain(in, c->pending_payload);
				h2_frame_request_free(c->pending);
				c->pending = NULL;
				continue;
			}
			evbuffer_remove(in, payload, c->pending_payload);
			req = c->pending;
			c->pending = NULL;
			h2_dispatch(c, req, c->pending_hdr, payload,
				    c->pending_payload);
			continue;
		}
		if (avail == 0)
			break;
		if (over_limits(c)) {
			c->read_paused = true;
			bufferevent_disable(c->bev, EV_READ);
			break;
		}
		/*
		 * Make only this frame's header contiguous: first the length
		 * prefix, which says how long the header is (and is checked
		 * against the limit there), then the header itself.  Pulling
		 * up a fixed 64 KiB instead would copy up to that much per
		 * request when small requests are pipelined.
		 */
		want = avail < H2_FRAME_PREFIX ? avail : H2_FRAME_PREFIX;
		buf = evbuffer_pullup(in, (ssize_t)want);
		r = buf ? h2_frame_decode_request(&c->lim, buf, want, &info,
						  &req)
			: -ENOMEM;
		if (r == H2_FRAME_NEED_MORE && want == H2_FRAME_PREFIX) {
			want += info.need;
			if (avail < want)
				break;
			/* (Making the header contiguous may allocate.) */
			buf = evbuffer_pullup(in, (ssize_t)want);
			r = buf ? h2_frame_decode_request(&c->lim, buf, want,
							  &info, &req)
				: -ENOMEM;
		}
		if (r == H2_FRAME_NEED_MORE)
			break;
		if (r == -EFBIG) {
			char msg[128];

			snprintf(msg, sizeof(msg),
				 "payload of %" PRIu64 " bytes exceeds the "
				 "limit of %" PRIu64,
				 info.payload_len, c->lim.max_payload);
			h2_conn_reply_error(c, info.id, -EFBIG, msg);
			h2_dispatch_count_failed(c, NULL, -EFBIG);
			h2_conn_close(c, "oversized payload");
			break;
		}
		if (r < 0) {
			/* Out of memory too: the request's id is unknown,
			 * so it cannot be answered, and the stream cannot
			 * be resynchronised past it. */
			h2_conn_close(c, r == -EMSGSIZE ? "frame header over "
							  "the limit"
					 : r == -ENOMEM ? "out of memory decoding "
							  "a request"
							: "malformed frame");
			break;
		}
		evbuffer_drain(in, info.header_bytes);
		if (info.payload_len) {
			c->pending = req;
			c->pending_hdr = info.header_bytes;
			c->pending_payload = info.payload_len;
			continue;
		}
		h2_dispatch(c, req, info.header_bytes, NULL, 0);
	}
	h2_conn_unref(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	process_input(arg);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
	struct h2_conn *c = arg;

	(void)bev;
	if (c->state == H2_CONN_CLOSING) {
		closing_check(c);
		return;
	}
	maybe_resume(c);
	check_stopped(c->srv);
}

/* Describe the first queued OpenSSL error of a bufferevent. */
static void ssl_reason(struct bufferevent *bev, char *buf, size_t len)
{
	unsigned long e = bufferevent_get_openssl_error(bev);

	if (e)
		ERR_error_string_n(e, buf, len);
	else
		snprintf(buf, len, "%s",
			 evutil_socket_error_to_string(
				 EVUTIL_SOCKET_ERROR()));
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct h2_conn *c = arg;
	char why[256];

	if (what & BEV_EVENT_CONNECTED) {
		SSL *ssl = bufferevent_openssl_get_ssl(bev);

		if (c->hs_timer) {
			event_free(c->hs_timer);
			c->hs_timer = NULL;
		}
		if (h2_tls_peer_identity(ssl, c->identity,
					 sizeof(c->identity)) < 0) {
			h2_log_warn("conn", "refused peer=%s reason=\"no "
					    "verified client certificate\"",
				    c->peer);
			h2_metrics_tls_failed(c->srv->metrics,
					      H2_MPROTO_NATIVE);
			conn_teardown(c);
			return;
		}
		c->state = H2_CONN_HELLO;
		c->tls_up = true;
		h2_log_info("conn", "connected peer=%s identity=%s tls=%s",
			    c->peer, c->identity, SSL_get_version(ssl));
		process_input(c);
		return;
	}
	if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
		if (c->state == H2_CONN_HANDSHAKE) {
			ssl_reason(bev, why, sizeof(why));
			h2_log_warn("conn", "TLS handshake failed peer=%s "
					    "reason=\"%s\"",
				    c->peer, why);
			h2_metrics_tls_failed(c->srv->metrics,
					      H2_MPROTO_NATIVE);
		} else if (what & BEV_EVENT_ERROR) {
			ssl_reason(bev, why, sizeof(why));
			h2_log_info("conn", "connection error peer=%s "
					    "identity=%s reason=\"%s\"",
				    c->peer, c->identity, why);
		}
		conn_teardown(c);
	}
}

static void handshake_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2_conn *c = arg;

	(void)fd;
	(void)what;
	h2_log_warn("conn", "TLS handshake timed out peer=%s", c->peer);
	h2_metrics_tls_failed(c->srv->metrics, H2_MPROTO_NATIVE);
	conn_teardown(c);
}

/* A new connection object for srv, not yet attached to a transport. */
static struct h2_conn *conn_alloc(struct h2_server *srv)
{
	struct h2_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->srv = srv;
	c->refs = 1;
	c->next_handle = 1;
	c->lim.max_header = H2_FRAME_MAX_HEADER;
	c->lim.max_payload = H2_MAX_IO;
	return c;
}

/*
 * Make c (with its bev) one of srv's connections and start reading; or
 * -ENOMEM, and c is not touched (the caller frees it and its bev).
 */
static int conn_start(struct h2_server *srv, struct h2_conn *c)
{
	/* Bound what libevent reads ahead for us: one header plus one
	 * payload.  Guarded: libevent crashes if the allocation this first
	 * read high-water mark makes fails (evglue.h). */
	h2_ev_guard_begin();
	bufferevent_setwatermark(c->bev, EV_READ, 0,
				 H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER +
					 H2_MAX_IO);
	if (h2_ev_guard_end())
		return -ENOMEM;
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	/* The write callback fires as output drains. */
	bufferevent_setwatermark(c->bev, EV_WRITE, out_limit(c) / 2, 0);
	/* The first enable registers the socket with the loop, which
	 * allocates. */
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0)
		return -ENOMEM;
	c->open = true;
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->nconns++;
	h2_metrics_conn_open(srv->metrics, H2_MPROTO_NATIVE);
	return 0;
}

/* One connection refused for want of descriptors (listen_guard.h). */
static void refused_cb(void *arg)
{
	struct h2_server *srv = arg;

	h2_metrics_conn_refused(srv->metrics, H2_MPROTO_NATIVE);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd,
		      struct sockaddr *sa, int salen, void *arg)
{
	struct h2_server *srv = arg;
	struct timeval tv;
	struct h2_conn *c;
	bool ssl_freed, damaged;
	int one = 1;
	SSL *ssl;

	(void)l;
	(void)salen;
	/* max_connections counts NBD clients too (h2d.conf(5): clients
	 * served at once), as the NBD listener does. */
	if (srv->stopping || srv->nconns + h2_nbdsrv_conns(srv) >=
				     srv->cfg->max_connections) {
		h2_log_warn("conn", "refused a connection: %s",
			    srv->stopping ? "shutting down"
					  : "connection limit reached");
		h2_metrics_conn_refused(srv->metrics, H2_MPROTO_NATIVE);
		evutil_closesocket(fd);
		return;
	}
	/* Replies are small header writes followed by payloads: without
	 * NODELAY, Nagle and delayed ACKs add 40 ms to request/reply pairs. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = conn_alloc(srv);
	ssl = c ? SSL_new(srv->ssl_ctx) : NULL;
	/* The socket's BIO is made here: bufferevent_openssl_socket_new
	 * makes one for an SSL without, and ignores its failure; the
	 * handshake then fails and the bufferevent, finding no BIO to take
	 * the socket from, never closes it: the client waits forever, the
	 * descriptor leaks. */
	if (!ssl || SSL_set_fd(ssl, fd) != 1 ||
	    h2_ev_ssl_watch(ssl, &ssl_freed) < 0) {
		SSL_free(ssl);
		ERR_clear_error();
		free(c);
		evutil_closesocket(fd);
		return;
	}
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)sa;
		char ip[INET_ADDRSTRLEN];

		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		snprintf(c->peer, sizeof(c->peer), "%s:%u", ip,
			 ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
		char ip[INET6_ADDRSTRLEN];

		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		snprintf(c->peer, sizeof(c->peer), "[%s]:%u", ip,
			 ntohs(in6->sin6_port));
	}
	/* Guarded: libevent does not check one of the allocations this
	 * makes, and the bufferevent would never write (evglue.h). */
	h2_ev_guard_begin();
	c->bev = bufferevent_openssl_socket_new(srv->base, fd, ssl,
						BUFFEREVENT_SSL_ACCEPTING,
						BEV_OPT_CLOSE_ON_FREE);
	damaged = h2_ev_guard_end();
	if (c->bev)
		h2_ev_ssl_unwatch(ssl);
	if (c->bev && damaged) {
		bufferevent_free(c->bev); /* and with it ssl and fd */
		free(c);
		return;
	}
	if (!c->bev) {
		/* libevent may have freed the SSL (evglue.h) - freeing it
		 * again was a double free; the socket is ours still (its
		 * BIO does not close it). */
		if (!ssl_freed)
			SSL_free(ssl);
		evutil_closesocket(fd);
		free(c);
		return;
	}
	if (conn_start(srv, c) < 0) {
		bufferevent_free(c->bev);
		free(c);
		return;
	}
	c->hs_timer = evtimer_new(srv->base, handshake_timeout_cb, c);
	tv.tv_sec = srv->cfg->handshake_timeout_ms / 1000;
	tv.tv_usec = (srv->cfg->handshake_timeout_ms % 1000) * 1000;
	/* Without its deadline a peer could hold the connection forever. */
	if (!c->hs_timer || evtimer_add(c->hs_timer, &tv) < 0)
		conn_teardown(c);
}

/* ---------------------------------------------------------------------- */
/* Shutdown and reload.                                                   */

/* The final sync, on a worker: everything acknowledged becomes durable. */
struct final_sync {
	struct h2_job job;
	struct h2_server *srv;
	int err;
	uint64_t tid;
	char msg[256];
};

static void final_sync_run(struct h2_job *job)
{
	struct final_sync *f = (struct final_sync *)job;

	f->err = h2_store_sync(f->srv->st, &f->tid);
	if (f->err < 0)
		snprintf(f->msg, sizeof(f->msg), "%s", h2_core_errmsg());
}

static void final_sync_done(struct h2_job *job)
{
	struct final_sync *f = (struct final_sync *)job;
	struct h2_server *srv = f->srv;

	srv->final_sync_done = true;
	srv->final_sync_err = f->err;
	srv->final_sync_tid = f->tid;
	if (f->err < 0)
		h2_log_error("serve", "final sync failed: %s; closing "
				      "connections without close_notify",
			     f->msg);
	else
		h2_log_info("serve", "final sync done (durable tid %" PRIu64
				     ", %" PRIu64 " request(s) refused while "
				     "stopping); closing %u connection(s)",
			    f->tid, srv->refused_stopping,
			    srv->nconns + h2_nbdsrv_conns(srv));
	free(f);
	check_stopped(srv);
}

/* Start the final sync; false if it cannot (then none is promised). */
static bool final_sync_start(struct h2_server *srv)
{
	struct final_sync *f = calloc(1, sizeof(*f));

	srv->final_sync_started = true;
	if (!f) {
		srv->final_sync_done = true;
		srv->final_sync_err = -ENOMEM;
		return false;
	}
	f->job.run = final_sync_run;
	f->job.done = final_sync_done;
	f->srv = srv;
	h2_pool_submit(srv->pool, &f->job);
	return true;
}

/*
 * While stopping: once nothing is in flight, run the final sync; once it
 * is done, close every connection (with close_notify if it succeeded) and
 * leave the loop when they and their lingering sockets are gone.
 */
static void check_stopped(struct h2_server *srv)
{
	struct h2_conn *c, *next;

	if (!srv->stopping)
		return;
	if (h2_pool_pending(srv->pool) > 0 || srv->in_check_stopped)
		return;
	if (!srv->final_sync_started && final_sync_start(srv))
		return; /* its done callback comes back here */
	if (!srv->final_sync_done)
		return;
	/* Closing a connection can tear it down and call back in here,
	 * which would close (and free) the next one under our feet: one
	 * pass at a time, and the caller's pass sees the list as it is. */
	srv->in_check_stopped = true;
	for (c = srv->conns; c; c = next) {
		next = c->next;
		c->goodbye = srv->final_sync_err == 0;
		h2_conn_close(c, NULL);
	}
	h2_nbdsrv_close_all(srv);
	srv->in_check_stopped = false;
	if (!srv->conns && h2_nbdsrv_conns(srv) == 0 && !srv->lingers)
		event_base_loopexit(srv->base, NULL);
}

void h2_server_check_stopped(struct h2_server *srv)
{
	check_stopped(srv);
}

static void stop_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2_server *srv = arg;

	(void)fd;
	(void)what;
	h2_log_warn("serve", "clients did not read their replies within "
			     "%d s; closing them",
		    STOP_GRACE_SEC);
	while (srv->conns)
		conn_teardown(srv->conns);
	h2_nbdsrv_teardown_all(srv);
	while (srv->lingers)
		linger_free(srv->lingers);
	if (h2_pool_pending(srv->pool) == 0)
		event_base_loopexit(srv->base, NULL);
}

void h2_server_stop(struct h2_server *srv)
{
	struct timeval tv = {STOP_GRACE_SEC, 0};

	if (srv->stopping)
		return;
	srv->stopping = true;
	h2_log_info("serve", "shutting down: finishing %u request(s) in "
			     "flight on %u connection(s)",
		    h2_pool_pending(srv->pool),
		    srv->nconns + h2_nbdsrv_conns(srv));
	/* Unguarded first: a guard resting it would enable it again. */
	h2_listen_guard_free(srv->listen_guard);
	srv->listen_guard = NULL;
	evconnlistener_disable(srv->listener);
	h2_nbdsrv_stop(srv);
	srv->stop_timer = evtimer_new(srv->base, stop_timer_cb, srv);
	if (srv->stop_timer)
		evtimer_add(srv->stop_timer, &tv);
	check_stopped(srv);
}

static void reload(struct h2_server *srv)
{
	struct h2_tls_files files = {srv->cfg->tls_ca, srv->cfg->tls_cert,
				     srv->cfg->tls_key};
	struct h2_acl *acl = NULL;
	char err[512];
	SSL_CTX *ctx;

	/* The file's rules as it is now, plus the --access and --dev ones
	 * (config.h): a removed [access] section removes its rules. */
	if (h2_config_reload_access(srv->cfg, &acl, err, sizeof(err)) < 0) {
		h2_log_error("serve", "reload failed, keeping the old "
				      "configuration: %s",
			     err);
		return;
	}
	h2_acl_free(srv->acl);
	srv->acl = acl;
	ctx = h2_tls_server_ctx(&files, srv->cfg->allow_tls12, err,
				sizeof(err));
	if (!ctx) {
		h2_log_error("serve", "certificate reload failed, keeping the "
				      "old ones: %s",
			     err);
		return;
	}
	SSL_CTX_free(srv->ssl_ctx);
	srv->ssl_ctx = ctx;
	h2_log_info("serve", "reloaded certificates and access rules "
			     "(existing connections keep theirs)");
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct h2_server *srv = arg;

	(void)what;
	if (sig == SIGHUP) {
		reload(srv);
		return;
	}
	h2_log_info("serve", "received %s", sig == SIGTERM ? "SIGTERM"
							   : "SIGINT");
	h2_server_stop(srv);
}

/* ---------------------------------------------------------------------- */
/* Setup.                                                                 */

/*
 * "HOST:PORT" or "[V6HOST]:PORT" with a numeric host into a sockaddr.
 * Port 0 is allowed (the kernel picks one), which libevent's own parser
 * refuses.
 */
int h2_server_parse_listen(const char *s, struct sockaddr_storage *ss,
			   int *len)
{
	struct addrinfo hints = {0}, *ai = NULL;
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(s, ':'), *h = s;
	size_t hl;
	char *end;
	unsigned long port;

	if (!colon || colon == s || !colon[1])
		return -EINVAL;
	port = strtoul(colon + 1, &end, 10);
	if (*end || port > 65535 || colon[1] == '-' || colon[1] == '+')
		return -EINVAL;
	hl = (size_t)(colon - s);
	if (s[0] == '[') {
		if (hl < 3 || s[hl - 1] != ']')
			return -EINVAL;
		h = s + 1;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = 0;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai)
		return -EINVAL;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = (int)ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

int h2_server_new(struct h2_config *cfg, struct h2_store *st,
		  struct h2_server **out, char *err, size_t errlen)
{
	struct h2_tls_files files = {cfg->tls_ca, cfg->tls_cert, cfg->tls_key};
	struct h2_server *srv = calloc(1, sizeof(*srv));
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	socklen_t blen = sizeof(ss);
	char host[INET6_ADDRSTRLEN];

	h2_ev_init();
	if (!srv) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	srv->cfg = cfg;
	srv->st = st;
	srv->metrics = h2_metrics_new();
	if (!srv->metrics) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	/* Tells a reconnecting client whether it reached the same process
	 * (whose memory still holds what it acknowledged) or a new one. */
	if (getrandom(&srv->instance, sizeof(srv->instance), 0) !=
	    (ssize_t)sizeof(srv->instance))
		srv->instance = (uint64_t)time(NULL) << 32 ^ (uint64_t)getpid();
	if (srv->instance == 0)
		srv->instance = 1;
	evthread_use_pthreads();
	srv->base = event_base_new();
	if (!srv->base) {
		snprintf(err, errlen, "cannot create the event loop");
		goto fail;
	}
	srv->trim_timer = evtimer_new(srv->base, trim_cb, srv);
	if (!srv->trim_timer) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	srv->ssl_ctx = h2_tls_server_ctx(&files, cfg->allow_tls12, err, errlen);
	if (!srv->ssl_ctx)
		goto fail;
	srv->acl = cfg->acl;
	cfg->acl = NULL; /* the server owns the live rules */
	if (h2_server_parse_listen(cfg->listen, &ss, &sslen) < 0) {
		snprintf(err, errlen,
			 "listen address \"%s\" is not HOST:PORT with a "
			 "numeric host (for example 127.0.0.1:7410, "
			 "[::1]:7410, or port 0 for any free port)",
			 cfg->listen);
		goto fail;
	}
	srv->listener = evconnlistener_new_bind(
		srv->base, accept_cb, srv,
		LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
			LEV_OPT_CLOSE_ON_EXEC,
		H2_LISTEN_BACKLOG, (struct sockaddr *)&ss, sslen);
	if (!srv->listener) {
		snprintf(err, errlen, "cannot listen on %s: %s", cfg->listen,
			 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		goto fail;
	}
	srv->listen_guard = h2_listen_guard_new(srv->listener, "native",
						refused_cb, srv);
	getsockname(evconnlistener_get_fd(srv->listener),
		    (struct sockaddr *)&ss, &blen);
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(srv->listen_addr, sizeof(srv->listen_addr), "[%s]:%u",
			 host, ntohs(in6->sin6_port));
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(srv->listen_addr, sizeof(srv->listen_addr), "%s:%u",
			 host, ntohs(in->sin_port));
	}
	srv->pool = h2_pool_new(srv->base, cfg->workers ? cfg->workers : 1);
	if (!srv->pool) {
		snprintf(err, errlen, "cannot start %u worker threads",
			 cfg->workers);
		goto fail;
	}
	if (((cfg->nbd_listen && *cfg->nbd_listen) ||
	     (cfg->nbd_plain_listen && *cfg->nbd_plain_listen)) &&
	    h2_nbdsrv_start(srv, err, errlen) < 0)
		goto fail;
	if (cfg->metrics_listen && *cfg->metrics_listen &&
	    h2_metrics_http_start(srv, err, errlen) < 0)
		goto fail;
	srv->sig_term = evsignal_new(srv->base, SIGTERM, signal_cb, srv);
	srv->sig_int = evsignal_new(srv->base, SIGINT, signal_cb, srv);
	srv->sig_hup = evsignal_new(srv->base, SIGHUP, signal_cb, srv);
	if (!srv->sig_term || !srv->sig_int || !srv->sig_hup) {
		snprintf(err, errlen, "cannot install signal handlers");
		goto fail;
	}
	evsignal_add(srv->sig_term, NULL);
	evsignal_add(srv->sig_int, NULL);
	evsignal_add(srv->sig_hup, NULL);
	signal(SIGPIPE, SIG_IGN);
	*out = srv;
	return 0;
fail:
	h2_server_free(srv);
	return -EINVAL;
}

const char *h2_server_listen_addr(const struct h2_server *srv)
{
	return srv->listen_addr;
}

int h2_server_run(struct h2_server *srv)
{
	event_base_dispatch(srv->base);
	return 0;
}

void h2_server_free(struct h2_server *srv)
{
	if (!srv)
		return;
	/* Teardowns below call check_stopped: make it a no-op, so nothing
	 * new (a final sync) starts while the server is being freed. */
	srv->in_check_stopped = true;
	while (srv->conns)
		conn_teardown(srv->conns);
	h2_nbdsrv_teardown_all(srv);
	while (srv->lingers)
		linger_free(srv->lingers);
	/* Workers finish what they hold; done callbacks drop their refs. */
	h2_pool_free(srv->pool);
	h2_nbdsrv_free(srv); /* after the done callbacks, which look at it */
	/* After them too: a scrape's done callback answers its request,
	 * which the HTTP server frees. */
	h2_metrics_http_free(srv);
	h2_listen_guard_free(srv->listen_guard);
	if (srv->listener)
		evconnlistener_free(srv->listener);
	if (srv->sig_term)
		event_free(srv->sig_term);
	if (srv->sig_int)
		event_free(srv->sig_int);
	if (srv->sig_hup)
		event_free(srv->sig_hup);
	if (srv->stop_timer)
		event_free(srv->stop_timer);
	if (srv->trim_timer)
		event_free(srv->trim_timer);
	SSL_CTX_free(srv->ssl_ctx);
	h2_acl_free(srv->acl);
	if (srv->base)
		event_base_free(srv->base);
	h2_metrics_free(srv->metrics);
	free(srv);
}

#ifdef H2_FUZZ
/* ---------------------------------------------------------------------- */
/* Fuzzing only (tests/fuzz/fuzz_session.c; see server.h).                */

int h2_server_new_plain(struct h2_config *cfg, struct h2_store *st,
			struct h2_server **out)
{
	struct h2_server *srv = calloc(1, sizeof(*srv));

	h2_ev_init();
	if (!srv)
		return -ENOMEM;
	srv->cfg = cfg;
	srv->st = st;
	srv->instance = 1; /* the same in every run */
	srv->metrics = h2_metrics_new();
	evthread_use_pthreads();
	srv->base = event_base_new();
	if (srv->base)
		srv->pool =
		    h2_pool_new(srv->base, cfg->workers ? cfg->workers : 1);
	if (!srv->metrics || !srv->pool) {
		h2_server_free(srv);
		return -ENOMEM;
	}
	srv->acl = cfg->acl;
	cfg->acl = NULL; /* the server owns the live rules */
	*out = srv;
	return 0;
}

struct event_base *h2_server_base(struct h2_server *srv)
{
	return srv->base;
}

int h2_server_adopt(struct h2_server *srv, struct bufferevent *bev,
		    const char *identity)
{
	struct h2_conn *c = conn_alloc(srv);

	if (!c) {
		bufferevent_free(bev); /* taken, as accept_cb closes fd */
		return -ENOMEM;
	}
	c->bev = bev;
	snprintf(c->identity, sizeof(c->identity), "%s", identity);
	snprintf(c->peer, sizeof(c->peer), "fuzz");
	if (conn_start(srv, c) < 0) {
		bufferevent_free(bev);
		free(c);
		return -ENOMEM;
	}
	/* Where event_cb puts a connection whose handshake succeeded; no
	 * TLS, so teardown never looks for an SSL object. */
	c->state = H2_CONN_HELLO;
	process_input(c);
	return 0;
}
#endif
