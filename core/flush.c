/*
 * flush.c - flush transactions, the flusher thread, and syncs.
 *
 * One flush of epoch e:
 *
 *   1. freeze    wait for the transactions of e to finish (new ones wait
 *                meanwhile), capture every volume's root and record, take
 *                e's free list, open epoch e+1 and let the waiters go;
 *   2. write     every MODIFIED chain reachable from the frozen roots,
 *                bottom-up, each into a newly allocated block (children
 *                before parents, so a parent's blockrefs carry its
 *                children's new offsets and check codes);
 *   3. frees     settle e's frees: what each volume and snapshot holds
 *                now (so the directory records carry it) and which
 *                blocks nobody holds any more;
 *   4. directory rewrite the directory leaves whose records changed,
 *                then clear the freed blocks in the freemap (after all
 *                allocations of this flush: the previous image still
 *                uses them; they become reusable next flush);
 *   5. freemap   write changed freemap pages to their spare slots;
 *   6. barrier   device flush;
 *   7. header    write header copy e % copies, then device flush again.
 *
 * Only after step 7 is epoch e durable and are its syncs answered.
 * Transactions of e+1 run during 2-7: they copy any chain older than
 * e+1 instead of changing it, so nothing of theirs reaches this image.
 *
 * Flushes never overlap: run_lock serializes them.
 *
 * Memory: a flush cannot stop half-way for want of memory without
 * failing the store (which then refuses writes until reopened), so its
 * allocations wait for memory instead (h2_xmalloc and friends, util.h):
 * the flush and the syncs waiting for it are delayed, nothing is lost or
 * corrupted, and transactions go on failing with -ENOMEM meanwhile.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define WQ_MAX 256 /* blocks per coalesced device write */

/* A run of blocks contiguous on the device, written with one pwritev. */
struct wq {
	uint64_t off;
	int n;
	struct iovec iov[WQ_MAX];
	struct h2_chain *chain[WQ_MAX];
};

/* A frozen volume or snapshot: what the flush writes for it. */
struct frozen {
	struct h2_vol *vol;
	struct h2_volrec rec;	/* as of the freeze; root filled in */
	struct h2_chain *root;	/* referenced, or NULL */
	bool capture;		/* a snapshot taking its volume's image */
	/* Space in blocks (struct h2_volrec), updated as the flush goes. */
	int64_t used, excl, snapb;
};

/* A block this flush freed, with its volume for messages. */
struct freed_blk {
	uint64_t blk;
	uint64_t vol_id;
};

struct flushctx {
	struct h2_store *st;
	uint64_t epoch;
	struct wq wq;
	struct frozen *fz;
	uint32_t nfz;
	uint32_t nslots;	/* st->nslots at the freeze */
	struct h2_freelist frees;
	struct frozen **snaps;	/* durable snapshots by (volume, tid) */
	uint32_t nsnaps;
	uint64_t *gone;		/* snapshots whose deletion was settled */
	size_t ngone;
	struct h2_chain **l1;	/* written level-1 chains, to evict from */
	size_t nl1, capl1;
	uint64_t allocated;	/* blocks this flush allocated */
	uint64_t freed;
	uint64_t double_frees;
	struct freed_blk *fblk; /* cleared in the freemap by release_frees() */
	size_t nfblk, capfblk;
	int err; /* settling frees failed: fail the flush */
};

static int wq_flush(struct flushctx *fc)
{
	struct wq *q = &fc->wq;
	int r = 0;

	int n = q->n;

	if (n)
		r = h2_dev_pwritev(fc->st->dev, q->iov, n, q->off);
	if (n && r == 0)
		h2_dev_writeback(fc->st->dev, q->off,
				 (uint64_t)n * H2_BLOCK_SIZE);
	for (int i = 0; i < n; i++)
		h2_chain_drop(q->chain[i]);
	q->n = 0;
	/* Blocks written here no longer count as dirty: writers held at
	 * the hard limit may go on (see h2_epoch_begin). */
	if (__atomic_load_n(&fc->st->hard_waiters, __ATOMIC_SEQ_CST)) {
		pthread_mutex_lock(&fc->st->txn_lock);
		pthread_cond_broadcast(&fc->st->txn_cv);
		pthread_mutex_unlock(&fc->st->txn_lock);
	}
	if (r < 0)
		return h2_err(r, "flush: writing %d blocks at device offset "
				 "%" PRIu64 " failed: %s",
			      n, q->off, strerror(-r));
	return 0;
}

/* Queue chain c for writing at device offset off. */
static int wq_add(struct flushctx *fc, struct h2_chain *c, uint64_t off)
{
	struct wq *q = &fc->wq;
	int r;

	if (q->n && (q->n == WQ_MAX ||
		     q->off + (uint64_t)q->n * H2_BLOCK_SIZE != off)) {
		r = wq_flush(fc);
		if (r < 0)
			return r;
	}
	if (!q->n)
		q->off = off;
	h2_chain_ref(c);
	q->iov[q->n].iov_base = c->data;
	q->iov[q->n].iov_len = H2_BLOCK_SIZE;
	q->chain[q->n] = c;
	q->n++;
	return 0;
}

/* Find the frozen volume with this id (fz is sorted by id). */
static struct frozen *fz_find(struct flushctx *fc, uint64_t id)
{
	uint32_t lo = 0, hi = fc->nfz;

	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;

		if (fc->fz[mid].rec.id == id)
			return &fc->fz[mid];
		if (fc->fz[mid].rec.id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static void account(struct flushctx *fc, uint64_t vol_id, int64_t blocks)
{
	struct frozen *f = vol_id ? fz_find(fc, vol_id) : NULL;

	if (f)
		f->used += blocks;
}

/*
 * Write modified chain c and its modified descendants, bottom-up.  c is
 * frozen: only this thread changes its flags, bref and slot blockrefs.
 */
static int write_chain(struct flushctx *fc, struct h2_chain *c)
{
	struct h2_store *st = fc->st;
	struct h2_blockref b = {0};
	uint64_t blk;
	int r;

	if (c->type == H2_BREF_INDIRECT) {
		bool data_children = false;

		for (unsigned i = 0; i < H2_FANOUT; i++) {
			struct h2_chain *ch;

			pthread_mutex_lock(&c->lock);
			ch = c->child[i];
			if (ch)
				h2_chain_ref(ch);
			pthread_mutex_unlock(&c->lock);
			if (!ch)
				continue;
			if (ch->flags & H2_CHAIN_MODIFIED)
				r = write_chain(fc, ch);
			else
				r = 0;
			if (ch->type == H2_BREF_DATA)
				data_children = true;
			h2_chain_drop(ch);
			if (r < 0)
				return r;
		}
		/* Every child now has a block: publish them in c's slots. */
		pthread_mutex_lock(&c->lock);
		for (unsigned i = 0; i < H2_FANOUT; i++) {
			struct h2_chain *ch = c->child[i];

			if (!ch)
				continue;
			if (!(ch->flags & H2_CHAIN_ONDISK)) {
				pthread_mutex_unlock(&c->lock);
				return h2_err(-EIO,
					      "internal error: child %u of "
					      "block at key %" PRIu64 " level "
					      "%u was not written",
					      i, c->key, c->level);
			}
			h2_bref_set_child_slot(c, i, &ch->bref);
		}
		b.blocks = 1;
		for (unsigned i = 0; i < H2_FANOUT; i++)
			b.blocks += ((struct h2_blockref *)c->data)[i].blocks;
		pthread_mutex_unlock(&c->lock);
		if (data_children && c->level == 1) {
			if (fc->nl1 == fc->capl1) {
				fc->capl1 = fc->capl1 ? fc->capl1 * 2 : 64;
				fc->l1 = h2_xrealloc(fc->l1, fc->capl1 *
								     sizeof(*fc->l1));
			}
			h2_chain_ref(c);
			fc->l1[fc->nl1++] = c;
		}
	}
	r = h2_fm_alloc(st, &blk);
	if (r < 0)
		return h2_err(r, "flush: allocating a block failed: %s",
			      h2_core_errmsg());
	fc->allocated++;
	b.type = c->type;
	b.level = c->level;
	b.keybits = (uint8_t)(H2_FANOUT_RADIX * c->level);
	b.key = c->key;
	b.data_off = blk * H2_BLOCK_SIZE | H2_BLOCK_RADIX;
	b.birth_tid = fc->epoch;
	if (c->check_set) {
		b.check = c->check;
#ifndef NDEBUG
		/* Debug builds (the sanitizer runs): prove it current. */
		if (b.check != h2_check64(c->data, H2_BLOCK_SIZE))
			return h2_err(-EIO, "internal error: the check code "
					    "of the data at key %" PRIu64
					    " is stale",
				      c->key);
#endif
	} else {
		b.check = h2_check64(c->data, H2_BLOCK_SIZE);
	}
	if (!b.blocks)
		b.blocks = 1;
	pthread_mutex_lock(&c->lock);
	c->bref = b;
	c->flags = H2_CHAIN_ONDISK;
	pthread_mutex_unlock(&c->lock);
	/* SEQ_CST pairs with h2_epoch_begin's hard_waiters/dirty check. */
	__atomic_sub_fetch(&st->dirty_chains, 1, __ATOMIC_SEQ_CST);
	account(fc, c->vol_id, 1);
	return wq_add(fc, c, blk * H2_BLOCK_SIZE);
}

/*
 * Drop written data chains from the frozen level-1 chains that hold them:
 * their blocks are on the device now, and the slot blockrefs say where.
 * A live copy of the parent keeps its own reference, so the live tree
 * never loses a chain it still uses.  If writing failed (written false),
 * some of those blocks may hold anything: the chains stay, so the failed
 * store still reads what it acknowledged.
 */
static void evict_written(struct flushctx *fc, bool written)
{
	for (size_t k = 0; k < fc->nl1; k++) {
		struct h2_chain *p = fc->l1[k];
		struct h2_chain *gone[H2_FANOUT];
		unsigned n = 0;

		if (!written) {
			h2_chain_drop(p);
			continue;
		}
		pthread_mutex_lock(&p->lock);
		for (unsigned i = 0; i < H2_FANOUT; i++) {
			struct h2_chain *ch = p->child[i];

			if (ch && ch->type == H2_BREF_DATA &&
			    (ch->flags & H2_CHAIN_ONDISK)) {
				gone[n++] = ch;
				p->child[i] = NULL;
			}
		}
		pthread_mutex_unlock(&p->lock);
		for (unsigned i = 0; i < n; i++)
			h2_chain_drop(gone[i]);
		h2_chain_drop(p);
	}
	free(fc->l1);
	fc->l1 = NULL;
	fc->nl1 = fc->capl1 = 0;
}

/*
 * Free one block: counted now, cleared in the freemap by release_frees()
 * once this flush has allocated its last block.
 */
static void free_block(struct flushctx *fc, uint64_t vol_id,
		       const struct h2_blockref *b)
{
	uint64_t blk = H2_BREF_OFFSET(b) / H2_BLOCK_SIZE;

	if (h2_block_reserved(fc->st, blk)) {
		fc->double_frees++;
		return;
	}
	if (fc->nfblk == fc->capfblk) {
		fc->capfblk = fc->capfblk ? fc->capfblk * 2 : 256;
		fc->fblk =
		    h2_xrealloc(fc->fblk, fc->capfblk * sizeof(*fc->fblk));
	}
	fc->fblk[fc->nfblk].blk = blk;
	fc->fblk[fc->nfblk].vol_id = vol_id;
	fc->nfblk++;
	fc->freed++;
}

/*
 * Clear the freed blocks in the freemap (end of step 4).  Not before the
 * directory is written: until this flush's header is durable the image
 * of the previous header still uses these blocks, and the directory's
 * new blocks, allocated after the frees were settled, must not land on
 * them.  A freemap page that cannot be loaded fails the flush (the
 * blocks would leak otherwise).
 */
static int release_frees(struct flushctx *fc)
{
	int err = 0;

	for (size_t i = 0; i < fc->nfblk && !err; i++) {
		uint64_t blk = fc->fblk[i].blk;
		int r = h2_fm_set(fc->st, blk, false);

		if (r == -EALREADY) {
			fprintf(stderr,
				"h2: flush %" PRIu64 ": block %" PRIu64
				" freed twice (volume id %" PRIu64
				"); run h2d check\n",
				fc->epoch, blk, fc->fblk[i].vol_id);
			fc->double_frees++;
			fc->freed--;
		} else if (r < 0) {
			err = h2_err(r,
				     "flush %" PRIu64 ": cannot free block "
				     "%" PRIu64 ": %s",
				     fc->epoch, blk, h2_core_errmsg());
		}
	}
	free(fc->fblk);
	fc->fblk = NULL;
	fc->nfblk = fc->capfblk = 0;
	return err;
}

/*
 * The 64 slots of indirect block b, read into buf, or false.  A damaged
 * block (checksum) will never read: what lies below it leaks until
 * repaired, with a message, and the flush goes on.  Any other failure
 * (the device did not read it this time) fails the flush through
 * fc->err, which leaves the previous image as it was: the frees are
 * settled again when the deletion is retried.
 */
static bool read_slots(struct flushctx *fc, const struct h2_blockref *b,
		       struct h2_blockref *buf)
{
	int r = h2_chain_read_block(fc->st, b, buf, "flush: freed subtree");

	if (r == 0)
		return true;
	if (r == -EBADMSG) {
		fprintf(stderr,
			"h2: flush %" PRIu64 ": cannot read an "
			"indirect block (%s); the blocks below it "
			"leak until repaired\n",
			fc->epoch, h2_core_errmsg());
	} else if (!fc->err) {
		fc->err = h2_err(r, "flush %" PRIu64 ": settling frees: %s",
				 fc->epoch, h2_core_errmsg());
	}
	return false;
}

/* ---------------------------------------------------------------------- */
/* Shared blocks.                                                          */
/*
 * Trees of one volume's lineage (the volume, its snapshots) share
 * subtrees.  Birth tids say who holds what without reference counts: a
 * block the volume stops referencing (a kill) was in snapshot S iff it
 * was born at or before S's tid, and then it is in the newest snapshot L
 * too.  So a kill born after L (and after the clone origin, which holds
 * everything born before it) is freed, anything older stays with L.
 *
 * Deleting snapshot S (P before it, N after it: the next snapshot or the
 * volume) frees the blocks of S that N lacks and that were born after P,
 * found by walking S and N side by side and skipping equal blockrefs
 * (shared subtrees) and blocks born at or before P: time in proportion to
 * what is freed.
 *
 * Order makes this exact: a flush first settles its deleted snapshots
 * against the lineage as the previous flush left it (volume roots from
 * dir_disk), then the kills of its epoch against the snapshots that
 * remain.  Each step moves the set of referenced blocks from one exact
 * state to the next.
 */

/* What a walk does with the blocks it visits. */
struct sharew {
	struct flushctx *fc;
	uint64_t vol_id;
	uint64_t lo;	     /* do not visit blocks born at or before */
	uint64_t free_above; /* free those born after (UINT64_MAX: none) */
	uint64_t cnt_lo, cnt_hi; /* count those born in (cnt_lo, cnt_hi] */
	uint64_t counted;
};

static bool bref_is_empty(const struct h2_blockref *b)
{
	return !b || b->type == H2_BREF_EMPTY;
}

static void visit(struct sharew *w, const struct h2_blockref *a)
{
	if (a->birth_tid > w->cnt_lo && a->birth_tid <= w->cnt_hi)
		w->counted++;
	if (a->birth_tid > w->free_above)
		free_block(w->fc, w->vol_id, a);
}

/*
 * Visit the blocks of subtree a that subtree b (same keys, possibly
 * taller: its slot-0 path covers a's range) does not reference.
 */
static void diff(struct sharew *w, const struct h2_blockref *a,
		 const struct h2_blockref *b)
{
	struct h2_blockref *as, *bs = NULL, bb;
	bool b_lower = false, ok = true;

	if (bref_is_empty(a) || a->birth_tid <= w->lo || w->fc->err)
		return;
	if (!bref_is_empty(b) && b->level > a->level) {
		struct h2_blockref *tmp = h2_xmalloc(H2_BLOCK_SIZE);

		bb = *b;
		while (ok && bb.type == H2_BREF_INDIRECT &&
		       bb.level > a->level) {
			ok = read_slots(w->fc, &bb, tmp);
			if (ok)
				bb = tmp[0];
		}
		free(tmp);
		/* Unknown what b holds of a's keys: free nothing. */
		if (!ok)
			return;
		if (bb.level != a->level)
			memset(&bb, 0, sizeof(bb));
		b = &bb;
	}
	if (!bref_is_empty(b) && b->level == a->level &&
	    H2_BREF_OFFSET(a) == H2_BREF_OFFSET(b))
		return; /* shared */
	visit(w, a);
	if (a->type != H2_BREF_INDIRECT)
		return;
	as = h2_xmalloc(2 * H2_BLOCK_SIZE);
	if (!read_slots(w->fc, a, as)) {
		free(as);
		return;
	}
	if (!bref_is_empty(b) && b->type == H2_BREF_INDIRECT) {
		if (b->level == a->level) {
			bs = as + H2_FANOUT;
			if (!read_slots(w->fc, b, bs)) {
				/* As above: nothing below a is freed. */
				free(as);
				return;
			}
		} else if (b->level < a->level) {
			b_lower = true;
		}
	}
	for (unsigned i = 0; i < H2_FANOUT; i++)
		diff(w, &as[i], bs ? &bs[i] : (b_lower && i == 0) ? b : NULL);
	free(as);
}

/* Snapshots of volume vol_id in fz, oldest first: [*first, *end). */
static void lineage(struct flushctx *fc, uint64_t vol_id, uint32_t *first,
		    uint32_t *end)
{
	uint32_t lo = 0, hi = fc->nsnaps;

	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;

		if (fc->snaps[mid]->rec.parent_id < vol_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	*first = lo;
	while (lo < fc->nsnaps && fc->snaps[lo]->rec.parent_id == vol_id)
		lo++;
	*end = lo;
}

static int snap_cmp(const void *a, const void *b)
{
	const struct frozen *x = *(struct frozen *const *)a;
	const struct frozen *y = *(struct frozen *const *)b;

	if (x->rec.parent_id != y->rec.parent_id)
		return x->rec.parent_id < y->rec.parent_id ? -1 : 1;
	return x->rec.snap_tid < y->rec.snap_tid ? -1
	       : x->rec.snap_tid > y->rec.snap_tid;
}

static bool gone(struct flushctx *fc, uint64_t id)
{
	for (size_t i = 0; i < fc->ngone; i++)
		if (fc->gone[i] == id)
			return true;
	return false;
}

static int rec_tid_cmp(const void *a, const void *b)
{
	const struct h2_volrec *x = *(struct h2_volrec *const *)a;
	const struct h2_volrec *y = *(struct h2_volrec *const *)b;

	return x->snap_tid < y->snap_tid ? -1 : x->snap_tid > y->snap_tid;
}

/* Settle the deletion of a snapshot (see "Shared blocks"). */
static void settle_snapshot(struct flushctx *fc, const struct h2_free *f)
{
	struct h2_store *st = fc->st;
	const struct h2_volrec *head = &st->dir_disk[f->head_slot];
	const struct h2_volrec **l, *s = NULL, *p, *pp, *n, *nn;
	struct h2_blockref head_root = {0};
	struct frozen *fh, *fp, *fn;
	uint64_t origin = f->origin_tid, lo, lo_p, freed0;
	size_t k = 0, at = 0;
	struct sharew w;

	if (head->id == f->vol_id && (head->flags & H2_VOLREC_USED) &&
	    !(head->flags & H2_VOLREC_SNAPSHOT)) {
		head_root = head->root;
		origin = head->origin_tid;
	}
	l = h2_xcalloc(fc->nslots + 1, sizeof(*l));
	for (uint32_t i = 0; i < fc->nslots; i++) {
		const struct h2_volrec *r = &st->dir_disk[i];

		if ((r->flags & H2_VOLREC_USED) &&
		    (r->flags & H2_VOLREC_SNAPSHOT) &&
		    r->parent_id == f->vol_id && !gone(fc, r->id))
			l[k++] = r;
	}
	qsort(l, k, sizeof(*l), rec_tid_cmp);
	for (size_t i = 0; i < k; i++)
		if (l[i]->id == f->snap_id) {
			s = l[i];
			at = i;
		}
	if (!s) {
		/* Created and deleted before any flush wrote it. */
		free(l);
		return;
	}
	p = at >= 1 ? l[at - 1] : NULL;
	pp = at >= 2 ? l[at - 2] : NULL;
	n = at + 1 < k ? l[at + 1] : NULL;
	nn = at + 2 < k ? l[at + 2] : NULL;
	lo = p ? p->snap_tid : origin;
	lo_p = p ? (pp ? pp->snap_tid : origin) : lo;
	fh = fz_find(fc, f->vol_id);
	fp = p ? fz_find(fc, p->id) : NULL;
	fn = n ? fz_find(fc, n->id) : NULL;

	/* S's blocks that N lacks: born after P they are freed, born in
	 * P's own interval they become P's alone. */
	w = (struct sharew){.fc = fc, .vol_id = f->vol_id, .lo = lo_p,
			    .free_above = lo, .cnt_lo = lo_p, .cnt_hi = lo};
	freed0 = fc->freed;
	diff(&w, &s->root, n ? &n->root : &head_root);
	if (fp)
		fp->excl += (int64_t)w.counted;
	if (fh)
		fh->snapb -= (int64_t)(fc->freed - freed0);
	if (fc->freed - freed0 != s->excl_blocks && !fc->err)
		fprintf(stderr, "h2: flush %" PRIu64 ": snapshot id %" PRIu64
				" held %" PRIu64 " blocks alone, its record "
				"said %" PRIu64 "; run h2d check\n",
			fc->epoch, s->id, fc->freed - freed0, s->excl_blocks);
	/* N's blocks born after P and at or before S that the one after N
	 * lacks were shared with S only: now N's alone. */
	if (n && fn) {
		w = (struct sharew){.fc = fc, .vol_id = f->vol_id, .lo = lo,
				    .free_above = UINT64_MAX, .cnt_lo = lo,
				    .cnt_hi = s->snap_tid};
		diff(&w, &n->root, nn ? &nn->root : &head_root);
		fn->excl += (int64_t)w.counted;
	}
	if (fc->ngone % 16 == 0)
		fc->gone = h2_xrealloc(fc->gone,
				       (fc->ngone + 16) * sizeof(*fc->gone));
	fc->gone[fc->ngone++] = f->snap_id;
	free(l);
}

/* Count the blocks of subtree b born after lo (b itself included). */
static uint64_t count_after(struct flushctx *fc, const struct h2_blockref *b,
			    uint64_t lo)
{
	struct sharew w = {.fc = fc, .lo = lo, .free_above = UINT64_MAX,
			   .cnt_lo = lo, .cnt_hi = UINT64_MAX};

	diff(&w, b, NULL);
	return w.counted;
}

/* How kills of one volume are settled: its newest snapshot and bounds. */
struct killctx {
	struct frozen *head;   /* NULL: the volume is gone */
	struct frozen *last;   /* its newest snapshot, or NULL */
	uint64_t floor;	       /* born at or before: someone else holds it */
	uint64_t last_lo;      /* born after: the newest snapshot's alone */
};

static void kill_ctx(struct flushctx *fc, const struct h2_free *f,
		     struct killctx *kc)
{
	uint32_t a, e;

	memset(kc, 0, sizeof(*kc));
	kc->floor = f->origin_tid;
	kc->last_lo = f->origin_tid;
	if (!f->vol_id)
		return;
	kc->head = fz_find(fc, f->vol_id);
	lineage(fc, f->vol_id, &a, &e);
	if (e > a) {
		kc->last = fc->snaps[e - 1];
		kc->floor = kc->last->rec.snap_tid;
		if (e - 1 > a)
			kc->last_lo = fc->snaps[e - 2]->rec.snap_tid;
	}
}

/* The volume stopped referencing b (and, if tree, all below it). */
static void kill(struct flushctx *fc, const struct h2_free *f,
		 struct killctx *kc, const struct h2_blockref *b, bool tree)
{
	struct h2_blockref *slots;

	if (bref_is_empty(b) || fc->err)
		return;
	if (b->birth_tid > kc->floor) {
		free_block(fc, f->vol_id, b);
		if (!tree || b->type != H2_BREF_INDIRECT)
			return;
		slots = h2_xmalloc(H2_BLOCK_SIZE);
		if (read_slots(fc, b, slots))
			for (unsigned i = 0; i < H2_FANOUT; i++)
				kill(fc, f, kc, &slots[i], true);
		free(slots);
		return;
	}
	if (!kc->last)
		return; /* the clone origin holds it */
	/* Now held by snapshots only; the newest one alone if born after
	 * the one before it. */
	if (kc->head)
		kc->head->snapb += tree ? (int64_t)b->blocks : 1;
	if (b->birth_tid > kc->last_lo)
		kc->last->excl += tree ? (int64_t)count_after(fc, b,
							      kc->last_lo)
				       : 1;
}

/* Settle the epoch's frees (step 4). */
static int apply_frees(struct flushctx *fc)
{
	/* Deleted snapshots first, against the previous image. */
	for (size_t i = 0; i < fc->frees.n; i++)
		if (fc->frees.v[i].kind == H2_FREE_SNAP)
			settle_snapshot(fc, &fc->frees.v[i]);
	for (size_t i = 0; i < fc->frees.n; i++) {
		struct h2_free *f = &fc->frees.v[i];
		struct h2_blockref b = f->bref;
		struct killctx kc;
		bool tree;

		if (f->kind == H2_FREE_SNAP)
			continue;
		kill_ctx(fc, f, &kc);
		if (f->kind == H2_FREE_ROLLBACK) {
			/* The volume's tree was discarded just before this
			 * entry (its kills came first) and is now the
			 * snapshot's: every block of it is the volume's
			 * again. */
			struct frozen *l = fz_find(fc, f->snap_id);

			if (kc.head && l) {
				kc.head->snapb -= l->used;
				kc.head->used = l->used;
				l->excl = 0;
			}
			continue;
		}
		if (f->chain) {
			pthread_mutex_lock(&f->chain->lock);
			b = f->chain->bref;
			if (!(f->chain->flags & H2_CHAIN_ONDISK))
				b.type = H2_BREF_EMPTY;
			pthread_mutex_unlock(&f->chain->lock);
			if (b.type == H2_BREF_EMPTY)
				return h2_err(-EIO,
					      "internal error: a freed chain "
					      "(key %" PRIu64 ") has no block",
					      f->chain->key);
		}
		tree = f->kind == H2_FREE_TREE || f->kind == H2_FREE_CHAIN_TREE;
		if (kc.head)
			kc.head->used -= tree ? (int64_t)b.blocks : 1;
		kill(fc, f, &kc, &b, tree);
	}
	return fc->err;
}

/* Rewrite the directory leaves whose records changed (step 3). */
static int write_directory(struct flushctx *fc, struct h2_blockref *root)
{
	struct h2_store *st = fc->st;
	struct h2_txctx tx = {.st = st, .epoch = fc->epoch, .vol_id = 0,
			      .frees = &fc->frees};
	/* Slots at or past nslots have never held a volume, on disk or in
	 * memory (nslots only grows), so only leaves below it can change. */
	uint32_t nleaves = (fc->nslots + H2_VOLREC_PER_BLOCK - 1) /
			   H2_VOLREC_PER_BLOCK;
	struct h2_volrec *recs = h2_xcalloc(
		(size_t)nleaves * H2_VOLREC_PER_BLOCK + 1, sizeof(*recs));
	int r = 0;

	for (uint32_t i = 0; i < fc->nfz; i++)
		recs[fc->fz[i].vol->slot] = fc->fz[i].rec;
	for (uint32_t k = 0; k < nleaves; k++) {
		struct h2_volrec *want = recs + k * H2_VOLREC_PER_BLOCK;
		struct h2_volrec *have = st->dir_disk + k * H2_VOLREC_PER_BLOCK;
		size_t len = H2_VOLREC_PER_BLOCK * sizeof(*want);
		bool empty = true;
		struct h2_chain *c;
		bool used;

		if (memcmp(want, have, len) == 0)
			continue;
		for (unsigned i = 0; i < H2_VOLREC_PER_BLOCK; i++)
			if (want[i].flags & H2_VOLREC_USED)
				empty = false;
		/* Loading a directory block may run out of memory: wait
		 * for it, as for the flusher's other allocations. */
		for (unsigned a = 1; (r = h2_tree_prepare(st, &st->dir_tree, k,
							  k, false)) == -ENOMEM;
		     a++)
			h2_mem_wait(a, H2_BLOCK_SIZE);
		if (r < 0)
			goto out;
		if (empty) {
			h2_tree_remove_range(&tx, &st->dir_tree, k, k);
		} else {
			c = h2_tree_modify_leaf(&tx, &st->dir_tree, k, NULL,
						NULL, &used);
			memcpy(c->data, want, len);
		}
		memcpy(have, want, len);
	}
	/* The flusher's own chains draw on the space margin. */
	pthread_mutex_lock(&st->space_lock);
	st->reserved_blocks += tx.created;
	pthread_mutex_unlock(&st->space_lock);
	if (st->dir_tree.root && (st->dir_tree.root->flags & H2_CHAIN_MODIFIED))
		r = write_chain(fc, st->dir_tree.root);
	if (r == 0)
		r = wq_flush(fc);
	if (st->dir_tree.root)
		*root = st->dir_tree.root->bref;
	else
		memset(root, 0, sizeof(*root));
out:
	free(recs);
	return r;
}

static int fz_cmp(const void *a, const void *b)
{
	const struct frozen *x = a, *y = b;

	return x->rec.id < y->rec.id ? -1 : x->rec.id > y->rec.id;
}

/*
 * Step 1.  Returns false (and freezes nothing) when the current epoch
 * holds no change.
 */
static bool freeze(struct flushctx *fc)
{
	struct h2_store *st = fc->st;

	pthread_mutex_lock(&st->txn_lock);
	if (st->dirty_epoch < st->cur_epoch) {
		pthread_mutex_unlock(&st->txn_lock);
		return false;
	}
	st->freeze_pending = true;
	while (st->active)
		pthread_cond_wait(&st->txn_cv, &st->txn_lock);
	fc->epoch = st->cur_epoch;
	pthread_mutex_lock(&st->free_lock);
	fc->frees = st->frees;
	memset(&st->frees, 0, sizeof(st->frees));
	pthread_mutex_unlock(&st->free_lock);
	pthread_mutex_lock(&st->dir_lock);
	fc->nslots = st->nslots;
	fc->fz = h2_xcalloc(st->nslots ? st->nslots : 1, sizeof(*fc->fz));
	for (uint32_t i = 0; i < st->nslots; i++) {
		struct h2_vol *v = st->vols[i];
		struct frozen *f;

		if (!v)
			continue;
		f = &fc->fz[fc->nfz++];
		h2_vol_ref(v);
		f->vol = v;
		f->rec = v->rec;
		f->rec.levels = v->tree.levels;
		f->used = (int64_t)v->used_blocks;
		f->excl = (int64_t)v->excl_blocks;
		f->snapb = (int64_t)v->snap_blocks;
		f->capture = v->pending;
		if (f->capture)
			continue; /* takes its volume's root, below */
		f->root = v->tree.root;
		if (f->root)
			h2_chain_ref(f->root);
		else
			f->rec.root = v->tree.root_bref;
	}
	pthread_mutex_unlock(&st->dir_lock);
	st->cur_epoch = fc->epoch + 1;
	st->freeze_pending = false;
	pthread_cond_broadcast(&st->txn_cv);
	pthread_mutex_unlock(&st->txn_lock);
	qsort(fc->fz, fc->nfz, sizeof(*fc->fz), fz_cmp);
	/* The records as last written, for every slot of the freeze. */
	h2_dir_disk_reserve(st, (fc->nslots + H2_VOLREC_PER_BLOCK - 1) /
				    H2_VOLREC_PER_BLOCK * H2_VOLREC_PER_BLOCK);
	/* New snapshots take their volume's image of this epoch; the
	 * durable ones, by volume and age, tell kills who holds a block. */
	fc->snaps = h2_xcalloc(fc->nfz + 1, sizeof(*fc->snaps));
	for (uint32_t i = 0; i < fc->nfz; i++) {
		struct frozen *f = &fc->fz[i], *h;

		if (!(f->rec.flags & H2_VOLREC_SNAPSHOT))
			continue;
		if (!f->capture) {
			fc->snaps[fc->nsnaps++] = f;
			continue;
		}
		h = fz_find(fc, f->rec.parent_id);
		if (!h) /* cannot happen: a volume with snapshots stays */
			continue;
		f->root = h->root;
		if (f->root)
			h2_chain_ref(f->root);
		f->rec.root = h->rec.root;
		f->rec.levels = h->rec.levels;
		f->rec.size = h->rec.size;
		f->rec.snap_tid = fc->epoch;
	}
	qsort(fc->snaps, fc->nsnaps, sizeof(*fc->snaps), snap_cmp);
	return true;
}

static void hook(struct h2_store *st, enum h2_flush_stage stage)
{
	if (st->opts.flush_hook)
		st->opts.flush_hook(st->opts.flush_hook_arg, stage);
}

/* Steps 2-7 for a frozen epoch. */
static int flush_frozen(struct flushctx *fc)
{
	struct h2_store *st = fc->st;
	uint8_t *sel = NULL;
	struct h2_blockref dir_root;
	size_t selbytes = (st->fm_pages + 7) / 8;
	int r = 0;

	for (uint32_t i = 0; i < fc->nfz && r == 0; i++) {
		struct frozen *f = &fc->fz[i];

		if (f->root && (f->root->flags & H2_CHAIN_MODIFIED))
			r = write_chain(fc, f->root);
	}
	if (r == 0)
		r = wq_flush(fc);
	evict_written(fc, r == 0);
	if (r < 0)
		return r;
	for (uint32_t i = 0; i < fc->nfz; i++) {
		struct frozen *f = &fc->fz[i];

		/* Without a root chain, rec.root is the blockref the
		 * freeze took: EMPTY for an empty tree, the device's root
		 * for one that did not read (never v->root_err now: a
		 * transaction of the next epoch may be reading it again). */
		if (f->root)
			f->rec.root = f->root->bref;
	}
	/* Settle frees first so the directory records carry the volumes'
	 * space as of this image; the directory's own frees come after. */
	r = apply_frees(fc);
	if (r < 0)
		return r;
	h2_freelist_clear(&fc->frees);
	for (uint32_t i = 0; i < fc->nfz; i++) {
		struct frozen *f = &fc->fz[i], *h;

		if (f->capture && (h = fz_find(fc, f->rec.parent_id))) {
			/* The volume's image as of this flush: every block
			 * of it is the volume's too. */
			f->used = h->used;
			f->excl = 0;
		}
		f->rec.used_blocks = f->used > 0 ? (uint64_t)f->used : 0;
		f->rec.excl_blocks = f->excl > 0 ? (uint64_t)f->excl : 0;
		f->rec.snap_blocks = f->snapb > 0 ? (uint64_t)f->snapb : 0;
	}
	r = write_directory(fc, &dir_root);
	if (r < 0)
		return r;
	r = apply_frees(fc);
	if (r < 0)
		return r;
	r = release_frees(fc);
	if (r < 0)
		return r;
	pthread_mutex_lock(&st->space_lock);
	st->used_blocks += fc->allocated;
	st->used_blocks -= fc->freed;
	st->reserved_blocks -= fc->allocated < st->reserved_blocks
				       ? fc->allocated
				       : st->reserved_blocks;
	pthread_mutex_unlock(&st->space_lock);
	sel = h2_xmalloc(selbytes + 1);
	memcpy(sel, st->fm.sel, selbytes);
	r = h2_fm_write_dirty(st, fc->epoch, sel);
	if (r < 0)
		goto out;
	hook(st, H2_FLUSH_STAGE_WRITTEN);
	r = h2_dev_flush(st->dev);
	if (r < 0) {
		r = h2_err(r, "flush %" PRIu64 ": device flush failed",
			   fc->epoch);
		goto out;
	}
	r = h2_hdr_write(st, fc->epoch, sel, &dir_root);
	if (r < 0)
		goto out;
	r = h2_dev_flush(st->dev);
	if (r < 0) {
		r = h2_err(r, "flush %" PRIu64 ": device flush after the "
			      "header failed",
			   fc->epoch);
		goto out;
	}
	h2_fm_commit(st, sel);
	st->hdr_tid = fc->epoch;
	st->lifetime_flushes++;
	pthread_mutex_lock(&st->dir_lock);
	for (uint32_t i = 0; i < fc->nfz; i++) {
		struct frozen *f = &fc->fz[i];
		struct h2_vol *v = f->vol;

		v->used_blocks = f->rec.used_blocks;
		v->excl_blocks = f->rec.excl_blocks;
		v->snap_blocks = f->rec.snap_blocks;
		if (f->capture)
			v->rec = f->rec; /* published below */
	}
	pthread_mutex_unlock(&st->dir_lock);
	for (uint32_t i = 0; i < fc->nfz; i++) {
		struct frozen *f = &fc->fz[i];
		struct h2_vol *v = f->vol;

		if (!f->capture)
			continue;
		pthread_rwlock_wrlock(&v->lock);
		v->tree.root_bref = f->rec.root;
		v->tree.levels = f->rec.levels;
		v->root_err = h2_tree_load_root(st, &v->tree);
		if (v->root_err == 0)
			memset(&v->tree.root_bref, 0,
			       sizeof(v->tree.root_bref));
		pthread_rwlock_unlock(&v->lock);
		pthread_mutex_lock(&st->dir_lock);
		v->pending = false;
		pthread_mutex_unlock(&st->dir_lock);
	}
out:
	free(sel);
	return r;
}

/*
 * Keep clean metadata within cache_max: after a flush every chain outside
 * the current epoch is on disk, so clean indirect chains that no reader
 * holds can go (each volume's lock is taken exclusively, briefly).
 * Cut down to three quarters of the limit so this does not run after
 * every flush.
 */
static void cache_trim(struct h2_store *st)
{
	uint64_t have = __atomic_load_n(&st->chains, __ATOMIC_RELAXED);
	uint64_t limit = st->opts.cache_max / H2_BLOCK_SIZE;
	uint64_t budget;

	if (have <= limit)
		return;
	budget = have - limit * 3 / 4;
	for (uint32_t i = 0; budget; i++) {
		struct h2_vol *v = NULL;

		pthread_mutex_lock(&st->dir_lock);
		for (; i < st->nslots && !st->vols[i]; i++)
			;
		if (i < st->nslots) {
			v = st->vols[i];
			h2_vol_ref(v);
		}
		pthread_mutex_unlock(&st->dir_lock);
		if (!v)
			break;
		pthread_rwlock_wrlock(&v->lock);
		h2_tree_evict(&v->tree, &budget);
		pthread_rwlock_unlock(&v->lock);
		h2_vol_drop(v);
	}
}

int h2_flush_run_once(struct h2_store *st)
{
	struct flushctx fc = {.st = st};
	uint64_t t0 = h2_now_ns(), dt;
	int r;

	pthread_mutex_lock(&st->run_lock);
	if (st->failed) {
		pthread_mutex_unlock(&st->run_lock);
		return st->failed;
	}
	if (!freeze(&fc)) {
		pthread_mutex_unlock(&st->run_lock);
		return 1;
	}
	hook(st, H2_FLUSH_STAGE_FROZEN);
	r = flush_frozen(&fc);
	for (uint32_t i = 0; i < fc.nfz; i++) {
		h2_chain_drop(fc.fz[i].root);
		h2_vol_drop(fc.fz[i].vol);
	}
	free(fc.fz);
	free(fc.snaps);
	free(fc.gone);
	free(fc.fblk);
	h2_freelist_clear(&fc.frees);
	for (int i = 0; i < fc.wq.n; i++)
		h2_chain_drop(fc.wq.chain[i]);
	dt = h2_now_ns() - t0;
	pthread_mutex_lock(&st->flush_lock);
	if (r == 0) {
		__atomic_store_n(&st->durable_epoch, fc.epoch,
				 __ATOMIC_RELEASE);
		__atomic_add_fetch(&st->flushes, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&st->flush_ns_total, dt, __ATOMIC_RELAXED);
		__atomic_store_n(&st->last_flush_ns, dt, __ATOMIC_RELAXED);
	} else if (!st->failed) {
		st->failed = r;
		fprintf(stderr, "h2: flush %" PRIu64 " failed: %s; the store "
				"refuses writes until reopened\n",
			fc.epoch, h2_core_errmsg());
	}
	pthread_cond_broadcast(&st->done_cv);
	pthread_mutex_unlock(&st->flush_lock);
	/* Writers waiting on the dirty limit may go on. */
	pthread_mutex_lock(&st->txn_lock);
	pthread_cond_broadcast(&st->txn_cv);
	pthread_mutex_unlock(&st->txn_lock);
	if (r == 0)
		cache_trim(st);
	pthread_mutex_unlock(&st->run_lock);
	hook(st, H2_FLUSH_STAGE_DONE);
	return r;
}

/* ---------------------------------------------------------------------- */
/* The flusher thread and syncs.                                          */

static uint64_t dirty_bytes(struct h2_store *st)
{
	return __atomic_load_n(&st->dirty_chains, __ATOMIC_RELAXED) *
	       H2_BLOCK_SIZE;
}

static void deadline_after(struct timespec *ts, uint32_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static bool past(const struct timespec *ts)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > ts->tv_sec ||
	       (now.tv_sec == ts->tv_sec && now.tv_nsec >= ts->tv_nsec);
}

static void *flusher_main(void *arg)
{
	struct h2_store *st = arg;
	struct timespec deadline;
	int r;

	deadline_after(&deadline, st->opts.flush_interval_ms);
	pthread_mutex_lock(&st->flush_lock);
	while (!st->stop) {
		bool want = st->sync_target > st->durable_epoch ||
			    dirty_bytes(st) >= st->opts.dirty_max ||
			    past(&deadline);

		if (!want || st->failed) {
			pthread_cond_timedwait(&st->flush_cv, &st->flush_lock,
					       &deadline);
			if (st->failed && past(&deadline))
				deadline_after(&deadline,
					       st->opts.flush_interval_ms);
			continue;
		}
		st->flushing = true;
		pthread_mutex_unlock(&st->flush_lock);
		r = h2_flush_run_once(st);
		pthread_mutex_lock(&st->flush_lock);
		st->flushing = false;
		if (r == 1 && st->sync_target > st->durable_epoch) {
			/* Nothing was left to freeze: whatever the target
			 * named is already durable or was never dirty. */
			st->sync_target = st->durable_epoch;
			pthread_cond_broadcast(&st->done_cv);
		}
		deadline_after(&deadline, st->opts.flush_interval_ms);
		if (r == 1 && !past(&deadline))
			pthread_cond_timedwait(&st->flush_cv, &st->flush_lock,
					       &deadline);
	}
	pthread_mutex_unlock(&st->flush_lock);
	return NULL;
}

int h2_flush_start(struct h2_store *st)
{
	pthread_condattr_t ca;
	int r;

	/* The flusher's timed waits use the monotonic clock. */
	pthread_cond_destroy(&st->flush_cv);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&st->flush_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (st->opts.no_flusher)
		return 0;
	r = pthread_create(&st->flusher, NULL, flusher_main, st);
	if (r != 0)
		return h2_err(-r, "cannot start the flusher thread");
	st->flusher_running = true;
	return 0;
}

void h2_flush_stop(struct h2_store *st)
{
	if (!st->flusher_running)
		return;
	pthread_mutex_lock(&st->flush_lock);
	st->stop = true;
	pthread_cond_signal(&st->flush_cv);
	pthread_mutex_unlock(&st->flush_lock);
	pthread_join(st->flusher, NULL);
	st->flusher_running = false;
}

void h2_flush_kick(struct h2_store *st)
{
	pthread_mutex_lock(&st->flush_lock);
	pthread_cond_signal(&st->flush_cv);
	pthread_mutex_unlock(&st->flush_lock);
}

/* Wait until epoch is durable (asking for a flush if needed). */
int h2_flush_wait(struct h2_store *st, uint64_t epoch, uint64_t *tid)
{
	int r = 0, was_failed;

	if (!st->flusher_running) {
		/* No flusher thread: the caller flushes. */
		for (;;) {
			pthread_mutex_lock(&st->flush_lock);
			r = st->failed;
			if (r == 0 && st->durable_epoch >= epoch) {
				if (tid)
					*tid = st->durable_epoch;
				pthread_mutex_unlock(&st->flush_lock);
				return 0;
			}
			pthread_mutex_unlock(&st->flush_lock);
			if (r < 0)
				return h2_err(-ESHUTDOWN, "the store failed "
							  "an earlier flush "
							  "and refuses "
							  "writes until "
							  "reopened");
			r = h2_flush_run_once(st);
			if (r < 0)
				return r;
			if (r == 1) {
				pthread_mutex_lock(&st->flush_lock);
				r = st->durable_epoch >= epoch ? 0 : -EIO;
				if (tid)
					*tid = st->durable_epoch;
				pthread_mutex_unlock(&st->flush_lock);
				return r == 0 ? 0 : h2_err(r, "internal "
					"error: epoch %" PRIu64 " has "
					"nothing to flush", epoch);
			}
		}
	}
	pthread_mutex_lock(&st->flush_lock);
	if (st->sync_target < epoch)
		st->sync_target = epoch;
	pthread_cond_signal(&st->flush_cv);
	was_failed = st->failed;
	while (st->durable_epoch < epoch && !st->failed)
		pthread_cond_wait(&st->done_cv, &st->flush_lock);
	if (st->durable_epoch >= epoch) {
		if (tid)
			*tid = st->durable_epoch;
	} else if (was_failed) {
		r = h2_err(-ESHUTDOWN, "the store failed an earlier flush "
				       "and refuses writes until reopened");
	} else {
		/* The flush this waited for failed: the device's error. */
		r = h2_err(st->failed,
			   "sync failed: the device failed "
			   "(%s); the store refuses writes until "
			   "reopened",
			   strerror(-st->failed));
	}
	pthread_mutex_unlock(&st->flush_lock);
	return r;
}

int h2_store_sync(struct h2_store *st, uint64_t *tid)
{
	uint64_t target;

	if (st->read_only) {
		if (tid)
			*tid = st->durable_epoch;
		return 0;
	}
	pthread_mutex_lock(&st->txn_lock);
	target = st->dirty_epoch;
	pthread_mutex_unlock(&st->txn_lock);
	if (target == 0) {
		pthread_mutex_lock(&st->flush_lock);
		if (tid)
			*tid = st->durable_epoch;
		pthread_mutex_unlock(&st->flush_lock);
		return st->failed ? h2_err(-ESHUTDOWN, "the store failed a "
						       "flush and refuses "
						       "writes until reopened")
				  : 0;
	}
	return h2_flush_wait(st, target, tid);
}

/* ---------------------------------------------------------------------- */
/* The transaction interlock.                                             */

/*
 * Wait (called without txn_lock) until dirty data is back under the hard
 * limit or the store failed.  Dekker-style with the flusher: we publish
 * hard_waiters, then look at dirty_chains; the flusher lowers
 * dirty_chains, then looks at hard_waiters and broadcasts txn_cv.  With
 * both sides SEQ_CST, at least one of us sees the other.  The timed wait
 * only bounds a missed wake-up from a writer dropping a dirty chain
 * (chain.c), which does not broadcast.
 */
static void hard_wait(struct h2_store *st)
{
	h2_flush_kick(st);
	pthread_mutex_lock(&st->txn_lock);
	__atomic_add_fetch(&st->hard_waiters, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&st->dirty_chains, __ATOMIC_SEQ_CST) *
			       H2_BLOCK_SIZE >
		       st->opts.dirty_hard &&
	       !st->failed) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&st->txn_cv, &st->txn_lock, &ts);
	}
	__atomic_sub_fetch(&st->hard_waiters, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&st->txn_lock);
}

int h2_epoch_begin(struct h2_store *st, uint64_t *epoch)
{
	bool waited = false;

	if (st->read_only)
		return h2_err(-EROFS, "the store is open read-only");
	pthread_mutex_lock(&st->txn_lock);
	for (;;) {
		if (st->failed) {
			pthread_mutex_unlock(&st->txn_lock);
			return h2_err(-ESHUTDOWN, "the store failed a flush "
						  "and refuses writes until "
						  "reopened");
		}
		if (st->freeze_pending) {
			pthread_cond_wait(&st->txn_cv, &st->txn_lock);
			continue;
		}
		/*
		 * Backpressure: above the hard limit, wait until the flusher
		 * has written enough of the dirty data out of memory.  Not
		 * until it is durable: that would hold writers for a whole
		 * extra flush (the epoch being filled).  FUA and syncs wait
		 * for durability on their own.
		 */
		if (dirty_bytes(st) > st->opts.dirty_hard &&
		    st->dirty_epoch >
			    __atomic_load_n(&st->durable_epoch,
					    __ATOMIC_ACQUIRE)) {
			uint64_t target = st->dirty_epoch;

			if (!waited)
				__atomic_add_fetch(&st->write_waits, 1,
						   __ATOMIC_RELAXED);
			waited = true;
			pthread_mutex_unlock(&st->txn_lock);
			if (!st->flusher_running) {
				/* No flusher thread: flush ourselves. */
				h2_flush_wait(st, target, NULL);
				pthread_mutex_lock(&st->txn_lock);
				continue;
			}
			hard_wait(st);
			pthread_mutex_lock(&st->txn_lock);
			continue;
		}
		break;
	}
	*epoch = st->cur_epoch;
	st->active++;
	pthread_mutex_unlock(&st->txn_lock);
	return 0;
}

void h2_epoch_end(struct h2_store *st, bool changed)
{
	bool kick;

	pthread_mutex_lock(&st->txn_lock);
	if (changed)
		st->dirty_epoch = st->cur_epoch;
	st->active--;
	if (st->active == 0 && st->freeze_pending)
		pthread_cond_broadcast(&st->txn_cv);
	pthread_mutex_unlock(&st->txn_lock);
	kick = dirty_bytes(st) >= st->opts.dirty_max;
	if (kick && st->flusher_running)
		h2_flush_kick(st);
}
