/*
 * nbd_proto.c - the NBD protocol engine (see nbd_proto.h).
 *
 * The engine is a state machine over phases:
 *
 *   CLIENT_FLAGS -> OPTIONS <-> OPT_SKIP          (option haggling)
 *                      |  <-> WAIT                (lookup, list, STARTTLS)
 *                      v
 *                  TRANSMIT <-> CMD_SKIP          (commands)
 *                      |
 *                      v
 *                    DONE                         (DISC, ABORT or closed)
 *
 * Invariants:
 *  - Nothing is read into memory before its length is checked: an option
 *    is looked at only once its header and its (bounded) data are all in
 *    the caller's window; option data over the bound and the payload of a
 *    refused write are skipped by counting.
 *  - Every offset/length test is written "off > size || len > size - off",
 *    which cannot overflow.
 *  - Before TLS, no option but STARTTLS and ABORT does anything, and the
 *    upgrade forgets everything negotiated before it.  The exception is
 *    an engine set plaintext (h2_nbd_set_plaintext): it never does TLS
 *    and needs none, so options work from the start.
 *  - Every reply is complete when the output callback returns: replies of
 *    different commands never interleave inside one message.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd_proto.h"

enum phase {
	PH_CLIENT_FLAGS,
	PH_OPTIONS,
	PH_OPT_SKIP, /* skipping option data, then answering the option */
	PH_WAIT,     /* an action is outstanding (see enum pending) */
	PH_TRANSMIT,
	PH_CMD_SKIP, /* skipping the payload of a refused write */
	PH_DONE,     /* disconnected or closing: input is ignored */
};

enum pending {
	PEND_NONE,
	PEND_TLS,
	PEND_LOOKUP,
	PEND_LIST,
};

struct h2_nbd {
	h2_nbd_out_fn out;
	void *arg;
	enum phase phase;
	enum pending pend;
	bool tls;	    /* STARTTLS done */
	bool plain;	    /* a plaintext listener: no TLS, none needed */
	bool no_zeroes;	    /* NBD_FLAG_C_NO_ZEROES */
	bool structured;    /* NBD_OPT_STRUCTURED_REPLY acknowledged */
	bool meta_base;	    /* base:allocation selected for meta_name */
	uint32_t pend_opt;  /* the option an outstanding lookup answers */
	uint32_t info_want; /* INFO/GO: bit per NBD_INFO_* requested */
	/* PH_OPT_SKIP / PH_CMD_SKIP */
	uint64_t skip;
	uint32_t skip_opt, skip_rep;
	bool skip_close;
	const char *skip_msg;
	/* the export, once transmitting */
	uint64_t size;
	uint16_t tflags;
	bool read_only;
	char name[H2_NBD_NAME_MAX + 1];	     /* lookup, then the export */
	char meta_name[H2_NBD_NAME_MAX + 1]; /* SET_META_CONTEXT's export */
	char why[200];
};

_Static_assert(H2_NBD_WINDOW >= NBD_REQUEST_SIZE, "window holds a request");
_Static_assert(H2_NBD_OPT_MAX >= 4 + H2_NBD_NAME_MAX + 2,
	       "an INFO/GO with the longest name fits");

/* ---------------------------------------------------------------------- */
/* Big-endian helpers.                                                    */

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
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

static uint8_t *put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	return put32(p + 4, (uint32_t)v);
}

/* ---------------------------------------------------------------------- */
/* Output.                                                                */

static void emit(struct h2_nbd *p, const void *buf, size_t len)
{
	if (len)
		p->out(p->arg, buf, len);
}

/* An option reply header followed by len bytes of data. */
static void rep_hdr(struct h2_nbd *p, uint32_t opt, uint32_t type, uint32_t len)
{
	uint8_t h[NBD_REP_HDR_SIZE], *q = h;

	q = put64(q, NBD_REP_MAGIC);
	q = put32(q, opt);
	q = put32(q, type);
	put32(q, len);
	emit(p, h, sizeof(h));
}

static void rep(struct h2_nbd *p, uint32_t opt, uint32_t type, const void *data,
		uint32_t len)
{
	rep_hdr(p, opt, type, len);
	emit(p, data, len);
}

/* An option reply whose data is a message (errors). */
static void rep_msg(struct h2_nbd *p, uint32_t opt, uint32_t type,
		    const char *msg)
{
	size_t n = msg ? strnlen(msg, H2_NBD_NAME_MAX) : 0;

	rep(p, opt, type, msg, (uint32_t)n);
}

static void rep_fmt(struct h2_nbd *p, uint32_t opt, uint32_t type,
		    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void rep_fmt(struct h2_nbd *p, uint32_t opt, uint32_t type,
		    const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	rep(p, opt, type, msg,
	    (uint32_t)((size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1));
}

static void simple_reply(struct h2_nbd *p, uint64_t cookie, uint32_t error)
{
	uint8_t h[NBD_SIMPLE_REPLY_SIZE], *q = h;

	q = put32(q, NBD_SIMPLE_REPLY_MAGIC);
	q = put32(q, error);
	put64(q, cookie);
	emit(p, h, sizeof(h));
}

static void chunk_hdr(uint8_t *h, uint16_t flags, uint16_t type,
		      uint64_t cookie, uint32_t len)
{
	h = put32(h, NBD_STRUCTURED_REPLY_MAGIC);
	h = put16(h, flags);
	h = put16(h, type);
	h = put64(h, cookie);
	put32(h, len);
}

/* ---------------------------------------------------------------------- */
/* Results of one feed step.                                              */

static size_t need(struct h2_nbd_action *act, size_t n)
{
	act->type = H2_NBD_NEED_MORE;
	act->need = n;
	return 0;
}

static size_t done(struct h2_nbd_action *act, size_t consumed)
{
	act->type = H2_NBD_CONTINUE;
	return consumed;
}

/* End the session: the caller sends what is queued, then closes. */
static size_t closing(struct h2_nbd *p, struct h2_nbd_action *act,
		      size_t consumed, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static size_t closing(struct h2_nbd *p, struct h2_nbd_action *act,
		      size_t consumed, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->why, sizeof(p->why), fmt, ap);
	va_end(ap);
	p->phase = PH_DONE;
	act->type = H2_NBD_CLOSE;
	act->why = p->why;
	return consumed;
}

/* ---------------------------------------------------------------------- */
/* Lifetime.                                                              */

struct h2_nbd *h2_nbd_new(h2_nbd_out_fn out, void *arg)
{
	struct h2_nbd *p = calloc(1, sizeof(*p));
	uint8_t g[NBD_GREETING_SIZE], *q = g;

	if (!p)
		return NULL;
	p->out = out;
	p->arg = arg;
	p->phase = PH_CLIENT_FLAGS;
	q = put64(q, NBD_MAGIC);
	q = put64(q, NBD_IHAVEOPT);
	put16(q, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	emit(p, g, sizeof(g));
	return p;
}

void h2_nbd_set_plaintext(struct h2_nbd *p)
{
	p->plain = true;
}

void h2_nbd_free(struct h2_nbd *p)
{
	free(p);
}

bool h2_nbd_transmitting(const struct h2_nbd *p)
{
	return p->tflags != 0;
}

bool h2_nbd_tls_active(const struct h2_nbd *p)
{
	return p->tls;
}

uint16_t h2_nbd_export_flags(const struct h2_nbd *p)
{
	return p->tflags;
}

uint32_t h2_nbd_errno(int err)
{
	switch (-err) {
	case 0:
		return 0;
	case EPERM:
	case EACCES:
	case EROFS:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
	case ERANGE:
		return NBD_EINVAL;
	case ENOSPC:
	case EFBIG:
	case EDQUOT:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case EOPNOTSUPP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

int h2_nbd_export_split(const char *name, char *vol, size_t vollen, char *snap,
			size_t snaplen)
{
	const char *at = strchr(name, '@');
	size_t vl = at ? (size_t)(at - name) : strlen(name);
	size_t sl = at ? strlen(at + 1) : 0;

	if (at && (strchr(at + 1, '@') || vl == 0 || sl == 0))
		return -EINVAL;
	if (vl >= vollen || sl >= snaplen)
		return -EINVAL;
	memcpy(vol, name, vl);
	vol[vl] = 0;
	if (at)
		memcpy(snap, at + 1, sl);
	snap[sl] = 0;
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Handshake and options.                                                 */

static size_t feed_client_flags(struct h2_nbd *p, const uint8_t *in, size_t len,
				struct h2_nbd_action *act)
{
	uint32_t flags;

	if (len < 4)
		return need(act, 4);
	flags = get32(in);
	if (flags &
	    ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
		return closing(p, act, 4, "unknown client flags 0x%08" PRIx32,
			       flags);
	if (!(flags & NBD_FLAG_C_FIXED_NEWSTYLE))
		return closing(p, act, 4,
			       "client does not speak fixed newstyle "
			       "negotiation, which %s",
			       p->plain ? "this server needs"
					: "TLS needs");
	p->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
	p->phase = PH_OPTIONS;
	return done(act, 4);
}

static size_t feed_opt_skip(struct h2_nbd *p, const uint8_t *in, size_t len,
			    struct h2_nbd_action *act);

/*
 * Skip an option's olen bytes of data (the 16-byte header is consumed
 * now), then answer it with reply type rep (and msg), then close if
 * close_after.  Data past H2_NBD_OPT_SKIP_MAX is not worth waiting for:
 * answer at once and end the session.
 */
static size_t opt_skip(struct h2_nbd *p, struct h2_nbd_action *act,
		       uint32_t opt, uint32_t olen, uint32_t rep_type,
		       const char *msg, bool close_after)
{
	if (olen > H2_NBD_OPT_SKIP_MAX) {
		rep_msg(p, opt, rep_type, msg);
		return closing(p, act, NBD_OPT_HDR_SIZE,
			       "option %" PRIu32 " with %" PRIu32
			       " bytes of data (over %u)",
			       opt, olen, H2_NBD_OPT_SKIP_MAX);
	}
	p->skip = olen;
	p->skip_opt = opt;
	p->skip_rep = rep_type;
	p->skip_msg = msg;
	p->skip_close = close_after;
	p->phase = PH_OPT_SKIP;
	if (olen == 0) /* nothing to skip: answer now */
		return NBD_OPT_HDR_SIZE + feed_opt_skip(p, NULL, 0, act);
	return done(act, NBD_OPT_HDR_SIZE);
}

static size_t feed_opt_skip(struct h2_nbd *p, const uint8_t *in, size_t len,
			    struct h2_nbd_action *act)
{
	size_t n = len < p->skip ? len : (size_t)p->skip;

	(void)in;
	if (p->skip && len == 0)
		return need(act, 1);
	p->skip -= n;
	if (p->skip)
		return done(act, n);
	if (p->skip_rep == NBD_REP_ACK)
		rep(p, p->skip_opt, NBD_REP_ACK, NULL, 0);
	else
		rep_msg(p, p->skip_opt, p->skip_rep, p->skip_msg);
	if (p->skip_close) {
		act->soft = true;
		return closing(p, act, n, "client sent NBD_OPT_ABORT");
	}
	p->phase = PH_OPTIONS;
	return done(act, n);
}

/* Copy a wire string into dst (H2_NBD_NAME_MAX + 1 bytes); false if it
 * holds a NUL or is too long. */
static bool copy_name(char *dst, const uint8_t *src, uint32_t len)
{
	if (len > H2_NBD_NAME_MAX || memchr(src, 0, len))
		return false;
	memcpy(dst, src, len);
	dst[len] = 0;
	return true;
}

/* Start an asynchronous lookup of p->name for option opt. */
static size_t start_lookup(struct h2_nbd *p, struct h2_nbd_action *act,
			   uint32_t opt, size_t consumed)
{
	p->pend = PEND_LOOKUP;
	p->pend_opt = opt;
	p->phase = PH_WAIT;
	act->type = H2_NBD_LOOKUP;
	act->name = p->name;
	act->go = opt != NBD_OPT_INFO;
	return consumed;
}

/* NBD_OPT_INFO and NBD_OPT_GO: name, then a list of NBD_INFO_* types. */
static size_t opt_info(struct h2_nbd *p, struct h2_nbd_action *act,
		       uint32_t opt, const uint8_t *d, uint32_t olen)
{
	size_t consumed = NBD_OPT_HDR_SIZE + olen;
	uint32_t nlen;
	uint16_t n;

	if (olen < 6)
		goto invalid;
	nlen = get32(d);
	if (nlen > olen - 6)
		goto invalid;
	n = get16(d + 4 + nlen);
	if ((uint64_t)olen != 6 + (uint64_t)nlen + 2 * (uint64_t)n)
		goto invalid;
	if (!copy_name(p->name, d + 4, nlen)) {
		rep_msg(p, opt, NBD_REP_ERR_INVALID,
			"the export name holds a NUL byte");
		return done(act, consumed);
	}
	p->info_want = 0;
	for (uint16_t i = 0; i < n; i++) {
		uint16_t t = get16(d + 6 + nlen + 2 * (size_t)i);

		if (t < 32)
			p->info_want |= 1u << t;
	}
	return start_lookup(p, act, opt, consumed);
invalid:
	rep_msg(p, opt, NBD_REP_ERR_INVALID,
		"malformed option: the name and information request lengths "
		"do not add up to the option length");
	return done(act, consumed);
}

/* Does a query select base:allocation?  (LIST also takes "base:".) */
static bool query_selects_base(const uint8_t *q, uint32_t len, bool list)
{
	static const char full[] = "base:allocation", ns[] = "base:";

	if (len == sizeof(full) - 1 && memcmp(q, full, len) == 0)
		return true;
	return list && len == sizeof(ns) - 1 && memcmp(q, ns, len) == 0;
}

/* NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. */
static size_t opt_meta(struct h2_nbd *p, struct h2_nbd_action *act,
		       uint32_t opt, const uint8_t *d, uint32_t olen)
{
	static const char ctx[] = "base:allocation";
	size_t consumed = NBD_OPT_HDR_SIZE + olen;
	bool set = opt == NBD_OPT_SET_META_CONTEXT, match = false;
	uint32_t nlen, nq, pos;
	uint8_t buf[4 + sizeof(ctx) - 1];

	if (set) {
		/* A SET replaces the selection even when it fails. */
		p->meta_base = false;
		p->meta_name[0] = 0;
		if (!p->structured) {
			rep_msg(p, opt, NBD_REP_ERR_INVALID,
				"negotiate NBD_OPT_STRUCTURED_REPLY before "
				"selecting metadata contexts");
			return done(act, consumed);
		}
	}
	if (olen < 8)
		goto invalid;
	nlen = get32(d);
	if (nlen > olen - 8)
		goto invalid;
	nq = get32(d + 4 + nlen);
	pos = 8 + nlen;
	/* Each query costs at least 4 bytes: a huge count ends at the end
	 * of the data, so this loop is bounded by olen. */
	for (uint32_t i = 0; i < nq; i++) {
		uint32_t ql;

		if (olen - pos < 4)
			goto invalid;
		ql = get32(d + pos);
		pos += 4;
		if (ql > olen - pos)
			goto invalid;
		if (query_selects_base(d + pos, ql, !set))
			match = true;
		pos += ql;
	}
	if (pos != olen)
		goto invalid;
	if (!set && nq == 0)
		match = true; /* no query: list everything */
	if (set) {
		if (!copy_name(p->meta_name, d + 4, nlen)) {
			rep_msg(p, opt, NBD_REP_ERR_INVALID,
				"the export name holds a NUL byte");
			return done(act, consumed);
		}
		p->meta_base = match;
	}
	if (match) {
		put32(buf, set ? H2_NBD_CTX_BASE_ALLOCATION : 0);
		memcpy(buf + 4, ctx, sizeof(ctx) - 1);
		rep(p, opt, NBD_REP_META_CONTEXT, buf, sizeof(buf));
	}
	rep(p, opt, NBD_REP_ACK, NULL, 0);
	return done(act, consumed);
invalid:
	rep_msg(p, opt, NBD_REP_ERR_INVALID,
		"malformed option: the name and query lengths do not add up "
		"to the option length");
	return done(act, consumed);
}

static bool opt_known(uint32_t opt)
{
	switch (opt) {
	case NBD_OPT_EXPORT_NAME:
	case NBD_OPT_ABORT:
	case NBD_OPT_LIST:
	case NBD_OPT_STARTTLS:
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
	case NBD_OPT_STRUCTURED_REPLY:
	case NBD_OPT_LIST_META_CONTEXT:
	case NBD_OPT_SET_META_CONTEXT:
		return true;
	default:
		return false;
	}
}

/* Options that carry no data. */
static bool opt_empty(uint32_t opt)
{
	return opt == NBD_OPT_LIST || opt == NBD_OPT_STARTTLS ||
	       opt == NBD_OPT_STRUCTURED_REPLY;
}

static size_t feed_option(struct h2_nbd *p, const uint8_t *in, size_t len,
			  struct h2_nbd_action *act)
{
	uint64_t magic;
	uint32_t opt, olen;
	const uint8_t *d;

	if (len < NBD_OPT_HDR_SIZE)
		return need(act, NBD_OPT_HDR_SIZE);
	magic = get64(in);
	opt = get32(in + 8);
	olen = get32(in + 12);
	if (magic != NBD_IHAVEOPT)
		return closing(p, act, 0,
			       "bad option magic 0x%016" PRIx64
			       " (not an NBD client?)",
			       magic);

	/* Decisions that need no option data: the data is skipped. */
	if (opt == NBD_OPT_ABORT)
		return opt_skip(p, act, opt, olen, NBD_REP_ACK, NULL, true);
	if (!p->tls && !p->plain && opt == NBD_OPT_EXPORT_NAME)
		return closing(p, act, NBD_OPT_HDR_SIZE,
			       "NBD_OPT_EXPORT_NAME before STARTTLS; this "
			       "server requires TLS");
	if (!p->tls && !p->plain && opt != NBD_OPT_STARTTLS)
		return opt_skip(p, act, opt, olen, NBD_REP_ERR_TLS_REQD,
				"TLS is required: send NBD_OPT_STARTTLS first",
				false);
	if (!opt_known(opt))
		return opt_skip(p, act, opt, olen, NBD_REP_ERR_UNSUP,
				"option not supported by this server", false);
	/* The spec's answer when a server will not do TLS: a client
	 * that only prefers TLS carries on in plaintext, one that needs
	 * it gives up. */
	if (opt == NBD_OPT_STARTTLS && p->plain)
		return opt_skip(p, act, opt, olen, NBD_REP_ERR_POLICY,
				"TLS is not offered on this listener "
				"(plaintext, loopback only); use the TLS "
				"NBD port",
				false);
	if (opt == NBD_OPT_STARTTLS && p->tls)
		return opt_skip(p, act, opt, olen, NBD_REP_ERR_INVALID,
				"TLS is already active", false);
	if (opt_empty(opt) && olen)
		return opt_skip(p, act, opt, olen, NBD_REP_ERR_INVALID,
				"this option takes no data", false);
	if (olen > H2_NBD_OPT_MAX) {
		if (opt == NBD_OPT_EXPORT_NAME)
			return closing(p, act, NBD_OPT_HDR_SIZE,
				       "NBD_OPT_EXPORT_NAME with a %" PRIu32
				       "-byte name",
				       olen);
		return opt_skip(p, act, opt, olen, NBD_REP_ERR_TOO_BIG,
				"option data too long", false);
	}

	/* The whole option, bounded by H2_NBD_OPT_MAX, in one window. */
	if (len < NBD_OPT_HDR_SIZE + (size_t)olen)
		return need(act, NBD_OPT_HDR_SIZE + (size_t)olen);
	d = in + NBD_OPT_HDR_SIZE;
	switch (opt) {
	case NBD_OPT_STARTTLS:
		rep(p, opt, NBD_REP_ACK, NULL, 0);
		p->pend = PEND_TLS;
		p->phase = PH_WAIT;
		act->type = H2_NBD_STARTTLS;
		return NBD_OPT_HDR_SIZE;
	case NBD_OPT_EXPORT_NAME:
		if (!copy_name(p->name, d, olen))
			return closing(p, act, NBD_OPT_HDR_SIZE + olen,
				       "NBD_OPT_EXPORT_NAME with a NUL byte "
				       "in the name");
		p->info_want = 0;
		return start_lookup(p, act, opt, NBD_OPT_HDR_SIZE + olen);
	case NBD_OPT_LIST:
		p->pend = PEND_LIST;
		p->phase = PH_WAIT;
		act->type = H2_NBD_LIST;
		return NBD_OPT_HDR_SIZE;
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return opt_info(p, act, opt, d, olen);
	case NBD_OPT_STRUCTURED_REPLY:
		p->structured = true;
		rep(p, opt, NBD_REP_ACK, NULL, 0);
		return done(act, NBD_OPT_HDR_SIZE);
	default: /* the META_CONTEXT pair */
		return opt_meta(p, act, opt, d, olen);
	}
}

void h2_nbd_tls_done(struct h2_nbd *p)
{
	if (p->pend != PEND_TLS)
		return;
	/* The spec: nothing negotiated before the upgrade survives it. */
	p->pend = PEND_NONE;
	p->tls = true;
	p->structured = false;
	p->meta_base = false;
	p->meta_name[0] = 0;
	p->info_want = 0;
	p->phase = PH_OPTIONS;
}

/* The transmission flags for an export. */
static uint16_t export_flags(const struct h2_nbd *p, bool read_only)
{
	/* h2_store_sync flushes the whole store, so a FLUSH (or FUA) on
	 * any connection covers writes completed on all of them. */
	uint16_t f =
	    NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN;

	if (read_only)
		f |= NBD_FLAG_READ_ONLY;
	else
		/* Zeroing without NO_HOLE punches a hole, which costs
		 * metadata only: honestly faster than writing zeros. */
		f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
		     NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
	if (p->structured)
		f |= NBD_FLAG_SEND_DF; /* a READ is always one chunk */
	return f;
}

/* The NBD_REP_INFO replies of a successful INFO or GO. */
static void send_infos(struct h2_nbd *p, uint32_t opt,
		       const struct h2_nbd_export *ex, uint16_t flags)
{
	uint8_t b[14], *q;
	size_t nl = strlen(p->name);

	q = put16(b, NBD_INFO_EXPORT);
	q = put64(q, ex->size);
	put16(q, flags);
	rep(p, opt, NBD_REP_INFO, b, 12);
	/* Sent even when not asked for: the values are the defaults a
	 * client assumes anyway, except that we state the maximum. */
	q = put16(b, NBD_INFO_BLOCK_SIZE);
	q = put32(q, H2_NBD_BLOCK_MIN);
	q = put32(q, H2_NBD_BLOCK_PREFERRED);
	put32(q, H2_NBD_BLOCK_MAX);
	rep(p, opt, NBD_REP_INFO, b, 14);
	if (p->info_want & (1u << NBD_INFO_NAME)) {
		rep_hdr(p, opt, NBD_REP_INFO, (uint32_t)(2 + nl));
		put16(b, NBD_INFO_NAME);
		emit(p, b, 2);
		emit(p, p->name, nl);
	}
	if ((p->info_want & (1u << NBD_INFO_DESCRIPTION)) && ex->description) {
		size_t dl = strnlen(ex->description, H2_NBD_NAME_MAX);

		rep_hdr(p, opt, NBD_REP_INFO, (uint32_t)(2 + dl));
		put16(b, NBD_INFO_DESCRIPTION);
		emit(p, b, 2);
		emit(p, ex->description, dl);
	}
}

/* Enter transmission with the export just looked up. */
static void start_transmission(struct h2_nbd *p, const struct h2_nbd_export *ex,
			       uint16_t flags)
{
	p->size = ex->size;
	p->read_only = ex->read_only;
	p->tflags = flags;
	/* Contexts selected for another export do not apply to this one. */
	if (strcmp(p->meta_name, p->name) != 0)
		p->meta_base = false;
	p->phase = PH_TRANSMIT;
}

enum h2_nbd_act h2_nbd_lookup_done(struct h2_nbd *p, int err,
				   const struct h2_nbd_export *ex,
				   const char *msg)
{
	uint32_t opt = p->pend_opt;
	uint16_t flags;

	if (p->pend != PEND_LOOKUP)
		return H2_NBD_CONTINUE;
	p->pend = PEND_NONE;
	if (err || !ex) {
		if (opt == NBD_OPT_EXPORT_NAME) {
			snprintf(p->why, sizeof(p->why),
				 "NBD_OPT_EXPORT_NAME \"%.64s\" refused: %s",
				 p->name, msg ? msg : "unavailable");
			p->phase = PH_DONE;
			return H2_NBD_CLOSE;
		}
		if (err == -ESHUTDOWN)
			rep_msg(p, opt, NBD_REP_ERR_SHUTDOWN,
				msg ? msg : "the server is shutting down");
		else if (msg)
			rep_msg(p, opt, NBD_REP_ERR_UNKNOWN, msg);
		else
			rep_fmt(p, opt, NBD_REP_ERR_UNKNOWN,
				"no export named \"%.200s\"", p->name);
		p->phase = PH_OPTIONS;
		return H2_NBD_CONTINUE;
	}
	flags = export_flags(p, ex->read_only);
	if (opt == NBD_OPT_EXPORT_NAME) {
		static const uint8_t zeros[124];
		uint8_t b[10], *q = put64(b, ex->size);

		put16(q, flags);
		emit(p, b, sizeof(b));
		if (!p->no_zeroes)
			emit(p, zeros, sizeof(zeros));
		start_transmission(p, ex, flags);
		return H2_NBD_TRANSMIT;
	}
	send_infos(p, opt, ex, flags);
	rep(p, opt, NBD_REP_ACK, NULL, 0);
	if (opt == NBD_OPT_GO) {
		start_transmission(p, ex, flags);
		return H2_NBD_TRANSMIT;
	}
	p->phase = PH_OPTIONS;
	return H2_NBD_CONTINUE;
}

void h2_nbd_list_add(struct h2_nbd *p, const char *name)
{
	size_t nl = strnlen(name, H2_NBD_NAME_MAX + 1);
	uint8_t b[4];

	if (p->pend != PEND_LIST || nl > H2_NBD_NAME_MAX)
		return;
	rep_hdr(p, NBD_OPT_LIST, NBD_REP_SERVER, (uint32_t)(4 + nl));
	put32(b, (uint32_t)nl);
	emit(p, b, 4);
	emit(p, name, nl);
}

void h2_nbd_list_done(struct h2_nbd *p, int err)
{
	if (p->pend != PEND_LIST)
		return;
	p->pend = PEND_NONE;
	p->phase = PH_OPTIONS;
	if (err == -ESHUTDOWN)
		rep_msg(p, NBD_OPT_LIST, NBD_REP_ERR_SHUTDOWN,
			"the server is shutting down");
	else if (err)
		rep_fmt(p, NBD_OPT_LIST, NBD_REP_ERR_POLICY,
			"cannot list the exports: %s", strerror(-err));
	else
		rep(p, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

/* ---------------------------------------------------------------------- */
/* Transmission.                                                          */

/*
 * Cheap checks of a request against the export, before any work: 0, or
 * a negative errno with *msg set.  The errors follow the spec: writes
 * past the end are ENOSPC, reads and the rest EINVAL, writes to a
 * read-only export EPERM, unknown flags EINVAL.
 */
static int check_cmd(const struct h2_nbd *p, const struct h2_nbd_cmd *c,
		     const char **msg)
{
	uint16_t allowed = NBD_CMD_FLAG_FUA; /* valid on every command */
	bool writes = c->type == NBD_CMD_WRITE || c->type == NBD_CMD_TRIM ||
		      c->type == NBD_CMD_WRITE_ZEROES;

	switch (c->type) {
	case NBD_CMD_READ:
		if (p->structured)
			allowed |= NBD_CMD_FLAG_DF;
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
		break;
	case NBD_CMD_BLOCK_STATUS:
		allowed |= NBD_CMD_FLAG_REQ_ONE;
		break;
	case NBD_CMD_WRITE:
	case NBD_CMD_FLUSH:
	case NBD_CMD_TRIM:
		break;
	default:
		*msg = "unknown command";
		return -EINVAL;
	}
	if (c->flags & ~allowed) {
		*msg = "command flags not valid for this command";
		return -EINVAL;
	}
	if (c->type == NBD_CMD_FLUSH) {
		if (c->off || c->len) {
			*msg = "NBD_CMD_FLUSH needs offset and length 0";
			return -EINVAL;
		}
		return 0;
	}
	if (writes && p->read_only) {
		*msg = "the export is read-only";
		return -EPERM;
	}
	if (c->off > p->size || c->len > p->size - c->off) {
		*msg = "the request goes beyond the end of the export";
		return c->type == NBD_CMD_WRITE ||
			       c->type == NBD_CMD_WRITE_ZEROES
			   ? -ENOSPC
			   : -EINVAL;
	}
	switch (c->type) {
	case NBD_CMD_READ:
		if (c->len > H2_NBD_MAX_IO) {
			*msg = "read larger than the 32 MiB maximum block "
			       "size";
			return -EINVAL;
		}
		break;
	case NBD_CMD_WRITE_ZEROES:
		if ((c->flags & NBD_CMD_FLAG_NO_HOLE) &&
		    (c->flags & NBD_CMD_FLAG_FAST_ZERO)) {
			*msg = "allocating zeros is no faster than writing "
			       "them";
			return -EOPNOTSUPP;
		}
		if ((c->flags & NBD_CMD_FLAG_NO_HOLE) &&
		    c->len > H2_NBD_MAX_IO) {
			*msg = "NO_HOLE zeroing larger than the 32 MiB "
			       "maximum block size";
			return -EINVAL;
		}
		break;
	case NBD_CMD_BLOCK_STATUS:
		if (!p->structured || !p->meta_base) {
			*msg = "select base:allocation with "
			       "NBD_OPT_SET_META_CONTEXT first";
			return -EINVAL;
		}
		if (c->len == 0) {
			*msg = "block status of zero bytes";
			return -EINVAL;
		}
		break;
	default:
		break;
	}
	return 0;
}

static size_t feed_request(struct h2_nbd *p, const uint8_t *in, size_t len,
			   struct h2_nbd_action *act)
{
	struct h2_nbd_cmd c;
	const char *msg = NULL;
	uint32_t magic;
	int err;

	if (len < NBD_REQUEST_SIZE)
		return need(act, NBD_REQUEST_SIZE);
	magic = get32(in);
	if (magic != NBD_REQUEST_MAGIC)
		return closing(p, act, 0,
			       "bad request magic 0x%08" PRIx32
			       " (out of step with the client)",
			       magic);
	c.flags = get16(in + 4);
	c.type = get16(in + 6);
	c.cookie = get64(in + 8);
	c.off = get64(in + 16);
	c.len = get32(in + 24);
	act->cmd = c;
	if (c.type == NBD_CMD_DISC) {
		p->phase = PH_DONE;
		act->type = H2_NBD_DISCONNECT;
		return NBD_REQUEST_SIZE;
	}
	if (c.type == NBD_CMD_WRITE && c.len > H2_NBD_MAX_IO) {
		h2_nbd_reply(p, &c, -EINVAL,
			     "write larger than the 32 MiB maximum block "
			     "size");
		act->answered = true;
		act->answered_err = -EINVAL;
		return closing(p, act, NBD_REQUEST_SIZE,
			       "write of %" PRIu32 " bytes, over the %u MiB "
			       "limit",
			       c.len, H2_NBD_MAX_IO >> 20);
	}
	err = check_cmd(p, &c, &msg);
	if (err) {
		h2_nbd_reply(p, &c, err, msg);
		act->answered = true;
		act->answered_err = err;
		if (c.type == NBD_CMD_WRITE && c.len) {
			p->skip = c.len;
			p->phase = PH_CMD_SKIP;
		}
		return done(act, NBD_REQUEST_SIZE);
	}
	if (c.len == 0 && c.type != NBD_CMD_FLUSH) {
		/* Nothing to do; the spec asks servers not to disconnect. */
		h2_nbd_reply(p, &c, 0, NULL);
		act->answered = true;
		return done(act, NBD_REQUEST_SIZE);
	}
	act->type = H2_NBD_COMMAND;
	return NBD_REQUEST_SIZE;
}

static size_t feed_cmd_skip(struct h2_nbd *p, size_t len,
			    struct h2_nbd_action *act)
{
	size_t n = len < p->skip ? len : (size_t)p->skip;

	if (len == 0)
		return need(act, 1);
	p->skip -= n;
	if (p->skip == 0)
		p->phase = PH_TRANSMIT;
	return done(act, n);
}

size_t h2_nbd_window(const struct h2_nbd *p, uint64_t *skip)
{
	*skip = 0;
	switch (p->phase) {
	case PH_CLIENT_FLAGS:
		return 4;
	case PH_OPTIONS:
		return H2_NBD_WINDOW;
	case PH_TRANSMIT:
		return NBD_REQUEST_SIZE;
	case PH_OPT_SKIP:
	case PH_CMD_SKIP:
		*skip = p->skip;
		return 0;
	case PH_WAIT:
	case PH_DONE:
		break;
	}
	return 0;
}

size_t h2_nbd_feed(struct h2_nbd *p, const uint8_t *in, size_t len,
		   struct h2_nbd_action *act)
{
	memset(act, 0, sizeof(*act));
	switch (p->phase) {
	case PH_CLIENT_FLAGS:
		return feed_client_flags(p, in, len, act);
	case PH_OPTIONS:
		return feed_option(p, in, len, act);
	case PH_OPT_SKIP:
		return feed_opt_skip(p, in, len, act);
	case PH_TRANSMIT:
		return feed_request(p, in, len, act);
	case PH_CMD_SKIP:
		return feed_cmd_skip(p, len, act);
	case PH_WAIT:
	case PH_DONE:
		break;
	}
	act->type = H2_NBD_WAIT;
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Replies to commands.                                                   */

void h2_nbd_reply(struct h2_nbd *p, const struct h2_nbd_cmd *cmd, int err,
		  const char *msg)
{
	uint8_t h[NBD_CHUNK_HDR_SIZE + 6], *q;
	uint32_t e = h2_nbd_errno(err);
	size_t ml;

	if (!p->structured) {
		simple_reply(p, cmd->cookie, e);
		return;
	}
	if (e == 0) {
		/* A READ must be answered with chunks; a NONE chunk covers
		 * an empty one.  Other commands take the shorter reply. */
		if (cmd->type == NBD_CMD_READ) {
			chunk_hdr(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE,
				  cmd->cookie, 0);
			emit(p, h, NBD_CHUNK_HDR_SIZE);
		} else {
			simple_reply(p, cmd->cookie, 0);
		}
		return;
	}
	ml = msg ? strnlen(msg, H2_NBD_NAME_MAX) : 0;
	chunk_hdr(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, cmd->cookie,
		  (uint32_t)(6 + ml));
	q = put32(h + NBD_CHUNK_HDR_SIZE, e);
	put16(q, (uint16_t)ml);
	emit(p, h, sizeof(h));
	emit(p, msg, ml);
}

size_t h2_nbd_read_header(const struct h2_nbd *p, const struct h2_nbd_cmd *cmd,
			  uint8_t *hdr)
{
	if (!p->structured) {
		uint8_t *q = put32(hdr, NBD_SIMPLE_REPLY_MAGIC);

		q = put32(q, 0);
		put64(q, cmd->cookie);
		return NBD_SIMPLE_REPLY_SIZE;
	}
	/* One OFFSET_DATA chunk, final: reads are whole or failed, so no
	 * error can follow it (and NBD_CMD_FLAG_DF is always honoured). */
	chunk_hdr(hdr, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA,
		  cmd->cookie, 8 + cmd->len);
	put64(hdr + NBD_CHUNK_HDR_SIZE, cmd->off);
	return NBD_CHUNK_HDR_SIZE + 8;
}

void h2_nbd_reply_extents(struct h2_nbd *p, const struct h2_nbd_cmd *cmd,
			  const struct h2_nbd_extent *ext, size_t n)
{
	bool one = cmd->flags & NBD_CMD_FLAG_REQ_ONE;
	uint8_t buf[512], *q = buf;
	uint64_t left = cmd->len;
	size_t m = 0;

	/* Count the descriptors first: the chunk header carries the
	 * length.  Each is clipped to what is left of the request. */
	for (size_t i = 0; i < n && left && !(one && m); i++) {
		uint64_t l = ext[i].len < left ? ext[i].len : left;

		if (l) {
			m++;
			left -= l;
		}
	}
	chunk_hdr(buf, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS,
		  cmd->cookie, (uint32_t)(4 + 8 * (m ? m : 1)));
	q = put32(buf + NBD_CHUNK_HDR_SIZE, H2_NBD_CTX_BASE_ALLOCATION);
	if (m == 0) {
		/* "Allocated" is always a truthful answer. */
		q = put32(q, cmd->len);
		q = put32(q, 0);
	}
	left = cmd->len;
	for (size_t i = 0, k = 0; k < m; i++) {
		uint64_t l = ext[i].len < left ? ext[i].len : left;

		if (!l)
			continue;
		if ((size_t)(q - buf) + 8 > sizeof(buf)) {
			emit(p, buf, (size_t)(q - buf));
			q = buf;
		}
		q = put32(q, (uint32_t)l);
		q = put32(q, ext[i].hole ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0);
		left -= l;
		k++;
	}
	emit(p, buf, (size_t)(q - buf));
}
