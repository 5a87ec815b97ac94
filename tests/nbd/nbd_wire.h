/*
 * nbd_wire.h - a scripted NBD client for the engine's unit tests: builds
 * the client's bytes, runs them through an h2_nbd engine and decodes what
 * the engine wrote back.  No sockets: the "connection" is two buffers.
 */
#ifndef H2_TEST_NBD_WIRE_H
#define H2_TEST_NBD_WIRE_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nbd_proto.h"

struct nw {
	struct h2_nbd *p;
	uint8_t *in; /* client -> engine, not yet consumed from inpos */
	size_t inlen, inpos, incap;
	uint8_t *out; /* engine -> client, read from outpos */
	size_t outlen, outpos, outcap;
	size_t max_need; /* largest NEED_MORE seen */
};

static inline void nw_grow(uint8_t **b, size_t *cap, size_t want)
{
	if (want <= *cap)
		return;
	*cap = want * 2 + 64;
	*b = realloc(*b, *cap);
	cr_assert_not_null(*b);
}

static inline void nw_out(void *arg, const void *buf, size_t len)
{
	struct nw *w = arg;

	cr_assert_gt(len, 0, "the engine emitted an empty write");
	nw_grow(&w->out, &w->outcap, w->outlen + len);
	memcpy(w->out + w->outlen, buf, len);
	w->outlen += len;
}

static inline void nw_init(struct nw *w)
{
	memset(w, 0, sizeof(*w));
	w->p = h2_nbd_new(nw_out, w);
	cr_assert_not_null(w->p);
}

static inline void nw_fini(struct nw *w)
{
	h2_nbd_free(w->p);
	free(w->in);
	free(w->out);
}

/* Big-endian builders. */
static inline void nw_push(struct nw *w, const void *b, size_t n)
{
	nw_grow(&w->in, &w->incap, w->inlen + n);
	memcpy(w->in + w->inlen, b, n);
	w->inlen += n;
}

static inline void nw_u16(struct nw *w, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};

	nw_push(w, b, 2);
}

static inline void nw_u32(struct nw *w, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16),
			(uint8_t)(v >> 8), (uint8_t)v};

	nw_push(w, b, 4);
}

static inline void nw_u64(struct nw *w, uint64_t v)
{
	nw_u32(w, (uint32_t)(v >> 32));
	nw_u32(w, (uint32_t)v);
}

static inline void nw_opt(struct nw *w, uint32_t opt, const void *data,
			  uint32_t len)
{
	nw_u64(w, NBD_IHAVEOPT);
	nw_u32(w, opt);
	nw_u32(w, len);
	if (len)
		nw_push(w, data, len);
}

static inline void nw_req(struct nw *w, uint16_t flags, uint16_t type,
			  uint64_t cookie, uint64_t off, uint32_t len)
{
	nw_u32(w, NBD_REQUEST_MAGIC);
	nw_u16(w, flags);
	nw_u16(w, type);
	nw_u64(w, cookie);
	nw_u64(w, off);
	nw_u32(w, len);
}

/*
 * Run the engine over the pending input, window by window, until it asks
 * for more than there is or returns an action other than CONTINUE.
 * chunk limits each window (0: everything pending), to prove that
 * splitting the stream anywhere changes nothing.
 */
static inline enum h2_nbd_act
nw_run_chunked(struct nw *w, struct h2_nbd_action *act, size_t chunk)
{
	size_t want = 0;

	for (int guard = 0; guard < 10000000; guard++) {
		size_t avail = w->inlen - w->inpos, win = avail, n;
		const uint8_t *in = w->in + w->inpos;
		uint64_t skip;
		size_t wnd = h2_nbd_window(w->p, &skip);

		cr_assert_leq(wnd, H2_NBD_WINDOW);
		if (chunk && win > chunk)
			win = chunk;
		if (win < want && avail >= want)
			win = want; /* what it asked for, contiguous */
		if (wnd == 0 && skip) {
			/* Skipped bytes are never looked at: prove it. */
			in = NULL;
			if (win > skip)
				win = (size_t)skip;
		}
		n = h2_nbd_feed(w->p, in, win, act);
		cr_assert_leq(n, win, "consumed more than it was given");
		w->inpos += n;
		if (act->type == H2_NBD_CONTINUE) {
			want = 0;
			continue;
		}
		if (act->type != H2_NBD_NEED_MORE)
			return act->type;
		cr_assert_eq(n, 0, "NEED_MORE after consuming bytes");
		cr_assert_gt(act->need, win, "asked for bytes it was given");
		cr_assert_leq(act->need, H2_NBD_WINDOW,
			      "asked for %zu contiguous bytes", act->need);
		if (act->need > w->max_need)
			w->max_need = act->need;
		if (avail < act->need)
			return act->type;
		want = act->need;
	}
	cr_assert_fail("the engine loops");
	return H2_NBD_CLOSE;
}

static inline enum h2_nbd_act nw_run(struct nw *w, struct h2_nbd_action *act)
{
	return nw_run_chunked(w, act, 0);
}

/* Take n bytes of the input for the caller (a WRITE payload). */
static inline const uint8_t *nw_take(struct nw *w, size_t n)
{
	const uint8_t *p = w->in + w->inpos;

	cr_assert_geq(w->inlen - w->inpos, n, "payload not there");
	w->inpos += n;
	return p;
}

/* Readers of the engine's output. */
static inline size_t nw_left(const struct nw *w)
{
	return w->outlen - w->outpos;
}

static inline const uint8_t *nw_get(struct nw *w, size_t n)
{
	const uint8_t *p = w->out + w->outpos;

	cr_assert_geq(nw_left(w), n, "expected %zu more output bytes, have %zu",
		      n, nw_left(w));
	w->outpos += n;
	return p;
}

static inline uint16_t nw_be16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static inline uint32_t nw_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t nw_be64(const uint8_t *p)
{
	return (uint64_t)nw_be32(p) << 32 | nw_be32(p + 4);
}

/* Read one option reply; returns its type, its data in data and len. */
static inline uint32_t nw_rep(struct nw *w, uint32_t opt, const uint8_t **data,
			      uint32_t *len)
{
	const uint8_t *h = nw_get(w, NBD_REP_HDR_SIZE);
	uint32_t l;

	cr_assert_eq(nw_be64(h), NBD_REP_MAGIC, "option reply magic");
	cr_assert_eq(nw_be32(h + 8), opt, "reply to option %u, expected %u",
		     nw_be32(h + 8), opt);
	l = nw_be32(h + 16);
	if (data)
		*data = nw_get(w, l);
	else
		nw_get(w, l);
	if (len)
		*len = l;
	return nw_be32(h + 12);
}

/* The greeting, then client flags FIXED_NEWSTYLE | NO_ZEROES. */
static inline void nw_hello(struct nw *w, uint32_t cflags)
{
	struct h2_nbd_action act;
	const uint8_t *g = nw_get(w, NBD_GREETING_SIZE);

	cr_assert_eq(nw_be64(g), NBD_MAGIC);
	cr_assert_eq(nw_be64(g + 8), NBD_IHAVEOPT);
	nw_u32(w, cflags);
	cr_assert_eq(nw_run(w, &act), H2_NBD_NEED_MORE);
}

/* STARTTLS, acknowledged, and the "upgrade". */
static inline void nw_tls(struct nw *w)
{
	struct h2_nbd_action act;

	nw_opt(w, NBD_OPT_STARTTLS, NULL, 0);
	cr_assert_eq(nw_run(w, &act), H2_NBD_STARTTLS);
	cr_assert_eq(nw_rep(w, NBD_OPT_STARTTLS, NULL, NULL), NBD_REP_ACK);
	cr_assert_eq(nw_left(w), 0);
	h2_nbd_tls_done(w->p);
	cr_assert(h2_nbd_tls_active(w->p));
}

/* NBD_OPT_INFO / GO payload: name, then info request types. */
static inline void nw_opt_info(struct nw *w, uint32_t opt, const char *name,
			       const uint16_t *infos, uint16_t n)
{
	size_t nl = strlen(name);
	uint32_t len = (uint32_t)(4 + nl + 2 + 2 * (size_t)n);

	nw_u64(w, NBD_IHAVEOPT);
	nw_u32(w, opt);
	nw_u32(w, len);
	nw_u32(w, (uint32_t)nl);
	nw_push(w, name, nl);
	nw_u16(w, n);
	for (uint16_t i = 0; i < n; i++)
		nw_u16(w, infos[i]);
}

/* META_CONTEXT option with queries (NULL-terminated list). */
static inline void nw_opt_meta(struct nw *w, uint32_t opt, const char *name,
			       const char *const *queries)
{
	size_t nl = strlen(name), len = 8 + nl;
	uint32_t nq = 0;

	for (const char *const *q = queries; q && *q; q++, nq++)
		len += 4 + strlen(*q);
	nw_u64(w, NBD_IHAVEOPT);
	nw_u32(w, opt);
	nw_u32(w, (uint32_t)len);
	nw_u32(w, (uint32_t)nl);
	nw_push(w, name, nl);
	nw_u32(w, nq);
	for (const char *const *q = queries; q && *q; q++) {
		nw_u32(w, (uint32_t)strlen(*q));
		nw_push(w, *q, strlen(*q));
	}
}

/* Everything up to transmission on export name (size, read_only). */
static inline void nw_go(struct nw *w, const char *name, uint64_t size, bool ro)
{
	struct h2_nbd_action act;
	struct h2_nbd_export ex = {.size = size, .read_only = ro};
	uint32_t t;

	nw_opt_info(w, NBD_OPT_GO, name, NULL, 0);
	cr_assert_eq(nw_run(w, &act), H2_NBD_LOOKUP);
	cr_assert_str_eq(act.name, name);
	cr_assert(act.go);
	cr_assert_eq(h2_nbd_lookup_done(w->p, 0, &ex, NULL), H2_NBD_TRANSMIT);
	while ((t = nw_rep(w, NBD_OPT_GO, NULL, NULL)) == NBD_REP_INFO)
		;
	cr_assert_eq(t, NBD_REP_ACK);
	cr_assert(h2_nbd_transmitting(w->p));
}

/* Structured replies and base:allocation for name. */
static inline void nw_structured_meta(struct nw *w, const char *name)
{
	static const char *const q[] = {"base:allocation", NULL};
	struct h2_nbd_action act;

	nw_opt(w, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	nw_opt_meta(w, NBD_OPT_SET_META_CONTEXT, name, q);
	cr_assert_eq(nw_run(w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_rep(w, NBD_OPT_STRUCTURED_REPLY, NULL, NULL),
		     NBD_REP_ACK);
	cr_assert_eq(nw_rep(w, NBD_OPT_SET_META_CONTEXT, NULL, NULL),
		     NBD_REP_META_CONTEXT);
	cr_assert_eq(nw_rep(w, NBD_OPT_SET_META_CONTEXT, NULL, NULL),
		     NBD_REP_ACK);
}

/* A simple reply: returns its error. */
static inline uint32_t nw_simple(struct nw *w, uint64_t cookie)
{
	const uint8_t *h = nw_get(w, NBD_SIMPLE_REPLY_SIZE);

	cr_assert_eq(nw_be32(h), NBD_SIMPLE_REPLY_MAGIC, "simple reply magic");
	cr_assert_eq(nw_be64(h + 8), cookie, "reply cookie");
	return nw_be32(h + 4);
}

/* A structured chunk header: returns its type, flags and length. */
static inline uint16_t nw_chunk(struct nw *w, uint64_t cookie, uint16_t *flags,
				uint32_t *len)
{
	const uint8_t *h = nw_get(w, NBD_CHUNK_HDR_SIZE);

	cr_assert_eq(nw_be32(h), NBD_STRUCTURED_REPLY_MAGIC, "chunk magic");
	cr_assert_eq(nw_be64(h + 8), cookie, "chunk cookie");
	*flags = nw_be16(h + 4);
	*len = nw_be32(h + 16);
	return nw_be16(h + 6);
}

/* Any reply to cookie (simple, or a final error/none chunk): its error. */
static inline uint32_t nw_reply_err(struct nw *w, uint64_t cookie)
{
	uint16_t flags, type;
	uint32_t len, err;
	const uint8_t *d;

	cr_assert_geq(nw_left(w), 4, "no reply for cookie %llu",
		      (unsigned long long)cookie);
	if (nw_be32(w->out + w->outpos) == NBD_SIMPLE_REPLY_MAGIC)
		return nw_simple(w, cookie);
	type = nw_chunk(w, cookie, &flags, &len);
	cr_assert(flags & NBD_REPLY_FLAG_DONE);
	d = nw_get(w, len);
	if (type == NBD_REPLY_TYPE_NONE)
		return 0;
	cr_assert_eq(type, NBD_REPLY_TYPE_ERROR, "chunk type %u", type);
	cr_assert_geq(len, 6);
	err = nw_be32(d);
	cr_assert_eq(nw_be16(d + 4), len - 6, "error message length");
	return err;
}

#endif
