/*
 * chain.c - in-memory chains and the copy-on-write radix tree.
 *
 * A chain is the in-memory form of one 4 KiB block: an indirect block (64
 * blockrefs plus pointers to the child chains that are in memory), a data
 * block, or a directory block.  For a slot of an indirect chain, the child
 * pointer, when set, is authoritative; otherwise the blockref in the
 * chain's data is.  (The flusher copies written children's blockrefs into
 * their parent's data just before writing the parent.)
 *
 * Modification follows the epoch rule of internal.h: a chain created in
 * the current epoch is changed in place, an older one is copied, and the
 * copy replaces it in a parent that is itself made current first.  What
 * the live tree stops referencing goes to the transaction's free list:
 *
 *   replaced by a copy    its own block (FREE_BLOCK, or FREE_CHAIN while
 *                         the flusher has not given it a block yet);
 *   removed with subtree  FREE_TREE / FREE_CHAIN_TREE, or, for a chain of
 *                         the current epoch (which owns no block), each of
 *                         its non-empty slots in turn.
 *
 * Callers hold the volume's lock: shared for lookups, exclusive for
 * modification.  The flusher works on frozen chains only and meets the
 * live tree at chain->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static struct h2_blockref *slots(struct h2_chain *c)
{
	return (struct h2_blockref *)c->data;
}

/* Leaves covered by one node at the given level (1 for a leaf). */
uint64_t h2_tree_leaf_span(unsigned level)
{
	return 1ull << (H2_FANOUT_RADIX * level);
}

/* Smallest tree height (>= 1) whose root covers nleaves leaves. */
uint8_t h2_levels_for(uint64_t nleaves)
{
	uint8_t l = 1;

	while (l < H2_MAX_LEVELS && h2_tree_leaf_span(l) < nleaves)
		l++;
	return l;
}

/* Slot of a level-`level` node that covers leaf key. */
static unsigned slot_of(uint64_t key, unsigned level)
{
	return (unsigned)(key >> (H2_FANOUT_RADIX * (level - 1))) &
	       (H2_FANOUT - 1);
}

static bool bref_empty(const struct h2_blockref *b)
{
	return b->type == H2_BREF_EMPTY;
}

/* ---------------------------------------------------------------------- */
/* Allocation.                                                            */
/*
 * Loading a chain may fail (-ENOMEM, like an I/O error).  Creating one
 * while a transaction changes the tree may not: that is the install
 * phase (io.c), after the point of no return.  So a transaction sets its
 * chains aside first (h2_chain_rsv_fill, sized by h2_tree_reserve_nodes
 * and the leaves it writes), and the install phase takes them from there.
 * Unused ones go back to the store's spares, so that a steady stream of
 * transactions allocates only what it uses.  Code that changes a tree
 * without a reserve (the flusher's directory) allocates as it goes,
 * waiting for memory if there is none (util.h).
 */

#define SPARE_NODES_MAX	 64
#define SPARE_LEAVES_MAX 1024

/* A bare chain, not counted in the store yet; NULL if out of memory. */
static struct h2_chain *chain_bare(bool node, bool wait)
{
	struct h2_chain *c = wait ? h2_xcalloc(1, sizeof(*c))
				  : calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	if (node) {
		c->data = wait ? h2_xcalloc(1, H2_BLOCK_SIZE)
			       : calloc(1, H2_BLOCK_SIZE);
		c->child = wait ? h2_xcalloc(H2_FANOUT, sizeof(*c->child))
				: calloc(H2_FANOUT, sizeof(*c->child));
		if (!c->data || !c->child) {
			free(c->data);
			free(c->child);
			free(c);
			return NULL;
		}
	}
	pthread_mutex_init(&c->lock, NULL);
	return c;
}

static void chain_bare_free(struct h2_chain *c)
{
	pthread_mutex_destroy(&c->lock);
	free(c->child);
	free(c->data);
	free(c);
}

/*
 * Make bare chain c (with a zeroed block, and a zeroed child array if
 * it came as a node) a chain of the store around buf (taken; NULL: keep
 * its own block).
 */
static struct h2_chain *chain_init(struct h2_store *st, struct h2_chain *c,
				   uint8_t type, uint8_t level, uint64_t key,
				   uint64_t vol_id, uint8_t *buf)
{
	c->refs = 1;
	c->type = type;
	c->level = level;
	c->key = key;
	c->vol_id = vol_id;
	c->st = st;
	c->rsv_next = NULL;
	c->check_set = false; /* install computes it for what it writes */
	if (buf) {
		free(c->data);
		c->data = buf;
	}
	if (type != H2_BREF_INDIRECT) {
		free(c->child);
		c->child = NULL;
	}
	__atomic_add_fetch(&st->chains, 1, __ATOMIC_RELAXED);
	return c;
}

/*
 * A new chain for the install phase: from tx's reserve (a node unless
 * buf gives a leaf its block), else allocated, waiting for memory.
 */
static struct h2_chain *chain_get(struct h2_txctx *tx, uint8_t type,
				  uint8_t level, uint64_t key, uint64_t vol_id,
				  uint8_t *buf)
{
	struct h2_chain_rsv *rsv = tx->rsv;
	bool node = type == H2_BREF_INDIRECT || !buf;
	struct h2_chain *c = NULL;

	if (rsv && !node && rsv->leaves) {
		c = rsv->leaves;
		rsv->leaves = c->rsv_next;
		rsv->nleaves--;
	} else if (rsv && rsv->nodes) {
		/* (A leaf takes a node when no bare one is left.) */
		c = rsv->nodes;
		rsv->nodes = c->rsv_next;
		rsv->nnodes--;
	}
	if (!c) {
		/* No reserve (the flusher), or the bound was short: this
		 * cannot fail any more. */
		if (tx->reserved)
			__atomic_add_fetch(&tx->st->unreserved_allocs, 1,
					   __ATOMIC_RELAXED);
		c = chain_bare(true, true);
	}
	return chain_init(tx->st, c, type, level, key, vol_id, buf);
}

/* Mark a fresh chain as modified in epoch (it now owes one block). */
static void chain_set_new(struct h2_chain *c, uint64_t epoch)
{
	c->flags = H2_CHAIN_MODIFIED;
	c->epoch = epoch;
	__atomic_add_fetch(&c->st->dirty_chains, 1, __ATOMIC_RELAXED);
}

/* A new, empty, modified chain of tx's epoch (install phase). */
static struct h2_chain *chain_new(struct h2_txctx *tx, uint8_t type,
				  uint8_t level, uint64_t key, uint64_t vol_id)
{
	struct h2_chain *c = chain_get(tx, type, level, key, vol_id, NULL);

	chain_set_new(c, tx->epoch);
	return c;
}

static void rsv_push(struct h2_chain_rsv *rsv, struct h2_chain *c, bool node)
{
	if (node) {
		c->rsv_next = rsv->nodes;
		rsv->nodes = c;
		rsv->nnodes++;
	} else {
		c->rsv_next = rsv->leaves;
		rsv->leaves = c;
		rsv->nleaves++;
	}
}

static struct h2_chain *rsv_pop(struct h2_chain_rsv *rsv, bool node)
{
	struct h2_chain *c = node ? rsv->nodes : rsv->leaves;

	if (!c)
		return NULL;
	if (node) {
		rsv->nodes = c->rsv_next;
		rsv->nnodes--;
	} else {
		rsv->leaves = c->rsv_next;
		rsv->nleaves--;
	}
	return c;
}

int h2_chain_rsv_fill(struct h2_store *st, struct h2_chain_rsv *rsv,
		      uint64_t nodes, uint64_t leaves)
{
	struct h2_chain *c;

	pthread_mutex_lock(&st->spare_lock);
	while (rsv->nnodes < nodes && (c = rsv_pop(&st->spares, true)))
		rsv_push(rsv, c, true);
	while (rsv->nleaves < leaves && (c = rsv_pop(&st->spares, false)))
		rsv_push(rsv, c, false);
	pthread_mutex_unlock(&st->spare_lock);
	while (rsv->nnodes < nodes || rsv->nleaves < leaves) {
		bool node = rsv->nnodes < nodes;

		c = chain_bare(node, false);
		if (!c) {
			h2_chain_rsv_release(st, rsv);
			return h2_err(-ENOMEM, "out of memory for the metadata "
					       "of a transaction");
		}
		rsv_push(rsv, c, node);
	}
	return 0;
}

void h2_chain_rsv_release(struct h2_store *st, struct h2_chain_rsv *rsv)
{
	struct h2_chain *c, *extra = NULL;

	pthread_mutex_lock(&st->spare_lock);
	while ((c = rsv_pop(rsv, true))) {
		if (st->spares.nnodes < SPARE_NODES_MAX) {
			rsv_push(&st->spares, c, true);
		} else {
			c->rsv_next = extra;
			extra = c;
		}
	}
	while ((c = rsv_pop(rsv, false))) {
		if (st->spares.nleaves < SPARE_LEAVES_MAX) {
			rsv_push(&st->spares, c, false);
		} else {
			c->rsv_next = extra;
			extra = c;
		}
	}
	pthread_mutex_unlock(&st->spare_lock);
	while ((c = extra)) {
		extra = c->rsv_next;
		chain_bare_free(c);
	}
}

void h2_chain_spares_free(struct h2_store *st)
{
	struct h2_chain *c;

	while ((c = rsv_pop(&st->spares, true)))
		chain_bare_free(c);
	while ((c = rsv_pop(&st->spares, false)))
		chain_bare_free(c);
}

void h2_chain_ref(struct h2_chain *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void h2_chain_drop(struct h2_chain *c)
{
	if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	if (c->child) {
		for (unsigned i = 0; i < H2_FANOUT; i++)
			h2_chain_drop(c->child[i]);
		free(c->child);
	}
	/* A modified chain that dies unwritten gives back its promise. */
	if (c->flags & H2_CHAIN_MODIFIED) {
		__atomic_sub_fetch(&c->st->dirty_chains, 1, __ATOMIC_RELAXED);
		h2_space_unreserve(c->st, 1);
	}
	__atomic_sub_fetch(&c->st->chains, 1, __ATOMIC_RELAXED);
	pthread_mutex_destroy(&c->lock);
	free(c->data);
	free(c);
}

/*
 * Read the block bref points to into buf (H2_BLOCK_SIZE bytes) and verify
 * its check code.  `what` names the owner for messages.
 */
int h2_chain_read_block(struct h2_store *st, const struct h2_blockref *bref,
			void *buf, const char *what)
{
	uint64_t off = H2_BREF_OFFSET(bref);
	uint64_t blk = off / H2_BLOCK_SIZE;
	int r;

	if (H2_BREF_RADIX(bref) != H2_BLOCK_RADIX || off % H2_BLOCK_SIZE ||
	    blk >= st->total_blocks || h2_block_reserved(st, blk))
		return h2_err(-EBADMSG,
			      "%s: blockref points outside the data area "
			      "(offset %" PRIu64 ", radix %u): metadata is "
			      "damaged, run h2d check",
			      what, off, H2_BREF_RADIX(bref));
	r = h2_dev_pread(st->dev, buf, H2_BLOCK_SIZE, off);
	if (r < 0)
		return h2_err(r, "%s: read of device offset %" PRIu64
				 " failed: %s",
			      what, off, strerror(-r));
	if (h2_check64(buf, H2_BLOCK_SIZE) != bref->check)
		return h2_err(-EBADMSG,
			      "%s: checksum mismatch in block at device offset "
			      "%" PRIu64 " (key %" PRIu64 "): the block is "
			      "damaged",
			      what, off, bref->key);
	return 0;
}

/* Check that child blockref b fits slot i of a node at (level, key). */
static int bref_validate_child(const struct h2_blockref *b, uint8_t level,
			       uint64_t key, unsigned i, uint8_t leaf_type)
{
	uint64_t want_key = key + (uint64_t)i * h2_tree_leaf_span(level - 1);
	uint8_t want_type = level == 1 ? leaf_type : H2_BREF_INDIRECT;

	if (bref_empty(b))
		return 0;
	if (b->type != want_type || b->level != level - 1 ||
	    b->key != want_key ||
	    b->keybits != H2_FANOUT_RADIX * (level - 1))
		return h2_err(-EBADMSG,
			      "blockref in slot %u of level-%u block at key "
			      "%" PRIu64 " is inconsistent (type %u level %u "
			      "key %" PRIu64 "): metadata is damaged",
			      i, level, key, b->type, b->level, b->key);
	return 0;
}

int h2_chain_load(struct h2_store *st, const struct h2_blockref *bref,
		  uint64_t vol_id, struct h2_chain **out)
{
	struct h2_chain *c = chain_bare(false, false);
	uint8_t *buf = c ? malloc(H2_BLOCK_SIZE) : NULL;
	char what[64];
	int r;

	if (!buf || (bref->type == H2_BREF_INDIRECT &&
		     !(c->child = calloc(H2_FANOUT, sizeof(*c->child))))) {
		free(buf);
		if (c)
			chain_bare_free(c);
		return h2_err(-ENOMEM, "out of memory loading a block");
	}
	if (vol_id)
		snprintf(what, sizeof(what), "volume id %" PRIu64, vol_id);
	else
		snprintf(what, sizeof(what), "volume directory");
	r = h2_chain_read_block(st, bref, buf, what);
	if (r < 0) {
		free(buf);
		chain_bare_free(c);
		return r;
	}
	chain_init(st, c, bref->type, bref->level, bref->key, vol_id, buf);
	c->flags = H2_CHAIN_ONDISK;
	c->bref = *bref;
	*out = c;
	return 0;
}

/*
 * Slot i of indirect chain p: a referenced child chain in *out, or NULL
 * and a copy of the slot's blockref in *bref.
 */
int h2_chain_get_child(struct h2_chain *p, unsigned i, struct h2_chain **out,
		       struct h2_blockref *bref)
{
	pthread_mutex_lock(&p->lock);
	*out = p->child[i];
	if (*out)
		h2_chain_ref(*out);
	else
		*bref = slots(p)[i];
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/*
 * The indirect child in slot i of p, loaded from disk if needed and kept
 * in p.  *out is referenced, or NULL for an empty slot.
 */
static int child_indirect(struct h2_store *st, struct h2_chain *p, unsigned i,
			  uint8_t leaf_type, struct h2_chain **out)
{
	struct h2_blockref b;
	struct h2_chain *c;
	int r;

	h2_chain_get_child(p, i, out, &b);
	if (*out || bref_empty(&b))
		return 0;
	r = bref_validate_child(&b, p->level, p->key, i, leaf_type);
	if (r < 0)
		return r;
	r = h2_chain_load(st, &b, p->vol_id, &c);
	if (r < 0)
		return r;
	pthread_mutex_lock(&p->lock);
	if (p->child[i]) {
		/* Another reader won the race; use its copy. */
		h2_chain_drop(c);
		c = p->child[i];
	} else {
		p->child[i] = c;
	}
	h2_chain_ref(c);
	pthread_mutex_unlock(&p->lock);
	*out = c;
	return 0;
}

/* Copy a chain's blockref into slot i of its parent's data. */
void h2_bref_set_child_slot(struct h2_chain *p, unsigned i,
			    const struct h2_blockref *b)
{
	slots(p)[i] = *b;
}

int h2_tree_load_root(struct h2_store *st, struct h2_tree *t)
{
	const struct h2_blockref *b = &t->root_bref;
	int r;

	if (t->root || bref_empty(b))
		return 0;
	if (b->type != H2_BREF_INDIRECT || b->level != t->levels ||
	    b->key != 0 || t->levels < 1 || t->levels > H2_MAX_LEVELS)
		return h2_err(-EBADMSG,
			      "root blockref of volume id %" PRIu64
			      " is inconsistent (type %u level %u, tree "
			      "height %u)",
			      t->vol_id, b->type, b->level, t->levels);
	r = h2_chain_load(st, b, t->vol_id, &t->root);
	return r;
}

/* ---------------------------------------------------------------------- */
/* Lookups.                                                               */

struct walk {
	struct h2_store *st;
	uint8_t leaf_type;
	bool leaves;	  /* call cb for leaves (else only load the path) */
	bool skip_whole;  /* do not descend into fully covered slots */
	bool cached;	  /* no device reads: -EAGAIN instead */
	h2_leaf_cb cb;
	void *arg;
};

/*
 * How many slots from i (up to i1) of indirect chain p are holes: empty
 * on disk and nothing in memory.  One lock for the run, where getting
 * the children one by one would take it for each of up to 512 slots.
 */
static unsigned hole_run(struct h2_chain *p, unsigned i, unsigned i1)
{
	const struct h2_blockref *s = slots(p);
	unsigned n = 0;

	pthread_mutex_lock(&p->lock);
	while (i + n <= i1 && !p->child[i + n] && bref_empty(&s[i + n]))
		n++;
	pthread_mutex_unlock(&p->lock);
	return n;
}

static int walk_node(struct walk *w, struct h2_chain *p, uint64_t first,
		     uint64_t last)
{
	uint64_t span = h2_tree_leaf_span(p->level - 1);
	unsigned i0 = slot_of(first, p->level), i1 = slot_of(last, p->level);
	int r = 0;

	for (unsigned i = i0; i <= i1 && r == 0; i++) {
		uint64_t ck = p->key + i * span;
		uint64_t lo = first > ck ? first : ck;
		uint64_t hi = last < ck + span - 1 ? last : ck + span - 1;
		unsigned run = hole_run(p, i, i1);
		struct h2_chain *c;
		struct h2_blockref b;

		if (run) {
			/* One callback for the whole hole. */
			uint64_t end = ck + (uint64_t)run * span - 1;

			if (w->leaves) {
				struct h2_blockref e = {0};

				if (end > last)
					end = last;
				r = w->cb(w->arg, lo, end - lo + 1, NULL, &e);
			}
			i += run - 1;
			continue;
		}
		if (p->level == 1) {
			h2_chain_get_child(p, i, &c, &b);
			if (w->leaves) {
				if (!c)
					r = bref_validate_child(&b, 1, p->key,
								i, w->leaf_type);
				if (r == 0)
					r = w->cb(w->arg, ck, 1, c,
						  c ? NULL : &b);
			}
			h2_chain_drop(c);
			continue;
		}
		if (w->skip_whole && lo == ck && hi == ck + span - 1)
			continue;
		if (w->cached) {
			h2_chain_get_child(p, i, &c, &b);
			if (!c && !bref_empty(&b))
				return -EAGAIN;
		} else {
			r = child_indirect(w->st, p, i, w->leaf_type, &c);
		}
		if (r < 0)
			break;
		if (!c) {
			if (w->leaves) {
				struct h2_blockref e = {0};

				r = w->cb(w->arg, lo, hi - lo + 1, NULL, &e);
			}
			continue;
		}
		r = walk_node(w, c, lo, hi);
		h2_chain_drop(c);
	}
	return r;
}

/*
 * Visit leaves [first, last] in key order.  cb gets (key, count, chain,
 * bref): a data chain in memory (count 1), or a blockref (count 1), or an
 * EMPTY blockref covering count keys of hole.
 */
static int tree_walk(struct walk *w, struct h2_tree *t, uint64_t first,
		     uint64_t last)
{
	struct h2_chain *root = t->root;

	if (!root || first >= h2_tree_leaf_span(t->levels)) {
		struct h2_blockref e = {0};

		return w->cb(w->arg, first, last - first + 1, NULL, &e);
	}
	if (last >= h2_tree_leaf_span(t->levels))
		last = h2_tree_leaf_span(t->levels) - 1;
	return walk_node(w, root, first, last);
}

int h2_tree_walk(struct h2_store *st, struct h2_tree *t, uint64_t first,
		 uint64_t last, h2_leaf_cb cb, void *arg)
{
	struct walk w = {.st = st, .leaf_type = t->leaf_type, .leaves = true,
			 .cb = cb, .arg = arg};

	return tree_walk(&w, t, first, last);
}

int h2_tree_walk_cached(struct h2_store *st, struct h2_tree *t,
			uint64_t first, uint64_t last, h2_leaf_cb cb,
			void *arg)
{
	struct walk w = {.st = st, .leaf_type = t->leaf_type, .leaves = true,
			 .cached = true, .cb = cb, .arg = arg};

	return tree_walk(&w, t, first, last);
}

/*
 * Load into memory every indirect block a modification of [first, last]
 * will copy: all of them for writes (whole = false), only the partially
 * covered ones for removals (whole = true).  This is where I/O errors and
 * damaged blocks surface, before anything changes.
 */
int h2_tree_prepare(struct h2_store *st, struct h2_tree *t, uint64_t first,
		    uint64_t last, bool whole)
{
	struct walk w = {.st = st, .leaf_type = t->leaf_type,
			 .skip_whole = whole};

	if (!t->root || first >= h2_tree_leaf_span(t->levels))
		return 0;
	if (last >= h2_tree_leaf_span(t->levels))
		last = h2_tree_leaf_span(t->levels) - 1;
	return walk_node(&w, t->root, first, last);
}

/*
 * Whether leaf key holds data, looking only at what is in memory (an
 * unloaded subtree counts as data).  Volume lock held.
 */
bool h2_tree_leaf_present(struct h2_tree *t, uint64_t key)
{
	struct h2_chain *p = t->root;

	if (!p || key >= h2_tree_leaf_span(t->levels))
		return false;
	for (;;) {
		unsigned i = slot_of(key, p->level);
		struct h2_chain *c;
		bool empty;

		pthread_mutex_lock(&p->lock);
		c = p->child[i];
		empty = bref_empty(&slots(p)[i]);
		pthread_mutex_unlock(&p->lock);
		if (!c)
			return !empty;
		if (p->level == 1)
			return true;
		p = c;
	}
}

/* ---------------------------------------------------------------------- */
/* Frees.                                                                 */

void h2_free_add(struct h2_txctx *tx, enum h2_free_kind kind,
		 const struct h2_blockref *bref, struct h2_chain *chain)
{
	struct h2_freelist *fl = tx->frees;
	struct h2_free *f;

	/* A transaction reserved its capacity (h2_freelist_reserve); the
	 * flusher's list grows, waiting for memory if there is none. */
	if (fl->n == fl->cap) {
		if (tx->reserved)
			__atomic_add_fetch(&tx->st->unreserved_allocs, 1,
					   __ATOMIC_RELAXED);
		fl->cap = fl->cap ? fl->cap * 2 : 64;
		fl->v = h2_xrealloc(fl->v, fl->cap * sizeof(*fl->v));
	}
	f = &fl->v[fl->n++];
	memset(f, 0, sizeof(*f));
	f->kind = kind;
	f->vol_id = tx->vol_id;
	f->origin_tid = tx->origin_tid;
	if (bref)
		f->bref = *bref;
	if (chain) {
		h2_chain_ref(chain);
		f->chain = chain;
	}
}

int h2_freelist_reserve(struct h2_freelist *fl, size_t n)
{
	struct h2_free *v;

	if (fl->n + n <= fl->cap)
		return 0;
	v = realloc(fl->v, (fl->n + n) * sizeof(*v));
	if (!v)
		return h2_err(-ENOMEM, "out of memory for the frees of a "
				       "transaction");
	fl->v = v;
	fl->cap = fl->n + n;
	return 0;
}

int h2_frees_reserve(struct h2_store *st, size_t n)
{
	struct h2_freelist *fl = &st->frees;
	size_t need;
	int r = 0;

	pthread_mutex_lock(&st->free_lock);
	need = fl->n + st->frees_reserved + n;
	if (need > fl->cap) {
		size_t cap = fl->cap * 2 > need ? fl->cap * 2 : need + 256;
		struct h2_free *v = realloc(fl->v, cap * sizeof(*v));

		if (v) {
			fl->v = v;
			fl->cap = cap;
		} else {
			r = h2_err(-ENOMEM, "out of memory for the frees of a "
					    "transaction");
		}
	}
	if (r == 0)
		st->frees_reserved += n;
	pthread_mutex_unlock(&st->free_lock);
	return r;
}

void h2_frees_commit(struct h2_store *st, struct h2_freelist *src,
		     size_t reserved)
{
	pthread_mutex_lock(&st->free_lock);
	st->frees_reserved -= reserved < st->frees_reserved
				      ? reserved
				      : st->frees_reserved;
	if (st->frees.n + src->n > st->frees.cap)
		__atomic_add_fetch(&st->unreserved_allocs, 1,
				   __ATOMIC_RELAXED);
	h2_freelist_splice(&st->frees, src);
	pthread_mutex_unlock(&st->free_lock);
}

void h2_freelist_clear(struct h2_freelist *fl)
{
	for (size_t i = 0; i < fl->n; i++)
		h2_chain_drop(fl->v[i].chain);
	free(fl->v);
	memset(fl, 0, sizeof(*fl));
}

/* Append all of src to dst and empty src (within dst's capacity, if it
 * was reserved: else this waits for memory). */
void h2_freelist_splice(struct h2_freelist *dst, struct h2_freelist *src)
{
	if (!src->n) {
		free(src->v);
		memset(src, 0, sizeof(*src));
		return;
	}
	if (dst->n + src->n > dst->cap) {
		dst->cap = dst->n + src->n + 64;
		dst->v = h2_xrealloc(dst->v, dst->cap * sizeof(*dst->v));
	}
	memcpy(dst->v + dst->n, src->v, src->n * sizeof(*src->v));
	dst->n += src->n;
	free(src->v);
	memset(src, 0, sizeof(*src));
}

/* c (older than this epoch) is being replaced by a copy: free its block. */
static void release_block(struct h2_txctx *tx, struct h2_chain *c)
{
	struct h2_blockref b;
	bool ondisk;

	pthread_mutex_lock(&c->lock);
	ondisk = c->flags & H2_CHAIN_ONDISK;
	b = c->bref;
	pthread_mutex_unlock(&c->lock);
	if (ondisk)
		h2_free_add(tx, H2_FREE_BLOCK, &b, NULL);
	else
		h2_free_add(tx, H2_FREE_CHAIN, NULL, c);
}

static void release_subtree(struct h2_txctx *tx, struct h2_chain *c);

/* A chain of this epoch leaves the tree: free what its slots reference. */
static void discard(struct h2_txctx *tx, struct h2_chain *c)
{
	if (c->type != H2_BREF_INDIRECT)
		return;
	for (unsigned i = 0; i < H2_FANOUT; i++) {
		if (c->child[i])
			release_subtree(tx, c->child[i]);
		else if (!bref_empty(&slots(c)[i]))
			h2_free_add(tx, H2_FREE_TREE, &slots(c)[i], NULL);
	}
}

/* c and everything below it leave the live tree. */
static void release_subtree(struct h2_txctx *tx, struct h2_chain *c)
{
	struct h2_blockref b;
	bool ondisk;

	if (c->epoch == tx->epoch) {
		discard(tx, c);
		return;
	}
	pthread_mutex_lock(&c->lock);
	ondisk = c->flags & H2_CHAIN_ONDISK;
	b = c->bref;
	pthread_mutex_unlock(&c->lock);
	if (ondisk)
		h2_free_add(tx, H2_FREE_TREE, &b, NULL);
	else
		h2_free_add(tx, H2_FREE_CHAIN_TREE, NULL, c);
}

/* ---------------------------------------------------------------------- */
/* Modification (volume lock held exclusively).                           */

/* A copy of frozen chain c, private to tx's epoch. */
static struct h2_chain *chain_copy(struct h2_txctx *tx, struct h2_chain *c)
{
	struct h2_chain *n = chain_get(tx, c->type, c->level, c->key,
				       c->vol_id, NULL);

	pthread_mutex_lock(&c->lock);
	memcpy(n->data, c->data, H2_BLOCK_SIZE);
	if (c->child) {
		for (unsigned i = 0; i < H2_FANOUT; i++) {
			n->child[i] = c->child[i];
			if (n->child[i])
				h2_chain_ref(n->child[i]);
		}
	}
	pthread_mutex_unlock(&c->lock);
	chain_set_new(n, tx->epoch);
	tx->created++;
	return n;
}

/* The tree's root, made private to this epoch (created if empty). */
static struct h2_chain *cow_root(struct h2_txctx *tx, struct h2_tree *t)
{
	struct h2_chain *c = t->root, *n;

	if (!c) {
		n = chain_new(tx, H2_BREF_INDIRECT, t->levels, 0, t->vol_id);
		tx->created++;
		t->root = n;
		return n;
	}
	if (c->epoch == tx->epoch)
		return c;
	n = chain_copy(tx, c);
	release_block(tx, c);
	t->root = n;
	h2_chain_drop(c);
	return n;
}

/*
 * The indirect child in slot i of private chain p, made private too.
 * An empty slot gets a new empty chain when create is set (else NULL).
 * The child must be in memory already (h2_tree_prepare loaded it).
 */
static struct h2_chain *cow_child(struct h2_txctx *tx, struct h2_chain *p,
				  unsigned i, bool create)
{
	struct h2_chain *c = p->child[i], *n;
	uint64_t key = p->key + (uint64_t)i * h2_tree_leaf_span(p->level - 1);

	if (c && c->epoch == tx->epoch)
		return c;
	if (c) {
		n = chain_copy(tx, c);
		release_block(tx, c);
	} else if (bref_empty(&slots(p)[i])) {
		if (!create)
			return NULL;
		n = chain_new(tx, H2_BREF_INDIRECT, p->level - 1, key,
			      p->vol_id);
		tx->created++;
	} else {
		/* Unreachable when the caller prepared the range. */
		fprintf(stderr, "h2: internal error: indirect block at key "
				"%" PRIu64 " level %u not loaded before "
				"modification\n",
			key, p->level - 1);
		abort();
	}
	pthread_mutex_lock(&p->lock);
	p->child[i] = n;
	pthread_mutex_unlock(&p->lock);
	h2_chain_drop(c);
	return n;
}

/* The level-1 chain above leaf key, private to this epoch. */
static struct h2_chain *cow_path(struct h2_txctx *tx, struct h2_tree *t,
				 uint64_t key)
{
	struct h2_chain *p = cow_root(tx, t);

	while (p->level > 1)
		p = cow_child(tx, p, slot_of(key, p->level), true);
	return p;
}

/*
 * The leaf at key, private to this epoch, for the caller to fill.
 * prep: the leaf's contents on disk, read before the transaction began,
 * when the caller overwrites only part of the block; NULL when it
 * overwrites all of it.  buf: a block buffer the new chain takes (NULL:
 * allocate one).  A leaf that is already private is returned as is and
 * buf is left to the caller (*buf_used false).
 */
struct h2_chain *h2_tree_modify_leaf(struct h2_txctx *tx, struct h2_tree *t,
				     uint64_t key, const uint8_t *prep,
				     uint8_t *buf, bool *buf_used)
{
	struct h2_chain *p = cow_path(tx, t, key), *c, *n;
	unsigned i = slot_of(key, 1);

	*buf_used = false;
	c = p->child[i];
	if (c && c->epoch == tx->epoch)
		return c;
	n = chain_get(tx, t->leaf_type, 0, key, t->vol_id, buf);
	*buf_used = buf != NULL;
	if (prep) {
		/* The caller's snapshot predates this transaction; what the
		 * slot holds now wins (an earlier op may have trimmed it). */
		if (c)
			memcpy(n->data, c->data, H2_BLOCK_SIZE);
		else if (bref_empty(&slots(p)[i]))
			memset(n->data, 0, H2_BLOCK_SIZE);
		else
			memcpy(n->data, prep, H2_BLOCK_SIZE);
	}
	chain_set_new(n, tx->epoch);
	tx->created++;
	if (c)
		release_block(tx, c);
	else if (!bref_empty(&slots(p)[i]))
		h2_free_add(tx, H2_FREE_BLOCK, &slots(p)[i], NULL);
	pthread_mutex_lock(&p->lock);
	p->child[i] = n;
	pthread_mutex_unlock(&p->lock);
	h2_chain_drop(c);
	return n;
}

static bool chain_all_empty(struct h2_chain *p)
{
	for (unsigned i = 0; i < H2_FANOUT; i++)
		if (p->child[i] || !bref_empty(&slots(p)[i]))
			return false;
	return true;
}

/* Empty slot i of private chain p, freeing what it referenced. */
static void clear_slot(struct h2_txctx *tx, struct h2_chain *p, unsigned i)
{
	struct h2_chain *c = p->child[i];

	if (c)
		release_subtree(tx, c);
	else if (!bref_empty(&slots(p)[i]))
		h2_free_add(tx, H2_FREE_TREE, &slots(p)[i], NULL);
	pthread_mutex_lock(&p->lock);
	p->child[i] = NULL;
	memset(&slots(p)[i], 0, sizeof(struct h2_blockref));
	pthread_mutex_unlock(&p->lock);
	h2_chain_drop(c);
}

/* Remove leaves [first, last] below private p; true if p is now empty. */
static bool remove_in(struct h2_txctx *tx, struct h2_chain *p, uint64_t first,
		      uint64_t last)
{
	uint64_t span = h2_tree_leaf_span(p->level - 1);
	unsigned i0 = slot_of(first, p->level), i1 = slot_of(last, p->level);

	for (unsigned i = i0; i <= i1; i++) {
		uint64_t ck = p->key + i * span;
		uint64_t lo = first > ck ? first : ck;
		uint64_t hi = last < ck + span - 1 ? last : ck + span - 1;
		struct h2_chain *c;

		if (!p->child[i] && bref_empty(&slots(p)[i]))
			continue;
		if (p->level == 1 || (lo == ck && hi == ck + span - 1)) {
			clear_slot(tx, p, i);
			continue;
		}
		c = cow_child(tx, p, i, false);
		if (c && remove_in(tx, c, lo, hi))
			clear_slot(tx, p, i);
	}
	return chain_all_empty(p);
}

/* Remove leaves [first, last] (holes afterwards). */
void h2_tree_remove_range(struct h2_txctx *tx, struct h2_tree *t,
			  uint64_t first, uint64_t last)
{
	uint64_t cap = h2_tree_leaf_span(t->levels);
	struct h2_chain *root;

	if (!t->root || first >= cap)
		return;
	if (last >= cap)
		last = cap - 1;
	if (first == 0 && last == cap - 1) {
		h2_tree_discard(tx, t);
		return;
	}
	root = cow_root(tx, t);
	if (remove_in(tx, root, first, last)) {
		t->root = NULL;
		h2_chain_drop(root);
	}
}

/*
 * Drop the whole tree, freeing every block it owns.  A root that is not
 * in memory (its read failed) is freed by its blockref: the flush that
 * settles it reads the tree then.
 */
void h2_tree_discard(struct h2_txctx *tx, struct h2_tree *t)
{
	if (!t->root) {
		if (!bref_empty(&t->root_bref))
			h2_free_add(tx, H2_FREE_TREE, &t->root_bref, NULL);
		memset(&t->root_bref, 0, sizeof(t->root_bref));
		return;
	}
	release_subtree(tx, t->root);
	h2_chain_drop(t->root);
	t->root = NULL;
}

/*
 * Counting frees before a removal (for h2_freelist_reserve).  What the
 * tree stops referencing is either a chain older than the epoch (one
 * entry, whatever lies below it) or a non-empty slot without a chain
 * (one entry); a chain of the epoch is taken apart slot by slot
 * (discard()).  These walk the tree as remove_in() and h2_tree_discard()
 * will, without changing it, and count one entry more for every older
 * chain on the way that a removal copies.  Volume lock held exclusively,
 * after h2_tree_prepare (partially covered blocks are in memory).
 */
static uint64_t discard_frees(struct h2_chain *c, uint64_t epoch)
{
	uint64_t n = 0;

	if (c->type != H2_BREF_INDIRECT)
		return 0;
	pthread_mutex_lock(&c->lock);
	for (unsigned i = 0; i < H2_FANOUT; i++) {
		struct h2_chain *ch = c->child[i];

		if (ch)
			n += ch->epoch == epoch ? discard_frees(ch, epoch) : 1;
		else if (!bref_empty(&slots(c)[i]))
			n++;
	}
	pthread_mutex_unlock(&c->lock);
	return n;
}

/* As discard_frees, for a subtree about to be released. */
static uint64_t release_frees(struct h2_chain *c, uint64_t epoch)
{
	return c->epoch == epoch ? discard_frees(c, epoch) : 1;
}

static uint64_t remove_frees(struct h2_chain *p, uint64_t epoch,
			     uint64_t first, uint64_t last)
{
	uint64_t span = h2_tree_leaf_span(p->level - 1), n = 0;
	unsigned i0 = slot_of(first, p->level), i1 = slot_of(last, p->level);

	for (unsigned i = i0; i <= i1; i++) {
		uint64_t ck = p->key + i * span;
		uint64_t lo = first > ck ? first : ck;
		uint64_t hi = last < ck + span - 1 ? last : ck + span - 1;
		struct h2_chain *c;
		bool empty;

		pthread_mutex_lock(&p->lock);
		c = p->child[i];
		empty = bref_empty(&slots(p)[i]);
		pthread_mutex_unlock(&p->lock);
		if (!c && empty)
			continue;
		if (!c || p->level == 1 || (lo == ck && hi == ck + span - 1)) {
			n += c ? release_frees(c, epoch) : 1;
			continue;
		}
		/* Copied if older (its block freed), then entered; what
		 * it empties has no slots left to free. */
		n += (c->epoch != epoch) + remove_frees(c, epoch, lo, hi);
	}
	return n;
}

uint64_t h2_tree_remove_frees(struct h2_tree *t, uint64_t epoch,
			      uint64_t first, uint64_t last)
{
	uint64_t cap = h2_tree_leaf_span(t->levels);

	if (!t->root || first >= cap)
		return 0;
	if (last >= cap)
		last = cap - 1;
	if (first == 0 && last == cap - 1)
		return h2_tree_discard_frees(t, epoch);
	return (t->root->epoch != epoch) +
	       remove_frees(t->root, epoch, first, last);
}

uint64_t h2_tree_discard_frees(struct h2_tree *t, uint64_t epoch)
{
	if (!t->root)
		return bref_empty(&t->root_bref) ? 0 : 1;
	return release_frees(t->root, epoch);
}

/* Raise the tree's height to levels (never lowers it). */
void h2_tree_grow(struct h2_txctx *tx, struct h2_tree *t, uint8_t levels)
{
	while (t->levels < levels) {
		if (t->root) {
			struct h2_chain *n = chain_new(
				tx, H2_BREF_INDIRECT, t->levels + 1, 0,
				t->vol_id);

			tx->created++;
			n->child[0] = t->root; /* the reference moves */
			t->root = n;
		}
		t->levels++;
	}
}

/*
 * Drop clean indirect chains below p that nobody but their parent holds
 * and that hold no children themselves, until *budget chains are gone.
 * The parent's slot takes over from the chain: it gets the chain's
 * blockref first (a private parent's slot may be stale).
 */
static void evict_below(struct h2_chain *p, uint64_t *budget)
{
	for (unsigned i = 0; i < H2_FANOUT && *budget; i++) {
		struct h2_chain *c = p->child[i];
		bool leafless = true;

		if (!c || c->type != H2_BREF_INDIRECT)
			continue;
		evict_below(c, budget);
		for (unsigned k = 0; k < H2_FANOUT; k++)
			if (c->child[k])
				leafless = false;
		if (!leafless || !(c->flags & H2_CHAIN_ONDISK) ||
		    __atomic_load_n(&c->refs, __ATOMIC_ACQUIRE) != 1 ||
		    !*budget)
			continue;
		pthread_mutex_lock(&p->lock);
		slots(p)[i] = c->bref;
		p->child[i] = NULL;
		pthread_mutex_unlock(&p->lock);
		h2_chain_drop(c);
		(*budget)--;
	}
}

/*
 * Shrink the tree's cache by up to budget chains (volume lock held
 * exclusively, no flush running).  The root stays.
 */
void h2_tree_evict(struct h2_tree *t, uint64_t *budget)
{
	if (t->root)
		evict_below(t->root, budget);
}

/*
 * Upper bound of indirect chains a modification of leaves [first, last]
 * creates, whatever the tree holds: every one on the paths (writes) or
 * the two partially covered ones per level (removals).  A write creates
 * up to last - first + 1 leaves besides, and frees at most one block or
 * chain per chain it creates.
 */
uint64_t h2_tree_reserve_nodes(uint8_t levels, uint64_t first, uint64_t last,
			       bool write)
{
	uint64_t n = 0;

	for (unsigned l = 1; l <= levels; l++) {
		uint64_t a = first >> (H2_FANOUT_RADIX * l);
		uint64_t b = last >> (H2_FANOUT_RADIX * l);

		n += write ? b - a + 1 : (b - a + 1 < 2 ? b - a + 1 : 2);
	}
	return n;
}
