/*
 * metrics_http.h - the Prometheus endpoint: GET /metrics over plain HTTP
 * (libevent's evhttp on the server's event loop), answering prom.h's text.
 *
 * Off unless metrics_listen is set.  It has no authentication and no
 * TLS, and shows every volume's name and activity: it belongs on
 * loopback (a local Prometheus or agent) or a trusted network, and h2d
 * logs a warning when it listens anywhere else.  Other paths are 404,
 * other methods 405; while the server stops, 503.
 *
 * The engine's numbers are read on a worker (h2_store_stat takes the
 * engine's locks), the text is rendered on the loop thread.
 *
 * Loop thread only.
 */
#ifndef H2D_METRICS_HTTP_H
#define H2D_METRICS_HTTP_H

#include <stddef.h>

struct h2_server;

/*
 * Bind srv->cfg->metrics_listen (non-empty) and serve it into srv->http.
 * On error returns -errno with a sentence in err; srv->http stays NULL.
 */
int h2_metrics_http_start(struct h2_server *srv, char *err, size_t errlen);

/* The address bound ("127.0.0.1:9410"), or NULL when off. */
const char *h2_metrics_http_addr(const struct h2_server *srv);

/* Free the endpoint (open HTTP connections are closed).  The worker pool
 * must be freed first: a scrape's job answers its request when done. */
void h2_metrics_http_free(struct h2_server *srv);

#endif
