/*
 * Sample frames for the proto tests: one request or response of each
 * kind, encoded with the library's own encoder, payload included.  Shared
 * by test_frame.c (round trips) and test_fuzz_frame.c (seed corpus).
 */
#ifndef H2_TEST_PROTO_SAMPLES_H
#define H2_TEST_PROTO_SAMPLES_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

/* Byte i of a sample payload. */
static inline uint8_t t_payload_byte(uint64_t id, size_t i)
{
	return (uint8_t)((i * 131 + id * 7) >> 1);
}

/* Append frame header + payload_len pattern bytes; dies on failure. */
static inline void t_append_req(struct h2_frame_buf *b, const H2__Request *r)
{
	if (h2_frame_append_request(b, r) != 0)
		abort();
	for (uint64_t i = 0; i < r->payload_len; i++) {
		uint8_t c = t_payload_byte(r->id, i);

		if (h2_frame_buf_append(b, &c, 1) != 0)
			abort();
	}
}

static inline void t_append_resp(struct h2_frame_buf *b,
				 const H2__Response *r)
{
	if (h2_frame_append_response(b, r) != 0)
		abort();
	for (uint64_t i = 0; i < r->payload_len; i++) {
		uint8_t c = t_payload_byte(r->id, i);

		if (h2_frame_buf_append(b, &c, 1) != 0)
			abort();
	}
}

static inline void t_req_hello(struct h2_frame_buf *b)
{
	H2__Request r = H2__REQUEST__INIT;
	H2__Hello h = H2__HELLO__INIT;
	char *features[] = {"txn", "block_status"};

	h.version = H2_PROTO_VERSION;
	h.client_name = "h2-test";
	h.n_features = 2;
	h.features = features;
	r.id = 1;
	r.op_case = H2__REQUEST__OP_HELLO;
	r.hello = &h;
	t_append_req(b, &r);
}

/* id 0 and no fields: packs to nothing, sent as the 2-byte form. */
static inline void t_req_ping0(struct h2_frame_buf *b)
{
	H2__Request r = H2__REQUEST__INIT;
	H2__Ping p = H2__PING__INIT;

	r.op_case = H2__REQUEST__OP_PING;
	r.ping = &p;
	t_append_req(b, &r);
}

static inline void t_req_write(struct h2_frame_buf *b)
{
	H2__Request r = H2__REQUEST__INIT;
	H2__Write w = H2__WRITE__INIT;

	w.handle = 3;
	w.offset = 1ull << 40;
	w.fua = true;
	r.id = UINT64_MAX;
	r.payload_len = 4096;
	r.op_case = H2__REQUEST__OP_WRITE;
	r.write = &w;
	t_append_req(b, &r);
}

static inline void t_req_read(struct h2_frame_buf *b)
{
	H2__Request r = H2__REQUEST__INIT;
	H2__Read rd = H2__READ__INIT;

	rd.handle = 3;
	rd.offset = 8192;
	rd.length = 65536;
	r.id = 300;
	r.op_case = H2__REQUEST__OP_READ;
	r.read = &rd;
	t_append_req(b, &r);
}

static inline void t_req_txn(struct h2_frame_buf *b)
{
	H2__Request r = H2__REQUEST__INIT;
	H2__Txn t = H2__TXN__INIT;
	H2__TxnOp ops[3], *pops[3];

	for (int i = 0; i < 3; i++) {
		h2__txn_op__init(&ops[i]);
		pops[i] = &ops[i];
	}
	ops[0].type = H2__TXN_OP__TYPE__WRITE;
	ops[0].offset = 0;
	ops[0].length = 512;
	ops[1].type = H2__TXN_OP__TYPE__TRIM;
	ops[1].offset = 1 << 20;
	ops[1].length = 1 << 20;
	ops[2].type = H2__TXN_OP__TYPE__ZERO;
	ops[2].offset = 4096;
	ops[2].length = 4096;
	ops[2].no_hole = true;
	t.handle = 9;
	t.n_ops = 3;
	t.ops = pops;
	t.fua = true;
	r.id = 7;
	r.payload_len = 512;
	r.op_case = H2__REQUEST__OP_TXN;
	r.txn = &t;
	t_append_req(b, &r);
}

static inline void t_req_volume_create(struct h2_frame_buf *b)
{
	H2__Request r = H2__REQUEST__INIT;
	H2__VolumeCreate c = H2__VOLUME_CREATE__INIT;

	c.name = "vm-disk-01";
	c.size = 10ull << 30;
	r.id = 42;
	r.op_case = H2__REQUEST__OP_VOLUME_CREATE;
	r.volume_create = &c;
	t_append_req(b, &r);
}

/* A request with no op: decodes fine, the server answers UNSUPPORTED. */
static inline void t_req_no_op(struct h2_frame_buf *b)
{
	H2__Request r = H2__REQUEST__INIT;

	r.id = 5;
	r.payload_len = 3;
	t_append_req(b, &r);
}

static inline void t_resp_hello(struct h2_frame_buf *b)
{
	H2__Response r = H2__RESPONSE__INIT;
	H2__HelloResult h = H2__HELLO_RESULT__INIT;
	char *features[] = {"txn"};

	h.version = 1;
	h.server_name = "h2d 0.1.0";
	h.n_features = 1;
	h.features = features;
	h.max_payload = H2_FRAME_DEFAULT_MAX_PAYLOAD;
	h.max_inflight = 64;
	h.identity = "alice";
	r.id = 1;
	r.result_case = H2__RESPONSE__RESULT_HELLO;
	r.hello = &h;
	t_append_resp(b, &r);
}

static inline void t_resp_read_data(struct h2_frame_buf *b)
{
	H2__Response r = H2__RESPONSE__INIT;

	r.id = 300;
	r.payload_len = 65536;
	t_append_resp(b, &r);
}

static inline void t_resp_error(struct h2_frame_buf *b)
{
	H2__Response r = H2__RESPONSE__INIT;

	r.id = 42;
	r.status = H2__STATUS__ALREADY_EXISTS;
	r.message = "volume vm-disk-01 already exists";
	t_append_resp(b, &r);
}

static inline void t_resp_volume_list(struct h2_frame_buf *b)
{
	H2__Response r = H2__RESPONSE__INIT;
	H2__VolumeListResult l = H2__VOLUME_LIST_RESULT__INIT;
	H2__VolumeInfo v[2], *pv[2];

	for (int i = 0; i < 2; i++) {
		h2__volume_info__init(&v[i]);
		pv[i] = &v[i];
		v[i].id = 100 + (uint64_t)i;
		v[i].size = 1ull << 30;
		v[i].used_bytes = 4096 * (uint64_t)i;
		v[i].ctime_ns = 1700000000000000000ull;
		v[i].can_read = true;
		v[i].can_write = i == 0;
	}
	v[0].name = "a";
	v[1].name = "b@snap1";
	l.n_volumes = 2;
	l.volumes = pv;
	r.id = 11;
	r.result_case = H2__RESPONSE__RESULT_VOLUME_LIST;
	r.volume_list = &l;
	t_append_resp(b, &r);
}

static inline void t_resp_block_status(struct h2_frame_buf *b)
{
	H2__Response r = H2__RESPONSE__INIT;
	H2__BlockStatusResult s = H2__BLOCK_STATUS_RESULT__INIT;
	H2__Extent e[2], *pe[2];

	for (int i = 0; i < 2; i++) {
		h2__extent__init(&e[i]);
		pe[i] = &e[i];
		e[i].offset = (uint64_t)i << 20;
		e[i].length = 1 << 20;
		e[i].hole = i == 1;
	}
	s.n_extents = 2;
	s.extents = pe;
	r.id = 12;
	r.result_case = H2__RESPONSE__RESULT_BLOCK_STATUS;
	r.block_status = &s;
	t_append_resp(b, &r);
}

/* Ping reply to id 0: all defaults, the 2-byte empty header. */
static inline void t_resp_ping0(struct h2_frame_buf *b)
{
	H2__Response r = H2__RESPONSE__INIT;

	t_append_resp(b, &r);
}

struct t_sample {
	const char *name;
	bool is_request;
	void (*append)(struct h2_frame_buf *b);
};

static const struct t_sample t_samples[] = {
	{"req_hello", true, t_req_hello},
	{"req_ping0", true, t_req_ping0},
	{"req_write", true, t_req_write},
	{"req_read", true, t_req_read},
	{"req_txn", true, t_req_txn},
	{"req_volume_create", true, t_req_volume_create},
	{"req_no_op", true, t_req_no_op},
	{"resp_hello", false, t_resp_hello},
	{"resp_read_data", false, t_resp_read_data},
	{"resp_error", false, t_resp_error},
	{"resp_volume_list", false, t_resp_volume_list},
	{"resp_block_status", false, t_resp_block_status},
	{"resp_ping0", false, t_resp_ping0},
};
#define T_NSAMPLES (sizeof(t_samples) / sizeof(t_samples[0]))

#endif /* H2_TEST_PROTO_SAMPLES_H */
