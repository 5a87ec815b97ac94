/*
 * sockread.c - top up a socket bufferevent's input past libevent 2.1's
 * 4 KiB reads; see sockread.h.
 */
#include <errno.h>
#include <sys/uio.h>

#include <event2/buffer.h>

#include "sockread.h"

/* libevent 2.1's EVBUFFER_MAX_READ: a read that filled this much may
 * have left more behind. */
#define TOPUP_LIBEVENT_READ 4096
/* The most one top-up reads. */
#define TOPUP_MAX (1u << 20)

static void topup_read(struct h2_topup *t)
{
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	size_t len = evbuffer_get_length(t->in), want;
	ssize_t got;
	int n;

	if (len >= t->limit)
		return;
	want = t->limit - len;
	if (want > TOPUP_MAX)
		want = TOPUP_MAX;
	n = evbuffer_reserve_space(t->in, (ev_ssize_t)want, v, 2);
	if (n <= 0)
		return;
	for (int i = 0; i < n; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
	}
	/* The reservation may be larger than asked: read only want. */
	if (iov[0].iov_len >= want) {
		iov[0].iov_len = want;
		n = 1;
	} else if (n == 2 && iov[0].iov_len + iov[1].iov_len > want) {
		iov[1].iov_len = want - iov[0].iov_len;
	}
	do
		got = readv(t->fd, iov, n);
	while (got < 0 && errno == EINTR);
	if (got <= 0) {
		/* Nothing more, end of file or an error: libevent's next
		 * read sees the same and reports it. */
		evbuffer_commit_space(t->in, v, 0);
		return;
	}
	t->reads++;
	t->bytes += (unsigned long long)got;
	for (int i = 0; i < n; i++) {
		size_t take = (size_t)got < iov[i].iov_len ? (size_t)got
							   : iov[i].iov_len;

		v[i].iov_len = take;
		got -= (ssize_t)take;
		if (take < iov[i].iov_len) {
			n = i + 1;
			break;
		}
	}
	evbuffer_commit_space(t->in, v, n);
}

static void topup_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
		     void *arg)
{
	struct h2_topup *t = arg;

	(void)buf;
	/* Only after a read of libevent's that was cut at its maximum:
	 * a shorter one took all the socket had. */
	if (t->busy || t->fd < 0 || info->n_added < TOPUP_LIBEVENT_READ)
		return;
	t->busy = true;
	topup_read(t);
	t->busy = false;
}

int h2_topup_attach(struct h2_topup *t, struct evbuffer *in, int fd,
		    size_t limit)
{
	t->in = in;
	t->fd = fd;
	t->limit = limit;
	t->busy = false;
	t->ent = evbuffer_add_cb(in, topup_cb, t);
	return t->ent ? 0 : -ENOMEM;
}

void h2_topup_limit(struct h2_topup *t, size_t limit)
{
	t->limit = limit;
}

void h2_topup_detach(struct h2_topup *t)
{
	if (t->ent)
		evbuffer_remove_cb_entry(t->in, t->ent);
	t->ent = NULL;
	t->fd = -1;
}
