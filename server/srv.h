/*
 * srv.h - what server.c (connections) and dispatch.c (requests) share.
 *
 * Object lifetimes: a connection is referenced by the loop while open and
 * by every request job in flight; it is freed when both are gone, so a
 * worker finishing after the client left never touches freed memory.
 */
#ifndef H2D_SRV_H
#define H2D_SRV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <openssl/ssl.h>

#include "acl.h"
#include "config.h"
#include "frame.h"
#include "h2core.h"
#include "metrics.h"
#include "pool.h"

/*
 * Connections the kernel completes and queues for accept() on the native
 * and NBD listeners (capped by net.core.somaxconn).  With libevent's
 * usual 128, a burst of connections arriving while the loop is busy for
 * a few milliseconds overflows the queue, and every connection past it
 * waits for a SYN retransmission, a second or more.
 */
#define H2_LISTEN_BACKLOG 1024

struct h2_server {
	struct event_base *base;
	struct h2_config *cfg;
	struct h2_store *st;
	SSL_CTX *ssl_ctx;	   /* for new connections; swapped on reload */
	struct h2_acl *acl;	   /* loop thread only; swapped on reload */
	struct evconnlistener *listener;
	struct h2_listen_guard *listen_guard; /* NULL if none (no memory) */
	struct h2_pool *pool;
	struct event *sig_term, *sig_int, *sig_hup;
	struct event *stop_timer;
	struct event *trim_timer; /* malloc_trim after closes (server.c) */
	char listen_addr[64];
	unsigned nconns;
	struct h2_conn *conns;	   /* list of open connections */
	struct h2_nbdsrv *nbd;	   /* NBD frontend (nbd.c); NULL when off */
	struct h2_metrics_http *http; /* GET /metrics; NULL when off */
	struct h2_metrics *metrics;  /* counters (metrics.h) */
	struct h2_linger *lingers; /* closed connections draining (server.c) */
	uint64_t instance;	   /* random, per process: HelloResult */
	bool stopping;
	bool in_check_stopped;	/* check_stopped() is running */
	/* Shutdown's sync, once nothing else is in flight: it runs before any
	 * connection is closed, so that a TLS close_notify can promise the
	 * client that everything acknowledged to it is durable. */
	bool final_sync_started, final_sync_done;
	int final_sync_err;
	uint64_t final_sync_tid;
	uint64_t refused_stopping; /* answered UNAVAILABLE while stopping */
};

/* An open volume on a connection. */
struct h2_handle {
	uint64_t id;
	struct h2_vol *vol;
	bool write;
	char name[128];
};

enum h2_conn_state {
	H2_CONN_HANDSHAKE, /* TLS handshake running */
	H2_CONN_HELLO,	   /* waiting for Hello */
	H2_CONN_READY,
	H2_CONN_CLOSING,   /* flushing output, then free */
};

struct h2_conn {
	struct h2_server *srv;
	struct h2_conn *next, *prev;
	struct bufferevent *bev;
	struct event *hs_timer;
	enum h2_conn_state state;
	char identity[256];
	char peer[64];
	int refs;		  /* loop + jobs in flight */
	bool open;		  /* bev alive */
	bool read_paused;
	bool tls_up;		  /* the handshake completed */
	bool goodbye;		  /* teardown sends close_notify (shutdown) */
	bool out_failed;	  /* a reply could not be queued: no more */
	struct h2_frame_limits lim;
	/* A header whose payload has not fully arrived. */
	H2__Request *pending;
	size_t pending_hdr;
	uint64_t pending_payload;
	/* in flight: jobs running plus replies not yet handed to TLS */
	unsigned inflight;
	uint64_t inflight_bytes;
	/* open volumes */
	struct h2_handle *handles;
	size_t nhandles, caphandles;
	uint64_t next_handle;
};

/* server.c */
void h2_conn_ref(struct h2_conn *c);
void h2_conn_unref(struct h2_conn *c);
/* Queue a response (and payload) for the client. */
void h2_conn_reply(struct h2_conn *c, H2__Response *resp, const void *payload,
		   size_t len);
/* Send an error response for id. */
void h2_conn_reply_error(struct h2_conn *c, uint64_t id, int err,
			 const char *msg);
/* A request finished (its reply is queued): release its accounting. */
void h2_conn_request_done(struct h2_conn *c, uint64_t bytes);
/* Stop reading and close once the output is flushed. */
void h2_conn_close(struct h2_conn *c, const char *why);
/* A connection closed: give free memory back to the system soon (one
 * malloc_trim for a burst of closes). */
void h2_server_trim_soon(struct h2_server *srv);
/* While stopping: close what is idle, leave the loop once all is done
 * (call after anything that may have been the last thing in flight). */
void h2_server_check_stopped(struct h2_server *srv);
/* "HOST:PORT" or "[V6HOST]:PORT", numeric host, port 0 allowed. */
int h2_server_parse_listen(const char *s, struct sockaddr_storage *ss,
			   int *len);

/* dispatch.c: takes ownership of req and payload; hdr_bytes is the size
 * of the request's header on the wire. */
void h2_dispatch(struct h2_conn *c, H2__Request *req, size_t hdr_bytes,
		 uint8_t *payload, uint64_t payload_len);
/* Count a request answered without h2_dispatch (it never got that far:
 * too large, out of memory); req may be NULL (not decoded). */
void h2_dispatch_count_failed(struct h2_conn *c, const H2__Request *req,
			      int err);
/* Close the connection's volume handles (when it is freed). */
void h2_dispatch_conn_free(struct h2_conn *c);

#endif
