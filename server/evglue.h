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

#endif
