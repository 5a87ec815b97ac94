/*
 * io.c - reads, writes, trims, zeroes and multi-operation transactions.
 *
 * A modifying call runs in three phases under the volume's write lock,
 * inside one normal transaction:
 *
 *   prepare   check ranges, reserve the worst-case blocks, load every
 *             indirect block the change will copy and read the current
 *             contents of partially overwritten leaves; last, set
 *             aside the chains and free-list entries install will need
 *             (txn_bound, txn_frees).  All I/O, all checksum errors and
 *             all allocations happen here, and a failure (-ENOMEM too)
 *             leaves the volume untouched.
 *   install   change the tree (copy-on-write as chain.c describes).  It
 *             cannot fail, so a transaction is all or nothing in memory,
 *             and the flush cut makes it all or nothing on disk.
 *   finish    give back the unused reservation, hand the frees to the
 *             epoch, end the transaction; FUA waits for its flush.
 *
 * Reads take the volume lock shared, coalesce physically contiguous
 * blocks into one device read and verify every block's check code.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define RUN_MAX 256	    /* blocks per coalesced device read */
#define STATUS_MAX 4096 /* extents per h2_vol_block_status call */

static uint64_t leaf_of(uint64_t off)
{
	return off / H2_BLOCK_SIZE;
}

/* Check [off, off+len) against the volume (lock held). */
static int check_range(struct h2_vol *v, uint64_t off, uint64_t len)
{
	if (len == 0)
		return h2_err(-EINVAL, "volume %s: zero-length request",
			      v->full);
	if (off > v->rec.size || len > v->rec.size - off)
		return h2_err(-ERANGE,
			      "volume %s: offset %" PRIu64 " length %" PRIu64
			      " is beyond its end (size %" PRIu64 ")",
			      v->full, off, len, v->rec.size);
	return 0;
}

/*
 * A resize's trim reaches to the end of the old last block, so that no
 * leaf is left past the new end (lock held).
 */
static int check_tail(struct h2_vol *v, const struct h2_op *op)
{
	uint64_t end = (v->rec.size + H2_BLOCK_SIZE - 1) &
		       ~(uint64_t)(H2_BLOCK_SIZE - 1);

	if (op->off >= v->rec.size || op->off + op->len != end)
		return h2_err(-EAGAIN, "volume %s changed size during the "
				       "resize; try again",
			      v->full);
	return 0;
}

/* The volume is usable for I/O (lock held). */
static int check_vol(struct h2_vol *v)
{
	if (v->deleted)
		return h2_err(-ENOENT, "volume %s was deleted", v->full);
	if (v->root_err)
		return h2_err(v->root_err, "volume %s: %s", v->full,
			      h2_vol_root_why(v));
	return 0;
}

/*
 * Take v's lock shared for a read, after reading its root again if an
 * earlier attempt failed (h2_vol_root_retry needs the lock exclusively).
 */
static void read_lock(struct h2_vol *v)
{
	pthread_rwlock_rdlock(&v->lock);
	if (v->root_err == 0 || v->root_err == -EBADMSG)
		return;
	pthread_rwlock_unlock(&v->lock);
	pthread_rwlock_wrlock(&v->lock);
	h2_vol_root_retry(v);
	pthread_rwlock_unlock(&v->lock);
	pthread_rwlock_rdlock(&v->lock);
}

/* ---------------------------------------------------------------------- */
/* Reads.                                                                 */

struct rd {
	struct h2_vol *v;
	uint8_t *buf;
	uint64_t off, len;
	bool cached; /* h2_vol_read_cached: -EAGAIN for any device wait */
	/* pending run of whole, contiguous on-disk leaves */
	uint64_t run_key, run_dev;
	unsigned run_n;
	uint64_t run_check[RUN_MAX];
};

static int verify_fail(struct h2_vol *v, uint64_t key, uint64_t dev_off)
{
	return h2_err(-EBADMSG,
		      "volume %s: checksum mismatch at offset %" PRIu64
		      " (device offset %" PRIu64 "): the block is damaged; "
		      "run h2d check",
		      v->full, key * H2_BLOCK_SIZE, dev_off);
}

/* Check that a data blockref points into the data area. */
static int bref_sane(struct h2_vol *v, const struct h2_blockref *b,
		     uint64_t key)
{
	uint64_t blk = H2_BREF_OFFSET(b) / H2_BLOCK_SIZE;

	if (H2_BREF_RADIX(b) != H2_BLOCK_RADIX ||
	    h2_block_reserved(v->st, blk))
		return h2_err(-EBADMSG,
			      "volume %s: blockref for offset %" PRIu64
			      " points outside the data area; run h2d check",
			      v->full, key * H2_BLOCK_SIZE);
	return 0;
}

static int rd_pread(struct rd *rd, void *buf, size_t len, uint64_t off)
{
	if (rd->cached)
		return h2_dev_pread_cached(rd->v->st->dev, buf, len, off);
	return h2_dev_pread(rd->v->st->dev, buf, len, off);
}

static int rd_flush_run(struct rd *rd)
{
	uint8_t *dst;
	int r;

	/* Without a run, run_key may lie before the request: no pointer
	 * may be formed from it (UBSan: pointer overflow). */
	if (!rd->run_n)
		return 0;
	dst = rd->buf + (rd->run_key * H2_BLOCK_SIZE - rd->off);
	r = rd_pread(rd, dst, (size_t)rd->run_n * H2_BLOCK_SIZE, rd->run_dev);
	if (r == -EAGAIN && rd->cached)
		return r;
	if (r < 0)
		return h2_err(r, "volume %s: device read at offset %" PRIu64
				 " failed",
			      rd->v->full, rd->run_dev);
	for (unsigned i = 0; i < rd->run_n; i++)
		if (h2_check64(dst + (size_t)i * H2_BLOCK_SIZE,
			       H2_BLOCK_SIZE) != rd->run_check[i])
			return verify_fail(rd->v, rd->run_key + i,
					   rd->run_dev +
						   (uint64_t)i * H2_BLOCK_SIZE);
	rd->run_n = 0;
	return 0;
}

/* The part of leaf range [key, key+count) inside the request. */
static void overlap(struct rd *rd, uint64_t key, uint64_t count,
		    uint64_t *lo, uint64_t *hi)
{
	uint64_t a = key * H2_BLOCK_SIZE, b = (key + count) * H2_BLOCK_SIZE;

	*lo = a > rd->off ? a : rd->off;
	*hi = b < rd->off + rd->len ? b : rd->off + rd->len;
}

static int rd_leaf(void *arg, uint64_t key, uint64_t count,
		   struct h2_chain *c, const struct h2_blockref *b)
{
	struct rd *rd = arg;
	uint64_t lo, hi;
	int r;

	overlap(rd, key, count, &lo, &hi);
	if (c || b->type == H2_BREF_EMPTY) {
		r = rd_flush_run(rd);
		if (r < 0)
			return r;
		if (c)
			memcpy(rd->buf + (lo - rd->off),
			       c->data + (lo - key * H2_BLOCK_SIZE), hi - lo);
		else
			memset(rd->buf + (lo - rd->off), 0, hi - lo);
		return 0;
	}
	r = bref_sane(rd->v, b, key);
	if (r < 0)
		return r;
	if (hi - lo == H2_BLOCK_SIZE) {
		if (rd->run_n &&
		    (rd->run_n == RUN_MAX ||
		     rd->run_dev + (uint64_t)rd->run_n * H2_BLOCK_SIZE !=
			     H2_BREF_OFFSET(b))) {
			r = rd_flush_run(rd);
			if (r < 0)
				return r;
		}
		if (!rd->run_n) {
			rd->run_key = key;
			rd->run_dev = H2_BREF_OFFSET(b);
		}
		rd->run_check[rd->run_n++] = b->check;
		return 0;
	}
	/* A partially requested leaf: read it whole, copy the part. */
	{
		uint8_t tmp[H2_BLOCK_SIZE];

		r = rd_flush_run(rd);
		if (r < 0)
			return r;
		r = rd_pread(rd, tmp, H2_BLOCK_SIZE, H2_BREF_OFFSET(b));
		if (r == -EAGAIN && rd->cached)
			return r;
		if (r < 0)
			return h2_err(r, "volume %s: device read failed",
				      rd->v->full);
		if (h2_check64(tmp, H2_BLOCK_SIZE) != b->check)
			return verify_fail(rd->v, key, H2_BREF_OFFSET(b));
		memcpy(rd->buf + (lo - rd->off),
		       tmp + (lo - key * H2_BLOCK_SIZE), hi - lo);
	}
	return 0;
}

/* The read itself, v's lock held shared; drops the lock. */
static int rd_locked(struct rd *rd)
{
	struct h2_vol *v = rd->v;
	uint64_t first = leaf_of(rd->off), last = leaf_of(rd->off + rd->len - 1);
	int r;

	r = check_vol(v);
	if (r == 0)
		r = check_range(v, rd->off, rd->len);
	if (r == 0)
		r = rd->cached ? h2_tree_walk_cached(v->st, &v->tree, first,
						     last, rd_leaf, rd)
			       : h2_tree_walk(v->st, &v->tree, first, last,
					      rd_leaf, rd);
	if (r == 0)
		r = rd_flush_run(rd);
	pthread_rwlock_unlock(&v->lock);
	if (r == 0)
		__atomic_add_fetch(&v->st->client_read, rd->len,
				   __ATOMIC_RELAXED);
	return r;
}

int h2_vol_read(struct h2_vol *v, void *buf, uint64_t off, uint64_t len)
{
	struct rd rd = {.v = v, .buf = buf, .off = off, .len = len};

	if (len > H2_MAX_IO)
		return h2_err(-EFBIG, "read of %" PRIu64 " bytes exceeds the "
				      "%u MiB limit",
			      len, H2_MAX_IO >> 20);
	if (!buf)
		return h2_err(-EINVAL, "read: no buffer");
	read_lock(v);
	return rd_locked(&rd);
}

/*
 * A read that never waits: the volume lock is free for readers, every
 * indirect block on the way is in memory and the data is in the page
 * cache.  Else -EAGAIN (buf undefined), and the caller reads with
 * h2_vol_read on a thread that may wait.  Errors other than -EAGAIN are
 * real (range, checksum), as h2_vol_read would report them.
 */
int h2_vol_read_cached(struct h2_vol *v, void *buf, uint64_t off,
		       uint64_t len)
{
	struct rd rd = {.v = v, .buf = buf, .off = off, .len = len,
			.cached = true};

	if (len > H2_MAX_IO || !buf)
		return -EAGAIN; /* h2_vol_read explains */
	if (pthread_rwlock_tryrdlock(&v->lock) != 0)
		return -EAGAIN;
	if (v->root_err && v->root_err != -EBADMSG) {
		/* h2_vol_read tries the root again. */
		pthread_rwlock_unlock(&v->lock);
		return -EAGAIN;
	}
	return rd_locked(&rd);
}

/* ---------------------------------------------------------------------- */
/* Block status.                                                          */

/* Extents found so far: n of cap (grown to at most STATUS_MAX). */
struct bs_ext {
	uint64_t off, len;
	bool hole;
};

struct bs {
	uint64_t off, end;
	struct bs_ext *ext;
	unsigned n, cap;
	bool full;
};

static int bs_leaf(void *arg, uint64_t key, uint64_t count,
		   struct h2_chain *c, const struct h2_blockref *b)
{
	struct bs *s = arg;
	bool hole = !c && b->type == H2_BREF_EMPTY;
	uint64_t lo = key * H2_BLOCK_SIZE, hi = (key + count) * H2_BLOCK_SIZE;

	if (lo < s->off)
		lo = s->off;
	if (hi > s->end)
		hi = s->end;
	if (s->n && s->ext[s->n - 1].hole == hole &&
	    s->ext[s->n - 1].off + s->ext[s->n - 1].len == lo) {
		s->ext[s->n - 1].len += hi - lo;
		return 0;
	}
	if (s->n == STATUS_MAX) {
		s->full = true;
		return 1; /* stop: the caller asks again for the rest */
	}
	if (s->n == s->cap) {
		/* Most answers are a few extents: start small. */
		unsigned cap = s->cap ? 2 * s->cap : 16;
		struct bs_ext *p;

		if (cap > STATUS_MAX)
			cap = STATUS_MAX;
		p = realloc(s->ext, cap * sizeof(*p));
		if (!p)
			return h2_err(-ENOMEM, "out of memory");
		s->ext = p;
		s->cap = cap;
	}
	s->ext[s->n++] = (struct bs_ext){lo, hi - lo, hole};
	return 0;
}

int h2_vol_block_status(struct h2_vol *v, uint64_t off, uint64_t len,
		    h2_extent_cb cb, void *arg)
{
	struct bs bs = {.off = off, .end = off + len}, *s = &bs;
	int r;

	read_lock(v);
	r = check_vol(v);
	if (r == 0)
		r = check_range(v, off, len);
	if (r == 0)
		r = h2_tree_walk(v->st, &v->tree, leaf_of(off),
				 leaf_of(off + len - 1), bs_leaf, s);
	pthread_rwlock_unlock(&v->lock);
	if (r == 1 && s->full)
		r = 0;
	for (unsigned i = 0; r == 0 && i < s->n; i++)
		r = cb(arg, s->ext[i].off, s->ext[i].len, s->ext[i].hole);
	free(s->ext);
	return r;
}

/* ---------------------------------------------------------------------- */
/* Transactions.                                                          */

/* Contents of a leaf before the transaction, for partial overwrites. */
struct prep {
	uint64_t key;
	uint8_t *data;
};

struct txn {
	struct h2_vol *v;
	const struct h2_op *ops;
	size_t n;
	uint64_t new_size; /* resize: 0 = none */
	uint8_t **bufs;	   /* preallocated leaf buffers */
	size_t nbufs, used;
	struct prep *prep;
	size_t nprep, capprep;
};

static bool op_writes_data(const struct h2_op *op)
{
	return op->type == H2_OP_WRITE ||
	       (op->type == H2_OP_ZERO && (op->flags & H2_IO_NO_HOLE));
}

/* Whole leaves inside [off, off+len): [*a, *b], false if none. */
static bool whole_leaves(uint64_t off, uint64_t len, uint64_t *a, uint64_t *b)
{
	uint64_t first = (off + H2_BLOCK_SIZE - 1) / H2_BLOCK_SIZE;
	uint64_t end = (off + len) / H2_BLOCK_SIZE; /* exclusive */

	if (first >= end)
		return false;
	*a = first;
	*b = end - 1;
	return true;
}

/* Leaves the op touches only partly (0, 1 or 2 of them). */
static unsigned partial_leaves(const struct h2_op *op, uint64_t keys[2])
{
	uint64_t first = leaf_of(op->off), last = leaf_of(op->off + op->len - 1);
	unsigned n = 0;

	if (op->off % H2_BLOCK_SIZE ||
	    (first == last && (op->off + op->len) % H2_BLOCK_SIZE))
		keys[n++] = first;
	if (last != first && (op->off + op->len) % H2_BLOCK_SIZE)
		keys[n++] = last;
	return n;
}

static void txn_free(struct txn *t)
{
	for (size_t i = t->used; i < t->nbufs; i++)
		free(t->bufs[i]);
	free(t->bufs);
	for (size_t i = 0; i < t->nprep; i++)
		free(t->prep[i].data);
	free(t->prep);
}

/* Allocate the leaf buffers install will need (before any lock). */
static int txn_alloc_bufs(struct txn *t)
{
	size_t n = 0;

	for (size_t i = 0; i < t->n; i++) {
		const struct h2_op *op = &t->ops[i];

		if (op_writes_data(op))
			n += leaf_of(op->off + op->len - 1) - leaf_of(op->off) + 1;
		else
			n += 2;
	}
	t->bufs = calloc(n ? n : 1, sizeof(*t->bufs));
	if (!t->bufs)
		return h2_err(-ENOMEM, "out of memory for a %zu-block write",
			      n);
	for (size_t i = 0; i < n; i++) {
		t->bufs[i] = malloc(H2_BLOCK_SIZE);
		if (!t->bufs[i]) {
			t->nbufs = i;
			return h2_err(-ENOMEM, "out of memory for a %zu-block "
					       "write",
				      n);
		}
	}
	t->nbufs = n;
	return 0;
}

static uint8_t *txn_buf(struct txn *t)
{
	return t->used < t->nbufs ? t->bufs[t->used] : NULL;
}

static struct prep *prep_find(struct txn *t, uint64_t key)
{
	for (size_t i = 0; i < t->nprep; i++)
		if (t->prep[i].key == key)
			return &t->prep[i];
	return NULL;
}

struct cap {
	struct h2_vol *v;
	uint8_t *data;
	bool present;
};

static int cap_leaf(void *arg, uint64_t key, uint64_t count,
		    struct h2_chain *c, const struct h2_blockref *b)
{
	struct cap *cp = arg;
	char what[320];
	int r;

	(void)count;
	if (c) {
		memcpy(cp->data, c->data, H2_BLOCK_SIZE);
		cp->present = true;
		return 0;
	}
	if (b->type == H2_BREF_EMPTY) {
		memset(cp->data, 0, H2_BLOCK_SIZE);
		return 0;
	}
	cp->present = true;
	snprintf(what, sizeof(what), "volume %s offset %" PRIu64,
		 cp->v->full, key * H2_BLOCK_SIZE);
	r = h2_chain_read_block(cp->v->st, b, cp->data, what);
	return r;
}

/* Snapshot a partially overwritten leaf (prepare phase). */
static int txn_capture(struct txn *t, uint64_t key)
{
	struct h2_vol *v = t->v;
	struct cap cp = {.v = v};
	int r;

	if (prep_find(t, key))
		return 0;
	r = h2_tree_prepare(v->st, &v->tree, key, key, false);
	if (r < 0)
		return r;
	cp.data = malloc(H2_BLOCK_SIZE);
	if (!cp.data)
		return h2_err(-ENOMEM, "out of memory");
	r = h2_tree_walk(v->st, &v->tree, key, key, cap_leaf, &cp);
	if (r < 0) {
		free(cp.data);
		return r;
	}
	if (t->nprep == t->capprep) {
		size_t cap = t->capprep ? t->capprep * 2 : 4;
		struct prep *np = realloc(t->prep, cap * sizeof(*np));

		if (!np) {
			free(cp.data);
			return h2_err(-ENOMEM, "out of memory");
		}
		t->prep = np;
		t->capprep = cap;
	}
	t->prep[t->nprep].key = key;
	t->prep[t->nprep].data = cp.data;
	t->nprep++;
	return 0;
}

/*
 * What installing the transaction may create, whatever the tree holds:
 * indirect chains (nodes) and leaves, one block of space each.
 */
static void txn_bound(struct txn *t, uint8_t levels, uint64_t *nodes,
		      uint64_t *leaves)
{
	uint64_t a, b, keys[2];

	*nodes = *leaves = 0;
	for (size_t i = 0; i < t->n; i++) {
		const struct h2_op *op = &t->ops[i];
		unsigned np = partial_leaves(op, keys);

		if (op_writes_data(op)) {
			a = leaf_of(op->off);
			b = leaf_of(op->off + op->len - 1);
			*nodes += h2_tree_reserve_nodes(levels, a, b, true);
			*leaves += b - a + 1;
			continue;
		}
		if (whole_leaves(op->off, op->len, &a, &b))
			*nodes += h2_tree_reserve_nodes(levels, a, b, false);
		for (unsigned k = 0; k < np; k++) {
			*nodes += h2_tree_reserve_nodes(levels, keys[k],
							keys[k], true);
			*leaves += 1;
		}
	}
	if (t->new_size)
		*nodes += H2_MAX_LEVELS; /* h2_tree_grow */
}

/*
 * Free-list entries installing the transaction may add (prepare phase,
 * volume lock held).  A chain created frees at most the block or chain
 * it replaces, so nodes + leaves cover writes and the copies removals
 * make; a removal also frees what its range holds (h2_tree_remove_frees,
 * on the tree as it is).  The tree changes as the ops are installed: a
 * chain an earlier op copied is a chain of this epoch for a later
 * removal, which takes it apart slot by slot, up to H2_FANOUT entries
 * where the count saw one.
 */
static uint64_t txn_frees(struct txn *t, uint64_t epoch, uint64_t nodes,
			  uint64_t leaves)
{
	struct h2_tree *tree = &t->v->tree;
	uint64_t n = nodes + leaves, earlier = 0, a, b, keys[2];
	uint8_t levels = tree->levels;

	for (size_t i = 0; i < t->n; i++) {
		const struct h2_op *op = &t->ops[i];
		unsigned np = partial_leaves(op, keys);

		if (op_writes_data(op)) {
			earlier += h2_tree_reserve_nodes(
			    levels, leaf_of(op->off),
			    leaf_of(op->off + op->len - 1), true);
			continue;
		}
		if (whole_leaves(op->off, op->len, &a, &b)) {
			n += h2_tree_remove_frees(tree, epoch, a, b) +
			     H2_FANOUT * earlier;
			earlier += h2_tree_reserve_nodes(levels, a, b, false);
		}
		for (unsigned k = 0; k < np; k++)
			earlier += h2_tree_reserve_nodes(levels, keys[k],
							 keys[k], true);
	}
	return n;
}

static bool txn_is_trim(struct txn *t)
{
	for (size_t i = 0; i < t->n; i++)
		if (op_writes_data(&t->ops[i]))
			return false;
	return true;
}

/* Prepare phase, under the volume's write lock. */
static int txn_prepare(struct txn *t)
{
	struct h2_vol *v = t->v;
	uint64_t a, b, keys[2];
	int r = 0;

	for (size_t i = 0; i < t->n && r == 0; i++) {
		const struct h2_op *op = &t->ops[i];
		unsigned np = partial_leaves(op, keys);

		if (op_writes_data(op))
			r = h2_tree_prepare(v->st, &v->tree, leaf_of(op->off),
					    leaf_of(op->off + op->len - 1),
					    false);
		else if (whole_leaves(op->off, op->len, &a, &b))
			r = h2_tree_prepare(v->st, &v->tree, a, b, true);
		for (unsigned k = 0; k < np && r == 0; k++)
			r = txn_capture(t, keys[k]);
	}
	return r;
}

/* Where a write's bytes come from: one buffer, pieces, or zeros. */
struct src {
	const uint8_t *buf; /* the next byte, if not in pieces */
	const struct iovec *iov;
	size_t at; /* bytes of iov[0] already taken */
};

static void src_of(struct src *s, const struct h2_op *op)
{
	memset(s, 0, sizeof(*s));
	if (op->type != H2_OP_WRITE)
		return; /* zeros */
	s->buf = op->buf;
	s->iov = op->iov;
}

/* Copy the next n bytes of s to dst. */
static void src_copy(struct src *s, uint8_t *dst, size_t n)
{
	if (!s->iov) {
		if (s->buf) {
			memcpy(dst, s->buf, n);
			s->buf += n;
		} else {
			memset(dst, 0, n);
		}
		return;
	}
	while (n) {
		size_t k = s->iov->iov_len - s->at;

		if (k == 0) { /* validated: the pieces hold len bytes */
			s->iov++;
			s->at = 0;
			continue;
		}
		if (k > n)
			k = n;
		memcpy(dst, (const uint8_t *)s->iov->iov_base + s->at, k);
		s->at += k;
		dst += k;
		n -= k;
	}
}

/* Write s's bytes over [off, off+len) of the tree (install). */
static void install_bytes(struct txn *t, struct h2_txctx *tx, uint64_t off,
			  uint64_t len, struct src *s)
{
	struct h2_tree *tree = &t->v->tree;
	uint64_t pos = off, end = off + len;

	while (pos < end) {
		uint64_t key = leaf_of(pos);
		uint64_t bo = pos % H2_BLOCK_SIZE;
		uint64_t n = H2_BLOCK_SIZE - bo;
		struct prep *pp = NULL;
		struct h2_chain *c;
		bool used;

		if (n > end - pos)
			n = end - pos;
		if (n != H2_BLOCK_SIZE)
			pp = prep_find(t, key);
		c = h2_tree_modify_leaf(tx, tree, key, pp ? pp->data : NULL,
					txn_buf(t), &used);
		if (used)
			t->used++;
		src_copy(s, c->data + bo, n);
		c->check = h2_check64(c->data, H2_BLOCK_SIZE);
		c->check_set = true;
		pos += n;
	}
}

/* Zero the partial leaf at key if it holds data (install). */
static void install_zero_edge(struct txn *t, struct h2_txctx *tx,
			      const struct h2_op *op, uint64_t key)
{
	uint64_t lo = key * H2_BLOCK_SIZE, hi = lo + H2_BLOCK_SIZE;
	struct src zeros = {0};

	if (lo < op->off)
		lo = op->off;
	if (hi > op->off + op->len)
		hi = op->off + op->len;
	/* Zeroing part of a hole changes nothing; skip the block. */
	if (!h2_tree_leaf_present(&t->v->tree, key))
		return;
	install_bytes(t, tx, lo, hi - lo, &zeros);
}

/* Install phase: cannot fail. */
static void txn_install(struct txn *t, struct h2_txctx *tx)
{
	struct h2_vol *v = t->v;
	uint64_t a, b, keys[2];

	for (size_t i = 0; i < t->n; i++) {
		const struct h2_op *op = &t->ops[i];

		if (op_writes_data(op)) {
			struct src s;

			src_of(&s, op);
			install_bytes(t, tx, op->off, op->len, &s);
			continue;
		}
		if (whole_leaves(op->off, op->len, &a, &b))
			h2_tree_remove_range(tx, &v->tree, a, b);
		for (unsigned k = 0, np = partial_leaves(op, keys); k < np;
		     k++)
			install_zero_edge(t, tx, op, keys[k]);
	}
	if (t->new_size) {
		uint8_t levels = h2_levels_for((t->new_size + H2_BLOCK_SIZE -
						1) / H2_BLOCK_SIZE);

		h2_tree_grow(tx, &v->tree, levels);
		pthread_mutex_lock(&v->st->dir_lock);
		v->rec.size = t->new_size;
		v->rec.levels = v->tree.levels;
		pthread_mutex_unlock(&v->st->dir_lock);
	}
}

/* Validate ops that do not depend on the volume's state. */
static int txn_validate(const struct h2_op *ops, size_t n)
{
	uint64_t data = 0;

	if (!ops || n == 0)
		return h2_err(-EINVAL, "empty transaction");
	if (n > H2_MAX_TXN_OPS)
		return h2_err(-EFBIG, "transaction of %zu operations exceeds "
				      "the limit of %u",
			      n, H2_MAX_TXN_OPS);
	for (size_t i = 0; i < n; i++) {
		const struct h2_op *op = &ops[i];

		if (op->type != H2_OP_WRITE && op->type != H2_OP_TRIM &&
		    op->type != H2_OP_ZERO)
			return h2_err(-EINVAL, "operation %zu: unknown type %d",
				      i, (int)op->type);
		if (op->flags & ~(unsigned)H2_IO_NO_HOLE)
			return h2_err(-EINVAL, "operation %zu: unknown flags "
					       "0x%x",
				      i, op->flags);
		if (op->len == 0)
			return h2_err(-EINVAL, "operation %zu: zero length", i);
		if (op->off > UINT64_MAX - op->len)
			return h2_err(-ERANGE, "operation %zu: offset + "
					       "length overflows",
				      i);
		if (op->type == H2_OP_WRITE && !op->buf && !op->iov)
			return h2_err(-EINVAL, "operation %zu: write without "
					       "data",
				      i);
		if (op->type == H2_OP_WRITE && op->iov) {
			uint64_t sum = 0;

			if (op->buf || op->iovcnt <= 0)
				return h2_err(-EINVAL, "operation %zu: give "
						       "the data as a buffer "
						       "or as pieces",
					      i);
			for (int k = 0; k < op->iovcnt; k++) {
				if (!op->iov[k].iov_base && op->iov[k].iov_len)
					return h2_err(-EINVAL, "operation "
							       "%zu: piece "
							       "%d has no "
							       "data",
						      i, k);
				sum += op->iov[k].iov_len;
			}
			if (sum != op->len)
				return h2_err(-EINVAL, "operation %zu: its "
						       "pieces hold %" PRIu64
						       " bytes, not %" PRIu64,
					      i, sum, op->len);
		}
		if (op_writes_data(op)) {
			if (op->len > H2_MAX_IO)
				return h2_err(-EFBIG,
					      "operation %zu: %" PRIu64
					      " bytes exceeds the %u MiB "
					      "limit",
					      i, op->len, H2_MAX_IO >> 20);
			data += op->len;
		}
	}
	if (data > H2_MAX_TXN_BYTES)
		return h2_err(-EFBIG, "transaction carries %" PRIu64 " bytes, "
				      "more than the %u MiB limit",
			      data, H2_MAX_TXN_BYTES >> 20);
	return 0;
}

/* Run a prepared-from-scratch transaction; see the file comment. */
static int txn_run(struct txn *t, unsigned flags, uint64_t *epoch_out)
{
	struct h2_vol *v = t->v;
	struct h2_store *st = v->st;
	struct h2_freelist frees = {0};
	struct h2_chain_rsv rsv = {0};
	struct h2_txctx tx = {0};
	uint64_t epoch = 0, bound = 0, nodes, leaves, nfrees = 0;
	bool retried = false;
	int r;

again:
	r = h2_epoch_begin(st, &epoch);
	if (r < 0)
		return r;
	pthread_rwlock_wrlock(&v->lock);
	h2_vol_root_retry(v);
	r = check_vol(v);
	if (r == 0 && v->snap)
		r = h2_err(-EROFS, "%s is a snapshot: it is read-only",
			   v->full);
	for (size_t i = 0; i < t->n && r == 0; i++)
		r = t->new_size ? check_tail(v, &t->ops[i])
				: check_range(v, t->ops[i].off, t->ops[i].len);
	if (r < 0)
		goto unlock;
	txn_bound(t, v->tree.levels, &nodes, &leaves);
	bound = nodes + leaves;
	r = h2_space_reserve(st, bound, txn_is_trim(t));
	if (r == -ENOSPC) {
		pthread_rwlock_unlock(&v->lock);
		h2_epoch_end(st, false);
		/* Space freed by earlier epochs returns once they are
		 * flushed: flush once and try again before giving up. */
		if (!retried) {
			retried = true;
			h2_store_sync(st, NULL);
			goto again;
		}
		return h2_err(-ENOSPC, "volume %s: no space left in the "
				       "store",
			      v->full);
	}
	if (r < 0)
		goto unlock;
	r = txn_prepare(t);
	/* The last allocations: what install will take (it cannot fail). */
	if (r == 0) {
		nfrees = txn_frees(t, epoch, nodes, leaves);
		r = h2_chain_rsv_fill(st, &rsv, nodes, leaves);
	}
	if (r == 0) {
		r = h2_freelist_reserve(&frees, nfrees);
		if (r == 0)
			r = h2_frees_reserve(st, nfrees);
		if (r < 0) {
			h2_chain_rsv_release(st, &rsv);
			h2_freelist_clear(&frees);
		}
	}
	if (r < 0) {
		h2_space_unreserve(st, bound);
		goto unlock;
	}
	tx.st = st;
	tx.epoch = epoch;
	tx.vol_id = v->rec.id;
	tx.origin_tid = v->rec.origin_tid;
	tx.frees = &frees;
	tx.rsv = &rsv;
	tx.reserved = true;
	txn_install(t, &tx);
	h2_chain_rsv_release(st, &rsv);
	h2_space_unreserve(st, bound - (tx.created < bound ? tx.created
							   : bound));
	h2_frees_commit(st, &frees, nfrees);
unlock:
	pthread_rwlock_unlock(&v->lock);
	h2_epoch_end(st, r == 0);
	if (r < 0)
		return r;
	if (epoch_out)
		*epoch_out = epoch;
	if (flags & H2_IO_FUA)
		r = h2_flush_wait(st, epoch, NULL);
	return r;
}

int h2_vol_txn(struct h2_vol *v, const struct h2_op *ops, size_t n,
	   unsigned flags, uint64_t *epoch)
{
	struct txn t = {.v = v, .ops = ops, .n = n};
	uint64_t bytes = 0;
	int r;

	if (flags & ~(unsigned)H2_IO_FUA)
		return h2_err(-EINVAL, "unknown transaction flags 0x%x", flags);
	r = txn_validate(ops, n);
	if (r < 0)
		return r;
	if (v->st->read_only)
		return h2_err(-EROFS, "the store is open read-only");
	r = txn_alloc_bufs(&t);
	if (r == 0)
		r = txn_run(&t, flags, epoch);
	txn_free(&t);
	for (size_t i = 0; r == 0 && i < n; i++)
		if (ops[i].type == H2_OP_WRITE)
			bytes += ops[i].len;
	if (bytes)
		__atomic_add_fetch(&v->st->client_written, bytes,
				   __ATOMIC_RELAXED);
	return r;
}

int h2_vol_write(struct h2_vol *v, const void *buf, uint64_t off, uint64_t len,
	     unsigned flags)
{
	struct h2_op op = {.type = H2_OP_WRITE, .off = off, .len = len,
			   .buf = buf};

	return h2_vol_txn(v, &op, 1, flags & H2_IO_FUA, NULL);
}

int h2_vol_trim(struct h2_vol *v, uint64_t off, uint64_t len, unsigned flags)
{
	struct h2_op op = {.type = H2_OP_TRIM, .off = off, .len = len};

	return h2_vol_txn(v, &op, 1, flags & H2_IO_FUA, NULL);
}

int h2_vol_write_zeroes(struct h2_vol *v, uint64_t off, uint64_t len,
		    unsigned flags)
{
	struct h2_op op = {.type = H2_OP_ZERO, .off = off, .len = len,
			   .flags = flags & H2_IO_NO_HOLE};

	return h2_vol_txn(v, &op, 1, flags & H2_IO_FUA, NULL);
}

int h2_vol_resize(struct h2_store *st, const char *name, uint64_t size)
{
	struct txn t = {0};
	struct h2_op op = {.type = H2_OP_TRIM};
	struct h2_vol *v;
	uint64_t old;
	int r;

	if (size == 0 || size > H2_VOLUME_MAX_SIZE)
		return h2_err(size ? -EFBIG : -EINVAL,
			      "volume size %" PRIu64 " is out of range "
			      "(1 byte to %llu TiB)",
			      size, H2_VOLUME_MAX_SIZE >> 40);
	r = h2_vol_open(st, name, &v);
	if (r < 0)
		return r;
	old = h2_vol_size(v);
	t.v = v;
	t.new_size = size;
	t.ops = &op;
	if (size < old) {
		/* Shrinking discards the tail, so growing back later reads
		 * zeros there. */
		op.off = size;
		op.len = ((old + H2_BLOCK_SIZE - 1) &
			  ~(uint64_t)(H2_BLOCK_SIZE - 1)) -
			 size;
		t.n = 1;
	}
	r = txn_alloc_bufs(&t);
	if (r == 0)
		r = txn_run(&t, 0, NULL);
	txn_free(&t);
	h2_vol_close(v);
	return r;
}
