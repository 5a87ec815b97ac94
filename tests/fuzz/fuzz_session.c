/*
 * fuzz_session.c - fuzz harness for a whole native-protocol session: the
 * real connection code (server/server.c: process_input, backpressure,
 * teardown), the real request handling (server/dispatch.c: validation,
 * rights, handles, jobs on the worker pool, replies) and the real engine
 * on an in-memory store, fed one client's byte stream.
 *
 * What is not real: TLS.  server.c is compiled with H2_FUZZ, which adds
 * h2_server_new_plain (no listener, TLS context or signals) and
 * h2_server_adopt (a bufferevent taken as a connection whose handshake
 * just verified an identity).  The "socket" is a libevent bufferevent
 * pair: the harness writes the input into one end and reads the replies
 * from the other, running the loop until nothing moves and no job is
 * left between each piece.
 *
 * Input: a control byte, then the client's bytes.
 *
 *   bits 0-1  identity: admin (admin:*), writer (write:a*, read:*),
 *             reader (read:*), stranger (no rules)
 *   bit 2     max_inflight 2 (else 64): reading pauses and resumes
 *   bit 3     max_inflight_bytes 64 KiB (else 64 MiB)
 *   bits 4-7  k: the bytes arrive in pieces of 2^(k+3) bytes (0: at once)
 *
 * The store (built once, copied for each input): volume a (1 MiB, some
 * data) with snapshot s1, volume b (64 KiB), on a 64 MiB device, with the
 * flusher running (dirty_max 4 MiB).
 *
 * FUZZ_TRACE=1 in the environment prints the requests, the replies and
 * the server's debug log.
 *
 * Beyond crashes, leaks and hangs, the harness checks what a client can
 * rely on: every reply is a well-formed frame with a known status,
 * answering a request the client sent (no id answered more often than it
 * was sent); while the server keeps the connection open, every complete
 * request is answered; the first reply answers Hello or refuses what came
 * instead; whatever the session did, the store closes without error
 * and checks clean (checked once when it is built; a session after which
 * the device saw no write is not checked again); and no transaction's
 * install phase allocated more than it set aside beforehand
 * (h2_store_stats.unreserved_allocs).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "check.h"
#include "config.h"
#include "frame.h"
#include "fuzz.h"
#include "h2core.h"
#include "log.h"
#include "server.h"
#include "srv.h"

#define FZ_DEV_SIZE  (64ull << 20)
#define FZ_MAX_SPINS 1000000
#define FZ_HANG_SEC  30 /* a job taking longer is stuck */

static const char *const fz_ids[4] = {"admin", "writer", "reader", "stranger"};

static struct h2_fdev *fz_base; /* the store every input starts from */
static bool fz_trace;		/* FUZZ_TRACE set: print the session */

/* What the inputs reached (fuzz_report). */
static struct {
	uint64_t inputs, requests, replies, ok, errors, closed_by_server,
	    payload_replies, unwritten, status[32];
} fz_stats;

/* One session's client end. */
struct fz_client {
	struct bufferevent *bev;
	uint8_t *out; /* replies received */
	size_t outlen, outcap;
	bool closed; /* the server closed the connection */
};

static void fz_fail(const char *what, int r)
{
	fprintf(stderr, "fuzz_session: %s: %s (%s)\n", what, strerror(-r),
		h2_core_errmsg());
	abort();
}

/* ---------------------------------------------------------------------- */
/* The store.                                                             */

static void fz_write(struct h2_store *st, const char *name, uint64_t off,
		     size_t len, uint8_t fill)
{
	static uint8_t buf[64 << 10];
	struct h2_vol *v;
	int r;

	memset(buf, fill, len);
	if ((r = h2_vol_open(st, name, &v)) < 0)
		fz_fail("open", r);
	if ((r = h2_vol_write(v, buf, off, len, 0)) < 0)
		fz_fail("write", r);
	h2_vol_close(v);
}

static void fz_init(void)
{
	struct h2_store_opts so = {.no_flusher = true};
	struct h2_format_opts fo = {0};
	struct h2_check_report *rep;
	struct h2_store *st;
	int r;

	if (fz_base)
		return;
	fz_trace = getenv("FUZZ_TRACE") != NULL;
	h2_log_set_level(fz_trace ? H2_LOG_DEBUG : H2_LOG_ERROR);
	if ((r = h2_fdev_create(FZ_DEV_SIZE, &fz_base)) < 0)
		fz_fail("device", r);
	if ((r = h2_store_format(h2_fdev_dev(fz_base), &fo)) < 0)
		fz_fail("format", r);
	if ((r = h2_store_open(h2_fdev_dev(fz_base), &so, &st)) < 0)
		fz_fail("open the store", r);
	if ((r = h2_vol_create(st, "a", 1 << 20, NULL)) < 0)
		fz_fail("create a", r);
	if ((r = h2_vol_create(st, "b", 64 << 10, NULL)) < 0)
		fz_fail("create b", r);
	fz_write(st, "a", 0, 8192, 0xa1);
	fz_write(st, "a", 512 << 10, 4096, 0xa2);
	fz_write(st, "b", 0, 64 << 10, 0xb1);
	if ((r = h2_snap_create(st, "a", "s1", NULL)) < 0)
		fz_fail("snapshot", r);
	fz_write(st, "a", 4096, 4096, 0xa3);
	if ((r = h2_store_close(st)) < 0)
		fz_fail("close", r);
	/* Checked once here: a session that writes nothing leaves it so. */
	FUZZ_CHECK(h2_check(h2_fdev_dev(fz_base), &rep) == 0);
	FUZZ_CHECK(rep->status == H2_CHECK_CLEAN);
	h2_check_report_free(rep);
}

/* ---------------------------------------------------------------------- */
/* The client end and the loop.                                           */

/* The loop's only timer: it blocks while a worker runs, and firing means
 * a job is stuck. */
static void fz_hang(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	FUZZ_CHECK(!"a request has run for FZ_HANG_SEC seconds");
}

/* Move the replies that arrived into cl->out. */
static size_t fz_drain(struct fz_client *cl)
{
	struct evbuffer *in = bufferevent_get_input(cl->bev);
	size_t n = evbuffer_get_length(in);

	if (!n)
		return 0;
	if (cl->outlen + n > cl->outcap) {
		cl->outcap = 2 * (cl->outlen + n);
		cl->out = realloc(cl->out, cl->outcap);
		FUZZ_CHECK(cl->out);
	}
	FUZZ_CHECK(evbuffer_remove(in, cl->out + cl->outlen, n) == (int)n);
	cl->outlen += n;
	return n;
}

/* Bytes queued anywhere between the two ends. */
static size_t fz_queued(struct fz_client *cl)
{
	return evbuffer_get_length(bufferevent_get_output(cl->bev));
}

/*
 * Run the loop until no job is left and nothing moves any more.  (The
 * bufferevent pair moves bytes in deferred callbacks, which a
 * non-blocking pass runs; a job's completion wakes a blocking one.)
 */
static void fz_settle(struct h2_server *srv, struct fz_client *cl)
{
	struct event_base *base = h2_server_base(srv);

	for (unsigned spins = 0;; spins++) {
		size_t queued = cl ? fz_queued(cl) : 0, got = 0;

		FUZZ_CHECK(spins < FZ_MAX_SPINS);
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (cl)
			got = fz_drain(cl);
		if (h2_pool_pending(srv->pool)) {
			event_base_loop(base, EVLOOP_ONCE);
			continue;
		}
		if (!got && (!cl || fz_queued(cl) == queued))
			break;
	}
	if (cl && !srv->conns)
		cl->closed = true;
}

/* ---------------------------------------------------------------------- */
/* What was sent, and what came back.                                     */

struct fz_sent {
	uint64_t *ids; /* complete requests, in order */
	size_t n, cap;
	bool first_is_hello;
};

/* "volume_open" for H2__REQUEST__OP_VOLUME_OPEN (FUZZ_TRACE). */
static const char *fz_op_name(int op)
{
	const ProtobufCFieldDescriptor *f =
	    protobuf_c_message_descriptor_get_field(&h2__request__descriptor,
						    (unsigned)op);

	return f ? f->name : "(none)";
}

/* One line about a request (FUZZ_TRACE). */
static void fz_trace_req(const H2__Request *r, uint64_t payload, bool whole)
{
	unsigned long long a = 0, b = 0, c = 0;
	const char *name = "";

	switch (r->op_case) {
	case H2__REQUEST__OP_READ:
		a = r->read->handle, b = r->read->offset, c = r->read->length;
		break;
	case H2__REQUEST__OP_WRITE:
		a = r->write->handle, b = r->write->offset, c = payload;
		break;
	case H2__REQUEST__OP_TRIM:
		a = r->trim->handle, b = r->trim->offset, c = r->trim->length;
		break;
	case H2__REQUEST__OP_WRITE_ZEROES:
		a = r->write_zeroes->handle, b = r->write_zeroes->offset;
		c = r->write_zeroes->length;
		name = r->write_zeroes->no_hole ? "no_hole" : "";
		break;
	case H2__REQUEST__OP_BLOCK_STATUS:
		a = r->block_status->handle, b = r->block_status->offset;
		c = r->block_status->length;
		break;
	case H2__REQUEST__OP_VOLUME_RESIZE:
		name = r->volume_resize->name, b = r->volume_resize->size;
		break;
	case H2__REQUEST__OP_VOLUME_CREATE:
		name = r->volume_create->name, b = r->volume_create->size;
		break;
	case H2__REQUEST__OP_VOLUME_OPEN:
		name = r->volume_open->name, a = r->volume_open->write;
		break;
	default:
		break;
	}
	fprintf(stderr, "request %llu: %s %s %llu %llu %llu, payload %llu%s\n",
		(unsigned long long)r->id, fz_op_name(r->op_case), name, a, b,
		c, (unsigned long long)payload, whole ? "" : " (cut short)");
}

/* The complete requests of the input, decoded as the server does. */
static void fz_requests(const uint8_t *d, size_t n, struct fz_sent *s)
{
	const struct h2_frame_limits lim = {.max_header = H2_FRAME_MAX_HEADER,
					    .max_payload = H2_MAX_IO};
	size_t at = 0;

	while (at < n) {
		struct h2_frame_info info;
		H2__Request *req = NULL;
		int r =
		    h2_frame_decode_request(&lim, d + at, n - at, &info, &req);
		bool whole;

		if (r == -EFBIG) {
			/* Answered (TOO_LARGE), then the connection ends. */
			r = 0;
			info.payload_len = 0;
		} else if (r < 0 || r == H2_FRAME_NEED_MORE) {
			break;
		}
		whole = info.payload_len <= n - at - info.header_bytes;
		if (fz_trace && req)
			fz_trace_req(req, info.payload_len, whole);
		if (whole) {
			if (s->n == s->cap) {
				s->cap = s->cap ? 2 * s->cap : 64;
				s->ids =
				    realloc(s->ids, s->cap * sizeof(*s->ids));
				FUZZ_CHECK(s->ids);
			}
			if (s->n == 0)
				s->first_is_hello =
				    req &&
				    req->op_case == H2__REQUEST__OP_HELLO;
			s->ids[s->n++] = info.id;
		}
		h2_frame_request_free(req);
		if (!whole || !req)
			break;
		at += info.header_bytes + (size_t)info.payload_len;
	}
}

/* Every reply is a whole frame answering a request that was sent. */
static void fz_check_replies(const struct fz_client *cl, struct fz_sent *s)
{
	const struct h2_frame_limits lim = {.max_header = H2_FRAME_MAX_HEADER,
					    .max_payload = H2_MAX_IO};
	size_t at = 0, nreplies = 0;

	while (at < cl->outlen) {
		struct h2_frame_info info;
		H2__Response *resp = NULL;
		int r = h2_frame_decode_response(&lim, cl->out + at,
						 cl->outlen - at, &info, &resp);
		size_t k;

		FUZZ_CHECK(r == 0);
		FUZZ_CHECK(info.payload_len <=
			   cl->outlen - at - info.header_bytes);
		FUZZ_CHECK(strcmp(h2_status_name(resp->status), "UNKNOWN"));
		if (fz_trace)
			fprintf(stderr, "reply %llu: %s %s\n",
				(unsigned long long)info.id,
				h2_status_name(resp->status), resp->message);
		if (nreplies == 0 && s->n) {
			/* Hello first, or a refusal of what came instead. */
			if (s->first_is_hello && resp->status == 0)
				FUZZ_CHECK(resp->result_case ==
					   H2__RESPONSE__RESULT_HELLO);
			if (!s->first_is_hello)
				FUZZ_CHECK(resp->status != 0);
		}
		if (info.payload_len)
			FUZZ_CHECK(resp->status == 0);
		/* Take one request with this id off the list. */
		for (k = 0; k < s->n && s->ids[k] != info.id; k++)
			;
		FUZZ_CHECK(k < s->n);
		s->ids[k] = s->ids[--s->n];
		fz_stats.status[resp->status & 31]++;
		resp->status == 0 ? fz_stats.ok++ : fz_stats.errors++;
		if (info.payload_len)
			fz_stats.payload_replies++;
		h2_frame_response_free(resp);
		at += info.header_bytes + (size_t)info.payload_len;
		nreplies++;
	}
	fz_stats.replies += nreplies;
	/* Still open: every complete request was answered. */
	if (!cl->closed)
		FUZZ_CHECK(s->n == 0);
}

/* ---------------------------------------------------------------------- */

static void fz_config(struct h2_config *cfg, uint8_t ctl)
{
	char err[256];

	h2_config_defaults(cfg);
	cfg->workers = 1;
	if (ctl & 4)
		cfg->max_inflight = 2;
	if (ctl & 8)
		cfg->max_inflight_bytes = 64 << 10;
	cfg->acl = h2_acl_new();
	FUZZ_CHECK(cfg->acl);
	FUZZ_CHECK(h2_acl_add(cfg->acl, "admin", "admin:*", err, sizeof(err)) ==
		   0);
	FUZZ_CHECK(h2_acl_add(cfg->acl, "writer", "write:a*, read:*", err,
			      sizeof(err)) == 0);
	FUZZ_CHECK(h2_acl_add(cfg->acl, "reader", "read:*", err, sizeof(err)) ==
		   0);
}

/* The store the session left must check clean. */
static void fz_check_clean(struct h2_fdev *fd)
{
	struct h2_check_report *rep;

	FUZZ_CHECK(h2_check(h2_fdev_dev(fd), &rep) == 0);
	if (rep->status != H2_CHECK_CLEAN) {
		for (size_t i = 0; i < rep->nproblems; i++)
			fprintf(stderr, "  %s: %s\n", rep->problems[i].where,
				rep->problems[i].what);
		FUZZ_CHECK(!"the session left a store that does not check "
			    "clean");
	}
	h2_check_report_free(rep);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct h2_store_opts so = {.dirty_max = 4 << 20,
				   .flush_interval_ms = 60000};
	struct timeval hang = {FZ_HANG_SEC, 0};
	struct h2_crash_spec spec = {0};
	struct h2_fdev_fault_stats writes;
	struct event *tick;
	struct fz_client cl = {0};
	struct fz_sent sent = {0};
	struct bufferevent *pair[2];
	struct h2_config cfg;
	struct h2_server *srv;
	struct h2_store *st;
	struct h2_fdev *fd;
	size_t piece, at;
	uint8_t ctl;
	int r;

	fz_init();
	if (size < 1)
		return 0;
	fz_stats.inputs++;
	ctl = data[0];
	data++;
	size--;
	piece = ctl >> 4 ? (size_t)1 << ((ctl >> 4) + 3) : size;

	if ((r = h2_fdev_crash_image(fz_base, &spec, &fd)) < 0)
		fz_fail("copy the store", r);
	/* A rule that fails nothing, to count the writes. */
	h2_fdev_fault_set(fd, &(struct h2_fdev_fault){.op = H2_FDEV_WRITE});
	if ((r = h2_store_open(h2_fdev_dev(fd), &so, &st)) < 0)
		fz_fail("open the store", r);
	fz_config(&cfg, ctl);
	FUZZ_CHECK(h2_server_new_plain(&cfg, st, &srv) == 0);
	tick = event_new(h2_server_base(srv), -1, EV_PERSIST, fz_hang, NULL);
	FUZZ_CHECK(tick && event_add(tick, &hang) == 0);
	FUZZ_CHECK(bufferevent_pair_new(h2_server_base(srv), 0, pair) == 0);
	cl.bev = pair[1];
	bufferevent_enable(cl.bev, EV_READ | EV_WRITE);
	FUZZ_CHECK(h2_server_adopt(srv, pair[0], fz_ids[ctl & 3]) == 0);

	for (at = 0; at < size; at += piece) {
		size_t n = size - at < piece ? size - at : piece;

		FUZZ_CHECK(bufferevent_write(cl.bev, data + at, n) == 0);
		fz_settle(srv, &cl);
	}
	fz_settle(srv, &cl);
	fz_requests(data, size, &sent);
	fz_stats.requests += sent.n;
	fz_check_replies(&cl, &sent);
	if (cl.closed)
		fz_stats.closed_by_server++;

	/* The client goes away; what it started finishes. */
	bufferevent_free(cl.bev);
	fz_settle(srv, NULL);
	event_free(tick);
	h2_server_free(srv);
	h2_config_free(&cfg);
	{
		struct h2_store_stats ss;

		/* Every install phase found what it set aside enough. */
		h2_store_stat(st, &ss);
		FUZZ_CHECK(ss.unreserved_allocs == 0);
	}
	r = h2_store_close(st);
	if (r < 0)
		fz_fail("closing the store after the session", r);
	/* Nothing written: the device is still the image fz_init checked. */
	h2_fdev_fault_stats(fd, &writes);
	if (writes.seen)
		fz_check_clean(fd);
	else
		fz_stats.unwritten++;
	h2_fdev_free(fd);
	free(cl.out);
	free(sent.ids);
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Seeds and the corpus report (fuzz_main).                               */

struct fz_script {
	struct h2_frame_buf b;
	uint64_t id;
};

static void sc_req(struct fz_script *s, H2__Request *r, const void *payload,
		   size_t len)
{
	r->id = ++s->id;
	r->payload_len = len;
	FUZZ_CHECK(h2_frame_append_request(&s->b, r) == 0);
	if (len)
		FUZZ_CHECK(h2_frame_buf_append(&s->b, payload, len) == 0);
}

static void sc_start(struct fz_script *s, uint8_t ctl, bool hello)
{
	H2__Request r = H2__REQUEST__INIT;
	H2__Hello h = H2__HELLO__INIT;

	s->b.len = 0;
	s->id = 0;
	FUZZ_CHECK(h2_frame_buf_append(&s->b, &ctl, 1) == 0);
	if (!hello)
		return;
	h.version = 1;
	h.client_name = "fuzz";
	r.op_case = H2__REQUEST__OP_HELLO;
	r.hello = &h;
	sc_req(s, &r, NULL, 0);
}

static void sc_open(struct fz_script *s, const char *name, bool write)
{
	H2__Request r = H2__REQUEST__INIT;
	H2__VolumeOpen o = H2__VOLUME_OPEN__INIT;

	o.name = (char *)name;
	o.write = write;
	r.op_case = H2__REQUEST__OP_VOLUME_OPEN;
	r.volume_open = &o;
	sc_req(s, &r, NULL, 0);
}

static void sc_io(struct fz_script *s, int op, uint64_t handle, uint64_t off,
		  uint64_t len, bool flag)
{
	static uint8_t payload[16 << 10];
	H2__Request r = H2__REQUEST__INIT;
	H2__Read rd = H2__READ__INIT;
	H2__Write wr = H2__WRITE__INIT;
	H2__Trim tr = H2__TRIM__INIT;
	H2__WriteZeroes wz = H2__WRITE_ZEROES__INIT;
	H2__Flush fl = H2__FLUSH__INIT;
	H2__BlockStatus bs = H2__BLOCK_STATUS__INIT;
	size_t plen = 0;

	memset(payload, 0x5c, sizeof(payload));
	r.op_case = op;
	switch (op) {
	case H2__REQUEST__OP_READ:
		rd.handle = handle, rd.offset = off, rd.length = len;
		r.read = &rd;
		break;
	case H2__REQUEST__OP_WRITE:
		wr.handle = handle, wr.offset = off, wr.fua = flag;
		r.write = &wr;
		plen = len;
		break;
	case H2__REQUEST__OP_TRIM:
		tr.handle = handle, tr.offset = off, tr.length = len;
		tr.fua = flag;
		r.trim = &tr;
		break;
	case H2__REQUEST__OP_WRITE_ZEROES:
		wz.handle = handle, wz.offset = off, wz.length = len;
		wz.no_hole = flag;
		r.write_zeroes = &wz;
		break;
	case H2__REQUEST__OP_FLUSH:
		fl.handle = handle;
		r.flush = &fl;
		break;
	default:
		bs.handle = handle, bs.offset = off, bs.length = len;
		r.block_status = &bs;
		break;
	}
	FUZZ_CHECK(plen <= sizeof(payload));
	sc_req(s, &r, payload, plen);
}

/* A request with a string or two and a number: the admin operations. */
static void sc_admin(struct fz_script *s, int op, const char *a, const char *b,
		     const char *c, uint64_t n)
{
	H2__Request r = H2__REQUEST__INIT;
	H2__VolumeCreate vc = H2__VOLUME_CREATE__INIT;
	H2__VolumeDelete vd = H2__VOLUME_DELETE__INIT;
	H2__VolumeResize vr = H2__VOLUME_RESIZE__INIT;
	H2__VolumeInfoReq vi = H2__VOLUME_INFO_REQ__INIT;
	H2__VolumeList vl = H2__VOLUME_LIST__INIT;
	H2__VolumeClose vcl = H2__VOLUME_CLOSE__INIT;
	H2__SnapshotCreate sc = H2__SNAPSHOT_CREATE__INIT;
	H2__SnapshotList sl = H2__SNAPSHOT_LIST__INIT;
	H2__SnapshotDelete sd = H2__SNAPSHOT_DELETE__INIT;
	H2__Clone cl = H2__CLONE__INIT;
	H2__Rollback rb = H2__ROLLBACK__INIT;
	H2__StatReq st = H2__STAT_REQ__INIT;
	H2__Ping pg = H2__PING__INIT;

	r.op_case = op;
	switch (op) {
	case H2__REQUEST__OP_VOLUME_CREATE:
		vc.name = (char *)a, vc.size = n;
		r.volume_create = &vc;
		break;
	case H2__REQUEST__OP_VOLUME_DELETE:
		vd.name = (char *)a, vd.recursive = n;
		r.volume_delete = &vd;
		break;
	case H2__REQUEST__OP_VOLUME_RESIZE:
		vr.name = (char *)a, vr.size = n;
		r.volume_resize = &vr;
		break;
	case H2__REQUEST__OP_VOLUME_INFO:
		vi.name = (char *)a;
		r.volume_info = &vi;
		break;
	case H2__REQUEST__OP_VOLUME_LIST:
		r.volume_list = &vl;
		break;
	case H2__REQUEST__OP_VOLUME_CLOSE:
		vcl.handle = n;
		r.volume_close = &vcl;
		break;
	case H2__REQUEST__OP_SNAPSHOT_CREATE:
		sc.volume = (char *)a, sc.name = (char *)b;
		r.snapshot_create = &sc;
		break;
	case H2__REQUEST__OP_SNAPSHOT_LIST:
		sl.volume = (char *)a;
		r.snapshot_list = &sl;
		break;
	case H2__REQUEST__OP_SNAPSHOT_DELETE:
		sd.volume = (char *)a, sd.name = (char *)b;
		r.snapshot_delete = &sd;
		break;
	case H2__REQUEST__OP_CLONE:
		cl.volume = (char *)a, cl.snapshot = (char *)b;
		cl.new_volume = (char *)c;
		r.clone = &cl;
		break;
	case H2__REQUEST__OP_ROLLBACK:
		rb.volume = (char *)a, rb.snapshot = (char *)b, rb.force = n;
		r.rollback = &rb;
		break;
	case H2__REQUEST__OP_STAT:
		st.volume = (char *)(a ? a : "");
		r.stat = &st;
		break;
	default:
		r.ping = &pg;
		break;
	}
	sc_req(s, &r, NULL, 0);
}

static void sc_txn(struct fz_script *s, uint64_t handle)
{
	static uint8_t payload[8192];
	H2__Request r = H2__REQUEST__INIT;
	H2__Txn t = H2__TXN__INIT;
	H2__TxnOp o[3] = {H2__TXN_OP__INIT, H2__TXN_OP__INIT, H2__TXN_OP__INIT};
	H2__TxnOp *ops[3] = {&o[0], &o[1], &o[2]};

	o[0].type = H2__TXN_OP__TYPE__WRITE, o[0].offset = 100;
	o[0].length = sizeof(payload);
	o[1].type = H2__TXN_OP__TYPE__TRIM, o[1].offset = 65536;
	o[1].length = 4096;
	o[2].type = H2__TXN_OP__TYPE__ZERO, o[2].offset = 200000;
	o[2].length = 5000, o[2].no_hole = true;
	t.handle = handle;
	t.n_ops = 3;
	t.ops = ops;
	r.op_case = H2__REQUEST__OP_TXN;
	r.txn = &t;
	sc_req(s, &r, payload, sizeof(payload));
}

enum {
	OP_READ = H2__REQUEST__OP_READ,
	OP_WRITE = H2__REQUEST__OP_WRITE,
	OP_TRIM = H2__REQUEST__OP_TRIM,
	OP_ZERO = H2__REQUEST__OP_WRITE_ZEROES,
	OP_FLUSH = H2__REQUEST__OP_FLUSH,
	OP_STATUS = H2__REQUEST__OP_BLOCK_STATUS,
};

void fuzz_seeds(fuzz_seed_fn emit, void *arg)
{
	struct fz_script s = {0};
	uint8_t huge[32];

	/* I/O on a volume: every operation, then close the handle. */
	sc_start(&s, 0x00, true);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_LIST, NULL, NULL, NULL, 0);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_INFO, "a", NULL, NULL, 0);
	sc_open(&s, "a", true);
	sc_io(&s, OP_WRITE, 1, 0, 4096, false);
	sc_io(&s, OP_WRITE, 1, 5000, 3000, true);
	sc_io(&s, OP_READ, 1, 0, 16384, false);
	sc_io(&s, OP_TRIM, 1, 4096, 4096, false);
	sc_io(&s, OP_ZERO, 1, 8192, 8192, true);
	sc_io(&s, OP_ZERO, 1, 65536, 4096, false);
	sc_txn(&s, 1);
	sc_io(&s, OP_STATUS, 1, 0, 1 << 20, false);
	sc_io(&s, OP_FLUSH, 1, 0, 0, false);
	sc_io(&s, OP_READ, 1, (1 << 20) - 10, 100, false); /* past the end */
	sc_admin(&s, H2__REQUEST__OP_VOLUME_CLOSE, NULL, NULL, NULL, 1);
	sc_io(&s, OP_READ, 1, 0, 10, false); /* closed handle */
	sc_admin(&s, H2__REQUEST__OP_STAT, NULL, NULL, NULL, 0);
	sc_admin(&s, H2__REQUEST__OP_PING, NULL, NULL, NULL, 0);
	emit(arg, "io", s.b.data, s.b.len);

	/* The same arriving 16 bytes at a time, two requests in flight. */
	s.b.data[0] = 0x14;
	emit(arg, "io-pieces-inflight-2", s.b.data, s.b.len);

	/* Volumes and snapshots: create, resize, snapshot, clone,
	 * rollback, delete. */
	sc_start(&s, 0x00, true);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_CREATE, "c", NULL, NULL, 1 << 20);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_CREATE, "c", NULL, NULL, 4096);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_RESIZE, "c", NULL, NULL, 3 << 20);
	sc_admin(&s, H2__REQUEST__OP_SNAPSHOT_CREATE, "a", "s2", NULL, 0);
	sc_admin(&s, H2__REQUEST__OP_SNAPSHOT_LIST, "", NULL, NULL, 0);
	sc_admin(&s, H2__REQUEST__OP_CLONE, "a", "s1", "d", 0);
	sc_admin(&s, H2__REQUEST__OP_ROLLBACK, "a", "s1", NULL, 1);
	sc_admin(&s, H2__REQUEST__OP_ROLLBACK, "a", "s2", NULL, 1);
	sc_admin(&s, H2__REQUEST__OP_SNAPSHOT_DELETE, "a", "s1", NULL, 0);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_DELETE, "d", NULL, NULL, 0);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_DELETE, "a", NULL, NULL, 1);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_INFO, "a", NULL, NULL, 0);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_DELETE, "c", NULL, NULL, 0);
	emit(arg, "admin", s.b.data, s.b.len);

	/* A snapshot is read-only; a writer's rights stop at a*. */
	sc_start(&s, 0x01, true);
	sc_open(&s, "a@s1", true);
	sc_open(&s, "a@s1", false);
	sc_io(&s, OP_READ, 2, 0, 8192, false);
	sc_io(&s, OP_WRITE, 2, 0, 512, false);
	sc_open(&s, "b", true);
	sc_open(&s, "b", false);
	sc_io(&s, OP_WRITE, 4, 0, 512, false);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_CREATE, "a2", NULL, NULL, 4096);
	sc_admin(&s, H2__REQUEST__OP_SNAPSHOT_CREATE, "b", "x", NULL, 0);
	emit(arg, "writer-rights", s.b.data, s.b.len);

	/* A stranger sees nothing. */
	sc_start(&s, 0x03, true);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_LIST, NULL, NULL, NULL, 0);
	sc_open(&s, "a", false);
	sc_admin(&s, H2__REQUEST__OP_STAT, "a", NULL, NULL, 0);
	emit(arg, "stranger", s.b.data, s.b.len);

	/* Anything before Hello is refused, and the session ends. */
	sc_start(&s, 0x00, false);
	sc_admin(&s, H2__REQUEST__OP_PING, NULL, NULL, NULL, 0);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_LIST, NULL, NULL, NULL, 0);
	emit(arg, "no-hello", s.b.data, s.b.len);

	/* Hello twice, then a payload over the limit. */
	sc_start(&s, 0x08, true);
	{
		H2__Request r = H2__REQUEST__INIT;
		H2__Hello h = H2__HELLO__INIT;
		H2__Write w = H2__WRITE__INIT;

		r.op_case = H2__REQUEST__OP_HELLO;
		r.hello = &h;
		sc_req(&s, &r, NULL, 0);
		sc_open(&s, "b", true);
		w.handle = 2;
		r.op_case = H2__REQUEST__OP_WRITE;
		r.write = &w;
		r.id = 99;
		r.payload_len = (32u << 20) + 1;
		FUZZ_CHECK(h2_frame_append_request(&s.b, &r) == 0);
	}
	memset(huge, 0, sizeof(huge));
	FUZZ_CHECK(h2_frame_buf_append(&s.b, huge, sizeof(huge)) == 0);
	emit(arg, "oversized-payload", s.b.data, s.b.len);

	/* Pipelined reads under a small in-flight limit, writes that fill
	 * the store. */
	sc_start(&s, 0x2c, true); /* 32-byte pieces: the open is done first */
	sc_open(&s, "a", true);
	for (int i = 0; i < 8; i++)
		sc_io(&s, OP_READ, 1, (uint64_t)i * 4096, 65536, false);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_RESIZE, "a", NULL, NULL,
		 1ull << 40);
	for (int i = 0; i < 4; i++)
		sc_io(&s, OP_ZERO, 1, (uint64_t)i << 25, 32u << 20, true);
	sc_io(&s, OP_STATUS, 1, 0, 1ull << 40, false);
	emit(arg, "inflight-and-full", s.b.data, s.b.len);

	/* Found by this harness (fixed in core/check.c): a volume grown
	 * taller than its snapshot, whose keys it then trimmed, left a
	 * store the checker could not account for. */
	sc_start(&s, 0x20, true);
	sc_open(&s, "a", true);
	sc_admin(&s, H2__REQUEST__OP_VOLUME_RESIZE, "a", NULL, NULL,
		 1ull << 40);
	sc_io(&s, OP_TRIM, 1, 0, 1 << 20, false);
	sc_io(&s, OP_WRITE, 1, 32 << 20, 4096, false);
	emit(arg, "regress-snapshot-space-grown-volume", s.b.data, s.b.len);
	h2_frame_buf_free(&s.b);
}

int fuzz_report(FILE *out)
{
	fprintf(out,
		"inputs %llu: requests %llu, replies %llu (ok %llu, errors "
		"%llu, with payload %llu), closed by the server %llu, "
		"nothing written (not checked again) %llu; statuses",
		(unsigned long long)fz_stats.inputs,
		(unsigned long long)fz_stats.requests,
		(unsigned long long)fz_stats.replies,
		(unsigned long long)fz_stats.ok,
		(unsigned long long)fz_stats.errors,
		(unsigned long long)fz_stats.payload_replies,
		(unsigned long long)fz_stats.closed_by_server,
		(unsigned long long)fz_stats.unwritten);
	for (int i = 0; i < 32; i++)
		if (fz_stats.status[i])
			fprintf(out, " %s %llu", h2_status_name(i),
				(unsigned long long)fz_stats.status[i]);
	fprintf(out, "\n");
	/* (Some inputs must write, or the check never runs.) */
	return fz_stats.ok && fz_stats.errors && fz_stats.payload_replies &&
		       fz_stats.closed_by_server &&
		       fz_stats.unwritten < fz_stats.inputs
		   ? 0
		   : 1;
}
