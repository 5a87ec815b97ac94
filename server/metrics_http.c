/*
 * metrics_http.c - GET /metrics (see metrics_http.h).
 *
 * A scrape is a job on the worker pool, like a Stat request: the worker
 * reads the engine's numbers and the volume list, the done callback (loop
 * thread) renders the text and answers.  evhttp keeps a request whose
 * answer is pending even if its client disconnects (the answer then
 * frees it), so the job may hold the request until it is done; the
 * endpoint is freed only after the pool, so no job outlives it.
 *
 * Limits: request headers up to 8 KiB, no body, 30 s of inactivity per
 * connection.  evhttp (libevent 2.1) cannot cap the number of
 * connections: another reason to keep the endpoint on loopback.
 */
#include "metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "listen_guard.h"
#include "log.h"
#include "prom.h"
#include "srv.h"

#define HTTP_MAX_HEADERS 8192
#define HTTP_TIMEOUT_SEC 30

struct h2_metrics_http {
	struct h2_server *srv;
	struct evhttp *http;
	struct h2_listen_guard *guard; /* its listener's; NULL if none */
	char addr[64];
};

struct scrape {
	struct h2_job job;
	struct h2_server *srv;
	struct evhttp_request *req;
	struct h2_store_stats st;
	struct h2_vol_info *vols;
	size_t nvols;
};

static void scrape_run(struct h2_job *job)
{
	struct scrape *s = (struct scrape *)job;

	h2_store_stat(s->srv->st, &s->st);
	/* Without the list the scrape still has everything else. */
	if (h2_vol_list(s->srv->st, &s->vols, &s->nvols) < 0) {
		s->vols = NULL;
		s->nvols = 0;
	}
}

/* Hand the text to libevent without copying; it frees it once sent. */
static void free_text(const void *data, size_t len, void *extra)
{
	(void)len;
	(void)extra;
	free((void *)data);
}

static void scrape_done(struct h2_job *job)
{
	struct scrape *s = (struct scrape *)job;
	struct h2_prom_input in = {
	    .m = s->srv->metrics,
	    .st = &s->st,
	    .vols = s->vols,
	    .nvols = s->nvols,
	    .version = H2_CORE_VERSION,
	};
	struct evbuffer *body = evbuffer_new();
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	int r = f ? h2_prom_write(f, &in) : -ENOMEM;

	if (f && fclose(f) != 0 && r == 0)
		r = -ENOMEM;
	if (r == 0 && body &&
	    evbuffer_add_reference(body, text, len, free_text, NULL) == 0) {
		text = NULL;
		evhttp_add_header(evhttp_request_get_output_headers(s->req),
				  "Content-Type", H2_PROM_CONTENT_TYPE);
		evhttp_send_reply(s->req, HTTP_OK, "OK", body);
	} else {
		h2_log_error("metrics", "cannot render the metrics: %s",
			     strerror(r < 0 ? -r : ENOMEM));
		evhttp_send_error(s->req, HTTP_INTERNAL, NULL);
	}
	free(text);
	if (body)
		evbuffer_free(body);
	free(s->vols);
	h2_server_check_stopped(s->srv);
	free(s);
}

static void http_cb(struct evhttp_request *req, void *arg)
{
	struct h2_metrics_http *mh = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	struct scrape *s;

	if (!path || strcmp(path, "/metrics") != 0) {
		evhttp_send_error(req, HTTP_NOTFOUND, NULL);
		return;
	}
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
				  "Allow", "GET");
		evhttp_send_error(req, 405, "Method Not Allowed");
		return;
	}
	if (mh->srv->stopping) {
		evhttp_send_error(req, HTTP_SERVUNAVAIL, NULL);
		return;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	s->job.run = scrape_run;
	s->job.done = scrape_done;
	s->srv = mh->srv;
	s->req = req;
	h2_pool_submit(mh->srv->pool, &s->job);
}

/* 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104. */
static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a =
		    &((const struct sockaddr_in6 *)ss)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

int h2_metrics_http_start(struct h2_server *srv, char *err, size_t errlen)
{
	const char *addr = srv->cfg->metrics_listen;
	struct h2_metrics_http *mh = calloc(1, sizeof(*mh));
	struct evconnlistener *l;
	struct sockaddr_storage ss;
	socklen_t blen = sizeof(ss);
	int sslen = sizeof(ss);
	char host[INET6_ADDRSTRLEN];
	int r = -EINVAL;

	if (!mh) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	mh->srv = srv;
	if (h2_server_parse_listen(addr, &ss, &sslen) < 0) {
		snprintf(err, errlen,
			 "metrics listen address \"%s\" is not HOST:PORT with "
			 "a numeric host (for example 127.0.0.1:9410, or port "
			 "0 for any free port; empty turns it off)",
			 addr);
		goto fail;
	}
	mh->http = evhttp_new(srv->base);
	if (!mh->http) {
		snprintf(err, errlen, "cannot create the metrics HTTP server");
		r = -ENOMEM;
		goto fail;
	}
	evhttp_set_gencb(mh->http, http_cb, mh);
	/* Let every method reach http_cb, which answers 405 (libevent would
	 * answer 501 for those not allowed). */
	evhttp_set_allowed_methods(
	    mh->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
			  EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
			  EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
			  EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_max_headers_size(mh->http, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(mh->http, 0);
	evhttp_set_timeout(mh->http, HTTP_TIMEOUT_SEC);
	l = evconnlistener_new_bind(srv->base, NULL, NULL,
				    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
					LEV_OPT_CLOSE_ON_EXEC,
				    128, (struct sockaddr *)&ss, sslen);
	if (!l) {
		snprintf(err, errlen,
			 "cannot listen for metrics on %s: %s (choose "
			 "--metrics-listen, or --metrics-listen '' to turn it "
			 "off)",
			 addr,
			 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		r = -EADDRINUSE;
		goto fail;
	}
	/* evhttp owns the listener from here (freed with it). */
	if (!evhttp_bind_listener(mh->http, l)) {
		evconnlistener_free(l);
		snprintf(err, errlen, "cannot serve metrics on %s", addr);
		r = -ENOMEM;
		goto fail;
	}
	mh->guard = h2_listen_guard_new(l, "metrics", NULL, NULL);
	getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&ss, &blen);
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(mh->addr, sizeof(mh->addr), "[%s]:%u", host,
			 ntohs(in6->sin6_port));
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(mh->addr, sizeof(mh->addr), "%s:%u", host,
			 ntohs(in->sin_port));
	}
	if (!is_loopback(&ss))
		h2_log_warn("metrics",
			    "metrics endpoint listens on addr=%s, not "
			    "loopback: it is plain HTTP without "
			    "authentication and shows every volume's name "
			    "and activity to anyone who can reach it",
			    mh->addr);
	srv->http = mh;
	return 0;
fail:
	if (mh->http)
		evhttp_free(mh->http);
	free(mh);
	return r;
}

const char *h2_metrics_http_addr(const struct h2_server *srv)
{
	return srv->http ? srv->http->addr : NULL;
}

void h2_metrics_http_free(struct h2_server *srv)
{
	struct h2_metrics_http *mh = srv->http;

	if (!mh)
		return;
	h2_listen_guard_free(mh->guard); /* before evhttp frees the listener */
	evhttp_free(mh->http);
	free(mh);
	srv->http = NULL;
}
