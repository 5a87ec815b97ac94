/*
 * lib_conn.c - libh2client's I/O thread: the queue of calls, the table of
 * outstanding requests, writing and reading frames, and (H2_RECONNECT)
 * making the connection again and sending what was in flight again.
 *
 * The thread (h2_io_main, started by h2_connect in lib_net.c) makes the
 * connection, then runs the loop that serves every call for the life of
 * the client.  Everything that touches the socket or the SSL object runs
 * on that one thread, because an SSL object must not be used from two
 * threads at once; the thread starts with every signal blocked, so a
 * write to a reset connection cannot kill the process with SIGPIPE and
 * the application's signals go elsewhere.
 *
 * Invariants of the I/O thread:
 *   - Calls are cut into slots in submit order; only the head of the
 *     submit queue can be partly cut, and a call leaves the queue once
 *     fully cut (or failed).
 *   - At most c->max_inflight slots are in use (1 until Hello is answered).
 *   - A slot is finished (its call told, the slot freed) only when it is
 *     both fully sent and fully answered: a server may answer an error
 *     before it has read a request's payload, and that payload is still
 *     being written from the caller's buffer.
 *   - A reply's payload is accepted only where one is expected (a Read
 *     chunk answered OK, exactly the chunk's length); anything else breaks
 *     the stream's framing and fails the connection.
 *   - Once the connection fails for good, every call in the library
 *     completes with H2_ECLOSED under one hold of c->lock that also sets
 *     c->closed, so a call is either completed by that pass or refused at
 *     submit.  With H2_RECONNECT a lost connection first goes through
 *     io_drop, which frees every slot and puts their calls back at the
 *     head of the queue (or fails them), and io_reconnect; only giving up
 *     is "for good".
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

#include "internal.h"

/* H2_RECONNECT: wait this long between tries, doubling from the first
 * to the most. */
#define CONN_BACKOFF_FIRST_MS 50u
#define CONN_BACKOFF_MAX_MS   2000u
/* How long a server that answered UNAVAILABLE gets to close (at most
 * reconnect_timeout_ms). */
#define CONN_DRAIN_MAX_MS 40000u

/* Copy a string into dst[len], cut short if need be. */
static void conn_copy(char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);

	if (n >= len)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

void h2_io_msgf(struct h2_client *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->io_msg, sizeof(c->io_msg), fmt, ap);
	va_end(ap);
}

/*
 * Calls and queues.  Everything here runs with c->lock held.
 */

/* Mark call done and tell its owner. */
static void conn_complete_locked(struct h2_client *c, struct h2_call *call)
{
	call->done = true;
	call->next = NULL;
	if (call->cb) {
		/* The eventfd is non-zero exactly while the queue is not
		 * empty: h2_aio_poll drains it when it empties the queue,
		 * both under this lock. */
		if (c->done_tail)
			c->done_tail->next = call;
		else {
			c->done_head = call;
			h2_conn_efd_signal(c->aio_fd);
		}
		c->done_tail = call;
	} else {
		pthread_cond_signal(call->cond);
	}
}

/* Take call off the submit queue (it is normally the head). */
static void conn_unqueue_locked(struct h2_client *c, struct h2_call *call)
{
	struct h2_call **pp = &c->submit_head, *prev = NULL;

	while (*pp && *pp != call) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = call->next;
	if (c->submit_tail == call)
		c->submit_tail = prev;
	call->next = NULL;
}

/* Record a failure on call unless it already has one. */
static void conn_call_error_locked(struct h2_call *call, int err,
				   const char *msg)
{
	if (call->result < 0)
		return;
	call->result = err;
	conn_copy(call->errmsg, sizeof(call->errmsg), msg);
}

/* Append call to the submit queue and make sure the I/O thread looks. */
static void conn_enqueue_locked(struct h2_client *c, struct h2_call *call)
{
	call->next = NULL;
	call->carved = 0;
	call->outstanding = 0;
	call->carve_done = false;
	call->done = false;
	call->dropped = false;
	call->not_run = false;
	call->seq = c->next_call_seq++;
	call->result = 0;
	call->errmsg[0] = '\0';
	call->resp = NULL;
	if (c->submit_tail)
		c->submit_tail->next = call;
	else
		c->submit_head = call;
	c->submit_tail = call;
	/* One write per sleep of the I/O thread is enough. */
	if (!c->wake_pending) {
		c->wake_pending = true;
		h2_conn_efd_signal(c->wake_fd);
	}
}

/* Fail fast on a dead connection: the sentence, then H2_ECLOSED. */
static int conn_refuse_locked(struct h2_client *c)
{
	if (c->stopping && !c->closed)
		return h2_ops_fail(H2_ECLOSED, "the client is disconnecting");
	return h2_ops_fail(H2_ECLOSED, "connection to %s is closed: %s",
			   c->peer, c->fail_msg);
}

int h2_conn_submit(h2_client *c, struct h2_call *call)
{
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	if (c->closed || c->stopping)
		rc = conn_refuse_locked(c);
	else
		conn_enqueue_locked(c, call);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int h2_conn_call(h2_client *c, struct h2_call *call)
{
	pthread_cond_t cond;
	int rc;

	pthread_cond_init(&cond, NULL);
	call->cond = &cond;
	call->cb = NULL;
	pthread_mutex_lock(&c->lock);
	if (c->closed || c->stopping) {
		rc = conn_refuse_locked(c);
		pthread_mutex_unlock(&c->lock);
		goto out;
	}
	conn_enqueue_locked(c, call);
	while (!call->done)
		pthread_cond_wait(&cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
	rc = call->result;
	if (rc < 0)
		h2_ops_fail(rc, "%s", call->errmsg);
out:
	pthread_cond_destroy(&cond);
	return rc;
}

uint64_t h2_conn_max_payload(h2_client *c)
{
	uint64_t v;

	pthread_mutex_lock(&c->lock);
	v = c->max_payload;
	pthread_mutex_unlock(&c->lock);
	return v;
}

/*
 * Slots.  I/O thread.
 */

/* A free slot with a fresh id, or NULL. */
static struct h2_slot *io_slot_get(struct h2_client *c)
{
	struct h2_slot *s;
	unsigned idx;

	if (c->nfree == 0)
		return NULL;
	idx = c->free_idx[--c->nfree];
	s = &c->slots[idx];
	memset(s, 0, sizeof(*s));
	s->in_use = true;
	s->id = c->next_seq++ << H2_SLOT_BITS | idx;
	return s;
}

/* Return a slot to the free list. */
static void io_slot_put(struct h2_client *c, struct h2_slot *s)
{
	h2_frame_response_free(s->resp);
	s->resp = NULL;
	s->in_use = false;
	s->call = NULL;
	c->free_idx[c->nfree++] = (uint16_t)(s - c->slots);
}

/* Slots may be made now: a call waits and the server allows more. */
static bool io_can_carve_locked(const struct h2_client *c)
{
	return c->submit_head && c->nfree > 0 && !c->draining &&
	       H2_MAX_SLOTS - c->nfree < c->max_inflight;
}

/* The request's operation, for MSG calls (0 for READ/WRITE). */
static H2__Request__OpCase io_op(const struct h2_call *call)
{
	return call->kind == H2_CALL_MSG ? call->msg->op_case
					 : H2__REQUEST__OP__NOT_SET;
}

/* A Flush (of a volume, or of the store when call->vol is NULL). */
static bool io_is_flush(const struct h2_call *call)
{
	return io_op(call) == H2__REQUEST__OP_FLUSH;
}

/* Acknowledged, it is a change that only a later flush makes durable. */
static bool io_dirties(const struct h2_call *call)
{
	switch (io_op(call)) {
	case H2__REQUEST__OP__NOT_SET:
		return call->kind == H2_CALL_WRITE && !call->fua;
	case H2__REQUEST__OP_TRIM:
		return !call->msg->trim->fua;
	case H2__REQUEST__OP_WRITE_ZEROES:
		return !call->msg->write_zeroes->fua;
	case H2__REQUEST__OP_TXN:
		return !call->msg->txn->fua;
	default:
		return false;
	}
}

/*
 * May be sent again after the connection is lost, whether or not the
 * server ran it: everything but volume create, delete and resize (see
 * "H2_RECONNECT" in h2client.h; a Txn writes the same bytes again).
 */
static bool io_reissuable(const struct h2_call *call)
{
	switch (io_op(call)) {
	case H2__REQUEST__OP_VOLUME_CREATE:
	case H2__REQUEST__OP_VOLUME_DELETE:
	case H2__REQUEST__OP_VOLUME_RESIZE:
	case H2__REQUEST__OP_HELLO:
		return false;
	default:
		return true;
	}
}

/*
 * A call on a volume that has no handle on this connection finishes
 * without going to the server: the volume could not be opened again after
 * a reconnect (its error), or is being closed and was not opened again
 * (a close, then, has nothing left to do).  true if call was finished.
 */
static bool io_settle_locked(struct h2_client *c, struct h2_call *call)
{
	struct h2_volume *v = call->vol;

	if (!v || (!v->dead && v->handle != 0))
		return false;
	if (io_op(call) != H2__REQUEST__OP_VOLUME_CLOSE)
		conn_call_error_locked(call, v->dead ? v->dead_err : H2_ECLOSED,
				       v->dead ? v->dead_msg
					       : "the volume is being closed");
	conn_unqueue_locked(c, call);
	call->carve_done = true;
	if (call->outstanding == 0)
		conn_complete_locked(c, call);
	return true;
}

/* Cut queued calls into slots, in order, as far as the limits allow. */
static void io_carve_locked(struct h2_client *c)
{
	while (io_can_carve_locked(c)) {
		struct h2_call *call = c->submit_head;
		struct h2_slot *s;

		if (io_settle_locked(c, call))
			continue;
		s = io_slot_get(c);
		s->call = call;
		if (call->kind == H2_CALL_MSG) {
			/* A flush covers what was acknowledged before it
			 * was sent, so at least everything counted now. */
			s->flush_mark = c->ack_seq;
			call->carve_done = true;
		} else {
			size_t left = call->len - call->carved;

			s->coff = call->carved;
			s->clen = left < c->max_payload
				      ? left
				      : (size_t)c->max_payload;
			call->carved += s->clen;
			call->carve_done = call->carved == call->len;
		}
		call->outstanding++;
		if (call->carve_done)
			conn_unqueue_locked(c, call);
		if (c->send_tail)
			c->send_tail->snext = s;
		else
			c->send_head = s;
		c->send_tail = s;
	}
}

/* Link a volume the server just opened (see struct h2_call.open_vol). */
static void io_link_volume_locked(struct h2_client *c, struct h2_volume *v,
				  const H2__VolumeOpenResult *r)
{
	v->handle = r->handle;
	v->size = r->info ? r->info->size : 0;
	v->last_ack = v->durable = c->ack_seq;
	v->next = c->volumes;
	if (c->volumes)
		c->volumes->prev = v;
	c->volumes = v;
}

/*
 * What a successful reply means for the durability bookkeeping (struct
 * h2_volume): a write counts as acknowledged, a flush moves the durable
 * mark and reports, once per handle, writes that a lost connection may
 * have lost.  Also links a volume just opened.
 */
static void io_account_locked(struct h2_client *c, struct h2_slot *s,
			      const H2__Response *resp)
{
	struct h2_call *call = s->call;
	struct h2_volume *v = call->vol;
	char msg[H2_ERRMSG_MAX + 128];

	if (io_dirties(call)) {
		c->ack_seq++;
		if (v)
			v->last_ack = c->ack_seq;
	} else if (io_is_flush(call) && v) {
		if (s->flush_mark > v->durable)
			v->durable = s->flush_mark;
		if (v->loss_gen != v->seen_gen) {
			v->seen_gen = v->loss_gen;
			snprintf(msg, sizeof(msg),
				 "flushed, but the server restarted without a "
				 "clean shutdown since writes to '%.100s' were "
				 "acknowledged: writes not flushed before the "
				 "connection was lost may be lost",
				 v->name);
			conn_call_error_locked(call, H2_EUNSYNCED, msg);
		}
	} else if (io_is_flush(call)) {
		if (s->flush_mark > c->all_durable)
			c->all_durable = s->flush_mark;
		if (c->loss_gen != c->sync_seen_gen) {
			c->sync_seen_gen = c->loss_gen;
			conn_call_error_locked(
			    call, H2_EUNSYNCED,
			    "synced, but the server restarted without a clean "
			    "shutdown since it acknowledged writes: writes not "
			    "flushed before the connection was lost may be "
			    "lost");
		}
	} else if (call->open_vol && resp &&
		   resp->result_case == H2__RESPONSE__RESULT_VOLUME_OPEN) {
		io_link_volume_locked(c, call->open_vol, resp->volume_open);
	}
}

/*
 * A slot is sent and answered: give its result to the call, complete the
 * call if it was the last, free the slot.
 */
static void io_finish(struct h2_client *c, struct h2_slot *s)
{
	struct h2_call *call = s->call;
	H2__Response *resp = s->resp;

	s->resp = NULL;
	pthread_mutex_lock(&c->lock);
	if (s->result == 0)
		io_account_locked(c, s, resp);
	if (s->result < 0) {
		const char *msg = s->lmsg;

		if (!msg)
			msg = resp && resp->message && resp->message[0]
				  ? resp->message
				  : h2_strerror(s->result);
		conn_call_error_locked(call, s->result, msg);
	} else if (call->kind == H2_CALL_MSG && !call->cb) {
		call->resp = resp; /* the caller reads the result fields */
		resp = NULL;
	}
	/* A failed call stops being cut into more requests. */
	if (call->result < 0 && !call->carve_done) {
		conn_unqueue_locked(c, call);
		call->carve_done = true;
	}
	call->outstanding--;
	if (call->carve_done && call->outstanding == 0)
		conn_complete_locked(c, call);
	pthread_mutex_unlock(&c->lock);
	h2_frame_response_free(resp);
	io_slot_put(c, s);
}

/* The slot's last byte has been written. */
static void io_sent(struct h2_client *c, struct h2_slot *s)
{
	s->sent = true;
	if (s->replied)
		io_finish(c, s);
}

/* The slot's reply (with its payload) has been read. */
static void io_replied(struct h2_client *c, struct h2_slot *s)
{
	s->replied = true;
	if (s->sent)
		io_finish(c, s);
}

/*
 * The connection is gone (err says why, c->io_msg how): complete every
 * call with H2_ECLOSED and refuse new ones.
 */
static void io_fail_all(struct h2_client *c, int err)
{
	char msg[H2_ERRMSG_MAX + 64];
	struct h2_call *call;
	unsigned i;

	pthread_mutex_lock(&c->lock);
	c->closed = true;
	c->fail_err = err;
	conn_copy(c->fail_msg, sizeof(c->fail_msg), c->io_msg);
	snprintf(msg, sizeof(msg), "connection to %s lost: %s", c->peer,
		 c->io_msg);
	for (i = 0; i < H2_MAX_SLOTS; i++) {
		struct h2_slot *s = &c->slots[i];

		if (!s->in_use)
			continue;
		call = s->call;
		conn_call_error_locked(call, H2_ECLOSED, msg);
		call->outstanding--;
		if (call->carve_done && call->outstanding == 0)
			conn_complete_locked(c, call);
		io_slot_put(c, s);
	}
	while ((call = c->submit_head)) {
		conn_unqueue_locked(c, call);
		call->carve_done = true;
		conn_call_error_locked(call, H2_ECLOSED, msg);
		if (call->outstanding == 0)
			conn_complete_locked(c, call);
	}
	pthread_mutex_unlock(&c->lock);
	c->send_head = c->send_tail = NULL;
	c->tx_done = NULL;
	c->tx_len = c->tx_pos = 0;
	c->rx_slot = NULL;
}

/*
 * TLS and socket errors.  I/O thread.
 */

/*
 * A TLS read or write returned failure: 0 if it only has to wait (POLLOUT
 * noted in c->io_pollout), else an error with c->io_msg set.
 */
static int io_ssl_error(struct h2_client *c, int saved_errno)
{
	int e = SSL_get_error(c->ssl, 0);
	unsigned long ec;
	char why[200];

	switch (e) {
	case SSL_ERROR_WANT_READ:
		return 0;
	case SSL_ERROR_WANT_WRITE:
		c->io_pollout = true;
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		/* close_notify: what h2d promises with it is in h2.proto. */
		c->peer_clean = true;
		h2_io_msgf(c, "the server closed the connection");
		return H2_ECLOSED;
	case SSL_ERROR_SSL:
		ec = ERR_peek_error();
		if (ERR_GET_LIB(ec) == ERR_LIB_SSL &&
		    ERR_GET_REASON(ec) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
			ERR_clear_error();
			h2_io_msgf(c, "the server closed the connection");
			return H2_ECLOSED;
		}
		h2_net_tls_reason(c, e, saved_errno, why, sizeof(why));
		h2_io_msgf(c, "TLS error: %s", why);
		return H2_ETLS;
	default:
		h2_net_tls_reason(c, e, saved_errno, why, sizeof(why));
		h2_io_msgf(c, "%s", why);
		return H2_ECLOSED;
	}
}

/*
 * Writing.  I/O thread.
 */

/* Copies of the messages that name a volume, with its current handle. */
union io_op_copy {
	H2__Trim trim;
	H2__WriteZeroes write_zeroes;
	H2__Txn txn;
	H2__Flush flush;
	H2__BlockStatus block_status;
	H2__VolumeClose volume_close;
};

/* Point r's operation at a copy naming handle (r is a shallow copy). */
static void io_set_handle(H2__Request *r, uint64_t handle, union io_op_copy *u)
{
	switch (r->op_case) {
	case H2__REQUEST__OP_TRIM:
		u->trim = *r->trim;
		u->trim.handle = handle;
		r->trim = &u->trim;
		break;
	case H2__REQUEST__OP_WRITE_ZEROES:
		u->write_zeroes = *r->write_zeroes;
		u->write_zeroes.handle = handle;
		r->write_zeroes = &u->write_zeroes;
		break;
	case H2__REQUEST__OP_TXN:
		u->txn = *r->txn;
		u->txn.handle = handle;
		r->txn = &u->txn;
		break;
	case H2__REQUEST__OP_FLUSH:
		u->flush = *r->flush;
		u->flush.handle = handle;
		r->flush = &u->flush;
		break;
	case H2__REQUEST__OP_BLOCK_STATUS:
		u->block_status = *r->block_status;
		u->block_status.handle = handle;
		r->block_status = &u->block_status;
		break;
	case H2__REQUEST__OP_VOLUME_CLOSE:
		u->volume_close = *r->volume_close;
		u->volume_close.handle = handle;
		r->volume_close = &u->volume_close;
		break;
	default:
		break;
	}
}

/* Pack s's frame header at out: bytes, -ENOBUFS, or -EMSGSIZE. */
static int io_pack(const struct h2_slot *s, uint8_t *out, size_t cap)
{
	const struct h2_call *call = s->call;
	H2__Request r = H2__REQUEST__INIT;
	H2__Read rd = H2__READ__INIT;
	H2__Write wr = H2__WRITE__INIT;
	union io_op_copy u;

	switch (call->kind) {
	case H2_CALL_MSG:
		r = *call->msg; /* shallow: only id and payload_len change */
		r.payload_len = call->payload_len;
		/* ... and the handle, which belongs to this connection. */
		if (call->vol)
			io_set_handle(&r, call->vol->handle, &u);
		break;
	case H2_CALL_READ:
		rd.handle = call->vol->handle;
		rd.offset = call->off + s->coff;
		rd.length = s->clen;
		r.op_case = H2__REQUEST__OP_READ;
		r.read = &rd;
		break;
	case H2_CALL_WRITE:
		wr.handle = call->vol->handle;
		wr.offset = call->off + s->coff;
		wr.fua = call->fua;
		r.op_case = H2__REQUEST__OP_WRITE;
		r.write = &wr;
		r.payload_len = s->clen;
		break;
	}
	r.id = s->id;
	return h2_frame_pack_request(&r, out, cap);
}

/* The payload s sends after its header. */
static const uint8_t *io_payload(const struct h2_slot *s, size_t *len)
{
	const struct h2_call *call = s->call;

	switch (call->kind) {
	case H2_CALL_MSG:
		*len = call->payload_len;
		return call->payload;
	case H2_CALL_WRITE:
		*len = s->clen;
		return (const uint8_t *)call->wbuf + s->coff;
	case H2_CALL_READ:
		break;
	}
	*len = 0;
	return NULL;
}

/* Pop the head of the send queue. */
static void io_send_pop(struct h2_client *c)
{
	struct h2_slot *s = c->send_head;

	c->send_head = s->snext;
	if (!c->send_head)
		c->send_tail = NULL;
	s->snext = NULL;
}

/*
 * Choose the next piece to write, once the last one is done: either the
 * staging buffer, filled with the headers and small payloads of as many
 * slots as fit, or one big payload straight from the caller's buffer.
 */
static void io_fill(struct h2_client *c)
{
	struct h2_slot *s, **done_tail = &c->tx_done;
	size_t len = 0;

	c->tx_done = NULL;
	c->tx_ptr = c->stage;
	while ((s = c->send_head)) {
		const uint8_t *p;
		size_t plen;

		if (!s->hdr_staged) {
			int n = io_pack(s, c->stage + len, H2_STAGE_CAP - len);

			if (n == -ENOBUFS && len > 0)
				break;
			if (n < 0) {
				/* Checked at submit, so never expected: fail
				 * the request without sending it. */
				io_send_pop(c);
				s->result = H2_ETOOBIG;
				s->lmsg = "request header too large to send";
				s->replied = true;
				io_sent(c, s);
				continue;
			}
			len += (size_t)n;
			s->hdr_staged = true;
		}
		p = io_payload(s, &plen);
		plen -= s->psent;
		if (plen > 0 && plen <= H2_SMALL_PAYLOAD &&
		    plen <= H2_STAGE_CAP - len) {
			memcpy(c->stage + len, p + s->psent, plen);
			len += plen;
			s->psent += plen;
		} else if (plen > 0) {
			if (len > 0)
				break; /* the headers go first */
			io_send_pop(c);
			c->tx_ptr = p + s->psent;
			c->tx_len = plen;
			c->tx_pos = 0;
			s->psent += plen;
			c->tx_done = s;
			return;
		}
		io_send_pop(c);
		*done_tail = s;
		done_tail = &s->snext;
	}
	c->tx_len = len;
	c->tx_pos = 0;
}

/* Write until there is nothing left or the connection would block. */
static int io_write(struct h2_client *c)
{
	for (;;) {
		struct h2_slot *s, *next;
		size_t n;

		if (c->tx_pos == c->tx_len) {
			io_fill(c);
			if (c->tx_len == 0)
				return 0;
		}
		ERR_clear_error();
		if (!SSL_write_ex(c->ssl, c->tx_ptr + c->tx_pos,
				  c->tx_len - c->tx_pos, &n))
			return io_ssl_error(c, errno);
		c->tx_pos += n;
		if (c->tx_pos < c->tx_len)
			continue;
		c->tx_pos = c->tx_len = 0;
		for (s = c->tx_done, c->tx_done = NULL; s; s = next) {
			next = s->snext;
			s->snext = NULL;
			io_sent(c, s);
		}
	}
}

/*
 * Reading.  I/O thread.
 */

/* Read up to len bytes: the count, 0 to wait, or an error. */
static ssize_t io_ssl_read(struct h2_client *c, void *buf, size_t len)
{
	size_t n;

	ERR_clear_error();
	if (SSL_read_ex(c->ssl, buf, len, &n))
		return (ssize_t)n;
	return io_ssl_error(c, errno);
}

/* Remember the limits the server announced in its HelloResult. */
static void io_apply_hello(struct h2_client *c, const H2__HelloResult *hr)
{
	unsigned inflight =
	    hr->max_inflight ? hr->max_inflight : H2_DEFAULT_INFLIGHT;

	if (inflight > H2_MAX_SLOTS)
		inflight = H2_MAX_SLOTS;
	pthread_mutex_lock(&c->lock);
	c->max_inflight = inflight;
	if (hr->max_payload)
		c->max_payload = hr->max_payload;
	pthread_mutex_unlock(&c->lock);
	c->instance = hr->instance;
}

/* Losing the connection now would be followed by a reconnect. */
static bool io_reconnects(const struct h2_client *c)
{
	return c->reconnect && c->hello_done;
}

/* A reply header arrived: match it to its slot. */
static int io_on_response(struct h2_client *c, H2__Response *resp,
			  const struct h2_frame_info *info)
{
	struct h2_slot *s = &c->slots[resp->id & (H2_MAX_SLOTS - 1)];
	uint64_t expect = 0;

	if (!s->in_use || s->id != resp->id || s->replied || !s->hdr_staged) {
		h2_io_msgf(c,
			   "protocol error: reply to unknown request id %llu",
			   (unsigned long long)resp->id);
		goto fail;
	}
	if (resp->status == H2__STATUS__OK && s->call->kind == H2_CALL_READ)
		expect = s->clen;
	if (info->payload_len != expect) {
		h2_io_msgf(c,
			   "protocol error: reply to request %llu carries %llu "
			   "payload bytes, expected %llu",
			   (unsigned long long)resp->id,
			   (unsigned long long)info->payload_len,
			   (unsigned long long)expect);
		goto fail;
	}
	if (resp->status == H2__STATUS__UNAVAILABLE && io_reconnects(c) &&
	    !s->call->is_hello) {
		/* The server is stopping and did not run it: keep the slot
		 * for the next connection, and send nothing more on this
		 * one, which the server closes once its work is done. */
		s->not_run = true;
		if (!c->draining)
			c->drain_deadline_ms =
			    h2_conn_now_ms() +
			    (c->reconnect_ms < CONN_DRAIN_MAX_MS
				 ? c->reconnect_ms
				 : CONN_DRAIN_MAX_MS);
		c->draining = true;
		h2_frame_response_free(resp);
		return 0;
	}
	s->result = h2_ops_status_err(resp->status);
	s->resp = resp;
	if (s->call->is_hello && s->result == 0) {
		if (resp->result_case == H2__RESPONSE__RESULT_HELLO)
			io_apply_hello(c, resp->hello);
		c->hello_done = true;
	}
	if (expect) {
		c->rx_slot = s;
		c->rx_dst = (uint8_t *)s->call->rbuf + s->coff;
		c->rx_left = expect;
		return 0;
	}
	io_replied(c, s);
	return 0;
fail:
	h2_frame_response_free(resp);
	return H2_EPROTO;
}

/* Read replies until the connection would block. */
static int io_read(struct h2_client *c)
{
	for (;;) {
		struct h2_frame_info info;
		H2__Response *resp;
		size_t used;
		ssize_t r;
		int rc;

		if (c->rx_slot) {
			/* A Read's data: what already sits in the buffer,
			 * then straight into the caller's buffer. */
			size_t n = c->rx_len - c->rx_pos;

			if (n > 0) {
				if (n > c->rx_left)
					n = c->rx_left;
				memcpy(c->rx_dst, c->rx + c->rx_pos, n);
				c->rx_pos += n;
			} else {
				r = io_ssl_read(c, c->rx_dst, c->rx_left);
				if (r <= 0)
					return (int)r;
				n = (size_t)r;
			}
			c->rx_dst += n;
			c->rx_left -= n;
			if (c->rx_left == 0) {
				struct h2_slot *s = c->rx_slot;

				c->rx_slot = NULL;
				io_replied(c, s);
			}
			continue;
		}
		if (c->rx_pos == c->rx_len) {
			r = io_ssl_read(c, c->rx, H2_RX_CAP);
			if (r <= 0)
				return (int)r;
			c->rx_pos = 0;
			c->rx_len = (size_t)r;
		}
		rc = h2_frame_decoder_feed_response(c->dec, c->rx + c->rx_pos,
						    c->rx_len - c->rx_pos,
						    &used, &info, &resp);
		c->rx_pos += used;
		if (rc == H2_FRAME_NEED_MORE)
			continue;
		if (rc < 0) {
			h2_io_msgf(c,
				   "protocol error: bad frame from the server "
				   "(%s)",
				   strerror(-rc));
			return H2_EPROTO;
		}
		rc = io_on_response(c, resp, &info);
		if (rc < 0)
			return rc;
	}
}

/*
 * The loop: cut calls into requests, write, read, sleep until the socket
 * or a submit wakes us.  Returns why it ended (c->io_msg says how).
 */
static int io_loop(struct h2_client *c)
{
	for (;;) {
		struct pollfd p[2];
		char wmsg[H2_ERRMSG_MAX];
		int werr, rerr, n, timeout = -1;
		bool more;

		pthread_mutex_lock(&c->lock);
		if (c->stopping) {
			pthread_mutex_unlock(&c->lock);
			/* A polite close_notify, if nothing is half sent;
			 * no waiting for the server's. */
			if (c->tx_pos == c->tx_len) {
				ERR_clear_error();
				SSL_shutdown(c->ssl);
			}
			h2_io_msgf(c, "the client disconnected");
			return H2_ECLOSED;
		}
		io_carve_locked(c);
		pthread_mutex_unlock(&c->lock);

		c->io_pollout = false;
		werr = io_write(c);
		if (werr < 0)
			memcpy(wmsg, c->io_msg, sizeof(wmsg));
		/* Read even after a failed write: the server may have sent
		 * an alert or a reply explaining why it closed, and that is
		 * the better story. */
		rerr = io_read(c);
		if (rerr < 0)
			return rerr;
		if (werr < 0) {
			memcpy(c->io_msg, wmsg, sizeof(wmsg));
			return werr;
		}

		pthread_mutex_lock(&c->lock);
		more = io_can_carve_locked(c);
		pthread_mutex_unlock(&c->lock);
		if (more)
			continue;

		if (!c->hello_done) {
			uint64_t now = h2_conn_now_ms();

			if (now >= c->deadline_ms) {
				h2_io_msgf(c,
					   "no reply to Hello from %s within "
					   "%u ms",
					   c->peer, c->timeout_ms);
				return H2_ETIMEDOUT;
			}
			timeout = c->deadline_ms - now > INT_MAX
				      ? INT_MAX
				      : (int)(c->deadline_ms - now);
		} else if (c->draining) {
			/* A server that said it is stopping closes once its
			 * work is done (h2d gives up on slow clients after
			 * 30 s); one that does not is given up on. */
			uint64_t now = h2_conn_now_ms();

			if (now >= c->drain_deadline_ms) {
				h2_io_msgf(c,
					   "%s said it was shutting down but "
					   "did not close",
					   c->peer);
				return H2_ECLOSED;
			}
			timeout = (int)(c->drain_deadline_ms - now);
		}
		p[0] = (struct pollfd){.fd = c->fd,
				       .events = POLLIN |
						 (c->io_pollout ? POLLOUT : 0)};
		p[1] = (struct pollfd){.fd = c->wake_fd, .events = POLLIN};
		n = poll(p, 2, timeout);
		if (n < 0 && errno != EINTR) {
			h2_io_msgf(c, "poll: %s", strerror(errno));
			return H2_ECLOSED;
		}
		if (n > 0 && p[1].revents) {
			pthread_mutex_lock(&c->lock);
			h2_conn_efd_drain(c->wake_fd);
			c->wake_pending = false;
			pthread_mutex_unlock(&c->lock);
		}
	}
}

/*
 * Reconnecting (H2_RECONNECT).  I/O thread.
 */

/* Close the socket and the TLS session (none may be in use). */
static void io_close_transport(struct h2_client *c)
{
	SSL_free(c->ssl);
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	ERR_clear_error();
}

/* h2_disconnect has asked the I/O thread to stop. */
static bool io_stopping(struct h2_client *c)
{
	bool stop;

	pthread_mutex_lock(&c->lock);
	stop = c->stopping;
	pthread_mutex_unlock(&c->lock);
	return stop;
}

/* Insert call into the list *head, kept in submit order. */
static void io_insert_by_seq(struct h2_call **head, struct h2_call *call)
{
	while (*head && (*head)->seq < call->seq)
		head = &(*head)->next;
	call->next = *head;
	*head = call;
}

/*
 * The connection is lost and another will be made: close it and put every
 * call that had requests on it back at the head of the submit queue, in
 * submit order, to be cut and sent again from the start.  A call that
 * must not run twice fails with H2_ECONNLOST instead, unless the server
 * proved it did not run it (it said UNAVAILABLE, or closed with
 * close_notify, or nothing of the request was sent).  Notes which volumes
 * had writes not known durable, for io_resume to judge.
 */
static void io_drop(struct h2_client *c)
{
	struct h2_call *lost[H2_MAX_SLOTS], *again = NULL, *call, *last;
	char msg[H2_ERRMSG_MAX + 128];
	bool clean = c->peer_clean;
	size_t n = 0, i;

	io_close_transport(c);
	c->send_head = c->send_tail = NULL;
	c->tx_done = NULL;
	c->tx_len = c->tx_pos = 0;
	c->rx_slot = NULL;
	c->rx_pos = c->rx_len = 0;
	snprintf(msg, sizeof(msg),
		 "connection to %s lost (%s) with the request in flight; it "
		 "may or may not have been applied",
		 c->peer, c->io_msg);
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < H2_MAX_SLOTS; i++) {
		struct h2_slot *s = &c->slots[i];

		if (!s->in_use)
			continue;
		call = s->call;
		if (s->not_run || !s->hdr_staged)
			call->not_run = true;
		if (!call->dropped) {
			call->dropped = true;
			lost[n++] = call;
		}
		call->outstanding--;
		io_slot_put(c, s);
	}
	for (i = 0; i < n; i++) {
		call = lost[i];
		call->dropped = false;
		if (call->result < 0 ||
		    !(clean || call->not_run || io_reissuable(call))) {
			conn_call_error_locked(call, H2_ECONNLOST, msg);
			conn_unqueue_locked(c, call);
			call->carve_done = true;
			conn_complete_locked(c, call);
			continue;
		}
		call->not_run = false;
		call->carved = 0;
		if (!call->carve_done)
			continue; /* the queue's head: cut again from 0 */
		call->carve_done = false;
		io_insert_by_seq(&again, call);
	}
	if (again) {
		for (last = again; last->next; last = last->next)
			;
		last->next = c->submit_head;
		if (!c->submit_head)
			c->submit_tail = last;
		c->submit_head = again;
	}
	for (struct h2_volume *v = c->volumes; v; v = v->next) {
		uint64_t durable =
		    v->durable > c->all_durable ? v->durable : c->all_durable;

		if (!clean && v->last_ack > durable)
			v->maybe_lost = true;
	}
	if (clean)
		c->all_durable = c->ack_seq;
	pthread_mutex_unlock(&c->lock);
	c->dropped_clean = clean;
	c->prev_instance = c->instance;
	c->draining = false;
	c->peer_clean = false;
}

/*
 * Send one request on the fresh connection and wait for its reply (no
 * slot is in use, so the reply is the next frame): 0 with *out (caller
 * frees with h2_frame_response_free), or an error with c->io_msg set.
 */
static int io_exchange(struct h2_client *c, H2__Request *rq, H2__Response **out)
{
	struct h2_frame_info info;
	size_t pos = 0, used, w;
	int n, rc;

	rq->id = c->next_seq++ << H2_SLOT_BITS;
	n = h2_frame_pack_request(rq, c->stage, H2_STAGE_CAP);
	if (n < 0) {
		h2_io_msgf(c, "cannot encode a request: %s", strerror(-n));
		return H2_EPROTO;
	}
	for (;;) {
		ssize_t r;

		if (pos < (size_t)n) {
			ERR_clear_error();
			if (SSL_write_ex(c->ssl, c->stage + pos,
					 (size_t)n - pos, &w)) {
				pos += w;
				continue;
			}
			rc = io_ssl_error(c, errno);
		} else if (c->rx_pos < c->rx_len) {
			rc = h2_frame_decoder_feed_response(
			    c->dec, c->rx + c->rx_pos, c->rx_len - c->rx_pos,
			    &used, &info, out);
			c->rx_pos += used;
			if (rc == H2_FRAME_NEED_MORE)
				continue;
			if (rc < 0) {
				h2_io_msgf(c,
					   "protocol error: bad frame from the "
					   "server (%s)",
					   strerror(-rc));
				return H2_EPROTO;
			}
			if ((*out)->id != rq->id || info.payload_len != 0) {
				h2_io_msgf(c,
					   "protocol error: unexpected reply "
					   "while reconnecting");
				h2_frame_response_free(*out);
				*out = NULL;
				return H2_EPROTO;
			}
			return 0;
		} else {
			r = io_ssl_read(c, c->rx, H2_RX_CAP);
			if (r > 0) {
				c->rx_pos = 0;
				c->rx_len = (size_t)r;
				continue;
			}
			rc = (int)r;
		}
		if (rc < 0)
			return rc;
		rc = h2_net_wait(c, c->io_pollout || pos < (size_t)n ? POLLOUT
								     : POLLIN);
		c->io_pollout = false;
		if (rc == H2_ETIMEDOUT)
			h2_io_msgf(c, "no reply from %s within %u ms", c->peer,
				   c->timeout_ms);
		if (rc < 0)
			return rc;
	}
}

/* Hello again on the fresh connection. */
static int io_resume_hello(struct h2_client *c)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__Hello hello = H2__HELLO__INIT;
	H2__Response *resp = NULL;
	int rc;

	hello.version = H2_PROTO_VERSION;
	hello.client_name = c->client_name;
	rq.op_case = H2__REQUEST__OP_HELLO;
	rq.hello = &hello;
	rc = io_exchange(c, &rq, &resp);
	if (rc < 0)
		return rc;
	if (resp->status != H2__STATUS__OK) {
		rc = h2_ops_status_err(resp->status);
		h2_io_msgf(c, "%s refused Hello: %s", c->peer,
			   resp->message && resp->message[0] ? resp->message
							     : h2_strerror(rc));
	} else if (resp->result_case != H2__RESPONSE__RESULT_HELLO ||
		   resp->hello->version != H2_PROTO_VERSION) {
		rc = H2_EPROTO;
		h2_io_msgf(c,
			   "%s answered Hello without a HelloResult of "
			   "protocol version %u",
			   c->peer, H2_PROTO_VERSION);
	} else {
		io_apply_hello(c, resp->hello);
	}
	h2_frame_response_free(resp);
	return rc;
}

/*
 * Open v again on the fresh connection: 0 (v->handle is new, or v is
 * marked dead with the server's refusal), or a connection error.
 */
static int io_resume_volume(struct h2_client *c, struct h2_volume *v)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__VolumeOpen m = H2__VOLUME_OPEN__INIT;
	H2__Response *resp = NULL;
	int rc;

	m.name = v->name;
	m.write = v->writable;
	rq.op_case = H2__REQUEST__OP_VOLUME_OPEN;
	rq.volume_open = &m;
	rc = io_exchange(c, &rq, &resp);
	if (rc < 0)
		return rc;
	if (resp->status == H2__STATUS__UNAVAILABLE) {
		/* Stopping again already: try the next server. */
		h2_io_msgf(c, "%s is shutting down", c->peer);
		rc = H2_EUNAVAILABLE;
	} else if (resp->status != H2__STATUS__OK ||
		   resp->result_case != H2__RESPONSE__RESULT_VOLUME_OPEN) {
		int err = resp->status != H2__STATUS__OK
			      ? h2_ops_status_err(resp->status)
			      : H2_EPROTO;

		v->dead = true;
		v->dead_err = err;
		snprintf(v->dead_msg, sizeof(v->dead_msg),
			 "volume '%.160s' could not be opened again after "
			 "reconnecting to %s: %s",
			 v->name, c->peer,
			 resp->message && resp->message[0] ? resp->message
							   : h2_strerror(err));
	} else {
		v->handle = resp->volume_open->handle;
	}
	h2_frame_response_free(resp);
	return rc;
}

/*
 * The fresh connection is up: Hello, open every volume again, and settle
 * the durability bookkeeping of the loss.  Writes not known durable were
 * lost only if the old connection ended without close_notify and this is
 * another server process (a new instance, or one that does not say).
 */
static int io_resume(struct h2_client *c)
{
	struct h2_volume **vols = NULL, *v;
	size_t n = 0, i;
	bool lost, any = false;
	int rc;

	rc = io_resume_hello(c);
	if (rc < 0)
		return rc;
	/* The volumes cannot go away meanwhile: h2_volume_close frees one
	 * only when its close call completes, which is this thread's job,
	 * and h2_disconnect joins this thread before freeing any. */
	pthread_mutex_lock(&c->lock);
	for (v = c->volumes; v; v = v->next)
		n++;
	vols = n ? calloc(n, sizeof(*vols)) : NULL;
	if (n && !vols) {
		pthread_mutex_unlock(&c->lock);
		h2_io_msgf(c, "out of memory");
		return H2_ENOMEM;
	}
	n = 0;
	for (v = c->volumes; v; v = v->next) {
		v->handle = 0;
		if (!v->closing && !v->dead)
			vols[n++] = v;
	}
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < n && rc == 0; i++)
		rc = io_resume_volume(c, vols[i]);
	free(vols);
	if (rc < 0)
		return rc;

	lost = !c->dropped_clean &&
	       (c->instance == 0 || c->instance != c->prev_instance);
	pthread_mutex_lock(&c->lock);
	for (v = c->volumes; v; v = v->next) {
		if (v->maybe_lost && lost) {
			v->loss_gen++;
			any = true;
		}
		v->maybe_lost = false;
	}
	if (any)
		c->loss_gen++;
	if (lost)
		c->all_durable = c->ack_seq; /* counted: nothing is owed */
	pthread_mutex_unlock(&c->lock);
	c->reconnects++;
	return 0;
}

/* Wait ms milliseconds, or less if h2_disconnect asks us to stop. */
static int io_sleep(struct h2_client *c, uint64_t ms)
{
	uint64_t end = h2_conn_now_ms() + ms, now;

	while ((now = h2_conn_now_ms()) < end) {
		struct pollfd p = {.fd = c->wake_fd, .events = POLLIN};
		uint64_t left = end - now;

		if (poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left) > 0) {
			pthread_mutex_lock(&c->lock);
			h2_conn_efd_drain(c->wake_fd);
			c->wake_pending = false;
			pthread_mutex_unlock(&c->lock);
		}
		if (io_stopping(c)) {
			h2_io_msgf(c, "the client disconnected");
			return H2_ECLOSED;
		}
	}
	return 0;
}

/*
 * Connect again, with backoff, until it works or reconnect_ms have passed
 * since the loss: 0, or the error to fail every call with (c->io_msg).
 */
static int io_reconnect(struct h2_client *c)
{
	uint64_t deadline = h2_conn_now_ms() + c->reconnect_ms, now;
	char last[H2_ERRMSG_MAX];
	int rc;

	h2_frame_decoder_free(c->dec);
	c->dec = h2_frame_decoder_new(&(struct h2_frame_limits){
	    .max_header = H2_FRAME_MAX_HEADER, .max_payload = UINT64_MAX});
	if (!c->dec) {
		h2_io_msgf(c, "out of memory");
		return H2_ENOMEM;
	}
	/* A connection that failed soon after it was made does not earn
	 * an immediate retry: keep backing off from where we were. */
	if (h2_conn_now_ms() - c->connected_ms >= CONN_BACKOFF_MAX_MS)
		c->backoff_ms = 0;
	for (;;) {
		if (c->backoff_ms) {
			now = h2_conn_now_ms();
			rc = io_sleep(c, now >= deadline ? 0
					 : deadline - now < c->backoff_ms
					     ? deadline - now
					     : c->backoff_ms);
			if (rc < 0)
				return rc;
		}
		c->backoff_ms =
		    c->backoff_ms ? c->backoff_ms * 2 : CONN_BACKOFF_FIRST_MS;
		if (c->backoff_ms > CONN_BACKOFF_MAX_MS)
			c->backoff_ms = CONN_BACKOFF_MAX_MS;
		now = h2_conn_now_ms();
		c->deadline_ms = now + c->timeout_ms < deadline
				     ? now + c->timeout_ms
				     : deadline;
		rc = h2_net_tcp(c);
		if (rc == 0)
			rc = h2_net_tls(c);
		if (rc == 0)
			rc = io_resume(c);
		if (rc == 0) {
			c->connected_ms = h2_conn_now_ms();
			return 0;
		}
		io_close_transport(c);
		c->rx_pos = c->rx_len = 0;
		if (io_stopping(c)) {
			h2_io_msgf(c, "the client disconnected");
			return H2_ECLOSED;
		}
		if (rc == H2_ENOMEM)
			return rc;
		if (h2_conn_now_ms() >= deadline) {
			conn_copy(last, sizeof(last), c->io_msg);
			h2_io_msgf(c, "no new connection within %u ms (%s)",
				   c->reconnect_ms, last);
			return H2_ECLOSED;
		}
		/* A fresh decoder for the next attempt, too. */
		h2_frame_decoder_free(c->dec);
		c->dec = h2_frame_decoder_new(
		    &(struct h2_frame_limits){.max_header = H2_FRAME_MAX_HEADER,
					      .max_payload = UINT64_MAX});
		if (!c->dec) {
			h2_io_msgf(c, "out of memory");
			return H2_ENOMEM;
		}
	}
}

/* After this failure, H2_RECONNECT makes another connection. */
static bool io_may_reconnect(struct h2_client *c, int err)
{
	/* A protocol violation or a local shortage would only repeat. */
	return io_reconnects(c) && err != H2_EPROTO && err != H2_ENOMEM &&
	       !io_stopping(c);
}

void *h2_io_main(void *arg)
{
	struct h2_client *c = arg;
	int rc;

	rc = h2_net_tcp(c);
	if (rc == 0)
		rc = h2_net_tls(c);
	c->connected_ms = h2_conn_now_ms();
	if (rc == 0)
		rc = io_loop(c);
	while (rc < 0 && io_may_reconnect(c, rc)) {
		io_drop(c);
		rc = io_reconnect(c);
		if (rc < 0)
			break; /* gave up: c->io_msg says why */
		rc = io_loop(c);
	}
	io_fail_all(c, rc);
	/* The thread owns the connection: close it now rather than when
	 * the application gets round to h2_disconnect. */
	io_close_transport(c);
	return NULL;
}
