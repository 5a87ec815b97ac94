/*
 * frame.c - h2 wire framing: decoding and encoding frames, status codes.
 *
 * The decoders are written for hostile input: every length is checked
 * before it is used to wait, allocate or index, the only allocation is
 * protobuf-c's unpack of a header whose size is already bounded, and no
 * input can make them assert.  See frame.h for the frame layout.
 *
 * Unpack allocates through frame_pb_allocator, our own malloc and free,
 * rather than protobuf-c's default: so that running out of memory while
 * unpacking can be told apart from a malformed header (-ENOMEM, not
 * -EINVAL), and so that the allocation-failure tests
 * (tests/server/test_memfault.c), which count the allocations of h2's own
 * code, see these too.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

_Static_assert(H2_FRAME_PREFIX == sizeof(uint32_t), "hdr_len is a u32");
_Static_assert(H2_FRAME_MAX_HEADER <= UINT32_MAX - H2_FRAME_PREFIX,
	       "prefix + header fits a u32");
/* pack returns prefix + header as an int. */
_Static_assert(H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER <= (unsigned)INT32_MAX,
	       "frame header size fits an int");

/*
 * hdr_len 0 is refused by decoders, yet a message whose fields all hold
 * their defaults (a Ping reply to id 0) packs to 0 bytes.  Such a header is
 * sent as the explicit encoding of "id = 0" instead: field 1, varint, 0.
 * Request and Response both have id as field 1, and every protobuf decoder
 * reads it back as the same empty message.
 */
static const uint8_t frame_empty_header[] = {0x08, 0x00};

static const struct h2_frame_limits frame_default_limits =
	H2_FRAME_LIMITS_DEFAULT;

/* One decoder: the state needed to assemble one header from pieces. */
struct h2_frame_decoder {
	struct h2_frame_limits lim;
	uint8_t prefix[H2_FRAME_PREFIX]; /* hdr_len bytes until complete */
	uint8_t *buf;			 /* prefix + header, once checked */
	size_t cap;			 /* allocated bytes of buf */
	size_t fill;			 /* bytes of the current frame held */
	size_t want;			 /* prefix + hdr_len, once known */
	int error;			 /* sticky negative error, or 0 */
};

/* Big-endian u32 load and store. */
static uint32_t frame_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void frame_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Read and check a complete prefix: 0 with *hdr_len, or a negative error. */
static int frame_check_prefix(const struct h2_frame_limits *lim,
			      const uint8_t *prefix, size_t *hdr_len)
{
	uint32_t n = frame_get_be32(prefix);

	if (n == 0)
		return -EINVAL;
	/* Compared before n is used for anything, so a huge length costs
	 * nothing.  The second test keeps prefix + n within a u32, hence
	 * within size_t, whatever limit the caller configured. */
	if (n > lim->max_header || n > UINT32_MAX - H2_FRAME_PREFIX)
		return -EMSGSIZE;
	*hdr_len = n;
	return 0;
}

/* Set by frame_pb_alloc when an allocation failed (this thread). */
static _Thread_local bool frame_oom;

static void *frame_pb_alloc(void *data, size_t size)
{
	void *p = malloc(size);

	(void)data;
	if (!p)
		frame_oom = true;
	return p;
}

static void frame_pb_free(void *data, void *p)
{
	(void)data;
	free(p);
}

static ProtobufCAllocator frame_pb_allocator = {
	.alloc = frame_pb_alloc,
	.free = frame_pb_free,
};

/*
 * Whether an unpacked message tree is free of field number 0.  protobuf-c
 * 1.4.1 refuses field 0 only when its tag is one byte: a longer varint
 * (0x82 0x00) passes, is kept as an unknown field, and is re-encoded as the
 * one-byte 0x02 that unpack then refuses.  Field 0 is not valid protobuf,
 * so it is refused here as unpack should have, at every depth; this also
 * keeps every decoded header re-encodable into one that decodes (a server
 * that logs, echoes or forwards a header must not emit a frame no peer
 * takes).  The recursion follows the schema, which has no cycles, not the
 * input; the walk is linear in what unpack built and allocates nothing.
 */
static bool frame_msg_valid(const ProtobufCMessage *msg)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;
	const char *base = (const char *)msg;

	for (unsigned i = 0; i < msg->n_unknown_fields; i++)
		if (msg->unknown_fields[i].tag == 0)
			return false;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		ProtobufCMessage *const *sub =
			(ProtobufCMessage *const *)(base + f->offset);
		size_t n = 1;

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			if (*(const uint32_t *)(base + f->quantifier_offset) !=
			    f->id)
				continue;
		} else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			n = *(const size_t *)(base + f->quantifier_offset);
			sub = *(ProtobufCMessage *const *const *)sub;
		}
		for (size_t k = 0; k < n; k++)
			if (sub[k] && !frame_msg_valid(sub[k]))
				return false;
	}
	return true;
}

/*
 * The common decoder.  is_request picks the message type; the two have the
 * same framing but their id and payload_len live in different structs.
 */
static int frame_decode(const struct h2_frame_limits *lim, const void *buf,
			size_t len, bool is_request,
			struct h2_frame_info *info, ProtobufCMessage **out)
{
	const uint8_t *p = buf;
	ProtobufCMessage *msg;
	uint64_t id, payload_len;
	size_t hdr_len;
	int rc;

	memset(info, 0, sizeof(*info));
	if (!lim)
		lim = &frame_default_limits;
	if (len < H2_FRAME_PREFIX) {
		info->need = H2_FRAME_PREFIX - len;
		return H2_FRAME_NEED_MORE;
	}
	rc = frame_check_prefix(lim, p, &hdr_len);
	if (rc < 0)
		return rc;
	if (len - H2_FRAME_PREFIX < hdr_len) {
		info->need = hdr_len - (len - H2_FRAME_PREFIX);
		return H2_FRAME_NEED_MORE;
	}

	/* Its total is bounded by hdr_len.  protobuf-c returns NULL both
	 * for a malformed header and when an allocation failed. */
	frame_oom = false;
	if (is_request) {
		H2__Request *req = h2__request__unpack(
			&frame_pb_allocator, hdr_len, p + H2_FRAME_PREFIX);
		if (!req)
			return frame_oom ? -ENOMEM : -EINVAL;
		msg = &req->base;
		id = req->id;
		payload_len = req->payload_len;
	} else {
		H2__Response *resp = h2__response__unpack(
			&frame_pb_allocator, hdr_len, p + H2_FRAME_PREFIX);
		if (!resp)
			return frame_oom ? -ENOMEM : -EINVAL;
		msg = &resp->base;
		id = resp->id;
		payload_len = resp->payload_len;
	}

	if (!frame_msg_valid(msg)) {
		protobuf_c_message_free_unpacked(msg, &frame_pb_allocator);
		return -EINVAL;
	}

	info->header_bytes = H2_FRAME_PREFIX + hdr_len;
	info->id = id;
	info->payload_len = payload_len;
	if (payload_len > lim->max_payload) {
		protobuf_c_message_free_unpacked(msg, &frame_pb_allocator);
		return -EFBIG;
	}
	*out = msg;
	return 0;
}

int h2_frame_decode_request(const struct h2_frame_limits *lim,
			    const void *buf, size_t len,
			    struct h2_frame_info *info, H2__Request **out)
{
	ProtobufCMessage *msg;
	int rc = frame_decode(lim, buf, len, true, info, &msg);

	if (rc == 0)
		*out = (H2__Request *)msg;
	return rc;
}

int h2_frame_decode_response(const struct h2_frame_limits *lim,
			     const void *buf, size_t len,
			     struct h2_frame_info *info, H2__Response **out)
{
	ProtobufCMessage *msg;
	int rc = frame_decode(lim, buf, len, false, info, &msg);

	if (rc == 0)
		*out = (H2__Response *)msg;
	return rc;
}

void h2_frame_request_free(H2__Request *req)
{
	if (req)
		h2__request__free_unpacked(req, &frame_pb_allocator);
}

void h2_frame_response_free(H2__Response *resp)
{
	if (resp)
		h2__response__free_unpacked(resp, &frame_pb_allocator);
}

struct h2_frame_decoder *h2_frame_decoder_new(const struct h2_frame_limits *lim)
{
	struct h2_frame_decoder *dec = calloc(1, sizeof(*dec));

	if (!dec)
		return NULL;
	dec->lim = lim ? *lim : frame_default_limits;
	return dec;
}

void h2_frame_decoder_free(struct h2_frame_decoder *dec)
{
	if (!dec)
		return;
	free(dec->buf);
	free(dec);
}

size_t h2_frame_decoder_pending(const struct h2_frame_decoder *dec)
{
	return dec->fill;
}

/* Copy up to want - fill bytes of src into dst + fill; returns the count. */
static size_t decoder_take(uint8_t *dst, size_t *fill, size_t want,
			   const uint8_t *src, size_t avail)
{
	size_t n = want - *fill;

	if (n > avail)
		n = avail;
	/* memcpy(_, NULL, 0) is undefined, and data may be NULL when len 0. */
	if (n > 0)
		memcpy(dst + *fill, src, n);
	*fill += n;
	return n;
}

/*
 * The common feed: gather the prefix, check it, grow the buffer to the
 * now-bounded header size, gather the header, decode it in place.
 */
static int decoder_feed(struct h2_frame_decoder *dec, const void *data,
			size_t len, bool is_request, size_t *used,
			struct h2_frame_info *info, ProtobufCMessage **out)
{
	const uint8_t *p = data;
	size_t taken = 0, hdr_len;
	int rc;

	memset(info, 0, sizeof(*info));
	if (dec->error) {
		rc = dec->error;
		goto out;
	}
	if (dec->fill < H2_FRAME_PREFIX) {
		taken += decoder_take(dec->prefix, &dec->fill, H2_FRAME_PREFIX,
				      p, len);
		if (dec->fill < H2_FRAME_PREFIX) {
			info->need = H2_FRAME_PREFIX - dec->fill;
			rc = H2_FRAME_NEED_MORE;
			goto out;
		}
		rc = frame_check_prefix(&dec->lim, dec->prefix, &hdr_len);
		if (rc < 0)
			goto fail;
		dec->want = H2_FRAME_PREFIX + hdr_len;
		if (dec->cap < dec->want) {
			/* Not realloc: the old contents are not needed. */
			free(dec->buf);
			dec->cap = 0;
			dec->buf = malloc(dec->want);
			if (!dec->buf) {
				rc = -ENOMEM;
				goto fail;
			}
			dec->cap = dec->want;
		}
		memcpy(dec->buf, dec->prefix, H2_FRAME_PREFIX);
	}

	/* Not p + taken when nothing is left: data may be NULL (len 0), and
	 * even NULL + 0 is undefined.  fill < want here, as hdr_len > 0. */
	if (taken < len)
		taken += decoder_take(dec->buf, &dec->fill, dec->want,
				      p + taken, len - taken);
	if (dec->fill < dec->want) {
		info->need = dec->want - dec->fill;
		rc = H2_FRAME_NEED_MORE;
		goto out;
	}
	/* The next byte in the stream is payload, then the next frame. */
	dec->fill = 0;
	rc = frame_decode(&dec->lim, dec->buf, dec->want, is_request, info,
			  out);
	if (rc < 0)
		goto fail;
	goto out;

fail:
	dec->error = rc;
out:
	*used = taken;
	return rc;
}

int h2_frame_decoder_feed_request(struct h2_frame_decoder *dec,
				  const void *data, size_t len, size_t *used,
				  struct h2_frame_info *info, H2__Request **out)
{
	ProtobufCMessage *msg;
	int rc = decoder_feed(dec, data, len, true, used, info, &msg);

	if (rc == 0)
		*out = (H2__Request *)msg;
	return rc;
}

int h2_frame_decoder_feed_response(struct h2_frame_decoder *dec,
				   const void *data, size_t len, size_t *used,
				   struct h2_frame_info *info,
				   H2__Response **out)
{
	ProtobufCMessage *msg;
	int rc = decoder_feed(dec, data, len, false, used, info, &msg);

	if (rc == 0)
		*out = (H2__Response *)msg;
	return rc;
}

/* Header bytes a message takes on the wire, the empty case included. */
static size_t frame_header_len(const ProtobufCMessage *msg)
{
	size_t n = protobuf_c_message_get_packed_size(msg);

	return n ? n : sizeof(frame_empty_header);
}

/* Write prefix + header; see h2_frame_pack_request. */
static int frame_pack(const ProtobufCMessage *msg, uint8_t *out, size_t cap)
{
	size_t packed = protobuf_c_message_get_packed_size(msg);
	size_t hdr_len = packed ? packed : sizeof(frame_empty_header);

	if (hdr_len > H2_FRAME_MAX_HEADER)
		return -EMSGSIZE;
	if (cap < H2_FRAME_PREFIX || cap - H2_FRAME_PREFIX < hdr_len)
		return -ENOBUFS;
	frame_put_be32(out, (uint32_t)hdr_len);
	if (packed == 0)
		memcpy(out + H2_FRAME_PREFIX, frame_empty_header,
		       sizeof(frame_empty_header));
	else
		protobuf_c_message_pack(msg, out + H2_FRAME_PREFIX);
	return (int)(H2_FRAME_PREFIX + hdr_len);
}

size_t h2_frame_request_size(const H2__Request *req)
{
	return H2_FRAME_PREFIX + frame_header_len(&req->base);
}

size_t h2_frame_response_size(const H2__Response *resp)
{
	return H2_FRAME_PREFIX + frame_header_len(&resp->base);
}

int h2_frame_pack_request(const H2__Request *req, uint8_t *out, size_t cap)
{
	return frame_pack(&req->base, out, cap);
}

int h2_frame_pack_response(const H2__Response *resp, uint8_t *out,
			   size_t cap)
{
	return frame_pack(&resp->base, out, cap);
}

/* Make room for n more bytes: 0 or -ENOMEM (the buffer is unchanged). */
static int frame_buf_reserve(struct h2_frame_buf *buf, size_t n)
{
	size_t cap;
	uint8_t *p;

	if (n > SIZE_MAX - buf->len)
		return -ENOMEM;
	if (buf->len + n <= buf->cap)
		return 0;
	cap = buf->cap < 256 ? 256 : buf->cap;
	while (cap < buf->len + n)
		cap = cap > SIZE_MAX / 2 ? buf->len + n : cap * 2;
	p = realloc(buf->data, cap);
	if (!p)
		return -ENOMEM;
	buf->data = p;
	buf->cap = cap;
	return 0;
}

/* Append one message's prefix + header. */
static int frame_buf_append_msg(struct h2_frame_buf *buf,
				const ProtobufCMessage *msg)
{
	size_t n = H2_FRAME_PREFIX + frame_header_len(msg);
	int rc;

	if (n > H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER)
		return -EMSGSIZE;
	rc = frame_buf_reserve(buf, n);
	if (rc < 0)
		return rc;
	rc = frame_pack(msg, buf->data + buf->len, buf->cap - buf->len);
	if (rc < 0)
		return rc;
	buf->len += (size_t)rc;
	return 0;
}

int h2_frame_append_request(struct h2_frame_buf *buf, const H2__Request *req)
{
	return frame_buf_append_msg(buf, &req->base);
}

int h2_frame_append_response(struct h2_frame_buf *buf,
			     const H2__Response *resp)
{
	return frame_buf_append_msg(buf, &resp->base);
}

int h2_frame_buf_append(struct h2_frame_buf *buf, const void *data,
			size_t len)
{
	int rc;

	if (len == 0)
		return 0;
	rc = frame_buf_reserve(buf, len);
	if (rc < 0)
		return rc;
	memcpy(buf->data + buf->len, data, len);
	buf->len += len;
	return 0;
}

void h2_frame_buf_free(struct h2_frame_buf *buf)
{
	free(buf->data);
	memset(buf, 0, sizeof(*buf));
}

H2__Status h2_status_from_errno(int neg_errno)
{
	switch (neg_errno) {
	case 0:
		return H2__STATUS__OK;
	case -EINVAL:
		return H2__STATUS__INVALID_ARGUMENT;
	case -ERANGE:
		return H2__STATUS__OUT_OF_RANGE;
	case -ENOENT:
		return H2__STATUS__NOT_FOUND;
	case -EEXIST:
		return H2__STATUS__ALREADY_EXISTS;
	case -EACCES:
	case -EPERM:
		return H2__STATUS__PERMISSION_DENIED;
	case -EROFS:
		return H2__STATUS__READ_ONLY;
	case -ENOSPC:
		return H2__STATUS__NO_SPACE;
	case -EIO:
		return H2__STATUS__IO_ERROR;
	case -EBADMSG:
		return H2__STATUS__CHECKSUM_ERROR;
	case -EFBIG:
	case -EMSGSIZE:
		return H2__STATUS__TOO_LARGE;
	case -EOPNOTSUPP:
#if ENOTSUP != EOPNOTSUPP
	case -ENOTSUP:
#endif
		return H2__STATUS__UNSUPPORTED;
	case -EBUSY:
		return H2__STATUS__BUSY;
	case -EPROTO:
		return H2__STATUS__FAILED_PRECONDITION;
	case -ESHUTDOWN:
		return H2__STATUS__UNAVAILABLE;
	case -ENOTEMPTY:
		return H2__STATUS__HAS_DEPENDENTS;
	default:
		return H2__STATUS__INTERNAL;
	}
}

int h2_errno_from_status(H2__Status status)
{
	switch (status) {
	case H2__STATUS__OK:
		return 0;
	case H2__STATUS__INVALID_ARGUMENT:
		return -EINVAL;
	case H2__STATUS__OUT_OF_RANGE:
		return -ERANGE;
	case H2__STATUS__NOT_FOUND:
		return -ENOENT;
	case H2__STATUS__ALREADY_EXISTS:
		return -EEXIST;
	case H2__STATUS__PERMISSION_DENIED:
		return -EACCES;
	case H2__STATUS__READ_ONLY:
		return -EROFS;
	case H2__STATUS__NO_SPACE:
		return -ENOSPC;
	case H2__STATUS__IO_ERROR:
		return -EIO;
	case H2__STATUS__CHECKSUM_ERROR:
		return -EBADMSG;
	case H2__STATUS__TOO_LARGE:
		return -EFBIG;
	case H2__STATUS__UNSUPPORTED:
		return -EOPNOTSUPP;
	case H2__STATUS__BUSY:
		return -EBUSY;
	case H2__STATUS__FAILED_PRECONDITION:
		return -EPROTO;
	case H2__STATUS__UNAVAILABLE:
		return -ESHUTDOWN;
	case H2__STATUS__HAS_DEPENDENTS:
		return -ENOTEMPTY;
	case H2__STATUS__INTERNAL:
	default:
		/* Also a status from a newer peer that this build lacks. */
		return -EREMOTEIO;
	}
}

static const char *const frame_status_names[] = {
	[H2__STATUS__OK] = "OK",
	[H2__STATUS__INVALID_ARGUMENT] = "INVALID_ARGUMENT",
	[H2__STATUS__OUT_OF_RANGE] = "OUT_OF_RANGE",
	[H2__STATUS__NOT_FOUND] = "NOT_FOUND",
	[H2__STATUS__ALREADY_EXISTS] = "ALREADY_EXISTS",
	[H2__STATUS__PERMISSION_DENIED] = "PERMISSION_DENIED",
	[H2__STATUS__READ_ONLY] = "READ_ONLY",
	[H2__STATUS__NO_SPACE] = "NO_SPACE",
	[H2__STATUS__IO_ERROR] = "IO_ERROR",
	[H2__STATUS__CHECKSUM_ERROR] = "CHECKSUM_ERROR",
	[H2__STATUS__TOO_LARGE] = "TOO_LARGE",
	[H2__STATUS__UNSUPPORTED] = "UNSUPPORTED",
	[H2__STATUS__INTERNAL] = "INTERNAL",
	[H2__STATUS__BUSY] = "BUSY",
	[H2__STATUS__FAILED_PRECONDITION] = "FAILED_PRECONDITION",
	[H2__STATUS__UNAVAILABLE] = "UNAVAILABLE",
	[H2__STATUS__HAS_DEPENDENTS] = "HAS_DEPENDENTS",
};
/* A Status added to h2.proto must be added above (the test checks names). */
_Static_assert(sizeof(frame_status_names) / sizeof(frame_status_names[0]) ==
		       H2__STATUS__HAS_DEPENDENTS + 1,
	       "one name per Status");

const char *h2_status_name(H2__Status status)
{
	size_t n = sizeof(frame_status_names) / sizeof(frame_status_names[0]);

	/* Compare as unsigned: a peer can send any int, negatives included. */
	if ((unsigned)status >= n || !frame_status_names[status])
		return "UNKNOWN";
	return frame_status_names[status];
}
