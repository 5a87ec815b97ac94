/*
 * raw.c - hostile clients and process probes (see raw.h).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "nbd_proto.h"
#include "raw.h"

int h2t_tcp_try_connect(const char *addr)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct timeval tv = {H2T_RAW_GUARD_SEC, 0};
	const char *colon = strrchr(addr, ':');
	char host[64];
	int fd, one = 1;

	if (!colon)
		return -1;
	snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -1;
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int h2t_tcp_connect(const char *addr)
{
	int fd = h2t_tcp_try_connect(addr);

	cr_assert_geq(fd, 0, "connect to %s: %s", addr, strerror(errno));
	return fd;
}

SSL_CTX *h2t_tls_ctx(const struct h2t_srv *s)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char path[256];

	cr_assert_not_null(ctx);
	snprintf(path, sizeof(path), "%s/ca.crt", s->tls);
	cr_assert_eq(SSL_CTX_load_verify_locations(ctx, path, NULL), 1);
	snprintf(path, sizeof(path), "%s/client.crt", s->tls);
	cr_assert_eq(SSL_CTX_use_certificate_chain_file(ctx, path), 1);
	snprintf(path, sizeof(path), "%s/client.key", s->tls);
	cr_assert_eq(SSL_CTX_use_PrivateKey_file(ctx, path, SSL_FILETYPE_PEM),
		     1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* A server that closes without close_notify reads as EOF, which is
	 * one of the disconnects tests expect, not a TLS error. */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	return ctx;
}

struct h2t_raw *h2t_raw_tls(const struct h2t_srv *s, int fd)
{
	struct h2t_raw *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	r->ctx = h2t_tls_ctx(s);
	r->fd = fd;
	r->ssl = SSL_new(r->ctx);
	cr_assert_not_null(r->ssl);
	SSL_set_fd(r->ssl, fd);
	cr_assert_eq(SSL_connect(r->ssl), 1, "TLS handshake failed");
	return r;
}

struct h2t_raw *h2t_raw_connect(const struct h2t_srv *s)
{
	return h2t_raw_tls(s, h2t_tcp_connect(s->addr));
}

void h2t_raw_close(struct h2t_raw *r)
{
	if (!r)
		return;
	SSL_free(r->ssl);
	close(r->fd);
	SSL_CTX_free(r->ctx);
	free(r->in);
	free(r);
}

bool h2t_raw_try_send(struct h2t_raw *r, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		int chunk = len > (1u << 30) ? 1 << 30 : (int)len;
		int n = SSL_write(r->ssl, p, chunk);

		if (n <= 0) {
			ERR_clear_error();
			return false;
		}
		p += n;
		len -= (size_t)n;
	}
	return true;
}

void h2t_raw_send(struct h2t_raw *r, const void *buf, size_t len)
{
	cr_assert(h2t_raw_try_send(r, buf, len), "sending %zu bytes failed",
		  len);
}

void h2t_raw_send_req(struct h2t_raw *r, H2__Request *q, const void *payload,
		      size_t len)
{
	uint8_t hdr[8192];
	int n;

	q->payload_len = len;
	n = h2_frame_pack_request(q, hdr, sizeof(hdr));
	cr_assert_gt(n, 0, "cannot frame request: %d", n);
	h2t_raw_send(r, hdr, (size_t)n);
	if (len)
		h2t_raw_send(r, payload, len);
}

/*
 * Read more into r->in: >0 bytes read, 0 when the server closed (EOF,
 * close_notify, reset, or a TLS alert it sent).  A timeout fails.
 */
static int raw_fill(struct h2t_raw *r, size_t want)
{
	int n, e;

	if (r->incap < want) {
		size_t cap = want < (1u << 16) ? 1u << 16 : want;

		r->in = realloc(r->in, cap);
		cr_assert_not_null(r->in);
		r->incap = cap;
	}
	errno = 0;
	n = SSL_read(r->ssl, r->in + r->inlen, (int)(r->incap - r->inlen));
	if (n > 0) {
		r->inlen += (size_t)n;
		return n;
	}
	e = SSL_get_error(r->ssl, n);
	ERR_clear_error();
	cr_assert(e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE &&
		      !(e == SSL_ERROR_SYSCALL &&
			(errno == EAGAIN || errno == EWOULDBLOCK)),
		  "no answer and no close within %d s", H2T_RAW_GUARD_SEC);
	return 0;
}

H2__Response *h2t_raw_recv(struct h2t_raw *r)
{
	/* Drop the previous response's frame first. */
	if (r->payload) {
		size_t used = (size_t)(r->payload - r->in) + r->payload_len;

		memmove(r->in, r->in + used, r->inlen - used);
		r->inlen -= used;
		r->payload = NULL;
		r->payload_len = 0;
	}
	for (;;) {
		struct h2_frame_info info;
		H2__Response *resp = NULL;
		int d = h2_frame_decode_response(NULL, r->in, r->inlen, &info,
						 &resp);
		size_t want = r->inlen + (1u << 16);

		if (d == 0 &&
		    r->inlen >= info.header_bytes + info.payload_len) {
			r->payload = r->in + info.header_bytes;
			r->payload_len = info.payload_len;
			return resp;
		}
		h2_frame_response_free(resp);
		cr_assert(d == 0 || d == H2_FRAME_NEED_MORE,
			  "bad response frame: %d", d);
		if (d == 0 && info.header_bytes + info.payload_len > want)
			want = info.header_bytes + info.payload_len;
		if (raw_fill(r, want) == 0)
			return NULL;
	}
}

void h2t_raw_expect_closed(struct h2t_raw *r)
{
	H2__Response *resp;

	while ((resp = h2t_raw_recv(r)))
		h2_frame_response_free(resp);
}

H2__Response *h2t_raw_call(struct h2t_raw *r, H2__Request *q)
{
	H2__Response *resp;

	h2t_raw_send_req(r, q, NULL, 0);
	resp = h2t_raw_recv(r);
	cr_assert_not_null(resp, "the server closed the connection");
	cr_assert_eq(resp->id, q->id);
	return resp;
}

void h2t_raw_hello(struct h2t_raw *r)
{
	H2__Request q = H2__REQUEST__INIT;
	H2__Hello h = H2__HELLO__INIT;
	H2__Response *resp;

	h.version = 1;
	q.id = 1;
	q.op_case = H2__REQUEST__OP_HELLO;
	q.hello = &h;
	resp = h2t_raw_call(r, &q);
	cr_assert_eq(resp->status, H2__STATUS__OK);
	cr_assert_eq(resp->result_case, H2__RESPONSE__RESULT_HELLO);
	h2_frame_response_free(resp);
}

uint64_t h2t_raw_open(struct h2t_raw *r, const char *name, uint64_t size)
{
	H2__Request q = H2__REQUEST__INIT;
	H2__VolumeCreate vc = H2__VOLUME_CREATE__INIT;
	H2__VolumeOpen vo = H2__VOLUME_OPEN__INIT;
	H2__Response *resp;
	uint64_t h;

	vc.name = (char *)name;
	vc.size = size;
	q.id = 2;
	q.op_case = H2__REQUEST__OP_VOLUME_CREATE;
	q.volume_create = &vc;
	resp = h2t_raw_call(r, &q);
	cr_assert(resp->status == H2__STATUS__OK ||
		      resp->status == H2__STATUS__ALREADY_EXISTS,
		  "%s", resp->message);
	h2_frame_response_free(resp);
	vo.name = (char *)name;
	vo.write = true;
	q.id = 3;
	q.op_case = H2__REQUEST__OP_VOLUME_OPEN;
	q.volume_open = &vo;
	resp = h2t_raw_call(r, &q);
	cr_assert_eq(resp->status, H2__STATUS__OK, "%s", resp->message);
	h = resp->volume_open->handle;
	h2_frame_response_free(resp);
	return h;
}

/* ---------------------------------------------------------------------- */
/* NBD.                                                                   */

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

/* Plaintext: exactly len bytes, asserting they came. */
static void tcp_recv_all(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv(fd, (char *)buf + got, len - got, 0);

		cr_assert_gt(n, 0, "NBD handshake: closed or timed out");
		got += (size_t)n;
	}
}

bool h2t_raw_read_exact(struct h2t_raw *r, void *buf, size_t len)
{
	while (r->inlen < len)
		if (raw_fill(r, len) == 0)
			return false;
	memcpy(buf, r->in, len);
	memmove(r->in, r->in + len, r->inlen - len);
	r->inlen -= len;
	return true;
}

struct h2t_raw *h2t_nbd_connect(const struct h2t_srv *s, const char *export,
				uint64_t *size)
{
	uint8_t g[NBD_GREETING_SIZE], h[NBD_OPT_HDR_SIZE], f[4];
	uint8_t rep[NBD_REP_HDR_SIZE], data[4096 + 16];
	size_t nl = strlen(export);
	struct h2t_raw *r;
	uint32_t len;
	int fd;

	cr_assert(s->nbd[0], "the NBD listener is off");
	fd = h2t_tcp_connect(s->nbd);
	tcp_recv_all(fd, g, sizeof(g));
	cr_assert_eq(get64(g), NBD_MAGIC);
	cr_assert_eq(get64(g + 8), NBD_IHAVEOPT);
	put32(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	cr_assert_eq(send(fd, f, 4, 0), 4);
	put64(h, NBD_IHAVEOPT);
	put32(h + 8, NBD_OPT_STARTTLS);
	put32(h + 12, 0);
	cr_assert_eq(send(fd, h, sizeof(h), 0), (ssize_t)sizeof(h));
	tcp_recv_all(fd, rep, sizeof(rep));
	cr_assert_eq(get32(rep + 12), NBD_REP_ACK);
	cr_assert_eq(get32(rep + 16), 0);
	r = h2t_raw_tls(s, fd);

	/* GO: name length, name, no information requests. */
	cr_assert_leq(nl, 4096);
	put64(h, NBD_IHAVEOPT);
	put32(h + 8, NBD_OPT_GO);
	put32(h + 12, (uint32_t)(4 + nl + 2));
	h2t_raw_send(r, h, sizeof(h));
	put32(data, (uint32_t)nl);
	memcpy(data + 4, export, nl);
	data[4 + nl] = 0;
	data[5 + nl] = 0;
	h2t_raw_send(r, data, 4 + nl + 2);
	for (;;) {
		cr_assert(h2t_raw_read_exact(r, rep, sizeof(rep)),
			  "NBD_OPT_GO: the server closed");
		cr_assert_eq(get64(rep), NBD_REP_MAGIC);
		len = get32(rep + 16);
		cr_assert_leq(len, sizeof(data));
		cr_assert(h2t_raw_read_exact(r, data, len));
		if (get32(rep + 12) == NBD_REP_ACK)
			break;
		cr_assert_eq(get32(rep + 12), NBD_REP_INFO,
			     "NBD_OPT_GO %s refused: 0x%x", export,
			     get32(rep + 12));
		if (len >= 12 && data[0] == 0 && data[1] == NBD_INFO_EXPORT &&
		    size)
			*size = get64(data + 2);
	}
	return r;
}

void h2t_nbd_request(uint8_t out[28], uint16_t flags, uint16_t type,
		     uint64_t cookie, uint64_t offset, uint32_t length)
{
	put32(out, NBD_REQUEST_MAGIC);
	out[4] = (uint8_t)(flags >> 8);
	out[5] = (uint8_t)flags;
	out[6] = (uint8_t)(type >> 8);
	out[7] = (uint8_t)type;
	put64(out + 8, cookie);
	put64(out + 16, offset);
	put32(out + 24, length);
}

bool h2t_wait_conns(h2_client *c, uint64_t native, uint64_t nbd, int timeout_ms,
		    uint64_t *got_native, uint64_t *got_nbd)
{
	double end = h2t_now_ms() + timeout_ms;

	for (;;) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		h2_stat_report *rep = NULL;
		int r = h2_stat_report_get(c, NULL, &rep);

		cr_assert_eq(r, 0, "stat: %s", h2_strerror(r));
		*got_native = rep->native_connections;
		*got_nbd = rep->nbd_connections;
		h2_stat_report_free(rep);
		if (*got_native == native && *got_nbd == nbd)
			return true;
		if (h2t_now_ms() > end)
			return false;
		nanosleep(&ts, NULL);
	}
}

/* ---------------------------------------------------------------------- */
/* Process probes.                                                        */

long h2t_proc_rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	cr_assert_geq(kib, 0, "no VmRSS in %s", path);
	return kib;
}

double h2t_proc_cpu_sec(pid_t pid)
{
	char path[64], buf[2048], *p;
	unsigned long ut = 0, st = 0;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* Fields after the command name, which may hold spaces: state is
	 * field 3, utime 14, stime 15. */
	p = strrchr(buf, ')');
	cr_assert_not_null(p);
	cr_assert_eq(sscanf(p + 2,
			    "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
			    "%lu %lu",
			    &ut, &st),
		     2);
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

int h2t_proc_fds(pid_t pid)
{
	char path[64];
	struct dirent *e;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	cr_assert_not_null(d, "%s: %s", path, strerror(errno));
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

uint64_t h2t_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double h2t_now_ms(void)
{
	return (double)h2t_now_ns() / 1e6;
}

bool h2t_sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	return true;
#else
	return false;
#endif
}
