/*
 * internal.h - libh2client's private structures, shared by lib_net.c
 * (h2_connect, making a connection), lib_conn.c (the I/O thread), lib_ops.c
 * (operations, errors) and lib_aio.c (asynchronous interface).
 *
 * The model.  A caller describes what it wants in a struct h2_call and
 * queues it on the client (the submit queue).  One I/O thread per client
 * owns the socket and the SSL object; it cuts calls into wire requests
 * ("slots", at most max_inflight of them outstanding, each at most
 * max_payload of data), writes them, reads the replies in any order and
 * completes a call once all its slots are answered.  Completion signals the
 * caller's condition variable (synchronous calls) or appends the call to
 * the aio done queue and makes the aio eventfd readable.
 *
 *   caller threads           I/O thread                     server
 *   h2_call -> submit queue -> slots (<= max_inflight) -> frames ->
 *   cond / aio done queue  <- complete call <- replies by id <-
 *
 * Ownership.  A call belongs to whoever submitted it (a synchronous call
 * lives on the caller's stack, an aio call on the heap, freed by
 * h2_aio_poll); the library only borrows it, and never touches it again
 * once it is marked done.  The buffers a call names are borrowed the same
 * way: reads land in the caller's buffer, writes are sent from it.
 *
 * Locks.  One mutex per client, c->lock, guards the submit queue, the done
 * queue, every call's done flag and the connection state (closed, limits).
 * Nothing else nests inside it: the I/O thread never does socket I/O while
 * holding it.  Fields marked "I/O thread" are touched by that thread only
 * (before it is started and after it is joined, by h2_connect and
 * h2_disconnect).
 *
 * Reconnecting (H2_RECONNECT, lib_conn.c).  Volumes are named in calls by
 * their struct h2_volume, never by a server handle: the I/O thread puts
 * the volume's handle on the current connection into each request as it
 * packs it, so after a reconnect (which opens every volume again, with new
 * handles) a request sent again names the right volume.
 */
#ifndef H2_CLIENT_INTERNAL_H
#define H2_CLIENT_INTERNAL_H

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "frame.h"
#include "h2client.h"

/* Room for a sentence about an error, here and in the server's reply. */
#define H2_ERRMSG_MAX 256

/*
 * Slots: the table of outstanding wire requests.  A request's id carries
 * its slot index in the low H2_SLOT_BITS bits and a sequence number above
 * them, so a reply finds its slot without a search, and a stale or forged
 * id is caught by comparing the whole id.
 */
#define H2_SLOT_BITS 10
#define H2_MAX_SLOTS (1u << H2_SLOT_BITS)
/* Used when the server's HelloResult leaves max_inflight at 0. */
#define H2_DEFAULT_INFLIGHT 64u

/* Staging buffer for outgoing frames: the biggest header plus room to
 * coalesce small payloads into the same TLS records. */
#define H2_STAGE_CAP (H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER + (64u << 10))
/* Payloads up to this size are copied into the staging buffer; larger
 * ones are written straight from the caller's buffer. */
#define H2_SMALL_PAYLOAD (16u << 10)
/* Read buffer for reply headers (and whatever follows them). */
#define H2_RX_CAP (64u << 10)

_Static_assert((H2_MAX_SLOTS & (H2_MAX_SLOTS - 1)) == 0, "power of two");
_Static_assert(H2_STAGE_CAP >= H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER,
	       "the biggest frame header fits the staging buffer");

enum h2_call_kind {
	H2_CALL_MSG,   /* one request: msg (+ payload) */
	H2_CALL_READ,  /* [off, off + len) into rbuf, in max_payload chunks */
	H2_CALL_WRITE, /* [off, off + len) from wbuf, in max_payload chunks */
};

/* One thing a caller asked for (see the file comment for ownership). */
struct h2_call {
	/* Set by the submitter; read-only once queued. */
	enum h2_call_kind kind;
	const H2__Request *msg; /* MSG: borrowed; id/payload_len not used,
				   nor the volume handle (see vol) */
	const void *payload;	/* MSG: borrowed payload (a Txn's data) */
	size_t payload_len;
	/* The volume the request names (its handle is filled in when the
	 * request is packed); NULL for requests on no volume. */
	struct h2_volume *vol;
	/* VolumeOpen: the volume to fill in and link on success (in the
	 * I/O thread, so a reconnect right after it opens it again). */
	struct h2_volume *open_vol;
	uint64_t off;
	size_t len;
	void *rbuf;
	const void *wbuf;
	bool fua;
	bool is_hello;	      /* the I/O thread learns the limits from it */
	pthread_cond_t *cond; /* synchronous: signalled when done */
	h2_aio_cb cb;	      /* aio: run by h2_aio_poll */
	void *cb_arg;

	/* c->lock. */
	uint64_t seq;	      /* submit order, to queue again in order */
	size_t carved;	      /* READ/WRITE: bytes handed to slots */
	unsigned outstanding; /* slots not yet finished */
	bool carve_done;      /* no more slots will be made; off the queue */
	bool done;	      /* complete: the owner may look and free */
	bool dropped;	      /* lost with its connection (while sorting) */
	bool not_run;	      /* the server said it did not run it */
	struct h2_call *next; /* submit queue or aio done queue */

	/* Written by the I/O thread before done; read by the owner after. */
	int result;		    /* 0 or the first error of any slot */
	char errmsg[H2_ERRMSG_MAX]; /* the sentence for result */
	H2__Response *resp;	    /* synchronous MSG, OK: owner frees */

	/* aio: storage for the request an aio call sends. */
	H2__Request req_store;
	H2__Flush flush_store;
};

/* One outstanding wire request.  I/O thread. */
struct h2_slot {
	uint64_t id;
	struct h2_call *call;
	size_t coff, clen; /* READ/WRITE: the chunk within the call */
	size_t psent;	   /* payload bytes staged or handed to a write */
	bool in_use;
	bool hdr_staged;     /* header packed into the staging buffer */
	bool sent;	     /* every byte written to the TLS connection */
	bool replied;	     /* reply (and its payload) received */
	bool not_run;	     /* answered UNAVAILABLE: waits for a reconnect */
	int result;	     /* from the reply's status */
	uint64_t flush_mark; /* Flush: c->ack_seq when it was cut */
	const char *lmsg;    /* a local failure's sentence, or NULL */
	H2__Response *resp;
	struct h2_slot *snext; /* send queue or finished-with-piece list */
};

/*
 * An open volume.  Writes acknowledged but not yet known durable are
 * tracked with c->ack_seq, a count of the client's acknowledged writes:
 * last_ack is the count at v's latest, durable the count up to which a
 * successful Flush of v covers (c->all_durable: a Flush of the store).
 * A connection lost uncleanly with v's last_ack above both, followed by a
 * reconnect to a different server process, means writes may be lost:
 * loss_gen counts such events, and h2_flush(v) reports each once
 * (seen_gen), as fsync(2) reports a write-back error once per file.
 */
struct h2_volume {
	h2_client *c;
	char name[256]; /* "VOLUME" or "VOLUME@SNAP" (reopened by it) */
	uint64_t size;
	bool writable;
	struct h2_volume *prev, *next; /* c->volumes, c->lock */
	struct h2_txn *txns;	       /* open batches, c->lock */
	bool closing;		       /* h2_volume_close sent, c->lock */

	/* I/O thread (set before the volume is linked into c->volumes). */
	uint64_t handle; /* on the current connection; 0: none */
	bool dead;	 /* could not be opened again after a reconnect */
	int dead_err;
	char dead_msg[H2_ERRMSG_MAX];
	uint64_t last_ack, durable;
	bool maybe_lost; /* unsynced writes when the connection was lost */
	unsigned loss_gen, seen_gen;
};

/*
 * A batch.  The ops are kept as wire TxnOps; the write data is copied into
 * one buffer in op order, which is the Txn's payload as sent.  Used by
 * one thread at a time; only the list links are under c->lock.
 */
struct h2_txn {
	struct h2_txn *prev, *next; /* v->txns, c->lock */
	h2_volume *v;
	H2__TxnOp *ops;
	size_t nops, cap;
	uint8_t *data;
	size_t dlen, dcap;
	size_t hdr_bytes; /* the ops' share of the frame header */
};

struct h2_client {
	/* Immutable once h2_connect has returned. */
	char *peer;	   /* "host:port" as given, for messages */
	char *host, *port; /* parsed from opts->server */
	char *verify_name; /* tls_server_name or host */
	struct addrinfo *ai;
	SSL_CTX *ctx;
	uint64_t deadline_ms; /* connect + TLS + Hello, CLOCK_MONOTONIC
				 (I/O thread, per attempt when reconnecting) */
	unsigned timeout_ms;
	bool reconnect;	       /* H2_RECONNECT */
	unsigned reconnect_ms; /* give up reconnecting after this long */
	char *client_name;     /* sent in every Hello */
	char *identity;
	int wake_fd; /* eventfd: wakes the I/O thread */
	int aio_fd;  /* eventfd: readable while done queue non-empty */
	pthread_t thread;
	bool thread_started;

	/* Lock order: c->lock is the only lock; the call condvars use it. */
	pthread_mutex_t lock;
	struct h2_call *submit_head, *submit_tail; /* FIFO */
	struct h2_call *done_head, *done_tail;	   /* aio, FIFO */
	bool wake_pending; /* wake_fd written, not yet drained */
	bool stopping;	   /* h2_disconnect asked the I/O thread to stop */
	bool closed;	   /* the connection failed; calls fail fast */
	int fail_err;	   /* why (H2_ECONNECT, H2_ETLS, ...) */
	char fail_msg[H2_ERRMSG_MAX];
	uint64_t max_payload;  /* from HelloResult */
	unsigned max_inflight; /* from HelloResult (1 before it) */
	struct h2_volume *volumes;
	uint64_t next_call_seq;
	atomic_uint aio_pending; /* aio calls whose callback has not run */

	/* I/O thread. */
	int fd;
	SSL *ssl;
	struct h2_frame_decoder *dec;
	bool hello_done;
	bool io_pollout; /* the TLS connection waits for POLLOUT */
	bool draining;	 /* the server is stopping: send nothing new */
	uint64_t drain_deadline_ms; /* ... and must close by then */
	bool peer_clean;	    /* the server's close_notify arrived */
	uint64_t instance, prev_instance; /* HelloResult.instance */
	unsigned reconnects;		  /* connections made again */
	uint64_t connected_ms;		  /* when the last one was made */
	uint64_t backoff_ms;		  /* the next wait between tries */
	/* Durability bookkeeping (see struct h2_volume). */
	uint64_t ack_seq, all_durable;
	unsigned loss_gen, sync_seen_gen; /* the same, for h2_sync */
	bool dropped_clean;		  /* the last loss had close_notify */
	char io_msg[H2_ERRMSG_MAX];
	uint64_t next_seq;
	struct h2_slot slots[H2_MAX_SLOTS];
	uint16_t free_idx[H2_MAX_SLOTS];
	unsigned nfree;
	struct h2_slot *send_head, *send_tail; /* slots not fully staged */
	/* The piece being written: the staging buffer or a direct payload,
	 * and the slots whose last byte is in it. */
	uint8_t *stage;
	const uint8_t *tx_ptr;
	size_t tx_len, tx_pos;
	struct h2_slot *tx_done;
	/* Reply reading: the raw buffer, and the Read reply being filled. */
	uint8_t *rx;
	size_t rx_pos, rx_len;
	struct h2_slot *rx_slot;
	uint8_t *rx_dst;
	size_t rx_left;
};

/* Milliseconds on the monotonic clock. */
static inline uint64_t h2_conn_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Add one to an eventfd's counter; EAGAIN (counter full) is harmless. */
static inline void h2_conn_efd_signal(int fd)
{
	uint64_t one = 1;
	ssize_t n;

	do
		n = write(fd, &one, sizeof(one));
	while (n < 0 && errno == EINTR);
}

/* Reset an eventfd's counter to zero (EFD_NONBLOCK: never waits). */
static inline void h2_conn_efd_drain(int fd)
{
	uint64_t v;
	ssize_t n;

	do
		n = read(fd, &v, sizeof(v));
	while (n < 0 && errno == EINTR);
}

/* lib_conn.c */

/* The I/O thread (arg: the client).  Started by h2_connect. */
void *h2_io_main(void *arg);
/* Write the I/O thread's error sentence (c->io_msg).  I/O thread. */
void h2_io_msgf(struct h2_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Queue a synchronous call and wait for it: returns call->result, with
 * the thread's last error set on failure.  Thread-safe.
 */
int h2_conn_call(h2_client *c, struct h2_call *call);
/* Queue an aio call (cb set, heap): 0, or H2_ECLOSED.  Thread-safe. */
int h2_conn_submit(h2_client *c, struct h2_call *call);
/* The server's max_payload.  Thread-safe. */
uint64_t h2_conn_max_payload(h2_client *c);

/* lib_net.c: making one connection.  I/O thread. */

/* TCP connect to the first address that answers, by c->deadline_ms:
 * c->fd, or an error with c->io_msg set. */
int h2_net_tcp(struct h2_client *c);
/* TLS handshake on c->fd (c->ssl), verifying the server's name or
 * address: 0, or an error with c->io_msg set. */
int h2_net_tls(struct h2_client *c);
/* Wait for events on c->fd until c->deadline_ms: 0 when ready,
 * H2_ETIMEDOUT, or H2_ECLOSED when h2_disconnect asked us to stop. */
int h2_net_wait(struct h2_client *c, short events);
/* Why the last TLS operation failed, into buf: the verify result, the
 * alert the peer sent, or the library's reason. */
void h2_net_tls_reason(struct h2_client *c, int sslerr, int saved_errno,
		       char *buf, size_t len);

/* lib_ops.c */

/* Set this thread's last error (printf-style) and return err. */
int h2_ops_fail(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The H2_E* code for a wire Status. */
int h2_ops_status_err(int status);
/* Free every volume (and batch) still open on c; h2_disconnect only. */
void h2_ops_free_volumes(h2_client *c);

/* lib_aio.c */

/* Run the callbacks of every call on the done queue; h2_disconnect only,
 * after the I/O thread is joined. */
void h2_aio_drain(h2_client *c);

#endif /* H2_CLIENT_INTERNAL_H */
