/*
 * listen_guard.c - keep listeners from spinning when accept() fails (see
 * listen_guard.h).
 *
 * On a shortage (EMFILE, ENFILE, ENOBUFS, ENOMEM) a guarded listener:
 *   1. refuses what waits in its backlog: it closes a descriptor kept in
 *      reserve (/dev/null), accepts one connection into the slot, closes
 *      it at once and takes the reserve back, up to GUARD_DRAIN_MAX
 *      times.  The client sees its connection closed instead of hanging
 *      until its own timeout, and the backlog no longer holds the socket
 *      readable;
 *   2. rests for GUARD_PAUSE_MS (disabled, then enabled by a timer), so
 *      that connections arriving meanwhile wait in the backlog instead of
 *      waking the loop for nothing;
 *   3. logs at most once per GUARD_LOG_SEC, with what it refused since.
 * Errors that concern only the connection that failed (a network error
 * Linux reports through accept(), see accept(2)) leave the listener as
 * it is: that connection is gone and nothing spins.  Any other error
 * rests the listener too, so that no error can make the loop spin.
 *
 * libevent calls the error callback with the listener and its user data,
 * which for the metrics listener is evhttp's: guards are found by
 * listener in a list of their own.  The list and the reserve descriptor
 * are process-wide, as descriptors are; the loop thread alone uses them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "listen_guard.h"
#include "log.h"

#define GUARD_PAUSE_MS	100
#define GUARD_DRAIN_MAX 64
#define GUARD_LOG_SEC	10

struct h2_listen_guard {
	struct h2_listen_guard *next;
	struct evconnlistener *l;
	struct event *resume;
	const char *what;
	h2_listen_refused_fn refused;
	void *arg;
	time_t logged;	   /* last warning; 0: none yet */
	uint64_t unlogged; /* refused since then */
	int unlogged_err;  /* the error that made it rest */
};

static struct h2_listen_guard *guards;
static int spare_fd = -1;

static void spare_open(void)
{
	if (spare_fd < 0)
		spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Accept and close what waits, through the reserve descriptor. */
static void refuse_waiting(struct h2_listen_guard *g)
{
	evutil_socket_t lfd = evconnlistener_get_fd(g->l);

	spare_open();
	for (int i = 0; i < GUARD_DRAIN_MAX && spare_fd >= 0; i++) {
		int fd;

		close(spare_fd);
		spare_fd = -1;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			close(fd);
		spare_open();
		if (fd < 0)
			break;
		g->unlogged++;
		if (g->refused)
			g->refused(g->arg);
	}
}

/* Errors about the one connection accept() was taking (accept(2)). */
static bool connection_error(int err)
{
	return err == ENETDOWN || err == EPROTO || err == ENOPROTOOPT ||
	       err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH ||
	       err == EOPNOTSUPP || err == ENETUNREACH || err == EPERM;
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct h2_listen_guard *g = arg;

	(void)fd;
	(void)what;
	evconnlistener_enable(g->l);
}

static void error_cb(struct evconnlistener *l, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = {0, GUARD_PAUSE_MS * 1000};
	struct h2_listen_guard *g;
	time_t now = time(NULL);

	(void)arg;
	for (g = guards; g && g->l != l; g = g->next)
		;
	if (!g || connection_error(err))
		return;
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)
		refuse_waiting(g);
	g->unlogged_err = err;
	evconnlistener_disable(l);
	evtimer_add(g->resume, &tv);
	if (g->logged == 0 || now - g->logged >= GUARD_LOG_SEC) {
		h2_log_warn("conn",
			    "cannot accept connections on the %s listener: %s; "
			    "refused %llu waiting connection(s), pausing it "
			    "for %d ms at a time",
			    g->what, strerror(g->unlogged_err),
			    (unsigned long long)g->unlogged, GUARD_PAUSE_MS);
		g->logged = now;
		g->unlogged = 0;
	}
}

struct h2_listen_guard *h2_listen_guard_new(struct evconnlistener *l,
					    const char *what,
					    h2_listen_refused_fn refused,
					    void *arg)
{
	struct h2_listen_guard *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->resume = evtimer_new(evconnlistener_get_base(l), resume_cb, g);
	if (!g->resume) {
		free(g);
		return NULL;
	}
	g->l = l;
	g->what = what;
	g->refused = refused;
	g->arg = arg;
	g->next = guards;
	guards = g;
	spare_open();
	evconnlistener_set_error_cb(l, error_cb);
	return g;
}

void h2_listen_guard_free(struct h2_listen_guard *g)
{
	struct h2_listen_guard **pp;

	if (!g)
		return;
	for (pp = &guards; *pp && *pp != g; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = g->next;
	evconnlistener_set_error_cb(g->l, NULL);
	event_free(g->resume);
	free(g);
	if (!guards && spare_fd >= 0) {
		close(spare_fd);
		spare_fd = -1;
	}
}
