/*
 * frame.h - h2 wire framing: decoding and encoding frames, status codes.
 *
 * A frame on the wire (h2.proto has the full story):
 *
 *   0          4                   4 + hdr_len          4 + hdr_len + payload_len
 *   +----------+-------------------+---------------------------+
 *   | hdr_len  | protobuf header   | raw payload               |
 *   | u32 BE   | Request/Response  | header.payload_len bytes  |
 *   +----------+-------------------+---------------------------+
 *
 * This module turns the first two parts into an unpacked H2__Request or
 * H2__Response and back.  It never touches the payload: the caller reads
 * or writes payload_len bytes after the header itself, so bulk data is
 * never copied through protobuf or through this module.
 *
 * Invariants the decoders keep, because every byte they see may come from
 * an attacker:
 *   - hdr_len is checked against the limit before anything is allocated or
 *     waited for: a peer announcing a 4 GiB header is refused as soon as
 *     its 4 length bytes arrive.
 *   - Memory is only allocated by protobuf-c's unpack, which runs once the
 *     whole (bounded) header is present and allocates in proportion to
 *     hdr_len.  The worst shape is a run of 2-byte empty repeated elements:
 *     an empty VolumeInfo costs one pointer and one 112-byte malloc
 *     chunk, so a decoded Response keeps up to 60 bytes of heap per wire
 *     byte, 3.9 MiB for a 64 KiB header (an empty SnapshotInfo: 52).  A
 *     Request, what a server decodes, keeps at most 36 (an empty TxnOp;
 *     an unknown field: 28).  While unpacking, protobuf-c's scan table
 *     adds 32 bytes per field: a peak of about 92 per wire byte, 6 MiB.
 *     (Measured with protobuf-c 1.4.1 and glibc; test_frame checks that
 *     what is kept stays under 56 for a Request, 64 for a Response.)
 *     Callers that keep many decoded headers alive at once (in-flight
 *     requests) should convert them and free the protobuf early.
 *   - payload_len is checked against the limit before the header is handed
 *     out, so a caller may size a buffer from it.
 *   - Nothing here asserts or aborts on input.
 *
 * A decoded Request whose op is not set (H2__REQUEST__OP__NOT_SET), e.g.
 * one using an op number this build does not know, decodes successfully:
 * the frame is well formed and its framing can be trusted, so the server
 * answers that id with UNSUPPORTED and keeps the connection.  Unknown
 * fields are likewise ignored (proto3 rules), and an unknown Status value
 * in a Response is kept as its number.
 *
 * Thread safety: every function here is a pure function of its arguments
 * and thread-safe.  A struct h2_frame_decoder holds one byte stream's state:
 * use one per connection, from one thread at a time.
 */
#ifndef H2_PROTO_FRAME_H
#define H2_PROTO_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "h2.pb-c.h"

#define H2_PROTO_VERSION 1
#define H2_DEFAULT_PORT  7410

/* Size of the big-endian hdr_len prefix. */
#define H2_FRAME_PREFIX 4u
/* Protocol limit on hdr_len; the encoders never produce more. */
#define H2_FRAME_MAX_HEADER (64u << 10)
/* Default limit on payload_len (HelloResult.max_payload may differ). */
#define H2_FRAME_DEFAULT_MAX_PAYLOAD (32ull << 20)

/* What a decoder accepts.  NULL limits mean the defaults. */
struct h2_frame_limits {
	uint32_t max_header;  /* largest hdr_len; default H2_FRAME_MAX_HEADER */
	uint64_t max_payload; /* largest payload_len */
};

#define H2_FRAME_LIMITS_DEFAULT                                                \
	{                                                                      \
		.max_header = H2_FRAME_MAX_HEADER,                             \
		.max_payload = H2_FRAME_DEFAULT_MAX_PAYLOAD,                   \
	}

/* Positive return of the decoders: the header is not complete yet. */
#define H2_FRAME_NEED_MORE 1

/* What a decoder learned about a frame. */
struct h2_frame_info {
	/* NEED_MORE: bytes still missing before the header is complete (a
	 * lower bound while the 4-byte prefix itself is incomplete). */
	size_t need;
	/* 0 or -EFBIG: bytes of prefix + header; the payload starts there. */
	size_t header_bytes;
	/* 0 or -EFBIG: the header's payload_len and id. */
	uint64_t payload_len;
	uint64_t id;
};

/*
 * Decoding a contiguous buffer holding the stream's bytes so far (the
 * server passes evbuffer_pullup()ed input).  buf[0] must be the first byte
 * of a frame.  Thread-safe.  Returns:
 *   0                   *out is the unpacked message (caller frees with
 *                       h2_frame_request_free / h2_frame_response_free);
 *                       info->header_bytes bytes were used, the payload
 *                       (info->payload_len bytes) follows in the stream.
 *   H2_FRAME_NEED_MORE  call again once info->need more bytes arrived.
 *   -EMSGSIZE           hdr_len over lim->max_header (checked as soon as
 *                       the prefix is complete, before anything else).
 *   -EINVAL             hdr_len is 0, or the header is not a valid
 *                       protobuf.
 *   -ENOMEM             out of memory while unpacking the header.
 *   -EFBIG              payload_len over lim->max_payload; info->id,
 *                       payload_len and header_bytes are filled in (an
 *                       exception to "out-params only on success") so the
 *                       server can answer TOO_LARGE to that id.
 * After any error the stream cannot be resynchronised: close it.
 * len may be larger than the frame; extra bytes are left alone.
 */
int h2_frame_decode_request(const struct h2_frame_limits *lim,
			    const void *buf, size_t len,
			    struct h2_frame_info *info, H2__Request **out);
int h2_frame_decode_response(const struct h2_frame_limits *lim,
			     const void *buf, size_t len,
			     struct h2_frame_info *info, H2__Response **out);

/* Free a decoded message; NULL is a no-op.  Thread-safe. */
void h2_frame_request_free(H2__Request *req);
void h2_frame_response_free(H2__Response *resp);

/*
 * Decoding a stream that arrives in pieces, for readers that do not keep
 * the bytes themselves (the client's socket).  The decoder copies the
 * prefix and then the header, nothing more: it stops at the end of a
 * header and leaves the payload to the caller, who consumes payload_len
 * bytes from the stream before feeding the next frame.  Its buffer grows
 * to hdr_len only after hdr_len was checked against the limit.
 */
struct h2_frame_decoder;

/* A new decoder with a copy of lim (NULL: defaults); NULL on ENOMEM. */
struct h2_frame_decoder *h2_frame_decoder_new(const struct h2_frame_limits *lim);

/* Free a decoder and any partial header it holds; NULL is a no-op. */
void h2_frame_decoder_free(struct h2_frame_decoder *dec);

/*
 * Feed up to len bytes.  *used is always set to the bytes taken from data
 * (never past the end of a header).  Returns 0 with *out and *info as for
 * h2_frame_decode_request; H2_FRAME_NEED_MORE once all of data was taken
 * (info->need as above); or the negative errors of h2_frame_decode_request,
 * which stick: the decoder returns the same error from then on.
 * Also -ENOMEM when its header buffer cannot grow.  One thread at a time.
 */
int h2_frame_decoder_feed_request(struct h2_frame_decoder *dec,
				  const void *data, size_t len, size_t *used,
				  struct h2_frame_info *info, H2__Request **out);
int h2_frame_decoder_feed_response(struct h2_frame_decoder *dec,
				   const void *data, size_t len, size_t *used,
				   struct h2_frame_info *info,
				   H2__Response **out);

/* Bytes of an unfinished frame header the decoder holds. */
size_t h2_frame_decoder_pending(const struct h2_frame_decoder *dec);

/*
 * Encoding.  Only the prefix and header are written; the caller sends
 * payload_len bytes of payload after them.  Thread-safe.
 */

/* Bytes h2_frame_pack_request() writes: prefix + packed header. */
size_t h2_frame_request_size(const H2__Request *req);
size_t h2_frame_response_size(const H2__Response *resp);

/*
 * Write prefix + header into out[0..cap).  Returns the bytes written,
 * -ENOBUFS if cap is too small (nothing written), or -EMSGSIZE if the
 * header exceeds H2_FRAME_MAX_HEADER, which no peer would accept.
 */
int h2_frame_pack_request(const H2__Request *req, uint8_t *out, size_t cap);
int h2_frame_pack_response(const H2__Response *resp, uint8_t *out,
			   size_t cap);

/*
 * A growable byte buffer for building outgoing frames.  Zero-initialise
 * it; data[0..len) is the content.  Owned by one thread.
 */
struct h2_frame_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

/* Append prefix + header.  0, -EMSGSIZE as above, or -ENOMEM. */
int h2_frame_append_request(struct h2_frame_buf *buf, const H2__Request *req);
int h2_frame_append_response(struct h2_frame_buf *buf,
			     const H2__Response *resp);

/* Append raw bytes (a payload).  0 or -ENOMEM. */
int h2_frame_buf_append(struct h2_frame_buf *buf, const void *data,
			size_t len);

/* Free the buffer's memory and zero it; the struct may be reused. */
void h2_frame_buf_free(struct h2_frame_buf *buf);

/*
 * Status codes.  Thread-safe.
 *
 *   -errno                      Status             back to -errno
 *   0                           OK                 0
 *   -EINVAL                     INVALID_ARGUMENT   -EINVAL
 *   -ERANGE                     OUT_OF_RANGE       -ERANGE
 *   -ENOENT                     NOT_FOUND          -ENOENT
 *   -EEXIST                     ALREADY_EXISTS     -EEXIST
 *   -EACCES, -EPERM             PERMISSION_DENIED  -EACCES
 *   -EROFS                      READ_ONLY          -EROFS
 *   -ENOSPC                     NO_SPACE           -ENOSPC
 *   -EIO                        IO_ERROR           -EIO
 *   -EBADMSG                    CHECKSUM_ERROR     -EBADMSG
 *   -EFBIG, -EMSGSIZE           TOO_LARGE          -EFBIG
 *   -ENOTSUP (== -EOPNOTSUPP)   UNSUPPORTED        -EOPNOTSUPP
 *   anything else, incl. >0     INTERNAL           -EREMOTEIO
 *   -EBUSY                      BUSY               -EBUSY
 *   -EPROTO                     FAILED_PRECOND.    -EPROTO
 *   -ESHUTDOWN                  UNAVAILABLE        -ESHUTDOWN
 *   -ENOTEMPTY                  HAS_DEPENDENTS     -ENOTEMPTY
 *
 * The reverse map is chosen so that status -> errno -> status is the
 * identity; a Status this build does not know (a newer peer) becomes
 * -EREMOTEIO.  -ENOMEM is INTERNAL: the server ran out, not the client.
 */
H2__Status h2_status_from_errno(int neg_errno);
int h2_errno_from_status(H2__Status status);

/* "OK", "INVALID_ARGUMENT", ... as in h2.proto; "UNKNOWN" otherwise. */
const char *h2_status_name(H2__Status status);

#endif /* H2_PROTO_FRAME_H */
