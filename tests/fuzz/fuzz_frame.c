/*
 * fuzz_frame.c - libFuzzer harness for the frame decoders.
 *
 * The input is read as a byte stream of frames, both as requests and as
 * responses, under the default limits and under tiny ones (so payload and
 * header limits trip often).  At every frame boundary:
 *   - the stateless decoder sees all remaining bytes;
 *   - a struct h2_frame_decoder is fed the same bytes in uneven pieces and
 *     must reach the same verdict, header size, id and payload_len;
 *   - a decoded message is re-encoded, decoded and re-encoded again: the
 *     second encoding must equal the first (the encoder's output is a fixed
 *     point of decode + encode), and both decoders' messages must encode
 *     identically;
 * then the payload is skipped as a real reader would.  Any disagreement
 * aborts, which both libFuzzer and Criterion report as a crash.  ASan and
 * UBSan catch the rest.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "fuzz.h"
#include "fuzz_frame.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "fuzz_frame.c:%d: check failed: %s\n", \
				__LINE__, #cond);                              \
			abort();                                               \
		}                                                              \
	} while (0)

struct fuzz_frame_stats fuzz_frame_stats;

static const struct h2_frame_limits fuzz_limits[] = {
	H2_FRAME_LIMITS_DEFAULT,
	{.max_header = 48, .max_payload = 1000},
};

/* Either message type, so one walker serves both. */
struct fuzz_msg {
	bool is_request;
	H2__Request *req;
	H2__Response *resp;
};

static int fuzz_decode(bool is_request, const struct h2_frame_limits *lim,
		       const uint8_t *buf, size_t len,
		       struct h2_frame_info *info, struct fuzz_msg *m)
{
	m->is_request = is_request;
	m->req = NULL;
	m->resp = NULL;
	if (is_request)
		return h2_frame_decode_request(lim, buf, len, info, &m->req);
	return h2_frame_decode_response(lim, buf, len, info, &m->resp);
}

static int fuzz_feed(bool is_request, struct h2_frame_decoder *dec,
		     const uint8_t *buf, size_t len, size_t *used,
		     struct h2_frame_info *info, struct fuzz_msg *m)
{
	m->is_request = is_request;
	m->req = NULL;
	m->resp = NULL;
	if (is_request)
		return h2_frame_decoder_feed_request(dec, buf, len, used,
						     info, &m->req);
	return h2_frame_decoder_feed_response(dec, buf, len, used, info,
					      &m->resp);
}

static void fuzz_free(struct fuzz_msg *m)
{
	h2_frame_request_free(m->req);
	h2_frame_response_free(m->resp);
}

/* Encode m into a new buffer (*n bytes); NULL if it exceeds the limit. */
static uint8_t *fuzz_encode(const struct fuzz_msg *m, size_t *n)
{
	uint8_t *p;
	int rc;

	*n = m->is_request ? h2_frame_request_size(m->req)
			   : h2_frame_response_size(m->resp);
	p = malloc(*n);
	CHECK(p);
	rc = m->is_request ? h2_frame_pack_request(m->req, p, *n)
			   : h2_frame_pack_response(m->resp, p, *n);
	if (rc == -EMSGSIZE) {
		/* Re-encoding may grow (a 5-byte negative enum becomes 10
		 * bytes), so only a header near the limit may do this. */
		CHECK(*n > H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER);
		free(p);
		return NULL;
	}
	CHECK(rc > 0 && (size_t)rc == *n);
	CHECK(*n >= H2_FRAME_PREFIX + 2);
	return p;
}

/* The encoder's output decodes and re-encodes to itself. */
static void fuzz_check_fixed_point(const struct fuzz_msg *m,
				   uint64_t id, uint64_t payload_len)
{
	struct h2_frame_info info;
	struct fuzz_msg again;
	uint8_t *a, *b;
	size_t na, nb;

	a = fuzz_encode(m, &na);
	if (!a)
		return;
	/* The first decode accepted payload_len, so no limit is needed. */
	struct h2_frame_limits lim = {.max_header = H2_FRAME_MAX_HEADER,
				      .max_payload = UINT64_MAX};
	CHECK(fuzz_decode(m->is_request, &lim, a, na, &info, &again) == 0);
	CHECK(info.header_bytes == na);
	CHECK(info.id == id && info.payload_len == payload_len);
	b = fuzz_encode(&again, &nb);
	CHECK(b && na == nb && memcmp(a, b, na) == 0);
	if (!m->is_request) /* a peer's status may be any int */
		CHECK(h2_status_name(again.resp->status) != NULL);
	fuzz_free(&again);
	free(a);
	free(b);
}

/* Two decoded messages have the same encoding. */
static void fuzz_check_same(const struct fuzz_msg *x, const struct fuzz_msg *y)
{
	uint8_t *a, *b;
	size_t na, nb;

	a = fuzz_encode(x, &na);
	b = fuzz_encode(y, &nb);
	CHECK((a == NULL) == (b == NULL));
	if (a)
		CHECK(na == nb && memcmp(a, b, na) == 0);
	free(a);
	free(b);
}

static void fuzz_count(int rc)
{
	switch (rc) {
	case 0:
		fuzz_frame_stats.ok++;
		break;
	case H2_FRAME_NEED_MORE:
		fuzz_frame_stats.need_more++;
		break;
	case -EMSGSIZE:
		fuzz_frame_stats.too_big_header++;
		break;
	case -EINVAL:
		fuzz_frame_stats.invalid++;
		break;
	case -EFBIG:
		fuzz_frame_stats.too_big_payload++;
		break;
	default:
		CHECK(!"unexpected decoder result");
	}
}

/* Walk data as a stream of frames; see the file comment. */
static void fuzz_walk(const uint8_t *data, size_t size, bool is_request,
		      const struct h2_frame_limits *lim, uint64_t seed)
{
	struct h2_frame_decoder *dec = h2_frame_decoder_new(lim);
	size_t pos = 0;

	CHECK(dec);
	while (pos < size) {
		struct h2_frame_info ref, info;
		struct fuzz_msg mref, m;
		size_t fed = 0, used;
		int ref_rc, rc;

		ref_rc = fuzz_decode(is_request, lim, data + pos, size - pos,
				     &ref, &mref);
		fuzz_count(ref_rc);
		if (ref_rc == H2_FRAME_NEED_MORE)
			CHECK(ref.need > 0);
		if (ref_rc == 0 || ref_rc == -EFBIG) {
			CHECK(ref.header_bytes >= H2_FRAME_PREFIX + 1);
			CHECK(ref.header_bytes <= size - pos);
			CHECK(ref.header_bytes <=
			      H2_FRAME_PREFIX + lim->max_header);
			CHECK((ref_rc == 0) ==
			      (ref.payload_len <= lim->max_payload));
		}

		/* The same bytes through the incremental decoder, in pieces
		 * of 1..16 bytes chosen by the seed. */
		do {
			size_t chunk = 1 + (size_t)(seed >> 60);

			seed = seed * 6364136223846793005ull +
			       1442695040888963407ull;
			if (chunk > size - pos - fed)
				chunk = size - pos - fed;
			rc = fuzz_feed(is_request, dec, data + pos + fed,
				       chunk, &used, &info, &m);
			CHECK(used <= chunk);
			if (rc == H2_FRAME_NEED_MORE)
				CHECK(used == chunk && info.need > 0);
			fed += used;
		} while (rc == H2_FRAME_NEED_MORE && pos + fed < size);

		CHECK(rc == ref_rc);
		if (rc == H2_FRAME_NEED_MORE) {
			CHECK(h2_frame_decoder_pending(dec) == fed);
			CHECK(info.need == ref.need);
			break;
		}
		if (rc < 0) {
			if (rc == -EFBIG) {
				CHECK(fed == ref.header_bytes &&
				      info.header_bytes == fed);
				CHECK(info.id == ref.id &&
				      info.payload_len == ref.payload_len);
			}
			/* Errors stick, and take nothing more. */
			rc = fuzz_feed(is_request, dec, data, size, &used,
				       &info, &m);
			CHECK(rc == ref_rc && used == 0);
			break;
		}
		CHECK(fed == ref.header_bytes && fed == info.header_bytes);
		CHECK(info.id == ref.id && info.payload_len == ref.payload_len);
		CHECK(h2_frame_decoder_pending(dec) == 0);
		fuzz_check_fixed_point(&m, info.id, info.payload_len);
		fuzz_check_same(&m, &mref);
		fuzz_free(&m);
		fuzz_free(&mref);

		pos += fed;
		if (info.payload_len > size - pos)
			break;
		pos += (size_t)info.payload_len;
	}
	h2_frame_decoder_free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t seed = 0x9E3779B97F4A7C15ull * (size + 1);

	for (size_t i = 0; i < sizeof(fuzz_limits) / sizeof(fuzz_limits[0]);
	     i++) {
		fuzz_walk(data, size, true, &fuzz_limits[i], seed);
		fuzz_walk(data, size, false, &fuzz_limits[i], seed + 1);
	}
	return 0;
}

/*
 * For fuzz_main (fuzz_frame_run, see fuzz.h): what the stateless decoder
 * answered at the frame boundaries; every answer it has must be among
 * them, or the corpus no longer reaches what it should.
 */
int fuzz_report(FILE *out)
{
	const struct fuzz_frame_stats *s = &fuzz_frame_stats;

	fprintf(out,
		"frames: ok %llu, need more %llu, header too big %llu, "
		"invalid %llu, payload too big %llu\n",
		(unsigned long long)s->ok, (unsigned long long)s->need_more,
		(unsigned long long)s->too_big_header,
		(unsigned long long)s->invalid,
		(unsigned long long)s->too_big_payload);
	return s->ok && s->need_more && s->too_big_header && s->invalid &&
		       s->too_big_payload
		   ? 0
		   : 1;
}
