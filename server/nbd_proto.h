/*
 * nbd_proto.h - the NBD protocol engine of h2d: the fixed-newstyle
 * handshake, option haggling and request parsing, and the encoding of
 * every reply, with no socket, no event loop and no store.
 *
 * The engine is fed the client's bytes and answers with bytes (through
 * an output callback) and with *actions* the caller carries out: start
 * TLS, look an export up, list exports, run a command, close.  Everything
 * the protocol decides lives here, so the unit tests (tests/nbd) drive it
 * with byte streams alone, hostile ones included; server/nbd.c connects
 * it to libevent, TLS and the worker pool.
 *
 * What a connection goes through (doc/proto.md of NetworkBlockDevice):
 *
 *   greeting --client flags--> OPTIONS (plaintext: only STARTTLS, ABORT)
 *       --STARTTLS--> [caller upgrades, h2_nbd_tls_done] --> OPTIONS (TLS)
 *       --GO / EXPORT_NAME [lookup]--> TRANSMISSION --DISC--> closed
 *
 * TLS is mandatory (the spec's FORCEDTLS mode): before STARTTLS every
 * option other than STARTTLS and ABORT is answered NBD_REP_ERR_TLS_REQD,
 * and EXPORT_NAME, which cannot be answered with an error, ends the
 * session.  Everything negotiated before the upgrade is forgotten.
 * Except on an engine made plaintext (h2_nbd_set_plaintext, for h2d's
 * loopback-only plaintext listener): there options work at once and
 * STARTTLS is refused with NBD_REP_ERR_POLICY.
 *
 * Input contract: h2_nbd_feed() looks at a contiguous window of the input
 * and says how many bytes it consumed.  It never needs more than
 * H2_NBD_WINDOW contiguous bytes; when it needs more than it was given it
 * consumes nothing and says how many it needs.  After an H2_NBD_COMMAND
 * action for NBD_CMD_WRITE, the next cmd.len bytes of the stream are the
 * write's payload and belong to the caller (taken before the next feed).
 *
 * Limits, checked before anything is allocated or waited for: option data
 * up to H2_NBD_OPT_MAX bytes is read; longer option data is skipped
 * (counted, never stored) and answered with an error, and past
 * H2_NBD_OPT_SKIP_MAX the connection is dropped.  Requests carry at most
 * H2_NBD_MAX_IO bytes; a longer write is answered NBD_EINVAL and the
 * connection dropped (the spec allows a hard disconnect for a payload that
 * large), a bad smaller write is answered and its payload skipped.
 * Offsets and lengths are checked with overflow-safe arithmetic.
 *
 * Thread-safety: an engine belongs to one connection; call it from one
 * thread at a time (h2d: the loop thread).  The output callback is called
 * synchronously from the engine's functions.
 */
#ifndef H2D_NBD_PROTO_H
#define H2D_NBD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------- */
/* Wire values (names as in the spec; all integers big-endian).           */

#define NBD_MAGIC		   0x4e42444d41474943ull /* "NBDMAGIC" */
#define NBD_IHAVEOPT		   0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC		   0x0003e889045565a9ull
#define NBD_REQUEST_MAGIC	   0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC	   0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

/* Handshake flags (server) and client flags. */
#define NBD_FLAG_FIXED_NEWSTYLE	  (1u << 0)
#define NBD_FLAG_NO_ZEROES	  (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES	  (1u << 1)

/* Options. */
#define NBD_OPT_EXPORT_NAME	  1u
#define NBD_OPT_ABORT		  2u
#define NBD_OPT_LIST		  3u
#define NBD_OPT_STARTTLS	  5u
#define NBD_OPT_INFO		  6u
#define NBD_OPT_GO		  7u
#define NBD_OPT_STRUCTURED_REPLY  8u
#define NBD_OPT_LIST_META_CONTEXT 9u
#define NBD_OPT_SET_META_CONTEXT  10u

/* Option replies. */
#define NBD_REP_ACK		    1u
#define NBD_REP_SERVER		    2u
#define NBD_REP_INFO		    3u
#define NBD_REP_META_CONTEXT	    4u
#define NBD_REP_FLAG_ERROR	    (1u << 31)
#define NBD_REP_ERR_UNSUP	    (NBD_REP_FLAG_ERROR | 1u)
#define NBD_REP_ERR_POLICY	    (NBD_REP_FLAG_ERROR | 2u)
#define NBD_REP_ERR_INVALID	    (NBD_REP_FLAG_ERROR | 3u)
#define NBD_REP_ERR_PLATFORM	    (NBD_REP_FLAG_ERROR | 4u)
#define NBD_REP_ERR_TLS_REQD	    (NBD_REP_FLAG_ERROR | 5u)
#define NBD_REP_ERR_UNKNOWN	    (NBD_REP_FLAG_ERROR | 6u)
#define NBD_REP_ERR_SHUTDOWN	    (NBD_REP_FLAG_ERROR | 7u)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8u)
#define NBD_REP_ERR_TOO_BIG	    (NBD_REP_FLAG_ERROR | 9u)

/* NBD_REP_INFO types. */
#define NBD_INFO_EXPORT	     0u
#define NBD_INFO_NAME	     1u
#define NBD_INFO_DESCRIPTION 2u
#define NBD_INFO_BLOCK_SIZE  3u

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS	   (1u << 0)
#define NBD_FLAG_READ_ONLY	   (1u << 1)
#define NBD_FLAG_SEND_FLUSH	   (1u << 2)
#define NBD_FLAG_SEND_FUA	   (1u << 3)
#define NBD_FLAG_ROTATIONAL	   (1u << 4)
#define NBD_FLAG_SEND_TRIM	   (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF	   (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN	   (1u << 8)
#define NBD_FLAG_SEND_FAST_ZERO	   (1u << 11)

/* Commands and command flags. */
#define NBD_CMD_READ	     0u
#define NBD_CMD_WRITE	     1u
#define NBD_CMD_DISC	     2u
#define NBD_CMD_FLUSH	     3u
#define NBD_CMD_TRIM	     4u
#define NBD_CMD_WRITE_ZEROES 6u
#define NBD_CMD_BLOCK_STATUS 7u

#define NBD_CMD_FLAG_FUA       (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBD_CMD_FLAG_DF	       (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* Structured reply chunks. */
#define NBD_REPLY_FLAG_DONE	    (1u << 0)
#define NBD_REPLY_TYPE_NONE	    0u
#define NBD_REPLY_TYPE_OFFSET_DATA  1u
#define NBD_REPLY_TYPE_BLOCK_STATUS 5u
#define NBD_REPLY_TYPE_ERROR	    ((1u << 15) + 1)

/* Error values (the spec's, not the host's errno). */
#define NBD_EPERM     1u
#define NBD_EIO	      5u
#define NBD_ENOMEM    12u
#define NBD_EINVAL    22u
#define NBD_ENOSPC    28u
#define NBD_EOVERFLOW 75u
#define NBD_ENOTSUP   95u
#define NBD_ESHUTDOWN 108u

/* base:allocation status flags. */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)

/*
 * Fixed-size messages:
 *
 *   greeting       NBDMAGIC:8 IHAVEOPT:8 hflags:2                  = 18
 *   option         IHAVEOPT:8 option:4 length:4 | data             = 16+
 *   option reply   magic:8 option:4 type:4 length:4 | data         = 20+
 *   request        magic:4 flags:2 type:2 cookie:8 offset:8 len:4  = 28
 *   simple reply   magic:4 error:4 cookie:8 | data                  = 16+
 *   chunk          magic:4 flags:2 type:2 cookie:8 length:4 | data  = 20+
 */
#define NBD_GREETING_SIZE     18u
#define NBD_OPT_HDR_SIZE      16u
#define NBD_REP_HDR_SIZE      20u
#define NBD_REQUEST_SIZE      28u
#define NBD_SIMPLE_REPLY_SIZE 16u
#define NBD_CHUNK_HDR_SIZE    20u

/* ---------------------------------------------------------------------- */
/* h2d's limits and constants.                                            */

/* Largest READ/WRITE (and WRITE_ZEROES with NO_HOLE): the engine's. */
#define H2_NBD_MAX_IO (32u << 20)
/* Advertised block size constraints. */
#define H2_NBD_BLOCK_MIN       1u
#define H2_NBD_BLOCK_PREFERRED 4096u
#define H2_NBD_BLOCK_MAX       H2_NBD_MAX_IO
/* Longest export name (the spec's string limit). */
#define H2_NBD_NAME_MAX 4096u
/* Option data read into memory: a name, a few queries or info types. */
#define H2_NBD_OPT_MAX (H2_NBD_NAME_MAX + 4096u)
/* Longer option data is skipped up to this much, then the session ends. */
#define H2_NBD_OPT_SKIP_MAX (1u << 20)
/* Most contiguous input h2_nbd_feed() ever asks for. */
#define H2_NBD_WINDOW (NBD_OPT_HDR_SIZE + H2_NBD_OPT_MAX)
/* Bytes before the data of a READ reply (h2_nbd_read_header). */
#define H2_NBD_READ_HDR_MAX (NBD_CHUNK_HDR_SIZE + 8u)
/* Metadata context id of base:allocation. */
#define H2_NBD_CTX_BASE_ALLOCATION 1u

/* ---------------------------------------------------------------------- */
/* The engine.                                                            */

struct h2_nbd;

/* Where the engine's output goes (in order; borrowed bytes). */
typedef void (*h2_nbd_out_fn)(void *arg, const void *buf, size_t len);

enum h2_nbd_act {
	H2_NBD_CONTINUE = 0, /* something was done: call h2_nbd_feed again */
	H2_NBD_NEED_MORE,    /* act.need contiguous bytes are needed */
	H2_NBD_WAIT,	     /* an action is outstanding: feed nothing yet */
	H2_NBD_STARTTLS,     /* send the output, then start TLS as the server
				and call h2_nbd_tls_done() */
	H2_NBD_LOOKUP,	     /* look up act.name, then h2_nbd_lookup_done() */
	H2_NBD_LIST,	     /* h2_nbd_list_add() each export the client may
				see, then h2_nbd_list_done() */
	H2_NBD_COMMAND,	     /* run act.cmd, then answer it (h2_nbd_reply*) */
	H2_NBD_TRANSMIT,     /* h2_nbd_lookup_done: option haggling is over,
				commands follow: keep the export open */
	H2_NBD_DISCONNECT,   /* NBD_CMD_DISC: finish the commands in flight,
				send their replies, then close */
	H2_NBD_CLOSE,	     /* send the output, then close (act.why) */
};

/* A transmission request, validated against the export. */
struct h2_nbd_cmd {
	uint16_t type;	 /* NBD_CMD_* */
	uint16_t flags;	 /* NBD_CMD_FLAG_* */
	uint64_t cookie; /* the client's handle, echoed in the reply */
	uint64_t off;
	uint32_t len;
};

struct h2_nbd_action {
	enum h2_nbd_act type;
	size_t need;	  /* NEED_MORE: bytes wanted in one window */
	const char *name; /* LOOKUP: export name (engine-owned, NUL-free) */
	bool go;	  /* LOOKUP: it enters transmission on success,
			     so open the export for I/O */
	struct h2_nbd_cmd cmd; /* COMMAND */
	const char *why;       /* CLOSE: a sentence for the log */
	bool soft;	       /* CLOSE: the client asked (NBD_OPT_ABORT) */
	/* With CONTINUE or CLOSE: the engine itself answered the command
	 * act.cmd (refused it with the negative errno answered_err, or
	 * had nothing to do: 0), so the caller can count it. */
	bool answered;
	int answered_err;
};

/* What a lookup found. */
struct h2_nbd_export {
	uint64_t size;
	bool read_only;
	const char *description; /* NULL: none */
};

/* One extent for a BLOCK_STATUS reply. */
struct h2_nbd_extent {
	uint64_t len;
	bool hole; /* reads as zeros, nothing allocated */
};

/*
 * New engine; the greeting is written to out at once.  NULL if out of
 * memory.  Free with h2_nbd_free().
 */
struct h2_nbd *h2_nbd_new(h2_nbd_out_fn out, void *arg);
void h2_nbd_free(struct h2_nbd *p);

/*
 * This connection has no TLS and needs none (a loopback-only plaintext
 * listener): options and commands work without STARTTLS, and STARTTLS
 * is answered NBD_REP_ERR_POLICY.  Call before the first h2_nbd_feed.
 */
void h2_nbd_set_plaintext(struct h2_nbd *p);

/*
 * Consume input from in[0..len) (see the input contract above) and say
 * what to do next in *act.  Returns the number of bytes consumed.
 */
size_t h2_nbd_feed(struct h2_nbd *p, const uint8_t *in, size_t len,
		   struct h2_nbd_action *act);

/*
 * How to present the next input: the number of contiguous bytes worth
 * handing to h2_nbd_feed (a request while transmitting, up to a whole
 * option while negotiating; never more than H2_NBD_WINDOW), or 0 while
 * the engine skips bytes it never looks at (refused option data or write
 * payload): then *skip says how many remain, and h2_nbd_feed may be given
 * in = NULL with len up to that.
 */
size_t h2_nbd_window(const struct h2_nbd *p, uint64_t *skip);

/* TLS is up (after H2_NBD_STARTTLS): option haggling starts afresh. */
void h2_nbd_tls_done(struct h2_nbd *p);

/*
 * Answer the outstanding H2_NBD_LOOKUP: err 0 with ex, or a negative
 * errno with a sentence for the client (msg may be NULL).  -ESHUTDOWN
 * says the server is stopping; any other error that the export is not
 * available (NBD_REP_ERR_UNKNOWN).  Returns H2_NBD_CONTINUE (still
 * negotiating: feed on), H2_NBD_TRANSMIT (the GO or EXPORT_NAME
 * succeeded: keep the export open, commands follow) or H2_NBD_CLOSE
 * (NBD_OPT_EXPORT_NAME failed, which the protocol answers by closing).
 */
enum h2_nbd_act h2_nbd_lookup_done(struct h2_nbd *p, int err,
				   const struct h2_nbd_export *ex,
				   const char *msg);

/* One export for the outstanding H2_NBD_LIST (names over the limit are
 * left out). */
void h2_nbd_list_add(struct h2_nbd *p, const char *name);
/* The outstanding H2_NBD_LIST is complete (err 0) or failed. */
void h2_nbd_list_done(struct h2_nbd *p, int err);

/*
 * Answer a command that carries no data back: success (err 0) or a
 * negative errno, with an optional sentence (sent only in structured
 * replies).  Not for a successful READ or BLOCK_STATUS.
 */
void h2_nbd_reply(struct h2_nbd *p, const struct h2_nbd_cmd *cmd, int err,
		  const char *msg);

/*
 * The bytes that precede cmd->len bytes of data in a successful READ
 * reply, into hdr (H2_NBD_READ_HDR_MAX bytes); returns their count.  The
 * caller sends them, then the data.
 */
size_t h2_nbd_read_header(const struct h2_nbd *p, const struct h2_nbd_cmd *cmd,
			  uint8_t *hdr);

/*
 * Answer a successful BLOCK_STATUS with n consecutive extents from
 * cmd->off (clipped to the request, one only with NBD_CMD_FLAG_REQ_ONE;
 * with none, the range is reported allocated, which is always true).
 */
void h2_nbd_reply_extents(struct h2_nbd *p, const struct h2_nbd_cmd *cmd,
			  const struct h2_nbd_extent *ext, size_t n);

/* True once option haggling is over and commands flow. */
bool h2_nbd_transmitting(const struct h2_nbd *p);
/* True once TLS was started (h2_nbd_tls_done). */
bool h2_nbd_tls_active(const struct h2_nbd *p);
/* The transmission flags of the export in use (0 before transmission). */
uint16_t h2_nbd_export_flags(const struct h2_nbd *p);

/* The NBD error value for a negative errno. */
uint32_t h2_nbd_errno(int err);

/*
 * Split an export name "VOLUME" or "VOLUME@SNAPSHOT" into vol and snap
 * (vollen and snaplen bytes; snap "" when there is none).  -EINVAL if a
 * part is empty or does not fit, or the name has more than one '@'.
 */
int h2_nbd_export_split(const char *name, char *vol, size_t vollen, char *snap,
			size_t snaplen);

#endif
