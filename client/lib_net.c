/*
 * lib_net.c - libh2client's connections: h2_connect and h2_disconnect,
 * the TLS context, and making one connection (address, TCP connect, TLS
 * handshake with the server's name or address verified).
 *
 * h2_connect() resolves the address, loads the TLS material, queues a
 * Hello call and starts the I/O thread (lib_conn.c), which makes the
 * connection with h2_net_tcp and h2_net_tls, then serves every call for
 * the life of the client, and with H2_RECONNECT makes the connection
 * again the same way when it is lost.  The address is resolved once, by
 * h2_connect.  Everything here that touches the socket runs on the I/O
 * thread; h2_connect and h2_disconnect run on the caller's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "internal.h"

#define NET_DEFAULT_TIMEOUT_MS 10000u
/* H2_RECONNECT: give up after this long by default. */
#define NET_DEFAULT_RECONNECT_MS 30000u

/*
 * TLS errors.
 */

/* Why the last TLS operation failed, into buf: the verify result, the
 * alert the peer sent, or the library's reason. */
void h2_net_tls_reason(struct h2_client *c, int sslerr, int saved_errno,
		       char *buf, size_t len)
{
	long vr = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
	unsigned long e = ERR_peek_error();
	const char *r;

	if (vr != X509_V_OK) {
		snprintf(buf, len, "certificate verify failed: %s",
			 X509_verify_cert_error_string(vr));
	} else if (e) {
		r = ERR_reason_error_string(e);
		if (r)
			snprintf(buf, len, "%s", r);
		else
			ERR_error_string_n(e, buf, len);
	} else if (sslerr == SSL_ERROR_SYSCALL && saved_errno) {
		snprintf(buf, len, "%s", strerror(saved_errno));
	} else if (sslerr == SSL_ERROR_SYSCALL ||
		   sslerr == SSL_ERROR_ZERO_RETURN) {
		snprintf(buf, len, "the server closed the connection");
	} else {
		snprintf(buf, len, "TLS error %d", sslerr);
	}
	ERR_clear_error();
}

/*
 * Establishing a connection.  I/O thread.
 */

/*
 * Wait for events on the socket until the deadline: 0 when ready,
 * H2_ETIMEDOUT, or H2_ECLOSED when h2_disconnect asked us to stop.
 */
int h2_net_wait(struct h2_client *c, short events)
{
	for (;;) {
		uint64_t now = h2_conn_now_ms();
		struct pollfd p[2] = {{.fd = c->fd, .events = events},
				      {.fd = c->wake_fd, .events = POLLIN}};
		uint64_t left;
		bool stop;
		int n;

		if (now >= c->deadline_ms)
			return H2_ETIMEDOUT;
		left = c->deadline_ms - now;
		n = poll(p, 2, left > INT_MAX ? INT_MAX : (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			h2_io_msgf(c, "poll: %s", strerror(errno));
			return H2_ECONNECT;
		}
		if (p[1].revents) {
			/* A submit woke us before the loop runs: note it
			 * consumed, the loop looks at the queue anyway. */
			pthread_mutex_lock(&c->lock);
			stop = c->stopping;
			h2_conn_efd_drain(c->wake_fd);
			c->wake_pending = false;
			pthread_mutex_unlock(&c->lock);
			if (stop) {
				h2_io_msgf(c, "the client is disconnecting");
				return H2_ECLOSED;
			}
		}
		if (p[0].revents)
			return 0;
	}
}

/* "1.2.3.4:7410" or "[::1]:7410" for an address. */
static void net_addr_name(const struct addrinfo *ai, char *buf, size_t len)
{
	char host[NI_MAXHOST], serv[NI_MAXSERV];

	if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), serv,
			sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(buf, len, "(unprintable address)");
		return;
	}
	snprintf(buf, len, ai->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
		 host, serv);
}

/* TCP connect to the first address that answers; c->fd on success. */
int h2_net_tcp(struct h2_client *c)
{
	const struct addrinfo *ai;
	char addr[NI_MAXHOST + NI_MAXSERV + 4];
	int rc = H2_ECONNECT, one = 1;

	h2_io_msgf(c, "%s: no usable address", c->peer);
	for (ai = c->ai; ai; ai = ai->ai_next) {
		int fd, soerr = 0;
		socklen_t sl = sizeof(soerr);

		net_addr_name(ai, addr, sizeof(addr));
		fd = socket(ai->ai_family,
			    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			h2_io_msgf(c, "socket for %s: %s", addr,
				   strerror(errno));
			continue;
		}
		c->fd = fd;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			if (errno != EINPROGRESS) {
				soerr = errno;
			} else {
				rc = h2_net_wait(c, POLLOUT);
				if (rc == H2_ETIMEDOUT)
					h2_io_msgf(c,
						   "connect to %s: no answer "
						   "within %u ms",
						   addr, c->timeout_ms);
				if (rc < 0)
					goto fail;
				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr,
					       &sl) < 0)
					soerr = errno;
			}
		}
		if (soerr) {
			h2_io_msgf(c, "connect to %s: %s", addr,
				   strerror(soerr));
			rc = H2_ECONNECT;
			close(fd);
			c->fd = -1;
			continue;
		}
		/* Requests are small and latency matters; frames are
		 * written whole, so Nagle would only delay them. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		return 0;
	}
	return rc;
fail:
	close(c->fd);
	c->fd = -1;
	return rc;
}

/* An IPv4 or IPv6 literal? */
static bool net_is_ip(const char *s)
{
	unsigned char a[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* TLS handshake on c->fd, verifying the server's name or address. */
int h2_net_tls(struct h2_client *c)
{
	char why[200];
	int rc;

	ERR_clear_error();
	c->ssl = SSL_new(c->ctx);
	if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
		h2_io_msgf(c, "cannot set up TLS: out of memory");
		return H2_ENOMEM;
	}
	/* Partial writes let a big payload go out record by record;
	 * a moving buffer lets a retried write come from a new pointer
	 * into the same bytes. */
	SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
				 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (net_is_ip(c->verify_name)) {
		/* An address is checked against IP SANs; SNI carries names
		 * only (RFC 6066), so none is sent. */
		if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl),
						   c->verify_name)) {
			h2_io_msgf(c, "cannot verify address '%s'",
				   c->verify_name);
			return H2_ETLS;
		}
	} else {
		SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (!SSL_set1_host(c->ssl, c->verify_name) ||
		    !SSL_set_tlsext_host_name(c->ssl, c->verify_name)) {
			h2_io_msgf(c, "cannot verify name '%s'",
				   c->verify_name);
			return H2_ETLS;
		}
	}
	for (;;) {
		int r, e, saved;

		ERR_clear_error();
		r = SSL_connect(c->ssl);
		if (r == 1)
			return 0;
		saved = errno;
		e = SSL_get_error(c->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			rc = h2_net_wait(c, e == SSL_ERROR_WANT_READ ? POLLIN
								     : POLLOUT);
			if (rc == H2_ETIMEDOUT)
				h2_io_msgf(c,
					   "TLS handshake with %s: no answer "
					   "within %u ms",
					   c->peer, c->timeout_ms);
			if (rc < 0)
				return rc;
			continue;
		}
		h2_net_tls_reason(c, e, saved, why, sizeof(why));
		h2_io_msgf(c, "TLS handshake with %s failed: %s", c->peer, why);
		return H2_ETLS;
	}
}

/*
 * h2_connect and h2_disconnect.
 */

/* Split "host:port", "[v6]:port", "host" or "v6" into c->host, c->port. */
static int net_parse_server(struct h2_client *c, const char *s)
{
	const char *h = s, *p = NULL, *end;
	char portbuf[8];
	size_t hlen;

	if (s[0] == '[') {
		end = strchr(s, ']');
		if (!end || (end[1] && end[1] != ':'))
			goto bad;
		h = s + 1;
		hlen = (size_t)(end - h);
		if (end[1] == ':')
			p = end + 2;
	} else {
		end = strrchr(s, ':');
		if (end && end == strchr(s, ':')) {
			hlen = (size_t)(end - s);
			p = end + 1;
		} else {
			hlen = strlen(s); /* a name, or a bare IPv6 literal */
		}
	}
	if (hlen == 0)
		goto bad;
	if (p) {
		unsigned long v;

		if (!*p || strlen(p) > 5 ||
		    strspn(p, "0123456789") != strlen(p))
			goto bad;
		v = strtoul(p, NULL, 10);
		if (v == 0 || v > 65535)
			goto bad;
		snprintf(portbuf, sizeof(portbuf), "%lu", v);
	} else {
		snprintf(portbuf, sizeof(portbuf), "%u", H2_DEFAULT_PORT);
	}
	c->host = strndup(h, hlen);
	c->port = strdup(portbuf);
	if (!c->host || !c->port)
		return h2_ops_fail(H2_ENOMEM, "out of memory");
	return 0;
bad:
	return h2_ops_fail(H2_EINVAL,
			   "bad server address '%s' (want HOST:PORT, "
			   "[IPV6]:PORT or HOST)",
			   s);
}

/* The OpenSSL error queue's first reason, for a file that did not load. */
static const char *net_ssl_reason(void)
{
	unsigned long e = ERR_peek_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	return r ? r : "unknown reason";
}

/* Check that path can be read; the sentence names what it is for. */
static int net_check_file(const char *what, const char *path)
{
	if (access(path, R_OK) < 0)
		return h2_ops_fail(H2_ETLS, "cannot read %s '%s': %s", what,
				   path, strerror(errno));
	return 0;
}

/* The client's TLS context: CA, certificate and key, verify the peer. */
static int net_ctx(struct h2_client *c, const h2_client_opts *o)
{
	const char *key = o->key_file ? o->key_file : o->cert_file;
	int rc = 0;

	ERR_clear_error();
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (!c->ctx)
		return h2_ops_fail(H2_ENOMEM, "cannot create a TLS context");
	/* TLS 1.2 at least; the server picks (1.3 when it can). */
	SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	if (o->ca_file) {
		rc = net_check_file("CA file", o->ca_file);
		if (rc < 0)
			goto out;
		if (!SSL_CTX_load_verify_locations(c->ctx, o->ca_file, NULL)) {
			rc =
			    h2_ops_fail(H2_ETLS, "cannot load CA file '%s': %s",
					o->ca_file, net_ssl_reason());
			goto out;
		}
	} else if (!SSL_CTX_set_default_verify_paths(c->ctx)) {
		rc = h2_ops_fail(H2_ETLS, "cannot load the system CAs: %s",
				 net_ssl_reason());
		goto out;
	}
	if (!o->cert_file) {
		if (o->key_file)
			rc = h2_ops_fail(H2_EINVAL,
					 "key_file without cert_file");
		goto out;
	}
	rc = net_check_file("certificate", o->cert_file);
	if (rc == 0)
		rc = net_check_file("key", key);
	if (rc < 0)
		goto out;
	if (!SSL_CTX_use_certificate_chain_file(c->ctx, o->cert_file)) {
		rc = h2_ops_fail(H2_ETLS, "cannot load certificate '%s': %s",
				 o->cert_file, net_ssl_reason());
		goto out;
	}
	if (!SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM)) {
		rc = h2_ops_fail(H2_ETLS, "cannot load key '%s': %s", key,
				 net_ssl_reason());
		goto out;
	}
	if (!SSL_CTX_check_private_key(c->ctx))
		rc = h2_ops_fail(H2_ETLS,
				 "key '%s' does not match certificate "
				 "'%s'",
				 key, o->cert_file);
out:
	ERR_clear_error();
	return rc;
}

/* Start the I/O thread with every signal blocked (see the file comment). */
static int net_start_thread(struct h2_client *c)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&c->thread, NULL, h2_io_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return h2_ops_fail(H2_ENOMEM, "cannot start the I/O thread: %s",
				   strerror(rc));
	c->thread_started = true;
	return 0;
}

/* A client with its queues, buffers and eventfds, not yet connected. */
static struct h2_client *net_alloc(void)
{
	struct h2_client *c = calloc(1, sizeof(*c));
	unsigned i;

	if (!c)
		return NULL;
	c->fd = c->wake_fd = c->aio_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	atomic_init(&c->aio_pending, 0);
	c->max_inflight = 1; /* only Hello until its reply */
	c->max_payload = H2_FRAME_DEFAULT_MAX_PAYLOAD;
	c->next_seq = 1;
	for (i = 0; i < H2_MAX_SLOTS; i++)
		c->free_idx[i] = (uint16_t)(H2_MAX_SLOTS - 1 - i);
	c->nfree = H2_MAX_SLOTS;
	c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	c->aio_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	c->stage = malloc(H2_STAGE_CAP);
	c->rx = malloc(H2_RX_CAP);
	/* Reply payloads are checked against what each request expects,
	 * exactly, so the decoder needs no payload limit of its own. */
	c->dec = h2_frame_decoder_new(&(struct h2_frame_limits){
	    .max_header = H2_FRAME_MAX_HEADER, .max_payload = UINT64_MAX});
	if (c->wake_fd < 0 || c->aio_fd < 0 || !c->stage || !c->rx || !c->dec) {
		h2_disconnect(c);
		return NULL;
	}
	return c;
}

int h2_connect(const h2_client_opts *o, h2_client **out)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__Hello hello = H2__HELLO__INIT;
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV};
	struct h2_call call = {
	    .kind = H2_CALL_MSG, .msg = &rq, .is_hello = true};
	const H2__HelloResult *hr;
	struct h2_client *c;
	int rc, gai;

	if (!o || !out || !o->server)
		return h2_ops_fail(H2_EINVAL, "h2_connect: %s is NULL",
				   !o	  ? "opts"
				   : !out ? "out"
					  : "server");
	c = net_alloc();
	if (!c)
		return h2_ops_fail(H2_ENOMEM, "out of memory");
	c->peer = strdup(o->server);
	if (!c->peer) {
		rc = h2_ops_fail(H2_ENOMEM, "out of memory");
		goto fail;
	}
	rc = net_parse_server(c, o->server);
	if (rc < 0)
		goto fail;
	c->verify_name = strdup(o->tls_server_name && o->tls_server_name[0]
				    ? o->tls_server_name
				    : c->host);
	if (!c->verify_name) {
		rc = h2_ops_fail(H2_ENOMEM, "out of memory");
		goto fail;
	}
	if (o->flags & ~(unsigned)H2_RECONNECT) {
		rc = h2_ops_fail(H2_EINVAL, "h2_connect: unknown flags 0x%x",
				 o->flags & ~(unsigned)H2_RECONNECT);
		goto fail;
	}
	c->reconnect = o->flags & H2_RECONNECT;
	/* reconnect_timeout_ms came after the other fields: a program built
	 * before it has no such field, and never sets H2_RECONNECT. */
	c->reconnect_ms = c->reconnect && o->reconnect_timeout_ms
			      ? o->reconnect_timeout_ms
			      : NET_DEFAULT_RECONNECT_MS;
	c->client_name =
	    strdup(o->client_name ? o->client_name : "libh2client");
	if (!c->client_name) {
		rc = h2_ops_fail(H2_ENOMEM, "out of memory");
		goto fail;
	}
	c->timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms
					      : NET_DEFAULT_TIMEOUT_MS;
	c->deadline_ms = h2_conn_now_ms() + c->timeout_ms;
	gai = getaddrinfo(c->host, c->port, &hints, &c->ai);
	if (gai != 0) {
		rc = h2_ops_fail(
		    H2_ECONNECT, "cannot resolve '%s': %s", c->host,
		    gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
		c->ai = NULL;
		goto fail;
	}
	rc = net_ctx(c, o);
	if (rc < 0)
		goto fail;
	rc = net_start_thread(c);
	if (rc < 0)
		goto fail;

	hello.version = H2_PROTO_VERSION;
	hello.client_name = c->client_name;
	rq.op_case = H2__REQUEST__OP_HELLO;
	rq.hello = &hello;
	rc = h2_conn_call(c, &call);
	if (rc == H2_ECLOSED) {
		/* The connection failed: say why, not just that it did. */
		pthread_mutex_lock(&c->lock);
		if (c->closed)
			rc =
			    h2_ops_fail(c->fail_err == H2_ECLOSED ? H2_ECONNECT
								  : c->fail_err,
					"%s", c->fail_msg);
		pthread_mutex_unlock(&c->lock);
	}
	if (rc < 0)
		goto fail;
	hr = call.resp->result_case == H2__RESPONSE__RESULT_HELLO
		 ? call.resp->hello
		 : NULL;
	if (!hr) {
		rc = h2_ops_fail(H2_EPROTO,
				 "%s answered Hello without a "
				 "HelloResult",
				 c->peer);
		goto fail;
	}
	if (hr->version != H2_PROTO_VERSION) {
		rc = h2_ops_fail(H2_EPROTO,
				 "%s speaks protocol version %u; this library "
				 "speaks %u",
				 c->peer, hr->version, H2_PROTO_VERSION);
		goto fail;
	}
	c->identity = strdup(hr->identity ? hr->identity : "");
	if (!c->identity) {
		rc = h2_ops_fail(H2_ENOMEM, "out of memory");
		goto fail;
	}
	h2_frame_response_free(call.resp);
	*out = c;
	return 0;
fail:
	h2_frame_response_free(call.resp);
	h2_disconnect(c);
	return rc;
}

void h2_disconnect(h2_client *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		pthread_mutex_lock(&c->lock);
		c->stopping = true;
		h2_conn_efd_signal(c->wake_fd);
		pthread_mutex_unlock(&c->lock);
		pthread_join(c->thread, NULL);
	}
	h2_aio_drain(c);
	h2_ops_free_volumes(c);
	if (c->ai)
		freeaddrinfo(c->ai);
	SSL_free(c->ssl);
	SSL_CTX_free(c->ctx);
	if (c->fd >= 0)
		close(c->fd);
	if (c->wake_fd >= 0)
		close(c->wake_fd);
	if (c->aio_fd >= 0)
		close(c->aio_fd);
	h2_frame_decoder_free(c->dec);
	pthread_mutex_destroy(&c->lock);
	free(c->stage);
	free(c->rx);
	free(c->peer);
	free(c->host);
	free(c->port);
	free(c->verify_name);
	free(c->client_name);
	free(c->identity);
	free(c);
}

const char *h2_client_identity(const h2_client *c)
{
	return c && c->identity ? c->identity : "";
}
