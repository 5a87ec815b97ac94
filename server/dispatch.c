/*
 * dispatch.c - what each request does.
 *
 * As nbdkit does it: a request is first validated on the loop thread
 * (connection state, rights, handle, lengths: cheap checks that need no
 * disk), then handed to a worker as a job that calls the engine, then
 * answered on the loop thread.  Engine errors become status codes with
 * the engine's sentence as the message.
 *
 * Rights: a volume the client has no right to does not exist for it
 * (NOT_FOUND, hidden from lists and from per-volume statistics); a weaker
 * right than needed is PERMISSION_DENIED.  Writes need a handle opened
 * for writing.  Server-wide statistics (Stat) are for every verified
 * client: they name no volume.
 *
 * Every request is counted once, when its reply is queued (or would be,
 * on a connection already gone): account() with its operation, status,
 * bytes and arrival time, and with the volume of its handle, whose
 * counters the handle caches from when it was opened.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "srv.h"
#include "stat_reply.h"

/*
 * Extents per BlockStatus reply.  An Extent costs up to 26 bytes on the
 * wire (two 10-byte varints, the bool, tags, length, the repeated-field
 * tag), so 2048 of them stay well inside the 64 KiB header limit; a
 * client asks again from where a reply stopped.
 */
#define MAX_EXTENTS 2048

enum job_kind {
	J_CREATE,
	J_DELETE,
	J_RESIZE,
	J_INFO,
	J_LIST,
	J_OPEN,
	J_READ,
	J_WRITE,
	J_TRIM,
	J_ZERO,
	J_TXN,
	J_FLUSH,
	J_STATUS,
	J_STAT,
};

/* A refcounted open volume (table + jobs using it). */
struct vhandle {
	int refs; /* loop thread */
	struct h2_vol *vol;
	struct h2_vmetrics *vm; /* its counters; NULL if out of memory */
	bool write;
	uint64_t id;
	char name[256];
};

struct ext {
	uint64_t off, len;
	bool hole;
};

struct rjob {
	struct h2_job job;
	enum job_kind kind;
	struct h2_conn *c;
	H2__Request *req;
	uint64_t id;
	uint8_t *payload;
	uint64_t payload_len;
	uint64_t account;	/* bytes counted in flight */
	struct vhandle *h;	/* I/O jobs */
	enum h2_mop mop;	/* for the counters */
	uint64_t mbytes;
	uint64_t start_ns;
	/* results */
	int err;
	char msg[400];
	uint8_t *data;		/* read */
	uint64_t data_len;
	uint64_t u64;		/* tid, epoch */
	struct h2_vol_info info;
	struct h2_vol_info *list;
	size_t nlist;
	struct h2_vol *vol;	/* open */
	struct ext *ext;
	size_t next;
	struct h2_store_stats stats;
};

/* Count a finished request (see the top of the file). */
static void account(struct h2_conn *c, const struct vhandle *h,
		    enum h2_mop op, int err, uint64_t bytes, uint64_t start_ns)
{
	h2_metrics_request(c->srv->metrics, h ? h->vm : NULL,
			   H2_MPROTO_NATIVE, op,
			   (unsigned)h2_status_from_errno(err), bytes,
			   start_ns);
}

/* The operation a request counts as. */
static enum h2_mop request_op(const H2__Request *req)
{
	switch (req ? req->op_case : H2__REQUEST__OP__NOT_SET) {
	case H2__REQUEST__OP_READ:
		return H2_MOP_READ;
	case H2__REQUEST__OP_WRITE:
		return H2_MOP_WRITE;
	case H2__REQUEST__OP_TRIM:
		return H2_MOP_TRIM;
	case H2__REQUEST__OP_WRITE_ZEROES:
		return H2_MOP_WRITE_ZEROES;
	case H2__REQUEST__OP_TXN:
		return H2_MOP_TXN;
	case H2__REQUEST__OP_FLUSH:
		return H2_MOP_FLUSH;
	case H2__REQUEST__OP_BLOCK_STATUS:
		return H2_MOP_BLOCK_STATUS;
	default:
		return H2_MOP_OTHER;
	}
}

/* The bytes a request covers (counted if it succeeds): the data of a
 * write, the range of the rest, a transaction's ops summed. */
static uint64_t request_bytes(const H2__Request *req, uint64_t payload_len)
{
	uint64_t n = 0;

	switch (req->op_case) {
	case H2__REQUEST__OP_READ:
		return req->read->length;
	case H2__REQUEST__OP_WRITE:
		return payload_len;
	case H2__REQUEST__OP_TRIM:
		return req->trim->length;
	case H2__REQUEST__OP_WRITE_ZEROES:
		return req->write_zeroes->length;
	case H2__REQUEST__OP_BLOCK_STATUS:
		return req->block_status->length;
	case H2__REQUEST__OP_TXN:
		for (size_t i = 0; i < req->txn->n_ops; i++)
			n += req->txn->ops[i]->length;
		return n;
	default:
		return 0;
	}
}

void h2_dispatch_count_failed(struct h2_conn *c, const H2__Request *req,
			      int err)
{
	account(c, NULL, request_op(req), err, 0, h2_metrics_now());
}

/* ---------------------------------------------------------------------- */
/* Handles.                                                               */

static struct vhandle **handles(struct h2_conn *c)
{
	return (struct vhandle **)c->handles;
}

static struct vhandle *handle_find(struct h2_conn *c, uint64_t id)
{
	for (size_t i = 0; i < c->nhandles; i++)
		if (handles(c)[i]->id == id)
			return handles(c)[i];
	return NULL;
}

static void handle_unref(struct vhandle *h)
{
	if (--h->refs > 0)
		return;
	h2_vol_close(h->vol);
	if (h->vm) {
		h2_metrics_volume_handle(h->vm, false);
		h2_metrics_volume_put(h->vm);
	}
	free(h);
}

static int handle_add(struct h2_conn *c, struct h2_vol *vol, bool write,
		      const char *name, uint64_t *id)
{
	struct vhandle *h;

	if (c->nhandles == c->caphandles) {
		size_t cap = c->caphandles ? c->caphandles * 2 : 8;
		void *n = realloc(c->handles, cap * sizeof(struct vhandle *));

		if (!n)
			return -ENOMEM;
		c->handles = n;
		c->caphandles = cap;
	}
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->refs = 1;
	h->vol = vol;
	h->write = write;
	h->id = c->next_handle++;
	snprintf(h->name, sizeof(h->name), "%s", name);
	h->vm = h2_metrics_volume_get(c->srv->metrics, name);
	if (h->vm)
		h2_metrics_volume_handle(h->vm, true);
	handles(c)[c->nhandles++] = h;
	*id = h->id;
	return 0;
}

static void handle_remove(struct h2_conn *c, struct vhandle *h)
{
	for (size_t i = 0; i < c->nhandles; i++)
		if (handles(c)[i] == h) {
			handles(c)[i] = handles(c)[--c->nhandles];
			break;
		}
	handle_unref(h);
}

void h2_dispatch_conn_free(struct h2_conn *c)
{
	while (c->nhandles)
		handle_remove(c, handles(c)[c->nhandles - 1]);
	free(c->handles);
	c->handles = NULL;
}

/* ---------------------------------------------------------------------- */
/* Workers.                                                               */

static void fail(struct rjob *j, int err)
{
	/* The engine's ESHUTDOWN means a store that failed a flush, not a
	 * stopping server: UNAVAILABLE would tell the client that the
	 * request was not run and may be tried again elsewhere. */
	j->err = err == -ESHUTDOWN ? -EIO : err;
	snprintf(j->msg, sizeof(j->msg), "%s", h2_core_errmsg());
}

static int ext_cb(void *arg, uint64_t off, uint64_t len, bool hole)
{
	struct rjob *j = arg;

	if (j->next == MAX_EXTENTS)
		return 1;
	j->ext[j->next++] = (struct ext){off, len, hole};
	return 0;
}

static void job_run(struct h2_job *job)
{
	struct rjob *j = (struct rjob *)job;
	struct h2_store *st = j->c->srv->st;
	H2__Request *q = j->req;
	int r = 0;

	switch (j->kind) {
	case J_CREATE:
		r = h2_vol_create(st, q->volume_create->name,
				     q->volume_create->size, &j->info);
		break;
	case J_DELETE:
		r = h2_vol_delete(st, q->volume_delete->name);
		break;
	case J_RESIZE:
		r = h2_vol_resize(st, q->volume_resize->name,
				     q->volume_resize->size);
		if (r == 0)
			r = h2_vol_info(st, q->volume_resize->name,
					   &j->info);
		break;
	case J_INFO:
		r = h2_vol_info(st, q->volume_info->name, &j->info);
		break;
	case J_LIST:
		r = h2_vol_list(st, &j->list, &j->nlist);
		break;
	case J_OPEN:
		r = h2_vol_open(st, q->volume_open->name, &j->vol);
		if (r == 0)
			r = h2_vol_info(st, q->volume_open->name, &j->info);
		if (r < 0 && j->vol) {
			h2_vol_close(j->vol);
			j->vol = NULL;
		}
		break;
	case J_READ:
		j->data_len = q->read->length;
		j->data = malloc(j->data_len);
		if (!j->data) {
			j->err = -ENOMEM;
			snprintf(j->msg, sizeof(j->msg),
				 "out of memory for a %" PRIu64 "-byte read",
				 j->data_len);
			return;
		}
		r = h2_vol_read(j->h->vol, j->data, q->read->offset, j->data_len);
		break;
	case J_WRITE:
		r = h2_vol_write(j->h->vol, j->payload, q->write->offset,
			     j->payload_len, q->write->fua ? H2_IO_FUA : 0);
		break;
	case J_TRIM:
		r = h2_vol_trim(j->h->vol, q->trim->offset, q->trim->length,
			    q->trim->fua ? H2_IO_FUA : 0);
		break;
	case J_ZERO:
		r = h2_vol_write_zeroes(j->h->vol, q->write_zeroes->offset,
				    q->write_zeroes->length,
				    (q->write_zeroes->fua ? H2_IO_FUA : 0) |
					    (q->write_zeroes->no_hole
						     ? H2_IO_NO_HOLE
						     : 0));
		break;
	case J_TXN: {
		H2__Txn *t = q->txn;
		struct h2_op *ops = calloc(t->n_ops, sizeof(*ops));
		uint64_t pos = 0;

		if (!ops) {
			j->err = -ENOMEM;
			snprintf(j->msg, sizeof(j->msg), "out of memory");
			return;
		}
		for (size_t i = 0; i < t->n_ops; i++) {
			H2__TxnOp *o = t->ops[i];

			ops[i].off = o->offset;
			ops[i].len = o->length;
			if (o->type == H2__TXN_OP__TYPE__WRITE) {
				ops[i].type = H2_OP_WRITE;
				ops[i].buf = j->payload + pos;
				pos += o->length;
			} else if (o->type == H2__TXN_OP__TYPE__TRIM) {
				ops[i].type = H2_OP_TRIM;
			} else {
				ops[i].type = H2_OP_ZERO;
				ops[i].flags = o->no_hole ? H2_IO_NO_HOLE : 0;
			}
		}
		r = h2_vol_txn(j->h->vol, ops, t->n_ops, t->fua ? H2_IO_FUA : 0,
			   &j->u64);
		free(ops);
		break;
	}
	case J_FLUSH:
		r = h2_store_sync(st, &j->u64);
		break;
	case J_STATUS:
		j->ext = calloc(MAX_EXTENTS, sizeof(*j->ext));
		if (!j->ext) {
			j->err = -ENOMEM;
			snprintf(j->msg, sizeof(j->msg), "out of memory");
			return;
		}
		r = h2_vol_block_status(j->h->vol, q->block_status->offset,
				    q->block_status->length, ext_cb, j);
		if (r == 1)
			r = 0;
		break;
	case J_STAT:
		/* The engine's numbers, and the volumes' sizes for the
		 * per-volume entries. */
		h2_store_stat(st, &j->stats);
		if (*q->stat->volume) {
			r = h2_vol_info(st, q->stat->volume, &j->info);
		} else {
			r = h2_vol_list(st, &j->list, &j->nlist);
			if (r == 0)
				h2_stat_sort_vols(j->list, j->nlist);
		}
		break;
	}
	if (r < 0)
		fail(j, r);
}

/* ---------------------------------------------------------------------- */
/* Replies (loop thread).                                                 */

static void info_to_pb(const struct h2_vol_info *in, enum h2_right right,
		       H2__VolumeInfo *out)
{
	h2__volume_info__init(out);
	out->name = (char *)in->name;
	out->id = in->id;
	out->size = in->size;
	out->used_bytes = in->used_bytes;
	out->ctime_ns = in->ctime_ns;
	out->can_read = right >= H2_RIGHT_READ;
	out->can_write = right >= H2_RIGHT_WRITE;
	out->can_admin = right >= H2_RIGHT_ADMIN;
}

static enum h2_right rights(struct h2_conn *c, const char *volume)
{
	return h2_acl_rights(c->srv->acl, c->identity, volume);
}

static void job_free(struct rjob *j)
{
	if (j->h)
		handle_unref(j->h);
	h2_frame_request_free(j->req);
	free(j->payload);
	free(j->data);
	free(j->list);
	free(j->ext);
	free(j);
}

/* h2_stat_query.visible: what the connection's client may see. */
static bool stat_visible(void *arg, const char *volume)
{
	struct h2_conn *c = arg;

	return rights(c, volume) != H2_RIGHT_NONE;
}

/* A StatResult for the client; NULL (and *err) if out of memory. */
static struct h2_stat_reply *stat_reply(struct h2_conn *c, struct rjob *j,
					int *err)
{
	const H2__StatReq *q = j->req->stat;
	struct h2_stat_query sq = {
	    .m = c->srv->metrics,
	    .st = &j->stats,
	    .vols = *q->volume ? &j->info : j->list,
	    .nvols = *q->volume ? 1 : j->nlist,
	    .volume = *q->volume ? q->volume : NULL,
	    .after = *q->after ? q->after : NULL,
	    .visible = stat_visible,
	    .arg = c,
	    /* The Response around it takes a few bytes: id, result tag and
	     * length. */
	    .budget = H2_FRAME_MAX_HEADER - 64,
	};
	struct h2_stat_reply *r = NULL;

	*err = h2_stat_reply_build(&sq, &r);
	return r;
}

static void job_done(struct h2_job *job)
{
	struct rjob *j = (struct rjob *)job;
	struct h2_conn *c = j->c;
	struct h2_stat_reply *srep = NULL;
	int err = j->err;
	H2__Response resp = H2__RESPONSE__INIT;
	H2__VolumeInfo vi;
	H2__VolumeOpenResult vor = H2__VOLUME_OPEN_RESULT__INIT;
	H2__VolumeListResult vl = H2__VOLUME_LIST_RESULT__INIT;
	H2__FlushResult fr = H2__FLUSH_RESULT__INIT;
	H2__TxnResult tr = H2__TXN_RESULT__INIT;
	H2__BlockStatusResult bsr = H2__BLOCK_STATUS_RESULT__INIT;
	H2__VolumeInfo *vis = NULL, **vip = NULL;
	H2__Extent *exs = NULL, **exp = NULL;
	const void *payload = NULL;
	size_t plen = 0;

	resp.id = j->id;
	if (j->err) {
		h2_conn_reply_error(c, j->id, j->err, j->msg);
		goto out;
	}
	switch (j->kind) {
	case J_CREATE:
	case J_RESIZE:
	case J_INFO:
		info_to_pb(&j->info, rights(c, j->info.name), &vi);
		resp.result_case = H2__RESPONSE__RESULT_VOLUME_INFO;
		resp.volume_info = &vi;
		break;
	case J_OPEN: {
		uint64_t hid;
		int r;

		if (!c->open) {
			h2_vol_close(j->vol);
			goto out;
		}
		r = handle_add(c, j->vol, j->req->volume_open->write,
			       j->info.name, &hid);
		if (r < 0) {
			h2_vol_close(j->vol);
			err = r;
			h2_conn_reply_error(c, j->id, r, "out of memory");
			goto out;
		}
		info_to_pb(&j->info, rights(c, j->info.name), &vi);
		vor.handle = hid;
		vor.info = &vi;
		resp.result_case = H2__RESPONSE__RESULT_VOLUME_OPEN;
		resp.volume_open = &vor;
		break;
	}
	case J_LIST: {
		size_t n = 0;

		vis = calloc(j->nlist + 1, sizeof(*vis));
		vip = calloc(j->nlist + 1, sizeof(*vip));
		if (!vis || !vip) {
			err = -ENOMEM;
			h2_conn_reply_error(c, j->id, err, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < j->nlist; i++) {
			enum h2_right r = rights(c, j->list[i].name);

			if (r == H2_RIGHT_NONE)
				continue; /* invisible to this client */
			info_to_pb(&j->list[i], r, &vis[n]);
			vip[n] = &vis[n];
			n++;
		}
		vl.n_volumes = n;
		vl.volumes = vip;
		resp.result_case = H2__RESPONSE__RESULT_VOLUME_LIST;
		resp.volume_list = &vl;
		break;
	}
	case J_READ:
		payload = j->data;
		plen = j->data_len;
		break;
	case J_FLUSH:
		fr.durable_tid = j->u64;
		resp.result_case = H2__RESPONSE__RESULT_FLUSH;
		resp.flush = &fr;
		break;
	case J_TXN:
		tr.epoch = j->u64;
		resp.result_case = H2__RESPONSE__RESULT_TXN;
		resp.txn = &tr;
		break;
	case J_STATUS:
		exs = calloc(j->next + 1, sizeof(*exs));
		exp = calloc(j->next + 1, sizeof(*exp));
		if (!exs || !exp) {
			err = -ENOMEM;
			h2_conn_reply_error(c, j->id, err, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < j->next; i++) {
			h2__extent__init(&exs[i]);
			exs[i].offset = j->ext[i].off;
			exs[i].length = j->ext[i].len;
			exs[i].hole = j->ext[i].hole;
			exp[i] = &exs[i];
		}
		bsr.n_extents = j->next;
		bsr.extents = exp;
		resp.result_case = H2__RESPONSE__RESULT_BLOCK_STATUS;
		resp.block_status = &bsr;
		break;
	case J_DELETE:
		/* Its counters go with it (a new volume of that name starts
		 * from zero). */
		h2_metrics_volume_forget(c->srv->metrics,
					 j->req->volume_delete->name);
		break;
	case J_STAT:
		srep = stat_reply(c, j, &err);
		if (!srep) {
			h2_conn_reply_error(c, j->id, err, "out of memory");
			goto out;
		}
		resp.result_case = H2__RESPONSE__RESULT_STAT;
		resp.stat = h2_stat_reply_result(srep);
		break;
	default:
		break;
	}
	h2_conn_reply(c, &resp, payload, plen);
out:
	account(c, j->h, j->mop, err, j->mbytes, j->start_ns);
	h2_stat_reply_free(srep);
	free(vis);
	free(vip);
	free(exs);
	free(exp);
	h2_conn_request_done(c, j->account);
	h2_conn_unref(c);
	job_free(j);
}

/* ---------------------------------------------------------------------- */
/* Validation (loop thread).                                              */

/* Answer a request without a job; h: the handle it named, if found. */
static void answer_now(struct h2_conn *c, H2__Request *req, uint8_t *payload,
		       uint64_t inflight, const struct vhandle *h,
		       uint64_t start_ns, int err, const char *msg)
{
	H2__Response resp = H2__RESPONSE__INIT;

	if (err) {
		h2_conn_reply_error(c, req->id, err, msg);
	} else {
		resp.id = req->id;
		h2_conn_reply(c, &resp, NULL, 0);
	}
	account(c, h, request_op(req), err, 0, start_ns);
	h2_frame_request_free(req);
	free(payload);
	h2_conn_request_done(c, inflight);
}

/* Answer Hello; 0 or the error it was answered with. */
static int hello(struct h2_conn *c, H2__Request *req)
{
	H2__Response resp = H2__RESPONSE__INIT;
	H2__HelloResult hr = H2__HELLO_RESULT__INIT;
	char *features[] = {"txn", "fua", "block_status", "write_zeroes"};
	char name[64];

	if (c->state != H2_CONN_HELLO) {
		h2_conn_reply_error(c, req->id, -EPROTO,
				    "Hello was already done on this "
				    "connection");
		return -EPROTO;
	}
	if (req->hello->version < 1) {
		h2_conn_reply_error(c, req->id, -EOPNOTSUPP,
				    "protocol version 0 is not supported; "
				    "this server speaks version 1");
		h2_conn_close(c, "unsupported protocol version");
		return -EOPNOTSUPP;
	}
	snprintf(name, sizeof(name), "h2d %s", H2_CORE_VERSION);
	hr.version = H2_PROTO_VERSION;
	hr.server_name = name;
	hr.n_features = sizeof(features) / sizeof(features[0]);
	hr.features = features;
	hr.max_payload = c->lim.max_payload;
	hr.max_inflight = c->srv->cfg->max_inflight;
	hr.identity = c->identity;
	hr.instance = c->srv->instance;
	resp.id = req->id;
	resp.result_case = H2__RESPONSE__RESULT_HELLO;
	resp.hello = &hr;
	h2_conn_reply(c, &resp, NULL, 0);
	c->state = H2_CONN_READY;
	return 0;
}

/* Rights check: 0, or an error with msg filled. */
static int need(struct h2_conn *c, const char *name, enum h2_right want,
		char *msg, size_t len)
{
	enum h2_right have;

	if (!name || !h2_vol_name_valid(name)) {
		snprintf(msg, len, "invalid volume name \"%s\"",
			 name ? name : "");
		return -EINVAL;
	}
	have = rights(c, name);
	if (have == H2_RIGHT_NONE && want != H2_RIGHT_ADMIN) {
		snprintf(msg, len, "no volume named \"%s\"", name);
		return -ENOENT;
	}
	if (have < want) {
		snprintf(msg, len,
			 "identity \"%s\" has %s rights on \"%s\"; this needs "
			 "%s",
			 c->identity, h2_right_name(have), name,
			 h2_right_name(want));
		return -EACCES;
	}
	return 0;
}

/* The handle an I/O request names, with the write check. */
static int io_handle(struct h2_conn *c, uint64_t id, bool write,
		     struct vhandle **out, char *msg, size_t len)
{
	struct vhandle *h = handle_find(c, id);

	if (!h) {
		snprintf(msg, len, "no open volume with handle %" PRIu64
				   " on this connection",
			 id);
		return -EINVAL;
	}
	if (write && !h->write) {
		snprintf(msg, len, "volume \"%s\" was opened read-only",
			 h->name);
		return -EROFS;
	}
	*out = h;
	return 0;
}

void h2_dispatch(struct h2_conn *c, H2__Request *req, size_t hdr_bytes,
		 uint8_t *payload, uint64_t payload_len)
{
	struct rjob *j;
	struct vhandle *h = NULL;
	enum job_kind kind = J_STAT;
	/* A decoded header costs up to ~56 bytes of heap per wire byte
	 * (proto/frame.h): charge it, so that max_inflight_bytes bounds the
	 * memory of a connection that sends large headers. */
	uint64_t inflight = payload_len + (uint64_t)hdr_bytes * 56;
	uint64_t charged = inflight;
	uint64_t start_ns = h2_metrics_now();
	char msg[400] = "";
	bool takes_payload = false;
	int err = 0;

	c->inflight++;
	c->inflight_bytes += inflight;
	if (c->srv->stopping) {
		/* Not run, and said so: the client may send it again to the
		 * next server (proto/h2.proto, "Shutdown"). */
		c->srv->refused_stopping++;
		answer_now(c, req, payload, inflight, NULL, start_ns,
			   -ESHUTDOWN,
			   "h2d is shutting down; the request was not "
			   "executed");
		return;
	}
	if (req->op_case != H2__REQUEST__OP_HELLO &&
	    c->state != H2_CONN_READY) {
		answer_now(c, req, payload, inflight, NULL, start_ns, -EPROTO,
			   "the first request must be Hello");
		h2_conn_close(c, "request before Hello");
		return;
	}
	switch (req->op_case) {
	case H2__REQUEST__OP_HELLO:
		if (payload_len) {
			err = -EINVAL;
			break;
		}
		err = hello(c, req);
		account(c, NULL, H2_MOP_OTHER, err, 0, start_ns);
		h2_frame_request_free(req);
		h2_conn_request_done(c, inflight);
		return;
	case H2__REQUEST__OP_PING:
		break;
	case H2__REQUEST__OP_VOLUME_CREATE:
		kind = J_CREATE;
		err = need(c, req->volume_create->name, H2_RIGHT_ADMIN, msg,
			   sizeof(msg));
		break;
	case H2__REQUEST__OP_VOLUME_DELETE:
		kind = J_DELETE;
		err = need(c, req->volume_delete->name, H2_RIGHT_ADMIN, msg,
			   sizeof(msg));
		break;
	case H2__REQUEST__OP_VOLUME_RESIZE:
		kind = J_RESIZE;
		err = need(c, req->volume_resize->name, H2_RIGHT_ADMIN, msg,
			   sizeof(msg));
		break;
	case H2__REQUEST__OP_VOLUME_INFO:
		kind = J_INFO;
		err = need(c, req->volume_info->name, H2_RIGHT_READ, msg,
			   sizeof(msg));
		break;
	case H2__REQUEST__OP_VOLUME_LIST:
		kind = J_LIST;
		break;
	case H2__REQUEST__OP_VOLUME_OPEN:
		kind = J_OPEN;
		err = need(c, req->volume_open->name,
			   req->volume_open->write ? H2_RIGHT_WRITE
						   : H2_RIGHT_READ,
			   msg, sizeof(msg));
		break;
	case H2__REQUEST__OP_VOLUME_CLOSE:
		h = handle_find(c, req->volume_close->handle);
		if (!h) {
			err = -EINVAL;
			snprintf(msg, sizeof(msg),
				 "no open volume with handle %" PRIu64,
				 req->volume_close->handle);
			break;
		}
		handle_remove(c, h);
		h = NULL;
		break;
	case H2__REQUEST__OP_READ:
		kind = J_READ;
		err = io_handle(c, req->read->handle, false, &h, msg,
				sizeof(msg));
		if (!err && (req->read->length == 0 ||
			     req->read->length > c->lim.max_payload)) {
			err = req->read->length ? -EFBIG : -EINVAL;
			snprintf(msg, sizeof(msg),
				 "read length %" PRIu64 " must be 1 to "
				 "%" PRIu64 " bytes",
				 req->read->length, c->lim.max_payload);
		}
		if (!err)
			inflight += req->read->length;
		break;
	case H2__REQUEST__OP_WRITE:
		kind = J_WRITE;
		takes_payload = true;
		err = io_handle(c, req->write->handle, true, &h, msg,
				sizeof(msg));
		if (!err && payload_len == 0) {
			err = -EINVAL;
			snprintf(msg, sizeof(msg), "write without data");
		}
		break;
	case H2__REQUEST__OP_TRIM:
		kind = J_TRIM;
		err = io_handle(c, req->trim->handle, true, &h, msg,
				sizeof(msg));
		break;
	case H2__REQUEST__OP_WRITE_ZEROES:
		kind = J_ZERO;
		err = io_handle(c, req->write_zeroes->handle, true, &h, msg,
				sizeof(msg));
		break;
	case H2__REQUEST__OP_TXN: {
		uint64_t sum = 0;

		kind = J_TXN;
		takes_payload = true;
		err = io_handle(c, req->txn->handle, true, &h, msg,
				sizeof(msg));
		for (size_t i = 0; !err && i < req->txn->n_ops; i++) {
			H2__TxnOp *o = req->txn->ops[i];

			if (o->type == H2__TXN_OP__TYPE__WRITE) {
				if (o->length > payload_len - sum) {
					err = -EINVAL;
					break;
				}
				sum += o->length;
			} else if (o->type != H2__TXN_OP__TYPE__TRIM &&
				   o->type != H2__TXN_OP__TYPE__ZERO) {
				err = -EINVAL;
				snprintf(msg, sizeof(msg),
					 "transaction op %zu has an unknown "
					 "type",
					 i);
			}
		}
		if (!err && sum != payload_len)
			err = -EINVAL;
		if (err == -EINVAL && !msg[0])
			snprintf(msg, sizeof(msg),
				 "transaction write lengths do not add up "
				 "to the payload (%" PRIu64 " bytes)",
				 payload_len);
		break;
	}
	case H2__REQUEST__OP_FLUSH:
		kind = J_FLUSH;
		/* The flush covers the whole store; one naming a handle
		 * counts for that volume. */
		h = req->flush->handle ? handle_find(c, req->flush->handle)
				       : NULL;
		if (req->flush->handle && !h) {
			err = -EINVAL;
			snprintf(msg, sizeof(msg),
				 "no open volume with handle %" PRIu64,
				 req->flush->handle);
		}
		break;
	case H2__REQUEST__OP_BLOCK_STATUS:
		kind = J_STATUS;
		err = io_handle(c, req->block_status->handle, false, &h, msg,
				sizeof(msg));
		break;
	case H2__REQUEST__OP_STAT:
		kind = J_STAT;
		if (*req->stat->volume)
			err = need(c, req->stat->volume, H2_RIGHT_READ, msg,
				   sizeof(msg));
		break;
	default:
		answer_now(c, req, payload, inflight, NULL, start_ns,
			   -EOPNOTSUPP, "unknown operation");
		return;
	}
	if (!err && payload_len && !takes_payload) {
		err = -EINVAL;
		snprintf(msg, sizeof(msg), "this operation takes no payload");
	}
	if (err || req->op_case == H2__REQUEST__OP_PING ||
	    req->op_case == H2__REQUEST__OP_VOLUME_CLOSE) {
		answer_now(c, req, payload, inflight, h, start_ns, err, msg);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		answer_now(c, req, payload, inflight, h, start_ns, -ENOMEM,
			   "out of memory");
		return;
	}
	c->inflight_bytes += inflight - charged;
	j->job.run = job_run;
	j->job.done = job_done;
	j->kind = kind;
	j->c = c;
	j->req = req;
	j->id = req->id;
	j->payload = payload;
	j->payload_len = payload_len;
	j->account = inflight;
	j->mop = request_op(req);
	j->mbytes = request_bytes(req, payload_len);
	j->start_ns = start_ns;
	if (h) {
		h->refs++;
		j->h = h;
	}
	h2_conn_ref(c);
	h2_pool_submit(c->srv->pool, &j->job);
}
