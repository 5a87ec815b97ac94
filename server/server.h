/*
 * server.h - h2d's native protocol service (h2d serve).
 *
 * One libevent loop accepts TLS connections and parses frames; disk work
 * runs on the worker pool and completes back on the loop; the engine's
 * flusher is its own thread.  Loop thread only, unless noted.
 */
#ifndef H2D_SERVER_H
#define H2D_SERVER_H

#include <stddef.h>

#include "config.h"
#include "h2core.h"

struct h2_server;

/*
 * Bind the listener and build the TLS context from cfg (borrowed; must
 * outlive the server).  st is borrowed too.  On error returns -errno with
 * a sentence in err.
 */
int h2_server_new(struct h2_config *cfg, struct h2_store *st,
		  struct h2_server **out, char *err, size_t errlen);

/* "127.0.0.1:7410": the address actually bound (port 0 resolved). */
const char *h2_server_listen_addr(const struct h2_server *srv);

/*
 * Serve until SIGTERM/SIGINT (or h2_server_stop): then stop accepting,
 * finish in-flight requests, flush their replies and return 0.  SIGHUP
 * reloads certificates and access rules for new connections.
 */
int h2_server_run(struct h2_server *srv);

/* Ask a running server to shut down (async-signal-safe: no). */
void h2_server_stop(struct h2_server *srv);

void h2_server_free(struct h2_server *srv);

#ifdef H2_FUZZ
/*
 * Fuzzing and tests only (tests/fuzz/fuzz_session.c and
 * tests/server/test_memfault.c build server.c with H2_FUZZ; h2d never
 * has these).  A server with no listener, TLS context or signal
 * handlers, whose connections come from h2_server_adopt(): bev (taken,
 * also when it fails with -ENOMEM) carries plaintext frames and is
 * treated as a connection whose TLS handshake just verified `identity`.
 * Everything after the handshake is the real code.  Loop thread only.
 */
struct bufferevent;
struct event_base;
int h2_server_new_plain(struct h2_config *cfg, struct h2_store *st,
			struct h2_server **out);
struct event_base *h2_server_base(struct h2_server *srv);
int h2_server_adopt(struct h2_server *srv, struct bufferevent *bev,
		    const char *identity);
#endif

#endif
