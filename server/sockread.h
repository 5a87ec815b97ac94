/*
 * sockread.h - read sockets in large pieces under libevent 2.1.
 *
 * libevent 2.1's evbuffer_read() moves at most 4096 bytes per call,
 * whatever bufferevent_set_max_single_read() says (EVBUFFER_MAX_READ): a
 * 1 MiB NBD write arrived in 256 readv calls, each with a FIONREAD and an
 * epoll_wait, and those were most of the loop thread's time.  A top-up
 * watches a socket bufferevent's input buffer: whenever libevent's read
 * filled its whole 4 KiB, it reads what else the socket holds with one
 * more readv, up to a limit on the buffer's length.
 *
 * It never reads past the limit (which must be at most the bufferevent's
 * read high-water mark, so backpressure holds), and leaves end of file
 * and errors to libevent's next read, which reports them as usual.  It
 * runs only inside libevent's own reads, so a bufferevent whose reading
 * is disabled reads nothing.
 *
 * Thread-safety: the loop thread only, like the bufferevent.
 */
#ifndef H2D_SOCKREAD_H
#define H2D_SOCKREAD_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;
struct evbuffer_cb_entry;

struct h2_topup {
	struct evbuffer *in;
	struct evbuffer_cb_entry *ent;
	int fd;
	size_t limit; /* the input buffer's length never exceeds this */
	bool busy;    /* inside our own read */
	unsigned long long reads, bytes; /* top-up readv calls, bytes */
};

/* Watch in (the input of a bufferevent reading fd); 0 or -ENOMEM. */
int h2_topup_attach(struct h2_topup *t, struct evbuffer *in, int fd,
		    size_t limit);

/* Change the limit (keep it at most the read high-water mark). */
void h2_topup_limit(struct h2_topup *t, size_t limit);

/* Stop watching (before the buffer is freed); safe when not attached. */
void h2_topup_detach(struct h2_topup *t);

#endif
