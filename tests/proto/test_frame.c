/* Wire framing: round trips, incremental decoding, limits, status codes. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "frame.h"
#include "samples.h"

/* Either message type, decoded. */
struct t_msg {
	bool is_request;
	H2__Request *req;
	H2__Response *resp;
};

static int t_decode(bool is_request, const struct h2_frame_limits *lim,
		    const void *buf, size_t len, struct h2_frame_info *info,
		    struct t_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->is_request = is_request;
	if (is_request)
		return h2_frame_decode_request(lim, buf, len, info, &m->req);
	return h2_frame_decode_response(lim, buf, len, info, &m->resp);
}

static int t_feed(bool is_request, struct h2_frame_decoder *dec,
		  const void *buf, size_t len, size_t *used,
		  struct h2_frame_info *info, struct t_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->is_request = is_request;
	if (is_request)
		return h2_frame_decoder_feed_request(dec, buf, len, used, info,
						     &m->req);
	return h2_frame_decoder_feed_response(dec, buf, len, used, info,
					      &m->resp);
}

/* Re-encode a decoded message into out; the byte count. */
static int t_pack(const struct t_msg *m, uint8_t *out, size_t cap)
{
	if (m->is_request)
		return h2_frame_pack_request(m->req, out, cap);
	return h2_frame_pack_response(m->resp, out, cap);
}

static void t_free(struct t_msg *m)
{
	h2_frame_request_free(m->req);
	h2_frame_response_free(m->resp);
}

/* Sample i's frame, header and payload. */
static struct h2_frame_buf t_sample_frame(size_t i)
{
	struct h2_frame_buf b = {0};

	t_samples[i].append(&b);
	return b;
}

/* Check that [frame, frame + header_bytes) re-encodes to itself from m. */
static void t_assert_reencodes(const struct t_msg *m, const uint8_t *frame,
			       size_t header_bytes, const char *name)
{
	uint8_t out[4096];
	int n = t_pack(m, out, sizeof(out));

	cr_assert_eq(n, (int)header_bytes, "%s: repacked %d", name, n);
	cr_assert_arr_eq(out, frame, header_bytes, "%s", name);
}

/* Payload bytes follow the header unchanged. */
static void t_assert_payload(const uint8_t *p, uint64_t id, uint64_t len,
			     const char *name)
{
	for (uint64_t i = 0; i < len; i++)
		cr_assert_eq(p[i], t_payload_byte(id, i), "%s: byte %lu", name,
			     (unsigned long)i);
}

ParameterizedTestParameters(frame, round_trip_keeps_header_and_payload)
{
	static int idx[T_NSAMPLES];

	for (size_t i = 0; i < T_NSAMPLES; i++)
		idx[i] = (int)i;
	return cr_make_param_array(int, idx, T_NSAMPLES);
}

ParameterizedTest(int *idx, frame, round_trip_keeps_header_and_payload)
{
	const struct t_sample *s = &t_samples[*idx];
	struct h2_frame_buf b = t_sample_frame((size_t)*idx);
	struct h2_frame_info info;
	struct t_msg m;
	int rc;

	rc = t_decode(s->is_request, NULL, b.data, b.len, &info, &m);
	cr_assert_eq(rc, 0, "%s: %d", s->name, rc);
	cr_assert_eq(info.header_bytes + info.payload_len, b.len, "%s",
		     s->name);
	cr_assert_eq(info.header_bytes,
		     s->is_request ? h2_frame_request_size(m.req)
				   : h2_frame_response_size(m.resp),
		     "%s", s->name);
	/* The prefix is the header length, big-endian. */
	cr_assert_eq((size_t)b.data[0] << 24 | (size_t)b.data[1] << 16 |
			     (size_t)b.data[2] << 8 | b.data[3],
		     info.header_bytes - H2_FRAME_PREFIX, "%s", s->name);
	cr_assert_eq(info.id, s->is_request ? m.req->id : m.resp->id);
	t_assert_reencodes(&m, b.data, info.header_bytes, s->name);
	t_assert_payload(b.data + info.header_bytes, info.id,
			 info.payload_len, s->name);
	t_free(&m);
	h2_frame_buf_free(&b);
}

Test(frame, round_trip_keeps_every_field)
{
	struct h2_frame_buf b = {0};
	struct h2_frame_info info;
	H2__Request *req;
	H2__Response *resp;
	size_t off;

	t_req_txn(&b);
	off = b.len;
	t_resp_volume_list(&b);

	cr_assert_eq(h2_frame_decode_request(NULL, b.data, off, &info, &req),
		     0);
	cr_assert_eq(req->id, 7);
	cr_assert_eq(req->payload_len, 512);
	cr_assert_eq(req->op_case, H2__REQUEST__OP_TXN);
	cr_assert_eq(req->txn->handle, 9);
	cr_assert(req->txn->fua);
	cr_assert_eq(req->txn->n_ops, 3);
	cr_assert_eq(req->txn->ops[1]->type, H2__TXN_OP__TYPE__TRIM);
	cr_assert_eq(req->txn->ops[1]->offset, 1 << 20);
	cr_assert(req->txn->ops[2]->no_hole);
	h2_frame_request_free(req);

	cr_assert_eq(h2_frame_decode_response(NULL, b.data + off, b.len - off,
					      &info, &resp),
		     0);
	cr_assert_eq(resp->status, H2__STATUS__OK);
	cr_assert_eq(resp->result_case, H2__RESPONSE__RESULT_VOLUME_LIST);
	cr_assert_eq(resp->volume_list->n_volumes, 2);
	cr_assert_str_eq(resp->volume_list->volumes[1]->name, "b@snap1");
	cr_assert_eq(resp->volume_list->volumes[0]->ctime_ns,
		     1700000000000000000ull);
	cr_assert(resp->volume_list->volumes[0]->can_write);
	cr_assert_not(resp->volume_list->volumes[1]->can_write);
	h2_frame_response_free(resp);
	h2_frame_buf_free(&b);
}

Test(frame, all_default_message_is_sent_as_two_byte_header)
{
	H2__Response r = H2__RESPONSE__INIT;
	H2__Response *got;
	struct h2_frame_info info;
	uint8_t out[16];

	/* protobuf packs this to 0 bytes, but hdr_len 0 is an error. */
	cr_assert_eq(h2__response__get_packed_size(&r), 0);
	cr_assert_eq(h2_frame_response_size(&r), 6);
	cr_assert_eq(h2_frame_pack_response(&r, out, sizeof(out)), 6);
	cr_assert_eq(out[3], 2);
	cr_assert_eq(h2_frame_decode_response(NULL, out, 6, &info, &got), 0);
	cr_assert_eq(got->id, 0);
	cr_assert_eq(got->status, H2__STATUS__OK);
	cr_assert_eq(got->result_case, H2__RESPONSE__RESULT__NOT_SET);
	h2_frame_response_free(got);
}

Test(frame, request_without_op_decodes_as_not_set)
{
	struct h2_frame_buf b = {0};
	struct h2_frame_info info;
	H2__Request *req;

	t_req_no_op(&b);
	cr_assert_eq(h2_frame_decode_request(NULL, b.data, b.len, &info, &req),
		     0);
	cr_assert_eq(req->op_case, H2__REQUEST__OP__NOT_SET);
	cr_assert_eq(info.id, 5);
	cr_assert_eq(info.payload_len, 3);
	h2_frame_request_free(req);
	h2_frame_buf_free(&b);
}

Test(frame, unknown_op_number_decodes_as_not_set)
{
	/* id = 9, then field 99 (length-delimited, empty): an op from a
	 * newer client.  The framing is sound, so the server can answer. */
	const uint8_t frame[] = {0, 0, 0, 5, 0x08, 0x09, 0x9a, 0x06, 0x00};
	struct h2_frame_info info;
	H2__Request *req;

	cr_assert_eq(h2_frame_decode_request(NULL, frame, sizeof(frame), &info,
					     &req),
		     0);
	cr_assert_eq(req->id, 9);
	cr_assert_eq(req->op_case, H2__REQUEST__OP__NOT_SET);
	h2_frame_request_free(req);
}

/* A stream of several frames, requests or responses, payloads included. */
static struct h2_frame_buf t_stream(bool is_request, size_t *nframes)
{
	struct h2_frame_buf b = {0};

	*nframes = 0;
	for (size_t i = 0; i < T_NSAMPLES; i++) {
		if (t_samples[i].is_request != is_request)
			continue;
		t_samples[i].append(&b);
		(*nframes)++;
	}
	return b;
}

Test(frame, stateless_decoder_waits_for_exactly_the_missing_bytes)
{
	for (int is_request = 0; is_request < 2; is_request++) {
		size_t nframes, pos = 0, frames = 0;
		struct h2_frame_buf b = t_stream(is_request, &nframes);

		while (pos < b.len) {
			struct h2_frame_info info;
			struct t_msg m;
			size_t len;
			int rc;

			/* One byte more per call, as if each arrived alone. */
			for (len = 0;; len++) {
				rc = t_decode(is_request, NULL, b.data + pos,
					      len, &info, &m);
				if (rc != H2_FRAME_NEED_MORE)
					break;
				if (len < H2_FRAME_PREFIX)
					cr_assert_eq(info.need,
						     H2_FRAME_PREFIX - len);
				else
					cr_assert_eq(len + info.need,
						     H2_FRAME_PREFIX +
							     b.data[pos + 3] +
							     256 * b.data[pos +
									  2]);
			}
			cr_assert_eq(rc, 0, "frame %zu: %d", frames, rc);
			cr_assert_eq(len, info.header_bytes);
			t_assert_reencodes(&m, b.data + pos, len, "stream");
			t_free(&m);
			pos += info.header_bytes + info.payload_len;
			frames++;
		}
		cr_assert_eq(pos, b.len);
		cr_assert_eq(frames, nframes);
		h2_frame_buf_free(&b);
	}
}

/* Feed a stream to a decoder in pieces of the given sizes (cycled). */
static void t_feed_stream(bool is_request, const size_t *pieces,
			  size_t npieces)
{
	size_t nframes, pos = 0, frames = 0, k = 0;
	struct h2_frame_buf b = t_stream(is_request, &nframes);
	struct h2_frame_decoder *dec = h2_frame_decoder_new(NULL);

	cr_assert_not_null(dec);
	while (pos < b.len) {
		size_t start = pos, piece = pieces[k++ % npieces], used;
		struct h2_frame_info info;
		struct t_msg m;
		int rc;

		for (;;) {
			if (piece > b.len - pos)
				piece = b.len - pos;
			rc = t_feed(is_request, dec, b.data + pos, piece,
				    &used, &info, &m);
			pos += used;
			if (rc != H2_FRAME_NEED_MORE)
				break;
			cr_assert_eq(used, piece);
			cr_assert_eq(h2_frame_decoder_pending(dec),
				     pos - start);
			piece = pieces[k++ % npieces];
		}
		cr_assert_eq(rc, 0, "frame %zu: %d", frames, rc);
		/* It stopped at the end of the header, not in the payload. */
		cr_assert_eq(pos - start, info.header_bytes);
		t_assert_reencodes(&m, b.data + start, info.header_bytes,
				   "pieces");
		/* The caller reads the payload itself. */
		cr_assert_leq(info.payload_len, b.len - pos);
		t_assert_payload(b.data + pos, info.id, info.payload_len,
				 "pieces");
		pos += info.payload_len;
		t_free(&m);
		frames++;
	}
	cr_assert_eq(frames, nframes);
	h2_frame_decoder_free(dec);
	h2_frame_buf_free(&b);
}

Test(frame, decoder_fed_one_byte_at_a_time)
{
	const size_t one = 1;

	t_feed_stream(true, &one, 1);
	t_feed_stream(false, &one, 1);
}

Test(frame, decoder_fed_uneven_pieces)
{
	const size_t pieces[] = {3, 1, 7, 2, 64, 5, 1000, 4, 9};

	t_feed_stream(true, pieces, 9);
	t_feed_stream(false, pieces, 9);
}

Test(frame, decoder_takes_no_bytes_past_the_header)
{
	struct h2_frame_buf b = {0};
	struct h2_frame_decoder *dec = h2_frame_decoder_new(NULL);
	struct h2_frame_info info;
	H2__Request *req;
	size_t used = 12345, next;

	cr_assert_not_null(dec);
	t_req_write(&b);
	t_req_hello(&b);
	cr_assert_eq(h2_frame_decoder_feed_request(dec, b.data, b.len, &used,
						   &info, &req),
		     0);
	cr_assert_eq(used, info.header_bytes);
	cr_assert_eq(info.payload_len, 4096);
	cr_assert_eq(h2_frame_decoder_pending(dec), 0);
	cr_assert_eq(req->op_case, H2__REQUEST__OP_WRITE);
	h2_frame_request_free(req);
	/* The caller skips the payload; the next frame starts after it.
	 * Kept apart from used, which every feed below overwrites. */
	next = used + 4096;
	/* An empty feed changes nothing and is not an error. */
	cr_assert_eq(h2_frame_decoder_feed_request(dec, NULL, 0, &used, &info,
						   &req),
		     H2_FRAME_NEED_MORE);
	cr_assert_eq(used, 0);
	cr_assert_eq(info.need, H2_FRAME_PREFIX);
	cr_assert_eq(h2_frame_decoder_pending(dec), 0);
	/* After the payload comes the next frame, which ends the buffer. */
	cr_assert_eq(h2_frame_decoder_feed_request(dec, b.data + next,
						   b.len - next, &used, &info,
						   &req),
		     0);
	cr_assert_eq(used, b.len - next);
	cr_assert_eq(used, info.header_bytes);
	cr_assert_eq(req->op_case, H2__REQUEST__OP_HELLO);
	cr_assert_str_eq(req->hello->client_name, "h2-test");
	h2_frame_request_free(req);
	h2_frame_decoder_free(dec);
	h2_frame_buf_free(&b);
}

Test(frame, decoder_accepts_empty_feeds_mid_frame)
{
	struct h2_frame_buf b = {0};
	struct h2_frame_decoder *dec = h2_frame_decoder_new(NULL);
	struct h2_frame_info info;
	H2__Request *req = NULL;
	size_t used;

	cr_assert_not_null(dec);
	t_req_hello(&b);
	/* Stop inside the prefix, then inside the header; at both points an
	 * empty feed (data NULL, as a reader with nothing new may pass) must
	 * take nothing and leave the state as it was. */
	cr_assert_gt(b.len, H2_FRAME_PREFIX + 2);
	for (int k = 0; k < 2; k++) {
		size_t stop = k == 0 ? 2 : b.len - 2, need;

		cr_assert_eq(h2_frame_decoder_feed_request(dec, b.data, stop,
							   &used, &info, &req),
			     H2_FRAME_NEED_MORE);
		need = info.need;
		cr_assert_eq(h2_frame_decoder_feed_request(dec, NULL, 0, &used,
							   &info, &req),
			     H2_FRAME_NEED_MORE);
		cr_assert_eq(used, 0);
		cr_assert_eq(info.need, need);
		cr_assert_eq(h2_frame_decoder_pending(dec), stop);
		cr_assert_eq(h2_frame_decoder_feed_request(dec, b.data + stop,
							   b.len - stop, &used,
							   &info, &req),
			     0);
		cr_assert_eq(used, b.len - stop);
		cr_assert_eq(req->op_case, H2__REQUEST__OP_HELLO);
		h2_frame_request_free(req);
		req = NULL;
	}
	h2_frame_decoder_free(dec);
	h2_frame_buf_free(&b);
}

/*
 * 4 readable bytes with a PROT_NONE page right after them: a decoder
 * that read past what it was given would fault.
 */
static uint8_t *t_guarded(const uint8_t *bytes, size_t n)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint8_t *p = mmap(NULL, 2 * (size_t)pg, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED);
	cr_assert_eq(mprotect(p + pg, (size_t)pg, PROT_NONE), 0);
	memcpy(p + pg - n, bytes, n);
	return p + pg - n;
}

/* Heap bytes in use, from glibc (zero under ASan, which replaces it). */
static size_t t_heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

Test(frame, huge_header_length_rejected_from_the_prefix_alone)
{
	const uint8_t prefix[4] = {0xff, 0xff, 0xff, 0xff};
	const uint8_t *p = t_guarded(prefix, 4);
	struct h2_frame_decoder *dec = h2_frame_decoder_new(NULL);
	struct h2_frame_info info;
	H2__Request *req = NULL;
	H2__Response *resp = NULL;
	size_t used, before;

	/* Refused on the 4 bytes: not NEED_MORE for 4 GiB. */
	cr_assert_eq(h2_frame_decode_request(NULL, p, 4, &info, &req),
		     -EMSGSIZE);
	cr_assert_eq(h2_frame_decode_response(NULL, p, 4, &info, &resp),
		     -EMSGSIZE);
	cr_assert_null(req);
	cr_assert_null(resp);

	/* The incremental decoder keeps its buffer; had it sized it from
	 * hdr_len, the heap would now hold 4 GiB more. */
	before = t_heap_in_use();
	cr_assert_eq(h2_frame_decoder_feed_request(dec, p, 4, &used, &info,
						   &req),
		     -EMSGSIZE);
	cr_assert_lt(t_heap_in_use() - before, 4096);
	cr_assert_eq(used, 4);
	cr_assert_null(req);
	h2_frame_decoder_free(dec);
}

struct heap_case {
	char name[32];
	bool is_request;
	uint32_t field; /* the op or result holding the elements; 0: none */
	uint8_t elem[2];
};

ParameterizedTestParameters(frame, decoded_header_heap_is_bounded)
{
	static struct heap_case cases[] = {
		{"empty VolumeInfos", false, 21, {0x0a, 0x00}},
		{"empty SnapshotInfos", false, 51, {0x0a, 0x00}},
		{"empty Extents", false, 32, {0x0a, 0x00}},
		{"empty TxnOps", true, 34, {0x12, 0x00}},
		{"empty features", true, 10, {0x1a, 0x00}},
		{"unknown fields", true, 0, {0x78, 0x00}},
	};

	return cr_make_param_array(struct heap_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

/* Append v as a protobuf varint; the bytes written. */
static size_t t_put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	for (; v >= 0x80; v >>= 7)
		p[n++] = (uint8_t)(v | 0x80);
	p[n++] = (uint8_t)v;
	return n;
}

/* The worst shapes frame.h names: a 64 KiB header of 2-byte elements
 * keeps under 56 bytes of heap per wire byte once decoded (a Request,
 * what the server accounts for), under 64 for a Response. */
ParameterizedTest(struct heap_case *c, frame, decoded_header_heap_is_bounded)
{
	static uint8_t frame[H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER];
	uint8_t *h = frame + H2_FRAME_PREFIX;
	size_t n = 0, body, before, kept;
	struct h2_frame_info info;
	struct t_msg m;

	if (c->field) {
		n = t_put_varint(h, (uint64_t)c->field << 3 | 2);
		/* The body's length takes 3 bytes at this size. */
		body = (H2_FRAME_MAX_HEADER - n - 3) / 2 * 2;
		cr_assert_eq(t_put_varint(h + n, body), 3);
		n += 3;
	} else {
		body = H2_FRAME_MAX_HEADER;
	}
	for (size_t i = 0; i < body; i += 2)
		memcpy(h + n + i, c->elem, 2);
	n += body;
	frame[0] = (uint8_t)(n >> 24), frame[1] = (uint8_t)(n >> 16);
	frame[2] = (uint8_t)(n >> 8), frame[3] = (uint8_t)n;

	before = t_heap_in_use();
	cr_assert_eq(t_decode(c->is_request, NULL, frame, H2_FRAME_PREFIX + n,
			      &info, &m),
		     0, "%s", c->name);
	kept = t_heap_in_use() - before;
	cr_log_info("%s: %zu bytes kept for %zu, %.1f per byte", c->name,
		    kept, n, (double)kept / (double)n);
	/* Under ASan, t_heap_in_use() is 0 and this proves nothing. */
	cr_assert_lt(kept, (c->is_request ? 56 : 64) * n, "%s: %zu bytes",
		     c->name, kept);
	t_free(&m);
}

Test(frame, header_length_limit_is_inclusive)
{
	struct h2_frame_limits lim = {.max_header = 100, .max_payload = 10};
	uint8_t at[4] = {0, 0, 0, 100}, over[4] = {0, 0, 0, 101};
	struct h2_frame_info info;
	H2__Request *req;

	cr_assert_eq(h2_frame_decode_request(&lim, at, 4, &info, &req),
		     H2_FRAME_NEED_MORE);
	cr_assert_eq(info.need, 100);
	cr_assert_eq(h2_frame_decode_request(&lim, over, 4, &info, &req),
		     -EMSGSIZE);
	/* The default: 64 KiB is accepted, one more byte is not. */
	at[1] = 1, at[2] = 0, at[3] = 0;
	over[1] = 1, over[2] = 0, over[3] = 1;
	cr_assert_eq(h2_frame_decode_request(NULL, at, 4, &info, &req),
		     H2_FRAME_NEED_MORE);
	cr_assert_eq(h2_frame_decode_request(NULL, over, 4, &info, &req),
		     -EMSGSIZE);
}

Test(frame, zero_header_length_is_invalid)
{
	const uint8_t zero[8] = {0, 0, 0, 0, 0x08, 0x01, 0, 0};
	struct h2_frame_decoder *dec = h2_frame_decoder_new(NULL);
	struct h2_frame_info info;
	H2__Response *resp;
	size_t used;

	cr_assert_eq(h2_frame_decode_response(NULL, zero, sizeof(zero), &info,
					      &resp),
		     -EINVAL);
	cr_assert_eq(h2_frame_decoder_feed_response(dec, zero, sizeof(zero),
						    &used, &info, &resp),
		     -EINVAL);
	cr_assert_eq(used, 4);
	h2_frame_decoder_free(dec);
}

Test(frame, payload_over_limit_is_too_large_and_names_the_id)
{
	struct h2_frame_limits lim = {.max_header = 1024, .max_payload = 4096};
	struct h2_frame_buf b = {0};
	struct h2_frame_decoder *dec = h2_frame_decoder_new(&lim);
	struct h2_frame_info info;
	H2__Request *req = NULL;
	size_t used;

	/* Exactly at the limit: fine. */
	t_req_write(&b);
	cr_assert_eq(h2_frame_decode_request(&lim, b.data, b.len, &info, &req),
		     0);
	h2_frame_request_free(req);
	req = NULL;

	lim.max_payload = 4095;
	cr_assert_eq(h2_frame_decode_request(&lim, b.data, b.len, &info, &req),
		     -EFBIG);
	cr_assert_null(req);
	cr_assert_eq(info.id, UINT64_MAX);
	cr_assert_eq(info.payload_len, 4096);
	cr_assert_eq(info.header_bytes, b.len - 4096);
	cr_assert_eq(h2_status_from_errno(-EFBIG), H2__STATUS__TOO_LARGE);

	/* The incremental decoder agrees, and the error sticks. */
	h2_frame_decoder_free(dec);
	dec = h2_frame_decoder_new(&lim);
	cr_assert_eq(h2_frame_decoder_feed_request(dec, b.data, b.len, &used,
						   &info, &req),
		     -EFBIG);
	cr_assert_eq(info.id, UINT64_MAX);
	cr_assert_eq(used, b.len - 4096);
	cr_assert_eq(h2_frame_decoder_feed_request(dec, b.data, b.len, &used,
						   &info, &req),
		     -EFBIG);
	cr_assert_eq(used, 0);
	cr_assert_null(req);
	h2_frame_decoder_free(dec);
	h2_frame_buf_free(&b);
}

Test(frame, response_payload_limit_applies_too)
{
	struct h2_frame_limits lim = {.max_header = 1024, .max_payload = 100};
	struct h2_frame_buf b = {0};
	struct h2_frame_info info;
	H2__Response *resp;

	t_resp_read_data(&b);
	cr_assert_eq(h2_frame_decode_response(&lim, b.data, b.len, &info,
					      &resp),
		     -EFBIG);
	cr_assert_eq(info.id, 300);
	h2_frame_buf_free(&b);
}

struct garbage_case {
	char name[32];
	uint8_t hdr[16];
	size_t len;
};

ParameterizedTestParameters(frame, garbage_header_is_invalid)
{
	static struct garbage_case cases[] = {
		{"varint never ends", {0x08, 0xff, 0xff}, 3},
		{"varint over 10 bytes",
		 {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		  0xff, 0x01},
		 12},
		{"string longer than header", {0x52, 0x10, 'a', 'b'}, 4},
		{"submessage longer than header", {0x52, 0x7f}, 2},
		{"wire type 7", {0x0f, 0x00}, 2},
		{"field number 0", {0x00, 0x01}, 2},
		/* protobuf-c itself lets these through (longer tags). */
		{"field number 0, 2-byte tag", {0x80, 0x00, 0x01}, 3},
		{"field number 0, 5-byte tag",
		 {0x82, 0x80, 0x80, 0x80, 0x00, 0x00},
		 6},
		{"field number 0 in a submessage",
		 {0x08, 0x01, 0x52, 0x03, 0x80, 0x00, 0x01},
		 7},
		{"tag only", {0x08}, 1},
		{"lone end-group", {0x0c}, 1},
		{"fixed64 cut short", {0x09, 1, 2, 3}, 4},
		{"bad submessage", {0x52, 0x02, 0x08, 0xff}, 4},
	};

	return cr_make_param_array(struct garbage_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct garbage_case *c, frame, garbage_header_is_invalid)
{
	uint8_t frame[4 + sizeof(c->hdr) + 8] = {0, 0, 0, (uint8_t)c->len};
	struct h2_frame_info info;
	H2__Request *req = NULL;
	H2__Response *resp = NULL;

	memcpy(frame + 4, c->hdr, c->len);
	/* Trailing bytes that would complete it do not count. */
	memset(frame + 4 + c->len, 0x01, 8);
	cr_assert_eq(h2_frame_decode_request(NULL, frame, sizeof(frame), &info,
					     &req),
		     -EINVAL, "%s", c->name);
	cr_assert_eq(h2_frame_decode_response(NULL, frame, sizeof(frame),
					      &info, &resp),
		     -EINVAL, "%s", c->name);
	cr_assert_null(req);
	cr_assert_null(resp);
}

Test(frame, field_zero_is_refused_inside_repeated_submessages)
{
	/* id 1, then Request.txn (34) / Response.block_status (32) holding
	 * one TxnOp / Extent whose only field is a varint behind a 2-byte
	 * tag: 0x80 0x00 is field 0, 0x88 0x00 the control, field 1. */
	uint8_t req[] = {0, 0, 0, 10, 0x08, 0x01, 0x92, 0x02, 0x05,
			 0x12, 0x03, 0x80, 0x00, 0x01};
	uint8_t resp[] = {0, 0, 0, 10, 0x08, 0x01, 0x82, 0x02, 0x05,
			  0x0a, 0x03, 0x80, 0x00, 0x01};
	struct h2_frame_info info;
	H2__Request *rq = NULL;
	H2__Response *rs = NULL;

	cr_assert_eq(h2_frame_decode_request(NULL, req, sizeof(req), &info,
					     &rq),
		     -EINVAL);
	cr_assert_eq(h2_frame_decode_response(NULL, resp, sizeof(resp), &info,
					      &rs),
		     -EINVAL);
	cr_assert_null(rq);
	cr_assert_null(rs);

	req[11] = resp[11] = 0x88;
	cr_assert_eq(h2_frame_decode_request(NULL, req, sizeof(req), &info,
					     &rq),
		     0);
	cr_assert_eq(rq->op_case, H2__REQUEST__OP_TXN);
	cr_assert_eq(rq->txn->n_ops, 1);
	cr_assert_eq(rq->txn->ops[0]->type, H2__TXN_OP__TYPE__TRIM);
	cr_assert_eq(h2_frame_decode_response(NULL, resp, sizeof(resp), &info,
					      &rs),
		     0);
	cr_assert_eq(rs->result_case, H2__RESPONSE__RESULT_BLOCK_STATUS);
	cr_assert_eq(rs->block_status->n_extents, 1);
	cr_assert_eq(rs->block_status->extents[0]->offset, 1);
	h2_frame_request_free(rq);
	h2_frame_response_free(rs);
}

Test(frame, truncated_header_needs_more)
{
	struct h2_frame_buf b = {0};

	t_resp_hello(&b);
	for (size_t len = 0; len < b.len; len++) {
		struct h2_frame_info info;
		H2__Response *resp = NULL;

		cr_assert_eq(h2_frame_decode_response(NULL, b.data, len, &info,
						      &resp),
			     H2_FRAME_NEED_MORE, "len %zu", len);
		cr_assert_gt(info.need, 0);
		cr_assert_null(resp);
	}
	h2_frame_buf_free(&b);
}

Test(frame, pack_into_a_small_buffer_writes_nothing)
{
	struct h2_frame_buf b = {0};
	H2__Request r = H2__REQUEST__INIT;
	H2__Read rd = H2__READ__INIT;
	uint8_t out[64];
	size_t need;

	r.id = 77;
	r.op_case = H2__REQUEST__OP_READ;
	r.read = &rd;
	rd.length = 4096;
	need = h2_frame_request_size(&r);
	memset(out, 0xa5, sizeof(out));
	cr_assert_eq(h2_frame_pack_request(&r, out, need - 1), -ENOBUFS);
	cr_assert_eq(h2_frame_pack_request(&r, out, 3), -ENOBUFS);
	for (size_t i = 0; i < sizeof(out); i++)
		cr_assert_eq(out[i], 0xa5);
	cr_assert_eq(h2_frame_pack_request(&r, out, need), (int)need);
	(void)b;
}

Test(frame, header_over_64k_is_not_encoded)
{
	H2__Request r = H2__REQUEST__INIT;
	H2__Hello h = H2__HELLO__INIT;
	struct h2_frame_buf b = {0};
	char *name = malloc(H2_FRAME_MAX_HEADER + 1);
	uint8_t *out;
	size_t n;

	memset(name, 'x', H2_FRAME_MAX_HEADER);
	name[H2_FRAME_MAX_HEADER] = '\0';
	h.client_name = name;
	r.op_case = H2__REQUEST__OP_HELLO;
	r.hello = &h;
	n = h2_frame_request_size(&r);
	cr_assert_gt(n, H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER);
	out = malloc(n);
	cr_assert_eq(h2_frame_pack_request(&r, out, n), -EMSGSIZE);
	cr_assert_eq(h2_frame_append_request(&b, &r), -EMSGSIZE);
	cr_assert_eq(b.len, 0);

	/* Just under the limit still goes. */
	name[H2_FRAME_MAX_HEADER - 16] = '\0';
	n = h2_frame_request_size(&r);
	cr_assert_leq(n, H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER);
	cr_assert_eq(h2_frame_pack_request(&r, out, n), (int)n);
	free(out);
	free(name);
}

Test(frame, frame_buf_holds_frames_and_payloads_in_order)
{
	struct h2_frame_buf b = {0};
	H2__Request r = H2__REQUEST__INIT;
	H2__Flush f = H2__FLUSH__INIT;
	const char payload[] = "0123456789";
	struct h2_frame_info info;
	H2__Request *got;
	size_t pos = 0;

	r.op_case = H2__REQUEST__OP_FLUSH;
	r.flush = &f;
	for (uint64_t id = 1; id <= 100; id++) {
		r.id = id;
		r.payload_len = id % 11;
		cr_assert_eq(h2_frame_append_request(&b, &r), 0);
		cr_assert_eq(h2_frame_buf_append(&b, payload, id % 11), 0);
	}
	for (uint64_t id = 1; id <= 100; id++) {
		cr_assert_eq(h2_frame_decode_request(NULL, b.data + pos,
						     b.len - pos, &info, &got),
			     0);
		cr_assert_eq(got->id, id);
		cr_assert_eq(got->op_case, H2__REQUEST__OP_FLUSH);
		pos += info.header_bytes;
		cr_assert_arr_eq(b.data + pos, payload, info.payload_len);
		pos += info.payload_len;
		h2_frame_request_free(got);
	}
	cr_assert_eq(pos, b.len);
	h2_frame_buf_free(&b);
	cr_assert_null(b.data);
	cr_assert_eq(b.cap, 0);
	h2_frame_request_free(NULL);
	h2_frame_response_free(NULL);
	h2_frame_decoder_free(NULL);
}

struct status_case {
	int err;
	H2__Status status;
	char name[24];
};

ParameterizedTestParameters(status, errno_maps_to_status)
{
	static struct status_case cases[] = {
		{0, H2__STATUS__OK, "OK"},
		{-EINVAL, H2__STATUS__INVALID_ARGUMENT, "INVALID_ARGUMENT"},
		{-ERANGE, H2__STATUS__OUT_OF_RANGE, "OUT_OF_RANGE"},
		{-ENOENT, H2__STATUS__NOT_FOUND, "NOT_FOUND"},
		{-EEXIST, H2__STATUS__ALREADY_EXISTS, "ALREADY_EXISTS"},
		{-EACCES, H2__STATUS__PERMISSION_DENIED, "PERMISSION_DENIED"},
		{-EPERM, H2__STATUS__PERMISSION_DENIED, "PERMISSION_DENIED"},
		{-EROFS, H2__STATUS__READ_ONLY, "READ_ONLY"},
		{-ENOSPC, H2__STATUS__NO_SPACE, "NO_SPACE"},
		{-EIO, H2__STATUS__IO_ERROR, "IO_ERROR"},
		{-EBADMSG, H2__STATUS__CHECKSUM_ERROR, "CHECKSUM_ERROR"},
		{-EFBIG, H2__STATUS__TOO_LARGE, "TOO_LARGE"},
		{-EMSGSIZE, H2__STATUS__TOO_LARGE, "TOO_LARGE"},
		{-ENOTSUP, H2__STATUS__UNSUPPORTED, "UNSUPPORTED"},
		{-EOPNOTSUPP, H2__STATUS__UNSUPPORTED, "UNSUPPORTED"},
		{-EBUSY, H2__STATUS__BUSY, "BUSY"},
		{-EPROTO, H2__STATUS__FAILED_PRECONDITION,
		 "FAILED_PRECONDITION"},
		{-ESHUTDOWN, H2__STATUS__UNAVAILABLE, "UNAVAILABLE"},
		{-ENOTEMPTY, H2__STATUS__HAS_DEPENDENTS, "HAS_DEPENDENTS"},
		{-ENOMEM, H2__STATUS__INTERNAL, "INTERNAL"},
		{-EREMOTEIO, H2__STATUS__INTERNAL, "INTERNAL"},
		{-EAGAIN, H2__STATUS__INTERNAL, "INTERNAL"},
		{EINVAL, H2__STATUS__INTERNAL, "INTERNAL"}, /* not negated */
		{INT_MIN, H2__STATUS__INTERNAL, "INTERNAL"},
		{INT_MAX, H2__STATUS__INTERNAL, "INTERNAL"},
	};

	return cr_make_param_array(struct status_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct status_case *c, status, errno_maps_to_status)
{
	H2__Status s = h2_status_from_errno(c->err);

	cr_assert_eq(s, c->status, "errno %d -> %d", c->err, s);
	cr_assert_str_eq(h2_status_name(s), c->name);
}

Test(status, every_status_round_trips_through_errno)
{
	const ProtobufCEnumDescriptor *d = &h2__status__descriptor;

	/* Every value h2.proto declares: none forgotten, none extra. */
	cr_assert_eq(d->n_values, H2__STATUS__HAS_DEPENDENTS + 1);
	for (unsigned i = 0; i < d->n_values; i++) {
		H2__Status s = (H2__Status)d->values[i].value;
		int err = h2_errno_from_status(s);

		cr_assert_leq(err, 0);
		cr_assert_eq(err == 0, s == H2__STATUS__OK);
		cr_assert_eq(h2_status_from_errno(err), s, "%s -> %d",
			     d->values[i].name, err);
		cr_assert_str_eq(h2_status_name(s), d->values[i].name);
	}
}

Test(status, reverse_map_uses_the_engine_errnos)
{
	cr_assert_eq(h2_errno_from_status(H2__STATUS__INVALID_ARGUMENT),
		     -EINVAL);
	cr_assert_eq(h2_errno_from_status(H2__STATUS__PERMISSION_DENIED),
		     -EACCES);
	cr_assert_eq(h2_errno_from_status(H2__STATUS__CHECKSUM_ERROR),
		     -EBADMSG);
	cr_assert_eq(h2_errno_from_status(H2__STATUS__TOO_LARGE), -EFBIG);
	cr_assert_eq(h2_errno_from_status(H2__STATUS__UNSUPPORTED),
		     -EOPNOTSUPP);
	cr_assert_eq(h2_errno_from_status(H2__STATUS__UNAVAILABLE),
		     -ESHUTDOWN);
	cr_assert_eq(h2_errno_from_status(H2__STATUS__INTERNAL), -EREMOTEIO);
}

Test(status, unknown_status_from_a_newer_peer)
{
	cr_assert_eq(h2_errno_from_status((H2__Status)17), -EREMOTEIO);
	cr_assert_eq(h2_errno_from_status((H2__Status)-1), -EREMOTEIO);
	cr_assert_str_eq(h2_status_name((H2__Status)17), "UNKNOWN");
	cr_assert_str_eq(h2_status_name((H2__Status)-1), "UNKNOWN");
	cr_assert_str_eq(h2_status_name((H2__Status)INT_MAX), "UNKNOWN");
}

Test(proto, constants)
{
	cr_assert_eq(H2_PROTO_VERSION, 1);
	cr_assert_eq(H2_DEFAULT_PORT, 7410);
	cr_assert_eq(H2_FRAME_MAX_HEADER, 65536);
	cr_assert_eq(H2_FRAME_DEFAULT_MAX_PAYLOAD, 32ull << 20);
}
