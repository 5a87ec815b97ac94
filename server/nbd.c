/*
 * nbd.c - the NBD frontend's I/O: listener, connections, TLS upgrade,
 * and the jobs that run NBD commands on the engine (see nbd.h).
 *
 * A connection goes through these states:
 *
 *   PLAIN --STARTTLS--> TLS_PENDING --ACK sent--> TLS_HANDSHAKE
 *     --verified client certificate--> NEGOTIATE --GO--> TRANSMIT
 *     --DISC--> DRAINING --nothing in flight--> CLOSING --> freed
 *
 * A connection from the plaintext listener (nbd_plain_listen, loopback
 * only) never does TLS: it starts in NEGOTIATE with its identity set to
 * nbd_plain_identity, and its engine refuses STARTTLS.
 *
 * Any state may go to CLOSING (protocol error, timeout, shutdown) or be
 * torn down at once (the peer left, TLS failed).  The plaintext phase
 * uses a plain socket bufferevent that does not own the socket; at the
 * upgrade, once the STARTTLS acknowledgement has been written and
 * nothing else was received, an OpenSSL filter bufferevent is put on
 * top of it (c->bev is then the filter, c->raw the socket's).  A filter,
 * not TLS straight on the socket: libevent's socket mode reads one or
 * two TLS records per turn of the loop, with two read calls each, and
 * writes every piece of output as a record and a system call of its
 * own, which held small requests to a third of the plaintext rate.
 * Through the filter the socket is read and written in large pieces and
 * every record they hold is handled in one turn; the price is a copy of
 * the ciphertext.  Closing waits for both output buffers to drain.
 *
 * The whole negotiation (plaintext options, TLS handshake, options)
 * must end within handshake_timeout_ms (10 s by default) or the
 * connection is dropped.
 *
 * Lifetimes, as in server.c: a connection is referenced by the loop
 * while open and by every job in flight, and freed when both are gone;
 * the export's volume handle lives as long as the connection object, so
 * a job never sees it closed.  Backpressure: a connection stops reading
 * while it has max_inflight commands in flight, or max_inflight_bytes in
 * commands in flight and output not yet taken by the socket together.
 *
 * Commands are normal transactions through the same engine calls as
 * native requests: NBD_CMD_FLUSH is h2_store_sync (every write replied
 * to before it arrived is durable when it is answered; the sync covers
 * the whole store, which is what makes CAN_MULTI_CONN honest), and
 * NBD_CMD_FLAG_FUA is H2_IO_FUA (durable before the reply).
 *
 * Counters (metrics.h): every command is counted once, with protocol
 * "nbd", when its reply is queued, on the export's volume (whose
 * counters the connection holds from GO until it is freed); commands the
 * protocol engine answers itself (refused, zero length) count too.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>

#include "evglue.h"
#include "listen_guard.h"
#include "log.h"
#include "nbd.h"
#include "nbd_proto.h"
#include "sockread.h"
#include "srv.h"
#include "tls.h"

/* Extents gathered per BLOCK_STATUS (the reply is 8 bytes each). */
#define NBD_MAX_EXTENTS 2048
/*
 * Batching: commands go to the worker pool as batches (one job runs a
 * batch's commands in order), so that a queue depth of 32 small requests
 * costs a few thread hand-offs, not 32: on a small machine those context
 * switches and the pool's lock, not the store, were the bottleneck (with
 * a job per command, 4 KiB random reads from the page cache ran at about
 * 45,000 IOPS with 4 workers and 110,000 with 1, on 2 vCPUs).
 *
 * When a connection has no batch at work, what has been parsed goes at
 * once (when the input is drained).  Meanwhile commands gather; a batch
 * that fills up goes too, up to NBD_BATCHES_MAX at work per connection,
 * and the rest goes when a batch finishes.  A batch is full at
 * NBD_BATCH_BYTES of data, or at as many commands as take about
 * NBD_BATCH_NS to run, going by the connection's recent commands
 * (between 1 and NBD_BATCH_CMDS_MAX).  So fast commands (page cache
 * hits) run in few, large batches on one worker at a time, while slow
 * ones (the disk) go nearly one per batch and keep up to NBD_BATCHES_MAX
 * workers, hence that many device requests, busy for one connection, as
 * one job per command did with the default 4 workers.  A FLUSH, and a
 * command with FUA, goes alone, at once, outside that count and the
 * average: it waits for the store's flush (up to a second or more) while
 * other commands go on around it, as NBD clients expect, and concurrent
 * ones share a flush (group commit).
 *
 * Before any of that, a READ of up to NBD_INLINE_READ_MAX is tried on the
 * loop thread with h2_vol_read_cached: when nothing would make it wait
 * (the volume lock is free for readers, the tree's blocks are in memory,
 * the data in the page cache) the reply is read straight into the output
 * buffer, with no hand-off to a worker and back; else it joins a batch as
 * above.  A read that misses costs one preadv2(RWF_NOWAIT) that returned
 * at once.  Replies may leave in any order (the protocol's rule), and a
 * read never waits for the writes parsed before it, as with the batches.
 */
#define NBD_INLINE_READ_MAX (128u << 10)
#define NBD_BATCH_NS	   100000u /* 100 us */
#define NBD_BATCH_CMDS_MAX 64u
#define NBD_BATCH_BYTES	   (256u << 10)
#define NBD_BATCHES_MAX	   4u
/* What a command is assumed to cost before any was measured. */
#define NBD_CMD_NS_INITIAL 10000u
/* Read replies up to this size are copied into one output chain with
 * their neighbours (fewer, fuller TLS records and system calls); larger
 * ones are handed over by reference. */
#define NBD_COPY_MAX (64u << 10)
/* Most bytes one read or write of the socket moves (libevent: 16 KiB). */
#define NBD_SOCKET_IO_MAX (1u << 20)
/* Under TLS: ciphertext buffered below the filter, each way. */
#define NBD_RAW_MAX (1u << 20)
/* Input read ahead while negotiating: two option windows. */
#define NBD_NEGOTIATE_READ_MAX (2 * H2_NBD_WINDOW)

struct nbd_conn;

struct h2_nbdsrv {
	struct h2_server *srv;
	struct evconnlistener *listener;       /* TLS; NULL if off */
	struct evconnlistener *plain_listener; /* loopback, no TLS; or NULL */
	/* Against accept() failures (listen_guard.h); NULL if none. */
	struct h2_listen_guard *guard, *plain_guard;
	char addr[64], plain_addr[64];
	struct nbd_conn *conns; /* open connections */
	unsigned nconns;
	bool closing_all; /* inside h2_nbdsrv_close_all */
};

enum nc_state {
	NC_PLAIN,	  /* plaintext option haggling */
	NC_TLS_PENDING,	  /* STARTTLS acknowledged, ACK not yet sent */
	NC_TLS_HANDSHAKE, /* OpenSSL bufferevent accepting */
	NC_NEGOTIATE,	  /* options over TLS */
	NC_TRANSMIT,	  /* commands */
	NC_DRAINING,	  /* NBD_CMD_DISC: finishing what is in flight */
	NC_CLOSING,	  /* sending the last output, then teardown */
};

struct nbd_conn {
	struct h2_nbdsrv *ns;
	struct nbd_conn *next, *prev;
	struct bufferevent *bev;
	evutil_socket_t fd;
	struct bufferevent *raw; /* under TLS: the socket's, below c->bev */
	struct h2_topup topup;	 /* reads the socket's input in big pieces */
	struct evbuffer_cb_entry *raw_cb; /* raw output drained */
	struct event *closer;	 /* deferred teardown once all is sent, or
				    close after out_failed (closer_cb) */
	bool tls_up;	     /* the TLS handshake completed */
	bool plain;	     /* from the plaintext listener: never TLS */
	struct event *timer; /* negotiation deadline */
	struct h2_nbd *proto;
	enum nc_state state;
	int refs;  /* loop + jobs in flight */
	bool open; /* bev alive */
	bool read_paused;
	char identity[256];
	char peer[64];
	struct h2_vol *vol;	/* the export, from GO until freed */
	struct h2_vmetrics *vm; /* its counters, likewise (NULL: none) */
	char export[256];	/* "VOLUME" or "VOLUME@SNAP" */
	/* The volume a GO opened (or is opening) for writing, else "":
	 * a rollback is refused while it is (h2_nbdsrv_writing). */
	char rw_volume[128];
	/* A write whose payload has not all arrived yet. */
	bool pending;
	struct h2_nbd_cmd pending_cmd;
	/* in flight: jobs running plus replies not yet handed to the socket */
	unsigned inflight;
	uint64_t inflight_bytes;
	/* commands parsed but not yet handed to the pool (process_input) */
	struct nbd_batch *batch;
	unsigned batches; /* batches handed to the pool, not yet done */
	uint64_t ncmds, nbatches; /* totals, for the log */
	uint64_t ninline;	  /* reads answered on the loop thread */
	uint64_t cmd_ns;	  /* recent run time per command (average) */
	/* while set, the engine's output goes here (batch_done) */
	struct evbuffer *cork;
	bool out_failed; /* output could not be queued: no more (conn_out) */
};

enum job_kind {
	NJ_LOOKUP,
	NJ_LIST,
	NJ_IO,
};

struct nbd_job {
	struct h2_job job;
	enum job_kind kind;
	struct nbd_conn *c;
	struct h2_store *st;
	struct nbd_job *bnext; /* NJ_IO: the next command of its batch */
	/* NJ_LOOKUP */
	char name[256]; /* what h2_vol_open takes: "VOLUME[@SNAP]" */
	char vname[128], sname[128]; /* its parts (sname "": a volume) */
	bool go, read_only;
	uint64_t size;
	/* NJ_LIST */
	struct h2_vol_info *list;
	size_t nlist;
	/* NJ_IO */
	struct h2_nbd_cmd cmd;
	struct h2_vol *vol; /* borrowed from the connection */
	uint8_t *buf; /* read data after H2_NBD_READ_HDR_MAX bytes of room
			 for the header */
	struct evbuffer *wdata; /* write payload */
	struct h2_nbd_extent *ext;
	size_t next;
	uint64_t account;
	uint64_t start_ns; /* arrival, for the counters */
	/* result */
	int err;
	char msg[300];
};

/* NJ_IO commands run one after the other by one worker. */
struct nbd_batch {
	struct h2_job job;
	struct nbd_conn *c;
	struct nbd_job *first, *last;
	unsigned n;
	uint64_t bytes;	  /* data read or written */
	uint64_t account; /* what the commands count in flight */
	uint64_t run_ns;  /* how long the worker took (batch_run) */
	bool solo;	  /* a FLUSH or FUA command alone, not in c->batches */
};

static void process_input(struct nbd_conn *c);
static void conn_close(struct nbd_conn *c, const char *why);
static void batch_discard(struct nbd_conn *c);
static void batch_flush(struct nbd_conn *c);
static void batch_maybe_flush(struct nbd_conn *c, bool idle);
static void conn_teardown(struct nbd_conn *c, bool graceful);
static void closer_cb(evutil_socket_t fd, short what, void *arg);
static void raw_out_cb(struct evbuffer *buf,
		       const struct evbuffer_cb_info *info, void *arg);
static void nbd_setcb(struct nbd_conn *c);

/* ---------------------------------------------------------------------- */
/* Connection lifetime.                                                   */

/* ---------------------------------------------------------------------- */
/* Data buffers.                                                          */

/*
 * Write payloads and read replies of more than NBD_BUF_SMALL bytes, up to
 * a MiB, come from a few kept buffers: glibc serves such sizes with mmap,
 * so every 1 MiB request paid 256 page faults, the kernel's zeroing and
 * an munmap (perf: 7-8% of h2d's CPU for 1 MiB reads).  At most
 * NBD_BUF_KEEP are kept, and none once no NBD connection is open, so the
 * memory goes back when the clients do.  Loop thread only: buffers are
 * taken when a command is parsed and given back when its reply has been
 * written (or the command dropped).
 */
#define NBD_BUF_SMALL (128u << 10)
#define NBD_BUF_BIG   (H2_NBD_READ_HDR_MAX + (1u << 20))
#define NBD_BUF_KEEP  16u

struct nbd_buf {
	size_t cap;
	max_align_t align[]; /* the data follows */
};

static struct {
	struct nbd_buf *v[NBD_BUF_KEEP];
	unsigned n;
	unsigned users; /* open NBD connections, all servers */
} nbd_bufs;

static uint8_t *nbd_buf_data(struct nbd_buf *b)
{
	return (uint8_t *)b->align;
}

/* A buffer of at least len bytes, or NULL. */
static uint8_t *nbd_buf_get(size_t len)
{
	struct nbd_buf *b;
	size_t cap = len;

	if (len > NBD_BUF_SMALL && len <= NBD_BUF_BIG) {
		if (nbd_bufs.n)
			return nbd_buf_data(nbd_bufs.v[--nbd_bufs.n]);
		cap = NBD_BUF_BIG;
	}
	b = malloc(sizeof(*b) + cap);
	if (!b)
		return NULL;
	b->cap = cap;
	return nbd_buf_data(b);
}

static void nbd_buf_put(uint8_t *data)
{
	struct nbd_buf *b;

	if (!data)
		return;
	b = (struct nbd_buf *)(data - offsetof(struct nbd_buf, align));
	if (b->cap == NBD_BUF_BIG && nbd_bufs.users &&
	    nbd_bufs.n < NBD_BUF_KEEP) {
		nbd_bufs.v[nbd_bufs.n++] = b;
		return;
	}
	free(b);
}

static void nbd_buf_drain(void)
{
	while (nbd_bufs.n)
		free(nbd_bufs.v[--nbd_bufs.n]);
}

/* The buffer a READ is read into by a worker, room for the header in
 * front (NULL: out of memory). */
static uint8_t *read_buf(const struct h2_nbd_cmd *cmd)
{
	return nbd_buf_get(H2_NBD_READ_HDR_MAX + (size_t)cmd->len);
}

static void conn_ref(struct nbd_conn *c)
{
	c->refs++;
}

static void conn_unref(struct nbd_conn *c)
{
	struct h2_server *srv = c->ns->srv;

	if (--c->refs > 0)
		return;
	batch_discard(c);
	h2_vol_close(c->vol);
	if (c->vm) {
		h2_metrics_volume_handle(c->vm, false);
		h2_metrics_volume_put(c->vm);
	}
	h2_nbd_free(c->proto);
	free(c);
	h2_server_trim_soon(srv); /* see h2_conn_unref */
}

static void job_free(struct nbd_job *j);

/* Free a batch never handed to the pool (the connection is gone). */
static void batch_discard(struct nbd_conn *c)
{
	struct nbd_job *j, *next;

	if (!c->batch)
		return;
	for (j = c->batch->first; j; j = next) {
		next = j->bnext;
		job_free(j);
	}
	free(c->batch);
	c->batch = NULL;
}

/* The operation an NBD command counts as. */
static enum h2_mop cmd_op(const struct h2_nbd_cmd *cmd)
{
	switch (cmd->type) {
	case NBD_CMD_READ:
		return H2_MOP_READ;
	case NBD_CMD_WRITE:
		return H2_MOP_WRITE;
	case NBD_CMD_TRIM:
		return H2_MOP_TRIM;
	case NBD_CMD_WRITE_ZEROES:
		return H2_MOP_WRITE_ZEROES;
	case NBD_CMD_FLUSH:
		return H2_MOP_FLUSH;
	case NBD_CMD_BLOCK_STATUS:
		return H2_MOP_BLOCK_STATUS;
	default:
		return H2_MOP_OTHER;
	}
}

/* Count a command answered with err (0: success). */
static void count_cmd(struct nbd_conn *c, const struct h2_nbd_cmd *cmd, int err,
		      uint64_t start_ns)
{
	h2_metrics_request(c->ns->srv->metrics, c->vm, H2_MPROTO_NBD,
			   cmd_op(cmd), (unsigned)h2_status_from_errno(err),
			   cmd->type == NBD_CMD_FLUSH ? 0 : cmd->len, start_ns);
}

/* The engine's output goes to the socket (dropped once closed). */
static void conn_out(void *arg, const void *buf, size_t len)
{
	struct nbd_conn *c = arg;
	int r = 0;

	if (c->out_failed)
		return;
	if (c->cork)
		r = evbuffer_add(c->cork, buf, len);
	else if (c->open && c->bev)
		r = evbuffer_add(bufferevent_get_output(c->bev), buf, len);
	if (r < 0) {
		/* A reply lost or cut short: the client would wait for it
		 * forever, or take what follows for its rest.  Nothing more
		 * goes out, and the connection ends once what is queued has:
		 * closer_cb closes it from the loop, not under the engine's
		 * callers, which go on using the connection. */
		c->out_failed = true;
		if (c->closer)
			event_active(c->closer, 0, 0);
	}
}

static const char *who(const struct nbd_conn *c)
{
	return c->identity[0] ? c->identity : "-";
}

/* Tear the transport down now; graceful: say goodbye to TLS first. */
static void conn_teardown(struct nbd_conn *c, bool graceful)
{
	struct h2_nbdsrv *ns = c->ns;
	struct h2_server *srv = ns->srv;

	if (!c->open)
		return;
	c->open = false;
	if (c->timer) {
		event_free(c->timer);
		c->timer = NULL;
	}
	if (c->closer) {
		event_free(c->closer);
		c->closer = NULL;
	}
	if (c->bev) {
		SSL *ssl = c->raw ? bufferevent_openssl_get_ssl(c->bev) : NULL;
		struct bufferevent *sock = c->raw ? c->raw : c->bev;

		if (c->raw_cb) {
			evbuffer_remove_cb_entry(bufferevent_get_output(c->raw),
						 c->raw_cb);
			c->raw_cb = NULL;
		}
		/* The spec asks for a TLS shutdown before the TCP close;
		 * the output is flushed, so close_notify goes out now (one
		 * attempt: the socket is not waited for).  Whatever fails
		 * here is of no interest to the next connection's error
		 * reporting. */
		if (graceful && ssl && c->tls_up) {
			SSL_shutdown(ssl);
			ERR_clear_error();
			evbuffer_write(bufferevent_get_output(c->raw), c->fd);
		}
		h2_topup_detach(&c->topup);
		/* The socket's bufferevent may outlive this call (a callback
		 * of libevent's holds it, or under TLS the filter until its
		 * deferred finalisation), its events registered on c->fd,
		 * which is closed below: a new connection given the same
		 * number would then never be polled.  Off the socket first.
		 * Then the filter frees the raw bufferevent and the SSL too. */
		bufferevent_setfd(sock, -1);
		bufferevent_free(c->bev);
		c->bev = NULL;
		c->raw = NULL;
	}
	if (c->fd >= 0)
		evutil_closesocket(c->fd);
	c->fd = -1;
	if (c->prev)
		c->prev->next = c->next;
	else
		ns->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	ns->nconns--;
	if (--nbd_bufs.users == 0)
		nbd_buf_drain();
	h2_metrics_conn_close(srv->metrics, H2_MPROTO_NBD);
	h2_log_debug("nbd",
		     "closed peer=%s identity=%s commands=%" PRIu64
		     " batches=%" PRIu64 " inline_reads=%" PRIu64
		     " ns_per_command=%" PRIu64,
		     c->peer, who(c), c->ncmds, c->nbatches, c->ninline,
		     c->cmd_ns);
	conn_unref(c);
	if (!ns->closing_all)
		h2_server_check_stopped(srv);
}

/* Has everything queued reached the socket (under TLS: both layers)? */
static bool output_sent(const struct nbd_conn *c)
{
	return evbuffer_get_length(bufferevent_get_output(c->bev)) == 0 &&
	       (!c->raw ||
		evbuffer_get_length(bufferevent_get_output(c->raw)) == 0);
}

/* Stop reading; close once the output is flushed. */
static void conn_close(struct nbd_conn *c, const char *why)
{
	if (!c->open || c->state == NC_CLOSING)
		return;
	if (why)
		h2_log_info("nbd", "closing peer=%s identity=%s reason=\"%s\"",
			    c->peer, who(c), why);
	c->state = NC_CLOSING;
	bufferevent_disable(c->bev, EV_READ);
	if (output_sent(c))
		conn_teardown(c, true);
	/* else write_cb (or raw_out_cb, under TLS) tears down once the
	 * output is flushed */
}

/* ---------------------------------------------------------------------- */
/* Backpressure.                                                          */

static bool over_limits(const struct nbd_conn *c)
{
	const struct h2_config *cfg = c->ns->srv->cfg;

	/* In flight and queued under one cap, as in server.c. */
	return c->inflight >= cfg->max_inflight ||
	       c->inflight_bytes +
			   evbuffer_get_length(bufferevent_get_output(c->bev)) >=
		   cfg->max_inflight_bytes;
}

static bool reading_state(const struct nbd_conn *c)
{
	return c->state == NC_PLAIN || c->state == NC_NEGOTIATE ||
	       c->state == NC_TRANSMIT;
}

/* Resume reading when below the limits again. */
static void maybe_resume(struct nbd_conn *c)
{
	if (!c->open || !c->read_paused || !reading_state(c) ||
	    (c->ns->srv->stopping && c->state != NC_TRANSMIT) ||
	    over_limits(c))
		return;
	c->read_paused = false;
	if (bufferevent_enable(c->bev, EV_READ) < 0) {
		/* Never read again, the client would wait forever. */
		conn_close(c, "out of memory resuming reads");
		return;
	}
	/* Bytes may already sit in the input buffer. */
	process_input(c);
}

/* n commands finished (their replies are queued): release their
 * accounting. */
static void request_done(struct nbd_conn *c, unsigned n, uint64_t bytes)
{
	c->inflight -= n < c->inflight ? n : c->inflight;
	c->inflight_bytes -=
	    bytes < c->inflight_bytes ? bytes : c->inflight_bytes;
	if (c->open && c->state == NC_DRAINING && c->inflight == 0)
		conn_close(c, NULL);
	else
		maybe_resume(c);
}

/* ---------------------------------------------------------------------- */
/* Jobs.                                                                  */

static int ext_cb(void *arg, uint64_t off, uint64_t len, bool hole)
{
	struct nbd_job *j = arg;

	(void)off;
	if (j->next == NBD_MAX_EXTENTS)
		return 1;
	j->ext[j->next++] = (struct h2_nbd_extent){len, hole};
	return 0;
}

static void job_fail(struct nbd_job *j, int err)
{
	/* The engine's ESHUTDOWN means a failed store, not a stopping
	 * server: to an NBD client (which must disconnect on ESHUTDOWN)
	 * it is an I/O error. */
	j->err = err == -ESHUTDOWN ? -EIO : err;
	snprintf(j->msg, sizeof(j->msg), "%s", h2_core_errmsg());
}

/* Worker: a WRITE from its payload's pieces, without joining them (a
 * failure of its own is left in j->err, the engine's is returned). */
static int write_pieces(struct nbd_job *j, unsigned fua)
{
	struct evbuffer_iovec ev[64], *v = ev;
	struct iovec iov[64], *io = iov;
	struct h2_op op = {.type = H2_OP_WRITE, .off = j->cmd.off,
			   .len = j->cmd.len};
	int n = evbuffer_peek(j->wdata, -1, NULL, NULL, 0), r;

	if (n > 64) {
		v = malloc((size_t)n * sizeof(*v));
		io = malloc((size_t)n * sizeof(*io));
		if (!v || !io) {
			/* Answered like job_fail does. */
			j->err = -ENOMEM;
			snprintf(j->msg, sizeof(j->msg),
				 "out of memory for a %" PRIu32 "-byte write",
				 j->cmd.len);
			r = 0;
			goto out;
		}
	}
	n = evbuffer_peek(j->wdata, -1, NULL, v, n);
	for (int i = 0; i < n; i++) {
		io[i].iov_base = v[i].iov_base;
		io[i].iov_len = v[i].iov_len;
	}
	op.iov = io;
	op.iovcnt = n;
	r = h2_vol_txn(j->vol, &op, 1, fua, NULL);
out:
	if (v != ev)
		free(v);
	if (io != iov)
		free(io);
	return r;
}

static void job_run_io(struct nbd_job *j)
{
	const struct h2_nbd_cmd *c = &j->cmd;
	unsigned fua = (c->flags & NBD_CMD_FLAG_FUA) ? H2_IO_FUA : 0;
	int r = 0;

	switch (c->type) {
	case NBD_CMD_READ:
		/* j->buf (do_command) has room in front for the reply
		 * header: header and data then go out as one piece. */
		r = h2_vol_read(j->vol, j->buf + H2_NBD_READ_HDR_MAX, c->off,
				c->len);
		break;
	case NBD_CMD_WRITE:
		r = write_pieces(j, fua);
		break;
	case NBD_CMD_FLUSH:
		r = h2_store_sync(j->st, NULL);
		break;
	case NBD_CMD_TRIM:
		r = h2_vol_trim(j->vol, c->off, c->len, fua);
		break;
	case NBD_CMD_WRITE_ZEROES:
		r = h2_vol_write_zeroes(j->vol, c->off, c->len,
					fua | ((c->flags & NBD_CMD_FLAG_NO_HOLE)
						   ? H2_IO_NO_HOLE
						   : 0));
		break;
	case NBD_CMD_BLOCK_STATUS:
		j->ext = calloc(NBD_MAX_EXTENTS, sizeof(*j->ext));
		if (!j->ext) {
			j->err = -ENOMEM;
			snprintf(j->msg, sizeof(j->msg), "out of memory");
			return;
		}
		r = h2_vol_block_status(j->vol, c->off, c->len, ext_cb, j);
		if (r == 1)
			r = 0;
		break;
	default:
		r = -EINVAL;
		break;
	}
	if (r < 0)
		job_fail(j, r);
}

static void job_run(struct h2_job *job)
{
	struct nbd_job *j = (struct nbd_job *)job;
	struct h2_vol_info info;
	struct h2_snap_info si;
	int r = 0;

	switch (j->kind) {
	case NJ_LOOKUP:
		if (j->go) {
			r = h2_vol_open(j->st, j->name, &j->vol);
			if (r == 0)
				j->size = h2_vol_size(j->vol);
		} else if (j->sname[0]) {
			r = h2_snap_info(j->st, j->vname, j->sname, &si);
			if (r == 0)
				j->size = si.size;
		} else {
			r = h2_vol_info(j->st, j->name, &info);
			if (r == 0)
				j->size = info.size;
		}
		break;
	case NJ_LIST:
		r = h2_vol_list(j->st, &j->list, &j->nlist);
		break;
	case NJ_IO:
		job_run_io(j);
		return;
	}
	if (r < 0) {
		j->err = r;
		snprintf(j->msg, sizeof(j->msg), "%s", h2_core_errmsg());
	}
}

static void job_free(struct nbd_job *j)
{
	if (j->kind != NJ_IO)
		h2_vol_close(j->vol); /* a lookup whose result was not kept */
	nbd_buf_put(j->buf);
	if (j->wdata)
		evbuffer_free(j->wdata);
	free(j->list);
	free(j->ext);
	free(j);
}

/* Hand data to the output without copying it; the allocation (extra)
 * is freed once it has been written. */
static void free_ref(const void *data, size_t len, void *extra)
{
	(void)data;
	(void)len;
	nbd_buf_put(extra);
}

static void done_lookup(struct nbd_conn *c, struct nbd_job *j)
{
	struct h2_nbd_export ex = {.size = j->size, .read_only = j->read_only};
	enum h2_nbd_act r;

	if (j->err == -ENOENT)
		snprintf(j->msg, sizeof(j->msg), "no export named \"%s\"",
			 j->name);
	r = h2_nbd_lookup_done(c->proto, j->err, j->err ? NULL : &ex,
			       j->err ? j->msg : NULL);
	if (j->go && !j->read_only && r != H2_NBD_TRANSMIT)
		c->rw_volume[0] = '\0';
	if (r == H2_NBD_TRANSMIT) {
		c->vol = j->vol;
		j->vol = NULL;
		snprintf(c->export, sizeof(c->export), "%s", j->name);
		/* A snapshot's I/O counts under its volume. */
		c->vm = h2_metrics_volume_get(c->ns->srv->metrics, j->vname);
		if (c->vm)
			h2_metrics_volume_handle(c->vm, true);
		c->state = NC_TRANSMIT;
		if (c->timer) {
			event_free(c->timer);
			c->timer = NULL;
		}
		/* Room for a request and its largest payload. */
		bufferevent_setwatermark(c->bev, EV_READ, 0,
					 NBD_REQUEST_SIZE + H2_NBD_MAX_IO);
		if (!c->raw)
			h2_topup_limit(&c->topup,
				       NBD_REQUEST_SIZE + H2_NBD_MAX_IO);
		h2_log_info("nbd",
			    "export peer=%s identity=%s volume=%s "
			    "size=%" PRIu64 "%s",
			    c->peer, who(c), c->export, j->size,
			    j->read_only ? " read-only" : "");
	} else if (r == H2_NBD_CLOSE) {
		conn_close(c, "NBD_OPT_EXPORT_NAME for an unavailable export");
	}
}

static void done_list(struct nbd_conn *c, struct nbd_job *j)
{
	struct h2_server *srv = c->ns->srv;

	if (!j->err)
		for (size_t i = 0; i < j->nlist; i++)
			if (h2_acl_rights(srv->acl, c->identity,
					  j->list[i].name) != H2_RIGHT_NONE)
				h2_nbd_list_add(c->proto, j->list[i].name);
	h2_nbd_list_done(c->proto, j->err);
}

/* Queue the reply of a finished command to out. */
static void done_io(struct nbd_conn *c, struct nbd_job *j, struct evbuffer *out)
{
	uint8_t hdr[H2_NBD_READ_HDR_MAX], *start;
	size_t hl;
	int r;

	if (j->err) {
		h2_nbd_reply(c->proto, &j->cmd, j->err, j->msg);
		return;
	}
	switch (j->cmd.type) {
	case NBD_CMD_READ:
		hl = h2_nbd_read_header(c->proto, &j->cmd, hdr);
		start = j->buf + H2_NBD_READ_HDR_MAX - hl;
		memcpy(start, hdr, hl);
		if (j->cmd.len <= NBD_COPY_MAX) {
			r = evbuffer_add(out, start, hl + j->cmd.len);
		} else {
			r = evbuffer_add_reference(out, start, hl + j->cmd.len,
						   free_ref, j->buf);
			if (r == 0)
				j->buf = NULL;
		}
		if (r < 0) {
			/* Nothing of this reply is out; without it the
			 * client would wait forever. */
			h2_nbd_reply(c->proto, &j->cmd, -ENOMEM,
				     "out of memory for a read reply");
		}
		break;
	case NBD_CMD_BLOCK_STATUS:
		h2_nbd_reply_extents(c->proto, &j->cmd, j->ext, j->next);
		break;
	default:
		h2_nbd_reply(c->proto, &j->cmd, 0, NULL);
		break;
	}
}

static void job_done(struct h2_job *job)
{
	struct nbd_job *j = (struct nbd_job *)job;
	struct nbd_conn *c = j->c;

	/* An option's answer only makes sense while negotiating. */
	if (c->open && c->state == NC_NEGOTIATE) {
		switch (j->kind) {
		case NJ_LOOKUP:
			done_lookup(c, j);
			break;
		case NJ_LIST:
			done_list(c, j);
			break;
		case NJ_IO:
			break; /* NJ_IO runs in batches */
		}
	}
	if (c->open)
		process_input(c); /* negotiation goes on */
	h2_server_check_stopped(c->ns->srv);
	conn_unref(c);
	job_free(j);
}

static struct nbd_job *job_new(struct nbd_conn *c, enum job_kind kind)
{
	struct nbd_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->job.run = job_run;
	j->job.done = job_done;
	j->kind = kind;
	j->c = c;
	j->st = c->ns->srv->st;
	return j;
}

static void job_submit(struct nbd_job *j)
{
	conn_ref(j->c);
	h2_pool_submit(j->c->ns->srv->pool, &j->job);
}

/* Worker: the batch's commands, in the order they arrived. */
static void batch_run(struct h2_job *job)
{
	struct nbd_batch *b = (struct nbd_batch *)job;
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (struct nbd_job *j = b->first; j; j = j->bnext)
		job_run_io(j);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	b->run_ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000u +
		    (uint64_t)t1.tv_nsec - (uint64_t)t0.tv_nsec;
}

/*
 * Loop: queue every reply of the batch, then hand them to the output at
 * once (one chain for the small ones, so TLS makes few full records).
 */
static void batch_done(struct h2_job *job)
{
	struct nbd_batch *b = (struct nbd_batch *)job;
	struct nbd_conn *c = b->c;
	struct nbd_job *j, *next;
	struct evbuffer *out = NULL;
	unsigned b_n = b->n;
	uint64_t b_account = b->account;

	/* A moving average (weight 1/4) of the time per command. */
	if (!b->solo)
		c->cmd_ns = (3 * c->cmd_ns + b->run_ns / (b->n ? b->n : 1)) / 4;

	if (c->open && c->bev && !c->cork)
		out = evbuffer_new();
	if (out) {
		size_t room = 0;

		for (j = b->first; j; j = j->bnext)
			room += H2_NBD_READ_HDR_MAX +
				(j->cmd.type == NBD_CMD_READ &&
					 j->cmd.len <= NBD_COPY_MAX
				     ? j->cmd.len
				     : 0);
		evbuffer_expand(out, room); /* a hint: may fail harmlessly */
		c->cork = out;
		for (j = b->first; j; j = j->bnext)
			done_io(c, j, out);
		c->cork = NULL;
		if (c->open && c->bev &&
		    evbuffer_add_buffer(bufferevent_get_output(c->bev), out) <
			0)
			c->out_failed = true;
		evbuffer_free(out);
		if (c->out_failed && c->closer)
			event_active(c->closer, 0, 0);
	} else if (c->open && c->bev) {
		/* No scratch buffer: reply straight to the output. */
		for (j = b->first; j && c->open && c->bev; j = j->bnext)
			done_io(c, j, bufferevent_get_output(c->bev));
	}
	for (j = b->first; j; j = next) {
		next = j->bnext;
		/* Counted also when the client is gone. */
		count_cmd(c, &j->cmd, j->err, j->start_ns);
		job_free(j);
	}
	if (!b->solo)
		c->batches--;
	free(b);
	request_done(c, b_n, b_account);
	/* Commands that gathered meanwhile go now. */
	batch_maybe_flush(c, true);
	h2_server_check_stopped(c->ns->srv);
	conn_unref(c);
}

/*
 * Hand the batch being built to the pool if it is full and there is
 * room, or if nothing is at work and no more commands are coming now
 * (idle: the input is drained or a batch just finished).
 */
static void batch_maybe_flush(struct nbd_conn *c, bool idle)
{
	const struct nbd_batch *b = c->batch;
	uint64_t cmds;
	bool full;

	if (!b)
		return;
	cmds = NBD_BATCH_NS / (c->cmd_ns ? c->cmd_ns : 1);
	if (cmds < 1)
		cmds = 1;
	if (cmds > NBD_BATCH_CMDS_MAX)
		cmds = NBD_BATCH_CMDS_MAX;
	full = b->n >= cmds || b->bytes >= NBD_BATCH_BYTES;
	if ((idle && c->batches == 0) ||
	    (full && c->batches < NBD_BATCHES_MAX))
		batch_flush(c);
}

/* Hand the batch being built to the pool. */
static void batch_flush(struct nbd_conn *c)
{
	struct nbd_batch *b = c->batch;

	if (!b)
		return;
	c->batch = NULL;
	c->batches++;
	c->nbatches++;
	c->ncmds += b->n;
	conn_ref(c);
	h2_pool_submit(c->ns->srv->pool, &b->job);
}

/* ---------------------------------------------------------------------- */
/* Actions of the engine.                                                 */

/* H2_NBD_LOOKUP: rights on the loop thread, the store on a worker. */
static void do_lookup(struct nbd_conn *c, const char *name, bool go)
{
	struct h2_server *srv = c->ns->srv;
	char vol[128], snap[128], msg[300];
	enum h2_right right = H2_RIGHT_NONE;
	struct nbd_job *j;

	if (srv->stopping) {
		h2_nbd_lookup_done(c->proto, -ESHUTDOWN, NULL, NULL);
		return;
	}
	if (h2_nbd_export_split(name, vol, sizeof(vol), snap, sizeof(snap)) ==
		0 &&
	    h2_vol_name_valid(vol))
		right = h2_acl_rights(srv->acl, c->identity, vol);
	if (right == H2_RIGHT_NONE) {
		/* A volume the client has no right to does not exist for
		 * it, as in the native protocol. */
		snprintf(msg, sizeof(msg), "no export named \"%.200s\"", name);
		h2_nbd_lookup_done(c->proto, -ENOENT, NULL, msg);
		return;
	}
	if (snap[0] && !h2_vol_name_valid(snap)) {
		snprintf(msg, sizeof(msg), "no export named \"%.200s\"", name);
		h2_nbd_lookup_done(c->proto, -ENOENT, NULL, msg);
		return;
	}
	j = job_new(c, NJ_LOOKUP);
	if (!j) {
		h2_nbd_lookup_done(c->proto, -ENOMEM, NULL, "out of memory");
		return;
	}
	/* VOLUME@SNAP: a snapshot, always read-only (read right on the
	 * volume suffices, as in the native protocol). */
	snprintf(j->vname, sizeof(j->vname), "%s", vol);
	snprintf(j->sname, sizeof(j->sname), "%s", snap);
	snprintf(j->name, sizeof(j->name), "%s%s%s", vol, snap[0] ? "@" : "",
		 snap);
	j->go = go;
	j->read_only = snap[0] || right < H2_RIGHT_WRITE;
	if (go && !j->read_only)
		snprintf(c->rw_volume, sizeof(c->rw_volume), "%s", vol);
	job_submit(j);
}

/* H2_NBD_LIST */
static void do_list(struct nbd_conn *c)
{
	struct nbd_job *j;

	if (c->ns->srv->stopping) {
		h2_nbd_list_done(c->proto, -ESHUTDOWN);
		return;
	}
	j = job_new(c, NJ_LIST);
	if (!j) {
		h2_nbd_list_done(c->proto, -ENOMEM);
		return;
	}
	job_submit(j);
}

/* A command that could not get its memory: answered ENOMEM, what it
 * had freed. */
static void refuse_nomem(struct nbd_conn *c, const struct h2_nbd_cmd *cmd,
			 struct nbd_job *j, uint8_t *rbuf,
			 struct evbuffer *wdata, uint64_t start_ns)
{
	free(j);
	nbd_buf_put(rbuf);
	if (wdata)
		evbuffer_free(wdata);
	h2_nbd_reply(c->proto, cmd, -ENOMEM, "out of memory");
	count_cmd(c, cmd, -ENOMEM, start_ns);
}

/* A FLUSH or FUA command as a batch of its own, handed to the pool at
 * once; takes wdata. */
static void do_solo(struct nbd_conn *c, const struct h2_nbd_cmd *cmd,
		    struct evbuffer *wdata, uint64_t start_ns)
{
	struct nbd_job *j = job_new(c, NJ_IO);
	struct nbd_batch *b = calloc(1, sizeof(*b));
	uint8_t *rbuf = NULL;

	if (cmd->type == NBD_CMD_READ)
		rbuf = read_buf(cmd);
	if (!j || !b || (cmd->type == NBD_CMD_READ && !rbuf)) {
		free(b);
		refuse_nomem(c, cmd, j, rbuf, wdata, start_ns);
		return;
	}
	j->cmd = *cmd;
	j->vol = c->vol;
	j->buf = rbuf;
	j->wdata = wdata;
	j->start_ns = start_ns;
	j->account = NBD_REQUEST_SIZE;
	if (cmd->type == NBD_CMD_READ || cmd->type == NBD_CMD_WRITE)
		j->account += cmd->len;
	b->job.run = batch_run;
	b->job.done = batch_done;
	b->c = c;
	b->first = b->last = j;
	b->n = 1;
	b->account = j->account;
	b->solo = true;
	c->inflight++;
	c->inflight_bytes += j->account;
	c->nbatches++;
	c->ncmds++;
	conn_ref(c);
	h2_pool_submit(c->ns->srv->pool, &b->job);
}

/* A READ answered on the loop thread, if it needs no waiting. */
static bool read_inline(struct nbd_conn *c, const struct h2_nbd_cmd *cmd,
			uint64_t start_ns)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	uint8_t hdr[H2_NBD_READ_HDR_MAX];
	struct evbuffer_iovec v;
	size_t hl;

	if (cmd->len > NBD_INLINE_READ_MAX || c->cork)
		return false;
	hl = h2_nbd_read_header(c->proto, cmd, hdr);
	if (evbuffer_reserve_space(out, (ev_ssize_t)(hl + cmd->len), &v, 1) !=
	    1)
		return false;
	if (h2_vol_read_cached(c->vol, (uint8_t *)v.iov_base + hl, cmd->off,
			       cmd->len) < 0) {
		/* A worker reads it, or reports the error in full. */
		evbuffer_commit_space(out, &v, 0);
		return false;
	}
	memcpy(v.iov_base, hdr, hl);
	v.iov_len = hl + cmd->len;
	if (evbuffer_commit_space(out, &v, 1) < 0)
		return false;
	c->ncmds++;
	c->ninline++;
	count_cmd(c, cmd, 0, start_ns);
	return true;
}

/*
 * H2_NBD_COMMAND with its payload (writes: wdata) in hand; takes wdata.
 * The command joins the batch being built (handed over when full, or
 * when process_input has taken everything there is to read); a FLUSH
 * goes alone.
 */
static void do_command(struct nbd_conn *c, const struct h2_nbd_cmd *cmd,
		       struct evbuffer *wdata)
{
	struct nbd_job *j;
	struct nbd_batch *b;
	uint64_t account = NBD_REQUEST_SIZE, data = 0;
	uint64_t start_ns = h2_metrics_now();
	uint8_t *rbuf = NULL;

	if (c->ns->srv->stopping) {
		/* The spec's server shutdown: commands that arrive once it
		 * began get ESHUTDOWN (the client then disconnects); those
		 * in flight finish first. */
		if (wdata)
			evbuffer_free(wdata);
		h2_nbd_reply(c->proto, cmd, -ESHUTDOWN,
			     "the server is shutting down");
		count_cmd(c, cmd, -ESHUTDOWN, start_ns);
		return;
	}
	if (cmd->type == NBD_CMD_FLUSH || (cmd->flags & NBD_CMD_FLAG_FUA)) {
		do_solo(c, cmd, wdata, start_ns);
		return;
	}
	if (cmd->type == NBD_CMD_READ) {
		if (read_inline(c, cmd, start_ns))
			return;
		rbuf = read_buf(cmd);
	}
	j = job_new(c, NJ_IO);
	b = c->batch;
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (b) {
			b->job.run = batch_run;
			b->job.done = batch_done;
			b->c = c;
			c->batch = b;
		}
	}
	if (!j || !b || (cmd->type == NBD_CMD_READ && !rbuf)) {
		refuse_nomem(c, cmd, j, rbuf, wdata, start_ns);
		return;
	}
	if (cmd->type == NBD_CMD_READ || cmd->type == NBD_CMD_WRITE)
		data = cmd->len;
	else if (cmd->type == NBD_CMD_BLOCK_STATUS)
		account += NBD_MAX_EXTENTS * 8;
	account += data;
	j->cmd = *cmd;
	j->vol = c->vol;
	j->buf = rbuf;
	j->wdata = wdata;
	j->account = account;
	j->start_ns = start_ns;
	c->inflight++;
	c->inflight_bytes += account;
	if (b->last)
		b->last->bnext = j;
	else
		b->first = j;
	b->last = j;
	b->n++;
	b->bytes += data;
	b->account += account;
	batch_maybe_flush(c, false);
}

/*
 * Deferred: close a connection whose output failed (conn_out), or tear
 * down a closing one whose output is all sent.
 */
static void closer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct nbd_conn *c = arg;

	(void)fd;
	(void)what;
	if (c->open && c->out_failed && c->state != NC_CLOSING)
		conn_close(c, "out of memory for a reply");
	else if (c->open && c->state == NC_CLOSING && output_sent(c))
		conn_teardown(c, true);
}

/*
 * Under TLS, the ciphertext below the filter drained: if the connection
 * is closing and nothing is left, tear down (later: this runs inside the
 * bufferevent that would be freed).
 */
static void raw_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
		       void *arg)
{
	struct nbd_conn *c = arg;

	(void)buf;
	if (info->n_deleted && c->open && c->state == NC_CLOSING &&
	    c->closer && output_sent(c))
		event_active(c->closer, 0, 0);
}

/* H2_NBD_STARTTLS: upgrade once the ACK is on its way. */
static void upgrade_tls(struct nbd_conn *c)
{
	struct h2_server *srv = c->ns->srv;
	struct bufferevent *bev;
	bool ssl_freed, damaged;
	SSL *ssl;

	/* The client must wait for our ACK before its ClientHello, so
	 * anything already here was sent out of turn. */
	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
		conn_close(c, "data after NBD_OPT_STARTTLS before the ACK");
		return;
	}
	ssl = SSL_new(srv->ssl_ctx);
	if (!ssl || h2_ev_ssl_watch(ssl, &ssl_freed) < 0) {
		SSL_free(ssl);
		ERR_clear_error();
		conn_close(c, "cannot create a TLS session");
		return;
	}
	/* The filter takes the socket's bufferevent over (its callbacks,
	 * and with BEV_OPT_CLOSE_ON_FREE its lifetime and the SSL's; the
	 * socket itself stays ours).  Guarded, with the filter's first read
	 * high-water mark (nbd_setcb's later ones reuse what it allocates):
	 * libevent does not check some of what these allocate (evglue.h). */
	h2_ev_guard_begin();
	bev = bufferevent_openssl_filter_new(srv->base, c->bev, ssl,
					     BUFFEREVENT_SSL_ACCEPTING,
					     BEV_OPT_CLOSE_ON_FREE);
	if (bev)
		bufferevent_setwatermark(bev, EV_READ, 0,
					 NBD_NEGOTIATE_READ_MAX);
	damaged = h2_ev_guard_end();
	if (bev)
		h2_ev_ssl_unwatch(ssl);
	if (bev && damaged) {
		/* It takes c->bev and ssl with it; off the socket first
		 * (conn_teardown says why). */
		bufferevent_setfd(c->bev, -1);
		bufferevent_free(bev);
		c->bev = NULL;
		conn_teardown(c, false);
		return;
	}
	if (!bev) {
		/* libevent may have freed the SSL (evglue.h); c->bev is
		 * untouched. */
		if (!ssl_freed)
			SSL_free(ssl);
		conn_teardown(c, false);
		return;
	}
	c->raw = c->bev;
	c->bev = bev;
	c->raw_cb = evbuffer_add_cb(bufferevent_get_output(c->raw), raw_out_cb,
				    c);
	if (!c->raw_cb) {
		/* Closing would wait for it forever. */
		conn_teardown(c, false);
		return;
	}
	/* Bounded buffering below the filter: the socket is read no
	 * further ahead, and the filter encrypts no further ahead (the
	 * rest waits in c->bev's output, which the limits count). */
	bufferevent_setwatermark(c->raw, EV_READ, 0, NBD_RAW_MAX);
	h2_topup_limit(&c->topup, NBD_RAW_MAX);
	bufferevent_setwatermark(c->raw, EV_WRITE, 0, NBD_RAW_MAX);
	bufferevent_set_max_single_read(c->raw, NBD_SOCKET_IO_MAX);
	bufferevent_set_max_single_write(c->raw, NBD_SOCKET_IO_MAX);
	c->state = NC_TLS_HANDSHAKE;
	nbd_setcb(c);
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0)
		conn_teardown(c, false);
}

/* ---------------------------------------------------------------------- */
/* Input.                                                                 */

/* Feed the engine and carry out its actions until it waits for input. */
static void process_input(struct nbd_conn *c)
{
	struct h2_server *srv = c->ns->srv;

	if (!c->open)
		return;
	conn_ref(c); /* actions may close (and unref) the connection */
	/* While stopping only transmission goes on, to answer ESHUTDOWN. */
	while (c->open && reading_state(c) && !c->out_failed &&
	       (!srv->stopping || c->state == NC_TRANSMIT)) {
		struct evbuffer *in = bufferevent_get_input(c->bev);
		size_t avail = evbuffer_get_length(in), win, n;
		struct h2_nbd_action act;
		uint8_t *p = NULL;
		uint64_t skip;

		if (c->pending) {
			struct evbuffer *wdata;
			int moved;

			if (avail < c->pending_cmd.len)
				break;
			/* The payload's chains move over; only the ends of
			 * partly covered chains are copied. */
			wdata = evbuffer_new();
			moved = wdata ? evbuffer_remove_buffer(
					    in, wdata, c->pending_cmd.len)
				      : 0;
			if (moved != (int)c->pending_cmd.len) {
				if (wdata)
					evbuffer_free(wdata);
				h2_nbd_reply(c->proto, &c->pending_cmd, -ENOMEM,
					     "out of memory for a write");
				count_cmd(c, &c->pending_cmd, -ENOMEM,
					  h2_metrics_now());
				c->pending = false;
				if (moved < 0) {
					/* How much of it left the input is
					 * unknown: the stream is lost. */
					conn_close(c, "out of memory for a "
						      "write");
					break;
				}
				/* Only this write fails: the rest of its
				 * data is skipped, the stream goes on. */
				evbuffer_drain(in, c->pending_cmd.len -
						       (size_t)moved);
				continue;
			}
			c->pending = false;
			do_command(c, &c->pending_cmd, wdata);
			continue;
		}
		/* Also while negotiating: a client that sends options and
		 * never reads the replies must not grow our output. */
		if (over_limits(c)) {
			c->read_paused = true;
			bufferevent_disable(c->bev, EV_READ);
			break;
		}
		/* Pull up only what the engine will look at: a request's
		 * 28 bytes, not the payload behind it; skipped bytes are
		 * dropped without being made contiguous. */
		win = h2_nbd_window(c->proto, &skip);
		if (win == 0 && skip) {
			win = skip < avail ? (size_t)skip : avail;
		} else {
			if (win > avail)
				win = avail;
			if (win)
				p = evbuffer_pullup(in, (ssize_t)win);
			if (win && !p) {
				/* Making the window contiguous allocates. */
				conn_close(c, "out of memory reading a request");
				break;
			}
		}
		n = h2_nbd_feed(c->proto, p, win, &act);
		evbuffer_drain(in, n);
		if (act.answered)
			count_cmd(c, &act.cmd, act.answered_err,
				  h2_metrics_now());
		switch (act.type) {
		case H2_NBD_CONTINUE:
			continue;
		case H2_NBD_NEED_MORE:
		case H2_NBD_WAIT:
		case H2_NBD_TRANSMIT:
			break;
		case H2_NBD_STARTTLS:
			c->state = NC_TLS_PENDING;
			bufferevent_disable(c->bev, EV_READ);
			/* write_cb upgrades once the ACK is written. */
			break;
		case H2_NBD_LOOKUP:
			do_lookup(c, act.name, act.go);
			continue; /* the engine waits or was answered */
		case H2_NBD_LIST:
			do_list(c);
			continue;
		case H2_NBD_COMMAND:
			if (act.cmd.type == NBD_CMD_WRITE) {
				c->pending = true;
				c->pending_cmd = act.cmd;
			} else {
				do_command(c, &act.cmd, NULL);
			}
			continue;
		case H2_NBD_DISCONNECT:
			h2_log_debug("nbd", "NBD_CMD_DISC peer=%s", c->peer);
			c->state = NC_DRAINING;
			bufferevent_disable(c->bev, EV_READ);
			if (c->inflight == 0)
				conn_close(c, NULL);
			break;
		case H2_NBD_CLOSE:
			if (act.soft)
				h2_log_debug("nbd", "peer=%s: %s", c->peer,
					     act.why);
			conn_close(c, act.soft ? NULL : act.why);
			break;
		}
		break;
	}
	/* Everything readable is parsed. */
	batch_maybe_flush(c, true);
	conn_unref(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	process_input(arg);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
	struct nbd_conn *c = arg;
	bool empty = evbuffer_get_length(bufferevent_get_output(bev)) == 0;

	if (c->state == NC_CLOSING && output_sent(c)) {
		conn_teardown(c, true);
		return;
	}
	if (c->state == NC_TLS_PENDING && empty) {
		upgrade_tls(c);
		return;
	}
	maybe_resume(c);
	h2_server_check_stopped(c->ns->srv);
}

/* Describe the first queued OpenSSL error of a bufferevent. */
static void ssl_reason(struct nbd_conn *c, char *buf, size_t len)
{
	unsigned long e = c->raw ? bufferevent_get_openssl_error(c->bev) : 0;

	if (e)
		ERR_error_string_n(e, buf, len);
	else
		snprintf(buf, len, "%s",
			 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct nbd_conn *c = arg;
	char why[256];

	if (what & BEV_EVENT_CONNECTED) {
		SSL *ssl = bufferevent_openssl_get_ssl(bev);

		if (h2_tls_peer_identity(ssl, c->identity,
					 sizeof(c->identity)) < 0) {
			c->identity[0] = 0;
			h2_log_warn("nbd",
				    "refused peer=%s reason=\"no "
				    "verified client certificate\"",
				    c->peer);
			h2_metrics_tls_failed(c->ns->srv->metrics,
					      H2_MPROTO_NBD);
			conn_teardown(c, false);
			return;
		}
		c->state = NC_NEGOTIATE;
		c->tls_up = true;
		h2_nbd_tls_done(c->proto);
		h2_log_info("nbd", "connected peer=%s identity=%s tls=%s",
			    c->peer, c->identity, SSL_get_version(ssl));
		process_input(c);
		return;
	}
	if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
		if (c->state == NC_TLS_HANDSHAKE) {
			ssl_reason(c, why, sizeof(why));
			h2_log_warn("nbd",
				    "TLS handshake failed peer=%s "
				    "reason=\"%s\"",
				    c->peer, why);
			h2_metrics_tls_failed(c->ns->srv->metrics,
					      H2_MPROTO_NBD);
		} else if (what & BEV_EVENT_ERROR) {
			ssl_reason(c, why, sizeof(why));
			h2_log_info("nbd",
				    "connection error peer=%s "
				    "identity=%s reason=\"%s\"",
				    c->peer, who(c), why);
		}
		conn_teardown(c, false);
	}
}

static void nbd_setcb(struct nbd_conn *c)
{
	const struct h2_config *cfg = c->ns->srv->cfg;

	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	/* libevent moves at most 16 KiB per read or write call by default:
	 * 64 loop turns for a 1 MiB request.  (The TLS filter's reads stay
	 * as they are: each SSL_read yields a record at most, and libevent
	 * would reserve the whole size on every read.) */
	bufferevent_set_max_single_write(c->bev, NBD_SOCKET_IO_MAX);
	if (!c->raw)
		bufferevent_set_max_single_read(c->bev, NBD_SOCKET_IO_MAX);
	bufferevent_setwatermark(c->bev, EV_READ, 0,
				 c->state == NC_TRANSMIT
				     ? NBD_REQUEST_SIZE + H2_NBD_MAX_IO
				     : NBD_NEGOTIATE_READ_MAX);
	/* In plaintext the write callback must see the output drain to
	 * zero (the STARTTLS ACK); after that, at half the limit. */
	bufferevent_setwatermark(
	    c->bev, EV_WRITE,
	    c->state == NC_PLAIN ? 0 : cfg->max_inflight_bytes / 2, 0);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct nbd_conn *c = arg;

	(void)fd;
	(void)what;
	h2_log_warn("nbd", "negotiation timed out peer=%s identity=%s", c->peer,
		    who(c));
	if (c->state == NC_TLS_HANDSHAKE)
		h2_metrics_tls_failed(c->ns->srv->metrics, H2_MPROTO_NBD);
	conn_teardown(c, false);
}

static void peer_name(const struct sockaddr *sa, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		snprintf(out, len, "%s:%u", ip, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 =
		    (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		snprintf(out, len, "[%s]:%u", ip, ntohs(in6->sin6_port));
	} else {
		snprintf(out, len, "?");
	}
}

/* A new connection on either listener (plain: the plaintext one). */
static void accept_conn(struct h2_nbdsrv *ns, evutil_socket_t fd,
			const struct sockaddr *sa, bool plain)
{
	struct h2_server *srv = ns->srv;
	struct timeval tv;
	struct nbd_conn *c;
	int one = 1;

	if (srv->stopping ||
	    srv->nconns + ns->nconns >= srv->cfg->max_connections) {
		h2_log_warn("nbd", "refused a connection: %s",
			    srv->stopping ? "shutting down"
					  : "connection limit reached");
		h2_metrics_conn_refused(srv->metrics, H2_MPROTO_NBD);
		evutil_closesocket(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = calloc(1, sizeof(*c));
	if (!c) {
		evutil_closesocket(fd);
		return;
	}
	c->ns = ns;
	c->fd = fd;
	c->topup.fd = -1;
	c->refs = 1;
	c->cmd_ns = NBD_CMD_NS_INITIAL;
	c->state = NC_PLAIN;
	c->plain = plain;
	peer_name(sa, c->peer, sizeof(c->peer));
	/* No BEV_OPT_CLOSE_ON_FREE: the socket outlives this bufferevent
	 * when TLS takes over.  Guarded, with its first read high-water
	 * mark (nbd_setcb's later ones reuse what it allocates): libevent
	 * does not check some of what these allocate (evglue.h). */
	h2_ev_guard_begin();
	c->bev = bufferevent_socket_new(srv->base, fd, 0);
	if (c->bev)
		bufferevent_setwatermark(c->bev, EV_READ, 0,
					 NBD_NEGOTIATE_READ_MAX);
	if (h2_ev_guard_end() || !c->bev) {
		if (c->bev)
			bufferevent_free(c->bev);
		evutil_closesocket(fd);
		free(c);
		return;
	}
	c->open = true;
	c->closer = event_new(srv->base, -1, 0, closer_cb, c);
	c->proto = c->closer ? h2_nbd_new(conn_out, c) /* the greeting */
			     : NULL;
	c->timer = evtimer_new(srv->base, timeout_cb, c);
	if (!c->proto || !c->timer || c->out_failed ||
	    h2_topup_attach(&c->topup, bufferevent_get_input(c->bev), fd,
			    NBD_NEGOTIATE_READ_MAX) < 0) {
		if (c->timer)
			event_free(c->timer);
		if (c->closer)
			event_free(c->closer);
		h2_topup_detach(&c->topup);
		bufferevent_free(c->bev);
		evutil_closesocket(fd);
		h2_nbd_free(c->proto);
		free(c);
		return;
	}
	if (plain) {
		/* No certificate tells clients apart: every one acts as the
		 * configured identity, under its access rules. */
		h2_nbd_set_plaintext(c->proto);
		c->state = NC_NEGOTIATE;
		snprintf(c->identity, sizeof(c->identity), "%s",
			 srv->cfg->nbd_plain_identity);
	}
	c->next = ns->conns;
	if (ns->conns)
		ns->conns->prev = c;
	ns->conns = c;
	ns->nconns++;
	nbd_bufs.users++;
	h2_metrics_conn_open(srv->metrics, H2_MPROTO_NBD);
	nbd_setcb(c);
	tv.tv_sec = srv->cfg->handshake_timeout_ms / 1000;
	tv.tv_usec = (srv->cfg->handshake_timeout_ms % 1000) * 1000;
	/* The first enable registers the socket with the loop, and the
	 * deadline joins the timer heap: both allocate.  Without either the
	 * connection would never be read, or could be held forever. */
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0 ||
	    evtimer_add(c->timer, &tv) < 0) {
		conn_teardown(c, false);
		return;
	}
	if (plain)
		h2_log_info("nbd", "connected peer=%s identity=%s tls=none "
				   "(plaintext listener)",
			    c->peer, c->identity);
	else
		h2_log_debug("nbd", "accepted peer=%s", c->peer);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd,
		      struct sockaddr *sa, int salen, void *arg)
{
	(void)l;
	(void)salen;
	accept_conn(arg, fd, sa, false);
}

static void accept_plain_cb(struct evconnlistener *l, evutil_socket_t fd,
			    struct sockaddr *sa, int salen, void *arg)
{
	(void)l;
	(void)salen;
	/* The kernel routes only local traffic to a loopback address, but
	 * the check is cheap and the listener's whole point. */
	if (!h2_config_sa_loopback(sa)) {
		h2_log_warn("nbd", "refused a plaintext connection from a "
				   "non-loopback address");
		evutil_closesocket(fd);
		return;
	}
	accept_conn(arg, fd, sa, true);
}

/* ---------------------------------------------------------------------- */
/* The frontend.                                                          */

/* "HOST:PORT" of a bound listener into out. */
static void bound_name(struct evconnlistener *l, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t blen = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";

	memset(&ss, 0, sizeof(ss));
	getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&ss, &blen);
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(out, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(out, len, "%s:%u", host, ntohs(in->sin_port));
	}
}

/* One connection refused for want of descriptors (listen_guard.h). */
static void refused_cb(void *arg)
{
	struct h2_nbdsrv *ns = arg;

	h2_metrics_conn_refused(ns->srv->metrics, H2_MPROTO_NBD);
}

/* A guarded listener (*guard: its guard, NULL if that failed). */
static struct evconnlistener *listen_on(struct h2_nbdsrv *ns,
					evconnlistener_cb cb,
					const struct sockaddr_storage *ss,
					int sslen, struct h2_listen_guard **guard)
{
	struct evconnlistener *l = evconnlistener_new_bind(
	    ns->srv->base, cb, ns,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
	    H2_LISTEN_BACKLOG, (const struct sockaddr *)ss, sslen);

	if (l)
		*guard = h2_listen_guard_new(l, "nbd", refused_cb, ns);
	return l;
}

/* The plaintext listener: loopback only, checked again on what is bound. */
static int start_plain(struct h2_nbdsrv *ns, char *err, size_t errlen)
{
	const struct h2_config *cfg = ns->srv->cfg;
	const char *addr = cfg->nbd_plain_listen;
	struct sockaddr_storage ss;
	int sslen = sizeof(ss), r;
	char why[512];

	if (!cfg->nbd_plain_identity || !*cfg->nbd_plain_identity) {
		snprintf(err, errlen,
			 "plaintext NBD listener %s: no nbd_plain_identity "
			 "set",
			 addr);
		return -EINVAL;
	}
	r = h2_config_loopback_addr(addr, &ss, &sslen, why, sizeof(why));
	if (r < 0) {
		snprintf(err, errlen, "plaintext NBD listener: %s", why);
		return r;
	}
	if (!h2_config_sa_loopback((struct sockaddr *)&ss)) {
		snprintf(err, errlen,
			 "plaintext NBD listener %s: not a loopback address",
			 addr);
		return -EADDRNOTAVAIL;
	}
	ns->plain_listener = listen_on(ns, accept_plain_cb, &ss, sslen,
				       &ns->plain_guard);
	if (!ns->plain_listener) {
		snprintf(err, errlen,
			 "cannot listen for plaintext NBD on %s: %s", addr,
			 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		return -EADDRINUSE;
	}
	bound_name(ns->plain_listener, ns->plain_addr, sizeof(ns->plain_addr));
	h2_log_warn("nbd",
		    "plaintext NBD (no TLS) on %s for identity=%s: any local "
		    "user can connect with that identity's rights; for "
		    "benchmarks and local tools only",
		    ns->plain_addr, cfg->nbd_plain_identity);
	return 0;
}

int h2_nbdsrv_start(struct h2_server *srv, char *err, size_t errlen)
{
	struct h2_nbdsrv *ns = calloc(1, sizeof(*ns));
	const char *addr = srv->cfg->nbd_listen;
	const char *plain = srv->cfg->nbd_plain_listen;
	struct sockaddr_storage ss;
	int sslen = sizeof(ss), r;

	if (!ns) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ns->srv = srv;
	if (addr && *addr) {
		if (h2_server_parse_listen(addr, &ss, &sslen) < 0) {
			snprintf(err, errlen,
				 "NBD listen address \"%s\" is not HOST:PORT "
				 "with a numeric host (for example "
				 "127.0.0.1:10809, or port 0 for any free "
				 "port; empty turns NBD off)",
				 addr);
			free(ns);
			return -EINVAL;
		}
		ns->listener =
		    listen_on(ns, accept_cb, &ss, sslen, &ns->guard);
		if (!ns->listener) {
			snprintf(err, errlen,
				 "cannot listen for NBD on %s: %s (another "
				 "NBD server there? choose --nbd-listen, or "
				 "--nbd-listen '' to turn NBD off)",
				 addr,
				 evutil_socket_error_to_string(
				     EVUTIL_SOCKET_ERROR()));
			free(ns);
			return -EADDRINUSE;
		}
		bound_name(ns->listener, ns->addr, sizeof(ns->addr));
	}
	if (plain && *plain) {
		r = start_plain(ns, err, errlen);
		if (r < 0) {
			if (ns->listener)
				evconnlistener_free(ns->listener);
			free(ns);
			return r;
		}
	}
	srv->nbd = ns;
	return 0;
}

const char *h2_nbdsrv_listen_addr(const struct h2_server *srv)
{
	return srv->nbd && srv->nbd->listener ? srv->nbd->addr : NULL;
}

const char *h2_nbdsrv_plain_addr(const struct h2_server *srv)
{
	return srv->nbd && srv->nbd->plain_listener ? srv->nbd->plain_addr
						     : NULL;
}

void h2_nbdsrv_stop(struct h2_server *srv)
{
	struct h2_nbdsrv *ns = srv->nbd;

	if (!ns)
		return;
	/* Unguarded first: a guard resting a listener would enable it
	 * again. */
	h2_listen_guard_free(ns->guard);
	h2_listen_guard_free(ns->plain_guard);
	ns->guard = ns->plain_guard = NULL;
	if (ns->listener)
		evconnlistener_disable(ns->listener);
	if (ns->plain_listener)
		evconnlistener_disable(ns->plain_listener);
	for (struct nbd_conn *c = ns->conns; c; c = c->next)
		if (c->open && c->bev && c->state != NC_TRANSMIT)
			bufferevent_disable(c->bev, EV_READ);
}

void h2_nbdsrv_close_all(struct h2_server *srv)
{
	struct h2_nbdsrv *ns = srv->nbd;
	struct nbd_conn *c, *next;
	bool outer;

	if (!ns)
		return;
	/* Closing one connection must not close the others under this
	 * loop (teardown would re-enter check_stopped). */
	outer = !ns->closing_all;
	ns->closing_all = true;
	for (c = ns->conns; c; c = next) {
		conn_ref(c);
		conn_close(c, NULL);
		next = c->next;
		conn_unref(c);
	}
	if (outer)
		ns->closing_all = false;
}

void h2_nbdsrv_teardown_all(struct h2_server *srv)
{
	struct h2_nbdsrv *ns = srv->nbd;
	bool outer;

	if (!ns)
		return;
	outer = !ns->closing_all;
	ns->closing_all = true;
	while (ns->conns)
		conn_teardown(ns->conns, false);
	if (outer)
		ns->closing_all = false;
}

bool h2_nbdsrv_writing(const struct h2_server *srv, const char *volume)
{
	if (!srv->nbd)
		return false;
	for (const struct nbd_conn *c = srv->nbd->conns; c; c = c->next)
		if (strcmp(c->rw_volume, volume) == 0)
			return true;
	return false;
}

unsigned h2_nbdsrv_conns(const struct h2_server *srv)
{
	return srv->nbd ? srv->nbd->nconns : 0;
}

void h2_nbdsrv_free(struct h2_server *srv)
{
	struct h2_nbdsrv *ns = srv->nbd;

	if (!ns)
		return;
	h2_listen_guard_free(ns->guard);
	h2_listen_guard_free(ns->plain_guard);
	if (ns->listener)
		evconnlistener_free(ns->listener);
	if (ns->plain_listener)
		evconnlistener_free(ns->plain_listener);
	free(ns);
	srv->nbd = NULL;
	nbd_buf_drain();
}
