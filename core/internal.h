/*
 * internal.h - structures shared by the engine's modules.
 *
 * THE MODEL
 *
 * Every volume's data lives in a radix tree of chains (in-memory nodes
 * over on-disk blockrefs).  Time is cut into epochs: normal transactions
 * run in the current epoch E; the flush of epoch E writes exactly the
 * transactions of E.  A chain records the epoch that created it:
 *
 *   chain->epoch == E   private to epoch E: modified in place;
 *   chain->epoch <  E   frozen: it may belong to the image a flush is
 *                       writing, so a writer copies it (and, recursively,
 *                       its parents up to the volume root) instead.
 *
 * Consequences we rely on everywhere:
 *  - The parent of an epoch-E chain is an epoch-E chain: the modified
 *    chains of an epoch form a connected subtree hanging from the root,
 *    so the flusher finds them by following MODIFIED children only.
 *  - A frozen chain never changes logically.  Its child[] may still gain
 *    clean children (a reader loaded them) or lose them (eviction of
 *    written data chains), and the flusher fills in the blockrefs of
 *    children it wrote; all of that happens under chain->lock.
 *  - Physical blocks are allocated only by the flusher (delayed
 *    allocation), so normal transactions never touch the freemap; they
 *    append what they stop referencing to the epoch's free list.
 *
 * The freeze (the seed's interlock): a flush sets freeze_pending; new
 * transactions wait; once the running ones are done the flusher captures
 * every volume's root, bumps cur_epoch and lets the waiters go.  From then
 * on new transactions run concurrently with the flush.
 *
 * LOCK ORDER (take in this order, release in any):
 *   st->flush_lock          flusher state, sync waiters
 *   st->txn_lock            epoch, active count, freeze (never held
 *                           while waiting for a volume lock)
 *   vol->lock (rwlock)      one volume's tree; writers exclusive
 *   st->dir_lock            volume table (taken inside a volume's lock
 *                           by resize, info and root retries; code that
 *                           needs both the other way drops dir_lock
 *                           first)
 *   chain->lock             child[] and blockrefs of one chain; parent
 *                           before child, never two siblings
 *   st->free_lock, st->space_lock, st->fm_lock, st->spare_lock   leaves
 */
#ifndef H2_INTERNAL_H
#define H2_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "format.h"
#include "h2core.h"
#include "util.h"

struct h2_store;

enum h2_chain_flags {
	H2_CHAIN_MODIFIED = 1u << 0, /* content changed, needs a new block */
	H2_CHAIN_ONDISK = 1u << 1,   /* bref names its current block */
};

struct h2_chain {
	pthread_mutex_t lock;
	int refs;		   /* __atomic */
	uint32_t flags;		   /* enum h2_chain_flags, under lock */
	uint8_t type;		   /* H2_BREF_DATA / INDIRECT / DIR */
	uint8_t level;
	uint64_t key;		   /* first leaf key covered */
	uint64_t epoch;		   /* creating epoch; 0 = loaded from disk */
	uint64_t vol_id;	   /* owner, for space accounting */
	struct h2_store *st;
	struct h2_blockref bref;   /* valid when ONDISK */
	uint8_t *data;		   /* H2_BLOCK_SIZE bytes */
	struct h2_chain **child;   /* INDIRECT: H2_FANOUT slots */
	/* A data leaf's check code, computed when a transaction last wrote
	 * it (data still in the CPU's cache), if check_set: the flush of its
	 * epoch uses it instead of reading the block again.  Only the
	 * epoch's transactions write a chain, under the volume lock. */
	uint64_t check;
	bool check_set;
	struct h2_chain *rsv_next; /* in a reserve, unused (chain.c) */
};

/*
 * Chains set aside before an install phase, which cannot fail (chain.c,
 * "Allocation"): nodes are whole indirect chains (zeroed block and
 * child array), leaves bare chains that take the caller's block.
 */
struct h2_chain_rsv {
	struct h2_chain *nodes, *leaves; /* through rsv_next */
	uint64_t nnodes, nleaves;
};

/*
 * A radix tree.  root == NULL with root_bref EMPTY is an empty tree;
 * root == NULL otherwise means "not loaded yet".
 */
struct h2_tree {
	struct h2_chain *root;
	struct h2_blockref root_bref;
	uint8_t levels; /* root level, >= 1 */
	uint8_t leaf_type; /* H2_BREF_DATA or H2_BREF_DIR */
	uint64_t vol_id;
};

/* What a transaction stops referencing; settled by the epoch's flush. */
enum h2_free_kind {
	H2_FREE_BLOCK,	    /* bref's block only */
	H2_FREE_TREE,	    /* bref's block and everything below it */
	H2_FREE_CHAIN,	    /* chain's block, once the flusher wrote it */
	H2_FREE_CHAIN_TREE, /* chain's subtree, once written */
	H2_FREE_SNAP,	    /* a deleted snapshot (bref: its root) */
	H2_FREE_ROLLBACK,   /* vol_id's tree became snapshot snap_id's */
};

/*
 * A free entry.  The flusher settles them in order, deleted snapshots
 * first (against the lineage as the previous flush left it), then the
 * rest against the snapshots that remain: see flush.c, "Shared blocks".
 */
struct h2_free {
	uint8_t kind;
	uint64_t vol_id;	/* the volume whose tree lost it */
	uint64_t origin_tid;	/* that volume's clone origin (0: none) */
	struct h2_blockref bref;
	struct h2_chain *chain; /* holds a reference */
	uint64_t snap_id;	/* SNAP: the snapshot; ROLLBACK: its target */
	uint64_t snap_tid;	/* SNAP */
	uint32_t head_slot;	/* SNAP: the volume's directory slot */
};

struct h2_freelist {
	struct h2_free *v;
	size_t n, cap;
};

/* One volume, whether or not a handle is open on it. */
struct h2_vol {
	pthread_rwlock_t lock;	 /* the tree; writers exclusive */
	struct h2_store *st;
	uint32_t slot;		 /* record index in the directory */
	struct h2_volrec rec;	 /* rec.root is stale: tree is current */
	struct h2_tree tree;
	int opens;		 /* under st->dir_lock */
	int refs;		 /* __atomic; table + handles + flush */
	bool deleted;		 /* under st->dir_lock */
	int root_err;		 /* root block unreadable: I/O refused */
	/* Space as of the last flush (dir_lock); see struct h2_volrec. */
	uint64_t used_blocks;
	uint64_t excl_blocks;
	uint64_t snap_blocks;
	char full[2 * H2_NAME_MAX + 2]; /* "name" or "volume@snapshot" */
	bool snap;		 /* a snapshot (read-only) */
	bool pending;		 /* snapshot not durable yet (dir_lock) */
	/* Deleting a snapshot of this lineage waits until this epoch is
	 * durable: set by rollbacks (volume) and by deleting a clone
	 * (snapshot), whose frees must settle first (dir_lock). */
	uint64_t barrier_epoch;
};

/* Freemap: one in-memory page per on-disk freemap page, loaded lazily. */
struct h2_fmpage {
	uint64_t *bits;	   /* H2_FM_BITS / 64 words, NULL = not loaded */
	uint32_t used;
	bool dirty;	   /* changed since last written */
};

struct h2_freemap {
	uint32_t npages;
	struct h2_fmpage *pages;
	uint8_t *sel;	   /* selector bits, as in the durable header */
	uint64_t cursor;   /* next-fit allocation cursor (block number) */
	bool no_free_word; /* a scan found no 64 free blocks in a row; a
			      free that empties a bitmap word clears it */
};

struct h2_store {
	struct h2_dev *dev;
	struct h2_store_opts opts;
	bool read_only;

	/* Immutable after open. */
	uint64_t dev_size;
	uint64_t total_blocks;
	uint64_t fm_base;
	uint32_t fm_pages;
	unsigned hdr_copies;
	uint8_t uuid[16];
	uint64_t format_time_ns;

	/* Volume table, by directory slot: vols has room for vols_cap
	 * slots (grown on demand, see h2_vols_reserve), never fewer than
	 * nslots. */
	pthread_mutex_t dir_lock;
	struct h2_vol **vols;
	uint32_t nslots;       /* slots [0, nslots) may be used */
	uint32_t vols_cap;
	uint64_t next_vol_id;
	uint64_t dir_epoch;    /* last epoch that changed the table */

	/* Epochs and the freeze interlock. */
	pthread_mutex_t txn_lock;
	pthread_cond_t txn_cv;
	uint64_t cur_epoch;
	uint32_t active;       /* transactions running in cur_epoch */
	bool freeze_pending;
	uint64_t dirty_epoch;  /* newest epoch holding a change */

	/* Frees of cur_epoch; capacity promised to running transactions
	 * (h2_frees_reserve). */
	pthread_mutex_t free_lock;
	struct h2_freelist frees;
	size_t frees_reserved;

	/* Chains allocated for reserves and not used (chain.c). */
	pthread_mutex_t spare_lock;
	struct h2_chain_rsv spares;

	/* Space: blocks allocated on disk plus blocks promised to dirty
	 * chains (one per MODIFIED chain, plus open reservations). */
	pthread_mutex_t space_lock;
	uint64_t used_blocks;
	uint64_t reserved_blocks;
	uint64_t dirty_chains;	/* __atomic */
	uint64_t chains;	/* __atomic: chains in memory */

	/* Flusher and syncs. */
	pthread_mutex_t run_lock;	/* serializes flushes */
	pthread_mutex_t flush_lock;
	pthread_cond_t flush_cv;	/* wakes the flusher */
	pthread_cond_t done_cv;		/* flush finished */
	pthread_t flusher;
	bool flusher_running;
	bool stop;
	bool flushing;
	uint64_t sync_target;	/* flush at least through this epoch */
	uint64_t durable_epoch; /* newest durable header tid */
	int failed;		/* first flush error; writes refused */

	/* Flusher-private (or open/close while single-threaded). */
	struct h2_freemap fm;
	struct h2_tree dir_tree;
	struct h2_volrec *dir_disk; /* records as last written, for the */
	uint32_t dir_disk_n;	    /* first dir_disk_n slots; zeros past */
	uint64_t hdr_tid;	/* tid of the newest durable header */
	unsigned valid_hdr_mask; /* header copies valid at open */

	/* Statistics (__atomic). */
	uint64_t flushes;
	uint64_t flush_ns_total;
	uint64_t last_flush_ns;
	uint64_t client_written;
	uint64_t client_read;
	uint64_t write_waits;
	uint64_t unreserved_allocs; /* see struct h2_store_stats */
	unsigned hard_waiters;	/* writers in hard_wait(); __atomic */
	uint64_t lifetime_flushes;  /* from the header */
	uint64_t written_base;	    /* device bytes written before open */
};

/* chain.c: chains and the copy-on-write tree. */
typedef int (*h2_leaf_cb)(void *arg, uint64_t key, uint64_t count,
			  struct h2_chain *c, const struct h2_blockref *b);

struct h2_txctx {
	struct h2_store *st;
	uint64_t epoch;
	uint64_t vol_id;
	uint64_t origin_tid;	   /* the volume's clone origin, 0: none */
	uint64_t created;	   /* MODIFIED chains created */
	struct h2_freelist *frees; /* what the tree stopped referencing */
	struct h2_chain_rsv *rsv;  /* new chains come from here; NULL:
				      allocated, waiting for memory */
	bool reserved;		   /* rsv and frees were sized beforehand:
				      going past them is counted */
};

int h2_chain_rsv_fill(struct h2_store *st, struct h2_chain_rsv *rsv,
		      uint64_t nodes, uint64_t leaves);
void h2_chain_rsv_release(struct h2_store *st, struct h2_chain_rsv *rsv);
void h2_chain_spares_free(struct h2_store *st);
void h2_chain_ref(struct h2_chain *c);
void h2_chain_drop(struct h2_chain *c);
int h2_chain_load(struct h2_store *st, const struct h2_blockref *bref,
		  uint64_t vol_id, struct h2_chain **out);
int h2_chain_get_child(struct h2_chain *p, unsigned i, struct h2_chain **out,
		       struct h2_blockref *bref);
int h2_chain_read_block(struct h2_store *st, const struct h2_blockref *bref,
			void *buf, const char *what);
void h2_bref_set_child_slot(struct h2_chain *p, unsigned i,
			    const struct h2_blockref *b);
uint64_t h2_tree_leaf_span(unsigned level);
uint8_t h2_levels_for(uint64_t nleaves);
int h2_tree_load_root(struct h2_store *st, struct h2_tree *t);
int h2_tree_walk(struct h2_store *st, struct h2_tree *t, uint64_t first,
		 uint64_t last, h2_leaf_cb cb, void *arg);
/* h2_tree_walk over indirect blocks in memory only: -EAGAIN when one
 * would have to be read from the device. */
int h2_tree_walk_cached(struct h2_store *st, struct h2_tree *t,
			uint64_t first, uint64_t last, h2_leaf_cb cb,
			void *arg);
int h2_tree_prepare(struct h2_store *st, struct h2_tree *t, uint64_t first,
		    uint64_t last, bool whole);
bool h2_tree_leaf_present(struct h2_tree *t, uint64_t key);
struct h2_chain *h2_tree_modify_leaf(struct h2_txctx *tx, struct h2_tree *t,
				     uint64_t key, const uint8_t *prep,
				     uint8_t *buf, bool *buf_used);
void h2_tree_remove_range(struct h2_txctx *tx, struct h2_tree *t,
			  uint64_t first, uint64_t last);
void h2_tree_discard(struct h2_txctx *tx, struct h2_tree *t);
void h2_tree_grow(struct h2_txctx *tx, struct h2_tree *t, uint8_t levels);
void h2_tree_evict(struct h2_tree *t, uint64_t *budget);
uint64_t h2_tree_reserve_nodes(uint8_t levels, uint64_t first, uint64_t last,
			       bool write);
uint64_t h2_tree_remove_frees(struct h2_tree *t, uint64_t epoch,
			      uint64_t first, uint64_t last);
uint64_t h2_tree_discard_frees(struct h2_tree *t, uint64_t epoch);
void h2_free_add(struct h2_txctx *tx, enum h2_free_kind kind,
		 const struct h2_blockref *bref, struct h2_chain *chain);
void h2_freelist_clear(struct h2_freelist *fl);
void h2_freelist_splice(struct h2_freelist *dst, struct h2_freelist *src);
/* Room for n more entries in fl: 0 or -ENOMEM (fl unchanged). */
int h2_freelist_reserve(struct h2_freelist *fl, size_t n);
/*
 * The store's list: room for n more entries that this transaction will
 * add with h2_frees_commit (which splices src and gives back reserved).
 * Inside an epoch (h2_epoch_begin): a freeze finds no reservation.
 */
int h2_frees_reserve(struct h2_store *st, size_t n);
void h2_frees_commit(struct h2_store *st, struct h2_freelist *src,
		     size_t reserved);

/* alloc.c: the freemap (flusher thread, or single-threaded open). */
int h2_fm_init(struct h2_store *st, const uint8_t *sel);
void h2_fm_destroy(struct h2_store *st);
int h2_fm_load_page(struct h2_store *st, uint32_t p);
int h2_fm_fresh_page(struct h2_store *st, uint32_t p);
int h2_fm_page_verify(const uint8_t *buf, uint32_t p, uint64_t max_tid,
		      uint64_t *bits, const char **why);
int h2_fm_alloc(struct h2_store *st, uint64_t *blockno);
int h2_fm_set(struct h2_store *st, uint64_t blockno, bool used);
int h2_fm_test(struct h2_store *st, uint64_t blockno, bool *used);
int h2_fm_write_dirty(struct h2_store *st, uint64_t tid, uint8_t *sel);
void h2_fm_commit(struct h2_store *st, const uint8_t *sel);
bool h2_block_reserved(const struct h2_store *st, uint64_t blockno);

/* store.c */
int h2_space_reserve(struct h2_store *st, uint64_t blocks, bool is_trim);
void h2_space_unreserve(struct h2_store *st, uint64_t blocks);
int h2_hdr_read_best(struct h2_dev *dev, struct h2_volhdr *hdr, uint8_t **sel,
		     int *copy, unsigned *valid_mask);
int h2_hdr_validate(const void *buf, size_t len, uint64_t dev_size,
		    const char **why);
int h2_hdr_write(struct h2_store *st, uint64_t tid, const uint8_t *sel,
		 const struct h2_blockref *dir_root);
void h2_vol_ref(struct h2_vol *v);
void h2_vol_drop(struct h2_vol *v);
int h2_vol_root_retry(struct h2_vol *v);
const char *h2_vol_root_why(const struct h2_vol *v);
void h2_dir_disk_reserve(struct h2_store *st, uint32_t slots);

/* flush.c: flushes, the flusher, syncs and the transaction interlock. */
int h2_epoch_begin(struct h2_store *st, uint64_t *epoch);
void h2_epoch_end(struct h2_store *st, bool changed);
int h2_flush_start(struct h2_store *st);
void h2_flush_stop(struct h2_store *st);
int h2_flush_wait(struct h2_store *st, uint64_t epoch, uint64_t *tid);
/* 0: flushed an epoch, 1: nothing to flush, < 0: error (store failed). */
int h2_flush_run_once(struct h2_store *st);
void h2_flush_kick(struct h2_store *st);

#endif /* H2_INTERNAL_H */
