/*
 * fuzz_nbd.c - fuzz harness for the NBD protocol engine (server/nbd_proto.c):
 * the handshake, option haggling and command parsing, fed a client's byte
 * stream with no socket, no TLS and no store.
 *
 * Input: two control bytes, then the client's bytes.
 *
 *   byte 0  bits 0-2  export size (fz_sizes[])
 *           bit 3     the export is read-only
 *           bits 4-5  lookups: 0 found, 1 not found, 2 shutting down,
 *                     3 found unless the name holds '@'
 *           bit 6     listing the exports fails
 *           bit 7     deferred replies are sent newest first
 *   byte 1  bits 0-6  bytes that "arrive" at a time (0: all at once):
 *                     the engine sees the stream the way a socket
 *                     delivers it, in pieces
 *           bit 7     a plaintext engine (h2_nbd_set_plaintext): no
 *                     STARTTLS, options work at once
 *
 * The harness plays h2d's part (server/nbd.c): it presents the window
 * h2_nbd_window() asks for (NULL for bytes being skipped), takes write
 * payloads, answers STARTTLS at once, lookups and listings as byte 0
 * says, and commands by their cookie (success, or an error with or
 * without a message; some replies are held back and sent later, after
 * other commands, after NBD_CMD_DISC or after the engine closed).
 *
 * It traps on anything the engine promises not to do:
 *   - consume more than it was given, ask for more than H2_NBD_WINDOW
 *     (or than its own window), or answer CONTINUE without progress;
 *   - hand out a command outside the export, over the size limits, with
 *     flags not valid for it, a write on a read-only export, or
 *     BLOCK_STATUS without structured replies;
 *   - write anything but whole, well-formed messages per call: option
 *     replies while negotiating, exactly one reply per command (simple or
 *     one final structured chunk, with the command's cookie, a spec
 *     error value, a consistent length) while transmitting;
 *   - read anything outside the window (each window is a buffer of its
 *     own size, so ASan sees it).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "nbd_proto.h"

#define FZ_MAX_STEPS(len) (4 * (size_t)(len) + 64)
#define FZ_DEFER	  4

static const uint64_t fz_sizes[8] = {
    1u << 20,	    0, 1, 4096, (1u << 20) + 511, 1ull << 40,
    UINT64_MAX - 1, /* an offset + length check that overflows shows */
    1ull << 63,
};

/* What the inputs reached (fuzz_report). */
static struct {
	uint64_t inputs, plain, transmitting, commands, cmd_types[8],
	    answered_by_engine, closed, disconnected, tls, lookups, lists,
	    need_more, skips, structured_chunks, simple_replies, option_replies;
} fz_stats;

struct fz {
	struct h2_nbd *p;
	uint8_t *out;
	size_t outlen, outcap;
	const uint8_t *in;
	size_t len, pos, arrived, chunk;
	uint64_t size;
	bool read_only;
	unsigned lookup_mode;
	bool list_fails, lifo, plain;
	struct h2_nbd_cmd deferred[FZ_DEFER];
	size_t ndeferred;
};

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
	return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void fz_out(void *arg, const void *buf, size_t len)
{
	struct fz *f = arg;

	FUZZ_CHECK(len > 0);
	if (f->outlen + len > f->outcap) {
		f->outcap = 2 * (f->outlen + len);
		f->out = realloc(f->out, f->outcap);
		FUZZ_CHECK(f->out);
	}
	memcpy(f->out + f->outlen, buf, len);
	f->outlen += len;
}

static bool fz_structured(const struct fz *f)
{
	return h2_nbd_export_flags(f->p) & NBD_FLAG_SEND_DF;
}

/* The output of one call while negotiating: whole option replies. */
static void fz_check_option_replies(struct fz *f)
{
	size_t at = 0;

	while (at < f->outlen) {
		const uint8_t *r = f->out + at;
		uint32_t type, len;

		FUZZ_CHECK(f->outlen - at >= NBD_REP_HDR_SIZE);
		FUZZ_CHECK(be64(r) == NBD_REP_MAGIC);
		type = be32(r + 12);
		len = be32(r + 16);
		FUZZ_CHECK(len <= 8 + H2_NBD_NAME_MAX);
		FUZZ_CHECK(f->outlen - at - NBD_REP_HDR_SIZE >= len);
		if (type == NBD_REP_ACK)
			FUZZ_CHECK(len == 0);
		if (type == NBD_REP_INFO && len >= 2 &&
		    be16(r + NBD_REP_HDR_SIZE) == NBD_INFO_EXPORT) {
			FUZZ_CHECK(len == 12);
			FUZZ_CHECK(be64(r + NBD_REP_HDR_SIZE + 2) == f->size);
		}
		at += NBD_REP_HDR_SIZE + len;
		fz_stats.option_replies++;
	}
	f->outlen = 0;
}

static bool fz_nbd_error_valid(uint32_t e)
{
	switch (e) {
	case NBD_EPERM:
	case NBD_EIO:
	case NBD_ENOMEM:
	case NBD_EINVAL:
	case NBD_ENOSPC:
	case NBD_EOVERFLOW:
	case NBD_ENOTSUP:
	case NBD_ESHUTDOWN:
		return true;
	default:
		return false;
	}
}

/* The output of one reply to cmd: exactly one whole message. */
static void fz_check_cmd_reply(struct fz *f, const struct h2_nbd_cmd *cmd)
{
	const uint8_t *r = f->out;

	FUZZ_CHECK(f->outlen >= 4);
	if (be32(r) == NBD_SIMPLE_REPLY_MAGIC) {
		uint32_t e;

		FUZZ_CHECK(f->outlen == NBD_SIMPLE_REPLY_SIZE);
		e = be32(r + 4);
		FUZZ_CHECK(e == 0 || fz_nbd_error_valid(e));
		FUZZ_CHECK(be64(r + 8) == cmd->cookie);
		/* Structured replies answer a READ with chunks only. */
		FUZZ_CHECK(!(fz_structured(f) && cmd->type == NBD_CMD_READ));
		fz_stats.simple_replies++;
	} else {
		uint16_t type;
		uint32_t len;

		FUZZ_CHECK(fz_structured(f));
		FUZZ_CHECK(be32(r) == NBD_STRUCTURED_REPLY_MAGIC);
		FUZZ_CHECK(f->outlen >= NBD_CHUNK_HDR_SIZE);
		FUZZ_CHECK(be16(r + 4) == NBD_REPLY_FLAG_DONE);
		type = be16(r + 6);
		FUZZ_CHECK(be64(r + 8) == cmd->cookie);
		len = be32(r + 16);
		FUZZ_CHECK(f->outlen == NBD_CHUNK_HDR_SIZE + (size_t)len);
		r += NBD_CHUNK_HDR_SIZE;
		switch (type) {
		case NBD_REPLY_TYPE_NONE:
			FUZZ_CHECK(len == 0 && cmd->type == NBD_CMD_READ);
			break;
		case NBD_REPLY_TYPE_ERROR:
			FUZZ_CHECK(len >= 6);
			FUZZ_CHECK(fz_nbd_error_valid(be32(r)));
			FUZZ_CHECK(be16(r + 4) == len - 6);
			FUZZ_CHECK(len - 6 <= H2_NBD_NAME_MAX);
			break;
		case NBD_REPLY_TYPE_BLOCK_STATUS: {
			uint64_t sum = 0;

			FUZZ_CHECK(cmd->type == NBD_CMD_BLOCK_STATUS);
			FUZZ_CHECK(len >= 12 && (len - 4) % 8 == 0);
			FUZZ_CHECK(be32(r) == H2_NBD_CTX_BASE_ALLOCATION);
			if (cmd->flags & NBD_CMD_FLAG_REQ_ONE)
				FUZZ_CHECK(len == 12);
			for (uint32_t k = 4; k < len; k += 8) {
				uint32_t st = be32(r + k + 4);

				FUZZ_CHECK(be32(r + k) > 0);
				FUZZ_CHECK(st == 0 || st == (NBD_STATE_HOLE |
							     NBD_STATE_ZERO));
				sum += be32(r + k);
			}
			FUZZ_CHECK(sum <= cmd->len);
			break;
		}
		default:
			FUZZ_CHECK(!"unexpected chunk type");
		}
		fz_stats.structured_chunks++;
	}
	f->outlen = 0;
}

/* A command the engine handed out is one the export allows. */
static void fz_check_cmd(struct fz *f, const struct h2_nbd_cmd *c)
{
	uint16_t allowed = NBD_CMD_FLAG_FUA;

	FUZZ_CHECK(h2_nbd_transmitting(f->p));
	switch (c->type) {
	case NBD_CMD_READ:
		if (fz_structured(f))
			allowed |= NBD_CMD_FLAG_DF;
		FUZZ_CHECK(c->len <= H2_NBD_MAX_IO);
		break;
	case NBD_CMD_WRITE:
		FUZZ_CHECK(c->len <= H2_NBD_MAX_IO);
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
		if (c->flags & NBD_CMD_FLAG_NO_HOLE)
			FUZZ_CHECK(c->len <= H2_NBD_MAX_IO);
		break;
	case NBD_CMD_BLOCK_STATUS:
		allowed |= NBD_CMD_FLAG_REQ_ONE;
		FUZZ_CHECK(fz_structured(f));
		break;
	case NBD_CMD_FLUSH:
	case NBD_CMD_TRIM:
		break;
	default:
		FUZZ_CHECK(!"unknown command handed out");
	}
	FUZZ_CHECK((c->flags & ~allowed) == 0);
	if (c->type == NBD_CMD_FLUSH) {
		FUZZ_CHECK(c->off == 0 && c->len == 0);
		return;
	}
	FUZZ_CHECK(c->len > 0);
	FUZZ_CHECK(c->off <= f->size && c->len <= f->size - c->off);
	if (c->type == NBD_CMD_WRITE || c->type == NBD_CMD_TRIM ||
	    c->type == NBD_CMD_WRITE_ZEROES)
		FUZZ_CHECK(!f->read_only);
}

/* A tiny deterministic generator for the extents of a BLOCK_STATUS. */
static uint64_t fz_mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

/* Answer cmd the way its cookie says. */
static void fz_answer(struct fz *f, const struct h2_nbd_cmd *cmd)
{
	static char long_msg[H2_NBD_NAME_MAX + 100];
	unsigned how = (unsigned)(cmd->cookie & 0xf);

	if (!long_msg[0])
		memset(long_msg, 'm', sizeof(long_msg) - 1);
	if (how >= 12) {
		static const int errs[4] = {-EIO, -ENOSPC, -ESHUTDOWN,
					    -EBADMSG};
		const char *msg = how == 12   ? "device error"
				  : how == 15 ? long_msg
					      : NULL;

		h2_nbd_reply(f->p, cmd, errs[how - 12], msg);
		fz_check_cmd_reply(f, cmd);
		return;
	}
	if (cmd->type == NBD_CMD_READ) {
		uint8_t hdr[H2_NBD_READ_HDR_MAX + 1];
		size_t n;

		hdr[H2_NBD_READ_HDR_MAX] = 0xa5;
		n = h2_nbd_read_header(f->p, cmd, hdr);
		FUZZ_CHECK(hdr[H2_NBD_READ_HDR_MAX] == 0xa5);
		FUZZ_CHECK(f->outlen == 0);
		if (fz_structured(f)) {
			FUZZ_CHECK(n == NBD_CHUNK_HDR_SIZE + 8);
			FUZZ_CHECK(be32(hdr) == NBD_STRUCTURED_REPLY_MAGIC);
			FUZZ_CHECK(be16(hdr + 6) == NBD_REPLY_TYPE_OFFSET_DATA);
			FUZZ_CHECK(be32(hdr + 16) == 8 + cmd->len);
			FUZZ_CHECK(be64(hdr + 20) == cmd->off);
		} else {
			FUZZ_CHECK(n == NBD_SIMPLE_REPLY_SIZE);
			FUZZ_CHECK(be32(hdr) == NBD_SIMPLE_REPLY_MAGIC);
			FUZZ_CHECK(be32(hdr + 4) == 0);
		}
		FUZZ_CHECK(be64(hdr + 8) == cmd->cookie);
		return;
	}
	if (cmd->type == NBD_CMD_BLOCK_STATUS) {
		struct h2_nbd_extent ext[80];
		uint64_t x = fz_mix(cmd->cookie);
		size_t n = (size_t)((cmd->cookie >> 4) % 80);

		for (size_t i = 0; i < n; i++) {
			x = fz_mix(x + i);
			/* Mostly small, now and then empty or huge. */
			ext[i].len = x % 8 == 0	  ? 0
				     : x % 8 == 1 ? x >> 3
						  : (x >> 8) % 20000;
			ext[i].hole = x & 0x10;
		}
		h2_nbd_reply_extents(f->p, cmd, ext, n);
		fz_check_cmd_reply(f, cmd);
		return;
	}
	h2_nbd_reply(f->p, cmd, 0, NULL);
	fz_check_cmd_reply(f, cmd);
}

static void fz_answer_deferred(struct fz *f)
{
	while (f->ndeferred) {
		size_t i = f->lifo ? f->ndeferred - 1 : 0;

		fz_answer(f, &f->deferred[i]);
		memmove(&f->deferred[i], &f->deferred[i + 1],
			(f->ndeferred - i - 1) * sizeof(f->deferred[0]));
		f->ndeferred--;
	}
}

/* Run a command: answered now, or (cookie bit 4) later. */
static void fz_command(struct fz *f, const struct h2_nbd_cmd *cmd)
{
	if (!(cmd->cookie & 0x10)) {
		fz_answer(f, cmd);
		return;
	}
	if (f->ndeferred == FZ_DEFER) {
		fz_answer(f, &f->deferred[0]);
		memmove(&f->deferred[0], &f->deferred[1],
			(FZ_DEFER - 1) * sizeof(f->deferred[0]));
		f->ndeferred--;
	}
	f->deferred[f->ndeferred++] = *cmd;
}

/* The engine's answer to a lookup, as control byte 0 says. */
static enum h2_nbd_act fz_lookup(struct fz *f, const char *name)
{
	struct h2_nbd_export ex = {.size = f->size,
				   .read_only = f->read_only,
				   .description = "a fuzzed export"};
	bool found =
	    f->lookup_mode == 0 || (f->lookup_mode == 3 && !strchr(name, '@'));
	enum h2_nbd_act r;

	fz_stats.lookups++;
	if (found)
		r = h2_nbd_lookup_done(f->p, 0, &ex, NULL);
	else if (f->lookup_mode == 2)
		r = h2_nbd_lookup_done(f->p, -ESHUTDOWN, NULL, NULL);
	else
		r = h2_nbd_lookup_done(f->p, -ENOENT, NULL,
				       f->lookup_mode == 3 ? "no snapshots"
							   : NULL);
	FUZZ_CHECK(r == H2_NBD_CONTINUE || r == H2_NBD_TRANSMIT ||
		   r == H2_NBD_CLOSE);
	if (r == H2_NBD_TRANSMIT) {
		uint16_t fl = h2_nbd_export_flags(f->p);

		FUZZ_CHECK(found && h2_nbd_transmitting(f->p));
		FUZZ_CHECK(fl & NBD_FLAG_HAS_FLAGS);
		FUZZ_CHECK(!(fl & NBD_FLAG_READ_ONLY) == !f->read_only);
		if (f->read_only)
			FUZZ_CHECK(!(fl & (NBD_FLAG_SEND_TRIM |
					   NBD_FLAG_SEND_WRITE_ZEROES |
					   NBD_FLAG_SEND_FUA)));
		/* NBD_OPT_EXPORT_NAME answers with size and flags (and
		 * maybe 124 zeros), GO with option replies. */
		if (f->outlen >= 8 && be64(f->out) != NBD_REP_MAGIC) {
			FUZZ_CHECK(f->outlen == 10 || f->outlen == 134);
			FUZZ_CHECK(be64(f->out) == f->size);
			FUZZ_CHECK(be16(f->out + 8) == fl);
			f->outlen = 0;
		}
	} else {
		FUZZ_CHECK(!h2_nbd_transmitting(f->p));
	}
	fz_check_option_replies(f);
	return r;
}

static void fz_list(struct fz *f)
{
	static char long_name[H2_NBD_NAME_MAX + 2];

	if (!long_name[0])
		memset(long_name, 'n', sizeof(long_name) - 1);
	fz_stats.lists++;
	h2_nbd_list_add(f->p, "vol");
	h2_nbd_list_add(f->p, long_name); /* over the limit: left out */
	h2_nbd_list_add(f->p, "vol@snap");
	h2_nbd_list_done(f->p, f->list_fails ? -EACCES : 0);
	fz_check_option_replies(f);
}

/* Feed the stream; false once the session is over. */
static bool fz_step(struct fz *f)
{
	struct h2_nbd_action act;
	size_t avail = f->arrived - f->pos, win, give, n;
	bool was_tx = h2_nbd_transmitting(f->p);
	uint64_t skip;
	uint8_t *window = NULL;

	win = h2_nbd_window(f->p, &skip);
	FUZZ_CHECK(win <= H2_NBD_WINDOW);
	if (win == 0 && skip) {
		give = skip < avail ? (size_t)skip : avail;
		fz_stats.skips++;
	} else {
		give = win < avail ? win : avail;
		window = malloc(give ? give : 1);
		FUZZ_CHECK(window);
		memcpy(window, f->in + f->pos, give);
	}
	n = h2_nbd_feed(f->p, window, give, &act);
	free(window);
	FUZZ_CHECK(n <= give);
	f->pos += n;
	if (act.answered) {
		fz_stats.answered_by_engine++;
		fz_check_cmd_reply(f, &act.cmd);
	} else if (was_tx) {
		FUZZ_CHECK(f->outlen == 0);
	} else {
		fz_check_option_replies(f);
	}

	switch (act.type) {
	case H2_NBD_CONTINUE:
		FUZZ_CHECK(n > 0); /* else the caller would spin */
		return true;
	case H2_NBD_NEED_MORE:
		fz_stats.need_more++;
		FUZZ_CHECK(n == 0);
		FUZZ_CHECK(act.need > give && act.need <= H2_NBD_WINDOW);
		if (win)
			FUZZ_CHECK(act.need <= win);
		if (f->arrived == f->len)
			return false; /* the client sent no more */
		f->arrived += f->chunk ? f->chunk : f->len;
		if (f->arrived > f->len)
			f->arrived = f->len;
		return true;
	case H2_NBD_STARTTLS:
		FUZZ_CHECK(!f->plain);
		FUZZ_CHECK(!h2_nbd_tls_active(f->p) && !was_tx);
		fz_stats.tls++;
		h2_nbd_tls_done(f->p);
		FUZZ_CHECK(h2_nbd_tls_active(f->p));
		return true;
	case H2_NBD_LOOKUP:
		FUZZ_CHECK(act.name && strlen(act.name) <= H2_NBD_NAME_MAX);
		FUZZ_CHECK(h2_nbd_tls_active(f->p) || f->plain);
		if (fz_lookup(f, act.name) == H2_NBD_CLOSE) {
			fz_stats.closed++;
			return false;
		}
		return true;
	case H2_NBD_LIST:
		FUZZ_CHECK(h2_nbd_tls_active(f->p) || f->plain);
		fz_list(f);
		return true;
	case H2_NBD_COMMAND:
		fz_check_cmd(f, &act.cmd);
		fz_stats.commands++;
		fz_stats.cmd_types[act.cmd.type & 7]++;
		if (act.cmd.type == NBD_CMD_WRITE) {
			/* The payload is ours. */
			size_t take = f->len - f->pos < act.cmd.len
					  ? f->len - f->pos
					  : act.cmd.len;

			f->pos += take;
			if (f->arrived < f->pos)
				f->arrived = f->pos;
			if (take < act.cmd.len)
				return false;
		}
		fz_command(f, &act.cmd);
		return true;
	case H2_NBD_DISCONNECT:
		FUZZ_CHECK(was_tx && n == NBD_REQUEST_SIZE);
		fz_stats.disconnected++;
		fz_answer_deferred(f);
		/* Nothing more is read. */
		n = h2_nbd_feed(f->p, f->in + f->pos, f->len - f->pos, &act);
		FUZZ_CHECK(n == 0 && act.type == H2_NBD_WAIT);
		FUZZ_CHECK(f->outlen == 0);
		return false;
	case H2_NBD_CLOSE:
		FUZZ_CHECK(act.why && act.why[0]);
		fz_stats.closed++;
		n = h2_nbd_feed(f->p, f->in + f->pos, f->len - f->pos, &act);
		FUZZ_CHECK(n == 0 && act.type == H2_NBD_WAIT);
		FUZZ_CHECK(f->outlen == 0);
		return false;
	case H2_NBD_WAIT:
	case H2_NBD_TRANSMIT:
		break;
	}
	FUZZ_CHECK(!"unexpected action from h2_nbd_feed");
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = {0};
	size_t steps = 0;

	if (size < 2)
		return 0;
	fz_stats.inputs++;
	f.size = fz_sizes[data[0] & 7];
	f.read_only = data[0] & 8;
	f.lookup_mode = (data[0] >> 4) & 3;
	f.list_fails = data[0] & 0x40;
	f.lifo = data[0] & 0x80;
	f.chunk = data[1] & 0x7f;
	f.plain = data[1] & 0x80;
	f.in = data + 2;
	f.len = size - 2;
	f.arrived = f.chunk && f.chunk < f.len ? f.chunk : f.len;

	f.p = h2_nbd_new(fz_out, &f);
	FUZZ_CHECK(f.p);
	if (f.plain) {
		h2_nbd_set_plaintext(f.p);
		fz_stats.plain++;
	}
	FUZZ_CHECK(f.outlen == NBD_GREETING_SIZE);
	FUZZ_CHECK(be64(f.out) == NBD_MAGIC && be64(f.out + 8) == NBD_IHAVEOPT);
	f.outlen = 0;
	while (fz_step(&f))
		FUZZ_CHECK(++steps < FZ_MAX_STEPS(size));
	if (h2_nbd_transmitting(f.p))
		fz_stats.transmitting++;
	/* Commands still running when the client went away are answered
	 * into the void, as h2d does. */
	fz_answer_deferred(&f);
	h2_nbd_free(f.p);
	free(f.out);
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Seeds and the corpus report (fuzz_main).                               */

struct sb {
	uint8_t *b;
	size_t n, cap;
};

static void sb_put(struct sb *s, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (s->n + n > s->cap) {
		s->cap = 2 * (s->n + n);
		s->b = realloc(s->b, s->cap);
		FUZZ_CHECK(s->b);
	}
	memcpy(s->b + s->n, p, n);
	s->n += n;
}

static void sb_be(struct sb *s, uint64_t v, unsigned bytes)
{
	uint8_t b[8];

	for (unsigned i = 0; i < bytes; i++)
		b[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
	sb_put(s, b, bytes);
}

static void sb_opt(struct sb *s, uint32_t opt, const void *data, uint32_t len)
{
	sb_be(s, NBD_IHAVEOPT, 8);
	sb_be(s, opt, 4);
	sb_be(s, len, 4);
	sb_put(s, data, len);
}

/* INFO or GO for name, asking for the given info types. */
static void sb_opt_info(struct sb *s, uint32_t opt, const char *name,
			unsigned ninfo)
{
	uint32_t nl = (uint32_t)strlen(name);

	sb_be(s, NBD_IHAVEOPT, 8);
	sb_be(s, opt, 4);
	sb_be(s, 4 + nl + 2 + 2 * ninfo, 4);
	sb_be(s, nl, 4);
	sb_put(s, name, nl);
	sb_be(s, ninfo, 2);
	for (unsigned i = 0; i < ninfo; i++)
		sb_be(s, i, 2); /* EXPORT, NAME, DESCRIPTION, BLOCK_SIZE */
}

static void sb_opt_meta(struct sb *s, uint32_t opt, const char *name,
			const char *query)
{
	uint32_t nl = (uint32_t)strlen(name);
	uint32_t ql = query ? (uint32_t)strlen(query) : 0;

	sb_be(s, NBD_IHAVEOPT, 8);
	sb_be(s, opt, 4);
	sb_be(s, 4 + nl + 4 + (query ? 4 + ql : 0), 4);
	sb_be(s, nl, 4);
	sb_put(s, name, nl);
	sb_be(s, query ? 1 : 0, 4);
	if (query) {
		sb_be(s, ql, 4);
		sb_put(s, query, ql);
	}
}

static void sb_req(struct sb *s, uint16_t flags, uint16_t type, uint64_t cookie,
		   uint64_t off, uint32_t len)
{
	sb_be(s, NBD_REQUEST_MAGIC, 4);
	sb_be(s, flags, 2);
	sb_be(s, type, 2);
	sb_be(s, cookie, 8);
	sb_be(s, off, 8);
	sb_be(s, len, 4);
}

/* Control bytes, client flags, STARTTLS. */
static void sb_start(struct sb *s, uint8_t ctl, uint8_t chunk, bool tls)
{
	uint8_t c[2] = {ctl, chunk};

	s->n = 0;
	sb_put(s, c, 2);
	sb_be(s, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES, 4);
	if (tls)
		sb_opt(s, NBD_OPT_STARTTLS, NULL, 0);
}

/* Every command kind with payloads, cookies choosing the answers. */
static void sb_commands(struct sb *s, bool structured)
{
	static const uint8_t payload[700] = {1, 2, 3};

	sb_req(s, 0, NBD_CMD_WRITE, 0x01, 0, sizeof(payload));
	sb_put(s, payload, sizeof(payload));
	sb_req(s, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 0x1c, 4096, 512);
	sb_put(s, payload, 512);
	sb_req(s, 0, NBD_CMD_WRITE, 0x02, 1u << 20, 300); /* past the end */
	sb_put(s, payload, 300);
	sb_req(s, 0, NBD_CMD_READ, 0x03, 0, 4096);
	sb_req(s, structured ? NBD_CMD_FLAG_DF : 0, NBD_CMD_READ, 0x1d, 100, 7);
	sb_req(s, 0, NBD_CMD_READ, 0x0f, 0, 0);
	sb_req(s, 0, NBD_CMD_TRIM, 0x04, 8192, 4096);
	sb_req(s, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE_ZEROES, 0x05, 0, 65536);
	sb_req(s, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_WRITE_ZEROES, 0x16, 0, 4096);
	sb_req(s, 0, NBD_CMD_FLUSH, 0x06, 0, 0);
	sb_req(s, 0, NBD_CMD_BLOCK_STATUS, 0x2a7, 0, 1u << 20);
	sb_req(s, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, 0x357, 4096,
	       8192);
	sb_req(s, 0x8000, 99, 0x08, 0, 0); /* unknown flags and command */
}

void fuzz_seeds(fuzz_seed_fn emit, void *arg)
{
	static uint8_t big[H2_NBD_OPT_MAX + 10];
	struct sb s = {0};

	/* Structured replies and base:allocation, GO, every command. */
	sb_start(&s, 0x00, 0, true);
	sb_opt(&s, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	sb_opt_meta(&s, NBD_OPT_LIST_META_CONTEXT, "vol", "base:");
	sb_opt_meta(&s, NBD_OPT_SET_META_CONTEXT, "vol", "base:allocation");
	sb_opt_info(&s, NBD_OPT_GO, "vol", 4);
	sb_commands(&s, true);
	sb_req(&s, 0, NBD_CMD_DISC, 0x09, 0, 0);
	emit(arg, "go-structured", s.b, s.n);

	/* The same delivered 3 bytes at a time, answers newest first. */
	s.b[0] = 0x80;
	s.b[1] = 3;
	emit(arg, "go-structured-3-byte-pieces", s.b, s.n);

	/* Simple replies through NBD_OPT_EXPORT_NAME (with the zeros). */
	sb_start(&s, 0x00, 0, false);
	s.b[5] = NBD_FLAG_C_FIXED_NEWSTYLE;
	sb_opt(&s, NBD_OPT_STARTTLS, NULL, 0);
	sb_opt(&s, NBD_OPT_EXPORT_NAME, "vol", 3);
	sb_commands(&s, false);
	sb_req(&s, 0, NBD_CMD_DISC, 0x09, 0, 0);
	emit(arg, "export-name-simple", s.b, s.n);

	/* A read-only export (a snapshot): INFO, then GO; writes refused. */
	sb_start(&s, 0x08 | 0x30, 0, true);
	sb_opt_info(&s, NBD_OPT_INFO, "vol@snap", 2);
	sb_opt_info(&s, NBD_OPT_INFO, "vol", 0);
	sb_opt_info(&s, NBD_OPT_GO, "vol", 1);
	sb_commands(&s, false);
	emit(arg, "read-only", s.b, s.n);

	/* Listing, refused and unknown options, oversized option data,
	 * then ABORT. */
	sb_start(&s, 0x10 | 0x40, 0, false);
	sb_opt(&s, NBD_OPT_LIST, NULL, 0); /* before TLS */
	sb_opt(&s, NBD_OPT_STARTTLS, NULL, 0);
	sb_opt(&s, NBD_OPT_LIST, NULL, 0);
	sb_opt(&s, NBD_OPT_LIST, "x", 1);
	sb_opt(&s, 4242, "junk", 4);
	sb_opt(&s, NBD_OPT_STARTTLS, NULL, 0); /* again */
	sb_opt(&s, NBD_OPT_INFO, big, sizeof(big));
	sb_opt_meta(&s, NBD_OPT_SET_META_CONTEXT, "vol", "base:allocation");
	sb_opt_info(&s, NBD_OPT_GO, "missing", 2);
	sb_opt(&s, NBD_OPT_ABORT, NULL, 0);
	emit(arg, "options-then-abort", s.b, s.n);

	/* Plaintext: everything but STARTTLS refused, then EXPORT_NAME. */
	sb_start(&s, 0x00, 1, false);
	sb_opt_info(&s, NBD_OPT_GO, "vol", 1);
	sb_opt(&s, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	sb_opt(&s, NBD_OPT_EXPORT_NAME, "vol", 3);
	emit(arg, "plaintext", s.b, s.n);

	/* Transmission over a huge export, then an oversized write. */
	sb_start(&s, 0x06, 0, true);
	sb_opt(&s, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	sb_opt_info(&s, NBD_OPT_GO, "vol", 0);
	sb_req(&s, 0, NBD_CMD_READ, 0x11, UINT64_MAX - 4096, 4096);
	sb_req(&s, 0, NBD_CMD_TRIM, 0x12, 1ull << 62, 1u << 31);
	sb_req(&s, 0, NBD_CMD_WRITE_ZEROES, 0x13, 0, UINT32_MAX);
	sb_req(&s, 0, NBD_CMD_BLOCK_STATUS, 0x14, 0, 4096); /* no context */
	sb_req(&s, 0, NBD_CMD_WRITE, 0x15, 0, (32u << 20) + 1);
	emit(arg, "huge-export-oversized-write", s.b, s.n);

	/* A plaintext listener: no STARTTLS (refused), GO at once. */
	sb_start(&s, 0x00, 0x80, false);
	sb_opt(&s, NBD_OPT_STARTTLS, NULL, 0);
	sb_opt(&s, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	sb_opt_meta(&s, NBD_OPT_SET_META_CONTEXT, "vol", "base:allocation");
	sb_opt(&s, NBD_OPT_LIST, NULL, 0);
	sb_opt_info(&s, NBD_OPT_GO, "vol", 2);
	sb_commands(&s, true);
	sb_req(&s, 0, NBD_CMD_DISC, 0x09, 0, 0);
	emit(arg, "plaintext-listener", s.b, s.n);

	/* A request with a bad magic after a good one. */
	sb_start(&s, 0x00, 0, true);
	sb_opt_info(&s, NBD_OPT_GO, "vol", 0);
	sb_req(&s, 0, NBD_CMD_READ, 0x21, 0, 512);
	sb_be(&s, 0xdeadbeef, 4);
	sb_put(&s, big, NBD_REQUEST_SIZE - 4);
	emit(arg, "bad-request-magic", s.b, s.n);
	free(s.b);
}

int fuzz_report(FILE *out)
{
	fprintf(out,
		"inputs %llu (plaintext %llu): transmitting %llu, commands "
		"%llu (read %llu "
		"write %llu flush %llu trim %llu zero %llu status %llu), "
		"answered by the engine %llu, closed %llu, disconnected "
		"%llu, tls %llu, lookups %llu, lists %llu, need_more %llu, "
		"skips %llu; replies: option %llu simple %llu chunk %llu\n",
		(unsigned long long)fz_stats.inputs,
		(unsigned long long)fz_stats.plain,
		(unsigned long long)fz_stats.transmitting,
		(unsigned long long)fz_stats.commands,
		(unsigned long long)fz_stats.cmd_types[NBD_CMD_READ],
		(unsigned long long)fz_stats.cmd_types[NBD_CMD_WRITE],
		(unsigned long long)fz_stats.cmd_types[NBD_CMD_FLUSH],
		(unsigned long long)fz_stats.cmd_types[NBD_CMD_TRIM],
		(unsigned long long)fz_stats.cmd_types[NBD_CMD_WRITE_ZEROES],
		(unsigned long long)fz_stats.cmd_types[NBD_CMD_BLOCK_STATUS],
		(unsigned long long)fz_stats.answered_by_engine,
		(unsigned long long)fz_stats.closed,
		(unsigned long long)fz_stats.disconnected,
		(unsigned long long)fz_stats.tls,
		(unsigned long long)fz_stats.lookups,
		(unsigned long long)fz_stats.lists,
		(unsigned long long)fz_stats.need_more,
		(unsigned long long)fz_stats.skips,
		(unsigned long long)fz_stats.option_replies,
		(unsigned long long)fz_stats.simple_replies,
		(unsigned long long)fz_stats.structured_chunks);
	/* The corpus reaches every command and every way a session ends. */
	for (unsigned t = 0; t < 8; t++)
		if (t != NBD_CMD_DISC && t != 5 && fz_stats.cmd_types[t] == 0)
			return 1;
	return fz_stats.answered_by_engine && fz_stats.closed &&
		       fz_stats.plain && fz_stats.disconnected &&
		       fz_stats.lists && fz_stats.skips &&
		       fz_stats.structured_chunks && fz_stats.simple_replies
		   ? 0
		   : 1;
}
