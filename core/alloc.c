/*
 * alloc.c - the freemap: which device blocks are allocated.
 *
 * The freemap is a bitmap split into pages of H2_FM_BITS blocks.  Each
 * page has two fixed slots on disk; the durable header's selector bit says
 * which slot holds the committed copy, and a flush writes a changed page
 * to the other slot, so the committed copy is never overwritten (see
 * format.h).  Pages are read on first use: opening a store reads none.
 *
 * Only the flusher allocates (delayed allocation) and only the flusher
 * applies frees, so this module needs no lock of its own: it runs on the
 * flusher thread, or single-threaded during format and open.  The epoch
 * rule for reuse falls out of the flush order: a flush allocates its new
 * blocks *before* it applies the frees of its own epoch, and those frees
 * become allocatable only in the next flush, after this flush's header is
 * durable.
 *
 * Blocks that are never allocatable (header copies, the freemap zone
 * itself, the tail past total_blocks) are set in the bitmap at format time
 * and never cleared.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define FM_WORDS (H2_FM_BITS / 64)

_Static_assert(H2_FM_BITS % 64 == 0, "freemap pages hold whole words");

static bool sel_get(const uint8_t *sel, uint32_t p)
{
	return (sel[p / 8] >> (p % 8)) & 1;
}

static void sel_flip(uint8_t *sel, uint32_t p)
{
	sel[p / 8] ^= (uint8_t)(1u << (p % 8));
}

/* True if blockno may never be allocated (headers, freemap zone, tail). */
bool h2_block_reserved(const struct h2_store *st, uint64_t blockno)
{
	uint64_t off = blockno * H2_BLOCK_SIZE;
	uint64_t zone = (uint64_t)st->fm_pages * 2 * H2_BLOCK_SIZE;

	if (blockno >= st->total_blocks)
		return true;
	for (unsigned i = 0; i < st->hdr_copies; i++)
		if (off >= h2_hdr_offset(i) &&
		    off < h2_hdr_offset(i) + H2_HDR_REGION)
			return true;
	return off >= st->fm_base && off < st->fm_base + zone;
}

int h2_fm_init(struct h2_store *st, const uint8_t *sel)
{
	struct h2_freemap *fm = &st->fm;
	size_t selbytes = (st->fm_pages + 7) / 8;

	fm->npages = st->fm_pages;
	fm->pages = calloc(fm->npages, sizeof(*fm->pages));
	fm->sel = calloc(1, selbytes ? selbytes : 1);
	if (!fm->pages || !fm->sel) {
		h2_fm_destroy(st);
		return h2_err(-ENOMEM, "out of memory for the freemap");
	}
	if (sel)
		memcpy(fm->sel, sel, selbytes);
	fm->cursor = 0;
	return 0;
}

void h2_fm_destroy(struct h2_store *st)
{
	struct h2_freemap *fm = &st->fm;

	if (fm->pages)
		for (uint32_t p = 0; p < fm->npages; p++)
			free(fm->pages[p].bits);
	free(fm->pages);
	free(fm->sel);
	memset(fm, 0, sizeof(*fm));
}

/* Count set bits of a page. */
static uint32_t page_popcount(const uint64_t *bits)
{
	uint32_t n = 0;

	for (unsigned w = 0; w < FM_WORDS; w++)
		n += (uint32_t)__builtin_popcountll(bits[w]);
	return n;
}

/*
 * Verify a freemap page image read from slot s of page p.  On success the
 * bitmap is copied into bits (FM_WORDS words).
 */
int h2_fm_page_verify(const uint8_t *buf, uint32_t p, uint64_t max_tid,
		      uint64_t *bits, const char **why)
{
	struct h2_fmpage_hdr h;
	uint8_t tmp[H2_BLOCK_SIZE];

	memcpy(&h, buf, sizeof(h));
	if (h.magic != H2_FM_MAGIC) {
		*why = "bad magic";
		return -EBADMSG;
	}
	if (h.page != p) {
		*why = "page number does not match its slot";
		return -EBADMSG;
	}
	if (h.tid > max_tid) {
		*why = "written by a flush newer than the header";
		return -EBADMSG;
	}
	memcpy(tmp, buf, H2_BLOCK_SIZE);
	memset(tmp + offsetof(struct h2_fmpage_hdr, check), 0, 8);
	if (h2_check64(tmp, H2_BLOCK_SIZE) != h.check) {
		*why = "checksum mismatch";
		return -EBADMSG;
	}
	memcpy(bits, buf + H2_FM_HDR, H2_BLOCK_SIZE - H2_FM_HDR);
	if (page_popcount(bits) != h.used) {
		*why = "used count does not match the bitmap";
		return -EBADMSG;
	}
	return 0;
}

/* Load page p from the slot the durable header selects. */
int h2_fm_load_page(struct h2_store *st, uint32_t p)
{
	struct h2_fmpage *pg = &st->fm.pages[p];
	uint8_t buf[H2_BLOCK_SIZE];
	unsigned s = sel_get(st->fm.sel, p);
	uint64_t off = h2_fm_slot_offset(st->fm_base, p, s);
	const char *why = NULL;
	uint64_t *bits;
	int r;

	if (pg->bits)
		return 0;
	r = h2_dev_pread(st->dev, buf, sizeof(buf), off);
	if (r < 0)
		return h2_err(r, "freemap page %u: read at offset %" PRIu64
				 " failed",
			      p, off);
	/* The flusher's: it waits for memory (flush.c). */
	bits = h2_xmalloc(H2_BLOCK_SIZE - H2_FM_HDR);
	r = h2_fm_page_verify(buf, p, st->hdr_tid, bits, &why);
	if (r < 0) {
		free(bits);
		return h2_err(r, "freemap page %u (slot %u, offset %" PRIu64
				 ") is damaged: %s; run h2d check",
			      p, s, off, why);
	}
	pg->bits = bits;
	pg->used = page_popcount(bits);
	pg->dirty = false;
	return 0;
}

/* Make page p present without reading it (format only): all free. */
int h2_fm_fresh_page(struct h2_store *st, uint32_t p)
{
	struct h2_fmpage *pg = &st->fm.pages[p];

	pg->bits = calloc(FM_WORDS, sizeof(uint64_t));
	if (!pg->bits)
		return h2_err(-ENOMEM, "out of memory for freemap page %u", p);
	pg->used = 0;
	pg->dirty = true;
	return 0;
}

int h2_fm_test(struct h2_store *st, uint64_t blockno, bool *used)
{
	uint32_t p = (uint32_t)(blockno / H2_FM_BITS);
	uint32_t bit = (uint32_t)(blockno % H2_FM_BITS);
	int r;

	if (p >= st->fm.npages)
		return -ERANGE;
	r = h2_fm_load_page(st, p);
	if (r < 0)
		return r;
	*used = (st->fm.pages[p].bits[bit / 64] >> (bit % 64)) & 1;
	return 0;
}

/*
 * Set or clear one block's bit.  -EALREADY if it already had that value
 * (a double allocation or double free: the caller reports it).
 */
int h2_fm_set(struct h2_store *st, uint64_t blockno, bool used)
{
	uint32_t p = (uint32_t)(blockno / H2_FM_BITS);
	uint32_t bit = (uint32_t)(blockno % H2_FM_BITS);
	struct h2_fmpage *pg;
	uint64_t mask = 1ull << (bit % 64);
	int r;

	if (p >= st->fm.npages)
		return -ERANGE;
	r = h2_fm_load_page(st, p);
	if (r < 0)
		return r;
	pg = &st->fm.pages[p];
	if (!!(pg->bits[bit / 64] & mask) == used)
		return -EALREADY;
	pg->bits[bit / 64] ^= mask;
	pg->used += used ? 1 : (uint32_t)-1;
	pg->dirty = true;
	if (!used && pg->bits[bit / 64] == 0)
		st->fm.no_free_word = false;
	return 0;
}

/* First wholly free bitmap word (64 blocks in a row) in [from, to). */
static int fm_find_word(struct h2_store *st, uint64_t from, uint64_t to,
			uint64_t *out)
{
	uint64_t b = (from + 63) & ~63ull;
	int r;

	while (b < to) {
		uint32_t p = (uint32_t)(b / H2_FM_BITS);
		struct h2_fmpage *pg;

		r = h2_fm_load_page(st, p);
		if (r < 0)
			return r;
		pg = &st->fm.pages[p];
		for (unsigned w = (unsigned)(b % H2_FM_BITS) / 64;
		     pg->used <= H2_FM_BITS - 64 && w < FM_WORDS; w++) {
			uint64_t cand = (uint64_t)p * H2_FM_BITS + w * 64;

			if (cand + 64 > to)
				return -ENOSPC;
			if (pg->bits[w] == 0) {
				*out = cand;
				return 0;
			}
		}
		b = (uint64_t)(p + 1) * H2_FM_BITS;
	}
	return -ENOSPC;
}

/* First free block in [from, to), or -ENOSPC. */
static int fm_find(struct h2_store *st, uint64_t from, uint64_t to,
		   uint64_t *out)
{
	uint64_t b = from;
	int r;

	while (b < to) {
		uint32_t p = (uint32_t)(b / H2_FM_BITS);
		unsigned w0 = (unsigned)(b % H2_FM_BITS) / 64;
		struct h2_fmpage *pg;

		r = h2_fm_load_page(st, p);
		if (r < 0)
			return r;
		pg = &st->fm.pages[p];
		for (unsigned w = w0; pg->used < H2_FM_BITS && w < FM_WORDS;
		     w++) {
			uint64_t free_bits = ~pg->bits[w];
			uint64_t cand;

			if (w == w0)
				free_bits &= ~0ull << (b % 64);
			if (!free_bits)
				continue;
			cand = (uint64_t)p * H2_FM_BITS + w * 64 +
			       (unsigned)__builtin_ctzll(free_bits);
			if (cand >= to)
				return -ENOSPC;
			*out = cand;
			return 0;
		}
		b = (uint64_t)(p + 1) * H2_FM_BITS;
	}
	return -ENOSPC;
}

/*
 * Allocate one block, next-fit from the cursor so that one flush's blocks
 * land next to each other (a random-write workload becomes sequential
 * writes on the device).
 */
int h2_fm_alloc(struct h2_store *st, uint64_t *blockno)
{
	struct h2_freemap *fm = &st->fm;
	uint64_t start = fm->cursor < st->total_blocks ? fm->cursor : 0;
	uint64_t b;
	bool used;
	int r;

	/* Go on with the run at the cursor; else start a new run where 64
	 * blocks in a row are free (after snapshots pin old blocks, free
	 * space is mostly single holes, and filling those one by one turns
	 * a flush into many small writes); else take any free block. */
	r = h2_fm_test(st, start, &used);
	if (r < 0)
		return r;
	b = start;
	if (used) {
		r = -ENOSPC;
		if (!fm->no_free_word) {
			r = fm_find_word(st, start, st->total_blocks, &b);
			if (r == -ENOSPC && start > 0)
				r = fm_find_word(st, 0, start, &b);
			if (r == -ENOSPC)
				fm->no_free_word = true;
		}
		if (r == -ENOSPC)
			r = fm_find(st, start, st->total_blocks, &b);
		if (r == -ENOSPC && start > 0)
			r = fm_find(st, 0, start, &b);
	}
	if (r == -ENOSPC)
		return h2_err(-ENOSPC, "no free block left on the device");
	if (r < 0)
		return r;
	r = h2_fm_set(st, b, true);
	if (r < 0)
		return r;
	fm->cursor = b + 1;
	*blockno = b;
	return 0;
}

/*
 * Write every changed page into the slot the durable header does not
 * select, stamped with tid; flip those pages' bits in sel (a copy of the
 * durable selectors that becomes the next header's).
 */
int h2_fm_write_dirty(struct h2_store *st, uint64_t tid, uint8_t *sel)
{
	struct h2_freemap *fm = &st->fm;
	uint8_t buf[H2_BLOCK_SIZE];
	int r;

	for (uint32_t p = 0; p < fm->npages; p++) {
		struct h2_fmpage *pg = &fm->pages[p];
		struct h2_fmpage_hdr h = {0};
		unsigned s;

		if (!pg->bits || !pg->dirty)
			continue;
		s = !sel_get(fm->sel, p);
		h.magic = H2_FM_MAGIC;
		h.tid = tid;
		h.page = p;
		h.used = pg->used;
		memset(buf, 0, sizeof(buf));
		memcpy(buf, &h, sizeof(h));
		memcpy(buf + H2_FM_HDR, pg->bits, H2_BLOCK_SIZE - H2_FM_HDR);
		h.check = h2_check64(buf, sizeof(buf));
		memcpy(buf, &h, sizeof(h));
		r = h2_dev_pwrite(st->dev, buf, sizeof(buf),
				  h2_fm_slot_offset(st->fm_base, p, s));
		if (r < 0)
			return h2_err(r, "writing freemap page %u failed", p);
		pg->dirty = false;
		if (sel_get(sel, p) != s)
			sel_flip(sel, p);
	}
	return 0;
}

/* The header is durable: its selectors are now the committed ones. */
void h2_fm_commit(struct h2_store *st, const uint8_t *sel)
{
	memcpy(st->fm.sel, sel, (st->fm.npages + 7) / 8);
}
