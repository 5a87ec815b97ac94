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
 * counters the handle caches from when it was opened (a snapshot's
 * handle counts under its volume).
 *
 * Snapshots ("VOLUME@SNAP"): opening one needs read on VOLUME and is
 * always read-only; listing them needs read; creating, deleting,
 * cloning (plus admin on the new name) and rolling back need admin.
 * Deleting a volume recursively also deletes the clones made from its
 * snapshots, so it needs admin on each of them: the volumes are listed
 * first, the rights checked on the loop thread, and only then is the
 * delete run (two jobs).
 *
 * A handle is entered in the connection's table (without a volume) as
 * soon as its VolumeOpen is accepted, so that a rollback sees a volume
 * being opened for writing as well as one already open; I/O cannot name
 * such a handle until the open has finished.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "nbd.h"
#include "srv.h"
#include "stat_reply.h"

/*
 * Extents per BlockStatus reply.  An Extent costs up to 26 bytes on the
 * wire (two 10-byte varints, the bool, tags, length, the repeated-field
 * tag), so 2048 of them stay well inside the 64 KiB header limit; a
 * client asks again from where a reply stopped.
 */
#define MAX_EXTENTS 2048
/*
 * Room a SnapshotList reply leaves for everything but its snapshots
 * (id, status, message, tags): a reply that would need more is cut short
 * and the client asks again from where it stopped.
 */
#define SNAPLIST_RESERVE 1024

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
	J_SNAP_CREATE,
	J_SNAP_LIST,
	J_SNAP_DELETE,
	J_CLONE,
	J_ROLLBACK,
	J_DELETE_PLAN, /* recursive delete: list the volumes, check rights */
};

/* A refcounted open volume (table + jobs using it). */
struct vhandle {
	int refs; /* loop thread */
	struct h2_vol *vol;	/* NULL while its VolumeOpen runs */
	struct h2_vmetrics *vm; /* its counters; NULL if out of memory */
	bool write;
	bool snap; /* a snapshot: read-only */
	uint64_t id;
	char name[256]; /* "VOLUME" or "VOLUME@SNAP" */
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
	/* snapshots */
	char vname[128], sname[128]; /* J_OPEN of "VOLUME@SNAP" */
	bool is_snap;
	struct h2_snap_info snap;
	struct h2_snap_info *slist;
	size_t nslist;
	bool *doomed; /* recursive delete: the clones in list it deletes */
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

/* The open handle id names (not one whose open is still running). */
static struct vhandle *handle_find(struct h2_conn *c, uint64_t id)
{
	for (size_t i = 0; i < c->nhandles; i++)
		if (handles(c)[i]->id == id && handles(c)[i]->vol)
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

/* Enter a handle for name in c's table; its volume comes later. */
static int handle_add(struct h2_conn *c, bool write, bool snap,
		      const char *name, struct vhandle **out)
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
	h->write = write;
	h->snap = snap;
	h->id = c->next_handle++;
	snprintf(h->name, sizeof(h->name), "%s", name);
	handles(c)[c->nhandles++] = h;
	*out = h;
	return 0;
}

/* Its open finished: the volume, and the counters of volume (for a
 * snapshot, its volume's). */
static void handle_opened(struct h2_conn *c, struct vhandle *h,
			  struct h2_vol *vol, const char *volume)
{
	h->vol = vol;
	h->vm = h2_metrics_volume_get(c->srv->metrics, volume);
	if (h->vm)
		h2_metrics_volume_handle(h->vm, true);
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

/*
 * Whether a connection of srv (native or NBD) has volume open for
 * writing or is opening it so; *who describes one (loop thread).
 */
static bool open_for_writing(struct h2_server *srv, const char *volume,
			     char *who, size_t len)
{
	for (struct h2_conn *c = srv->conns; c; c = c->next)
		for (size_t i = 0; i < c->nhandles; i++) {
			struct vhandle *h = handles(c)[i];

			if (h->write && strcmp(h->name, volume) == 0) {
				snprintf(who, len, "identity \"%s\" from %s",
					 c->identity, c->peer);
				return true;
			}
		}
	if (srv->nbd && h2_nbdsrv_writing(srv, volume)) {
		snprintf(who, len, "an NBD client");
		return true;
	}
	return false;
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
		r = h2_vol_delete_flags(
		    st, q->volume_delete->name,
		    q->volume_delete->recursive ? H2_DEL_RECURSIVE : 0);
		break;
	case J_DELETE_PLAN:
		r = h2_vol_list(st, &j->list, &j->nlist);
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
		if (r == 0 && j->is_snap)
			r = h2_snap_info(st, j->vname, j->sname, &j->snap);
		else if (r == 0)
			r = h2_vol_info(st, q->volume_open->name, &j->info);
		if (r < 0 && j->vol) {
			h2_vol_close(j->vol);
			j->vol = NULL;
		}
		break;
	case J_READ:
		/* j->data comes from h2_dispatch (see there). */
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
	case J_SNAP_CREATE:
		r = h2_snap_create(st, q->snapshot_create->volume,
				   q->snapshot_create->name, &j->snap);
		break;
	case J_SNAP_LIST:
		r = h2_snap_list(st,
				 q->snapshot_list->volume[0]
				     ? q->snapshot_list->volume
				     : NULL,
				 &j->slist, &j->nslist);
		break;
	case J_SNAP_DELETE:
		r = h2_snap_delete(st, q->snapshot_delete->volume,
				   q->snapshot_delete->name);
		break;
	case J_CLONE:
		r = h2_snap_clone(st, q->clone->volume, q->clone->snapshot,
			     q->clone->new_volume, &j->info);
		break;
	case J_ROLLBACK:
		/* The loop thread refused it if a client has the volume
		 * open for writing (unless forced); readers see the
		 * snapshot's data from their next read. */
		r = h2_vol_rollback(st, q->rollback->volume, q->rollback->snapshot,
				H2_ROLLBACK_FORCE);
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
	out->snapshots = in->snapshots;
	out->snap_bytes = in->snap_bytes;
	out->origin = (char *)in->origin;
}

/* The VolumeInfo of an open snapshot (name: "VOLUME@SNAP"). */
static void snap_vi_to_pb(const struct h2_snap_info *in, const char *name,
			  enum h2_right right, H2__VolumeInfo *out)
{
	h2__volume_info__init(out);
	out->name = (char *)name;
	out->id = in->id;
	out->size = in->size;
	out->used_bytes = in->refer_bytes;
	out->ctime_ns = in->ctime_ns;
	out->can_read = right >= H2_RIGHT_READ;
	out->can_admin = right >= H2_RIGHT_ADMIN;
}

static void snap_to_pb(const struct h2_snap_info *in, H2__SnapshotInfo *out)
{
	h2__snapshot_info__init(out);
	out->volume = (char *)in->volume;
	out->name = (char *)in->name;
	out->ctime_ns = in->ctime_ns;
	out->tid = in->tid;
	out->size = in->size;
	out->refer_bytes = in->refer_bytes;
	out->excl_bytes = in->excl_bytes;
	out->clones = in->clones;
}

static enum h2_right rights(struct h2_conn *c, const char *volume)
{
	return h2_acl_rights(c->srv->acl, c->identity, volume);
}

/* Order of snapshots in a SnapshotList reply: volume, tid, name. */
static int snap_cmp(const char *va, uint64_t ta, const char *na, const char *vb,
		    uint64_t tb, const char *nb)
{
	int r = strcmp(va, vb);

	if (r)
		return r;
	if (ta != tb)
		return ta < tb ? -1 : 1;
	return strcmp(na, nb);
}

static int snap_qsort(const void *a, const void *b)
{
	const struct h2_snap_info *x = a, *y = b;

	return snap_cmp(x->volume, x->tid, x->name, y->volume, y->tid, y->name);
}

/*
 * Fill sl with the snapshots of j->slist the client may see, after the
 * request's cursor, as many as fit one reply (sis/sip: room for all).
 */
static void snap_list_fill(struct rjob *j, H2__SnapshotInfo *sis,
			   H2__SnapshotInfo **sip, H2__SnapshotListResult *sl)
{
	const H2__SnapshotList *q = j->req->snapshot_list;
	size_t n = 0, used = 0;

	qsort(j->slist, j->nslist, sizeof(*j->slist), snap_qsort);
	for (size_t i = 0; i < j->nslist; i++) {
		const struct h2_snap_info *s = &j->slist[i];
		size_t len;

		if (rights(j->c, s->volume) == H2_RIGHT_NONE)
			continue; /* invisible to this client */
		if (q->after_volume[0] &&
		    snap_cmp(s->volume, s->tid, s->name, q->after_volume,
			     q->after_tid, q->after_name) <= 0)
			continue;
		snap_to_pb(s, &sis[n]);
		/* The element, its tag and its length (< 2^14: 2 bytes). */
		len = protobuf_c_message_get_packed_size(&sis[n].base) + 3;
		if (used + len > H2_FRAME_MAX_HEADER - SNAPLIST_RESERVE) {
			sl->truncated = true;
			break;
		}
		used += len;
		sip[n] = &sis[n];
		n++;
	}
	sl->n_snapshots = n;
	sl->snapshots = sip;
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
	free(j->slist);
	free(j->doomed);
	free(j);
}

/*
 * A recursive delete's plan is back (every volume, j->list): the clones
 * it would delete are the volumes whose origin is a snapshot of the
 * volume or, in turn, of such a clone.  The client needs admin on each.
 * Returns true if the delete was submitted (the job lives on, j->doomed
 * marking the clones in j->list), false with j->err set (answered) or
 * the connection gone if not.
 */
static bool delete_plan_done(struct rjob *j)
{
	struct h2_conn *c = j->c;
	const char *name = j->req->volume_delete->name;
	bool *doomed = calloc(j->nlist + 1, sizeof(*doomed));
	bool grew = true;

	if (!c->open) {
		free(doomed);
		return false;
	}
	if (!doomed) {
		j->err = -ENOMEM;
		h2_conn_reply_error(c, j->id, j->err, "out of memory");
		return false;
	}
	while (grew) {
		grew = false;
		for (size_t i = 0; i < j->nlist; i++) {
			const char *o = j->list[i].origin;
			const char *at = strchr(o, '@');
			size_t n = at ? (size_t)(at - o) : 0;
			bool from =
			    n && strlen(name) == n && memcmp(o, name, n) == 0;

			for (size_t k = 0; !from && n && k < j->nlist; k++)
				from = doomed[k] &&
				       strlen(j->list[k].name) == n &&
				       memcmp(o, j->list[k].name, n) == 0;
			if (from && !doomed[i]) {
				doomed[i] = grew = true;
				if (rights(c, j->list[i].name) <
				    H2_RIGHT_ADMIN) {
					char m[1024];

					snprintf(
					    m, sizeof(m),
					    "deleting \"%.127s\" recursively "
					    "would delete its clone "
					    "\"%s\", on which identity "
					    "\"%s\" has no admin right",
					    name, j->list[i].name, c->identity);
					free(doomed);
					j->err = -EACCES;
					h2_conn_reply_error(c, j->id, j->err,
							    m);
					return false;
				}
			}
		}
	}
	j->doomed = doomed;
	j->kind = J_DELETE;
	h2_pool_submit(c->srv->pool, &j->job);
	return true;
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
	H2__SnapshotInfo si;
	H2__SnapshotListResult sl = H2__SNAPSHOT_LIST_RESULT__INIT;
	H2__SnapshotInfo *sis = NULL, **sip = NULL;
	H2__VolumeInfo *vis = NULL, **vip = NULL;
	H2__Extent *exs = NULL, **exp = NULL;
	const void *payload = NULL;
	size_t plen = 0;

	resp.id = j->id;
	if (j->kind == J_OPEN && (j->err || !c->open)) {
		/* The placeholder goes; j->h keeps it alive until freed. */
		handle_remove(c, j->h);
		h2_vol_close(j->vol);
		j->vol = NULL;
	}
	if (j->err) {
		h2_conn_reply_error(c, j->id, j->err, j->msg);
		goto out;
	}
	switch (j->kind) {
	case J_CREATE:
	case J_RESIZE:
	case J_INFO:
	case J_CLONE:
		info_to_pb(&j->info, rights(c, j->info.name), &vi);
		resp.result_case = H2__RESPONSE__RESULT_VOLUME_INFO;
		resp.volume_info = &vi;
		break;
	case J_OPEN:
		if (!c->open)
			goto out;
		handle_opened(c, j->h, j->vol, j->is_snap ? j->vname : j->info.name);
		j->vol = NULL;
		if (j->is_snap)
			snap_vi_to_pb(&j->snap, j->h->name, rights(c, j->vname),
				      &vi);
		else
			info_to_pb(&j->info, rights(c, j->info.name), &vi);
		vor.handle = j->h->id;
		vor.info = &vi;
		resp.result_case = H2__RESPONSE__RESULT_VOLUME_OPEN;
		resp.volume_open = &vor;
		break;
	case J_DELETE_PLAN:
		if (delete_plan_done(j))
			return; /* the delete itself runs now */
		err = j->err;
		goto out;
	case J_SNAP_CREATE:
		snap_to_pb(&j->snap, &si);
		resp.result_case = H2__RESPONSE__RESULT_SNAPSHOT_INFO;
		resp.snapshot_info = &si;
		break;
	case J_SNAP_LIST:
		sis = calloc(j->nslist + 1, sizeof(*sis));
		sip = calloc(j->nslist + 1, sizeof(*sip));
		if (!sis || !sip) {
			err = -ENOMEM;
			h2_conn_reply_error(c, j->id, err, "out of memory");
			goto out;
		}
		snap_list_fill(j, sis, sip, &sl);
		resp.result_case = H2__RESPONSE__RESULT_SNAPSHOT_LIST;
		resp.snapshot_list = &sl;
		break;
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
		for (size_t i = 0; j->doomed && i < j->nlist; i++)
			if (j->doomed[i]) /* its clones, deleted with it */
				h2_metrics_volume_forget(c->srv->metrics,
							 j->list[i].name);
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
	/* An open's handle is its result, not the volume it names: the
	 * open counts server-wide only. */
	account(c, j->kind == J_OPEN ? NULL : j->h, j->mop, err, j->mbytes,
		j->start_ns);
	h2_stat_reply_free(srep);
	free(vis);
	free(vip);
	free(exs);
	free(exp);
	free(sis);
	free(sip);
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
	char *features[] = {"txn", "fua", "block_status", "write_zeroes",
			    "snapshots"};
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
	/* Before the reply: one that cannot be queued closes the
	 * connection, which must stay closing. */
	c->state = H2_CONN_READY;
	h2_conn_reply(c, &resp, NULL, 0);
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

/* A snapshot name argument: 0, or -EINVAL with msg filled. */
static int snap_name(const char *name, char *msg, size_t len)
{
	if (name && h2_vol_name_valid(name))
		return 0;
	snprintf(msg, len, "invalid snapshot name \"%s\"", name ? name : "");
	return -EINVAL;
}

/*
 * Split "VOLUME@SNAP" into vol and snap (128 bytes each): true if name
 * has an '@' (then 0 or -EINVAL in *err with msg filled).
 */
static bool snap_split(const char *name, char *vol, char *snap, int *err,
		       char *msg, size_t len)
{
	const char *at = name ? strchr(name, '@') : NULL;
	size_t n = at ? (size_t)(at - name) : 0;

	*err = 0;
	if (!at)
		return false;
	if (n >= 128 || strlen(at + 1) >= 128) {
		snprintf(msg, len, "invalid snapshot name \"%.300s\"", name);
		*err = -EINVAL;
		return true;
	}
	memcpy(vol, name, n);
	vol[n] = '\0';
	snprintf(snap, 128, "%s", at + 1);
	if (!h2_vol_name_valid(vol) || !h2_vol_name_valid(snap)) {
		snprintf(msg, len, "invalid snapshot name \"%.300s\"", name);
		*err = -EINVAL;
	}
	return true;
}

/* VolumeOpen's checks; j (may be NULL) learns about a snapshot. */
static int open_check(struct h2_conn *c, const H2__VolumeOpen *o,
		      struct rjob *j, char *msg, size_t len)
{
	char vol[128], snap[128];
	int err;

	if (!snap_split(o->name, vol, snap, &err, msg, len))
		return need(c, o->name,
			    o->write ? H2_RIGHT_WRITE : H2_RIGHT_READ, msg,
			    len);
	if (err)
		return err;
	err = need(c, vol, H2_RIGHT_READ, msg, len);
	if (err)
		return err;
	if (o->write) {
		snprintf(msg, len,
			 "snapshot \"%s\" is read-only: open it for reading, "
			 "or clone it to get a writable volume",
			 o->name);
		return -EROFS;
	}
	if (j) {
		j->is_snap = true;
		memcpy(j->vname, vol, sizeof(vol));
		memcpy(j->sname, snap, sizeof(snap));
	}
	return 0;
}

/* Rollback's checks: admin, and nobody writing unless forced. */
static int rollback_check(struct h2_conn *c, const H2__Rollback *rb, char *msg,
			  size_t len)
{
	char who[400];
	int err = need(c, rb->volume, H2_RIGHT_ADMIN, msg, len);

	if (!err)
		err = snap_name(rb->snapshot, msg, len);
	if (err || rb->force ||
	    !open_for_writing(c->srv, rb->volume, who, sizeof(who)))
		return err;
	snprintf(msg, len,
		 "volume \"%s\" is open for writing by %.300s: close it "
		 "first, or force the rollback",
		 rb->volume, who);
	return -EBUSY;
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
	if (write && h->snap) {
		snprintf(msg, len, "snapshot \"%s\" is read-only", h->name);
		return -EROFS;
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
		kind = req->volume_delete->recursive ? J_DELETE_PLAN : J_DELETE;
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
		err = open_check(c, req->volume_open, NULL, msg, sizeof(msg));
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
	case H2__REQUEST__OP_SNAPSHOT_CREATE:
		kind = J_SNAP_CREATE;
		err = need(c, req->snapshot_create->volume, H2_RIGHT_ADMIN, msg,
			   sizeof(msg));
		if (!err)
			err = snap_name(req->snapshot_create->name, msg,
					sizeof(msg));
		break;
	case H2__REQUEST__OP_SNAPSHOT_LIST:
		kind = J_SNAP_LIST;
		if (req->snapshot_list->volume[0])
			err = need(c, req->snapshot_list->volume, H2_RIGHT_READ,
				   msg, sizeof(msg));
		break;
	case H2__REQUEST__OP_SNAPSHOT_DELETE:
		kind = J_SNAP_DELETE;
		err = need(c, req->snapshot_delete->volume, H2_RIGHT_ADMIN, msg,
			   sizeof(msg));
		if (!err)
			err = snap_name(req->snapshot_delete->name, msg,
					sizeof(msg));
		break;
	case H2__REQUEST__OP_CLONE:
		kind = J_CLONE;
		/* Admin on the source, and on the new name as for a
		 * VolumeCreate. */
		err = need(c, req->clone->volume, H2_RIGHT_ADMIN, msg,
			   sizeof(msg));
		if (!err)
			err = snap_name(req->clone->snapshot, msg, sizeof(msg));
		if (!err)
			err = need(c, req->clone->new_volume, H2_RIGHT_ADMIN,
				   msg, sizeof(msg));
		break;
	case H2__REQUEST__OP_ROLLBACK:
		kind = J_ROLLBACK;
		err = rollback_check(c, req->rollback, msg, sizeof(msg));
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
	if (kind == J_OPEN) {
		int r;

		open_check(c, req->volume_open, j, msg, sizeof(msg));
		r = handle_add(c, req->volume_open->write, j->is_snap,
			       req->volume_open->name, &h);
		if (r < 0) {
			free(j);
			answer_now(c, req, payload, inflight, NULL, start_ns, r,
				   "out of memory");
			return;
		}
		/* The table holds one reference and the job another. */
	}
	if (kind == J_READ) {
		/*
		 * The read buffer is taken here, on the loop thread, not by
		 * the worker: buffers this large then come from the main
		 * arena, which malloc_trim (server.c, "Memory") empties
		 * completely, instead of growing the top of a worker's
		 * arena, which glibc trims only past a threshold that 1 MiB
		 * buffers raise to megabytes (measured: 3 MiB left in each
		 * of four worker arenas after a storm of 1 MiB reads).
		 */
		j->data_len = req->read->length;
		j->data = malloc(j->data_len);
		if (!j->data) {
			free(j);
			answer_now(c, req, payload, inflight, h, start_ns,
				   -ENOMEM, "out of memory for the read");
			return;
		}
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
