/*
 * The socket top-up (server/sockread.c): a bufferevent's read takes all
 * the socket holds in one loop turn instead of libevent 2.1's 4 KiB,
 * never past the limit, byte-exact, with end of file still reported.
 */
#include <criterion/criterion.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sockread.h"

#define DATA (128 * 1024)

struct rd {
	struct event_base *base;
	struct h2_topup t;
	uint8_t got[DATA];
	size_t len;
	size_t first; /* bytes the first read callback saw */
	unsigned calls;
	bool eof;
};

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct rd *r = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);

	if (r->calls++ == 0)
		r->first = n;
	cr_assert_leq(r->len + n, sizeof(r->got));
	evbuffer_remove(in, r->got + r->len, n);
	r->len += n;
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct rd *r = arg;

	(void)bev;
	if (what & BEV_EVENT_EOF)
		r->eof = true;
	event_base_loopbreak(r->base);
}

/* Queue DATA bytes of a pattern on one end of a socket pair, close it,
 * and read the other end through a bufferevent with a top-up. */
static void run(struct rd *r, size_t limit)
{
	static uint8_t pat[DATA];
	struct bufferevent *bev;
	int sv[2];

	for (size_t i = 0; i < DATA; i++)
		pat[i] = (uint8_t)(i * 131 + (i >> 12));
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	cr_assert_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
	/* All of it must be queued before the loop runs. */
	cr_assert_eq(write(sv[1], pat, DATA), DATA,
		     "the socket pair does not queue %d bytes", DATA);
	close(sv[1]);
	cr_assert_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	r->base = event_base_new();
	bev = bufferevent_socket_new(r->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	cr_assert_not_null(bev);
	bufferevent_setwatermark(bev, EV_READ, 0, limit);
	cr_assert_eq(h2_topup_attach(&r->t, bufferevent_get_input(bev), sv[0],
				     limit),
		     0);
	bufferevent_setcb(bev, read_cb, NULL, event_cb, r);
	bufferevent_enable(bev, EV_READ);
	event_base_dispatch(r->base);
	h2_topup_detach(&r->t);
	bufferevent_free(bev);
	event_base_free(r->base);
	cr_assert(r->eof, "end of file was not reported");
	cr_assert_eq(r->len, DATA);
	cr_assert_eq(memcmp(r->got, pat, DATA), 0, "the bytes differ");
}

Test(sockread, one_turn_reads_all_the_socket_holds)
{
	struct rd *r = calloc(1, sizeof(*r));

	run(r, 1 << 20);
	/* libevent alone delivers 4096 bytes per callback. */
	cr_assert_eq(r->first, DATA, "first callback saw %zu bytes", r->first);
	cr_assert_eq(r->t.reads, 1);
	cr_assert_eq(r->t.bytes, DATA - 4096);
	free(r);
}

Test(sockread, never_reads_past_the_limit)
{
	struct rd *r = calloc(1, sizeof(*r));

	run(r, 40000);
	cr_assert_eq(r->first, 40000, "first callback saw %zu bytes",
		     r->first);
	cr_assert_geq(r->calls, 4);
	free(r);
}
