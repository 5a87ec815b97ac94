/*
 * lib_aio.c - libh2client's asynchronous interface.
 *
 * An aio request is a heap-allocated struct h2_call with a callback.  The
 * I/O thread completes it by appending it to the client's done queue and
 * making the aio eventfd readable; h2_aio_poll takes the whole queue,
 * resets the eventfd (both under c->lock, so the eventfd is readable
 * exactly while the queue is not empty), and runs the callbacks on the
 * calling thread with no lock held, so a callback may submit more.
 *
 * c->aio_pending counts calls submitted whose callback has not started:
 * it rises before a call is queued and falls just before its callback
 * runs.  When the connection fails, the I/O thread completes every call
 * in one hold of c->lock that also sets c->closed; a poller that sees
 * closed under that lock therefore holds every remaining call in the
 * queue it took.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Milliseconds on the monotonic clock. */
static uint64_t aio_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Queue call (heap, cb set); frees it if the queueing fails. */
static int aio_submit(h2_client *c, struct h2_call *call)
{
	int rc;

	atomic_fetch_add(&c->aio_pending, 1);
	rc = h2_conn_submit(c, call);
	if (rc < 0) {
		atomic_fetch_sub(&c->aio_pending, 1);
		free(call);
	}
	return rc;
}

/* An aio read or write (checked here; cut into pieces by lib_conn.c). */
static int aio_io(const char *fn, h2_volume *v, enum h2_call_kind kind,
		  void *rbuf, const void *wbuf, size_t len, uint64_t off,
		  unsigned flags, h2_aio_cb cb, void *arg)
{
	struct h2_call *call;

	if (!v || !cb || (!rbuf && !wbuf))
		return h2_ops_fail(H2_EINVAL, "%s: %s is NULL", fn,
				   !v	 ? "v"
				   : !cb ? "cb"
					 : "buf");
	if (len == 0)
		return h2_ops_fail(H2_EINVAL, "%s: length is 0", fn);
	if (len > UINT64_MAX - off)
		return h2_ops_fail(H2_ERANGE,
				   "%s: offset %llu + length %zu overflows", fn,
				   (unsigned long long)off, len);
	if (flags & ~(unsigned)(kind == H2_CALL_WRITE ? H2_FUA : 0))
		return h2_ops_fail(H2_EINVAL, "%s: unknown flags 0x%x", fn,
				   flags);
	call = calloc(1, sizeof(*call));
	if (!call)
		return h2_ops_fail(H2_ENOMEM, "out of memory");
	call->kind = kind;
	call->vol = v;
	call->off = off;
	call->len = len;
	call->rbuf = rbuf;
	call->wbuf = wbuf;
	call->fua = flags & H2_FUA;
	call->cb = cb;
	call->cb_arg = arg;
	return aio_submit(v->c, call);
}

int h2_aio_pread(h2_volume *v, void *buf, size_t len, uint64_t off,
		 h2_aio_cb cb, void *arg)
{
	return aio_io("h2_aio_pread", v, H2_CALL_READ, buf, NULL, len, off, 0,
		      cb, arg);
}

int h2_aio_pwrite(h2_volume *v, const void *buf, size_t len, uint64_t off,
		  unsigned flags, h2_aio_cb cb, void *arg)
{
	return aio_io("h2_aio_pwrite", v, H2_CALL_WRITE, NULL, buf, len, off,
		      flags, cb, arg);
}

int h2_aio_flush(h2_volume *v, h2_aio_cb cb, void *arg)
{
	struct h2_call *call;

	if (!v || !cb)
		return h2_ops_fail(H2_EINVAL, "h2_aio_flush: %s is NULL",
				   !v ? "v" : "cb");
	call = calloc(1, sizeof(*call));
	if (!call)
		return h2_ops_fail(H2_ENOMEM, "out of memory");
	h2__request__init(&call->req_store);
	h2__flush__init(&call->flush_store);
	call->vol = v; /* the I/O thread names its handle */
	call->req_store.op_case = H2__REQUEST__OP_FLUSH;
	call->req_store.flush = &call->flush_store;
	call->kind = H2_CALL_MSG;
	call->msg = &call->req_store;
	call->cb = cb;
	call->cb_arg = arg;
	return aio_submit(v->c, call);
}

int h2_aio_fd(const h2_client *c)
{
	return c ? c->aio_fd : -1;
}

unsigned h2_aio_inflight(const h2_client *c)
{
	/* atomic_load wants a non-const pointer in C11. */
	return c ? atomic_load(&((h2_client *)c)->aio_pending) : 0;
}

/* Run the callbacks of a taken list of calls and free them. */
static int aio_run(h2_client *c, struct h2_call *list)
{
	struct h2_call *call, *next;
	int n = 0;

	for (call = list; call; call = next) {
		next = call->next;
		atomic_fetch_sub(&c->aio_pending, 1);
		/* h2_last_error() inside the callback tells its story. */
		if (call->result < 0)
			h2_ops_fail(call->result, "%s", call->errmsg);
		call->cb(call->cb_arg, call->result);
		h2_frame_response_free(call->resp);
		free(call);
		n++;
	}
	return n;
}

/* Take the whole done queue; *closed: the connection has failed. */
static struct h2_call *aio_take(h2_client *c, bool *closed)
{
	struct h2_call *list;
	uint64_t v;
	ssize_t r;

	pthread_mutex_lock(&c->lock);
	list = c->done_head;
	if (list) {
		c->done_head = c->done_tail = NULL;
		/* Read the eventfd back to zero (EFD_NONBLOCK). */
		do
			r = read(c->aio_fd, &v, sizeof(v));
		while (r < 0 && errno == EINTR);
	}
	*closed = c->closed;
	pthread_mutex_unlock(&c->lock);
	return list;
}

int h2_aio_poll(h2_client *c, int timeout_ms)
{
	uint64_t deadline = 0;
	int ran = 0;

	if (!c)
		return h2_ops_fail(H2_EINVAL, "h2_aio_poll: c is NULL");
	if (timeout_ms > 0)
		deadline = aio_now_ms() + (uint64_t)timeout_ms;
	for (;;) {
		struct pollfd p = {.fd = c->aio_fd, .events = POLLIN};
		bool closed;
		int wait = -1, n;

		ran += aio_run(c, aio_take(c, &closed));
		if (closed) {
			/* Every pending call was in that queue (see the file
			 * comment); later submits are refused. */
			pthread_mutex_lock(&c->lock);
			h2_ops_fail(H2_ECLOSED, "connection to %s lost: %s",
				    c->peer, c->fail_msg);
			pthread_mutex_unlock(&c->lock);
			return H2_ECLOSED;
		}
		if (ran > 0 || timeout_ms == 0 ||
		    atomic_load(&c->aio_pending) == 0)
			return ran;
		if (timeout_ms > 0) {
			uint64_t now = aio_now_ms();

			if (now >= deadline)
				return 0;
			wait = deadline - now > INT_MAX ? INT_MAX
							: (int)(deadline - now);
		}
		n = poll(&p, 1, wait);
		if (n < 0 && errno != EINTR)
			return h2_ops_fail(H2_EINVAL, "h2_aio_poll: poll: %s",
					   strerror(errno));
	}
}

void h2_aio_drain(h2_client *c)
{
	bool closed;

	aio_run(c, aio_take(c, &closed));
}
