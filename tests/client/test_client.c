/*
 * libh2client against an in-process fake h2d (fake_server.c): TLS and
 * Hello, what each call puts on the wire, pipelining from many threads,
 * the aio interface, connection failures, splitting by max_payload, and
 * error codes and sentences.
 *
 * Every test makes its own certificates with the openssl command line
 * (a CA, a server certificate with SAN IP:127.0.0.1 and DNS:localhost, a
 * client certificate "alice", and an unrelated CA) and starts its own
 * fake on 127.0.0.1 port 0.  Nothing waits by sleeping: tests wait for
 * replies, callbacks or the aio descriptor.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fake_fixture.h"
#include "h2client.h"

TestSuite(client, .init = fixture_setup, .fini = fixture_teardown,
	  .timeout = 60);

/* Options to reach the fake with the good certificates. */
static h2_client_opts opts(void)
{
	return (h2_client_opts){
	    .server = server_addr,
	    .ca_file = tpath("ca.crt"),
	    .cert_file = tpath("client.crt"),
	    .key_file = tpath("client.key"),
	    .client_name = "test-client",
	};
}

/* Connect with the default options; the test fails if it cannot. */
static h2_client *connect_ok(void)
{
	h2_client_opts o = opts();
	h2_client *c = NULL;
	int rc = h2_connect(&o, &c);

	cr_assert_eq(rc, 0, "h2_connect: %s: %s", h2_strerror(rc),
		     h2_last_error());
	return c;
}

/* Open vm1 read-write. */
static h2_volume *open_vm1(h2_client *c)
{
	h2_volume *v = NULL;
	int rc = h2_volume_open(c, "vm1", H2_OPEN_RW, &v);

	cr_assert_eq(rc, 0, "open: %s", h2_last_error());
	return v;
}

/* The byte the fake's disk starts with at off. */
static uint8_t disk_byte(size_t off)
{
	return (uint8_t)(off * 7 + (off >> 12));
}

/*
 * Connecting.
 */

Test(client, connect_sends_hello_and_learns_identity)
{
	const struct fake_rec *r;
	h2_client *c;

	start_fake();
	c = connect_ok();
	cr_assert_str_eq(h2_client_identity(c), "alice");
	r = fake_get(&F, 0);
	cr_assert_not_null(r);
	cr_assert_eq(r->rq->op_case, H2__REQUEST__OP_HELLO);
	cr_assert_eq(r->rq->hello->version, 1);
	cr_assert_str_eq(r->rq->hello->client_name, "test-client");
	h2_disconnect(c);
	stop_fake();
}

Test(client, server_name_is_verified_against_dns_san)
{
	h2_client_opts o;
	h2_client *c = NULL;
	int rc;

	start_fake();
	o = opts();
	o.tls_server_name = "localhost";
	rc = h2_connect(&o, &c);
	cr_assert_eq(rc, 0, "%s", h2_last_error());
	h2_disconnect(c);
	stop_fake();
}

Test(client, untrusted_server_certificate_fails_with_etls)
{
	h2_client_opts o;
	h2_client *c = NULL;
	int rc;

	start_fake();
	o = opts();
	o.ca_file = tpath("other-ca.crt");
	rc = h2_connect(&o, &c);
	cr_assert_eq(rc, H2_ETLS, "rc %d: %s", rc, h2_last_error());
	cr_assert_null(c);
	cr_assert(strstr(h2_last_error(), "certificate verify failed"),
		  "message: %s", h2_last_error());
	stop_fake();
}

Test(client, server_refusing_our_certificate_fails_with_etls)
{
	h2_client_opts o;
	h2_client *c = NULL;
	int rc;

	F.ca = other_ca_crt; /* alice is not trusted */
	start_fake();
	o = opts();
	rc = h2_connect(&o, &c);
	cr_assert_eq(rc, H2_ETLS, "rc %d: %s", rc, h2_last_error());
	/* The alert the server sent ("tlsv1 alert unknown ca"). */
	cr_assert(strstr(h2_last_error(), "alert"), "message: %s",
		  h2_last_error());
	stop_fake();
}

Test(client, tls12_server_works_and_its_refusal_is_etls)
{
	h2_client_opts o;
	h2_client *c = NULL;
	int rc;

	/* With TLS 1.2 the server judges our certificate inside the
	 * handshake, not after it as with 1.3. */
	F.tls12_only = true;
	start_fake();
	c = connect_ok();
	cr_assert_str_eq(h2_client_identity(c), "alice");
	h2_disconnect(c);
	stop_fake();

	F.ca = other_ca_crt;
	start_fake();
	o = opts();
	c = NULL;
	rc = h2_connect(&o, &c);
	cr_assert_eq(rc, H2_ETLS, "rc %d: %s", rc, h2_last_error());
	cr_assert(strstr(h2_last_error(), "TLS handshake"), "message: %s",
		  h2_last_error());
	cr_assert(strstr(h2_last_error(), "alert"), "message: %s",
		  h2_last_error());
	stop_fake();
}

Test(client, server_name_mismatch_fails_with_etls)
{
	h2_client_opts o;
	h2_client *c = NULL;
	int rc;

	start_fake();
	o = opts();
	o.tls_server_name = "h2.example.org";
	rc = h2_connect(&o, &c);
	cr_assert_eq(rc, H2_ETLS, "rc %d: %s", rc, h2_last_error());
	cr_assert(strstr(h2_last_error(), "hostname mismatch"), "message: %s",
		  h2_last_error());

	o.tls_server_name = "127.0.0.2"; /* an address: IP SANs only */
	rc = h2_connect(&o, &c);
	cr_assert_eq(rc, H2_ETLS, "rc %d: %s", rc, h2_last_error());
	cr_assert(strstr(h2_last_error(), "IP address mismatch"), "message: %s",
		  h2_last_error());
	stop_fake();
}

Test(client, connection_refused_fails_with_econnect)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	h2_client_opts o = opts();
	h2_client *c = NULL;
	char want[128];
	int fd, rc;

	/* Bound but not listening: connections to it are refused, and no
	 * one else can take the port while we hold it. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	snprintf(server_addr, sizeof(server_addr), "127.0.0.1:%u",
		 ntohs(sa.sin_port));
	rc = h2_connect(&o, &c);
	cr_assert_eq(rc, H2_ECONNECT, "rc %d: %s", rc, h2_last_error());
	snprintf(want, sizeof(want), "connect to %s", server_addr);
	cr_assert(strstr(h2_last_error(), want), "message: %s",
		  h2_last_error());
	cr_assert(strstr(h2_last_error(), "refused"), "message: %s",
		  h2_last_error());
	close(fd);
}

Test(client, unanswered_hello_times_out)
{
	h2_client_opts o;
	h2_client *c = NULL;
	int rc;

	F.mode = FAKE_HOLD;
	F.hold_hello = true;
	start_fake();
	o = opts();
	o.connect_timeout_ms = 300;
	rc = h2_connect(&o, &c);
	cr_assert_eq(rc, H2_ETIMEDOUT, "rc %d: %s", rc, h2_last_error());
	cr_assert(strstr(h2_last_error(), "Hello"), "message: %s",
		  h2_last_error());
	stop_fake();
}

Test(client, bad_arguments_to_connect_are_einval)
{
	static const char *bad[] = {
	    "",		  ":7410",    "host:", "host:0",
	    "host:65536", "host:12x", "[::1",  "[::1]x"};
	h2_client_opts o = opts();
	h2_client *c = NULL;
	size_t i;

	cr_assert_eq(h2_connect(NULL, &c), H2_EINVAL);
	cr_assert_eq(h2_connect(&o, NULL), H2_EINVAL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		o.server = bad[i];
		cr_assert_eq(h2_connect(&o, &c), H2_EINVAL, "'%s'", bad[i]);
		cr_assert(strstr(h2_last_error(), "bad server address"));
	}
	o = opts();
	o.server = "127.0.0.1:1";
	o.ca_file = tpath("no-such-ca.crt");
	cr_assert_eq(h2_connect(&o, &c), H2_ETLS);
	cr_assert(strstr(h2_last_error(), "no-such-ca.crt"), "%s",
		  h2_last_error());
}

/*
 * Operations: what goes on the wire and what comes back.
 */

/* Collects extents from h2_block_status. */
struct extents {
	uint64_t off[8], len[8];
	bool hole[8];
	int n;
};

static int collect_extent(void *arg, uint64_t off, uint64_t len, bool hole)
{
	struct extents *e = arg;

	if (e->n == 8)
		return -100;
	e->off[e->n] = off;
	e->len[e->n] = len;
	e->hole[e->n] = hole;
	e->n++;
	return 0;
}

Test(client, volume_ops_marshal_their_fields)
{
	const struct fake_rec *r;
	h2_volume_info info, *list = NULL;
	struct extents ext = {0};
	h2_stats st;
	size_t n = 0;
	h2_client *c;
	h2_volume *v;

	start_fake();
	c = connect_ok();

	cr_assert_eq(h2_volume_create(c, "newvol", 1ull << 40), 0);
	r = fake_last(&F, H2__REQUEST__OP_VOLUME_CREATE);
	cr_assert_str_eq(r->rq->volume_create->name, "newvol");
	cr_assert_eq(r->rq->volume_create->size, 1ull << 40);

	cr_assert_eq(h2_volume_resize(c, "newvol", 3ull << 30), 0);
	r = fake_last(&F, H2__REQUEST__OP_VOLUME_RESIZE);
	cr_assert_str_eq(r->rq->volume_resize->name, "newvol");
	cr_assert_eq(r->rq->volume_resize->size, 3ull << 30);

	cr_assert_eq(h2_volume_delete(c, "newvol"), 0);
	r = fake_last(&F, H2__REQUEST__OP_VOLUME_DELETE);
	cr_assert_str_eq(r->rq->volume_delete->name, "newvol");
	cr_assert_not(r->rq->volume_delete->recursive);

	cr_assert_eq(h2_volume_info_get(c, "vm9", &info), 0);
	cr_assert_str_eq(
	    fake_last(&F, H2__REQUEST__OP_VOLUME_INFO)->rq->volume_info->name,
	    "vm9");
	cr_assert_str_eq(info.name, "vm9");
	cr_assert_eq(info.id, 42);
	cr_assert_eq(info.size, 1u << 30);
	cr_assert_eq(info.used_bytes, 12345);
	cr_assert_eq(info.ctime_ns, 1700000000000000000ull);
	cr_assert(info.can_read && !info.can_write && info.can_admin);
	cr_assert_eq(info.snapshots, 3);
	cr_assert_eq(info.snap_bytes, 1u << 20);
	cr_assert_str_eq(info.origin, "base@gold");

	cr_assert_eq(h2_volume_list(c, &list, &n), 0);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(list[0].name, "alpha");
	cr_assert_eq(list[0].size, 4096);
	cr_assert_str_eq(list[1].name, "beta");
	cr_assert(list[1].can_write);
	free(list);

	v = open_vm1(c);
	r = fake_last(&F, H2__REQUEST__OP_VOLUME_OPEN);
	cr_assert_str_eq(r->rq->volume_open->name, "vm1");
	cr_assert(r->rq->volume_open->write);
	cr_assert_eq(h2_volume_size(v), FAKE_DISK);

	cr_assert_eq(h2_trim(v, 8192, 4096, H2_FUA), 0);
	r = fake_last(&F, H2__REQUEST__OP_TRIM);
	cr_assert_eq(r->rq->trim->handle, FAKE_HANDLE);
	cr_assert_eq(r->rq->trim->offset, 8192);
	cr_assert_eq(r->rq->trim->length, 4096);
	cr_assert(r->rq->trim->fua);

	cr_assert_eq(h2_write_zeroes(v, 65536, 1000, H2_NO_HOLE), 0);
	r = fake_last(&F, H2__REQUEST__OP_WRITE_ZEROES);
	cr_assert_eq(r->rq->write_zeroes->handle, FAKE_HANDLE);
	cr_assert_eq(r->rq->write_zeroes->offset, 65536);
	cr_assert_eq(r->rq->write_zeroes->length, 1000);
	cr_assert(r->rq->write_zeroes->no_hole);
	cr_assert_not(r->rq->write_zeroes->fua);

	cr_assert_eq(h2_flush(v), 0);
	cr_assert_eq(fake_last(&F, H2__REQUEST__OP_FLUSH)->rq->flush->handle,
		     FAKE_HANDLE);
	cr_assert_eq(h2_sync(c), 0);
	cr_assert_eq(fake_last(&F, H2__REQUEST__OP_FLUSH)->rq->flush->handle,
		     0);

	/* The fake describes half the range per reply, then a hole of
	 * 4096: the library asks again and clips to the range. */
	cr_assert_eq(h2_block_status(v, 1000, 10000, collect_extent, &ext), 0);
	cr_assert_eq(ext.n, 4);
	cr_assert_eq(ext.off[0], 1000);
	cr_assert_eq(ext.len[0], 5000);
	cr_assert_not(ext.hole[0]);
	cr_assert_eq(ext.off[1], 6000);
	cr_assert_eq(ext.len[1], 4096);
	cr_assert(ext.hole[1]);
	cr_assert_eq(ext.off[2], 10096);
	cr_assert_eq(ext.len[2], 452);
	cr_assert_eq(ext.off[3], 10548);
	cr_assert_eq(ext.len[3], 452);
	cr_assert_eq(ext.off[3] + ext.len[3], 11000);
	r = fake_last(&F, H2__REQUEST__OP_BLOCK_STATUS);
	cr_assert_eq(r->rq->block_status->offset, 10096);
	cr_assert_eq(r->rq->block_status->length, 904);

	cr_assert_eq(h2_stat(c, &st), 0);
	cr_assert_eq(st.total_bytes, 1);
	cr_assert_eq(st.durable_tid, 7);
	cr_assert_eq(st.client_bytes_read, 10);
	cr_assert_eq(st.errors, 14);

	cr_assert_eq(h2_volume_close(v), 0);
	cr_assert_eq(fake_last(&F, H2__REQUEST__OP_VOLUME_CLOSE)
			 ->rq->volume_close->handle,
		     FAKE_HANDLE);
	h2_disconnect(c);
	stop_fake();
}

Test(client, snapshot_ops_marshal_their_fields)
{
	const struct fake_rec *r;
	h2_snapshot_info si, *list = NULL;
	h2_volume_info vi;
	size_t n = 0;
	h2_client *c;

	start_fake();
	c = connect_ok();

	cr_assert_eq(h2_snapshot_create(c, "vm1", "nightly", &si), 0);
	r = fake_last(&F, H2__REQUEST__OP_SNAPSHOT_CREATE);
	cr_assert_str_eq(r->rq->snapshot_create->volume, "vm1");
	cr_assert_str_eq(r->rq->snapshot_create->name, "nightly");
	cr_assert_str_eq(si.volume, "vm1");
	cr_assert_str_eq(si.name, "nightly");
	cr_assert_eq(si.tid, 77);
	cr_assert_eq(si.ctime_ns, 1700000000000000001ull);
	cr_assert_eq(si.size, 1u << 30);
	cr_assert_eq(si.refer_bytes, 4096);
	cr_assert_eq(h2_snapshot_create(c, "vm1", "again", NULL), 0);

	cr_assert_eq(h2_snapshot_delete(c, "vm1", "a"), 0);
	r = fake_last(&F, H2__REQUEST__OP_SNAPSHOT_DELETE);
	cr_assert_str_eq(r->rq->snapshot_delete->volume, "vm1");
	cr_assert_str_eq(r->rq->snapshot_delete->name, "a");
	cr_assert_eq(h2_snapshot_delete(c, "vm1", "b"), H2_EDEPENDENTS);
	cr_assert_str_eq(h2_last_error(), "snapshot \"vm1@b\" has a clone");

	cr_assert_eq(h2_clone(c, "vm1", "a", "copy", &vi), 0);
	r = fake_last(&F, H2__REQUEST__OP_CLONE);
	cr_assert_str_eq(r->rq->clone->volume, "vm1");
	cr_assert_str_eq(r->rq->clone->snapshot, "a");
	cr_assert_str_eq(r->rq->clone->new_volume, "copy");
	cr_assert_str_eq(vi.name, "copy");
	cr_assert_str_eq(vi.origin, "vm1@a");
	cr_assert(vi.can_write);

	cr_assert_eq(h2_rollback(c, "vm1", "b", 0), H2_EBUSY);
	cr_assert_not(
	    fake_last(&F, H2__REQUEST__OP_ROLLBACK)->rq->rollback->force);
	cr_assert_str_eq(h2_last_error(), "volume \"vm1\" is open for writing");
	cr_assert_eq(h2_rollback(c, "vm1", "b", H2_ROLLBACK_FORCE), 0);
	r = fake_last(&F, H2__REQUEST__OP_ROLLBACK);
	cr_assert_str_eq(r->rq->rollback->volume, "vm1");
	cr_assert_str_eq(r->rq->rollback->snapshot, "b");
	cr_assert(r->rq->rollback->force);

	cr_assert_eq(h2_volume_delete_flags(c, "vm1", H2_DELETE_RECURSIVE), 0);
	cr_assert(fake_last(&F, H2__REQUEST__OP_VOLUME_DELETE)
		      ->rq->volume_delete->recursive);

	/* Three snapshots, two per reply: the library pages with the
	 * last one it got as the cursor. */
	cr_assert_eq(h2_snapshot_list(c, NULL, &list, &n), 0);
	cr_assert_eq(n, 3);
	cr_assert_str_eq(list[0].name, "a");
	cr_assert_str_eq(list[1].name, "b");
	cr_assert_eq(list[1].clones, 1);
	cr_assert_str_eq(list[2].volume, "vm2");
	cr_assert_str_eq(list[2].name, "c");
	cr_assert_eq(list[2].excl_bytes, 3000);
	r = fake_last(&F, H2__REQUEST__OP_SNAPSHOT_LIST);
	cr_assert_str_eq(r->rq->snapshot_list->volume, "");
	cr_assert_str_eq(r->rq->snapshot_list->after_volume, "vm1");
	cr_assert_eq(r->rq->snapshot_list->after_tid, 20);
	cr_assert_str_eq(r->rq->snapshot_list->after_name, "b");
	h2_snapshot_list_free(list);

	cr_assert_eq(h2_snapshot_list(c, "vm2", &list, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(list[0].name, "c");
	cr_assert_str_eq(fake_last(&F, H2__REQUEST__OP_SNAPSHOT_LIST)
			     ->rq->snapshot_list->volume,
			 "vm2");
	h2_snapshot_list_free(list);
	cr_assert_eq(h2_snapshot_list(c, "none", &list, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_null(list);
	h2_disconnect(c);
	stop_fake();
}

Test(client, snapshot_opens_read_only_with_a_long_name)
{
	char name[300];
	h2_client *c;
	h2_volume *v;
	uint8_t b[16];

	start_fake();
	c = connect_ok();
	/* "VOLUME@SNAP" may be up to 127 + 1 + 127 bytes. */
	memset(name, 's', sizeof(name));
	memcpy(name, "vm1@", 4);
	name[255] = '\0';
	cr_assert_eq(h2_volume_open(c, name, H2_OPEN_RO, &v), 0, "%s",
		     h2_last_error());
	cr_assert_str_eq(
	    fake_last(&F, H2__REQUEST__OP_VOLUME_OPEN)->rq->volume_open->name,
	    name);
	cr_assert_not(
	    fake_last(&F, H2__REQUEST__OP_VOLUME_OPEN)->rq->volume_open->write);
	cr_assert_eq(h2_pread(v, b, sizeof(b), 0), 0);
	cr_assert_eq(b[1], disk_byte(1));
	cr_assert_eq(h2_volume_close(v), 0);
	cr_assert_eq(h2_volume_open(c, "vm1@a", H2_OPEN_RW, &v), H2_EROFS);
	/* One byte more, or a long name without '@', is refused here. */
	name[255] = 's';
	name[256] = '\0';
	cr_assert_eq(h2_volume_open(c, name, H2_OPEN_RO, &v), H2_EINVAL);
	name[128] = '\0';
	name[3] = 'x';
	cr_assert_eq(h2_volume_open(c, name, H2_OPEN_RO, &v), H2_EINVAL);
	h2_disconnect(c);
	stop_fake();
}

Test(client, snapshot_calls_check_arguments_before_sending)
{
	char longname[200];
	h2_snapshot_info *list;
	size_t n, before;
	h2_client *c;

	start_fake();
	c = connect_ok();
	memset(longname, 'x', sizeof(longname));
	longname[199] = '\0';
	before = fake_count(&F);
	cr_assert_eq(h2_snapshot_create(c, "vm1", "", NULL), H2_EINVAL);
	cr_assert_eq(h2_snapshot_create(c, NULL, "s", NULL), H2_EINVAL);
	cr_assert_eq(h2_snapshot_create(c, "vm1", longname, NULL), H2_EINVAL);
	cr_assert(strstr(h2_last_error(), "snapshot name"), "%s",
		  h2_last_error());
	cr_assert_eq(h2_snapshot_delete(c, longname, "s"), H2_EINVAL);
	cr_assert_eq(h2_snapshot_list(c, "", &list, &n), H2_EINVAL);
	cr_assert_eq(h2_snapshot_list(c, NULL, NULL, &n), H2_EINVAL);
	cr_assert_eq(h2_clone(c, "vm1", "a", longname, NULL), H2_EINVAL);
	cr_assert_eq(h2_clone(NULL, "vm1", "a", "b", NULL), H2_EINVAL);
	cr_assert_eq(h2_rollback(c, "vm1", "a", 0x4), H2_EINVAL);
	cr_assert_eq(h2_volume_delete_flags(c, "vm1", 0x2), H2_EINVAL);
	cr_assert_eq(fake_count(&F), before, "a bad call reached the server");
	h2_disconnect(c);
	stop_fake();
}

Test(client, write_and_read_move_the_data)
{
	const struct fake_rec *r;
	uint8_t wbuf[5000], rbuf[5000];
	h2_client *c;
	h2_volume *v;
	size_t i;

	start_fake();
	c = connect_ok();
	v = open_vm1(c);
	for (i = 0; i < sizeof(wbuf); i++)
		wbuf[i] = (uint8_t)(i ^ 0x5a);
	cr_assert_eq(h2_pwrite(v, wbuf, sizeof(wbuf), 12345, H2_FUA), 0);
	r = fake_last(&F, H2__REQUEST__OP_WRITE);
	cr_assert_eq(r->rq->write->handle, FAKE_HANDLE);
	cr_assert_eq(r->rq->write->offset, 12345);
	cr_assert(r->rq->write->fua);
	cr_assert_eq(r->rq->payload_len, sizeof(wbuf));
	cr_assert_arr_eq(r->payload, wbuf, sizeof(wbuf));

	memset(rbuf, 0xee, sizeof(rbuf));
	cr_assert_eq(h2_pread(v, rbuf, sizeof(rbuf), 12345), 0);
	r = fake_last(&F, H2__REQUEST__OP_READ);
	cr_assert_eq(r->rq->read->offset, 12345);
	cr_assert_eq(r->rq->read->length, sizeof(rbuf));
	cr_assert_arr_eq(rbuf, wbuf, sizeof(rbuf));

	/* Bytes the test never wrote come from the fake's disk. */
	cr_assert_eq(h2_pread(v, rbuf, 100, 900000), 0);
	for (i = 0; i < 100; i++)
		cr_assert_eq(rbuf[i], disk_byte(900000 + i), "byte %zu", i);
	h2_disconnect(c);
	stop_fake();
}

Test(client, txn_sends_ops_and_data_in_order)
{
	const struct fake_rec *r;
	uint8_t a[3000], b[700], back[3000];
	size_t n0, i;
	h2_client *c;
	h2_volume *v;
	h2_txn *t;

	F.max_payload = 8192;
	start_fake();
	c = connect_ok();
	v = open_vm1(c);
	memset(a, 0xaa, sizeof(a));
	memset(b, 0xbb, sizeof(b));

	cr_assert_eq(h2_txn_begin(v, &t), 0);
	cr_assert_eq(h2_txn_write(t, a, sizeof(a), 100000), 0);
	memset(a, 0, sizeof(a)); /* the data was copied */
	cr_assert_eq(h2_txn_trim(t, 200000, 4096), 0);
	cr_assert_eq(h2_txn_write(t, b, sizeof(b), 300000), 0);
	/* 3000 + 700 + 6000 would pass max_payload: refused, t intact. */
	cr_assert_eq(h2_txn_write(t, back, 6000 - 1000, 0), H2_ETOOBIG);
	cr_assert(strstr(h2_last_error(), "8192"), "%s", h2_last_error());
	cr_assert_eq(h2_txn_commit(t, H2_FUA), 0);

	r = fake_last(&F, H2__REQUEST__OP_TXN);
	cr_assert_eq(r->rq->txn->handle, FAKE_HANDLE);
	cr_assert(r->rq->txn->fua);
	cr_assert_eq(r->rq->txn->n_ops, 3);
	cr_assert_eq(r->rq->txn->ops[0]->type, H2__TXN_OP__TYPE__WRITE);
	cr_assert_eq(r->rq->txn->ops[0]->offset, 100000);
	cr_assert_eq(r->rq->txn->ops[0]->length, 3000);
	cr_assert_eq(r->rq->txn->ops[1]->type, H2__TXN_OP__TYPE__TRIM);
	cr_assert_eq(r->rq->txn->ops[1]->offset, 200000);
	cr_assert_eq(r->rq->txn->ops[1]->length, 4096);
	cr_assert_eq(r->rq->txn->ops[2]->type, H2__TXN_OP__TYPE__WRITE);
	cr_assert_eq(r->rq->payload_len, 3700);
	for (i = 0; i < 3000; i++)
		cr_assert_eq(r->payload[i], 0xaa);
	for (i = 3000; i < 3700; i++)
		cr_assert_eq(r->payload[i], 0xbb);
	cr_assert_eq(h2_pread(v, back, sizeof(back), 100000), 0);
	for (i = 0; i < sizeof(back); i++)
		cr_assert_eq(back[i], 0xaa);

	/* An empty batch and an aborted one send nothing. */
	n0 = fake_count(&F);
	cr_assert_eq(h2_txn_begin(v, &t), 0);
	cr_assert_eq(h2_txn_commit(t, 0), 0);
	cr_assert_eq(h2_txn_begin(v, &t), 0);
	cr_assert_eq(h2_txn_write(t, b, sizeof(b), 0), 0);
	h2_txn_abort(t);
	cr_assert_eq(fake_count(&F), n0);
	/* A batch left open dies with its volume. */
	cr_assert_eq(h2_txn_begin(v, &t), 0);
	cr_assert_eq(h2_txn_write(t, b, sizeof(b), 0), 0);
	h2_disconnect(c);
	stop_fake();
}

Test(client, bad_arguments_are_refused_before_sending)
{
	uint8_t buf[16];
	h2_volume *v, *none = NULL;
	char longname[200];
	h2_client *c;
	h2_txn *t;
	size_t n0;

	start_fake();
	c = connect_ok();
	v = open_vm1(c);
	n0 = fake_count(&F);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';

	cr_assert_eq(h2_pread(v, NULL, 16, 0), H2_EINVAL);
	cr_assert(strstr(h2_last_error(), "buf"), "%s", h2_last_error());
	cr_assert_eq(h2_pread(none, buf, 16, 0), H2_EINVAL);
	cr_assert_eq(h2_pread(v, buf, 16, UINT64_MAX - 8), H2_ERANGE);
	cr_assert(strstr(h2_last_error(), "overflows"), "%s", h2_last_error());
	cr_assert_eq(h2_pwrite(v, buf, 16, 0, 0x80), H2_EINVAL);
	cr_assert_eq(h2_pwrite(v, buf, 16, 0, H2_NO_HOLE), H2_EINVAL);
	cr_assert_eq(h2_trim(v, UINT64_MAX, 1, 0), H2_ERANGE);
	cr_assert_eq(h2_write_zeroes(v, 0, 1, 0x10), H2_EINVAL);
	cr_assert_eq(h2_block_status(v, 0, 0, collect_extent, NULL), H2_EINVAL);
	cr_assert_eq(h2_block_status(v, 0, 10, NULL, NULL), H2_EINVAL);
	cr_assert_eq(h2_volume_create(c, "", 1), H2_EINVAL);
	cr_assert_eq(h2_volume_create(c, longname, 1), H2_EINVAL);
	cr_assert_eq(h2_volume_create(c, "ok", 0), H2_EINVAL);
	cr_assert_eq(h2_volume_info_get(c, "vm1", NULL), H2_EINVAL);
	cr_assert_eq(h2_volume_open(c, "vm1", 7, &none), H2_EINVAL);
	cr_assert_eq(h2_aio_pread(v, buf, 0, 0, NULL, NULL), H2_EINVAL);
	cr_assert_eq(h2_aio_pread(v, buf, 16, UINT64_MAX, NULL, NULL),
		     H2_EINVAL);
	cr_assert_eq(h2_txn_begin(v, &t), 0);
	cr_assert_eq(h2_txn_write(t, buf, 0, 0), H2_EINVAL);
	cr_assert_eq(h2_txn_write(t, NULL, 16, 0), H2_EINVAL);
	cr_assert_eq(h2_txn_trim(t, 1, UINT64_MAX), H2_ERANGE);
	cr_assert_eq(h2_txn_commit(t, 0x40), H2_EINVAL); /* frees t */
	/* Zero-length synchronous I/O is a successful no-op. */
	cr_assert_eq(h2_pread(v, NULL, 0, 0), 0);
	cr_assert_eq(h2_pwrite(v, buf, 0, 0, 0), 0);
	cr_assert_eq(h2_trim(v, 0, 0, 0), 0);
	cr_assert_eq(fake_count(&F), n0, "something reached the server");
	h2_disconnect(c);
	stop_fake();
}

/*
 * Pipelining and limits.
 */

#define THREADS 8
#define ROUNDS	40
#define REGION	(64u << 10)

struct worker {
	h2_volume *v;
	unsigned id;
	int bad; /* calls that failed or returned someone else's data */
	char why[256];
};

/* Write and read back this thread's own region, many times over. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint64_t off = (uint64_t)w->id * REGION;
	static _Thread_local uint8_t out[REGION / 4], in[REGION / 4];
	unsigned r;
	size_t i, len;

	for (r = 0; r < ROUNDS; r++) {
		len = 512 +
		      (size_t)((w->id * 977 + r * 131) % (sizeof(out) - 512));
		for (i = 0; i < len; i++)
			out[i] = (uint8_t)(w->id * 31 + r + i);
		if (h2_pwrite(w->v, out, len, off + r * 16, 0) != 0 ||
		    h2_pread(w->v, in, len, off + r * 16) != 0) {
			w->bad++;
			snprintf(w->why, sizeof(w->why), "%s", h2_last_error());
			continue;
		}
		if (memcmp(in, out, len) != 0) {
			w->bad++;
			snprintf(w->why, sizeof(w->why), "round %u: wrong data",
				 r);
		}
	}
	return NULL;
}

Test(client, concurrent_sync_calls_each_get_their_own_reply)
{
	struct worker w[THREADS];
	pthread_t t[THREADS];
	h2_client *c;
	h2_volume *v;
	unsigned i;

	start_fake();
	c = connect_ok();
	v = open_vm1(c);
	for (i = 0; i < THREADS; i++) {
		w[i] = (struct worker){.v = v, .id = i};
		cr_assert_eq(pthread_create(&t[i], NULL, worker_main, &w[i]),
			     0);
	}
	for (i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < THREADS; i++)
		cr_assert_eq(w[i].bad, 0, "thread %u: %s", i, w[i].why);
	h2_disconnect(c);
	stop_fake();
}

Test(client, large_read_and_write_are_split_by_max_payload)
{
	const size_t len = (1u << 20) + 12345;
	const uint64_t off = 777;
	uint8_t *buf = malloc(len), *back = malloc(len);
	size_t i, n0, reads = 0, writes = 0;
	h2_client *c;
	h2_volume *v;

	F.max_payload = 64u << 10;
	start_fake();
	c = connect_ok();
	v = open_vm1(c);
	cr_assert_eq(h2_pread(v, buf, len, off), 0, "%s", h2_last_error());
	for (i = 0; i < len; i++)
		if (buf[i] != disk_byte(off + i))
			cr_assert_fail("byte %zu: %u, want %u", i, buf[i],
				       disk_byte(off + i));
	cr_assert_leq(F.max_read_len, 64u << 10);

	for (i = 0; i < len; i++)
		buf[i] = (uint8_t)(i * 13 + 1);
	n0 = fake_count(&F);
	cr_assert_eq(h2_pwrite(v, buf, len, off, 0), 0, "%s", h2_last_error());
	for (i = n0; i < fake_count(&F); i++) {
		const struct fake_rec *r = fake_get(&F, i);

		cr_assert_eq(r->rq->op_case, H2__REQUEST__OP_WRITE);
		cr_assert_leq(r->rq->payload_len, 64u << 10);
		writes++;
	}
	cr_assert_eq(writes, (len + (64u << 10) - 1) / (64u << 10));
	n0 = fake_count(&F);
	cr_assert_eq(h2_pread(v, back, len, off), 0, "%s", h2_last_error());
	reads = fake_count(&F) - n0;
	cr_assert_eq(reads, writes);
	cr_assert(memcmp(back, buf, len) == 0);
	free(buf);
	free(back);
	h2_disconnect(c);
	stop_fake();
}

/*
 * Asynchronous I/O.
 */

#define NAIO	64
#define AIO_LEN 4096

struct aio_state {
	uint8_t bufs[NAIO][AIO_LEN];
	int result[NAIO];
	int calls[NAIO];
	int order[NAIO];
	int ncalls;
	char msg[NAIO][128];
};

struct aio_arg {
	struct aio_state *s;
	int i;
};

static void aio_done(void *arg, int result)
{
	struct aio_arg *a = arg;

	a->s->result[a->i] = result;
	a->s->calls[a->i]++;
	a->s->order[a->s->ncalls++] = a->i;
	snprintf(a->s->msg[a->i], sizeof(a->s->msg[a->i]), "%s",
		 result < 0 ? h2_last_error() : "");
}

Test(client, aio_completes_out_of_order_replies_correctly)
{
	static struct aio_state s;
	struct aio_arg args[NAIO];
	struct pollfd p;
	h2_client *c;
	h2_volume *v;
	int i, n, ran = 0;

	F.mode = FAKE_REVERSE;
	F.n = NAIO;
	F.max_inflight = 128;
	start_fake();
	c = connect_ok();
	v = open_vm1(c);
	for (i = 0; i < NAIO; i++) {
		args[i] = (struct aio_arg){.s = &s, .i = i};
		cr_assert_eq(h2_aio_pread(v, s.bufs[i], AIO_LEN,
					  (uint64_t)i * 10000, aio_done,
					  &args[i]),
			     0);
	}
	cr_assert_eq(h2_aio_inflight(c), NAIO);
	cr_assert_eq(h2_aio_poll(c, 0), 0); /* the fake waits for all 64 */

	p = (struct pollfd){.fd = h2_aio_fd(c), .events = POLLIN};
	cr_assert_eq(poll(&p, 1, 20000), 1, "aio fd never became readable");
	while (ran < NAIO) {
		n = h2_aio_poll(c, -1);
		cr_assert_gt(n, 0, "poll: %d %s", n, h2_last_error());
		ran += n;
	}
	cr_assert_eq(ran, NAIO);
	cr_assert_eq(h2_aio_inflight(c), 0);
	cr_assert_eq(poll(&p, 1, 0), 0, "aio fd readable with nothing done");
	for (i = 0; i < NAIO; i++) {
		size_t k;

		cr_assert_eq(s.calls[i], 1, "callback %d ran %d times", i,
			     s.calls[i]);
		cr_assert_eq(s.result[i], 0, "request %d: %s", i, s.msg[i]);
		for (k = 0; k < AIO_LEN; k++)
			if (s.bufs[i][k] != disk_byte((size_t)i * 10000 + k))
				cr_assert_fail("request %d byte %zu", i, k);
	}
	/* Replies came newest first, and callbacks ran as they came. */
	cr_assert_eq(s.order[0], NAIO - 1);
	cr_assert_eq(s.order[NAIO - 1], 0);
	h2_disconnect(c);
	stop_fake();
}

Test(client, aio_respects_server_max_inflight)
{
	static struct aio_state s;
	struct aio_arg args[32];
	h2_client *c;
	h2_volume *v;
	int i, ran = 0;

	F.mode = FAKE_LIMIT;
	F.n = 4;
	F.max_inflight = 4;
	start_fake();
	c = connect_ok();
	v = open_vm1(c);
	for (i = 0; i < 32; i++) {
		args[i] = (struct aio_arg){.s = &s, .i = i};
		cr_assert_eq(h2_aio_pwrite(v, s.bufs[i], 512, (uint64_t)i * 512,
					   0, aio_done, &args[i]),
			     0);
	}
	while (ran < 32) {
		int n = h2_aio_poll(c, -1);

		cr_assert_gt(n, 0, "%s", h2_last_error());
		ran += n;
	}
	for (i = 0; i < 32; i++)
		cr_assert_eq(s.result[i], 0, "%d: %s", i, s.msg[i]);
	cr_assert_eq(F.max_held, 4, "server saw %u outstanding", F.max_held);
	h2_disconnect(c);
	stop_fake();
}

Test(client, connection_loss_fails_pending_aio_with_eclosed)
{
	static struct aio_state s;
	struct aio_arg args[10];
	struct pollfd p;
	uint8_t buf[16];
	h2_client *c;
	h2_volume *v;
	int i, n;

	F.mode = FAKE_CLOSE;
	F.n = 10; /* read all ten, answer none, drop the line */
	F.max_inflight = 128;
	start_fake();
	c = connect_ok();
	v = open_vm1(c);
	for (i = 0; i < 10; i++) {
		args[i] = (struct aio_arg){.s = &s, .i = i};
		cr_assert_eq(h2_aio_pread(v, s.bufs[i], AIO_LEN,
					  (uint64_t)i * AIO_LEN, aio_done,
					  &args[i]),
			     0);
	}
	/* Nothing succeeds; the poll that finds the connection gone runs
	 * every callback left and says so. */
	while ((n = h2_aio_poll(c, -1)) >= 0)
		cr_assert_eq(n, 0, "%d callbacks ran before the loss", n);
	cr_assert_eq(n, H2_ECLOSED, "%d: %s", n, h2_last_error());
	cr_assert_eq(s.ncalls, 10);
	for (i = 0; i < 10; i++) {
		cr_assert_eq(s.calls[i], 1, "callback %d ran %d times", i,
			     s.calls[i]);
		cr_assert_eq(s.result[i], H2_ECLOSED, "request %d: %d", i,
			     s.result[i]);
		cr_assert(strstr(s.msg[i], "closed the connection"), "%s",
			  s.msg[i]);
	}
	cr_assert_eq(h2_aio_inflight(c), 0);
	p = (struct pollfd){.fd = h2_aio_fd(c), .events = POLLIN};
	cr_assert_eq(poll(&p, 1, 0), 0);

	/* Later calls fail at once, without a callback. */
	cr_assert_eq(h2_pread(v, buf, sizeof(buf), 0), H2_ECLOSED);
	cr_assert(strstr(h2_last_error(), "closed"), "%s", h2_last_error());
	cr_assert_eq(h2_aio_pread(v, buf, sizeof(buf), 0, aio_done, &args[0]),
		     H2_ECLOSED);
	cr_assert_eq(h2_aio_poll(c, -1), H2_ECLOSED);
	cr_assert_eq(s.ncalls, 10);
	cr_assert_eq(h2_volume_create(c, "x", 1), H2_ECLOSED);
	h2_disconnect(c);
	stop_fake();
}

Test(client, connection_loss_mid_write_fails_sync_call_without_sigpipe)
{
	const size_t len = 4u << 20;
	uint8_t *buf = calloc(1, len);
	h2_client *c;
	h2_volume *v;
	int rc;

	/* The fake drops the line after the first 64 KiB piece; the library
	 * is still writing the others into a dead socket.  SIGPIPE is not
	 * ignored in this process: it must not be raised. */
	F.mode = FAKE_CLOSE;
	F.n = 1;
	F.max_payload = 64u << 10;
	start_fake();
	c = connect_ok();
	v = open_vm1(c);
	rc = h2_pwrite(v, buf, len - 4096, 0, 0);
	cr_assert_eq(rc, H2_ECLOSED, "rc %d: %s", rc, h2_last_error());
	cr_assert(strstr(h2_last_error(), "lost"), "%s", h2_last_error());
	cr_assert_eq(h2_flush(v), H2_ECLOSED);
	free(buf);
	h2_disconnect(c);
	stop_fake();
}

Test(client, disconnect_runs_pending_callbacks_with_eclosed)
{
	static struct aio_state s;
	struct aio_arg args[3];
	h2_client *c;
	h2_volume *v;
	int i;

	F.mode = FAKE_HOLD;
	start_fake();
	c = connect_ok();
	v = open_vm1(c);
	for (i = 0; i < 3; i++) {
		args[i] = (struct aio_arg){.s = &s, .i = i};
		cr_assert_eq(
		    h2_aio_pread(v, s.bufs[i], 100, 0, aio_done, &args[i]), 0);
	}
	cr_assert_eq(h2_aio_flush(v, aio_done, &args[2]), 0);
	cr_assert_eq(h2_aio_poll(c, 0), 0);
	cr_assert_eq(s.ncalls, 0);
	h2_disconnect(c);
	cr_assert_eq(s.ncalls, 4);
	for (i = 0; i < 3; i++)
		cr_assert_eq(s.result[i], H2_ECLOSED);
	stop_fake();
}

/*
 * Errors.
 */

/* Another thread's last error, while ours holds something else. */
static void *other_thread_error(void *arg)
{
	snprintf(arg, 256, "%s", h2_last_error());
	return NULL;
}

Test(client, server_error_reaches_strerror_and_last_error)
{
	char other[256] = "unset";
	pthread_t t;
	h2_client *c;
	h2_volume *v = NULL;
	int rc;

	start_fake();
	c = connect_ok();
	rc = h2_volume_open(c, "missing", H2_OPEN_RO, &v);
	cr_assert_eq(rc, H2_ENOENT);
	cr_assert_null(v);
	cr_assert_str_eq(h2_last_error(), "volume 'missing' does not exist");
	cr_assert_str_eq(h2_strerror(rc), "no such volume");
	cr_assert_not(
	    fake_last(&F, H2__REQUEST__OP_VOLUME_OPEN)->rq->volume_open->write);
	/* The sentence belongs to the thread that failed. */
	cr_assert_eq(pthread_create(&t, NULL, other_thread_error, other), 0);
	pthread_join(t, NULL);
	cr_assert_str_empty(other, "other thread sees '%s'", other);
	/* And it stays until this thread fails again. */
	v = open_vm1(c);
	cr_assert_str_eq(h2_last_error(), "volume 'missing' does not exist");
	h2_disconnect(c);
	stop_fake();
}

struct status_case {
	H2__Status status;
	int err;
};

ParameterizedTestParameters(client, server_status_maps_to_error_code)
{
	static struct status_case cases[] = {
	    {H2__STATUS__INVALID_ARGUMENT, H2_EINVAL},
	    {H2__STATUS__OUT_OF_RANGE, H2_ERANGE},
	    {H2__STATUS__NOT_FOUND, H2_ENOENT},
	    {H2__STATUS__ALREADY_EXISTS, H2_EEXIST},
	    {H2__STATUS__PERMISSION_DENIED, H2_EPERM},
	    {H2__STATUS__READ_ONLY, H2_EROFS},
	    {H2__STATUS__NO_SPACE, H2_ENOSPC},
	    {H2__STATUS__IO_ERROR, H2_EIO},
	    {H2__STATUS__CHECKSUM_ERROR, H2_ECHECKSUM},
	    {H2__STATUS__TOO_LARGE, H2_ETOOBIG},
	    {H2__STATUS__UNSUPPORTED, H2_EUNSUPPORTED},
	    {H2__STATUS__INTERNAL, H2_EINTERNAL},
	    {H2__STATUS__BUSY, H2_EBUSY},
	    {H2__STATUS__FAILED_PRECONDITION, H2_EPROTO},
	    {H2__STATUS__UNAVAILABLE, H2_EUNAVAILABLE},
	    {H2__STATUS__HAS_DEPENDENTS, H2_EDEPENDENTS},
	    {(H2__Status)99, H2_EINTERNAL}, /* from a newer server */
	};

	return cr_make_param_array(struct status_case, cases,
				   sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct status_case *tc, client,
		  server_status_maps_to_error_code)
{
	static struct aio_state s;
	struct aio_arg a = {.s = &s, .i = 0};
	h2_client *c;
	h2_volume *v;
	int rc;

	F.flush_status = tc->status;
	F.flush_msg = "the fake says no";
	start_fake();
	c = connect_ok();
	v = open_vm1(c);
	rc = h2_flush(v);
	cr_assert_eq(rc, tc->err, "status %d gave %d", tc->status, rc);
	cr_assert_str_eq(h2_last_error(), "the fake says no");
	cr_assert_str_neq(h2_strerror(rc), "unknown error");
	/* The same through aio, where the callback gets it. */
	cr_assert_eq(h2_aio_flush(v, aio_done, &a), 0);
	cr_assert_eq(h2_aio_poll(c, -1), 1);
	cr_assert_eq(s.result[0], tc->err);
	cr_assert_str_eq(s.msg[0], "the fake says no");
	h2_disconnect(c);
	stop_fake();
}

/*
 * Statistics reports.
 */

Test(client, stat_report_gathers_every_page)
{
	const struct fake_rec *r;
	const h2_op_stats *rd;
	h2_stat_report *s = NULL;
	h2_client *c;

	start_fake();
	c = connect_ok();
	cr_assert_eq(h2_stat_report_get(c, NULL, &s), 0, "%s", h2_last_error());
	cr_assert_eq(s->size, sizeof(*s));
	cr_assert(H2_STAT_HAS(s, volumes));
	cr_assert_eq(s->totals.durable_tid, 7);
	cr_assert_eq(s->tls_handshake_failures, 15);
	cr_assert_eq(s->nops, 2);
	rd = h2_op_stats_find(s->ops, s->nops, "read");
	cr_assert_not_null(rd);
	cr_assert_null(h2_op_stats_find(s->ops, s->nops, "trim"));
	cr_assert_eq(rd->nbd_requests, 4);
	cr_assert_eq(rd->bytes, 40960);
	cr_assert_eq(rd->latency.mean_ns, 100);
	cr_assert_eq(rd->latency.p99_ns, 200);
	cr_assert_eq(s->nerrors, 1);
	cr_assert_str_eq(s->errors_by_code[0]->code, "OUT_OF_RANGE");
	cr_assert_eq(s->errors_by_code[0]->err, H2_ERANGE);
	/* Two pages: a, b; then c. */
	cr_assert_eq(s->nvolumes, 3);
	cr_assert_str_eq(s->volumes[0]->name, "a");
	cr_assert_str_eq(s->volumes[1]->name, "b");
	cr_assert_str_eq(s->volumes[2]->name, "c");
	cr_assert_eq(s->volumes[2]->size, 5);
	/* A volume's totals are summed over its operations. */
	cr_assert_eq(s->volumes[0]->requests, 10);
	cr_assert_eq(s->volumes[0]->errors, 1);
	cr_assert_eq(s->volumes[0]->nerrors, 1);
	r = fake_last(&F, H2__REQUEST__OP_STAT);
	cr_assert_str_eq(r->rq->stat->after, "b");
	h2_stat_report_free(s);

	cr_assert_eq(h2_stat_report_get(c, "vm9", &s), 0);
	cr_assert_eq(s->nvolumes, 1);
	cr_assert_str_eq(s->volumes[0]->name, "vm9");
	r = fake_last(&F, H2__REQUEST__OP_STAT);
	cr_assert_str_eq(r->rq->stat->volume, "vm9");
	h2_stat_report_free(s);
	h2_stat_report_free(NULL);

	cr_assert_eq(h2_stat_report_get(c, "", &s), H2_EINVAL);
	cr_assert_eq(h2_stat_report_get(NULL, NULL, &s), H2_EINVAL);
	h2_disconnect(c);
	stop_fake();
}

Test(client, stat_report_refuses_pages_that_do_not_advance)
{
	h2_stat_report *s = NULL;
	h2_client *c;

	F.stat_stuck = true;
	start_fake();
	c = connect_ok();
	cr_assert_eq(h2_stat_report_get(c, NULL, &s), H2_EPROTO);
	cr_assert(strstr(h2_last_error(), "do not advance"), "%s",
		  h2_last_error());
	cr_assert_null(s);
	h2_disconnect(c);
	stop_fake();
}
