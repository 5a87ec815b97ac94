/*
 * lib_ops.c - libh2client's operations: volume management, snapshots
 * and clones, synchronous I/O, batches (h2_txn), and the error codes and
 * sentences (statistics are lib_stat.c's).
 *
 * Every operation checks its arguments here, before anything is queued,
 * and answers H2_EINVAL / H2_ERANGE / H2_ETOOBIG with a sentence in the
 * calling thread's last error.  It then describes the request in a
 * struct h2_call on its own stack and hands it to lib_conn.c, which sends
 * it and waits; the protobuf messages it builds point into the caller's
 * memory (names, buffers), which stays valid because the caller waits.
 *
 * Sizes checked here: volume and snapshot names fit h2_volume_info.name
 * (127 bytes), "VOLUME@SNAP" twice that plus one;
 * off + len must not overflow 64 bits; a batch's data fits max_payload
 * and its ops fit one frame header.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The longest volume name, as in h2_volume_info.name. */
#define OPS_NAME_MAX (sizeof(((h2_volume_info *)0)->name) - 1)
/*
 * Room kept in a Txn's frame header for everything but the ops: the
 * Request's id, payload_len and oneof tag and length, the Txn's handle
 * and fua, and the ops' own tags and lengths are counted per op.
 */
#define OPS_TXN_HDR_RESERVE 64u

/* This thread's last error sentence. */
static _Thread_local char ops_last_error[H2_ERRMSG_MAX + 64];

int h2_ops_fail(int err, const char *fmt, ...)
{
	char tmp[sizeof(ops_last_error)];
	va_list ap;

	/* Through tmp: the arguments may point into ops_last_error. */
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	memcpy(ops_last_error, tmp, sizeof(tmp));
	return err;
}

const char *h2_last_error(void)
{
	return ops_last_error;
}

int h2_ops_status_err(int status)
{
	switch (status) {
	case H2__STATUS__OK:
		return 0;
	case H2__STATUS__INVALID_ARGUMENT:
		return H2_EINVAL;
	case H2__STATUS__OUT_OF_RANGE:
		return H2_ERANGE;
	case H2__STATUS__NOT_FOUND:
		return H2_ENOENT;
	case H2__STATUS__ALREADY_EXISTS:
		return H2_EEXIST;
	case H2__STATUS__PERMISSION_DENIED:
		return H2_EPERM;
	case H2__STATUS__READ_ONLY:
		return H2_EROFS;
	case H2__STATUS__NO_SPACE:
		return H2_ENOSPC;
	case H2__STATUS__IO_ERROR:
		return H2_EIO;
	case H2__STATUS__CHECKSUM_ERROR:
		return H2_ECHECKSUM;
	case H2__STATUS__TOO_LARGE:
		return H2_ETOOBIG;
	case H2__STATUS__UNSUPPORTED:
		return H2_EUNSUPPORTED;
	case H2__STATUS__INTERNAL:
		return H2_EINTERNAL;
	case H2__STATUS__BUSY:
		return H2_EBUSY;
	case H2__STATUS__FAILED_PRECONDITION:
		return H2_EPROTO;
	case H2__STATUS__UNAVAILABLE:
		return H2_EUNAVAILABLE;
	case H2__STATUS__HAS_DEPENDENTS:
		return H2_EDEPENDENTS;
	default:
		/* A newer server's status: it failed, we cannot say how. */
		return H2_EINTERNAL;
	}
}

const char *h2_strerror(int err)
{
	switch (err) {
	case H2_OK:
		return "success";
	case H2_EINVAL:
		return "invalid argument";
	case H2_ERANGE:
		return "offset or length outside the volume";
	case H2_ENOENT:
		return "no such volume";
	case H2_EEXIST:
		return "already exists";
	case H2_EPERM:
		return "permission denied";
	case H2_EROFS:
		return "read-only";
	case H2_ENOSPC:
		return "no space left in the store";
	case H2_EIO:
		return "I/O error on the server";
	case H2_ECHECKSUM:
		return "a block failed its checksum";
	case H2_ETOOBIG:
		return "request too large";
	case H2_EUNSUPPORTED:
		return "not supported by the server";
	case H2_EINTERNAL:
		return "internal error on the server";
	case H2_EBUSY:
		return "in use";
	case H2_EPROTO:
		return "protocol error";
	case H2_EUNAVAILABLE:
		return "server shutting down";
	case H2_ECONNECT:
		return "cannot connect";
	case H2_ETLS:
		return "TLS failed";
	case H2_ECLOSED:
		return "connection closed";
	case H2_ENOMEM:
		return "out of memory";
	case H2_ETIMEDOUT:
		return "timed out";
	case H2_ECONNLOST:
		return "connection lost; the request may or may not have been "
		       "applied";
	case H2_EUNSYNCED:
		return "writes acknowledged before a server restart may be "
		       "lost";
	case H2_EDEPENDENTS:
		return "snapshots or clones depend on it";
	default:
		return "unknown error";
	}
}

/*
 * Argument checks.
 */

/* A name of what (at most max bytes); the server checks the rest. */
static int ops_check_len(const char *fn, const char *what, const char *name,
			 size_t max)
{
	size_t n;

	if (!name)
		return h2_ops_fail(H2_EINVAL, "%s: %s is NULL", fn, what);
	n = strlen(name);
	if (n == 0 || n > max)
		return h2_ops_fail(H2_EINVAL,
				   "%s: %s must be 1..%zu bytes, not %zu", fn,
				   what, max, n);
	return 0;
}

/* A volume name that fits h2_volume_info. */
static int ops_check_name(const char *fn, const char *name)
{
	return ops_check_len(fn, "volume name", name, OPS_NAME_MAX);
}

/* A snapshot name (the same rules as a volume name). */
static int ops_check_snap(const char *fn, const char *name)
{
	return ops_check_len(fn, "snapshot name", name, OPS_NAME_MAX);
}

/* off + len within 64 bits. */
static int ops_check_range(const char *fn, uint64_t off, uint64_t len)
{
	if (len > UINT64_MAX - off)
		return h2_ops_fail(
		    H2_ERANGE, "%s: offset %llu + length %llu overflows", fn,
		    (unsigned long long)off, (unsigned long long)len);
	return 0;
}

/* Only the flags in allowed. */
static int ops_check_flags(const char *fn, unsigned flags, unsigned allowed)
{
	if (flags & ~allowed)
		return h2_ops_fail(H2_EINVAL, "%s: unknown flags 0x%x", fn,
				   flags & ~allowed);
	return 0;
}

/*
 * One request, one reply.  vol: the volume it names (the I/O thread puts
 * in its handle), or NULL.  *resp (if asked for) is the reply on success;
 * caller frees it with h2_frame_response_free.
 */
static int ops_msg(h2_client *c, struct h2_volume *vol, const H2__Request *rq,
		   const void *payload, size_t plen, H2__Response **resp)
{
	struct h2_call call = {.kind = H2_CALL_MSG,
			       .msg = rq,
			       .vol = vol,
			       .payload = payload,
			       .payload_len = plen};
	int rc = h2_conn_call(c, &call);

	if (rc == 0 && resp)
		*resp = call.resp;
	else
		h2_frame_response_free(call.resp);
	return rc;
}

/* The reply had OK but not the result the request calls for. */
static int ops_bad_reply(H2__Response *resp, const char *what)
{
	h2_frame_response_free(resp);
	return h2_ops_fail(H2_EPROTO,
			   "the server answered %s without its "
			   "result",
			   what);
}

/* Copy a wire VolumeInfo into the public struct. */
static void ops_copy_info(h2_volume_info *out, const H2__VolumeInfo *vi)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", vi->name ? vi->name : "");
	out->id = vi->id;
	out->size = vi->size;
	out->used_bytes = vi->used_bytes;
	out->ctime_ns = vi->ctime_ns;
	out->can_read = vi->can_read;
	out->can_write = vi->can_write;
	out->can_admin = vi->can_admin;
	out->snapshots = vi->snapshots;
	out->snap_bytes = vi->snap_bytes;
	snprintf(out->origin, sizeof(out->origin), "%s",
		 vi->origin ? vi->origin : "");
}

/*
 * Volume management.
 */

int h2_volume_create(h2_client *c, const char *name, uint64_t size)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__VolumeCreate m = H2__VOLUME_CREATE__INIT;
	int rc = ops_check_name("h2_volume_create", name);

	if (rc < 0)
		return rc;
	if (!c)
		return h2_ops_fail(H2_EINVAL, "h2_volume_create: c is NULL");
	if (size == 0)
		return h2_ops_fail(H2_EINVAL, "h2_volume_create: size is 0");
	m.name = (char *)name;
	m.size = size;
	rq.op_case = H2__REQUEST__OP_VOLUME_CREATE;
	rq.volume_create = &m;
	return ops_msg(c, NULL, &rq, NULL, 0, NULL);
}

int h2_volume_delete(h2_client *c, const char *name)
{
	return h2_volume_delete_flags(c, name, 0);
}

int h2_volume_delete_flags(h2_client *c, const char *name, unsigned flags)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__VolumeDelete m = H2__VOLUME_DELETE__INIT;
	int rc = ops_check_name("h2_volume_delete", name);

	if (rc == 0)
		rc = ops_check_flags("h2_volume_delete", flags,
				     H2_DELETE_RECURSIVE);
	if (rc < 0)
		return rc;
	if (!c)
		return h2_ops_fail(H2_EINVAL, "h2_volume_delete: c is NULL");
	m.name = (char *)name;
	m.recursive = flags & H2_DELETE_RECURSIVE;
	rq.op_case = H2__REQUEST__OP_VOLUME_DELETE;
	rq.volume_delete = &m;
	return ops_msg(c, NULL, &rq, NULL, 0, NULL);
}

int h2_volume_resize(h2_client *c, const char *name, uint64_t size)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__VolumeResize m = H2__VOLUME_RESIZE__INIT;
	int rc = ops_check_name("h2_volume_resize", name);

	if (rc < 0)
		return rc;
	if (!c)
		return h2_ops_fail(H2_EINVAL, "h2_volume_resize: c is NULL");
	if (size == 0)
		return h2_ops_fail(H2_EINVAL, "h2_volume_resize: size is 0");
	m.name = (char *)name;
	m.size = size;
	rq.op_case = H2__REQUEST__OP_VOLUME_RESIZE;
	rq.volume_resize = &m;
	return ops_msg(c, NULL, &rq, NULL, 0, NULL);
}

int h2_volume_info_get(h2_client *c, const char *name, h2_volume_info *out)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__VolumeInfoReq m = H2__VOLUME_INFO_REQ__INIT;
	H2__Response *resp = NULL;
	int rc = ops_check_name("h2_volume_info_get", name);

	if (rc < 0)
		return rc;
	if (!c || !out)
		return h2_ops_fail(H2_EINVAL, "h2_volume_info_get: %s is NULL",
				   !c ? "c" : "out");
	m.name = (char *)name;
	rq.op_case = H2__REQUEST__OP_VOLUME_INFO;
	rq.volume_info = &m;
	rc = ops_msg(c, NULL, &rq, NULL, 0, &resp);
	if (rc < 0)
		return rc;
	if (resp->result_case != H2__RESPONSE__RESULT_VOLUME_INFO)
		return ops_bad_reply(resp, "VolumeInfo");
	ops_copy_info(out, resp->volume_info);
	h2_frame_response_free(resp);
	return 0;
}

int h2_volume_list(h2_client *c, h2_volume_info **out, size_t *count)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__VolumeList m = H2__VOLUME_LIST__INIT;
	const H2__VolumeListResult *vl;
	H2__Response *resp = NULL;
	h2_volume_info *a = NULL;
	size_t i;
	int rc;

	if (!c || !out || !count)
		return h2_ops_fail(H2_EINVAL, "h2_volume_list: %s is NULL",
				   !c	  ? "c"
				   : !out ? "out"
					  : "count");
	rq.op_case = H2__REQUEST__OP_VOLUME_LIST;
	rq.volume_list = &m;
	rc = ops_msg(c, NULL, &rq, NULL, 0, &resp);
	if (rc < 0)
		return rc;
	if (resp->result_case != H2__RESPONSE__RESULT_VOLUME_LIST)
		return ops_bad_reply(resp, "VolumeList");
	vl = resp->volume_list;
	if (vl->n_volumes > 0) {
		a = calloc(vl->n_volumes, sizeof(*a));
		if (!a) {
			h2_frame_response_free(resp);
			return h2_ops_fail(H2_ENOMEM, "out of memory");
		}
	}
	for (i = 0; i < vl->n_volumes; i++)
		ops_copy_info(&a[i], vl->volumes[i]);
	*out = a;
	*count = vl->n_volumes;
	h2_frame_response_free(resp);
	return 0;
}

/*
 * Snapshots and clones.
 */

/* Copy a wire SnapshotInfo into the public struct. */
static void ops_copy_snap(h2_snapshot_info *out, const H2__SnapshotInfo *si)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->volume, sizeof(out->volume), "%s",
		 si->volume ? si->volume : "");
	snprintf(out->name, sizeof(out->name), "%s", si->name ? si->name : "");
	out->ctime_ns = si->ctime_ns;
	out->tid = si->tid;
	out->size = si->size;
	out->refer_bytes = si->refer_bytes;
	out->excl_bytes = si->excl_bytes;
	out->clones = si->clones;
}

int h2_snapshot_create(h2_client *c, const char *volume, const char *name,
		       h2_snapshot_info *out)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__SnapshotCreate m = H2__SNAPSHOT_CREATE__INIT;
	H2__Response *resp = NULL;
	int rc = ops_check_name("h2_snapshot_create", volume);

	if (rc == 0)
		rc = ops_check_snap("h2_snapshot_create", name);
	if (rc < 0)
		return rc;
	if (!c)
		return h2_ops_fail(H2_EINVAL, "h2_snapshot_create: c is NULL");
	m.volume = (char *)volume;
	m.name = (char *)name;
	rq.op_case = H2__REQUEST__OP_SNAPSHOT_CREATE;
	rq.snapshot_create = &m;
	rc = ops_msg(c, NULL, &rq, NULL, 0, &resp);
	if (rc < 0)
		return rc;
	if (resp->result_case != H2__RESPONSE__RESULT_SNAPSHOT_INFO)
		return ops_bad_reply(resp, "SnapshotCreate");
	if (out)
		ops_copy_snap(out, resp->snapshot_info);
	h2_frame_response_free(resp);
	return 0;
}

/*
 * A list too long for one reply comes in several: each asks for what
 * follows the last snapshot received.
 */
int h2_snapshot_list(h2_client *c, const char *volume, h2_snapshot_info **out,
		     size_t *count)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__SnapshotList m = H2__SNAPSHOT_LIST__INIT;
	h2_snapshot_info *a = NULL;
	size_t n = 0;
	bool more = true;
	int rc;

	if (!c || !out || !count)
		return h2_ops_fail(H2_EINVAL, "h2_snapshot_list: %s is NULL",
				   !c	  ? "c"
				   : !out ? "out"
					  : "count");
	if (volume && (rc = ops_check_name("h2_snapshot_list", volume)) < 0)
		return rc;
	m.volume = (char *)(volume ? volume : "");
	rq.op_case = H2__REQUEST__OP_SNAPSHOT_LIST;
	rq.snapshot_list = &m;
	while (more) {
		const H2__SnapshotListResult *sl;
		H2__Response *resp = NULL;
		h2_snapshot_info *grown;

		if (n > 0) {
			m.after_volume = a[n - 1].volume;
			m.after_tid = a[n - 1].tid;
			m.after_name = a[n - 1].name;
		}
		rc = ops_msg(c, NULL, &rq, NULL, 0, &resp);
		if (rc < 0)
			goto fail;
		if (resp->result_case != H2__RESPONSE__RESULT_SNAPSHOT_LIST) {
			rc = ops_bad_reply(resp, "SnapshotList");
			goto fail;
		}
		sl = resp->snapshot_list;
		/* A truncated reply that brings nothing would loop forever. */
		more = sl->truncated && sl->n_snapshots > 0;
		if (sl->n_snapshots > 0) {
			grown =
			    reallocarray(a, n + sl->n_snapshots, sizeof(*a));
			if (!grown) {
				h2_frame_response_free(resp);
				rc = h2_ops_fail(H2_ENOMEM, "out of memory");
				goto fail;
			}
			a = grown;
		}
		for (size_t i = 0; i < sl->n_snapshots; i++)
			ops_copy_snap(&a[n++], sl->snapshots[i]);
		h2_frame_response_free(resp);
	}
	*out = n ? a : NULL;
	*count = n;
	if (!n)
		free(a);
	return 0;
fail:
	free(a);
	return rc;
}

void h2_snapshot_list_free(h2_snapshot_info *list)
{
	free(list);
}

int h2_snapshot_delete(h2_client *c, const char *volume, const char *name)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__SnapshotDelete m = H2__SNAPSHOT_DELETE__INIT;
	int rc = ops_check_name("h2_snapshot_delete", volume);

	if (rc == 0)
		rc = ops_check_snap("h2_snapshot_delete", name);
	if (rc < 0)
		return rc;
	if (!c)
		return h2_ops_fail(H2_EINVAL, "h2_snapshot_delete: c is NULL");
	m.volume = (char *)volume;
	m.name = (char *)name;
	rq.op_case = H2__REQUEST__OP_SNAPSHOT_DELETE;
	rq.snapshot_delete = &m;
	return ops_msg(c, NULL, &rq, NULL, 0, NULL);
}

int h2_clone(h2_client *c, const char *volume, const char *snapshot,
	     const char *new_volume, h2_volume_info *out)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__Clone m = H2__CLONE__INIT;
	H2__Response *resp = NULL;
	int rc = ops_check_name("h2_clone", volume);

	if (rc == 0)
		rc = ops_check_snap("h2_clone", snapshot);
	if (rc == 0)
		rc = ops_check_name("h2_clone", new_volume);
	if (rc < 0)
		return rc;
	if (!c)
		return h2_ops_fail(H2_EINVAL, "h2_clone: c is NULL");
	m.volume = (char *)volume;
	m.snapshot = (char *)snapshot;
	m.new_volume = (char *)new_volume;
	rq.op_case = H2__REQUEST__OP_CLONE;
	rq.clone = &m;
	rc = ops_msg(c, NULL, &rq, NULL, 0, &resp);
	if (rc < 0)
		return rc;
	if (resp->result_case != H2__RESPONSE__RESULT_VOLUME_INFO)
		return ops_bad_reply(resp, "Clone");
	if (out)
		ops_copy_info(out, resp->volume_info);
	h2_frame_response_free(resp);
	return 0;
}

int h2_rollback(h2_client *c, const char *volume, const char *snapshot,
		unsigned flags)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__Rollback m = H2__ROLLBACK__INIT;
	int rc = ops_check_name("h2_rollback", volume);

	if (rc == 0)
		rc = ops_check_snap("h2_rollback", snapshot);
	if (rc == 0)
		rc = ops_check_flags("h2_rollback", flags, H2_ROLLBACK_FORCE);
	if (rc < 0)
		return rc;
	if (!c)
		return h2_ops_fail(H2_EINVAL, "h2_rollback: c is NULL");
	m.volume = (char *)volume;
	m.snapshot = (char *)snapshot;
	m.force = flags & H2_ROLLBACK_FORCE;
	rq.op_case = H2__REQUEST__OP_ROLLBACK;
	rq.rollback = &m;
	return ops_msg(c, NULL, &rq, NULL, 0, NULL);
}

/*
 * Volumes.
 */

int h2_volume_open(h2_client *c, const char *name, unsigned flags,
		   h2_volume **out)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__VolumeOpen m = H2__VOLUME_OPEN__INIT;
	struct h2_call call = {.kind = H2_CALL_MSG};
	struct h2_volume *v;
	const char *at = name ? strchr(name, '@') : NULL;
	/* "VOLUME@SNAP": each part a name. */
	int rc = ops_check_len("h2_volume_open", "name", name,
			       at ? 2 * OPS_NAME_MAX + 1 : OPS_NAME_MAX);

	if (rc < 0)
		return rc;
	if (!c || !out)
		return h2_ops_fail(H2_EINVAL, "h2_volume_open: %s is NULL",
				   !c ? "c" : "out");
	if (flags != H2_OPEN_RO && flags != H2_OPEN_RW)
		return h2_ops_fail(H2_EINVAL, "h2_volume_open: bad flags 0x%x",
				   flags);
	v = calloc(1, sizeof(*v));
	if (!v)
		return h2_ops_fail(H2_ENOMEM, "out of memory");
	v->c = c;
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->writable = flags == H2_OPEN_RW;
	m.name = (char *)name;
	m.write = v->writable;
	rq.op_case = H2__REQUEST__OP_VOLUME_OPEN;
	rq.volume_open = &m;
	/* The I/O thread fills v in and links it when the reply comes (see
	 * struct h2_call.open_vol); it has not if anything failed. */
	call.msg = &rq;
	call.open_vol = v;
	rc = h2_conn_call(c, &call);
	if (rc < 0) {
		h2_frame_response_free(call.resp);
		free(v);
		return rc;
	}
	if (call.resp->result_case != H2__RESPONSE__RESULT_VOLUME_OPEN) {
		free(v);
		return ops_bad_reply(call.resp, "VolumeOpen");
	}
	h2_frame_response_free(call.resp);
	*out = v;
	return 0;
}

/* Free a batch's memory (the caller unlinked it). */
static void ops_txn_free(struct h2_txn *t);

/* Unlink v from its client and free it with its batches. */
static void ops_volume_free(struct h2_volume *v)
{
	h2_client *c = v->c;
	struct h2_txn *t, *next;

	pthread_mutex_lock(&c->lock);
	if (v->prev)
		v->prev->next = v->next;
	else
		c->volumes = v->next;
	if (v->next)
		v->next->prev = v->prev;
	t = v->txns;
	v->txns = NULL;
	pthread_mutex_unlock(&c->lock);
	for (; t; t = next) {
		next = t->next;
		ops_txn_free(t);
	}
	free(v);
}

int h2_volume_close(h2_volume *v)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__VolumeClose m = H2__VOLUME_CLOSE__INIT;
	int rc;

	if (!v)
		return h2_ops_fail(H2_EINVAL, "h2_volume_close: v is NULL");
	/* Not to be opened again by a reconnect from now on. */
	pthread_mutex_lock(&v->c->lock);
	v->closing = true;
	pthread_mutex_unlock(&v->c->lock);
	rq.op_case = H2__REQUEST__OP_VOLUME_CLOSE;
	rq.volume_close = &m;
	rc = ops_msg(v->c, v, &rq, NULL, 0, NULL);
	ops_volume_free(v);
	return rc;
}

uint64_t h2_volume_size(const h2_volume *v)
{
	return v ? v->size : 0;
}

void h2_ops_free_volumes(h2_client *c)
{
	while (c->volumes)
		ops_volume_free(c->volumes);
}

/*
 * Synchronous I/O.
 */

/* A read or write, cut into max_payload pieces by the I/O thread. */
static int ops_io(const char *fn, h2_volume *v, enum h2_call_kind kind,
		  void *rbuf, const void *wbuf, size_t len, uint64_t off,
		  unsigned flags)
{
	struct h2_call call = {.kind = kind};
	int rc;

	if (!v || (!rbuf && !wbuf && len > 0))
		return h2_ops_fail(H2_EINVAL, "%s: %s is NULL", fn,
				   !v ? "v" : "buf");
	rc = ops_check_flags(fn, flags, kind == H2_CALL_WRITE ? H2_FUA : 0);
	if (rc == 0)
		rc = ops_check_range(fn, off, len);
	if (rc < 0 || len == 0)
		return rc;
	call.vol = v;
	call.off = off;
	call.len = len;
	call.rbuf = rbuf;
	call.wbuf = wbuf;
	call.fua = flags & H2_FUA;
	return h2_conn_call(v->c, &call);
}

int h2_pread(h2_volume *v, void *buf, size_t len, uint64_t off)
{
	return ops_io("h2_pread", v, H2_CALL_READ, buf, NULL, len, off, 0);
}

int h2_pwrite(h2_volume *v, const void *buf, size_t len, uint64_t off,
	      unsigned flags)
{
	return ops_io("h2_pwrite", v, H2_CALL_WRITE, NULL, buf, len, off,
		      flags);
}

int h2_trim(h2_volume *v, uint64_t off, uint64_t len, unsigned flags)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__Trim m = H2__TRIM__INIT;
	int rc;

	if (!v)
		return h2_ops_fail(H2_EINVAL, "h2_trim: v is NULL");
	rc = ops_check_flags("h2_trim", flags, H2_FUA);
	if (rc == 0)
		rc = ops_check_range("h2_trim", off, len);
	if (rc < 0 || len == 0)
		return rc;
	m.offset = off;
	m.length = len;
	m.fua = flags & H2_FUA;
	rq.op_case = H2__REQUEST__OP_TRIM;
	rq.trim = &m;
	return ops_msg(v->c, v, &rq, NULL, 0, NULL);
}

int h2_write_zeroes(h2_volume *v, uint64_t off, uint64_t len, unsigned flags)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__WriteZeroes m = H2__WRITE_ZEROES__INIT;
	int rc;

	if (!v)
		return h2_ops_fail(H2_EINVAL, "h2_write_zeroes: v is NULL");
	rc = ops_check_flags("h2_write_zeroes", flags, H2_FUA | H2_NO_HOLE);
	if (rc == 0)
		rc = ops_check_range("h2_write_zeroes", off, len);
	if (rc < 0 || len == 0)
		return rc;
	m.offset = off;
	m.length = len;
	m.fua = flags & H2_FUA;
	m.no_hole = flags & H2_NO_HOLE;
	rq.op_case = H2__REQUEST__OP_WRITE_ZEROES;
	rq.write_zeroes = &m;
	return ops_msg(v->c, v, &rq, NULL, 0, NULL);
}

/* Flush one volume, or the whole store (handle 0) when v is NULL. */
static int ops_flush(h2_client *c, struct h2_volume *v)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__Flush m = H2__FLUSH__INIT;

	rq.op_case = H2__REQUEST__OP_FLUSH;
	rq.flush = &m;
	return ops_msg(c, v, &rq, NULL, 0, NULL);
}

int h2_flush(h2_volume *v)
{
	if (!v)
		return h2_ops_fail(H2_EINVAL, "h2_flush: v is NULL");
	return ops_flush(v->c, v);
}

int h2_sync(h2_client *c)
{
	if (!c)
		return h2_ops_fail(H2_EINVAL, "h2_sync: c is NULL");
	return ops_flush(c, NULL);
}

/*
 * Hand the extents of one reply to cb, clipped to [*pos, end); *pos moves
 * past them.  The server's extents must start at *pos and follow each
 * other.
 */
static int ops_extents(const H2__BlockStatusResult *r, uint64_t *pos,
		       uint64_t end, h2_extent_fn cb, void *arg)
{
	size_t i;

	if (r->n_extents == 0)
		return h2_ops_fail(H2_EPROTO, "BlockStatus reply without "
					      "extents");
	for (i = 0; i < r->n_extents && *pos < end; i++) {
		const H2__Extent *e = r->extents[i];
		uint64_t len = e->length;
		int rc;

		if (e->offset != *pos || len == 0)
			return h2_ops_fail(H2_EPROTO,
					   "BlockStatus reply: extent at %llu "
					   "(length %llu), expected one at "
					   "%llu",
					   (unsigned long long)e->offset,
					   (unsigned long long)len,
					   (unsigned long long)*pos);
		if (len > end - *pos)
			len = end - *pos;
		rc = cb(arg, *pos, len, e->hole);
		if (rc != 0)
			return rc;
		*pos += len;
	}
	return 0;
}

int h2_block_status(h2_volume *v, uint64_t off, uint64_t len, h2_extent_fn cb,
		    void *arg)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__BlockStatus m = H2__BLOCK_STATUS__INIT;
	uint64_t pos = off, end;
	int rc;

	if (!v || !cb)
		return h2_ops_fail(H2_EINVAL, "h2_block_status: %s is NULL",
				   !v ? "v" : "cb");
	if (len == 0)
		return h2_ops_fail(H2_EINVAL, "h2_block_status: length is 0");
	rc = ops_check_range("h2_block_status", off, len);
	if (rc < 0)
		return rc;
	end = off + len;
	rq.op_case = H2__REQUEST__OP_BLOCK_STATUS;
	rq.block_status = &m;
	while (pos < end) {
		H2__Response *resp = NULL;

		m.offset = pos;
		m.length = end - pos;
		rc = ops_msg(v->c, v, &rq, NULL, 0, &resp);
		if (rc < 0)
			return rc;
		if (resp->result_case != H2__RESPONSE__RESULT_BLOCK_STATUS)
			return ops_bad_reply(resp, "BlockStatus");
		rc = ops_extents(resp->block_status, &pos, end, cb, arg);
		h2_frame_response_free(resp);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/*
 * Batches (struct h2_txn in internal.h).
 */

static void ops_txn_free(struct h2_txn *t)
{
	free(t->ops);
	free(t->data);
	free(t);
}

/* Unlink t from its volume and free it. */
static void ops_txn_release(struct h2_txn *t)
{
	h2_client *c = t->v->c;

	pthread_mutex_lock(&c->lock);
	if (t->prev)
		t->prev->next = t->next;
	else
		t->v->txns = t->next;
	if (t->next)
		t->next->prev = t->prev;
	pthread_mutex_unlock(&c->lock);
	ops_txn_free(t);
}

int h2_txn_begin(h2_volume *v, h2_txn **out)
{
	struct h2_txn *t;

	if (!v || !out)
		return h2_ops_fail(H2_EINVAL, "h2_txn_begin: %s is NULL",
				   !v ? "v" : "out");
	t = calloc(1, sizeof(*t));
	if (!t)
		return h2_ops_fail(H2_ENOMEM, "out of memory");
	t->v = v;
	pthread_mutex_lock(&v->c->lock);
	t->next = v->txns;
	if (v->txns)
		v->txns->prev = t;
	v->txns = t;
	pthread_mutex_unlock(&v->c->lock);
	*out = t;
	return 0;
}

/* Bytes a varint of v takes. */
static size_t ops_varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Add an op (with data for writes) if the batch can still be sent. */
static int ops_txn_add(const char *fn, struct h2_txn *t, H2__TxnOp__Type type,
		       const void *buf, uint64_t len, uint64_t off)
{
	H2__TxnOp op = H2__TXN_OP__INIT;
	uint64_t max_payload;
	size_t opb;
	int rc;

	if (!t || (type == H2__TXN_OP__TYPE__WRITE && !buf))
		return h2_ops_fail(H2_EINVAL, "%s: %s is NULL", fn,
				   !t ? "t" : "buf");
	if (len == 0)
		return h2_ops_fail(H2_EINVAL, "%s: length is 0", fn);
	rc = ops_check_range(fn, off, len);
	if (rc < 0)
		return rc;
	op.type = type;
	op.offset = off;
	op.length = len;
	/* The op's bytes in the Txn: tag, length, message. */
	opb = protobuf_c_message_get_packed_size(&op.base);
	opb += 1 + ops_varint_len(opb);
	if (t->hdr_bytes + opb > H2_FRAME_MAX_HEADER - OPS_TXN_HDR_RESERVE)
		return h2_ops_fail(H2_ETOOBIG,
				   "%s: the batch's %zu ops fill a frame "
				   "header",
				   fn, t->nops);
	if (type == H2__TXN_OP__TYPE__WRITE) {
		max_payload = h2_conn_max_payload(t->v->c);
		if (len > max_payload || t->dlen > max_payload - len)
			return h2_ops_fail(
			    H2_ETOOBIG,
			    "%s: the batch's data would be %llu bytes; "
			    "the server takes at most %llu in one request",
			    fn, (unsigned long long)(t->dlen + len),
			    (unsigned long long)max_payload);
		if (t->dlen + len > t->dcap) {
			size_t cap = t->dcap ? t->dcap : 4096;
			uint8_t *p;

			while (cap < t->dlen + len)
				cap = cap > SIZE_MAX / 2 ? t->dlen + len
							 : cap * 2;
			p = realloc(t->data, cap);
			if (!p)
				return h2_ops_fail(H2_ENOMEM, "out of memory");
			t->data = p;
			t->dcap = cap;
		}
	}
	if (t->nops == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		H2__TxnOp *p = realloc(t->ops, cap * sizeof(*p));

		if (!p)
			return h2_ops_fail(H2_ENOMEM, "out of memory");
		t->ops = p;
		t->cap = cap;
	}
	if (type == H2__TXN_OP__TYPE__WRITE) {
		memcpy(t->data + t->dlen, buf, (size_t)len);
		t->dlen += (size_t)len;
	}
	t->ops[t->nops++] = op;
	t->hdr_bytes += opb;
	return 0;
}

int h2_txn_write(h2_txn *t, const void *buf, size_t len, uint64_t off)
{
	return ops_txn_add("h2_txn_write", t, H2__TXN_OP__TYPE__WRITE, buf, len,
			   off);
}

int h2_txn_trim(h2_txn *t, uint64_t off, uint64_t len)
{
	return ops_txn_add("h2_txn_trim", t, H2__TXN_OP__TYPE__TRIM, NULL, len,
			   off);
}

int h2_txn_commit(h2_txn *t, unsigned flags)
{
	H2__Request rq = H2__REQUEST__INIT;
	H2__Txn m = H2__TXN__INIT;
	H2__TxnOp **ptrs = NULL;
	size_t i;
	int rc;

	if (!t)
		return h2_ops_fail(H2_EINVAL, "h2_txn_commit: t is NULL");
	rc = ops_check_flags("h2_txn_commit", flags, H2_FUA);
	if (rc < 0 || t->nops == 0)
		goto out;
	ptrs = malloc(t->nops * sizeof(*ptrs));
	if (!ptrs) {
		rc = h2_ops_fail(H2_ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < t->nops; i++)
		ptrs[i] = &t->ops[i];
	m.n_ops = t->nops;
	m.ops = ptrs;
	m.fua = flags & H2_FUA;
	rq.op_case = H2__REQUEST__OP_TXN;
	rq.txn = &m;
	rq.payload_len = t->dlen;
	/* The per-op check kept a margin; this is the exact one. */
	if (h2_frame_request_size(&rq) >
	    H2_FRAME_PREFIX + H2_FRAME_MAX_HEADER) {
		rc = h2_ops_fail(H2_ETOOBIG, "h2_txn_commit: too many ops");
		goto out;
	}
	rc = ops_msg(t->v->c, t->v, &rq, t->data, t->dlen, NULL);
out:
	free(ptrs);
	ops_txn_release(t);
	return rc;
}

void h2_txn_abort(h2_txn *t)
{
	if (t)
		ops_txn_release(t);
}
