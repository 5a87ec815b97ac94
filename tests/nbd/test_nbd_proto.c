/*
 * The NBD protocol engine fed byte streams directly (no network): the
 * handshake, mandatory TLS, options, command parsing and reply encoding,
 * and the hostile inputs the server must survive without reading
 * attacker-chosen lengths into memory.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdio.h>

#include "nbd_wire.h"

#define FULL_FLAGS (NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)
#define MiB	   (1ull << 20)

static struct nw w;

static void setup(void)
{
	nw_init(&w);
}

static void teardown(void)
{
	nw_fini(&w);
}

/* Fresh engine, handshake done, TLS up. */
static void setup_tls(void)
{
	nw_init(&w);
	nw_hello(&w, FULL_FLAGS);
	nw_tls(&w);
}

TestSuite(nbd_proto);

/* ---------------------------------------------------------------------- */
/* Handshake.                                                             */

Test(nbd_proto, greeting_offers_fixed_newstyle_and_no_zeroes, .init = setup,
     .fini = teardown)
{
	const uint8_t *g = nw_get(&w, NBD_GREETING_SIZE);

	cr_assert_eq(nw_be64(g), NBD_MAGIC);
	cr_assert_eq(nw_be64(g + 8), NBD_IHAVEOPT);
	cr_assert_eq(nw_be16(g + 16),
		     NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	cr_assert_eq(nw_left(&w), 0);
}

Test(nbd_proto, unknown_client_flags_close_the_session, .init = setup,
     .fini = teardown)
{
	struct h2_nbd_action act;

	nw_get(&w, NBD_GREETING_SIZE);
	nw_u32(&w, NBD_FLAG_C_FIXED_NEWSTYLE | (1u << 7));
	cr_assert_eq(nw_run(&w, &act), H2_NBD_CLOSE);
	cr_assert(strstr(act.why, "client flags"), "%s", act.why);
}

Test(nbd_proto, client_without_fixed_newstyle_cannot_do_tls_and_is_closed,
     .init = setup, .fini = teardown)
{
	struct h2_nbd_action act;

	nw_get(&w, NBD_GREETING_SIZE);
	nw_u32(&w, NBD_FLAG_C_NO_ZEROES);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_CLOSE);
	cr_assert(strstr(act.why, "fixed newstyle"), "%s", act.why);
}

/* ---------------------------------------------------------------------- */
/* TLS is mandatory.                                                      */

/* Every option but STARTTLS and ABORT before TLS. */
ParameterizedTestParameters(nbd_proto, plaintext_option_gets_tls_reqd)
{
	static uint32_t opts[] = {
	    NBD_OPT_LIST,
	    NBD_OPT_INFO,
	    NBD_OPT_GO,
	    NBD_OPT_STRUCTURED_REPLY,
	    NBD_OPT_LIST_META_CONTEXT,
	    NBD_OPT_SET_META_CONTEXT,
	    11 /* EXTENDED_HEADERS */,
	    4242,
	};

	return cr_make_param_array(uint32_t, opts,
				   sizeof(opts) / sizeof(opts[0]));
}

ParameterizedTest(uint32_t *opt, nbd_proto, plaintext_option_gets_tls_reqd,
		  .init = setup, .fini = teardown)
{
	struct h2_nbd_action act;
	static const uint16_t infos[] = {NBD_INFO_BLOCK_SIZE};
	uint8_t junk[300];

	memset(junk, 'x', sizeof(junk));
	nw_hello(&w, FULL_FLAGS);
	if (*opt == NBD_OPT_GO || *opt == NBD_OPT_INFO)
		nw_opt_info(&w, *opt, "vol", infos, 1);
	else
		nw_opt(&w, *opt, junk, sizeof(junk));
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE,
		     "no lookup or other action before TLS");
	cr_assert_eq(nw_rep(&w, *opt, NULL, NULL), NBD_REP_ERR_TLS_REQD);
	cr_assert_eq(nw_left(&w), 0);
	/* The option's data was skipped: the next option parses. */
	nw_tls(&w);
}

Test(nbd_proto, export_name_before_starttls_closes_without_a_lookup,
     .init = setup, .fini = teardown)
{
	struct h2_nbd_action act;

	nw_hello(&w, FULL_FLAGS);
	nw_opt(&w, NBD_OPT_EXPORT_NAME, "vol", 3);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_CLOSE);
	cr_assert_not(act.soft);
	cr_assert(strstr(act.why, "TLS"), "%s", act.why);
	cr_assert_eq(nw_left(&w), 0, "EXPORT_NAME has no error reply");
}

Test(nbd_proto, abort_before_tls_is_acknowledged_then_closes, .init = setup,
     .fini = teardown)
{
	struct h2_nbd_action act;

	nw_hello(&w, FULL_FLAGS);
	nw_opt(&w, NBD_OPT_ABORT, "ignored", 7);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_CLOSE);
	cr_assert(act.soft, "the client's own goodbye is not an error");
	cr_assert_eq(nw_rep(&w, NBD_OPT_ABORT, NULL, NULL), NBD_REP_ACK);
	/* Nothing more is read after the abort. */
	nw_opt(&w, NBD_OPT_STARTTLS, NULL, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_WAIT);
}

Test(nbd_proto, starttls_with_data_is_invalid_and_tls_stays_off, .init = setup,
     .fini = teardown)
{
	struct h2_nbd_action act;

	nw_hello(&w, FULL_FLAGS);
	nw_opt(&w, NBD_OPT_STARTTLS, "x", 1);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_STARTTLS, NULL, NULL),
		     NBD_REP_ERR_INVALID);
	cr_assert_not(h2_nbd_tls_active(w.p));
	nw_tls(&w);
}

Test(nbd_proto, engine_waits_while_tls_starts, .init = setup, .fini = teardown)
{
	struct h2_nbd_action act;

	nw_hello(&w, FULL_FLAGS);
	nw_opt(&w, NBD_OPT_STARTTLS, NULL, 0);
	nw_opt(&w, NBD_OPT_STRUCTURED_REPLY, NULL, 0); /* pipelined */
	cr_assert_eq(nw_run(&w, &act), H2_NBD_STARTTLS);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_WAIT);
	cr_assert_eq(w.inlen - w.inpos, NBD_OPT_HDR_SIZE,
		     "bytes after STARTTLS are not consumed before TLS");
}

Test(nbd_proto, second_starttls_is_invalid, .init = setup_tls, .fini = teardown)
{
	struct h2_nbd_action act;

	nw_opt(&w, NBD_OPT_STARTTLS, NULL, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_STARTTLS, NULL, NULL),
		     NBD_REP_ERR_INVALID);
}

Test(nbd_proto, tls_upgrade_resets_negotiated_state, .init = setup,
     .fini = teardown)
{
	struct h2_nbd_action act;

	/* Drive an engine into "structured + base:allocation" without the
	 * TLS gate by upgrading twice is impossible, so prove the reset
	 * on the state the engine keeps: after the upgrade, a GO sees no
	 * structured replies (no SEND_DF) and BLOCK_STATUS is refused. */
	nw_hello(&w, FULL_FLAGS);
	nw_opt(&w, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_STRUCTURED_REPLY, NULL, NULL),
		     NBD_REP_ERR_TLS_REQD);
	nw_tls(&w);
	nw_go(&w, "vol", 1 * MiB, false);
	cr_assert_eq(h2_nbd_export_flags(w.p) & NBD_FLAG_SEND_DF, 0);
	nw_req(&w, 0, NBD_CMD_BLOCK_STATUS, 1, 0, 4096);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_simple(&w, 1), NBD_EINVAL);
}

/* ---------------------------------------------------------------------- */
/* A plaintext engine (h2d's loopback-only plaintext listener).           */

/* Fresh engine set plaintext, handshake done. */
static void setup_plain(void)
{
	nw_init(&w);
	h2_nbd_set_plaintext(w.p);
	nw_hello(&w, FULL_FLAGS);
}

Test(nbd_proto, plaintext_engine_goes_to_transmission_without_starttls,
     .init = setup_plain, .fini = teardown)
{
	struct h2_nbd_action act;
	uint8_t payload[512];

	memset(payload, 7, sizeof(payload));
	nw_opt(&w, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_STRUCTURED_REPLY, NULL, NULL),
		     NBD_REP_ACK, "options work without TLS here");
	nw_go(&w, "vol", 1 * MiB, false);
	cr_assert_not(h2_nbd_tls_active(w.p));
	cr_assert(h2_nbd_export_flags(w.p) & NBD_FLAG_SEND_DF,
		  "structured replies negotiated in plaintext stay on");
	/* Commands flow: a read and a write reach the caller. */
	nw_req(&w, 0, NBD_CMD_READ, 11, 4096, 4096);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_COMMAND);
	cr_assert_eq(act.cmd.type, NBD_CMD_READ);
	cr_assert_eq(act.cmd.cookie, 11);
	nw_req(&w, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 12, 0, sizeof(payload));
	nw_push(&w, payload, sizeof(payload));
	cr_assert_eq(nw_run(&w, &act), H2_NBD_COMMAND);
	cr_assert_eq(act.cmd.type, NBD_CMD_WRITE);
	cr_assert_eq(act.cmd.len, sizeof(payload));
	nw_take(&w, sizeof(payload));
	h2_nbd_reply(w.p, &act.cmd, 0, NULL);
	cr_assert_eq(nw_reply_err(&w, 12), 0);
}

Test(nbd_proto, plaintext_engine_refuses_starttls_by_policy,
     .init = setup_plain, .fini = teardown)
{
	struct h2_nbd_action act;

	nw_opt(&w, NBD_OPT_STARTTLS, NULL, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE,
		     "no TLS upgrade is started");
	cr_assert_eq(nw_rep(&w, NBD_OPT_STARTTLS, NULL, NULL),
		     NBD_REP_ERR_POLICY);
	cr_assert_not(h2_nbd_tls_active(w.p));
	/* The session goes on in plaintext (a client that only prefers
	 * TLS carries on). */
	nw_go(&w, "vol", 4096, true);
	cr_assert(h2_nbd_export_flags(w.p) & NBD_FLAG_READ_ONLY);
}

Test(nbd_proto, plaintext_engine_serves_export_name_and_list,
     .init = setup_plain, .fini = teardown)
{
	struct h2_nbd_export ex = {.size = 2 * MiB};
	struct h2_nbd_action act;
	const uint8_t *d;
	uint32_t len;

	nw_opt(&w, NBD_OPT_LIST, NULL, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_LIST);
	h2_nbd_list_add(w.p, "a");
	h2_nbd_list_done(w.p, 0);
	cr_assert_eq(nw_rep(&w, NBD_OPT_LIST, &d, &len), NBD_REP_SERVER);
	cr_assert_eq(len, 5);
	cr_assert_eq(nw_rep(&w, NBD_OPT_LIST, NULL, NULL), NBD_REP_ACK);
	nw_opt(&w, NBD_OPT_EXPORT_NAME, "a", 1);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_LOOKUP,
		     "EXPORT_NAME is looked up, not refused for lack of TLS");
	cr_assert_str_eq(act.name, "a");
	cr_assert_eq(h2_nbd_lookup_done(w.p, 0, &ex, NULL), H2_NBD_TRANSMIT);
	d = nw_get(&w, 10);
	cr_assert_eq(nw_be64(d), 2 * MiB);
}

Test(nbd_proto, tls_engine_still_requires_starttls_next_to_a_plaintext_one,
     .init = setup, .fini = teardown)
{
	struct nw plain;
	struct h2_nbd_action act;

	/* Setting one engine plaintext changes nothing for another. */
	nw_init(&plain);
	h2_nbd_set_plaintext(plain.p);
	nw_hello(&w, FULL_FLAGS);
	nw_opt_info(&w, NBD_OPT_GO, "vol", NULL, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_GO, NULL, NULL), NBD_REP_ERR_TLS_REQD);
	nw_fini(&plain);
}

/* ---------------------------------------------------------------------- */
/* INFO, GO, EXPORT_NAME, LIST.                                           */

Test(nbd_proto, go_sends_size_flags_block_sizes_then_transmits,
     .init = setup_tls, .fini = teardown)
{
	static const uint16_t infos[] = {NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME,
					 NBD_INFO_DESCRIPTION, 77};
	struct h2_nbd_export ex = {.size = 5 * MiB + 3,
				   .description = "h2 volume"};
	struct h2_nbd_action act;
	bool seen_export = false, seen_bs = false, seen_name = false,
	     seen_desc = false;
	const uint8_t *d;
	uint32_t t, len;

	nw_opt_info(&w, NBD_OPT_GO, "disk1", infos, 4);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_LOOKUP);
	cr_assert_str_eq(act.name, "disk1");
	cr_assert(act.go);
	cr_assert_eq(h2_nbd_lookup_done(w.p, 0, &ex, NULL), H2_NBD_TRANSMIT);
	while ((t = nw_rep(&w, NBD_OPT_GO, &d, &len)) == NBD_REP_INFO) {
		switch (nw_be16(d)) {
		case NBD_INFO_EXPORT:
			cr_assert_eq(len, 12);
			cr_assert_eq(nw_be64(d + 2), 5 * MiB + 3);
			cr_assert_eq(nw_be16(d + 10),
				     NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
					 NBD_FLAG_SEND_FUA |
					 NBD_FLAG_SEND_TRIM |
					 NBD_FLAG_SEND_WRITE_ZEROES |
					 NBD_FLAG_SEND_FAST_ZERO |
					 NBD_FLAG_CAN_MULTI_CONN);
			seen_export = true;
			break;
		case NBD_INFO_BLOCK_SIZE:
			cr_assert_eq(len, 14);
			cr_assert_eq(nw_be32(d + 2), 1);
			cr_assert_eq(nw_be32(d + 6), 4096);
			cr_assert_eq(nw_be32(d + 10), 32 * MiB);
			seen_bs = true;
			break;
		case NBD_INFO_NAME:
			cr_assert_eq(len, 2 + 5);
			cr_assert_eq(memcmp(d + 2, "disk1", 5), 0);
			seen_name = true;
			break;
		case NBD_INFO_DESCRIPTION:
			cr_assert_eq(memcmp(d + 2, "h2 volume", 9), 0);
			seen_desc = true;
			break;
		default:
			cr_assert_fail("unrequested info type %u", nw_be16(d));
		}
	}
	cr_assert_eq(t, NBD_REP_ACK);
	cr_assert(seen_export && seen_bs && seen_name && seen_desc);
	cr_assert(h2_nbd_transmitting(w.p));
	cr_assert_eq(nw_left(&w), 0, "no padding after GO's ACK");
}

Test(nbd_proto, read_only_export_says_so_and_offers_no_writes,
     .init = setup_tls, .fini = teardown)
{
	uint16_t f;

	nw_go(&w, "ro", 1 * MiB, true);
	f = h2_nbd_export_flags(w.p);
	cr_assert(f & NBD_FLAG_READ_ONLY);
	cr_assert_eq(f & (NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
			  NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_FAST_ZERO),
		     0);
	cr_assert(f & NBD_FLAG_SEND_FLUSH);
	cr_assert(f & NBD_FLAG_CAN_MULTI_CONN);
}

Test(nbd_proto, info_answers_and_keeps_negotiating, .init = setup_tls,
     .fini = teardown)
{
	struct h2_nbd_export ex = {.size = 4096};
	struct h2_nbd_action act;
	uint32_t t;

	nw_opt_info(&w, NBD_OPT_INFO, "a", NULL, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_LOOKUP);
	cr_assert_not(act.go, "INFO does not open the export");
	cr_assert_eq(h2_nbd_lookup_done(w.p, 0, &ex, NULL), H2_NBD_CONTINUE);
	while ((t = nw_rep(&w, NBD_OPT_INFO, NULL, NULL)) == NBD_REP_INFO)
		;
	cr_assert_eq(t, NBD_REP_ACK);
	cr_assert_not(h2_nbd_transmitting(w.p));
	nw_go(&w, "a", 4096, false);
}

Test(nbd_proto, unknown_export_is_an_error_not_a_disconnect, .init = setup_tls,
     .fini = teardown)
{
	struct h2_nbd_action act;
	const uint8_t *d;
	uint32_t len;

	nw_opt_info(&w, NBD_OPT_GO, "nope", NULL, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_LOOKUP);
	cr_assert_eq(
	    h2_nbd_lookup_done(w.p, -ENOENT, NULL, "no volume named \"nope\""),
	    H2_NBD_CONTINUE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_GO, &d, &len), NBD_REP_ERR_UNKNOWN);
	cr_assert_eq(len, strlen("no volume named \"nope\""));
	cr_assert_eq(memcmp(d, "no volume", 9), 0);
	cr_assert_not(h2_nbd_transmitting(w.p));
	nw_opt_info(&w, NBD_OPT_GO, "stop", NULL, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_LOOKUP);
	h2_nbd_lookup_done(w.p, -ESHUTDOWN, NULL, NULL);
	cr_assert_eq(nw_rep(&w, NBD_OPT_GO, NULL, NULL), NBD_REP_ERR_SHUTDOWN);
	nw_go(&w, "yes", 512, false);
}

Test(nbd_proto, export_name_sends_size_and_flags_with_or_without_zeroes)
{
	struct h2_nbd_export ex = {.size = 12345};
	struct h2_nbd_action act;
	const uint8_t *d;

	for (int zeroes = 0; zeroes < 2; zeroes++) {
		struct nw v;

		nw_init(&v);
		nw_hello(&v, zeroes ? NBD_FLAG_C_FIXED_NEWSTYLE : FULL_FLAGS);
		nw_tls(&v);
		nw_opt(&v, NBD_OPT_EXPORT_NAME, "vol", 3);
		cr_assert_eq(nw_run(&v, &act), H2_NBD_LOOKUP);
		cr_assert(act.go);
		cr_assert_eq(h2_nbd_lookup_done(v.p, 0, &ex, NULL),
			     H2_NBD_TRANSMIT);
		d = nw_get(&v, 10);
		cr_assert_eq(nw_be64(d), 12345);
		cr_assert(nw_be16(d + 8) & NBD_FLAG_HAS_FLAGS);
		cr_assert_eq(nw_left(&v), zeroes ? 124u : 0u);
		nw_fini(&v);
	}
}

Test(nbd_proto, failed_export_name_closes, .init = setup_tls, .fini = teardown)
{
	struct h2_nbd_action act;

	nw_opt(&w, NBD_OPT_EXPORT_NAME, "nope", 4);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_LOOKUP);
	cr_assert_eq(h2_nbd_lookup_done(w.p, -ENOENT, NULL, "no such"),
		     H2_NBD_CLOSE);
	cr_assert_eq(nw_left(&w), 0);
}

Test(nbd_proto, list_sends_one_server_reply_per_export, .init = setup_tls,
     .fini = teardown)
{
	struct h2_nbd_action act;
	const uint8_t *d;
	uint32_t len;

	nw_opt(&w, NBD_OPT_LIST, NULL, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_LIST);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_WAIT);
	h2_nbd_list_add(w.p, "alpha");
	h2_nbd_list_add(w.p, "b");
	h2_nbd_list_done(w.p, 0);
	cr_assert_eq(nw_rep(&w, NBD_OPT_LIST, &d, &len), NBD_REP_SERVER);
	cr_assert_eq(len, 4 + 5);
	cr_assert_eq(nw_be32(d), 5);
	cr_assert_eq(memcmp(d + 4, "alpha", 5), 0);
	cr_assert_eq(nw_rep(&w, NBD_OPT_LIST, &d, &len), NBD_REP_SERVER);
	cr_assert_eq(nw_be32(d), 1);
	cr_assert_eq(nw_rep(&w, NBD_OPT_LIST, NULL, NULL), NBD_REP_ACK);
	/* Negotiation goes on. */
	nw_go(&w, "alpha", 4096, false);
}

Test(nbd_proto, list_with_data_is_invalid, .init = setup_tls, .fini = teardown)
{
	struct h2_nbd_action act;

	nw_opt(&w, NBD_OPT_LIST, "zz", 2);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_LIST, NULL, NULL), NBD_REP_ERR_INVALID);
}

Test(nbd_proto, unknown_option_after_tls_is_unsupported, .init = setup_tls,
     .fini = teardown)
{
	struct h2_nbd_action act;

	nw_opt(&w, 11 /* EXTENDED_HEADERS */, NULL, 0);
	nw_opt(&w, 0x7fffffff, "abc", 3);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_rep(&w, 11, NULL, NULL), NBD_REP_ERR_UNSUP);
	cr_assert_eq(nw_rep(&w, 0x7fffffff, NULL, NULL), NBD_REP_ERR_UNSUP);
}

/* ---------------------------------------------------------------------- */
/* Hostile options.                                                       */

Test(nbd_proto, bad_option_magic_closes, .init = setup_tls, .fini = teardown)
{
	struct h2_nbd_action act;

	nw_u64(&w, 0x1122334455667788ull);
	nw_u32(&w, NBD_OPT_GO);
	nw_u32(&w, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_CLOSE);
	cr_assert(strstr(act.why, "magic"), "%s", act.why);
}

/* Malformed INFO/GO bodies: {declared option length, name length field,
 * info count field, bytes actually following}. */
struct bad_go {
	uint32_t olen, nlen;
	uint16_t count;
};

ParameterizedTestParameters(nbd_proto, malformed_go_is_invalid)
{
	static struct bad_go cases[] = {
	    {5, 0, 0},		 /* shorter than the fixed fields */
	    {10, 0xffffffff, 0}, /* name length wraps */
	    {10, 5, 0},		 /* name runs past the data */
	    {10, 4, 1},		 /* one info type missing */
	    {12, 4, 0},		 /* trailing junk */
	    {12, 0, 0xffff},	 /* huge count, little data */
	};

	return cr_make_param_array(struct bad_go, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_go *c, nbd_proto, malformed_go_is_invalid,
		  .init = setup_tls, .fini = teardown)
{
	struct h2_nbd_action act;
	uint8_t body[64] = {0};

	body[0] = (uint8_t)(c->nlen >> 24);
	body[1] = (uint8_t)(c->nlen >> 16);
	body[2] = (uint8_t)(c->nlen >> 8);
	body[3] = (uint8_t)c->nlen;
	if (c->olen >= 6 && c->nlen <= c->olen - 6) {
		body[4 + c->nlen] = (uint8_t)(c->count >> 8);
		body[5 + c->nlen] = (uint8_t)c->count;
	}
	nw_opt(&w, NBD_OPT_GO, body, c->olen);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE, "no lookup");
	cr_assert_eq(nw_rep(&w, NBD_OPT_GO, NULL, NULL), NBD_REP_ERR_INVALID);
	nw_go(&w, "ok", 4096, false);
}

Test(nbd_proto, export_name_with_nul_is_invalid, .init = setup_tls,
     .fini = teardown)
{
	static const uint8_t body[] = {0, 0, 0, 3, 'a', 0, 'b', 0, 0};
	struct h2_nbd_action act;

	nw_opt(&w, NBD_OPT_GO, body, sizeof(body));
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_GO, NULL, NULL), NBD_REP_ERR_INVALID);
}

Test(nbd_proto, longest_allowed_name_reaches_the_lookup, .init = setup_tls,
     .fini = teardown)
{
	char name[H2_NBD_NAME_MAX + 1];
	struct h2_nbd_action act;

	memset(name, 'n', H2_NBD_NAME_MAX);
	name[H2_NBD_NAME_MAX] = 0;
	nw_opt_info(&w, NBD_OPT_INFO, name, NULL, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_LOOKUP);
	cr_assert_eq(strlen(act.name), H2_NBD_NAME_MAX);
}

Test(nbd_proto, oversized_option_data_is_skipped_not_stored, .init = setup_tls,
     .fini = teardown)
{
	uint32_t big = H2_NBD_OPT_MAX + 1;
	uint8_t *junk = calloc(1, big);
	struct h2_nbd_action act;

	nw_opt(&w, NBD_OPT_GO, junk, big);
	free(junk);
	/* Fed in small windows: the engine never asks for the whole. */
	cr_assert_eq(nw_run_chunked(&w, &act, 1000), H2_NBD_NEED_MORE);
	cr_assert_leq(w.max_need, NBD_OPT_HDR_SIZE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_GO, NULL, NULL), NBD_REP_ERR_TOO_BIG);
	nw_go(&w, "ok", 4096, false);
}

Test(nbd_proto, option_longer_than_anything_worth_skipping_closes,
     .init = setup_tls, .fini = teardown)
{
	struct h2_nbd_action act;
	size_t before = w.inpos;

	nw_u64(&w, NBD_IHAVEOPT);
	nw_u32(&w, NBD_OPT_SET_META_CONTEXT);
	nw_u32(&w, 0xffffffffu); /* and no data follows */
	cr_assert_eq(nw_run(&w, &act), H2_NBD_CLOSE);
	cr_assert_eq(w.inpos - before, NBD_OPT_HDR_SIZE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_SET_META_CONTEXT, NULL, NULL),
		     NBD_REP_ERR_TOO_BIG);
}

Test(nbd_proto, oversized_plaintext_option_is_skipped_with_tls_reqd,
     .init = setup, .fini = teardown)
{
	uint32_t big = 200000;
	uint8_t *junk = calloc(1, big);
	struct h2_nbd_action act;

	nw_hello(&w, FULL_FLAGS);
	nw_opt(&w, NBD_OPT_INFO, junk, big);
	free(junk);
	cr_assert_eq(nw_run_chunked(&w, &act, 4096), H2_NBD_NEED_MORE);
	cr_assert_leq(w.max_need, NBD_OPT_HDR_SIZE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_INFO, NULL, NULL),
		     NBD_REP_ERR_TLS_REQD);
	nw_tls(&w);
}

/* ---------------------------------------------------------------------- */
/* Metadata contexts.                                                     */

Test(nbd_proto, set_meta_context_needs_structured_replies, .init = setup_tls,
     .fini = teardown)
{
	static const char *const q[] = {"base:allocation", NULL};
	struct h2_nbd_action act;

	nw_opt_meta(&w, NBD_OPT_SET_META_CONTEXT, "vol", q);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_SET_META_CONTEXT, NULL, NULL),
		     NBD_REP_ERR_INVALID);
}

Test(nbd_proto, set_meta_context_selects_base_allocation, .init = setup_tls,
     .fini = teardown)
{
	static const char *const q[] = {
	    "qemu:dirty-bitmap:x", "base:", "base:allocation", "nocolon", NULL};
	struct h2_nbd_action act;
	const uint8_t *d;
	uint32_t len;

	nw_opt(&w, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	nw_opt_meta(&w, NBD_OPT_SET_META_CONTEXT, "vol", q);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_rep(&w, NBD_OPT_STRUCTURED_REPLY, NULL, NULL),
		     NBD_REP_ACK);
	cr_assert_eq(nw_rep(&w, NBD_OPT_SET_META_CONTEXT, &d, &len),
		     NBD_REP_META_CONTEXT);
	cr_assert_eq(len, 4 + 15);
	cr_assert_eq(nw_be32(d), H2_NBD_CTX_BASE_ALLOCATION);
	cr_assert_eq(memcmp(d + 4, "base:allocation", 15), 0);
	cr_assert_eq(nw_rep(&w, NBD_OPT_SET_META_CONTEXT, NULL, NULL),
		     NBD_REP_ACK);
	nw_go(&w, "vol", 1 * MiB, false);
	cr_assert(h2_nbd_export_flags(w.p) & NBD_FLAG_SEND_DF);
	nw_req(&w, 0, NBD_CMD_BLOCK_STATUS, 9, 0, 4096);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_COMMAND);
}

Test(nbd_proto, set_meta_context_with_only_unknown_queries_selects_none,
     .init = setup_tls, .fini = teardown)
{
	static const char *const q[] = {"base:", "x-foo:bar", NULL};
	struct h2_nbd_action act;

	nw_opt(&w, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	nw_opt_meta(&w, NBD_OPT_SET_META_CONTEXT, "vol", q);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	nw_rep(&w, NBD_OPT_STRUCTURED_REPLY, NULL, NULL);
	cr_assert_eq(nw_rep(&w, NBD_OPT_SET_META_CONTEXT, NULL, NULL),
		     NBD_REP_ACK);
	nw_go(&w, "vol", 1 * MiB, false);
	nw_req(&w, 0, NBD_CMD_BLOCK_STATUS, 9, 0, 4096);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_reply_err(&w, 9), NBD_EINVAL);
}

Test(nbd_proto, list_meta_context_lists_base_allocation_for_wildcards,
     .init = setup_tls, .fini = teardown)
{
	static const char *const wild[] = {"base:", NULL};
	static const char *const other[] = {"qemu:", NULL};
	struct h2_nbd_action act;
	const uint8_t *d;
	uint32_t len;

	/* No query lists everything; "base:" lists the namespace. */
	nw_opt_meta(&w, NBD_OPT_LIST_META_CONTEXT, "vol", NULL);
	nw_opt_meta(&w, NBD_OPT_LIST_META_CONTEXT, "vol", wild);
	nw_opt_meta(&w, NBD_OPT_LIST_META_CONTEXT, "vol", other);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(nw_rep(&w, NBD_OPT_LIST_META_CONTEXT, &d, &len),
			     NBD_REP_META_CONTEXT);
		cr_assert_eq(nw_be32(d), 0, "list ids are reserved (0)");
		cr_assert_eq(memcmp(d + 4, "base:allocation", 15), 0);
		cr_assert_eq(nw_rep(&w, NBD_OPT_LIST_META_CONTEXT, NULL, NULL),
			     NBD_REP_ACK);
	}
	cr_assert_eq(nw_rep(&w, NBD_OPT_LIST_META_CONTEXT, NULL, NULL),
		     NBD_REP_ACK);
}

Test(nbd_proto, meta_context_with_lying_lengths_is_invalid, .init = setup_tls,
     .fini = teardown)
{
	/* name "v", 0xffffffff queries, one 2-byte query "ab". */
	static const uint8_t huge_count[] = {
	    0, 0, 0, 1, 'v', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, 'a', 'b'};
	/* name "v", 1 query claiming 100 bytes. */
	static const uint8_t long_query[] = {0, 0, 0, 1, 'v', 0,   0,
					     0, 1, 0, 0, 0,   100, 'a'};
	struct h2_nbd_action act;

	nw_opt(&w, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	nw_opt(&w, NBD_OPT_SET_META_CONTEXT, huge_count, sizeof(huge_count));
	nw_opt(&w, NBD_OPT_LIST_META_CONTEXT, long_query, sizeof(long_query));
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	nw_rep(&w, NBD_OPT_STRUCTURED_REPLY, NULL, NULL);
	cr_assert_eq(nw_rep(&w, NBD_OPT_SET_META_CONTEXT, NULL, NULL),
		     NBD_REP_ERR_INVALID);
	cr_assert_eq(nw_rep(&w, NBD_OPT_LIST_META_CONTEXT, NULL, NULL),
		     NBD_REP_ERR_INVALID);
}

Test(nbd_proto, contexts_set_for_another_export_do_not_apply, .init = setup_tls,
     .fini = teardown)
{
	struct h2_nbd_action act;

	nw_structured_meta(&w, "a");
	nw_go(&w, "b", 1 * MiB, false);
	nw_req(&w, 0, NBD_CMD_BLOCK_STATUS, 3, 0, 512);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_reply_err(&w, 3), NBD_EINVAL);
}

/* ---------------------------------------------------------------------- */
/* Commands.                                                              */

static void setup_transmit(void)
{
	setup_tls();
	nw_go(&w, "vol", 1 * MiB, false);
}

static void setup_transmit_structured(void)
{
	setup_tls();
	nw_structured_meta(&w, "vol");
	nw_go(&w, "vol", 1 * MiB, false);
}

Test(nbd_proto, read_becomes_a_command_and_its_reply_is_simple,
     .init = setup_transmit, .fini = teardown)
{
	struct h2_nbd_action act;
	uint8_t hdr[H2_NBD_READ_HDR_MAX];

	nw_req(&w, NBD_CMD_FLAG_FUA, NBD_CMD_READ, 0xabcdef, 4096, 512);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_COMMAND);
	cr_assert_eq(act.cmd.type, NBD_CMD_READ);
	cr_assert_eq(act.cmd.cookie, 0xabcdef);
	cr_assert_eq(act.cmd.off, 4096);
	cr_assert_eq(act.cmd.len, 512);
	cr_assert_eq(h2_nbd_read_header(w.p, &act.cmd, hdr),
		     NBD_SIMPLE_REPLY_SIZE);
	cr_assert_eq(nw_be32(hdr), NBD_SIMPLE_REPLY_MAGIC);
	cr_assert_eq(nw_be32(hdr + 4), 0);
	cr_assert_eq(nw_be64(hdr + 8), 0xabcdef);
}

Test(nbd_proto, structured_read_is_one_final_data_chunk,
     .init = setup_transmit_structured, .fini = teardown)
{
	struct h2_nbd_action act;
	uint8_t hdr[H2_NBD_READ_HDR_MAX];

	nw_req(&w, NBD_CMD_FLAG_DF, NBD_CMD_READ, 7, 8192, 1000);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_COMMAND);
	cr_assert_eq(h2_nbd_read_header(w.p, &act.cmd, hdr),
		     NBD_CHUNK_HDR_SIZE + 8);
	cr_assert_eq(nw_be32(hdr), NBD_STRUCTURED_REPLY_MAGIC);
	cr_assert_eq(nw_be16(hdr + 4), NBD_REPLY_FLAG_DONE);
	cr_assert_eq(nw_be16(hdr + 6), NBD_REPLY_TYPE_OFFSET_DATA);
	cr_assert_eq(nw_be64(hdr + 8), 7);
	cr_assert_eq(nw_be32(hdr + 16), 8 + 1000);
	cr_assert_eq(nw_be64(hdr + 20), 8192);
}

Test(nbd_proto, write_payload_belongs_to_the_caller, .init = setup_transmit,
     .fini = teardown)
{
	struct h2_nbd_action act;
	uint8_t data[3000];
	const uint8_t *got;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	nw_req(&w, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 1, 100, sizeof(data));
	nw_push(&w, data, sizeof(data));
	nw_req(&w, 0, NBD_CMD_FLUSH, 2, 0, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_COMMAND);
	cr_assert_eq(act.cmd.type, NBD_CMD_WRITE);
	cr_assert_eq(act.cmd.flags, NBD_CMD_FLAG_FUA);
	got = nw_take(&w, act.cmd.len);
	cr_assert_eq(memcmp(got, data, sizeof(data)), 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_COMMAND);
	cr_assert_eq(act.cmd.type, NBD_CMD_FLUSH);
	cr_assert_eq(act.cmd.cookie, 2);
	h2_nbd_reply(w.p, &act.cmd, 0, NULL);
	cr_assert_eq(nw_simple(&w, 2), 0);
}

Test(nbd_proto, zero_length_commands_succeed_without_work,
     .init = setup_transmit_structured, .fini = teardown)
{
	struct h2_nbd_action act;
	uint16_t flags;
	uint32_t len;

	nw_req(&w, 0, NBD_CMD_READ, 1, 0, 0);
	nw_req(&w, 0, NBD_CMD_WRITE, 2, 0, 0);
	nw_req(&w, 0, NBD_CMD_TRIM, 3, 1 * MiB, 0);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_chunk(&w, 1, &flags, &len), NBD_REPLY_TYPE_NONE);
	cr_assert_eq(flags, NBD_REPLY_FLAG_DONE);
	cr_assert_eq(len, 0);
	cr_assert_eq(nw_reply_err(&w, 2), 0);
	cr_assert_eq(nw_reply_err(&w, 3), 0);
}

Test(nbd_proto, disc_asks_for_a_soft_disconnect_and_ignores_the_rest,
     .init = setup_transmit, .fini = teardown)
{
	struct h2_nbd_action act;

	nw_req(&w, 0, NBD_CMD_DISC, 5, 0, 0);
	nw_req(&w, 0, NBD_CMD_READ, 6, 0, 512);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_DISCONNECT);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_WAIT);
	cr_assert_eq(nw_left(&w), 0, "DISC has no reply");
}

Test(nbd_proto, bad_request_magic_closes, .init = setup_transmit,
     .fini = teardown)
{
	struct h2_nbd_action act;

	nw_u32(&w, 0x25609514); /* the transaction-log magic */
	nw_push(&w, "0123456789012345678901234", 24);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_CLOSE);
	cr_assert(strstr(act.why, "magic"), "%s", act.why);
}

/* Requests the engine answers itself, before any disk work. */
struct bad_req {
	uint16_t type, flags;
	uint64_t off;
	uint32_t len;
	bool ro, structured;
	uint32_t err; /* expected NBD error */
	bool closes;  /* and the session ends */
};

ParameterizedTestParameters(nbd_proto, bad_requests_are_answered_by_the_engine)
{
	static struct bad_req cases[] = {
	    /* ranges (export size 1 MiB) */
	    {NBD_CMD_READ, 0, 1 * MiB, 1, false, false, NBD_EINVAL, false},
	    {NBD_CMD_READ, 0, UINT64_MAX, 2, false, false, NBD_EINVAL, false},
	    {NBD_CMD_WRITE, 0, 1 * MiB - 10, 11, false, false, NBD_ENOSPC,
	     false},
	    {NBD_CMD_WRITE, 0, UINT64_MAX - 1, 4, false, false, NBD_ENOSPC,
	     false},
	    {NBD_CMD_TRIM, 0, 2 * MiB, 4096, false, false, NBD_EINVAL, false},
	    {NBD_CMD_WRITE_ZEROES, 0, 0, 1 * MiB + 1, false, false, NBD_ENOSPC,
	     false},
	    {NBD_CMD_BLOCK_STATUS, 0, 1 * MiB, 1, false, true, NBD_EINVAL,
	     false},
	    /* sizes */
	    {NBD_CMD_READ, 0, 0, 32 * MiB + 1, false, false, NBD_EINVAL, false},
	    {NBD_CMD_WRITE, 0, 0, 32 * MiB + 1, false, false, NBD_EINVAL, true},
	    {NBD_CMD_WRITE, 0, 0, 0xffffffffu, true, false, NBD_EINVAL, true},
	    {NBD_CMD_BLOCK_STATUS, 0, 0, 0, false, true, NBD_EINVAL, false},
	    /* types and flags */
	    {99, 0, 0, 512, false, false, NBD_EINVAL, false},
	    {5 /* CACHE */, 0, 0, 512, false, false, NBD_EINVAL, false},
	    {NBD_CMD_READ, 1u << 9, 0, 512, false, false, NBD_EINVAL, false},
	    {NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 512, false, false,
	     NBD_EINVAL, false},
	    {NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512, false, false, NBD_EINVAL,
	     false},
	    {NBD_CMD_READ, NBD_CMD_FLAG_REQ_ONE, 0, 512, false, true,
	     NBD_EINVAL, false},
	    {NBD_CMD_FLUSH, 0, 4096, 0, false, false, NBD_EINVAL, false},
	    {NBD_CMD_WRITE_ZEROES,
	     NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO, 0, 4096, false,
	     false, NBD_ENOTSUP, false},
	    /* read-only export */
	    {NBD_CMD_WRITE, 0, 0, 512, true, false, NBD_EPERM, false},
	    {NBD_CMD_TRIM, 0, 0, 512, true, false, NBD_EPERM, false},
	    {NBD_CMD_WRITE_ZEROES, 0, 0, 512, true, true, NBD_EPERM, false},
	    /* state: block status without structured replies/contexts */
	    {NBD_CMD_BLOCK_STATUS, 0, 0, 512, false, false, NBD_EINVAL, false},
	};

	return cr_make_param_array(struct bad_req, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_req *c, nbd_proto,
		  bad_requests_are_answered_by_the_engine, .fini = teardown)
{
	struct h2_nbd_action act;
	enum h2_nbd_act r;

	nw_init(&w);
	nw_hello(&w, FULL_FLAGS);
	nw_tls(&w);
	if (c->structured)
		nw_structured_meta(&w, "vol");
	nw_go(&w, "vol", 1 * MiB, c->ro);
	nw_req(&w, c->flags, c->type, 42, c->off, c->len);
	if (c->type == NBD_CMD_WRITE && !c->closes) {
		/* The refused write's payload is skipped, then the next
		 * request parses. */
		uint8_t *junk = calloc(1, c->len);

		nw_push(&w, junk, c->len);
		free(junk);
	}
	nw_req(&w, 0, NBD_CMD_FLUSH, 43, 0, 0);
	r = nw_run_chunked(&w, &act, 777);
	cr_assert_eq(nw_reply_err(&w, 42), c->err, "error %u, expected %u",
		     nw_be32(w.out + w.outpos - 12), c->err);
	if (c->closes) {
		cr_assert_eq(r, H2_NBD_CLOSE);
		cr_assert_eq(nw_left(&w), 0);
		return;
	}
	cr_assert_eq(r, H2_NBD_COMMAND, "the stream stays in step");
	cr_assert_eq(act.cmd.type, NBD_CMD_FLUSH);
	cr_assert_eq(act.cmd.cookie, 43);
}

Test(nbd_proto, structured_errors_carry_the_message,
     .init = setup_transmit_structured, .fini = teardown)
{
	struct h2_nbd_cmd c = {.type = NBD_CMD_WRITE, .cookie = 77};
	uint16_t flags;
	uint32_t len;
	const uint8_t *d;

	h2_nbd_reply(w.p, &c, -ENOSPC, "the store is full");
	cr_assert_eq(nw_chunk(&w, 77, &flags, &len), NBD_REPLY_TYPE_ERROR);
	cr_assert_eq(flags, NBD_REPLY_FLAG_DONE);
	d = nw_get(&w, len);
	cr_assert_eq(nw_be32(d), NBD_ENOSPC);
	cr_assert_eq(nw_be16(d + 4), strlen("the store is full"));
	cr_assert_eq(memcmp(d + 6, "the store is full", 17), 0);
}

/* Read the block status chunk for cookie: n descriptors into len/flags. */
static uint32_t read_extents(uint64_t cookie, uint32_t *lens, uint32_t *st,
			     uint32_t max)
{
	uint16_t flags;
	uint32_t len, n;
	const uint8_t *d;

	cr_assert_eq(nw_chunk(&w, cookie, &flags, &len),
		     NBD_REPLY_TYPE_BLOCK_STATUS);
	cr_assert_eq(flags, NBD_REPLY_FLAG_DONE);
	cr_assert_geq(len, 12);
	cr_assert_eq((len - 4) % 8, 0);
	d = nw_get(&w, len);
	cr_assert_eq(nw_be32(d), H2_NBD_CTX_BASE_ALLOCATION);
	n = (len - 4) / 8;
	cr_assert_leq(n, max);
	for (uint32_t i = 0; i < n; i++) {
		lens[i] = nw_be32(d + 4 + 8 * i);
		st[i] = nw_be32(d + 8 + 8 * i);
		cr_assert_gt(lens[i], 0, "zero-length extent");
	}
	return n;
}

Test(nbd_proto, block_status_reports_holes_clipped_to_the_request,
     .init = setup_transmit_structured, .fini = teardown)
{
	struct h2_nbd_extent ext[] = {
	    {4096, false}, {0, true}, {8192, true}, {1 * MiB, false}};
	struct h2_nbd_cmd c = {
	    .type = NBD_CMD_BLOCK_STATUS, .cookie = 1, .off = 0, .len = 20000};
	uint32_t lens[8], st[8], n;

	h2_nbd_reply_extents(w.p, &c, ext, 4);
	n = read_extents(1, lens, st, 8);
	cr_assert_eq(n, 3);
	cr_assert_eq(lens[0], 4096);
	cr_assert_eq(st[0], 0);
	cr_assert_eq(lens[1], 8192);
	cr_assert_eq(st[1], NBD_STATE_HOLE | NBD_STATE_ZERO);
	cr_assert_eq(lens[2], 20000 - 4096 - 8192, "clipped to the request");
	cr_assert_eq(st[2], 0);

	/* REQ_ONE: exactly one descriptor, no longer than the request. */
	c.flags = NBD_CMD_FLAG_REQ_ONE;
	c.cookie = 2;
	c.len = 100;
	h2_nbd_reply_extents(w.p, &c, ext, 4);
	n = read_extents(2, lens, st, 8);
	cr_assert_eq(n, 1);
	cr_assert_eq(lens[0], 100);

	/* Nothing known: the whole range, allocated. */
	c.flags = 0;
	c.cookie = 3;
	c.len = 5000;
	h2_nbd_reply_extents(w.p, &c, NULL, 0);
	n = read_extents(3, lens, st, 8);
	cr_assert_eq(n, 1);
	cr_assert_eq(lens[0], 5000);
	cr_assert_eq(st[0], 0);
}

Test(nbd_proto, many_extents_are_encoded_in_one_chunk,
     .init = setup_transmit_structured, .fini = teardown)
{
	static struct h2_nbd_extent ext[1000];
	static uint32_t lens[1000], st[1000];
	struct h2_nbd_cmd c = {
	    .type = NBD_CMD_BLOCK_STATUS, .cookie = 4, .len = 1000 * 512};

	for (int i = 0; i < 1000; i++)
		ext[i] = (struct h2_nbd_extent){512, i % 2 == 0};
	h2_nbd_reply_extents(w.p, &c, ext, 1000);
	cr_assert_eq(read_extents(4, lens, st, 1000), 1000);
	cr_assert_eq(st[998], NBD_STATE_HOLE | NBD_STATE_ZERO);
	cr_assert_eq(st[999], 0);
	cr_assert_eq(nw_left(&w), 0);
}

/* ---------------------------------------------------------------------- */
/* Streams.                                                               */

/* A whole session, to be fed whole or in pieces. */
static void script(struct nw *v)
{
	static const char *const q[] = {"base:allocation", NULL};
	uint8_t data[700];

	memset(data, 0x5a, sizeof(data));
	nw_u32(v, FULL_FLAGS);
	nw_opt(v, NBD_OPT_LIST, NULL, 0);
	nw_opt(v, NBD_OPT_STARTTLS, NULL, 0);
	nw_opt(v, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	nw_opt_meta(v, NBD_OPT_SET_META_CONTEXT, "vol", q);
	nw_opt(v, 999, data, 300);
	nw_opt_info(v, NBD_OPT_GO, "vol", NULL, 0);
	nw_req(v, 0, NBD_CMD_WRITE, 1, 0, sizeof(data));
	nw_push(v, data, sizeof(data));
	nw_req(v, 0, NBD_CMD_WRITE, 2, 1 * MiB, sizeof(data)); /* refused */
	nw_push(v, data, sizeof(data));
	nw_req(v, 0, NBD_CMD_BLOCK_STATUS, 3, 0, 4096);
	nw_req(v, 0, NBD_CMD_DISC, 4, 0, 0);
}

/* Drive a scripted session, answering actions; returns the output. */
static void drive(struct nw *v, size_t chunk)
{
	struct h2_nbd_export ex = {.size = 1 * MiB};
	struct h2_nbd_action act;

	for (;;) {
		switch (nw_run_chunked(v, &act, chunk)) {
		case H2_NBD_STARTTLS:
			h2_nbd_tls_done(v->p);
			break;
		case H2_NBD_LIST:
			h2_nbd_list_done(v->p, 0);
			break;
		case H2_NBD_LOOKUP:
			cr_assert_eq(h2_nbd_lookup_done(v->p, 0, &ex, NULL),
				     H2_NBD_TRANSMIT);
			break;
		case H2_NBD_COMMAND:
			if (act.cmd.type == NBD_CMD_WRITE)
				nw_take(v, act.cmd.len);
			h2_nbd_reply(v->p, &act.cmd, 0, NULL);
			break;
		case H2_NBD_DISCONNECT:
			return;
		default:
			cr_assert_fail("unexpected action %d", (int)act.type);
		}
	}
}

Test(nbd_proto, splitting_the_stream_anywhere_changes_nothing)
{
	struct nw whole, bytes;

	nw_init(&whole);
	nw_init(&bytes);
	script(&whole);
	script(&bytes);
	drive(&whole, 0);
	drive(&bytes, 1);
	cr_assert_eq(whole.outlen, bytes.outlen);
	cr_assert_eq(memcmp(whole.out, bytes.out, whole.outlen), 0);
	cr_assert_eq(whole.inpos, whole.inlen, "everything consumed");
	nw_fini(&whole);
	nw_fini(&bytes);
}

/* Deterministic garbage after each phase: the engine must neither crash
 * nor ask for more than its window, whatever the lengths say. */
Test(nbd_proto, random_garbage_never_needs_more_than_the_window)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;

	for (int round = 0; round < 300; round++) {
		struct h2_nbd_action act;
		struct nw v;
		int phase = round % 3;

		nw_init(&v);
		nw_hello(&v, FULL_FLAGS);
		if (phase >= 1)
			nw_tls(&v);
		if (phase == 2) {
			nw_structured_meta(&v, "vol");
			nw_go(&v, "vol", 1 * MiB, round % 2);
		}
		for (int i = 0; i < 64; i++) {
			uint8_t b[64];

			for (size_t k = 0; k < sizeof(b); k++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				b[k] = (uint8_t)x;
			}
			/* Often a valid magic, so the lengths get read. */
			if (i % 2 == 0 && phase < 2)
				nw_u64(&v, NBD_IHAVEOPT);
			else if (i % 2 == 0)
				nw_u32(&v, NBD_REQUEST_MAGIC);
			nw_push(&v, b, sizeof(b));
		}
		for (int step = 0; step < 1000; step++) {
			enum h2_nbd_act r = nw_run_chunked(&v, &act, 37);

			if (r == H2_NBD_NEED_MORE || r == H2_NBD_WAIT ||
			    r == H2_NBD_CLOSE || r == H2_NBD_DISCONNECT)
				break;
			if (r == H2_NBD_LOOKUP)
				h2_nbd_lookup_done(v.p, -ENOENT, NULL, NULL);
			else if (r == H2_NBD_LIST)
				h2_nbd_list_done(v.p, 0);
			else if (r == H2_NBD_STARTTLS)
				h2_nbd_tls_done(v.p);
			else if (r == H2_NBD_COMMAND) {
				if (act.cmd.type == NBD_CMD_WRITE) {
					size_t left = v.inlen - v.inpos;

					if (left < act.cmd.len)
						break;
					nw_take(&v, act.cmd.len);
				}
				cr_assert_leq(act.cmd.len, 32 * MiB);
				cr_assert_leq(act.cmd.off + act.cmd.len,
					      1 * MiB, "range checked");
				h2_nbd_reply(v.p, &act.cmd, 0, NULL);
			}
		}
		cr_assert_leq(v.max_need, H2_NBD_WINDOW);
		nw_fini(&v);
	}
}

/* ---------------------------------------------------------------------- */
/* Helpers.                                                               */

Test(nbd_proto, errno_maps_to_the_spec_values)
{
	cr_assert_eq(h2_nbd_errno(0), 0);
	cr_assert_eq(h2_nbd_errno(-EROFS), NBD_EPERM);
	cr_assert_eq(h2_nbd_errno(-EACCES), NBD_EPERM);
	cr_assert_eq(h2_nbd_errno(-EIO), NBD_EIO);
	cr_assert_eq(h2_nbd_errno(-EBADMSG), NBD_EIO);
	cr_assert_eq(h2_nbd_errno(-ENOMEM), NBD_ENOMEM);
	cr_assert_eq(h2_nbd_errno(-ERANGE), NBD_EINVAL);
	cr_assert_eq(h2_nbd_errno(-ENOSPC), NBD_ENOSPC);
	cr_assert_eq(h2_nbd_errno(-EFBIG), NBD_ENOSPC);
	cr_assert_eq(h2_nbd_errno(-EOPNOTSUPP), NBD_ENOTSUP);
	cr_assert_eq(h2_nbd_errno(-ESHUTDOWN), NBD_ESHUTDOWN);
	cr_assert_eq(h2_nbd_errno(-EBUSY), NBD_EIO);
}

Test(nbd_proto, export_names_split_into_volume_and_snapshot)
{
	char vol[128], snap[128];

	cr_assert_eq(h2_nbd_export_split("disk", vol, 128, snap, 128), 0);
	cr_assert_str_eq(vol, "disk");
	cr_assert_str_eq(snap, "");
	cr_assert_eq(h2_nbd_export_split("disk@monday", vol, 128, snap, 128),
		     0);
	cr_assert_str_eq(vol, "disk");
	cr_assert_str_eq(snap, "monday");
	cr_assert_eq(h2_nbd_export_split("a@b@c", vol, 128, snap, 128),
		     -EINVAL);
	cr_assert_eq(h2_nbd_export_split("@b", vol, 128, snap, 128), -EINVAL);
	cr_assert_eq(h2_nbd_export_split("a@", vol, 128, snap, 128), -EINVAL);
	cr_assert_eq(h2_nbd_export_split("abcdef", vol, 4, snap, 128), -EINVAL);
}

Test(nbd_proto, window_asks_for_a_request_and_skips_without_looking,
     .init = setup_transmit, .fini = teardown)
{
	struct h2_nbd_action act;
	uint64_t skip;

	cr_assert_eq(h2_nbd_window(w.p, &skip), NBD_REQUEST_SIZE,
		     "a request, not the payload behind it");
	cr_assert_eq(skip, 0);
	/* A refused write: its payload is skipped, unseen. */
	nw_req(&w, 0, NBD_CMD_WRITE, 1, 1 * MiB, 5000);
	cr_assert_eq(nw_run_chunked(&w, &act, 28), H2_NBD_NEED_MORE);
	cr_assert_eq(nw_reply_err(&w, 1), NBD_ENOSPC);
	cr_assert_eq(h2_nbd_window(w.p, &skip), 0);
	cr_assert_eq(skip, 5000);
	cr_assert_eq(h2_nbd_feed(w.p, NULL, 4000, &act), 4000);
	cr_assert_eq(h2_nbd_window(w.p, &skip), 0);
	cr_assert_eq(skip, 1000);
	cr_assert_eq(h2_nbd_feed(w.p, NULL, 1000, &act), 1000);
	cr_assert_eq(h2_nbd_window(w.p, &skip), NBD_REQUEST_SIZE);
}

Test(nbd_proto, a_request_while_negotiating_is_out_of_step_and_closes,
     .init = setup_tls, .fini = teardown)
{
	struct h2_nbd_action act;

	nw_req(&w, 0, NBD_CMD_READ, 1, 0, 512);
	cr_assert_eq(nw_run(&w, &act), H2_NBD_CLOSE);
	cr_assert_not(act.soft);
	cr_assert(strstr(act.why, "option magic"), "%s", act.why);
}

Test(nbd_proto, an_option_while_transmitting_is_out_of_step_and_closes,
     .init = setup_transmit, .fini = teardown)
{
	struct h2_nbd_action act;

	nw_opt(&w, NBD_OPT_LIST, NULL, 0);
	nw_push(&w, "0123456789ab", 12); /* pad to a request's size */
	cr_assert_eq(nw_run(&w, &act), H2_NBD_CLOSE);
	cr_assert(strstr(act.why, "request magic"), "%s", act.why);
	cr_assert_eq(nw_left(&w), 0, "no reply to an option now");
}
