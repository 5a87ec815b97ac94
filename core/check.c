/*
 * check.c - offline consistency check of a store (h2d check).
 *
 * The checker reads the device and never writes it, and it does not open
 * a store: it walks the on-disk structures of format.h directly, so that
 * it sees exactly what the next h2_store_open() would see, and it keeps
 * going past damage that would make the engine give up.
 *
 * Order of work:
 *
 *   1. headers    read every copy; report each one that fails validation
 *                 (a damaged copy is a problem even though the store still
 *                 opens from another); take the valid one with the highest
 *                 tid, as h2_store_open() does.
 *   2. freemap    load every page from the slot the header selects into a
 *                 bitmap of the whole device; a damaged page is reported
 *                 and its blocks are left out of the comparisons.
 *   3. trees      walk the directory and then every volume's tree from
 *                 the blockrefs down, verifying each block's check code
 *                 and each blockref against its slot (type, level, key,
 *                 keybits), marking every block in a "referenced" bitmap:
 *                 a block seen twice, out of range or inside a reserved
 *                 zone is reported where it is referenced, and so is a
 *                 referenced block that the freemap calls free.
 *   4. compare    allocated but unreferenced (and not reserved) blocks are
 *                 leaks; reserved blocks must be allocated; the header's
 *                 used count and each volume's used count must match what
 *                 was counted.
 *
 * Memory is bounded by three bitmaps of one bit per device block (freemap,
 * referenced, reserved), the volume records, and at most CHECK_MAX_PROBLEMS
 * listed problems; recursion is bounded by H2_MAX_LEVELS because a child
 * must sit exactly one level below its parent.
 *
 * Status: UNOPENABLE when no header copy is valid or any part of the
 * directory cannot be read (h2_store_open() would fail), else PROBLEMS
 * when anything was reported, else CLEAN.
 */
#include "check.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CHECK_MAX_PROBLEMS 1000 /* listed; the rest are counted */
#define CHECK_LIST_MAX	   20	/* per kind of freemap mismatch */
#define FM_WORDS	   (H2_FM_BITS / 64)

_Static_assert(H2_FM_BITS % 64 == 0, "freemap pages hold whole words");

/* One tree being walked: the directory or a volume. */
struct chk_tree {
	char name[160];	   /* "volume vm1" or "directory", for messages */
	uint8_t leaf_type; /* H2_BREF_DATA or H2_BREF_DIR */
	uint64_t nleaves;  /* leaf keys must be below this */
	uint64_t blocks;   /* blocks this tree references */
	bool incomplete;   /* part of it could not be walked */
	bool shared;	   /* the last mark() found a shared subtree */
};

/* A volume record found in the directory. */
struct chk_rec {
	uint32_t slot;
	uint64_t leaf_tid; /* birth tid of the DIR block holding it */
	struct h2_volrec rec;
};

/* Counters of a kind of block-level mismatch listed up to CHECK_LIST_MAX. */
struct chk_kind {
	uint64_t blocks;
	unsigned listed;
	uint64_t unlisted;
};

struct chk {
	struct h2_dev *dev;
	struct h2_check_report *rep;
	size_t cap;	  /* of rep->problems */
	uint64_t dropped; /* problems beyond CHECK_MAX_PROBLEMS */
	int err;	  /* -ENOMEM: the report is incomplete */
	bool unopenable;

	struct h2_volhdr hdr; /* the newest valid header */
	char hdr_where[160];  /* "header copy N (offset X)" of hdr */
	uint8_t *sel;	      /* its selector bits */
	struct h2_store geo;  /* geometry only, for h2_block_reserved() */

	uint64_t nwords; /* words per bitmap: fm_pages * FM_WORDS */
	uint64_t *fm;	 /* allocated, as the freemap says */
	uint64_t *ref;	 /* referenced by a tree */
	uint64_t *res;	 /* reserved zones and the tail */
	bool *fm_known;	 /* per page: loaded and verified */
	bool fm_all_known;

	uint8_t *runbuf; /* a run of data leaves: runcap blocks, grown */
	unsigned runcap; /* to the longest run (at most H2_FANOUT) */
	struct chk_rec *recs;
	size_t nrecs, caprecs;
	struct chk_kind free_ref;
};

static bool bit_get(const uint64_t *map, uint64_t b)
{
	return (map[b / 64] >> (b % 64)) & 1;
}

static void bit_set(uint64_t *map, uint64_t b)
{
	map[b / 64] |= 1ull << (b % 64);
}

/* Format into buf (varargs, so no truncation warnings on long names). */
static void fmt(char *buf, size_t n, const char *f, ...)
    __attribute__((format(printf, 3, 4)));
static void fmt(char *buf, size_t n, const char *f, ...)
{
	va_list ap;

	va_start(ap, f);
	vsnprintf(buf, n, f, ap);
	va_end(ap);
}

/* Append a problem "where: what" (counted only, past the list's cap). */
static void problem(struct chk *c, const char *where, const char *what, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(struct chk *c, const char *where, const char *what, ...)
{
	struct h2_check_report *rep = c->rep;
	struct h2_check_problem *p;
	va_list ap;

	if (rep->nproblems >= CHECK_MAX_PROBLEMS) {
		c->dropped++;
		return;
	}
	if (rep->nproblems == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		void *n = realloc(rep->problems, cap * sizeof(*p));

		if (!n) {
			c->err = -ENOMEM;
			c->dropped++;
			return;
		}
		rep->problems = n;
		c->cap = cap;
	}
	p = &rep->problems[rep->nproblems++];
	snprintf(p->where, sizeof(p->where), "%s", where);
	va_start(ap, what);
	vsnprintf(p->what, sizeof(p->what), what, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------------- */
/* 1. Headers.                                                            */

/*
 * Read and validate every header copy; pick the newest valid one.
 * Returns false if none is valid (c->unopenable is then set).
 */
static bool check_headers(struct chk *c)
{
	unsigned n = h2_hdr_copies(c->dev->size), exist;
	uint8_t *buf = malloc(H2_HDR_REGION);
	const char *why[H2_HDR_COPIES] = {0};
	struct h2_volhdr h[H2_HDR_COPIES];
	char where[160];
	int best = -1;

	if (!buf) {
		c->err = -ENOMEM;
		return false;
	}
	for (unsigned i = 0; i < n; i++) {
		int r =
		    h2_dev_pread(c->dev, buf, H2_HDR_REGION, h2_hdr_offset(i));

		if (r < 0) {
			why[i] = "read failed";
			continue;
		}
		if (h2_hdr_validate(buf, H2_HDR_REGION, c->dev->size, &why[i]) <
		    0)
			continue;
		memcpy(&h[i], buf, sizeof(h[i]));
		if (h[i].copy_index != i) {
			why[i] = "its copy index names another copy (a "
				 "misplaced header)";
			continue;
		}
		if (best < 0 || h[i].tid > h[best].tid) {
			size_t selbytes = (h[i].fm_pages + 7) / 8;
			uint8_t *s = malloc(selbytes ? selbytes : 1);

			if (!s) {
				c->err = -ENOMEM;
				break;
			}
			memcpy(s, buf + H2_HDR_FIXED, selbytes);
			free(c->sel);
			c->sel = s;
			best = (int)i;
		}
	}
	free(buf);
	/* Copies beyond the formatted size (a device that grew since) are
	 * not part of the store; everything else must be valid. */
	exist = best >= 0 ? h2_hdr_copies(h[best].dev_size) : n;
	c->rep->header_copies = exist;
	for (unsigned i = 0; i < exist; i++) {
		fmt(where, sizeof(where), "header copy %u (offset %" PRIu64 ")",
		    i, h2_hdr_offset(i));
		if (why[i]) {
			problem(c, where, "invalid: %s", why[i]);
			continue;
		}
		if (best < 0)
			continue;
		if (memcmp(h[i].uuid, h[best].uuid, sizeof(h[i].uuid)) ||
		    h[i].dev_size != h[best].dev_size ||
		    h[i].fm_base != h[best].fm_base) {
			problem(c, where,
				"valid, but belongs to a different store "
				"(uuid or geometry differs from copy %d)",
				best);
			continue;
		}
		c->rep->headers_valid++;
	}
	if (best < 0) {
		fmt(where, sizeof(where), "%s", c->dev->name);
		problem(c, where,
			"no valid h2 volume header among %u cop%s: not an h2 "
			"store, or every copy is damaged",
			n, n == 1 ? "y" : "ies");
		c->unopenable = true;
		return false;
	}
	c->hdr = h[best];
	fmt(c->hdr_where, sizeof(c->hdr_where),
	    "header copy %d (offset %" PRIu64 ")", best,
	    h2_hdr_offset((unsigned)best));
	c->rep->tid = c->hdr.tid;
	c->rep->blocks_total = c->hdr.total_blocks;
	c->geo.dev_size = c->hdr.dev_size;
	c->geo.total_blocks = c->hdr.total_blocks;
	c->geo.fm_base = c->hdr.fm_base;
	c->geo.fm_pages = c->hdr.fm_pages;
	c->geo.hdr_copies = exist;
	return true;
}

/* ---------------------------------------------------------------------- */
/* 2. Freemap.                                                            */

/* Mark blocks [first, end) reserved, a word at a time where it can. */
static void res_range(struct chk *c, uint64_t first, uint64_t end)
{
	uint64_t b = first;

	if (end > c->nwords * 64)
		end = c->nwords * 64;
	for (; b < end && b % 64; b++)
		bit_set(c->res, b);
	for (; b < end && end - b >= 64; b += 64)
		c->res[b / 64] = ~0ull;
	for (; b < end; b++)
		bit_set(c->res, b);
}

/* Bits of map set among blocks [0, n). */
static uint64_t popcount_below(const uint64_t *map, uint64_t n)
{
	uint64_t count = 0;

	for (uint64_t w = 0; w * 64 < n; w++) {
		uint64_t m = map[w];

		if (n - w * 64 < 64)
			m &= (1ull << (n - w * 64)) - 1;
		count += (uint64_t)__builtin_popcountll(m);
	}
	return count;
}

/* True if the reserved bitmap agrees with the allocator around block b. */
static bool res_agrees(const struct chk *c, uint64_t b)
{
	for (uint64_t x = b ? b - 1 : 0; x <= b + 1; x++)
		if (x < c->geo.total_blocks &&
		    bit_get(c->res, x) != h2_block_reserved(&c->geo, x))
			return false;
	return true;
}

/*
 * Build the reserved bitmap: the zones h2_block_reserved() tests, set as
 * ranges rather than with a call per block (a big device has hundreds of
 * millions), then checked against it at every range's edges.
 */
static void build_reserved(struct chk *c)
{
	uint64_t zone = (uint64_t)c->geo.fm_pages * 2 * H2_BLOCK_SIZE;
	uint64_t edges[2 * H2_HDR_COPIES + 2];
	unsigned n = 0;

	for (unsigned i = 0; i < c->geo.hdr_copies; i++) {
		edges[n++] = h2_hdr_offset(i) / H2_BLOCK_SIZE;
		edges[n++] = (h2_hdr_offset(i) + H2_HDR_REGION) / H2_BLOCK_SIZE;
		res_range(c, edges[n - 2], edges[n - 1]);
	}
	edges[n++] = c->geo.fm_base / H2_BLOCK_SIZE;
	edges[n++] = (c->geo.fm_base + zone) / H2_BLOCK_SIZE;
	res_range(c, edges[n - 2], edges[n - 1]);
	res_range(c, c->geo.total_blocks, c->nwords * 64);
	for (unsigned i = 0; i < n; i++)
		if (!res_agrees(c, edges[i]))
			c->err = -EINVAL; /* alloc.c's zones changed */
	c->rep->blocks_reserved = popcount_below(c->res, c->geo.total_blocks);
}

/* Load every freemap page from its selected slot into c->fm. */
static void load_freemap(struct chk *c)
{
	uint8_t buf[H2_BLOCK_SIZE];
	char where[160];

	c->fm_all_known = true;
	for (uint32_t p = 0; p < c->geo.fm_pages; p++) {
		unsigned s = (c->sel[p / 8] >> (p % 8)) & 1;
		uint64_t off = h2_fm_slot_offset(c->geo.fm_base, p, s);
		const char *why = NULL;
		int r;

		fmt(where, sizeof(where),
		    "freemap page %u slot %u (offset %" PRIu64 ")", p, s, off);
		r = h2_dev_pread(c->dev, buf, sizeof(buf), off);
		if (r < 0)
			why = "read failed";
		else
			r = h2_fm_page_verify(buf, p, c->hdr.tid,
					      c->fm + (uint64_t)p * FM_WORDS,
					      &why);
		if (r < 0) {
			problem(c, where,
				"damaged (%s); the allocation state of its "
				"%u blocks was not compared",
				why, H2_FM_BITS);
			memset(c->fm + (uint64_t)p * FM_WORDS, 0,
			       FM_WORDS * sizeof(uint64_t));
			c->fm_all_known = false;
			continue;
		}
		c->fm_known[p] = true;
	}
}

/* ---------------------------------------------------------------------- */
/* 3. Trees.                                                              */

/* Where a block of tree t is, for messages. */
static void where_block(char *buf, size_t n, const struct chk_tree *t,
			const struct h2_blockref *b)
{
	fmt(buf, n,
	    "%s block at device offset %" PRIu64 " key %" PRIu64 " level %u",
	    t->name, (uint64_t)H2_BREF_OFFSET(b), b->key, b->level);
}

/*
 * Where a block is, formatted only when a problem is reported: the walk
 * visits every block, and most have none.
 */
struct where_lazy {
	const struct chk_tree *t;
	const struct h2_blockref *b;
	char buf[160];
};

static const char *where_of(struct where_lazy *w)
{
	if (!w->buf[0])
		where_block(w->buf, sizeof(w->buf), w->t, w->b);
	return w->buf;
}

/*
 * What is wrong with a volume record, or NULL.  *fatal: the engine's
 * directory loader refuses it too, so the store does not open.
 */
static const char *rec_damage(const struct h2_volrec *rec, bool *fatal)
{
	uint64_t nleaves = (rec->size + H2_BLOCK_SIZE - 1) / H2_BLOCK_SIZE;

	*fatal = true;
	if (rec->name_len == 0 || rec->name_len > H2_NAME_MAX ||
	    rec->name[rec->name_len] != '\0')
		return "name length is invalid";
	if (rec->levels < 1 || rec->levels > H2_MAX_LEVELS)
		return "tree height is out of range";
	if (rec->size > H2_VOLUME_MAX_SIZE)
		return "size is out of range";
	*fatal = false;
	if (strlen(rec->name) != rec->name_len ||
	    !h2_vol_name_valid(rec->name))
		return "name holds invalid characters";
	if (rec->size == 0)
		return "size is 0";
	if (rec->levels < h2_levels_for(nleaves))
		return "tree height is too small for the volume's size";
	if (rec->id == 0)
		return "volume id is 0";
	return NULL;
}

/* The records of one DIR block (key = leaf index). */
static void dir_leaf(struct chk *c, const struct h2_blockref *b,
		     const uint8_t *data)
{
	char where[160];

	for (unsigned i = 0; i < H2_VOLREC_PER_BLOCK; i++) {
		uint32_t slot = (uint32_t)(b->key * H2_VOLREC_PER_BLOCK + i);
		struct chk_rec *cr;
		struct h2_volrec rec;
		const char *why;
		bool fatal;

		memcpy(&rec, data + i * H2_VOLREC_SIZE, sizeof(rec));
		if (!(rec.flags & H2_VOLREC_USED))
			continue;
		why = rec_damage(&rec, &fatal);
		if (why) {
			fmt(where, sizeof(where),
			    "directory record %u (device offset %" PRIu64 ")",
			    slot,
			    (uint64_t)H2_BREF_OFFSET(b) + i * H2_VOLREC_SIZE);
			problem(c, where, "damaged: %s%s", why,
				fatal ? "; the store cannot be opened" : "");
			if (fatal) {
				c->unopenable = true;
				continue;
			}
		}
		if (c->nrecs == c->caprecs) {
			size_t cap = c->caprecs ? c->caprecs * 2 : 16;
			void *n = realloc(c->recs, cap * sizeof(*c->recs));

			if (!n) {
				c->err = -ENOMEM;
				return;
			}
			c->recs = n;
			c->caprecs = cap;
		}
		cr = &c->recs[c->nrecs++];
		cr->slot = slot;
		cr->leaf_tid = b->birth_tid;
		cr->rec = rec;
	}
}

/* Check the blockref in slot i of indirect block p; true if it fits. */
static bool child_fits(struct chk *c, struct chk_tree *t,
		       const struct h2_blockref *p, unsigned i,
		       const struct h2_blockref *b)
{
	uint64_t want_key =
	    p->key + (uint64_t)i * h2_tree_leaf_span(p->level - 1u);
	uint8_t want_type = p->level == 1 ? t->leaf_type : H2_BREF_INDIRECT;
	uint8_t want_level = (uint8_t)(p->level - 1);
	char where[160];

	if (b->type == want_type && b->level == want_level &&
	    b->key == want_key && b->keybits == H2_FANOUT_RADIX * want_level)
		return true;
	where_block(where, sizeof(where), t, p);
	problem(c, where,
		"slot %u holds an inconsistent blockref (type %u level %u key "
		"%" PRIu64 " keybits %u; expected type %u level %u key "
		"%" PRIu64 " keybits %u): the subtree below it was not "
		"checked",
		i, b->type, b->level, b->key, b->keybits, want_type, want_level,
		want_key, H2_FANOUT_RADIX * want_level);
	return false;
}

/*
 * A blockref to a subtree shared with a tree walked before: the subtree
 * is not walked again, but the engine reads its top block through this
 * blockref, which must carry that block's check code as well, and an
 * indirect block's slots must fit this blockref's level and key as they
 * fit the first one's.  (A damaged copy of a shared blockref would
 * otherwise pass here and fail every read through it.)  What lies below
 * was checked through the first blockref: at the same level and key,
 * the engine reads it alike.  Not counted as verified: the block was.
 * buf holds the block.  False if the check code does not match.
 */
static bool shared_check(struct chk *c, struct chk_tree *t,
			 const struct h2_blockref *b, const uint8_t *buf,
			 struct where_lazy *wl)
{
	uint64_t found = h2_check64(buf, H2_BLOCK_SIZE);

	if (found == b->check)
		return true;
	problem(c, where_of(wl),
		"checksum mismatch on a blockref to a block shared with "
		"another tree (blockref says %016" PRIx64
		", block holds %016" PRIx64 ")",
		b->check, found);
	if (b->type != H2_BREF_DATA)
		t->incomplete = true;
	return false;
}

/* The same for an indirect block (data leaves: walk_data, in runs). */
static void verify_shared(struct chk *c, struct chk_tree *t,
			  const struct h2_blockref *b, struct where_lazy *wl)
{
	uint8_t buf[H2_BLOCK_SIZE];
	const struct h2_blockref *s = (const struct h2_blockref *)buf;
	int r = h2_dev_pread(c->dev, buf, sizeof(buf), H2_BREF_OFFSET(b));

	if (r < 0) {
		problem(c, where_of(wl), "read failed: %s", strerror(-r));
		return;
	}
	if (!shared_check(c, t, b, buf, wl) || b->type != H2_BREF_INDIRECT ||
	    b->level < 1)
		return;
	for (unsigned i = 0; i < H2_FANOUT; i++)
		if (s[i].type != H2_BREF_EMPTY &&
		    !child_fits(c, t, b, i, &s[i]))
			t->incomplete = true;
}

/* Mark the block b names as referenced by t; false if it must not be read. */
static bool mark(struct chk *c, struct chk_tree *t, const struct h2_blockref *b,
		 struct where_lazy *wl)
{
	uint64_t off = H2_BREF_OFFSET(b), blk = off / H2_BLOCK_SIZE;

	if (H2_BREF_RADIX(b) != H2_BLOCK_RADIX) {
		problem(c, where_of(wl),
			"blockref has size radix %u (expected %u)",
			H2_BREF_RADIX(b), H2_BLOCK_RADIX);
		return false;
	}
	/* Else it would be taken for the block it starts in: a block
	 * shared with a tree walked before would not be read at all,
	 * though the engine reads the unaligned offset and fails. */
	if (off % H2_BLOCK_SIZE) {
		problem(c, where_of(wl),
			"blockref offset %" PRIu64 " is not block aligned",
			off);
		return false;
	}
	if (blk >= c->geo.total_blocks) {
		problem(c, where_of(wl),
			"blockref points past the end of the store (%" PRIu64
			" blocks)",
			c->geo.total_blocks);
		return false;
	}
	if (bit_get(c->res, blk)) {
		problem(c, where_of(wl),
			"blockref points into a reserved zone (a header copy "
			"or the freemap)");
		return false;
	}
	if (bit_get(c->ref, blk)) {
		if (t->leaf_type == H2_BREF_DATA && b->blocks) {
			/* A subtree shared with a snapshot or clone walked
			 * before: its blocks count for this tree too. */
			t->blocks += b->blocks;
			t->shared = true;
			if (b->type != H2_BREF_DATA)
				verify_shared(c, t, b, wl);
			return false;
		}
		t->blocks++;
		problem(c, where_of(wl),
			"block is referenced twice (already seen in this or "
			"another tree); not walked again");
		return false;
	}
	t->blocks++;
	bit_set(c->ref, blk);
	c->rep->blocks_referenced++;
	if (c->fm_known[blk / H2_FM_BITS] && !bit_get(c->fm, blk)) {
		c->rep->free_referenced++;
		c->free_ref.blocks++;
		if (c->free_ref.listed < CHECK_LIST_MAX) {
			c->free_ref.listed++;
			problem(c, where_of(wl),
				"referenced, but free in the freemap (it "
				"could be handed out again and overwritten)");
		} else {
			c->free_ref.unlisted++;
		}
	}
	return true;
}

/*
 * The checks of the block b names that need no read, then mark it.
 * parent_tid is the birth tid of whatever references it: a copy-on-write
 * child is never newer than its parent.  False if it must not be read.
 */
static bool visit(struct chk *c, struct chk_tree *t,
		  const struct h2_blockref *b, uint64_t parent_tid)
{
	struct where_lazy wl = {.t = t, .b = b};

	if (b->birth_tid > parent_tid)
		problem(c, where_of(&wl),
			"born in flush %" PRIu64 ", after what references it "
			"(flush %" PRIu64 ")",
			b->birth_tid, parent_tid);
	t->shared = false;
	if (!mark(c, t, b, &wl)) {
		if (b->type != H2_BREF_DATA && !t->shared)
			t->incomplete = true;
		return false;
	}
	if (b->type != H2_BREF_INDIRECT && b->blocks != 1)
		problem(c, where_of(&wl),
			"blockref counts %" PRIu64 " blocks below "
			"it (a leaf holds 1)",
			b->blocks);
	if (b->type == H2_BREF_DATA && b->key >= t->nleaves)
		problem(c, where_of(&wl),
			"data block beyond the end of the volume (%" PRIu64
			" blocks)",
			t->nleaves);
	return true;
}

/* Reading b's block failed with r. */
static void read_failed(struct chk *c, struct chk_tree *t,
			const struct h2_blockref *b, int r)
{
	char where[160];

	where_block(where, sizeof(where), t, b);
	problem(c, where, "read failed: %s", strerror(-r));
	if (b->type != H2_BREF_DATA)
		t->incomplete = true;
}

/* Verify b's block (read into buf) against its check code. */
static bool verify(struct chk *c, struct chk_tree *t,
		   const struct h2_blockref *b, const uint8_t *buf)
{
	uint64_t found = h2_check64(buf, H2_BLOCK_SIZE);
	char where[160];

	if (found == b->check) {
		c->rep->blocks_verified++;
		return true;
	}
	where_block(where, sizeof(where), t, b);
	problem(c, where,
		"checksum mismatch (blockref says %016" PRIx64
		", block holds %016" PRIx64 "): the block is damaged%s",
		b->check, found,
		b->type == H2_BREF_DATA ? ""
					: "; nothing below it was checked");
	if (b->type != H2_BREF_DATA)
		t->incomplete = true;
	return false;
}

/*
 * Verify data slots run[0..n) of s, contiguous on the device: one read.
 * shared: leaves verified before through another tree, of which only
 * this tree's check codes are compared (see shared_check).
 */
static void verify_run(struct chk *c, struct chk_tree *t,
		       const struct h2_blockref *s, const unsigned *run,
		       unsigned n, bool shared)
{
	int r;

	if (n > c->runcap) {
		uint8_t *p = realloc(c->runbuf, (size_t)n * H2_BLOCK_SIZE);

		if (!p) {
			c->err = -ENOMEM;
			return;
		}
		c->runbuf = p;
		c->runcap = n;
	}
	r = h2_dev_pread(c->dev, c->runbuf, (size_t)n * H2_BLOCK_SIZE,
			 H2_BREF_OFFSET(&s[run[0]]));
	for (unsigned k = 0; k < n; k++) {
		const struct h2_blockref *b = &s[run[k]];
		uint8_t *buf = c->runbuf + (size_t)k * H2_BLOCK_SIZE;
		int rk = r;

		/* A failed run read is retried block by block, so the
		 * report names exactly the blocks that cannot be read. */
		if (r < 0)
			rk = h2_dev_pread(c->dev, buf, H2_BLOCK_SIZE,
					  H2_BREF_OFFSET(b));
		if (rk < 0) {
			read_failed(c, t, b, rk);
		} else if (shared) {
			struct where_lazy wl = {.t = t, .b = b};

			shared_check(c, t, b, buf, &wl);
		} else {
			verify(c, t, b, buf);
		}
	}
}

/*
 * The data leaves of level-1 block p (its slots s).  The flusher
 * allocates next-fit, so leaves usually lie side by side on the device:
 * they are read in runs, one read per run instead of one per block.
 */
static void walk_data(struct chk *c, struct chk_tree *t,
		      const struct h2_blockref *p, const struct h2_blockref *s)
{
	unsigned run[H2_FANOUT], n = 0, srun[H2_FANOUT], sn = 0;

	for (unsigned i = 0; i <= H2_FANOUT; i++) {
		bool ok = false, sh = false;

		if (i < H2_FANOUT && s[i].type != H2_BREF_EMPTY) {
			if (child_fits(c, t, p, i, &s[i])) {
				ok = visit(c, t, &s[i], p->birth_tid);
				/* A leaf shared with a tree walked before:
				 * read again for its check code here. */
				sh = !ok && t->shared;
			} else {
				t->incomplete = true;
			}
		}
		/* (!ok and !sh short-circuit the slot read when
		 * i == H2_FANOUT.) */
		if (n && (!ok ||
			  H2_BREF_OFFSET(&s[i]) !=
			      H2_BREF_OFFSET(&s[run[n - 1]]) + H2_BLOCK_SIZE)) {
			verify_run(c, t, s, run, n, false);
			n = 0;
		}
		if (sn && (!sh || H2_BREF_OFFSET(&s[i]) !=
				      H2_BREF_OFFSET(&s[srun[sn - 1]]) +
					  H2_BLOCK_SIZE)) {
			verify_run(c, t, s, srun, sn, true);
			sn = 0;
		}
		if (ok)
			run[n++] = i;
		if (sh)
			srun[sn++] = i;
	}
}

/*
 * Visit the block b names (already checked against its slot), then its
 * children.
 */
static void walk(struct chk *c, struct chk_tree *t, const struct h2_blockref *b,
		 uint64_t parent_tid)
{
	uint8_t buf[H2_BLOCK_SIZE];
	const struct h2_blockref *s = (const struct h2_blockref *)buf;
	int r;

	if (!visit(c, t, b, parent_tid))
		return;
	r = h2_dev_pread(c->dev, buf, sizeof(buf), H2_BREF_OFFSET(b));
	if (r < 0) {
		read_failed(c, t, b, r);
		return;
	}
	if (!verify(c, t, b, buf))
		return;
	if (b->type == H2_BREF_INDIRECT) {
		uint64_t n = 1;
		char where[160];

		for (unsigned i = 0; i < H2_FANOUT; i++)
			n += s[i].type == H2_BREF_EMPTY ? 0 : s[i].blocks;
		if (n != b->blocks) {
			where_block(where, sizeof(where), t, b);
			problem(c, where,
				"blockref counts %" PRIu64 " blocks in its "
				"subtree, its slots add up to %" PRIu64,
				b->blocks, n);
		}
	}
	if (b->type == H2_BREF_DIR) {
		dir_leaf(c, b, buf);
	} else if (b->type == H2_BREF_INDIRECT && b->level == 1 &&
		   t->leaf_type == H2_BREF_DATA) {
		walk_data(c, t, b, s);
	} else if (b->type == H2_BREF_INDIRECT) {
		for (unsigned i = 0; i < H2_FANOUT; i++) {
			if (s[i].type == H2_BREF_EMPTY)
				continue;
			if (!child_fits(c, t, b, i, &s[i])) {
				t->incomplete = true;
				continue;
			}
			walk(c, t, &s[i], b->birth_tid);
		}
	}
}

/* Check a tree's root blockref; true if it may be walked. */
static bool root_fits(struct chk *c, struct chk_tree *t,
		      const struct h2_blockref *b, uint8_t levels,
		      const char *where)
{
	if (b->type == H2_BREF_INDIRECT && b->level == levels && b->key == 0 &&
	    b->keybits == H2_FANOUT_RADIX * levels)
		return true;
	problem(
	    c, where,
	    "%s root blockref is inconsistent (type %u level %u key %" PRIu64
	    " keybits %u; expected an indirect block at level %u key 0)",
	    t->name, b->type, b->level, b->key, b->keybits, levels);
	t->incomplete = true;
	return false;
}

/* Walk the directory; collects the volume records. */
static void check_directory(struct chk *c)
{
	struct chk_tree t = {.name = "directory",
			     .leaf_type = H2_BREF_DIR,
			     .nleaves =
				 H2_DIR_MAX_RECORDS / H2_VOLREC_PER_BLOCK};
	const struct h2_blockref *b = &c->hdr.dir_root;

	if (b->type == H2_BREF_EMPTY)
		return;
	if (root_fits(c, &t, b, H2_DIR_LEVELS, c->hdr_where))
		walk(c, &t, b, c->hdr.tid);
	if (t.incomplete) {
		problem(c, "directory",
			"part of the volume directory is unreadable; the "
			"store cannot be opened");
		c->unopenable = true;
	}
}

/* Volumes by name, then each volume's snapshots by name. */
static int rec_cmp_name(const void *a, const void *b)
{
	const struct chk_rec *x = a, *y = b;
	uint64_t px = x->rec.flags & H2_VOLREC_SNAPSHOT ? x->rec.parent_id : 0;
	uint64_t py = y->rec.flags & H2_VOLREC_SNAPSHOT ? y->rec.parent_id : 0;

	if (px != py)
		return px < py ? -1 : 1;
	return strcmp(x->rec.name, y->rec.name);
}

static int rec_cmp_id(const void *a, const void *b)
{
	const struct chk_rec *x = a, *y = b;

	return x->rec.id < y->rec.id ? -1 : x->rec.id > y->rec.id;
}

static int rec_cmp_slot(const void *a, const void *b)
{
	const struct chk_rec *x = a, *y = b;

	return x->slot < y->slot ? -1 : x->slot > y->slot;
}

/* Names and ids must be unique; ids below the header's next_vol_id. */
static void check_records(struct chk *c)
{
	char where[160];

	if (!c->nrecs)
		return; /* and qsort must not see a NULL array */
	qsort(c->recs, c->nrecs, sizeof(*c->recs), rec_cmp_name);
	for (size_t i = 1; i < c->nrecs; i++)
		if (rec_cmp_name(&c->recs[i], &c->recs[i - 1]) == 0) {
			fmt(where, sizeof(where), "volume %s",
			    c->recs[i].rec.name);
			problem(c, where,
				"name used by directory records %u and %u",
				c->recs[i - 1].slot, c->recs[i].slot);
		}
	qsort(c->recs, c->nrecs, sizeof(*c->recs), rec_cmp_id);
	for (size_t i = 0; i < c->nrecs; i++) {
		const struct h2_volrec *r = &c->recs[i].rec;

		fmt(where, sizeof(where), "volume %s", r->name);
		if (i > 0 && r->id == c->recs[i - 1].rec.id)
			problem(c, where,
				"volume id %" PRIu64 " is also used "
				"by volume %s",
				r->id, c->recs[i - 1].rec.name);
		if (r->id >= c->hdr.next_vol_id)
			problem(c, where,
				"volume id %" PRIu64 " is not below the "
				"header's next id %" PRIu64
				" (it could be handed out again)",
				r->id, c->hdr.next_vol_id);
	}
	qsort(c->recs, c->nrecs, sizeof(*c->recs), rec_cmp_slot);
}

/* ---------------------------------------------------------------------- */
/* Snapshots: lineages and their space (see "Shared blocks" in flush.c).  */

static const struct chk_rec *rec_by_id(struct chk *c, uint64_t id)
{
	for (size_t i = 0; i < c->nrecs; i++)
		if (c->recs[i].rec.id == id)
			return &c->recs[i];
	return NULL;
}

/* Counts of the blocks of a that b lacks: all, and born after lo. */
struct dcount {
	uint64_t all, above;
	bool failed;
};

static bool read_indirect(struct chk *c, const struct h2_blockref *b,
			  struct h2_blockref *buf)
{
	if (b->type != H2_BREF_INDIRECT ||
	    H2_BREF_OFFSET(b) / H2_BLOCK_SIZE >= c->geo.total_blocks ||
	    h2_dev_pread(c->dev, buf, H2_BLOCK_SIZE, H2_BREF_OFFSET(b)) < 0 ||
	    h2_check64(buf, H2_BLOCK_SIZE) != b->check)
		return false;
	return true;
}

static void dcount(struct chk *c, struct dcount *d,
		   const struct h2_blockref *a, const struct h2_blockref *b,
		   uint64_t lo)
{
	struct h2_blockref *as, bb = {0};
	bool bs_ok = false;

	if (a->type == H2_BREF_EMPTY || d->failed)
		return;
	if (b && b->type != H2_BREF_EMPTY && b->level > a->level) {
		/* b grew taller (a resize): a's keys are under its slot 0
		 * path, which may end in a hole (then none of a is in b). */
		as = malloc(H2_BLOCK_SIZE);
		bb = *b;
		while (as && bb.type != H2_BREF_EMPTY && bb.level > a->level &&
		       read_indirect(c, &bb, as))
			bb = as[0];
		if (!as || (bb.type != H2_BREF_EMPTY && bb.level != a->level))
			d->failed = true;
		free(as);
		b = &bb;
	}
	if (b && b->type != H2_BREF_EMPTY && b->level == a->level &&
	    H2_BREF_OFFSET(a) == H2_BREF_OFFSET(b))
		return;
	if (b && b->type != H2_BREF_EMPTY && b->level != a->level)
		b = NULL;
	if (a->type != H2_BREF_INDIRECT ||
	    ((!b || b->type == H2_BREF_EMPTY) && a->birth_tid <= lo)) {
		/* Nothing of it is in b, and nothing below it was born
		 * after lo (a parent is never older than its children). */
		d->all += a->blocks;
		d->above += a->birth_tid > lo ? a->blocks : 0;
		return;
	}
	d->all++;
	d->above += a->birth_tid > lo;
	as = malloc(2 * H2_BLOCK_SIZE);
	if (!as || !read_indirect(c, a, as)) {
		d->failed = true;
		free(as);
		return;
	}
	if (b && b->type == H2_BREF_INDIRECT && b->level == a->level)
		bs_ok = read_indirect(c, b, as + H2_FANOUT);
	for (unsigned i = 0; i < H2_FANOUT; i++)
		dcount(c, d, &as[i], bs_ok ? &as[H2_FANOUT + i] : NULL, lo);
	free(as);
}

static int snap_cmp_tid(const void *a, const void *b)
{
	const struct chk_rec *x = *(const struct chk_rec *const *)a;
	const struct chk_rec *y = *(const struct chk_rec *const *)b;

	return x->rec.snap_tid < y->rec.snap_tid ? -1
	       : x->rec.snap_tid > y->rec.snap_tid;
}

/*
 * A volume, its snapshots and its clone origin: each snapshot's
 * exclusive space is what the next one (or the volume) lacks of it, born
 * after the one before it; the volume's snapshot space sums what each
 * snapshot's successor lacks.
 */
static void check_lineage(struct chk *c, const struct chk_rec *h)
{
	const struct chk_rec **l = calloc(c->nrecs + 1, sizeof(*l));
	uint64_t origin = 0, sum = 0;
	char where[300];
	size_t n = 0;

	if (!l) {
		c->err = -ENOMEM;
		return;
	}
	if (h->rec.origin_id) {
		const struct chk_rec *o = rec_by_id(c, h->rec.origin_id);

		fmt(where, sizeof(where), "volume %s", h->rec.name);
		if (!o || !(o->rec.flags & H2_VOLREC_SNAPSHOT))
			problem(c, where,
				"clone of snapshot id %" PRIu64 ", which does "
				"not exist: blocks it shares are unprotected",
				h->rec.origin_id);
		else if (o->rec.snap_tid != h->rec.origin_tid)
			problem(c, where,
				"clone origin tid %" PRIu64 " differs from its "
				"snapshot's tid %" PRIu64,
				h->rec.origin_tid, o->rec.snap_tid);
		origin = h->rec.origin_tid;
	}
	for (size_t i = 0; i < c->nrecs; i++)
		if ((c->recs[i].rec.flags & H2_VOLREC_SNAPSHOT) &&
		    c->recs[i].rec.parent_id == h->rec.id)
			l[n++] = &c->recs[i];
	if (n)
		qsort(l, n, sizeof(*l), snap_cmp_tid);
	for (size_t i = 0; i < n; i++) {
		const struct h2_volrec *s = &l[i]->rec;
		const struct h2_volrec *nx = i + 1 < n ? &l[i + 1]->rec
						       : &h->rec;
		uint64_t lo = i ? l[i - 1]->rec.snap_tid : origin;
		struct dcount d = {0};

		fmt(where, sizeof(where), "snapshot %s@%s", h->rec.name,
		    s->name);
		if (s->snap_tid > c->hdr.tid || s->snap_tid <= lo ||
		    s->root.birth_tid > s->snap_tid)
			problem(c, where,
				"tid %" PRIu64 " is out of order (previous "
				"%" PRIu64 ", header %" PRIu64 ", root born "
				"%" PRIu64 ")",
				s->snap_tid, lo, c->hdr.tid,
				s->root.birth_tid);
		dcount(c, &d, &s->root, &nx->root, lo);
		if (d.failed) {
			problem(c, where, "its space could not be verified: "
					  "a block it shares is unreadable");
			continue;
		}
		sum += d.all;
		if (d.above != s->excl_blocks)
			problem(c, where,
				"record says it holds %" PRIu64 " blocks "
				"alone, it holds %" PRIu64,
				s->excl_blocks, d.above);
	}
	fmt(where, sizeof(where), "volume %s", h->rec.name);
	if (sum != h->rec.snap_blocks)
		problem(c, where,
			"record says its snapshots alone hold %" PRIu64
			" blocks, they hold %" PRIu64,
			h->rec.snap_blocks, sum);
	free(l);
}

static void check_snapshots(struct chk *c)
{
	char where[200];

	for (size_t i = 0; i < c->nrecs && !c->err; i++) {
		const struct h2_volrec *r = &c->recs[i].rec;

		if (!(r->flags & H2_VOLREC_SNAPSHOT)) {
			check_lineage(c, &c->recs[i]);
			continue;
		}
		const struct chk_rec *p = rec_by_id(c, r->parent_id);

		if (!p || (p->rec.flags & H2_VOLREC_SNAPSHOT)) {
			fmt(where, sizeof(where), "snapshot %s", r->name);
			problem(c, where,
				"belongs to volume id %" PRIu64 ", which does "
				"not exist; the store cannot be opened",
				r->parent_id);
			c->unopenable = true;
		}
	}
}

/* Walk one volume's tree and compare its used count. */
static void check_volume(struct chk *c, const struct chk_rec *cr)
{
	const struct h2_volrec *rec = &cr->rec;
	struct chk_tree t = {.leaf_type = H2_BREF_DATA,
			     .nleaves = (rec->size + H2_BLOCK_SIZE - 1) /
					H2_BLOCK_SIZE};
	char where[160];

	if (rec->flags & H2_VOLREC_SNAPSHOT) {
		const struct chk_rec *p = rec_by_id(c, rec->parent_id);

		fmt(t.name, sizeof(t.name), "snapshot %s@%s",
		    p ? p->rec.name : "?", rec->name);
	} else {
		fmt(t.name, sizeof(t.name), "volume %s", rec->name);
	}
	if (rec->root.type != H2_BREF_EMPTY) {
		fmt(where, sizeof(where), "volume %s (directory record %u)",
		    rec->name, cr->slot);
		if (root_fits(c, &t, &rec->root, rec->levels, where))
			walk(c, &t, &rec->root, cr->leaf_tid);
	}
	if (t.incomplete) {
		problem(c, t.name,
			"part of its tree is unreadable (see above): its "
			"data there is lost and its blocks were not counted");
		return;
	}
	if (t.blocks != rec->used_blocks)
		problem(c, t.name,
			"directory says it uses %" PRIu64 " blocks, its tree "
			"references %" PRIu64,
			rec->used_blocks, t.blocks);
}

/* ---------------------------------------------------------------------- */
/* 4. Freemap against references.                                         */

/* Report the runs of set bits of map (a derived bitmap) as one kind. */
static void report_runs(struct chk *c, const uint64_t *map, const char *what,
			uint64_t *count)
{
	uint64_t nbits = c->nwords * 64, b = 0, listed = 0, more = 0;
	char where[160];

	while (b < nbits) {
		uint64_t first, end;

		if (map[b / 64] == 0 && b % 64 == 0) {
			b += 64;
			continue;
		}
		if (!bit_get(map, b)) {
			b++;
			continue;
		}
		first = b;
		while (b < nbits && bit_get(map, b))
			b++;
		end = b;
		*count += end - first;
		if (listed >= CHECK_LIST_MAX) {
			more += end - first;
			continue;
		}
		listed++;
		if (end - first == 1)
			fmt(where, sizeof(where),
			    "device block %" PRIu64 " (offset %" PRIu64 ")",
			    first, first * H2_BLOCK_SIZE);
		else
			fmt(where, sizeof(where),
			    "device blocks %" PRIu64 "-%" PRIu64
			    " (offsets %" PRIu64 "-%" PRIu64 ")",
			    first, end - 1, first * H2_BLOCK_SIZE,
			    end * H2_BLOCK_SIZE - 1);
		problem(c, where, "%s", what);
	}
	if (more)
		problem(c, "freemap",
			"%" PRIu64 " more blocks of this kind not listed: %s",
			more, what);
}

/* Leaks, reserved-but-free, and the header's used count. */
static void compare_freemap(struct chk *c)
{
	uint64_t *leak = calloc(c->nwords, sizeof(uint64_t));
	uint64_t *resfree = calloc(c->nwords, sizeof(uint64_t));
	uint64_t used = 0, n = 0, total = c->geo.total_blocks;

	if (!leak || !resfree) {
		c->err = -ENOMEM;
		goto out;
	}
	for (uint64_t w = 0; w < c->nwords; w++) {
		uint64_t a = c->fm[w], below = ~0ull;

		if (!c->fm_known[w / FM_WORDS])
			continue;
		if (w * 64 + 64 > total)
			below = w * 64 >= total
				    ? 0
				    : (1ull << (total - w * 64)) - 1;
		used += (uint64_t)__builtin_popcountll(a & below);
		leak[w] = a & ~c->ref[w] & ~c->res[w];
		resfree[w] = c->res[w] & ~a;
	}
	c->rep->blocks_used = used;
	report_runs(c, leak,
		    "allocated in the freemap but referenced by nothing "
		    "(leaked)",
		    &c->rep->leaked_blocks);
	report_runs(c, resfree,
		    "reserved (header, freemap or past the end) but free in "
		    "the freemap",
		    &n);
	if (c->free_ref.unlisted)
		problem(c, "freemap",
			"%" PRIu64 " more referenced blocks are free in the "
			"freemap (not listed)",
			c->free_ref.unlisted);
	if (c->fm_all_known && used != c->hdr.used_blocks)
		problem(c, c->hdr_where,
			"used block count is %" PRIu64
			", the freemap has %" PRIu64 " blocks allocated",
			c->hdr.used_blocks, used);
out:
	free(leak);
	free(resfree);
}

/* ---------------------------------------------------------------------- */

static void chk_free(struct chk *c)
{
	free(c->sel);
	free(c->fm);
	free(c->ref);
	free(c->res);
	free(c->fm_known);
	free(c->runbuf);
	free(c->recs);
}

int h2_check(struct h2_dev *dev, struct h2_check_report **out)
{
	struct h2_check_report *rep = calloc(1, sizeof(*rep));
	struct chk c = {.dev = dev, .rep = rep};
	int r = 0;

	if (!rep)
		return h2_err(-ENOMEM, "out of memory for the check report");
	rep->status = H2_CHECK_CLEAN;
	if (!check_headers(&c))
		goto done;
	c.nwords = (uint64_t)c.geo.fm_pages * FM_WORDS;
	c.fm = calloc(c.nwords, sizeof(uint64_t));
	c.ref = calloc(c.nwords, sizeof(uint64_t));
	c.res = calloc(c.nwords, sizeof(uint64_t));
	c.fm_known = calloc(c.geo.fm_pages ? c.geo.fm_pages : 1, 1);
	if (!c.fm || !c.ref || !c.res || !c.fm_known) {
		c.err = -ENOMEM;
		goto done;
	}
	build_reserved(&c);
	if (c.err)
		goto done;
	load_freemap(&c);
	check_directory(&c);
	if (c.err)
		goto done;
	check_records(&c);
	rep->volumes = c.nrecs;
	for (size_t i = 0; i < c.nrecs; i++)
		check_volume(&c, &c.recs[i]);
	check_snapshots(&c);
	compare_freemap(&c);
done:
	if (c.dropped && rep->nproblems) {
		/* The last slot becomes the count of what was left out. */
		struct h2_check_problem *p = &rep->problems[rep->nproblems - 1];

		fmt(p->where, sizeof(p->where), "check");
		fmt(p->what, sizeof(p->what),
		    "%" PRIu64 " more problems not listed", c.dropped + 1);
	}
	if (c.unopenable)
		rep->status = H2_CHECK_UNOPENABLE;
	else if (rep->nproblems)
		rep->status = H2_CHECK_PROBLEMS;
	r = c.err;
	chk_free(&c);
	if (r == -EINVAL)
		r = h2_err(-EIO, "internal error: the checker's reserved zones "
				 "disagree with the allocator's");
	else if (r < 0)
		r = h2_err(r, "out of memory while checking");
	if (r < 0) {
		h2_check_report_free(rep);
		return r;
	}
	*out = rep;
	return 0;
}

void h2_check_report_free(struct h2_check_report *rep)
{
	if (!rep)
		return;
	free(rep->problems);
	free(rep);
}
