/*
 * Hostile clients against a real h2d, over TLS: malformed frames, lies
 * about lengths, offsets near 2^64, names at and far past the limit,
 * truncated frames, garbage after a valid frame, requests before Hello
 * and after the client's close_notify.  Each gets a defined answer (an
 * error status on a connection that stays up) or a defined disconnect
 * (after the replies owed), and the server keeps serving everybody else.
 *
 * These talk raw TLS (raw.h) and build frames with proto/frame.h, so
 * they can send what libh2client never would.  The resource attacks
 * (stalled handshakes, clients that never read, connection storms) are
 * in test_hostile_load.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "harness.h"
#include "nbd_proto.h"
#include "raw.h"

#define MiB	 (1024ull * 1024)
#define VOL_SIZE (64 * MiB)

static struct h2t_srv srv;

static void setup(void)
{
	h2t_start(&srv, NULL);
}

static void teardown(void)
{
	h2t_cleanup(&srv);
}

/* A healthy client still gets answers. */
static void server_still_serves(void)
{
	struct h2t_raw *r = h2t_raw_connect(&srv);
	H2__Request q = H2__REQUEST__INIT;
	H2__Ping p = H2__PING__INIT;
	H2__Response *resp;

	h2t_raw_hello(r);
	q.id = 77;
	q.op_case = H2__REQUEST__OP_PING;
	q.ping = &p;
	resp = h2t_raw_call(r, &q);
	cr_assert_eq(resp->status, H2__STATUS__OK);
	h2_frame_response_free(resp);
	h2t_raw_close(r);
}

/* Send raw bytes after Hello, expect a disconnect, check the server. */
static void bytes_disconnect(const void *bytes, size_t len)
{
	struct h2t_raw *r = h2t_raw_connect(&srv);

	h2t_raw_hello(r);
	h2t_raw_send(r, bytes, len);
	h2t_raw_expect_closed(r);
	h2t_raw_close(r);
	server_still_serves();
}

/* Expect one response with id and status. */
static void expect_status(struct h2t_raw *r, uint64_t id, H2__Status status)
{
	H2__Response *resp = h2t_raw_recv(r);

	cr_assert_not_null(resp, "closed instead of answering %lu",
			   (unsigned long)id);
	cr_assert_eq(resp->id, id,
		     "got a reply to %lu (status %d: %s) "
		     "instead of %lu",
		     (unsigned long)resp->id, resp->status, resp->message,
		     (unsigned long)id);
	cr_assert_eq(resp->status, status,
		     "request %lu: status %d (%s), "
		     "expected %d",
		     (unsigned long)id, resp->status, resp->message, status);
	h2_frame_response_free(resp);
}

/* Send q as request *id (then the next id) and expect status. */
static void call_expect(struct h2t_raw *r, H2__Request *q, uint64_t *id,
			H2__Status status)
{
	q->id = (*id)++;
	h2t_raw_send_req(r, q, NULL, 0);
	expect_status(r, q->id, status);
}

static void send_read(struct h2t_raw *r, uint64_t id, uint64_t handle,
		      uint64_t off, uint64_t len)
{
	H2__Request q = H2__REQUEST__INIT;
	H2__Read rd = H2__READ__INIT;

	rd.handle = handle;
	rd.offset = off;
	rd.length = len;
	q.id = id;
	q.op_case = H2__REQUEST__OP_READ;
	q.read = &rd;
	h2t_raw_send_req(r, &q, NULL, 0);
}

static void send_write(struct h2t_raw *r, uint64_t id, uint64_t handle,
		       uint64_t off, const void *data, size_t len)
{
	H2__Request q = H2__REQUEST__INIT;
	H2__Write w = H2__WRITE__INIT;

	w.handle = handle;
	w.offset = off;
	q.id = id;
	q.op_case = H2__REQUEST__OP_WRITE;
	q.write = &w;
	h2t_raw_send_req(r, &q, data, len);
}

TestSuite(hostile, .init = setup, .fini = teardown);

/* ---------------------------------------------------------------------- */
/* Frame lengths.                                                         */

Test(hostile, header_length_0xffffffff_disconnects)
{
	uint8_t prefix[4] = {0xff, 0xff, 0xff, 0xff};

	bytes_disconnect(prefix, sizeof(prefix));
}

Test(hostile, header_length_zero_disconnects)
{
	uint8_t prefix[4] = {0, 0, 0, 0};

	bytes_disconnect(prefix, sizeof(prefix));
}

/*
 * The header limit's edge: a header of exactly H2_FRAME_MAX_HEADER bytes
 * is read and answered, one byte more is refused as soon as its length
 * prefix arrives.  The header is a VolumeCreate whose name fills it.
 */
Test(hostile, header_length_limit_edge)
{
	struct h2t_raw *r = h2t_raw_connect(&srv);
	H2__Request q = H2__REQUEST__INIT;
	H2__VolumeCreate vc = H2__VOLUME_CREATE__INIT;
	size_t cap = H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER + 16;
	uint8_t *frame = malloc(cap);
	char *name = malloc(H2_FRAME_MAX_HEADER);
	size_t lo = 1, hi = H2_FRAME_MAX_HEADER;
	size_t hdr = 0;

	cr_assert(frame && name);
	h2t_raw_hello(r);
	q.id = 31;
	q.op_case = H2__REQUEST__OP_VOLUME_CREATE;
	q.volume_create = &vc;
	vc.name = name;
	/* The name length whose header is exactly the limit. */
	while (lo <= hi) {
		size_t mid = (lo + hi) / 2;

		memset(name, 'n', mid);
		name[mid] = 0;
		hdr = h2_frame_request_size(&q) - H2_FRAME_PREFIX;
		if (hdr == H2_FRAME_MAX_HEADER)
			break;
		if (hdr < H2_FRAME_MAX_HEADER)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	cr_assert_eq(hdr, H2_FRAME_MAX_HEADER);
	cr_assert_eq(h2_frame_pack_request(&q, frame, cap),
		     (int)(H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER));
	h2t_raw_send(r, frame, H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER);
	expect_status(r, 31, H2__STATUS__INVALID_ARGUMENT);
	server_still_serves();

	/* One byte more: only the prefix is needed to refuse it. */
	frame[0] = (uint8_t)((H2_FRAME_MAX_HEADER + 1) >> 24);
	frame[1] = (uint8_t)((H2_FRAME_MAX_HEADER + 1) >> 16);
	frame[2] = (uint8_t)((H2_FRAME_MAX_HEADER + 1) >> 8);
	frame[3] = (uint8_t)(H2_FRAME_MAX_HEADER + 1);
	h2t_raw_send(r, frame, H2_FRAME_PREFIX);
	h2t_raw_expect_closed(r);
	h2t_raw_close(r);
	free(frame);
	free(name);
	server_still_serves();
}

Test(hostile, garbage_protobuf_disconnects)
{
	uint8_t junk[4 + 12] = {0,    0,    0,	  12,	0xff, 0xff, 0xff, 0xff,
				0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

	bytes_disconnect(junk, sizeof(junk));
}

Test(hostile, huge_payload_length_gets_too_large)
{
	struct h2t_raw *r = h2t_raw_connect(&srv);
	H2__Request q = H2__REQUEST__INIT;
	H2__Write w = H2__WRITE__INIT;
	uint8_t hdr[256];
	int n;

	h2t_raw_hello(r);
	q.id = 9;
	q.op_case = H2__REQUEST__OP_WRITE;
	q.write = &w;
	q.payload_len = 1ull << 40;
	n = h2_frame_pack_request(&q, hdr, sizeof(hdr));
	h2t_raw_send(r, hdr, (size_t)n);
	expect_status(r, 9, H2__STATUS__TOO_LARGE);
	h2t_raw_expect_closed(r);
	h2t_raw_close(r);
	server_still_serves();
}

/*
 * The payload limit's edge (32 MiB): a write and a read of exactly the
 * limit succeed; a read of one byte more is TOO_LARGE on a connection
 * that stays up, a write of one byte more (whose payload cannot be
 * skipped without reading it) is TOO_LARGE and then a disconnect.
 */
Test(hostile, payload_limit_edge)
{
	struct h2t_raw *r = h2t_raw_connect(&srv);
	const size_t max = H2_FRAME_DEFAULT_MAX_PAYLOAD;
	uint8_t *data = malloc(max), hdr[256];
	H2__Request q = H2__REQUEST__INIT;
	H2__Write w = H2__WRITE__INIT;
	H2__Response *resp;
	uint64_t h;
	int n;

	cr_assert_not_null(data);
	h2t_pattern(data, max, 5);
	h2t_raw_hello(r);
	h = h2t_raw_open(r, "edge", VOL_SIZE);
	send_write(r, 40, h, 0, data, max);
	expect_status(r, 40, H2__STATUS__OK);
	send_read(r, 41, h, 0, max);
	resp = h2t_raw_recv(r);
	cr_assert_not_null(resp);
	cr_assert_eq(resp->status, H2__STATUS__OK, "%s", resp->message);
	cr_assert_eq(r->payload_len, max);
	cr_assert(memcmp(r->payload, data, max) == 0);
	h2_frame_response_free(resp);
	send_read(r, 42, h, 0, max + 1);
	expect_status(r, 42, H2__STATUS__TOO_LARGE);
	send_read(r, 43, h, 0, 4096); /* still up */
	expect_status(r, 43, H2__STATUS__OK);

	w.handle = h;
	q.id = 44;
	q.op_case = H2__REQUEST__OP_WRITE;
	q.write = &w;
	q.payload_len = max + 1;
	n = h2_frame_pack_request(&q, hdr, sizeof(hdr));
	h2t_raw_send(r, hdr, (size_t)n);
	expect_status(r, 44, H2__STATUS__TOO_LARGE);
	h2t_raw_expect_closed(r);
	h2t_raw_close(r);
	free(data);
	server_still_serves();
}

/* Zero lengths: INVALID_ARGUMENT for each, and the connection lives. */
Test(hostile, zero_lengths_are_invalid_argument)
{
	struct h2t_raw *r = h2t_raw_connect(&srv);
	H2__Request q = H2__REQUEST__INIT;
	H2__Trim tr = H2__TRIM__INIT;
	H2__WriteZeroes wz = H2__WRITE_ZEROES__INIT;
	H2__BlockStatus bs = H2__BLOCK_STATUS__INIT;
	H2__Txn txn = H2__TXN__INIT;
	H2__TxnOp op = H2__TXN_OP__INIT, *ops[1] = {&op};
	uint64_t h;

	h2t_raw_hello(r);
	h = h2t_raw_open(r, "zero", VOL_SIZE);
	send_read(r, 50, h, 4096, 0);
	expect_status(r, 50, H2__STATUS__INVALID_ARGUMENT);
	send_write(r, 51, h, 4096, NULL, 0);
	expect_status(r, 51, H2__STATUS__INVALID_ARGUMENT);

	tr.handle = h;
	tr.offset = 4096;
	q.id = 52;
	q.op_case = H2__REQUEST__OP_TRIM;
	q.trim = &tr;
	h2t_raw_send_req(r, &q, NULL, 0);
	expect_status(r, 52, H2__STATUS__INVALID_ARGUMENT);

	wz.handle = h;
	wz.offset = 4096;
	q.id = 53;
	q.op_case = H2__REQUEST__OP_WRITE_ZEROES;
	q.write_zeroes = &wz;
	h2t_raw_send_req(r, &q, NULL, 0);
	expect_status(r, 53, H2__STATUS__INVALID_ARGUMENT);

	bs.handle = h;
	bs.offset = 4096;
	q.id = 54;
	q.op_case = H2__REQUEST__OP_BLOCK_STATUS;
	q.block_status = &bs;
	h2t_raw_send_req(r, &q, NULL, 0);
	expect_status(r, 54, H2__STATUS__INVALID_ARGUMENT);

	/* A transaction with a zero-length trim, and one with no ops. */
	txn.handle = h;
	txn.n_ops = 1;
	txn.ops = ops;
	op.type = H2__TXN_OP__TYPE__TRIM;
	op.offset = 0;
	op.length = 0;
	q.id = 55;
	q.op_case = H2__REQUEST__OP_TXN;
	q.txn = &txn;
	h2t_raw_send_req(r, &q, NULL, 0);
	expect_status(r, 55, H2__STATUS__INVALID_ARGUMENT);

	send_read(r, 56, h, 0, 4096);
	expect_status(r, 56, H2__STATUS__OK);
	h2t_raw_close(r);
	server_still_serves();
}

Test(hostile, payload_shorter_than_announced_then_hangup)
{
	struct h2t_raw *r = h2t_raw_connect(&srv);
	H2__Request q = H2__REQUEST__INIT;
	H2__Write w = H2__WRITE__INIT;
	uint8_t hdr[256], data[1000] = {0};
	int n;

	h2t_raw_hello(r);
	w.handle = h2t_raw_open(r, "short", VOL_SIZE);
	q.id = 10;
	q.op_case = H2__REQUEST__OP_WRITE;
	q.write = &w;
	q.payload_len = 65536;
	n = h2_frame_pack_request(&q, hdr, sizeof(hdr));
	h2t_raw_send(r, hdr, (size_t)n);
	h2t_raw_send(r, data, sizeof(data));
	h2t_raw_close(r); /* the server is left waiting for 64536 bytes */
	server_still_serves();
}

/*
 * Frames cut short, then the client hangs up: in the length prefix, in
 * the header, in the payload.  Nothing is answered, nothing is executed
 * (the volume still reads as zeros), and the connection is gone from
 * the server's gauge.
 */
Test(hostile, truncated_frames_then_close)
{
	h2_client *c = h2t_connect(&srv);
	H2__Request q = H2__REQUEST__INIT;
	H2__Write w = H2__WRITE__INIT;
	uint8_t frame[512], data[4096], back[4096] = {0}, zero[4096] = {0};
	uint64_t nat = 0, nbd = 0;
	struct h2t_raw *r;
	h2_volume *v;
	size_t cuts[4];
	int n;

	memset(data, 0xab, sizeof(data));
	q.id = 60;
	q.op_case = H2__REQUEST__OP_WRITE;
	q.write = &w;
	q.payload_len = sizeof(data);
	for (size_t k = 0; k < 4; k++) {
		r = h2t_raw_connect(&srv);
		h2t_raw_hello(r);
		w.handle = h2t_raw_open(r, "cut", VOL_SIZE);
		n = h2_frame_pack_request(&q, frame, sizeof(frame));
		cr_assert_gt(n, 8);
		cuts[0] = 2;		 /* half the length prefix */
		cuts[1] = (size_t)n / 2; /* half the header */
		cuts[2] = (size_t)n - 1; /* all but the header's last byte */
		cuts[3] = (size_t)n;	 /* header, then half the payload */
		h2t_raw_send(r, frame, cuts[k]);
		if (k == 3)
			h2t_raw_send(r, data, sizeof(data) / 2);
		h2t_raw_close(r);
	}
	cr_assert(h2t_wait_conns(c, 1, 0, 20000, &nat, &nbd),
		  "open connections: %lu native, %lu nbd (want 1, 0)",
		  (unsigned long)nat, (unsigned long)nbd);
	cr_assert_eq(h2_volume_open(c, "cut", H2_OPEN_RO, &v), 0);
	cr_assert_eq(h2_pread(v, back, sizeof(back), 0), 0);
	cr_assert(memcmp(back, zero, sizeof(zero)) == 0,
		  "a truncated write was executed");
	h2_volume_close(v);
	h2_disconnect(c);
	server_still_serves();
}

/*
 * A valid frame followed by garbage in the same write: the valid request
 * is executed and answered, then the connection is closed.  Once with a
 * request answered at once (Ping), once with one that runs on a worker
 * (a Read), whose reply must not be lost to the close.
 */
Test(hostile, garbage_after_a_valid_frame_gets_reply_then_close)
{
	static const uint8_t junk[] = {0,    0,	   0,	 8,    0xff, 0xff,
				       0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	H2__Request q = H2__REQUEST__INIT;
	H2__Ping p = H2__PING__INIT;
	H2__Read rd = H2__READ__INIT;
	H2__Response *resp;
	uint8_t buf[512];
	struct h2t_raw *r;
	int n;

	for (int k = 0; k < 2; k++) {
		r = h2t_raw_connect(&srv);
		h2t_raw_hello(r);
		q.id = 70 + (uint64_t)k;
		if (k == 0) {
			q.op_case = H2__REQUEST__OP_PING;
			q.ping = &p;
		} else {
			rd.handle = h2t_raw_open(r, "gav", VOL_SIZE);
			rd.offset = 0;
			rd.length = 1 * MiB;
			q.op_case = H2__REQUEST__OP_READ;
			q.read = &rd;
		}
		q.payload_len = 0;
		n = h2_frame_pack_request(&q, buf, sizeof(buf) - sizeof(junk));
		cr_assert_gt(n, 0);
		memcpy(buf + n, junk, sizeof(junk));
		h2t_raw_send(r, buf, (size_t)n + sizeof(junk));
		resp = h2t_raw_recv(r);
		cr_assert_not_null(resp, "the valid request before the "
					 "garbage was not answered");
		cr_assert_eq(resp->id, q.id);
		cr_assert_eq(resp->status, H2__STATUS__OK, "%s", resp->message);
		if (k == 1)
			cr_assert_eq(r->payload_len, 1 * MiB);
		h2_frame_response_free(resp);
		h2t_raw_expect_closed(r);
		h2t_raw_close(r);
	}
	server_still_serves();
}

/* ---------------------------------------------------------------------- */
/* Offsets and lengths.                                                   */

/*
 * Offsets near 2^64 and offset + length overflowing past it, in every
 * request that takes a range: OUT_OF_RANGE, never a wrapped-around
 * range, and the connection stays up (a write's payload is consumed).
 */
Test(hostile, out_of_range_and_overflowing_offsets)
{
	struct h2t_raw *r = h2t_raw_connect(&srv);
	H2__Request q = H2__REQUEST__INIT;
	H2__Trim tr = H2__TRIM__INIT;
	H2__WriteZeroes wz = H2__WRITE_ZEROES__INIT;
	H2__BlockStatus bs = H2__BLOCK_STATUS__INIT;
	H2__Txn txn = H2__TXN__INIT;
	H2__TxnOp op = H2__TXN_OP__INIT, *ops[1] = {&op};
	static uint8_t data[8192], back[4096];
	/* (offset, length) pairs that are all out of a 64 MiB volume;
	 * several wrap around 2^64 to a small end. */
	const uint64_t bad[][2] = {
	    {UINT64_MAX, 1},
	    {UINT64_MAX - 100, 4096},
	    {UINT64_MAX - 4095, 8192},	       /* ends at 4096 after the wrap */
	    {1ull << 63, 1ull << 63},	       /* ends at exactly 2^64 = 0 */
	    {(1ull << 63) + 4096, 1ull << 63}, /* ends at 4096 */
	    {VOL_SIZE, 1},
	    {VOL_SIZE - 4096, 8192},
	};
	uint64_t id = 100, h;

	h2t_raw_hello(r);
	h = h2t_raw_open(r, "range", VOL_SIZE);
	memset(data, 0x5a, sizeof(data));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t off = bad[i][0], len = bad[i][1];
		/* Reads and writes carry at most 32 MiB: keep the range's
		 * end where it wraps by moving the offset instead. */
		uint64_t io_len = len > 8192 ? 8192 : len;
		uint64_t io_off = off + (len - io_len);

		send_read(r, id, h, io_off, io_len);
		expect_status(r, id++, H2__STATUS__OUT_OF_RANGE);
		send_write(r, id, h, io_off, data, io_len);
		expect_status(r, id++, H2__STATUS__OUT_OF_RANGE);

		tr.handle = h;
		tr.offset = off;
		tr.length = len;
		q.op_case = H2__REQUEST__OP_TRIM;
		q.trim = &tr;
		call_expect(r, &q, &id, H2__STATUS__OUT_OF_RANGE);

		wz.handle = h;
		wz.offset = off;
		wz.length = len;
		q.op_case = H2__REQUEST__OP_WRITE_ZEROES;
		q.write_zeroes = &wz;
		call_expect(r, &q, &id, H2__STATUS__OUT_OF_RANGE);

		bs.handle = h;
		bs.offset = off;
		bs.length = len;
		q.op_case = H2__REQUEST__OP_BLOCK_STATUS;
		q.block_status = &bs;
		call_expect(r, &q, &id, H2__STATUS__OUT_OF_RANGE);

		txn.handle = h;
		txn.n_ops = 1;
		txn.ops = ops;
		op.type = H2__TXN_OP__TYPE__WRITE;
		op.offset = io_off;
		op.length = io_len;
		q.op_case = H2__REQUEST__OP_TXN;
		q.txn = &txn;
		q.id = id;
		h2t_raw_send_req(r, &q, data, io_len);
		expect_status(r, id++, H2__STATUS__OUT_OF_RANGE);
		op.type = H2__TXN_OP__TYPE__ZERO;
		op.offset = off;
		op.length = len;
		call_expect(r, &q, &id, H2__STATUS__OUT_OF_RANGE);
	}

	/* None of it touched the start of the volume (where a wrapped
	 * range would land), and the edge itself is fine. */
	send_read(r, id, h, 0, sizeof(back));
	expect_status(r, id++, H2__STATUS__OK);
	send_read(r, id, h, VOL_SIZE - 4096, 4096);
	expect_status(r, id++, H2__STATUS__OK);
	h2t_raw_close(r);

	{
		h2_client *c = h2t_connect(&srv);
		h2_volume *v;
		uint8_t zero[4096] = {0};

		cr_assert_eq(h2_volume_open(c, "range", H2_OPEN_RO, &v), 0);
		cr_assert_eq(h2_pread(v, back, sizeof(back), 0), 0);
		cr_assert(memcmp(back, zero, sizeof(zero)) == 0,
			  "a wrapped-around range wrote at offset 0");
		h2_volume_close(v);
		h2_disconnect(c);
	}
}

Test(hostile, unknown_handles_and_unknown_ops)
{
	struct h2t_raw *r = h2t_raw_connect(&srv);
	/* A Request with id 5 and an op field number (99) this server does
	 * not know: tag 99 << 3 | 2 = 794 = varint 0x9a 0x06, length 0. */
	uint8_t frame[] = {0, 0, 0, 5, 0x08, 0x05, 0x9a, 0x06, 0x00};

	h2t_raw_hello(r);
	h2t_raw_send(r, frame, sizeof(frame));
	expect_status(r, 5, H2__STATUS__UNSUPPORTED);
	/* I/O on a handle never opened, and on handle 2^64 - 1. */
	send_read(r, 6, 999, 0, 4096);
	expect_status(r, 6, H2__STATUS__INVALID_ARGUMENT);
	send_read(r, 7, UINT64_MAX, 0, 4096);
	expect_status(r, 7, H2__STATUS__INVALID_ARGUMENT);
	h2t_raw_close(r);
	server_still_serves();
}

/* ---------------------------------------------------------------------- */
/* Names.                                                                 */

/* A name of n bytes of 'v' (caller frees). */
static char *long_name(size_t n)
{
	char *s = malloc(n + 1);

	cr_assert_not_null(s);
	memset(s, 'v', n);
	s[n] = 0;
	return s;
}

/*
 * Names are 1..127 bytes (core/h2core.h, H2_NAME_MAX): 127 works, 128,
 * 4096 and 4097 bytes are INVALID_ARGUMENT for volumes, snapshots, opens
 * of "VOLUME@SNAP" and clones, on a connection that stays up.
 */
Test(hostile, names_at_and_past_the_limit)
{
	struct h2t_raw *r = h2t_raw_connect(&srv);
	H2__Request q = H2__REQUEST__INIT;
	H2__VolumeCreate vc = H2__VOLUME_CREATE__INIT;
	H2__SnapshotCreate sc = H2__SNAPSHOT_CREATE__INIT;
	H2__VolumeOpen vo = H2__VOLUME_OPEN__INIT;
	H2__Clone cl = H2__CLONE__INIT;
	H2__VolumeInfoReq vi = H2__VOLUME_INFO_REQ__INIT;
	H2__Response *resp;
	char *ok = long_name(127);
	const size_t bad[] = {128, 4096, 4097};
	uint64_t id = 200;

	h2t_raw_hello(r);
	vc.name = ok;
	vc.size = VOL_SIZE;
	q.id = id++;
	q.op_case = H2__REQUEST__OP_VOLUME_CREATE;
	q.volume_create = &vc;
	resp = h2t_raw_call(r, &q);
	cr_assert_eq(resp->status, H2__STATUS__OK, "%s", resp->message);
	h2_frame_response_free(resp);
	sc.volume = ok;
	sc.name = ok;
	q.id = id++;
	q.op_case = H2__REQUEST__OP_SNAPSHOT_CREATE;
	q.snapshot_create = &sc;
	resp = h2t_raw_call(r, &q);
	cr_assert_eq(resp->status, H2__STATUS__OK, "%s", resp->message);
	h2_frame_response_free(resp);
	{
		/* "VOLUME@SNAP" of 127 + 1 + 127 bytes opens. */
		char full[256];

		snprintf(full, sizeof(full), "%s@%s", ok, ok);
		vo.name = full;
		q.id = id++;
		q.op_case = H2__REQUEST__OP_VOLUME_OPEN;
		q.volume_open = &vo;
		resp = h2t_raw_call(r, &q);
		cr_assert_eq(resp->status, H2__STATUS__OK, "%s", resp->message);
		h2_frame_response_free(resp);
	}

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *b = long_name(bad[i]);
		char *full = malloc(bad[i] + 129);

		cr_assert_not_null(full);
		vc.name = b;
		q.op_case = H2__REQUEST__OP_VOLUME_CREATE;
		q.volume_create = &vc;
		call_expect(r, &q, &id, H2__STATUS__INVALID_ARGUMENT);

		vi.name = b;
		q.op_case = H2__REQUEST__OP_VOLUME_INFO;
		q.volume_info = &vi;
		call_expect(r, &q, &id, H2__STATUS__INVALID_ARGUMENT);

		sc.volume = ok;
		sc.name = b;
		q.op_case = H2__REQUEST__OP_SNAPSHOT_CREATE;
		q.snapshot_create = &sc;
		call_expect(r, &q, &id, H2__STATUS__INVALID_ARGUMENT);
		sc.volume = b;
		sc.name = ok;
		call_expect(r, &q, &id, H2__STATUS__INVALID_ARGUMENT);

		/* Either side of the '@' too long. */
		sprintf(full, "%s@%s", ok, b);
		vo.name = full;
		q.op_case = H2__REQUEST__OP_VOLUME_OPEN;
		q.volume_open = &vo;
		call_expect(r, &q, &id, H2__STATUS__INVALID_ARGUMENT);
		sprintf(full, "%s@%s", b, ok);
		call_expect(r, &q, &id, H2__STATUS__INVALID_ARGUMENT);
		vo.name = b;
		call_expect(r, &q, &id, H2__STATUS__INVALID_ARGUMENT);

		cl.volume = ok;
		cl.snapshot = ok;
		cl.new_volume = b;
		q.op_case = H2__REQUEST__OP_CLONE;
		q.clone = &cl;
		call_expect(r, &q, &id, H2__STATUS__INVALID_ARGUMENT);
		cl.snapshot = b;
		cl.new_volume = ok;
		call_expect(r, &q, &id, H2__STATUS__INVALID_ARGUMENT);
		free(full);
		free(b);
	}
	h2t_raw_close(r);
	free(ok);
	server_still_serves();
}

/* ---------------------------------------------------------------------- */
/* Order of events.                                                       */

Test(hostile, request_before_hello_is_refused)
{
	struct h2t_raw *r = h2t_raw_connect(&srv);
	H2__Request q = H2__REQUEST__INIT;
	H2__VolumeList vl = H2__VOLUME_LIST__INIT;

	q.id = 4;
	q.op_case = H2__REQUEST__OP_VOLUME_LIST;
	q.volume_list = &vl;
	h2t_raw_send_req(r, &q, NULL, 0);
	expect_status(r, 4, H2__STATUS__FAILED_PRECONDITION);
	h2t_raw_expect_closed(r);
	h2t_raw_close(r);
	server_still_serves();
}

Test(hostile, second_hello_is_refused_and_connection_survives)
{
	struct h2t_raw *r = h2t_raw_connect(&srv);
	H2__Request q = H2__REQUEST__INIT;
	H2__Hello hl = H2__HELLO__INIT;
	H2__Ping p = H2__PING__INIT;

	h2t_raw_hello(r);
	hl.version = 1;
	q.id = 8;
	q.op_case = H2__REQUEST__OP_HELLO;
	q.hello = &hl;
	h2t_raw_send_req(r, &q, NULL, 0);
	expect_status(r, 8, H2__STATUS__FAILED_PRECONDITION);
	q.id = 9;
	q.op_case = H2__REQUEST__OP_PING;
	q.ping = &p;
	h2t_raw_send_req(r, &q, NULL, 0);
	expect_status(r, 9, H2__STATUS__OK);
	h2t_raw_close(r);
}

/*
 * After the client's close_notify: whatever follows it on the wire (a
 * replayed TLS record of an earlier write, plain garbage) is ignored,
 * the server closes the connection, and only what came before the
 * close_notify was executed.
 */
Test(hostile, requests_after_close_notify_are_ignored)
{
	h2_client *c = h2t_connect(&srv);
	struct h2t_raw *r = h2t_raw_connect(&srv);
	uint8_t a[4096], b[4096], back[4096], rec[16384];
	uint8_t junk[64];
	uint64_t nat = 0, nbd = 0, h;
	int reclen;
	h2_volume *v;
	BIO *wbio, *mem;
	ssize_t n;

	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	memset(junk, 0x17, sizeof(junk)); /* looks like application data */
	h2t_raw_hello(r);
	h = h2t_raw_open(r, "after", VOL_SIZE);

	/* A write of a, whose TLS records are kept as they are sent. */
	wbio = SSL_get_wbio(r->ssl);
	BIO_up_ref(wbio);
	mem = BIO_new(BIO_s_mem());
	cr_assert_not_null(mem);
	SSL_set0_wbio(r->ssl, mem);
	send_write(r, 90, h, 0, a, sizeof(a));
	reclen = BIO_read(mem, rec, sizeof(rec));
	cr_assert_gt(reclen, (int)sizeof(a));
	SSL_set0_wbio(r->ssl, wbio);
	cr_assert_eq(send(r->fd, rec, (size_t)reclen, 0), reclen);
	expect_status(r, 90, H2__STATUS__OK);
	/* Then b over it, then close_notify, then a's records again and
	 * something that looks like application data. */
	send_write(r, 91, h, 0, b, sizeof(b));
	expect_status(r, 91, H2__STATUS__OK);
	cr_assert_geq(SSL_shutdown(r->ssl), 0);
	n = send(r->fd, rec, (size_t)reclen, MSG_NOSIGNAL);
	(void)n; /* the server may have closed already */
	n = send(r->fd, junk, sizeof(junk), MSG_NOSIGNAL);
	(void)n;
	h2t_raw_expect_closed(r);
	h2t_raw_close(r);

	cr_assert(h2t_wait_conns(c, 1, 0, 20000, &nat, &nbd),
		  "open connections: %lu native (want 1)", (unsigned long)nat);
	cr_assert_eq(h2_volume_open(c, "after", H2_OPEN_RO, &v), 0);
	cr_assert_eq(h2_pread(v, back, sizeof(back), 0), 0);
	cr_assert(memcmp(back, b, sizeof(b)) == 0,
		  "a request after close_notify was executed");
	h2_volume_close(v);
	h2_disconnect(c);
	server_still_serves();
}

/* ---------------------------------------------------------------------- */
/* The NBD port's names (its own limit: the protocol's 4096 bytes).      */

TestSuite(hostile_nbd, .fini = teardown);

/*
 * An NBD export name is a volume name: the NBD string limit (4096 bytes)
 * is the option engine's, the 127-byte volume limit the lookup's.  4096
 * bytes is looked up and refused as unknown, 4097 refused as invalid
 * without a lookup; the session continues after both.
 */
Test(hostile_nbd, export_names_at_and_past_the_limit)
{
	const char *extra[] = {"--nbd-listen", "127.0.0.1:0", NULL};
	uint8_t g[NBD_GREETING_SIZE], f[4], h[NBD_OPT_HDR_SIZE];
	uint8_t rep[NBD_REP_HDR_SIZE], data[8192];
	const size_t lens[] = {4096, 4097};
	struct h2t_raw *r;
	int fd;

	h2t_start(&srv, extra);
	fd = h2t_tcp_connect(srv.nbd);
	cr_assert_eq(recv(fd, g, sizeof(g), MSG_WAITALL), (ssize_t)sizeof(g));
	f[0] = f[1] = f[2] = 0;
	f[3] = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;
	cr_assert_eq(send(fd, f, 4, 0), 4);
	memset(h, 0, sizeof(h));
	memcpy(h, "IHAVEOPT", 8);
	h[11] = NBD_OPT_STARTTLS;
	cr_assert_eq(send(fd, h, sizeof(h), 0), (ssize_t)sizeof(h));
	cr_assert_eq(recv(fd, rep, sizeof(rep), MSG_WAITALL),
		     (ssize_t)sizeof(rep));
	cr_assert_eq(rep[15], NBD_REP_ACK);
	r = h2t_raw_tls(&srv, fd);
	for (size_t i = 0; i < 2; i++) {
		size_t nl = lens[i];
		uint32_t olen = (uint32_t)(4 + nl + 2), type, rl;

		h[8] = h[9] = h[10] = 0;
		h[11] = NBD_OPT_GO;
		h[12] = (uint8_t)(olen >> 24);
		h[13] = (uint8_t)(olen >> 16);
		h[14] = (uint8_t)(olen >> 8);
		h[15] = (uint8_t)olen;
		data[0] = 0;
		data[1] = 0;
		data[2] = (uint8_t)(nl >> 8);
		data[3] = (uint8_t)nl;
		memset(data + 4, 'x', nl);
		data[4 + nl] = data[5 + nl] = 0;
		h2t_raw_send(r, h, sizeof(h));
		h2t_raw_send(r, data, olen);
		cr_assert(h2t_raw_read_exact(r, rep, sizeof(rep)),
			  "the server closed on a %zu-byte name", nl);
		type = (uint32_t)rep[12] << 24 | (uint32_t)rep[13] << 16 |
		       (uint32_t)rep[14] << 8 | rep[15];
		rl = (uint32_t)rep[16] << 24 | (uint32_t)rep[17] << 16 |
		     (uint32_t)rep[18] << 8 | rep[19];
		cr_assert_leq(rl, sizeof(data));
		cr_assert(h2t_raw_read_exact(r, data, rl));
		cr_assert_eq(type,
			     nl <= H2_NBD_NAME_MAX ? NBD_REP_ERR_UNKNOWN
						   : NBD_REP_ERR_INVALID,
			     "%zu-byte name: reply 0x%x", nl, type);
	}
	h2t_raw_close(r);
}
