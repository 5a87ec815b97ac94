/*
 * fake_server.c - the in-process h2 server the client tests talk to (see
 * fake_server.h).  Blocking sockets, one connection at a time, and a
 * request log; written for clarity, not speed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "fake_server.h"

/* Record the first surprise. */
static void fake_fail(struct fake *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void fake_fail(struct fake *f, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&f->mu);
	if (!f->error[0]) {
		va_start(ap, fmt);
		vsnprintf(f->error, sizeof(f->error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&f->mu);
}

/* Read exactly len bytes: 1, or 0 on EOF / error. */
static int fake_read_all(SSL *ssl, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len > 0) {
		size_t n;

		if (!SSL_read_ex(ssl, p, len, &n))
			return 0;
		p += n;
		len -= n;
	}
	return 1;
}

/* Write all of buf: 1, or 0 on error. */
static int fake_write_all(SSL *ssl, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		size_t n;

		if (!SSL_write_ex(ssl, p, len, &n))
			return 0;
		p += n;
		len -= n;
	}
	return 1;
}

/* Bytes of a request can be read within timeout_ms. */
static bool fake_readable(SSL *ssl, int fd, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return SSL_pending(ssl) > 0 || poll(&p, 1, timeout_ms) > 0;
}

/* Read and log one request: its log index, or -1 at EOF or on error. */
static long fake_recv(struct fake *f, SSL *ssl)
{
	uint8_t pre[H2_FRAME_PREFIX], *buf = NULL, *payload = NULL;
	struct h2_frame_info info;
	H2__Request *rq = NULL;
	uint32_t hlen;
	long idx = -1;
	int rc;

	if (!fake_read_all(ssl, pre, sizeof(pre)))
		return -1;
	hlen = (uint32_t)pre[0] << 24 | (uint32_t)pre[1] << 16 |
	       (uint32_t)pre[2] << 8 | pre[3];
	if (hlen == 0 || hlen > H2_FRAME_MAX_HEADER) {
		fake_fail(f, "header length %u", hlen);
		return -1;
	}
	buf = malloc(sizeof(pre) + hlen);
	memcpy(buf, pre, sizeof(pre));
	if (!fake_read_all(ssl, buf + sizeof(pre), hlen))
		goto out;
	rc = h2_frame_decode_request(NULL, buf, sizeof(pre) + hlen, &info, &rq);
	if (rc != 0) {
		fake_fail(f, "undecodable request (%d)", rc);
		goto out;
	}
	if (info.payload_len > 0) {
		payload = malloc(info.payload_len);
		if (!fake_read_all(ssl, payload, info.payload_len)) {
			fake_fail(f, "payload of request %llu cut short",
				  (unsigned long long)rq->id);
			goto out;
		}
	}
	pthread_mutex_lock(&f->mu);
	if (f->nlog == f->caplog) {
		f->caplog = f->caplog ? f->caplog * 2 : 64;
		f->log = realloc(f->log, f->caplog * sizeof(*f->log));
	}
	f->log[f->nlog] =
	    (struct fake_rec){.rq = rq, .payload = payload, .conn = f->conn};
	idx = (long)f->nlog++;
	pthread_mutex_unlock(&f->mu);
	rq = NULL;
	payload = NULL;
out:
	h2_frame_request_free(rq);
	free(payload);
	free(buf);
	return idx;
}

/* The common name of the client's certificate. */
static void fake_peer_cn(SSL *ssl, char *buf, size_t len)
{
	X509 *x = SSL_get1_peer_certificate(ssl);

	buf[0] = '\0';
	if (x) {
		X509_NAME_get_text_by_NID(X509_get_subject_name(x),
					  NID_commonName, buf, (int)len);
		X509_free(x);
	}
}

/* [off, off + len) lies on the toy volume. */
static bool fake_in_range(uint64_t off, uint64_t len)
{
	return off <= FAKE_DISK && len <= FAKE_DISK - off;
}

/* The fake's snapshots: vm1@a, vm1@b (a clone's origin), vm2@c. */
static const struct {
	const char *volume, *name;
	uint64_t tid;
} fake_snaps[] = {{"vm1", "a", 10}, {"vm1", "b", 20}, {"vm2", "c", 5}};
#define FAKE_NSNAPS (sizeof(fake_snaps) / sizeof(fake_snaps[0]))

/* After the SnapshotList cursor q (volume, tid order; none: all)? */
static bool fake_snap_after(const H2__SnapshotList *q, size_t i)
{
	int r;

	if (!q->after_volume[0])
		return true;
	r = strcmp(fake_snaps[i].volume, q->after_volume);
	if (r)
		return r > 0;
	if (fake_snaps[i].tid != q->after_tid)
		return fake_snaps[i].tid > q->after_tid;
	return strcmp(fake_snaps[i].name, q->after_name) > 0;
}

/* Answer one logged request UNAVAILABLE, as a stopping h2d does. */
static int fake_reply_unavailable(struct fake *f, SSL *ssl, size_t idx)
{
	H2__Response r = H2__RESPONSE__INIT;
	struct h2_frame_buf out = {0};
	int ok;

	pthread_mutex_lock(&f->mu);
	r.id = f->log[idx].rq->id;
	pthread_mutex_unlock(&f->mu);
	r.status = H2__STATUS__UNAVAILABLE;
	r.message = "the fake is shutting down; not executed";
	ok = h2_frame_append_response(&out, &r) == 0 &&
	     fake_write_all(ssl, out.data, out.len);
	h2_frame_buf_free(&out);
	return ok;
}

/* Answer one logged request. */
static int fake_reply(struct fake *f, SSL *ssl, size_t idx)
{
	H2__Response r = H2__RESPONSE__INIT;
	H2__HelloResult hr = H2__HELLO_RESULT__INIT;
	H2__VolumeInfo vi[2] = {H2__VOLUME_INFO__INIT, H2__VOLUME_INFO__INIT};
	H2__VolumeInfo *vip[2] = {&vi[0], &vi[1]};
	H2__VolumeListResult vl = H2__VOLUME_LIST_RESULT__INIT;
	H2__VolumeOpenResult vo = H2__VOLUME_OPEN_RESULT__INIT;
	H2__BlockStatusResult bs = H2__BLOCK_STATUS_RESULT__INIT;
	H2__Extent ex[2] = {H2__EXTENT__INIT, H2__EXTENT__INIT};
	H2__Extent *exp[2] = {&ex[0], &ex[1]};
	H2__StatResult st = H2__STAT_RESULT__INIT;
	H2__OpStats ops[2] = {H2__OP_STATS__INIT, H2__OP_STATS__INIT};
	H2__OpStats *opp[2] = {&ops[0], &ops[1]};
	H2__LatencySummary lat = H2__LATENCY_SUMMARY__INIT;
	H2__ErrorCount ec = H2__ERROR_COUNT__INIT, *ecp = &ec;
	H2__VolumeStats vs[2] = {H2__VOLUME_STATS__INIT,
				 H2__VOLUME_STATS__INIT};
	H2__VolumeStats *vsp[2] = {&vs[0], &vs[1]};
	H2__FlushResult fr = H2__FLUSH_RESULT__INIT;
	H2__TxnResult tr = H2__TXN_RESULT__INIT;
	H2__SnapshotInfo si[FAKE_NSNAPS];
	H2__SnapshotInfo *sip[FAKE_NSNAPS];
	H2__SnapshotListResult sl = H2__SNAPSHOT_LIST_RESULT__INIT;
	struct h2_frame_buf out = {0};
	char cn[128], msg[256] = "", origin[300];
	const struct fake_rec *rec;
	const H2__Request *rq;
	const uint8_t *payload = NULL;
	size_t plen = 0, i, pos;
	int ok;

	pthread_mutex_lock(&f->mu);
	rec = &f->log[idx];
	rq = rec->rq;
	r.id = rq->id;
	switch (rq->op_case) {
	case H2__REQUEST__OP_HELLO:
		if (rq->hello->version != 1) {
			r.status = H2__STATUS__FAILED_PRECONDITION;
			break;
		}
		fake_peer_cn(ssl, cn, sizeof(cn));
		hr.version = 1;
		hr.server_name = "fake h2d";
		hr.max_payload = f->max_payload;
		hr.max_inflight = f->max_inflight;
		hr.identity = cn;
		hr.instance = f->same_instance ? 1 : f->conn;
		r.result_case = H2__RESPONSE__RESULT_HELLO;
		r.hello = &hr;
		break;
	case H2__REQUEST__OP_VOLUME_CREATE:
	case H2__REQUEST__OP_VOLUME_DELETE:
	case H2__REQUEST__OP_VOLUME_RESIZE:
	case H2__REQUEST__OP_VOLUME_CLOSE:
		break;
	case H2__REQUEST__OP_VOLUME_INFO:
		vi[0].name = rq->volume_info->name;
		vi[0].id = 42;
		vi[0].size = 1u << 30;
		vi[0].used_bytes = 12345;
		vi[0].ctime_ns = 1700000000000000000ull;
		vi[0].can_read = true;
		vi[0].can_admin = true;
		vi[0].snapshots = 3;
		vi[0].snap_bytes = 1u << 20;
		vi[0].origin = "base@gold";
		r.result_case = H2__RESPONSE__RESULT_VOLUME_INFO;
		r.volume_info = &vi[0];
		break;
	case H2__REQUEST__OP_VOLUME_LIST:
		vi[0].name = "alpha";
		vi[0].size = 4096;
		vi[1].name = "beta";
		vi[1].size = 8192;
		vi[1].can_write = true;
		vl.n_volumes = 2;
		vl.volumes = vip;
		r.result_case = H2__RESPONSE__RESULT_VOLUME_LIST;
		r.volume_list = &vl;
		break;
	case H2__REQUEST__OP_VOLUME_OPEN:
		/* A snapshot of vm1 opens (read-only, as h2d would). */
		if (strncmp(rq->volume_open->name, "vm1@", 4) == 0 &&
		    rq->volume_open->write) {
			r.status = H2__STATUS__READ_ONLY;
			snprintf(msg, sizeof(msg), "snapshot is read-only");
			break;
		}
		if ((strcmp(rq->volume_open->name, "vm1") != 0 &&
		     strncmp(rq->volume_open->name, "vm1@", 4) != 0) ||
		    (f->reopen_fails && f->conn > 1)) {
			r.status = H2__STATUS__NOT_FOUND;
			snprintf(msg, sizeof(msg), "volume '%s' does not exist",
				 rq->volume_open->name);
			break;
		}
		vi[0].name = "vm1";
		vi[0].size = FAKE_DISK;
		vo.handle = FAKE_CONN_HANDLE(f->conn);
		vo.info = &vi[0];
		r.result_case = H2__RESPONSE__RESULT_VOLUME_OPEN;
		r.volume_open = &vo;
		break;
	case H2__REQUEST__OP_READ:
		if (rq->read->handle != FAKE_CONN_HANDLE(f->conn) ||
		    !fake_in_range(rq->read->offset, rq->read->length)) {
			r.status = H2__STATUS__OUT_OF_RANGE;
			break;
		}
		if (rq->read->length > f->max_read_len)
			f->max_read_len = rq->read->length;
		payload = f->disk + rq->read->offset;
		plen = rq->read->length;
		break;
	case H2__REQUEST__OP_WRITE:
		if (rq->write->handle != FAKE_CONN_HANDLE(f->conn) ||
		    !fake_in_range(rq->write->offset, rq->payload_len)) {
			r.status = H2__STATUS__OUT_OF_RANGE;
			break;
		}
		memcpy(f->disk + rq->write->offset, rec->payload,
		       rq->payload_len);
		break;
	case H2__REQUEST__OP_TRIM:
		if (!fake_in_range(rq->trim->offset, rq->trim->length)) {
			r.status = H2__STATUS__OUT_OF_RANGE;
			break;
		}
		memset(f->disk + rq->trim->offset, 0, rq->trim->length);
		break;
	case H2__REQUEST__OP_WRITE_ZEROES:
		if (!fake_in_range(rq->write_zeroes->offset,
				   rq->write_zeroes->length)) {
			r.status = H2__STATUS__OUT_OF_RANGE;
			break;
		}
		memset(f->disk + rq->write_zeroes->offset, 0,
		       rq->write_zeroes->length);
		break;
	case H2__REQUEST__OP_TXN:
		/* Writes take their data from the payload in op order. */
		for (i = 0, pos = 0; i < rq->txn->n_ops; i++) {
			const H2__TxnOp *op = rq->txn->ops[i];

			if (!fake_in_range(op->offset, op->length))
				r.status = H2__STATUS__OUT_OF_RANGE;
			else if (op->type == H2__TXN_OP__TYPE__WRITE) {
				memcpy(f->disk + op->offset, rec->payload + pos,
				       op->length);
				pos += op->length;
			} else {
				memset(f->disk + op->offset, 0, op->length);
			}
		}
		if (pos != rq->payload_len)
			r.status = H2__STATUS__INVALID_ARGUMENT;
		tr.epoch = 99;
		r.result_case = H2__RESPONSE__RESULT_TXN;
		r.txn = &tr;
		break;
	case H2__REQUEST__OP_FLUSH:
		r.status = f->flush_status;
		if (f->flush_msg)
			snprintf(msg, sizeof(msg), "%s", f->flush_msg);
		fr.durable_tid = 5;
		r.result_case = H2__RESPONSE__RESULT_FLUSH;
		r.flush = &fr;
		break;
	case H2__REQUEST__OP_BLOCK_STATUS:
		/* Describe only part of the range each time, the second
		 * extent a hole: the client must ask again for the rest. */
		ex[0].offset = rq->block_status->offset;
		ex[0].length = (rq->block_status->length + 1) / 2;
		ex[1].offset = ex[0].offset + ex[0].length;
		ex[1].length = 4096;
		ex[1].hole = true;
		bs.n_extents = 2;
		bs.extents = exp;
		r.result_case = H2__RESPONSE__RESULT_BLOCK_STATUS;
		r.block_status = &bs;
		break;
	case H2__REQUEST__OP_STAT:
		st.total_bytes = 1;
		st.used_bytes = 2;
		st.free_bytes = 3;
		st.dirty_bytes = 4;
		st.flushes = 5;
		st.flush_ns_total = 6;
		st.durable_tid = 7;
		st.dev_bytes_written = 8;
		st.client_bytes_written = 9;
		st.client_bytes_read = 10;
		st.volumes = 11;
		st.connections = 12;
		st.requests = 13;
		st.errors = 14;
		st.tls_handshake_failures = 15;
		/* Two operations, one error code. */
		ops[0].op = "read";
		ops[0].requests = 10;
		ops[0].nbd_requests = 4;
		ops[0].native_requests = 6;
		ops[0].bytes = 40960;
		ops[0].errors = 1;
		lat.count = 10;
		lat.sum_ns = 1000;
		lat.p50_ns = 90;
		lat.p99_ns = 200;
		lat.p999_ns = 300;
		ops[0].latency = &lat;
		ops[1].op = "write";
		ops[1].requests = 3;
		st.n_ops = 2;
		st.ops = opp;
		ec.code = H2__STATUS__OUT_OF_RANGE;
		ec.count = 1;
		st.n_errors_by_code = 1;
		st.errors_by_code = &ecp;
		/*
		 * Volumes: "a", "b" then (after "b") "c"; with a volume
		 * named, that one.  stat_stuck: a broken server that sends
		 * the first page forever.
		 */
		if (*rq->stat->volume) {
			vs[0].name = rq->stat->volume;
			st.n_volume_stats = 1;
		} else if (f->stat_stuck || !*rq->stat->after) {
			vs[0].name = "a";
			vs[0].n_ops = 1;
			vs[0].ops = opp;
			vs[0].n_errors = 1;
			vs[0].errors = &ecp;
			vs[1].name = "b";
			st.n_volume_stats = 2;
			st.next_after = "b";
		} else if (strcmp(rq->stat->after, "b") == 0) {
			vs[0].name = "c";
			vs[0].size = 5;
			st.n_volume_stats = 1;
		}
		st.volume_stats = vsp;
		r.result_case = H2__RESPONSE__RESULT_STAT;
		r.stat = &st;
		break;
	case H2__REQUEST__OP_SNAPSHOT_CREATE:
		h2__snapshot_info__init(&si[0]);
		si[0].volume = rq->snapshot_create->volume;
		si[0].name = rq->snapshot_create->name;
		si[0].ctime_ns = 1700000000000000001ull;
		si[0].tid = 77;
		si[0].size = 1u << 30;
		si[0].refer_bytes = 4096;
		r.result_case = H2__RESPONSE__RESULT_SNAPSHOT_INFO;
		r.snapshot_info = &si[0];
		break;
	case H2__REQUEST__OP_SNAPSHOT_LIST:
		/* Two per reply at most: the client must ask again. */
		for (i = 0, pos = 0; i < FAKE_NSNAPS; i++) {
			if ((rq->snapshot_list->volume[0] &&
			     strcmp(rq->snapshot_list->volume,
				    fake_snaps[i].volume)) ||
			    !fake_snap_after(rq->snapshot_list, i))
				continue;
			if (pos == 2) {
				sl.truncated = true;
				break;
			}
			h2__snapshot_info__init(&si[pos]);
			si[pos].volume = (char *)fake_snaps[i].volume;
			si[pos].name = (char *)fake_snaps[i].name;
			si[pos].tid = fake_snaps[i].tid;
			si[pos].excl_bytes = 1000 * (i + 1);
			si[pos].clones = strcmp(fake_snaps[i].name, "b") == 0;
			sip[pos] = &si[pos];
			pos++;
		}
		sl.n_snapshots = pos;
		sl.snapshots = sip;
		r.result_case = H2__RESPONSE__RESULT_SNAPSHOT_LIST;
		r.snapshot_list = &sl;
		break;
	case H2__REQUEST__OP_SNAPSHOT_DELETE:
		if (strcmp(rq->snapshot_delete->name, "b") == 0) {
			r.status = H2__STATUS__HAS_DEPENDENTS;
			snprintf(msg, sizeof(msg),
				 "snapshot \"vm1@b\" has a clone");
		}
		break;
	case H2__REQUEST__OP_CLONE:
		vi[0].name = rq->clone->new_volume;
		vi[0].size = 1u << 30;
		vi[0].can_admin = vi[0].can_write = vi[0].can_read = true;
		snprintf(origin, sizeof(origin), "%s@%s", rq->clone->volume,
			 rq->clone->snapshot);
		vi[0].origin = origin;
		r.result_case = H2__RESPONSE__RESULT_VOLUME_INFO;
		r.volume_info = &vi[0];
		break;
	case H2__REQUEST__OP_ROLLBACK:
		if (!rq->rollback->force) {
			r.status = H2__STATUS__BUSY;
			snprintf(msg, sizeof(msg),
				 "volume \"%s\" is open for writing",
				 rq->rollback->volume);
		}
		break;
	default:
		r.status = H2__STATUS__UNSUPPORTED;
		break;
	}
	r.message = msg;
	r.payload_len = plen;
	ok = h2_frame_append_response(&out, &r) == 0 &&
	     h2_frame_buf_append(&out, payload, plen) == 0;
	pthread_mutex_unlock(&f->mu);
	if (!ok)
		fake_fail(f, "cannot encode a reply");
	else
		ok = fake_write_all(ssl, out.data, out.len);
	h2_frame_buf_free(&out);
	return ok;
}

/* Op of a logged request. */
static H2__Request__OpCase fake_op(struct fake *f, long idx)
{
	H2__Request__OpCase op;

	pthread_mutex_lock(&f->mu);
	op = f->log[idx].rq->op_case;
	pthread_mutex_unlock(&f->mu);
	return op;
}

/*
 * FAKE_STOP's end: close_notify, then read until the client's EOF, so
 * that no unread input turns the close into a reset.
 */
static void fake_say_bye(SSL *ssl, int fd)
{
	char buf[4096];
	struct pollfd p = {.fd = fd, .events = POLLIN};

	SSL_shutdown(ssl);
	shutdown(fd, SHUT_WR);
	while (poll(&p, 1, 5000) > 0 && read(fd, buf, sizeof(buf)) > 0)
		;
}

/*
 * Serve connection number conn according to the mode; returns when it
 * ends: true to say goodbye with close_notify, false to drop the line.
 */
static bool fake_serve(struct fake *f, SSL *ssl, int fd, unsigned conn)
{
	enum fake_mode mode = f->once && conn > 1 ? FAKE_SERVE : f->mode;
	long batch[FAKE_MAX_BATCH], held[FAKE_MAX_BATCH];
	unsigned nb, seen = 0, nheld = 0;
	bool hello_done = false;

	for (;;) {
		long idx = fake_recv(f, ssl);
		H2__Request__OpCase op;
		bool hello, io, counted;

		if (idx < 0)
			return mode != FAKE_CLOSE;
		op = fake_op(f, idx);
		hello = op == H2__REQUEST__OP_HELLO;
		io = op >= H2__REQUEST__OP_READ &&
		     op <= H2__REQUEST__OP_BLOCK_STATUS;
		counted = f->drop_op ? op == f->drop_op : io;
		batch[0] = idx;
		nb = 1;
		if (!hello_done && !hello)
			fake_fail(f, "first request is not Hello");
		if (hello)
			hello_done = true;
		switch (mode) {
		case FAKE_SERVE:
			while (nb < 16 && fake_readable(ssl, fd, 0) &&
			       (batch[nb] = fake_recv(f, ssl)) >= 0)
				nb++;
			break;
		case FAKE_REVERSE:
			while (io && nb < f->n &&
			       (batch[nb] = fake_recv(f, ssl)) >= 0)
				nb++;
			break;
		case FAKE_CLOSE:
			if (counted && ++seen == f->n)
				return false;
			if (counted)
				continue;
			break;
		case FAKE_STOP:
			if (!counted)
				break;
			held[nheld++] = idx;
			if (nheld < f->n && nheld < FAKE_MAX_BATCH)
				continue;
			for (unsigned i = 0; i < nheld; i++)
				if (!fake_reply_unavailable(f, ssl,
							    (size_t)held[i]))
					return false;
			nheld = 0;
			if (f->stop_stays_open)
				continue; /* until the client gives up */
			fake_say_bye(ssl, fd);
			return false; /* already said */
		case FAKE_HOLD:
			if (io || (hello && f->hold_hello))
				continue;
			break;
		case FAKE_LIMIT:
			if (!io)
				break;
			/* The client may take a moment to send each one it
			 * is allowed; after the limit nothing may come. */
			while (nb < FAKE_MAX_BATCH &&
			       fake_readable(ssl, fd, nb < f->n ? 5000 : 50) &&
			       (batch[nb] = fake_recv(f, ssl)) >= 0)
				nb++;
			pthread_mutex_lock(&f->mu);
			if (nb > f->max_held)
				f->max_held = nb;
			pthread_mutex_unlock(&f->mu);
			break;
		}
		while (nb > 0)
			if (!fake_reply(f, ssl, (size_t)batch[--nb]))
				return mode != FAKE_CLOSE;
	}
}

/* The accept loop. */
static void *fake_main(void *arg)
{
	struct fake *f = arg;
	sigset_t set;

	/* Writes to a client that went away must not kill the test. */
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (;;) {
		struct pollfd p[2] = {{.fd = f->lfd, .events = POLLIN},
				      {.fd = f->stop[0], .events = POLLIN}};
		SSL *ssl;
		int fd;

		if (poll(p, 2, -1) < 0 && errno == EINTR)
			continue;
		if (p[1].revents)
			break;
		fd = accept(f->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		pthread_mutex_lock(&f->mu);
		if (f->refuse_after && f->accepted >= f->refuse_after) {
			f->refused++;
			pthread_cond_broadcast(&f->cv);
			pthread_mutex_unlock(&f->mu);
			close(fd);
			continue;
		}
		/* fake_stop shuts this down if a test ends without
		 * disconnecting (a failed assertion). */
		if (f->stopping)
			shutdown(fd, SHUT_RDWR);
		f->conn_fd = fd;
		pthread_mutex_unlock(&f->mu);
		ssl = SSL_new(f->ctx);
		SSL_set_fd(ssl, fd);
		ERR_clear_error();
		if (SSL_accept(ssl) <= 0) {
			unsigned long e = ERR_peek_error();

			pthread_mutex_lock(&f->mu);
			snprintf(f->accept_error, sizeof(f->accept_error), "%s",
				 e ? ERR_reason_error_string(e) : "no error");
			pthread_mutex_unlock(&f->mu);
			ERR_clear_error();
		} else {
			unsigned conn;

			pthread_mutex_lock(&f->mu);
			conn = f->conn = ++f->accepted;
			pthread_cond_broadcast(&f->cv);
			pthread_mutex_unlock(&f->mu);
			/* FAKE_CLOSE drops the line; the others say bye. */
			if (fake_serve(f, ssl, fd, conn))
				SSL_shutdown(ssl);
		}
		SSL_free(ssl);
		pthread_mutex_lock(&f->mu);
		f->conn_fd = -1;
		pthread_mutex_unlock(&f->mu);
		close(fd);
	}
	return NULL;
}

bool fake_start(struct fake *f)
{
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	unsigned i;

	/* A struct fake may be started again after fake_stop. */
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	f->refused = 0;
	f->conn = 0;
	f->conn_fd = -1;
	f->stopping = false;
	f->log = NULL;
	f->nlog = f->caplog = 0;
	f->error[0] = f->accept_error[0] = '\0';
	f->accepted = f->max_held = 0;
	f->max_read_len = 0;
	f->disk = malloc(FAKE_DISK);
	for (i = 0; i < FAKE_DISK; i++)
		f->disk[i] = (uint8_t)(i * 7 + (i >> 12));
	f->ctx = SSL_CTX_new(TLS_server_method());
	SSL_CTX_set_min_proto_version(f->ctx, TLS1_2_VERSION);
	if (f->tls12_only)
		SSL_CTX_set_max_proto_version(f->ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(f->ctx, f->cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(f->ctx, f->key, SSL_FILETYPE_PEM) !=
		1 ||
	    SSL_CTX_load_verify_locations(f->ctx, f->ca, NULL) != 1) {
		fake_fail(f, "cannot load the server's TLS files");
		return false;
	}
	SSL_CTX_set_verify(
	    f->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(f->lfd, 8) ||
	    getsockname(f->lfd, (struct sockaddr *)&sa, &sl) || pipe(f->stop)) {
		fake_fail(f, "cannot listen: %s", strerror(errno));
		return false;
	}
	f->port = ntohs(sa.sin_port);
	if (pthread_create(&f->thr, NULL, fake_main, f) != 0) {
		fake_fail(f, "cannot start the thread");
		return false;
	}
	return true;
}

const char *fake_stop(struct fake *f)
{
	static char err[512];
	size_t i;

	if (write(f->stop[1], "x", 1) != 1)
		snprintf(f->error, sizeof(f->error), "cannot stop the fake");
	pthread_mutex_lock(&f->mu);
	f->stopping = true;
	if (f->conn_fd >= 0)
		shutdown(f->conn_fd, SHUT_RDWR);
	pthread_mutex_unlock(&f->mu);
	pthread_join(f->thr, NULL);
	close(f->stop[0]);
	close(f->stop[1]);
	close(f->lfd);
	SSL_CTX_free(f->ctx);
	for (i = 0; i < f->nlog; i++) {
		h2_frame_request_free(f->log[i].rq);
		free(f->log[i].payload);
	}
	free(f->log);
	free(f->disk);
	snprintf(err, sizeof(err), "%s", f->error);
	pthread_cond_destroy(&f->cv);
	pthread_mutex_destroy(&f->mu);
	return err;
}

size_t fake_count_op(struct fake *f, H2__Request__OpCase op)
{
	size_t i, n = 0;

	pthread_mutex_lock(&f->mu);
	for (i = 0; i < f->nlog; i++)
		n += f->log[i].rq->op_case == op;
	pthread_mutex_unlock(&f->mu);
	return n;
}

unsigned fake_refused(struct fake *f)
{
	unsigned n;

	pthread_mutex_lock(&f->mu);
	n = f->refused;
	pthread_mutex_unlock(&f->mu);
	return n;
}

bool fake_wait_refused(struct fake *f, unsigned n, int timeout_ms)
{
	struct timespec ts;
	bool ok = true;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&f->mu);
	while (ok && f->refused < n)
		ok = pthread_cond_timedwait(&f->cv, &f->mu, &ts) == 0;
	ok = f->refused >= n;
	pthread_mutex_unlock(&f->mu);
	return ok;
}

size_t fake_count(struct fake *f)
{
	size_t n;

	pthread_mutex_lock(&f->mu);
	n = f->nlog;
	pthread_mutex_unlock(&f->mu);
	return n;
}

const struct fake_rec *fake_get(struct fake *f, size_t i)
{
	const struct fake_rec *r;

	pthread_mutex_lock(&f->mu);
	r = i < f->nlog ? &f->log[i] : NULL;
	pthread_mutex_unlock(&f->mu);
	return r;
}

const struct fake_rec *fake_last(struct fake *f, H2__Request__OpCase op)
{
	const struct fake_rec *r = NULL;
	size_t i;

	pthread_mutex_lock(&f->mu);
	for (i = f->nlog; i-- > 0;)
		if (f->log[i].rq->op_case == op) {
			r = &f->log[i];
			break;
		}
	pthread_mutex_unlock(&f->mu);
	return r;
}

bool fake_make_certs(const char *dir)
{
	char cmd[2048];

	snprintf(
	    cmd, sizeof(cmd),
	    "( set -e; cd '%s'; "
	    "k='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'; "
	    "openssl req -x509 $k -keyout ca.key -out ca.crt "
	    "  -subj /CN=h2-test-ca -days 2; "
	    "openssl req -x509 $k -keyout other-ca.key -out other-ca.crt "
	    "  -subj /CN=h2-other-ca -days 2; "
	    "openssl req $k -keyout server.key -out server.csr "
	    "  -subj /CN=h2-server; "
	    "printf 'basicConstraints=CA:FALSE\\n"
	    "extendedKeyUsage=serverAuth\\n"
	    "subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext; "
	    "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key "
	    "  -CAcreateserial -out server.crt -days 2 -extfile server.ext; "
	    "openssl req $k -keyout client.key -out client.csr "
	    "  -subj /CN=alice; "
	    "printf 'basicConstraints=CA:FALSE\\n"
	    "extendedKeyUsage=clientAuth\\n' > client.ext; "
	    "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key "
	    "  -CAcreateserial -out client.crt -days 2 -extfile client.ext"
	    /* openssl chatters even when it succeeds. */
	    ") >/dev/null 2>&1",
	    dir);
	return system(cmd) == 0;
}
