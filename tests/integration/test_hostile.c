/*
 * Hostile clients against a real h2d: malformed frames, lies about
 * payload lengths, out-of-range requests, unknown ops, requests before
 * Hello.  Each gets an error reply or a clean disconnect, and the server
 * keeps serving everybody else.
 *
 * These talk raw TLS (OpenSSL) and build frames with proto/frame.h, so
 * they can send what libh2client never would.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "harness.h"

static struct h2t_srv srv;

struct raw {
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;
	uint8_t in[1 << 20];
	size_t inlen;
};

static void setup(void)
{
	h2t_start(&srv, NULL);
}

static void teardown(void)
{
	h2t_cleanup(&srv);
}

/* A TLS connection with the dev admin certificate. */
static struct raw *raw_connect(void)
{
	struct raw *r = calloc(1, sizeof(*r));
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct timeval tv = {20, 0}; /* a guard against hangs only */
	char path[256];
	const char *colon = strrchr(srv.addr, ':');

	cr_assert_not_null(r);
	r->ctx = SSL_CTX_new(TLS_client_method());
	snprintf(path, sizeof(path), "%s/ca.crt", srv.tls);
	cr_assert_eq(SSL_CTX_load_verify_locations(r->ctx, path, NULL), 1);
	snprintf(path, sizeof(path), "%s/client.crt", srv.tls);
	cr_assert_eq(SSL_CTX_use_certificate_chain_file(r->ctx, path), 1);
	snprintf(path, sizeof(path), "%s/client.key", srv.tls);
	cr_assert_eq(SSL_CTX_use_PrivateKey_file(r->ctx, path,
						 SSL_FILETYPE_PEM),
		     1);
	SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER, NULL);
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r->fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(r->fd, 0);
	setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	cr_assert_eq(connect(r->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	r->ssl = SSL_new(r->ctx);
	SSL_set_fd(r->ssl, r->fd);
	cr_assert_eq(SSL_connect(r->ssl), 1, "TLS handshake failed");
	return r;
}

static void raw_close(struct raw *r)
{
	SSL_free(r->ssl);
	close(r->fd);
	SSL_CTX_free(r->ctx);
	free(r);
}

static void raw_send(struct raw *r, const void *buf, size_t len)
{
	cr_assert_eq(SSL_write(r->ssl, buf, (int)len), (int)len);
}

static void send_req(struct raw *r, H2__Request *q, const void *payload,
		     size_t len)
{
	uint8_t hdr[4096];
	int n;

	q->payload_len = len;
	n = h2_frame_pack_request(q, hdr, sizeof(hdr));
	cr_assert_gt(n, 0);
	raw_send(r, hdr, (size_t)n);
	if (len)
		raw_send(r, payload, len);
}

/* The next response (payload skipped), or NULL if the server closed. */
static H2__Response *recv_resp(struct raw *r)
{
	for (;;) {
		struct h2_frame_info info;
		H2__Response *resp = NULL;
		int n, d = h2_frame_decode_response(NULL, r->in, r->inlen,
						    &info, &resp);

		if (d == 0 && r->inlen >= info.header_bytes + info.payload_len) {
			size_t used = info.header_bytes + info.payload_len;

			memmove(r->in, r->in + used, r->inlen - used);
			r->inlen -= used;
			return resp;
		}
		h2_frame_response_free(resp);
		cr_assert(d == 0 || d == H2_FRAME_NEED_MORE,
			  "bad response frame: %d", d);
		cr_assert_lt(r->inlen, sizeof(r->in));
		n = SSL_read(r->ssl, r->in + r->inlen,
			     (int)(sizeof(r->in) - r->inlen));
		if (n <= 0)
			return NULL;
		r->inlen += (size_t)n;
	}
}

static void expect_closed(struct raw *r)
{
	H2__Response *resp;

	while ((resp = recv_resp(r)))
		h2_frame_response_free(resp);
}

static void hello(struct raw *r)
{
	H2__Request q = H2__REQUEST__INIT;
	H2__Hello h = H2__HELLO__INIT;
	H2__Response *resp;

	h.version = 1;
	q.id = 1;
	q.op_case = H2__REQUEST__OP_HELLO;
	q.hello = &h;
	send_req(r, &q, NULL, 0);
	resp = recv_resp(r);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->status, H2__STATUS__OK);
	cr_assert_eq(resp->result_case, H2__RESPONSE__RESULT_HELLO);
	h2_frame_response_free(resp);
}

static uint64_t open_volume(struct raw *r, const char *name)
{
	H2__Request q = H2__REQUEST__INIT;
	H2__VolumeCreate vc = H2__VOLUME_CREATE__INIT;
	H2__VolumeOpen vo = H2__VOLUME_OPEN__INIT;
	H2__Response *resp;
	uint64_t h;

	vc.name = (char *)name;
	vc.size = 1 << 20;
	q.id = 2;
	q.op_case = H2__REQUEST__OP_VOLUME_CREATE;
	q.volume_create = &vc;
	send_req(r, &q, NULL, 0);
	resp = recv_resp(r);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->status, H2__STATUS__OK, "%s", resp->message);
	h2_frame_response_free(resp);
	vo.name = (char *)name;
	vo.write = true;
	q.id = 3;
	q.op_case = H2__REQUEST__OP_VOLUME_OPEN;
	q.volume_open = &vo;
	send_req(r, &q, NULL, 0);
	resp = recv_resp(r);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->status, H2__STATUS__OK, "%s", resp->message);
	h = resp->volume_open->handle;
	h2_frame_response_free(resp);
	return h;
}

/* A healthy client still gets answers. */
static void server_still_serves(void)
{
	struct raw *r = raw_connect();
	H2__Request q = H2__REQUEST__INIT;
	H2__Ping p = H2__PING__INIT;
	H2__Response *resp;

	hello(r);
	q.id = 77;
	q.op_case = H2__REQUEST__OP_PING;
	q.ping = &p;
	send_req(r, &q, NULL, 0);
	resp = recv_resp(r);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->id, 77);
	cr_assert_eq(resp->status, H2__STATUS__OK);
	h2_frame_response_free(resp);
	raw_close(r);
}

TestSuite(hostile, .init = setup, .fini = teardown);

Test(hostile, oversized_header_length_disconnects)
{
	struct raw *r = raw_connect();
	uint8_t prefix[4] = {0xff, 0xff, 0xff, 0xff};

	hello(r);
	raw_send(r, prefix, sizeof(prefix));
	expect_closed(r);
	raw_close(r);
	server_still_serves();
}

Test(hostile, garbage_protobuf_disconnects)
{
	struct raw *r = raw_connect();
	uint8_t junk[4 + 12] = {0, 0, 0, 12, 0xff, 0xff, 0xff, 0xff,
				0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

	hello(r);
	raw_send(r, junk, sizeof(junk));
	expect_closed(r);
	raw_close(r);
	server_still_serves();
}

Test(hostile, huge_payload_length_gets_too_large)
{
	struct raw *r = raw_connect();
	H2__Request q = H2__REQUEST__INIT;
	H2__Write w = H2__WRITE__INIT;
	H2__Response *resp;
	uint8_t hdr[256];
	int n;

	hello(r);
	q.id = 9;
	q.op_case = H2__REQUEST__OP_WRITE;
	q.write = &w;
	q.payload_len = 1ull << 40;
	n = h2_frame_pack_request(&q, hdr, sizeof(hdr));
	raw_send(r, hdr, (size_t)n);
	resp = recv_resp(r);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->id, 9);
	cr_assert_eq(resp->status, H2__STATUS__TOO_LARGE);
	h2_frame_response_free(resp);
	expect_closed(r);
	raw_close(r);
	server_still_serves();
}

Test(hostile, payload_shorter_than_announced_then_hangup)
{
	struct raw *r = raw_connect();
	H2__Request q = H2__REQUEST__INIT;
	H2__Write w = H2__WRITE__INIT;
	uint8_t hdr[256], data[1000] = {0};
	int n;

	hello(r);
	w.handle = open_volume(r, "short");
	q.id = 10;
	q.op_case = H2__REQUEST__OP_WRITE;
	q.write = &w;
	q.payload_len = 65536;
	n = h2_frame_pack_request(&q, hdr, sizeof(hdr));
	raw_send(r, hdr, (size_t)n);
	raw_send(r, data, sizeof(data));
	raw_close(r); /* the server is left waiting for 64536 bytes */
	server_still_serves();
}

Test(hostile, out_of_range_and_overflowing_offsets)
{
	struct raw *r = raw_connect();
	H2__Request q = H2__REQUEST__INIT;
	H2__Read rd = H2__READ__INIT;
	H2__Trim tr = H2__TRIM__INIT;
	H2__Response *resp;

	hello(r);
	rd.handle = open_volume(r, "range");
	rd.offset = UINT64_MAX - 100;
	rd.length = 4096;
	q.id = 20;
	q.op_case = H2__REQUEST__OP_READ;
	q.read = &rd;
	send_req(r, &q, NULL, 0);
	resp = recv_resp(r);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->status, H2__STATUS__OUT_OF_RANGE, "%s",
		     resp->message);
	cr_assert_eq(resp->payload_len, 0);
	h2_frame_response_free(resp);

	tr.handle = rd.handle;
	tr.offset = (1 << 20) - 4096;
	tr.length = 8192;
	q.id = 21;
	q.op_case = H2__REQUEST__OP_TRIM;
	q.trim = &tr;
	send_req(r, &q, NULL, 0);
	resp = recv_resp(r);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->status, H2__STATUS__OUT_OF_RANGE);
	h2_frame_response_free(resp);

	/* An I/O on a handle never opened. */
	rd.handle = 999;
	rd.offset = 0;
	q.id = 22;
	q.op_case = H2__REQUEST__OP_READ;
	q.read = &rd;
	send_req(r, &q, NULL, 0);
	resp = recv_resp(r);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->status, H2__STATUS__INVALID_ARGUMENT);
	h2_frame_response_free(resp);

	/* The read length over the payload limit. */
	rd.handle = tr.handle;
	rd.length = 1ull << 40;
	q.id = 23;
	send_req(r, &q, NULL, 0);
	resp = recv_resp(r);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->status, H2__STATUS__TOO_LARGE);
	h2_frame_response_free(resp);
	raw_close(r);
}

Test(hostile, unknown_op_is_unsupported_and_connection_survives)
{
	struct raw *r = raw_connect();
	/* A Request with id 5 and an op field number (99) this server does
	 * not know: tag 99 << 3 | 2 = 794 = varint 0x9a 0x06, length 0. */
	uint8_t frame[] = {0, 0, 0, 5, 0x08, 0x05, 0x9a, 0x06, 0x00};
	H2__Response *resp;

	hello(r);
	raw_send(r, frame, sizeof(frame));
	resp = recv_resp(r);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->id, 5);
	cr_assert_eq(resp->status, H2__STATUS__UNSUPPORTED);
	h2_frame_response_free(resp);
	raw_close(r);
	server_still_serves();
}

Test(hostile, request_before_hello_is_refused)
{
	struct raw *r = raw_connect();
	H2__Request q = H2__REQUEST__INIT;
	H2__VolumeList vl = H2__VOLUME_LIST__INIT;
	H2__Response *resp;

	q.id = 4;
	q.op_case = H2__REQUEST__OP_VOLUME_LIST;
	q.volume_list = &vl;
	send_req(r, &q, NULL, 0);
	resp = recv_resp(r);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->status, H2__STATUS__FAILED_PRECONDITION);
	h2_frame_response_free(resp);
	expect_closed(r);
	raw_close(r);
	server_still_serves();
}

Test(hostile, many_requests_without_reading_replies_do_not_grow_memory)
{
	/* A client that pipelines reads and never reads the replies: the
	 * server stops reading from it (backpressure) instead of buffering
	 * replies without bound; other clients are unaffected. */
	struct raw *r = raw_connect();
	H2__Request q = H2__REQUEST__INIT;
	H2__Read rd = H2__READ__INIT;
	static uint8_t batch[16384];
	const uint64_t bound = 256ull << 20;
	struct timeval tv = {2, 0};
	uint64_t id = 100, sent = 0;

	hello(r);
	rd.handle = open_volume(r, "flood");
	rd.length = 1 << 20;
	q.op_case = H2__REQUEST__OP_READ;
	q.read = &rd;
	/* Send batches of requests until the socket refuses more for 2 s:
	 * the server stopped reading. */
	setsockopt(r->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (sent < bound) {
		size_t len = 0;
		int n;

		while (len + 64 < sizeof(batch)) {
			q.id = id++;
			n = h2_frame_pack_request(&q, batch + len,
						  sizeof(batch) - len);
			cr_assert_gt(n, 0);
			len += (size_t)n;
		}
		if (SSL_write(r->ssl, batch, (int)len) <= 0)
			break;
		sent += len;
	}
	cr_assert_lt(sent, bound, "the server never stopped reading");
	server_still_serves();
	raw_close(r);
}
