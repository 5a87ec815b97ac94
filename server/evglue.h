/*
 * evglue.h - libevent's memory, and making bufferevents in spite of the
 * allocations libevent does not check.
 *
 * libevent 2.1 ignores a failure of some small allocations it makes for
 * itself:
 *   - bufferevent_socket_new and the OpenSSL bufferevents register an
 *     output-buffer callback with evbuffer_add_cb and do not look at the
 *     result: without it, the bufferevent never writes what is added to
 *     its output after the first time that output drained (the client
 *     waits forever for its replies);
 *   - bufferevent_setwatermark, the first time it is given a read
 *     high-water mark, registers an input-buffer callback and passes the
 *     result to evbuffer_cb_set_flags, which dereferences it (a crash);
 *   - the OpenSSL bufferevents, when one of their evbuffers cannot be
 *     allocated, free the half-made bufferevent and crash in it.
 *
 * So every allocation of libevent goes through h2's hooks (h2_ev_init),
 * and the calls that make those allocations run inside a guarded section:
 * a small allocation that fails there is served from a static reserve
 * instead, so libevent neither crashes nor loses a callback, and the
 * section reports that an allocation failed.  The caller then frees what
 * it just made (which gives the reserve back) and fails as it would have
 * had the constructor returned NULL.
 *
 * Loop thread only (a guard is per thread; the reserve is shared and
 * thread-safe).
 */
#ifndef H2D_EVGLUE_H
#define H2D_EVGLUE_H

#include <stdbool.h>

/*
 * Route libevent's allocations through h2's hooks.  Call before any
 * other libevent function (h2_server_new does); calling it again is a
 * no-op.
 */
void h2_ev_init(void);

/* Start a guarded section (they do not nest). */
void h2_ev_guard_begin(void);

/*
 * End it: true if an allocation failed inside it (whatever it made is
 * suspect and must be freed), false if all went well.
 */
bool h2_ev_guard_end(void);

/*
 * Who owns the SSL after an OpenSSL bufferevent constructor with
 * BEV_OPT_CLOSE_ON_FREE returned NULL: libevent 2.1.12 frees it if the
 * failure came late enough, not if it came early, and does not say.
 * h2_ev_ssl_watch(ssl, &freed) before the call makes *freed true when
 * the SSL object is destroyed (0, or -ENOMEM: then do not call);
 * h2_ev_ssl_unwatch(ssl) after a success (freed lives on the caller's
 * stack).  Loop thread only.
 */
struct ssl_st;
int h2_ev_ssl_watch(struct ssl_st *ssl, bool *freed);
void h2_ev_ssl_unwatch(struct ssl_st *ssl);

#endif
