/*
 * The frame fuzz harness (tests/fuzz/fuzz_frame.c) run by Criterion over a
 * fixed corpus, so that every build exercises it, not only clang builds
 * with libFuzzer.
 *
 * The corpus is generated, not stored.  Valid frames of every Request and
 * Response kind are built from the protobuf-c descriptors, so a kind added
 * to h2.proto is covered without touching this file; each gets a payload
 * and they are pipelined several per buffer.  Thousands of mutations of
 * those buffers follow, all from a fixed seed.  The harness aborts on any
 * disagreement between the two decoders and the encoder (Criterion then
 * reports a crash); these tests add that the inputs reached every outcome
 * the decoders have, so a harness that silently stopped looking would fail.
 *
 * With H2_FUZZ_SEED_DIR set, the valid-frames test also writes its frames
 * and streams there, one file each, as a seed corpus for the libFuzzer
 * binary (see tests/fuzz/CMakeLists.txt).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "fuzz_frame.h"
#include "samples.h"

/* Variants of each message kind, frames per stream, mutated inputs. */
#define T_VARIANTS	4
#define T_STREAMS	200
#define T_STREAM_FRAMES 8
#define T_MUTANTS	20000
/* Room a mutated buffer may need beyond two streams (splice, inserts). */
#define T_SLACK 1024

/* splitmix64 from a fixed seed: the same corpus on every run and host. */
static uint64_t t_rng = 0x5eed0f00d5eed0f0ull;

static uint64_t t_rand(void)
{
	uint64_t z = (t_rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A number in [0, n); n > 0. */
static size_t t_below(size_t n)
{
	return (size_t)(t_rand() % n);
}

/*
 * Everything the message builders allocate, freed at once after encoding:
 * the messages are built by hand, so protobuf-c's free_unpacked, which
 * assumes its own unpack allocated them, is not used on them.
 */
static void **t_allocs;
static size_t t_nallocs, t_allocs_cap;

static void *t_alloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);

	cr_assert_not_null(p);
	if (t_nallocs == t_allocs_cap) {
		size_t cap = t_allocs_cap ? 2 * t_allocs_cap : 256;
		void **a = realloc(t_allocs, cap * sizeof(*a));

		cr_assert_not_null(a);
		t_allocs = a;
		t_allocs_cap = cap;
	}
	t_allocs[t_nallocs++] = p;
	return p;
}

static void t_alloc_free_all(void)
{
	for (size_t i = 0; i < t_nallocs; i++)
		free(t_allocs[i]);
	free(t_allocs);
	t_allocs = NULL;
	t_nallocs = t_allocs_cap = 0;
}

/* Field values: the varint edges, the samples' strings, some random. */
static const uint64_t t_u64s[] = {
    0, 1, 127, 128, 300, 4096, 1ull << 32, 1ull << 40, UINT64_MAX,
};
static const char *const t_strs[] = {
    "",		 "a",	"vm-disk-01",	"b@snap1",
    "h2d 0.1.0", "txn", "block_status", "volume vm-disk-01 already exists",
};
/* Payload lengths, around the harness's small limit (1000) too. */
static const uint64_t t_payload_lens[] = {0,   0,    0,	   1,	17,
					  512, 1000, 1001, 4096};

#define T_COUNT(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t t_pick_u64(void)
{
	/* Two statements: the order of two t_rand() calls in one
	 * expression is unspecified, and the corpus must not depend on the
	 * compiler. */
	if (t_below(4) == 0) {
		unsigned shift = (unsigned)t_below(64);

		return t_rand() >> shift;
	}
	return t_u64s[t_below(T_COUNT(t_u64s))];
}

static char *t_pick_str(void)
{
	const char *s = t_strs[t_below(T_COUNT(t_strs))];
	size_t n = strlen(s);
	char *p;

	/* Now and then a long one, to push headers past the small limit. */
	if (t_below(8) == 0) {
		n = 40 + t_below(200);
		p = t_alloc(n + 1);
		memset(p, 'a' + (int)t_below(26), n);
		return p;
	}
	p = t_alloc(n + 1);
	memcpy(p, s, n);
	return p;
}

static ProtobufCMessage *t_new_msg(const ProtobufCMessageDescriptor *d,
				   const ProtobufCFieldDescriptor *oneof,
				   unsigned depth);

/* Bytes one value of type t takes in a message struct or array. */
static size_t t_type_size(const ProtobufCFieldDescriptor *f)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_UINT32:
		return sizeof(uint32_t);
	case PROTOBUF_C_TYPE_UINT64:
		return sizeof(uint64_t);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_ENUM:
		return sizeof(int);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	default:
		cr_assert_fail("field %s: type %d is not generated, extend "
			       "t_type_size and t_set_value",
			       f->name, (int)f->type);
		return 0;
	}
}

/* Store one random value of f's type at slot. */
static void t_set_value(const ProtobufCFieldDescriptor *f, void *slot,
			unsigned depth)
{
	const ProtobufCEnumDescriptor *e;

	switch (f->type) {
	case PROTOBUF_C_TYPE_UINT32:
		*(uint32_t *)slot = (uint32_t)t_pick_u64();
		break;
	case PROTOBUF_C_TYPE_UINT64:
		*(uint64_t *)slot = t_pick_u64();
		break;
	case PROTOBUF_C_TYPE_BOOL:
		*(protobuf_c_boolean *)slot = (protobuf_c_boolean)t_below(2);
		break;
	case PROTOBUF_C_TYPE_ENUM:
		/* Mostly declared values; sometimes one from a newer peer,
		 * or a negative one (a 10-byte varint on the wire). */
		e = f->descriptor;
		switch (t_below(8)) {
		case 0:
			*(int *)slot = (int)(e->n_values + t_below(100));
			break;
		case 1:
			*(int *)slot = -1 - (int)t_below(3);
			break;
		default:
			*(int *)slot = e->values[t_below(e->n_values)].value;
		}
		break;
	case PROTOBUF_C_TYPE_STRING:
		*(char **)slot = t_pick_str();
		break;
	case PROTOBUF_C_TYPE_MESSAGE:
		*(ProtobufCMessage **)slot =
		    t_new_msg(f->descriptor, NULL, depth + 1);
		break;
	default:
		(void)t_type_size(f); /* fails, naming the field */
	}
}

/*
 * A message of type d with most fields set at random.  Of the oneof
 * members only the one given is set (none if NULL).  Submessages stop at
 * depth 2, which is as deep as h2.proto goes.
 */
static ProtobufCMessage *t_new_msg(const ProtobufCMessageDescriptor *d,
				   const ProtobufCFieldDescriptor *oneof,
				   unsigned depth)
{
	ProtobufCMessage *m = t_alloc(d->sizeof_message);
	char *base = (char *)m;

	d->message_init(m);
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		void *slot = base + f->offset;

		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			if (f != oneof)
				continue;
			*(uint32_t *)(base + f->quantifier_offset) = f->id;
			t_set_value(f, slot, depth);
		} else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = depth < 2 ? t_below(4) : 0;
			size_t sz = t_type_size(f);
			char *arr = t_alloc(n * sz);

			for (size_t k = 0; k < n; k++)
				t_set_value(f, arr + k * sz, depth);
			*(size_t *)(base + f->quantifier_offset) = n;
			*(void **)slot = arr;
		} else if (f->type == PROTOBUF_C_TYPE_MESSAGE && depth >= 2) {
			continue;
		} else if (t_below(4) != 0) {
			t_set_value(f, slot, depth);
			if (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
			    f->type != PROTOBUF_C_TYPE_STRING &&
			    f->type != PROTOBUF_C_TYPE_MESSAGE)
				*(protobuf_c_boolean *)(base +
							f->quantifier_offset) =
				    1;
		}
	}
	return m;
}

/* One encoded frame, payload included. */
struct t_frame {
	bool is_request;
	int kind; /* oneof case it was built with, 0 none, -1 a sample */
	uint8_t *data;
	size_t len;
};

/* Several frames of one direction back to back, as a pipelining peer
 * sends them; start[] are the frames' offsets. */
struct t_stream {
	uint8_t *data;
	size_t len;
	size_t nframes;
	size_t start[T_STREAM_FRAMES];
};

static struct t_frame *t_frames;
static size_t t_nframes;
static struct t_stream t_streams[T_STREAMS];
static size_t t_max_stream;

static void t_add_frame(bool is_request, int kind, struct h2_frame_buf *b)
{
	struct t_frame *f;

	f = realloc(t_frames, (t_nframes + 1) * sizeof(*f));
	cr_assert_not_null(f);
	t_frames = f;
	f = &t_frames[t_nframes++];
	f->is_request = is_request;
	f->kind = kind;
	f->data = b->data;
	f->len = b->len;
	memset(b, 0, sizeof(*b));
}

/* Frames of one direction: every oneof kind and none, T_VARIANTS each. */
static void t_build_kinds(bool is_request)
{
	const ProtobufCMessageDescriptor *d =
	    is_request ? &h2__request__descriptor : &h2__response__descriptor;

	for (unsigned i = 0; i <= d->n_fields; i++) {
		/* i == n_fields: the message without any oneof member. */
		const ProtobufCFieldDescriptor *f =
		    i < d->n_fields ? &d->fields[i] : NULL;

		if (f && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
			continue;
		for (int v = 0; v < T_VARIANTS; v++) {
			struct h2_frame_buf b = {0};
			ProtobufCMessage *m = t_new_msg(d, f, 0);
			uint64_t id = t_pick_u64();
			uint64_t len =
			    t_payload_lens[t_below(T_COUNT(t_payload_lens))];

			if (is_request) {
				H2__Request *r = (H2__Request *)m;

				r->id = id;
				r->payload_len = len;
				t_append_req(&b, r);
			} else {
				H2__Response *r = (H2__Response *)m;

				r->id = id;
				r->payload_len = len;
				t_append_resp(&b, r);
			}
			t_add_frame(is_request, f ? (int)f->id : 0, &b);
			t_alloc_free_all();
		}
	}
}

/* Streams of 2..T_STREAM_FRAMES frames of one direction each. */
static void t_build_streams(void)
{
	for (size_t i = 0; i < T_STREAMS; i++) {
		struct t_stream *s = &t_streams[i];
		bool is_request = i % 2 == 0;
		struct h2_frame_buf b = {0};

		s->nframes = 2 + t_below(T_STREAM_FRAMES - 1);
		for (size_t k = 0; k < s->nframes; k++) {
			const struct t_frame *f;

			do
				f = &t_frames[t_below(t_nframes)];
			while (f->is_request != is_request);
			s->start[k] = b.len;
			cr_assert_eq(h2_frame_buf_append(&b, f->data, f->len),
				     0);
		}
		s->data = b.data;
		s->len = b.len;
		if (s->len > t_max_stream)
			t_max_stream = s->len;
	}
}

/* The whole corpus, the same on every call (the seed is reset). */
static void t_corpus_build(void)
{
	t_rng = 0x5eed0f00d5eed0f0ull;
	t_build_kinds(true);
	t_build_kinds(false);
	for (size_t i = 0; i < T_NSAMPLES; i++) {
		struct h2_frame_buf b = {0};

		t_samples[i].append(&b);
		t_add_frame(t_samples[i].is_request, -1, &b);
	}
	t_build_streams();
}

static void t_corpus_free(void)
{
	for (size_t i = 0; i < t_nframes; i++)
		free(t_frames[i].data);
	free(t_frames);
	t_frames = NULL;
	t_nframes = 0;
	for (size_t i = 0; i < T_STREAMS; i++)
		free(t_streams[i].data);
	memset(t_streams, 0, sizeof(t_streams));
	t_max_stream = 0;
}

TestSuite(fuzz_frame, .init = t_corpus_build, .fini = t_corpus_free);

static void t_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t t_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

enum t_mutation {
	T_FLIP_BITS,
	T_TRUNCATE,
	T_LEN_HUGE,
	T_LEN_ZERO,
	T_LEN_NUDGE,
	T_INSERT,
	T_DELETE,
	T_SCRIBBLE,
	T_SPLICE,
	T_GARBAGE,
	T_NMUTATIONS
};

/* Hostile header lengths: over both harness limits, or only the small. */
static const uint32_t t_huge_lens[] = {
    UINT32_MAX, UINT32_MAX - 3, 0x80000000u, H2_FRAME_MAX_HEADER + 1, 49,
};

/*
 * Apply mutation kind to buf[0..*len), a copy of stream s; cap bytes are
 * available.  Length mutations hit one of the frames' prefixes.
 */
static void t_mutate(enum t_mutation kind, const struct t_stream *s,
		     uint8_t *buf, size_t *len, size_t cap)
{
	size_t st = s->start[t_below(s->nframes)];
	size_t n, pos;
	uint32_t hdr_len;

	switch (kind) {
	case T_FLIP_BITS:
		for (n = 1 + t_below(4); n > 0 && *len > 0; n--) {
			pos = t_below(*len);
			buf[pos] ^= (uint8_t)(1u << t_below(8));
		}
		break;
	case T_TRUNCATE:
		/* Half the cuts land near a frame start, in its header. */
		if (t_below(2) == 0 && st < *len)
			*len = st + t_below(*len - st < 40 ? *len - st : 40);
		else if (*len > 0)
			*len = t_below(*len);
		break;
	case T_LEN_HUGE:
		if (st + 4 > *len)
			break;
		if (t_below(3) == 0)
			hdr_len = H2_FRAME_MAX_HEADER + 1 +
				  (uint32_t)t_below(1u << 30);
		else
			hdr_len = t_huge_lens[t_below(T_COUNT(t_huge_lens))];
		t_put_be32(buf + st, hdr_len);
		break;
	case T_LEN_ZERO:
		if (st + 4 <= *len)
			t_put_be32(buf + st, 0);
		break;
	case T_LEN_NUDGE:
		/* A header that ends early or late: the protobuf is cut or
		 * swallows the next bytes. */
		if (st + 4 <= *len)
			t_put_be32(buf + st, t_get_be32(buf + st) - 3 +
						 (uint32_t)t_below(7));
		break;
	case T_INSERT:
		n = 1 + t_below(8);
		if (*len + n > cap)
			break;
		pos = t_below(*len + 1);
		memmove(buf + pos + n, buf + pos, *len - pos);
		for (size_t i = 0; i < n; i++)
			buf[pos + i] = (uint8_t)t_rand();
		*len += n;
		break;
	case T_DELETE:
		if (*len == 0)
			break;
		pos = t_below(*len);
		n = 1 + t_below(8);
		if (n > *len - pos)
			n = *len - pos;
		memmove(buf + pos, buf + pos + n, *len - pos - n);
		*len -= n;
		break;
	case T_SCRIBBLE:
		if (*len == 0)
			break;
		pos = t_below(*len);
		for (n = 1 + t_below(16); n > 0 && pos < *len; n--)
			buf[pos++] = (uint8_t)t_rand();
		break;
	case T_SPLICE: {
		/* The head of this stream, the tail of another. */
		const struct t_stream *o = &t_streams[t_below(T_STREAMS)];
		size_t from = t_below(o->len);

		*len = t_below(*len + 1);
		if (*len + (o->len - from) <= cap) {
			memcpy(buf + *len, o->data + from, o->len - from);
			*len += o->len - from;
		}
		break;
	}
	case T_GARBAGE:
		/* Noise, half of it behind a plausible small length. */
		*len = t_below(300);
		for (size_t i = 0; i < *len; i++)
			buf[i] = (uint8_t)t_rand();
		if (*len >= 4 && t_below(2) == 0)
			t_put_be32(buf, 1 + (uint32_t)t_below(60));
		break;
	case T_NMUTATIONS:
		break;
	}
}

/* The harness's outcome counters after running it on one input. */
static struct fuzz_frame_stats t_run(const uint8_t *buf, size_t len)
{
	memset(&fuzz_frame_stats, 0, sizeof(fuzz_frame_stats));
	LLVMFuzzerTestOneInput(buf, len);
	return fuzz_frame_stats;
}

static void t_stats_add(struct fuzz_frame_stats *sum,
			const struct fuzz_frame_stats *x)
{
	sum->ok += x->ok;
	sum->need_more += x->need_more;
	sum->too_big_header += x->too_big_header;
	sum->invalid += x->invalid;
	sum->too_big_payload += x->too_big_payload;
}

/* Write one seed file dir/name-i; failures fail the test. */
static void t_write_seed(const char *dir, const char *name, size_t i,
			 const uint8_t *data, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s-%04zu", dir, name, i);
	f = fopen(path, "wb");
	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fwrite(data, 1, len, f), len, "%s", path);
	cr_assert_eq(fclose(f), 0, "%s", path);
}

/* The valid corpus as libFuzzer seeds, if H2_FUZZ_SEED_DIR names a dir. */
static void t_dump_seeds(void)
{
	const char *dir = getenv("H2_FUZZ_SEED_DIR");

	if (!dir || !*dir)
		return;
	for (size_t i = 0; i < t_nframes; i++)
		t_write_seed(dir, "frame", i, t_frames[i].data,
			     t_frames[i].len);
	for (size_t i = 0; i < T_STREAMS; i++)
		t_write_seed(dir, "stream", i, t_streams[i].data,
			     t_streams[i].len);
}

Test(fuzz_frame, valid_frames_of_every_kind_decode)
{
	struct fuzz_frame_stats sum = {0}, st;
	size_t frames = 0;

	for (size_t i = 0; i < t_nframes; i++) {
		const struct t_frame *f = &t_frames[i];
		struct h2_frame_info info;
		H2__Request *req = NULL;
		H2__Response *resp = NULL;
		int rc, kind;

		/* Each is one whole frame of the kind it was built as. */
		if (f->is_request) {
			rc = h2_frame_decode_request(NULL, f->data, f->len,
						     &info, &req);
			kind = rc == 0 ? (int)req->op_case : -2;
		} else {
			rc = h2_frame_decode_response(NULL, f->data, f->len,
						      &info, &resp);
			kind = rc == 0 ? (int)resp->result_case : -2;
		}
		cr_assert_eq(rc, 0, "frame %zu: %d", i, rc);
		cr_assert_eq(info.header_bytes + info.payload_len, f->len);
		if (f->kind >= 0)
			cr_assert_eq(kind, f->kind, "frame %zu", i);
		h2_frame_request_free(req);
		h2_frame_response_free(resp);

		st = t_run(f->data, f->len);
		/* Its own direction under the default limits at least. */
		cr_assert_geq(st.ok, 1, "frame %zu", i);
		t_stats_add(&sum, &st);
		frames++;
	}
	for (size_t i = 0; i < T_STREAMS; i++) {
		st = t_run(t_streams[i].data, t_streams[i].len);
		/* Every frame of it, in its direction, default limits. */
		cr_assert_geq(st.ok, t_streams[i].nframes, "stream %zu", i);
		t_stats_add(&sum, &st);
		frames += t_streams[i].nframes;
	}
	cr_log_info("%zu frames: ok %lu need_more %lu too_big_header %lu "
		    "invalid %lu too_big_payload %lu",
		    frames, (unsigned long)sum.ok, (unsigned long)sum.need_more,
		    (unsigned long)sum.too_big_header,
		    (unsigned long)sum.invalid,
		    (unsigned long)sum.too_big_payload);
	/* The small limits trip on valid frames too. */
	cr_assert_gt(sum.too_big_header, 0);
	cr_assert_gt(sum.too_big_payload, 0);
	t_dump_seeds();
}

Test(fuzz_frame, mutated_frames_reach_every_outcome)
{
	size_t cap = 2 * t_max_stream + T_SLACK;
	uint8_t *buf = malloc(cap);
	struct fuzz_frame_stats sum = {0}, st;

	cr_assert_not_null(buf);
	for (size_t i = 0; i < T_MUTANTS; i++) {
		const struct t_stream *s = &t_streams[t_below(T_STREAMS)];
		/* Every kind equally often; the seed picks the rest. */
		enum t_mutation kind = (enum t_mutation)(i % T_NMUTATIONS);
		size_t len = s->len;

		memcpy(buf, s->data, len);
		t_mutate(kind, s, buf, &len, cap);
		/* A quarter get a second, different mutation on top. */
		if (t_below(4) == 0)
			t_mutate((enum t_mutation)t_below(T_NMUTATIONS), s, buf,
				 &len, cap);
		st = t_run(buf, len);
		t_stats_add(&sum, &st);
	}
	free(buf);
	cr_log_info(
	    "%d inputs: ok %lu need_more %lu too_big_header %lu "
	    "invalid %lu too_big_payload %lu",
	    T_MUTANTS, (unsigned long)sum.ok, (unsigned long)sum.need_more,
	    (unsigned long)sum.too_big_header, (unsigned long)sum.invalid,
	    (unsigned long)sum.too_big_payload);
	cr_assert_gt(sum.ok, 0);
	cr_assert_gt(sum.need_more, 0);
	cr_assert_gt(sum.too_big_header, 0);
	cr_assert_gt(sum.invalid, 0);
	cr_assert_gt(sum.too_big_payload, 0);
}

/*
 * Hand-picked damage to a stream's first frame, with the outcome it must
 * have: each of the 4 walks (request and response, two limits) stops at
 * the first boundary with that verdict and counts nothing else.
 */
Test(fuzz_frame, targeted_damage_has_its_outcome)
{
	const struct t_stream *s = &t_streams[0];
	uint8_t *buf = malloc(s->len);
	struct fuzz_frame_stats st;

	cr_assert_not_null(buf);

	memcpy(buf, s->data, s->len);
	t_put_be32(buf, 0);
	st = t_run(buf, s->len);
	cr_assert_eq(st.invalid, 4);
	cr_assert_eq(
	    st.ok + st.need_more + st.too_big_header + st.too_big_payload, 0);

	for (size_t i = 0; i < T_COUNT(t_huge_lens); i++) {
		if (t_huge_lens[i] <= H2_FRAME_MAX_HEADER)
			continue; /* over the small limit only */
		memcpy(buf, s->data, s->len);
		t_put_be32(buf, t_huge_lens[i]);
		st = t_run(buf, s->len);
		cr_assert_eq(st.too_big_header, 4, "len %#x", t_huge_lens[i]);
		cr_assert_eq(
		    st.ok + st.need_more + st.invalid + st.too_big_payload, 0);
	}

	/* libFuzzer's first find: field number 0 behind a 2-byte tag, which
	 * protobuf-c accepted but re-encoded into a header it refuses. */
	static const uint8_t field0[] = {
	    0x00, 0x00, 0x00, 0x17, 0x08, 0x0c, 0x82, 0x00, 0x12,
	    0x0a, 0x04, 0x10, 0x80, 0x80, 0x40, 0x0a, 0x0a, 0x08,
	    0x80, 0x80, 0x40, 0x10, 0x80, 0x80, 0x40, 0x18, 0x01,
	};
	st = t_run(field0, sizeof(field0));
	cr_assert_eq(st.invalid, 4);
	cr_assert_eq(
	    st.ok + st.need_more + st.too_big_header + st.too_big_payload, 0);

	for (size_t cut = 1; cut < H2_FRAME_PREFIX; cut++) {
		st = t_run(s->data, cut);
		cr_assert_eq(st.need_more, 4, "cut %zu", cut);
		cr_assert_eq(st.ok + st.too_big_header + st.invalid +
				 st.too_big_payload,
			     0);
	}
	free(buf);
}
