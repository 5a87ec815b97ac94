/*
 * listen_guard.h - keep listeners from spinning when accept() fails.
 *
 * Out of file descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS,
 * ENOMEM), accept() fails while the connection stays in the backlog and
 * the listening socket stays readable.  libevent's evconnlistener then
 * logs and returns, and is called again at once: a busy loop for as long
 * as the shortage lasts.  A guarded listener instead refuses what waits
 * (see listen_guard.c) and rests for a moment.
 *
 * Loop thread only.
 */
#ifndef H2D_LISTEN_GUARD_H
#define H2D_LISTEN_GUARD_H

#include <event2/listener.h>

struct h2_listen_guard;

/* Called once per connection the guard refused. */
typedef void (*h2_listen_refused_fn)(void *arg);

/*
 * Guard l (borrowed: free the guard before l).  what names the listener
 * in the log ("native", "nbd", "metrics"); refused (may be NULL) counts
 * refusals.  NULL if out of memory (l then works unguarded).
 */
struct h2_listen_guard *h2_listen_guard_new(struct evconnlistener *l,
					    const char *what,
					    h2_listen_refused_fn refused,
					    void *arg);

/* Stop guarding (a pending resume is cancelled, so a listener disabled
 * for good stays disabled).  NULL is a no-op. */
void h2_listen_guard_free(struct h2_listen_guard *g);

#endif
