/*
 * fuzz_store.c - fuzz harness for opening and checking a damaged store:
 * the engine (h2_store_open read-only, then every volume and snapshot
 * listed, opened, mapped and read, then h2_store_close) and the checker
 * (h2_check) on a store image with the fuzzer's changes in it.
 *
 * The image.  Once per process a small store is built on an in-memory
 * 64 MiB device through the public API: volumes with 1- to 4-level trees,
 * snapshots sharing blocks with their volume, a clone, a transaction, a
 * trim, an empty volume, several flushes (so every header copy holds a
 * different tid).  Its non-zero blocks are kept; each input then runs on
 * a copy-on-write view of them, so only the blocks it changes are copied.
 * The image is made deterministic where it is not by nature (uuid,
 * format and creation times), so that a saved input means the same
 * thing in every process.
 *
 * Input: a mode byte, then patches.
 *
 *   mode  bit 0     recompute check codes after patching: every blockref
 *                   of the newest header's trees (children first), every
 *                   freemap page's check and used count, every header
 *                   copy's CRC.  Without this almost every change is a
 *                   checksum mismatch; with it the change reaches the
 *                   structure checks behind the checksums.
 *         bit 1     (with bit 0) the older header copies' trees too
 *         bits 2-3  device size: 64 MiB as formatted, 1 MiB more, only
 *                   three header copies' worth, or half (too small)
 *
 *   patch  span:1 off:2 op:1 ...   (little-endian off)
 *
 *   span picks one of the image's places worth changing (fz_spans[]:
 *   header copies, their dir_root blockrefs, freemap slots, directory
 *   blocks, volume records and their root blockrefs, indirect blocks,
 *   single blockrefs, data blocks, and the whole device); off is taken
 *   modulo its length (for the whole device, in KiB).  The op byte's top
 *   two bits say what to write there, its low six bits n:
 *     0  raw: the next n + 1 bytes
 *     1  an integer of 1 << (n & 3) bytes: fz_values[next byte]
 *        (offsets of other blocks, tids, sizes, limits, edges)
 *     2  copy n + 1 bytes from another span: src:1 srcoff:2
 *     3  fill n + 1 bytes with the next byte
 *
 * Nothing may crash, hang, leak, read outside a buffer or the device, or
 * write to the device (both are read only here), whatever the image.
 * And the two must agree: a store the checker calls clean opens, and
 * every volume and snapshot in it maps and reads without error.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "format.h"
#include "fuzz.h"
#include "h2core.h"
#include "util.h"

#define FZ_DEV_SIZE    (64ull << 20)
#define FZ_MAX_BLOCKS  ((FZ_DEV_SIZE + (1u << 20)) / H2_BLOCK_SIZE)
#define FZ_MAX_PATCHES 64
#define FZ_FIX_DEPTH   (H2_MAX_LEVELS + H2_DIR_LEVELS + 4)
#define FZ_READ_CAP    (256u << 10) /* bytes read per volume */
#define FZ_EXT_CAP     64	    /* extents looked at per volume */

enum fz_kind {
	FZ_HDR,	    /* a header copy's first block */
	FZ_DIRROOT, /* a header's dir_root blockref */
	FZ_FMSLOT,  /* a freemap page slot */
	FZ_DIRIND,  /* an indirect block of the directory */
	FZ_DIR,	    /* a directory block */
	FZ_VOLREC,  /* one volume record */
	FZ_ROOT,    /* a volume record's root blockref */
	FZ_IND,	    /* an indirect block of a volume */
	FZ_BREF,    /* one non-empty blockref in an indirect block */
	FZ_DATA,    /* a data block */
	FZ_DEV,	    /* anywhere (offset in KiB) */
	FZ_NKINDS
};

struct fz_span {
	uint64_t off;
	uint32_t len;
	enum fz_kind kind;
};

/* The image and its places, built once (fz_init). */
static uint8_t *fz_base[FZ_MAX_BLOCKS]; /* NULL: zeros */
static struct fz_span fz_spans[255];
static unsigned fz_nspans;
static uint64_t fz_values[256];
static unsigned fz_nvalues;
static uint64_t fz_tid; /* of the newest header */
static bool fz_ready;

/* The view of one input: copy-on-write over fz_base. */
static uint8_t *fz_work[FZ_MAX_BLOCKS];
static uint32_t fz_priv[FZ_MAX_BLOCKS]; /* blocks copied for this input */
static size_t fz_npriv;
static uint64_t fz_dev_size;			/* of this input's device */
static uint32_t fz_seen[FZ_MAX_BLOCKS], fz_gen; /* fix-up walk */
static const uint8_t fz_zero[H2_BLOCK_SIZE];

/* The engine's sentence for the first error of this input. */
static char fz_first_msg[512];

/* Keep r's message if it is the input's first error; returns the first. */
static int fz_note(int r, int first, const char *what)
{
	if (r < 0 && !fz_first_msg[0])
		snprintf(fz_first_msg, sizeof(fz_first_msg), "%s: %s", what,
			 h2_core_errmsg());
	return first ? first : r;
}

/* What the inputs reached (fuzz_report). */
static struct {
	uint64_t inputs, patches, fixed, check[3], open_ok, open_fail,
	    vols_read, vol_open_fail, read_ok, read_fail, bs_fail;
} fz_stats;

/* ---------------------------------------------------------------------- */
/* The copy-on-write view.                                                */

static const uint8_t *fz_blk(uint64_t b)
{
	return fz_work[b] ? fz_work[b] : fz_zero;
}

static uint8_t *fz_blk_w(uint64_t b)
{
	if (fz_work[b] == fz_base[b]) {
		uint8_t *p = malloc(H2_BLOCK_SIZE);

		FUZZ_CHECK(p);
		memcpy(p, fz_blk(b), H2_BLOCK_SIZE);
		fz_work[b] = p;
		fz_priv[fz_npriv++] = (uint32_t)b;
	}
	return fz_work[b];
}

/* Copy [off, off + len) of the view; the range is on the device. */
static void fz_read(uint64_t off, void *buf, size_t len)
{
	uint8_t *p = buf;

	FUZZ_CHECK(off <= FZ_MAX_BLOCKS * (uint64_t)H2_BLOCK_SIZE &&
		   len <= FZ_MAX_BLOCKS * (uint64_t)H2_BLOCK_SIZE - off);
	while (len) {
		uint64_t b = off / H2_BLOCK_SIZE;
		size_t in = (size_t)(off % H2_BLOCK_SIZE);
		size_t n = H2_BLOCK_SIZE - in < len ? H2_BLOCK_SIZE - in : len;

		memcpy(p, fz_blk(b) + in, n);
		p += n;
		off += n;
		len -= n;
	}
}

/* Write into the view, clipped to the largest device. */
static void fz_write(uint64_t off, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t end = FZ_MAX_BLOCKS * (uint64_t)H2_BLOCK_SIZE;

	if (off >= end)
		return;
	if (len > end - off)
		len = (size_t)(end - off);
	while (len) {
		uint64_t b = off / H2_BLOCK_SIZE;
		size_t in = (size_t)(off % H2_BLOCK_SIZE);
		size_t n = H2_BLOCK_SIZE - in < len ? H2_BLOCK_SIZE - in : len;

		/* (Rewriting what is there, as the fix-ups mostly do, copies
		 * nothing.) */
		if (memcmp(fz_blk(b) + in, p, n) != 0)
			memcpy(fz_blk_w(b) + in, p, n);
		p += n;
		off += n;
		len -= n;
	}
}

static void fz_view_reset(void)
{
	for (size_t i = 0; i < fz_npriv; i++) {
		free(fz_work[fz_priv[i]]);
		fz_work[fz_priv[i]] = fz_base[fz_priv[i]];
	}
	fz_npriv = 0;
}

/* ---------------------------------------------------------------------- */
/* The device the engine and the checker see: the view, read only.        */

static int fzd_pread(struct h2_dev *dev, void *buf, size_t len, uint64_t off)
{
	FUZZ_CHECK(off <= dev->size && len <= dev->size - off);
	fz_read(off, buf, len);
	return 0;
}

static int fzd_pwritev(struct h2_dev *dev, const struct iovec *iov, int iovcnt,
		       uint64_t off)
{
	(void)dev;
	(void)iov;
	(void)iovcnt;
	(void)off;
	FUZZ_CHECK(!"a read-only open or the checker wrote to the device");
	return -EROFS;
}

static int fzd_flush(struct h2_dev *dev)
{
	(void)dev;
	FUZZ_CHECK(!"a read-only open or the checker flushed the device");
	return -EROFS;
}

static void fzd_close(struct h2_dev *dev)
{
	free(dev);
}

static const struct h2_dev_ops fzd_ops = {
    .pread = fzd_pread,
    .pwritev = fzd_pwritev,
    .flush = fzd_flush,
    .close = fzd_close,
};

static struct h2_dev *fzd_new(void)
{
	struct h2_dev *dev = calloc(1, sizeof(*dev));

	FUZZ_CHECK(dev);
	dev->ops = &fzd_ops;
	dev->size = fz_dev_size;
	snprintf(dev->name, sizeof(dev->name), "fuzz");
	return dev;
}

/* ---------------------------------------------------------------------- */
/* Recomputing check codes (mode bit 0), and walking the pristine trees.  */

/* First visit of block b in this walk? */
static bool fz_first_visit(uint64_t b)
{
	if (fz_seen[b] == fz_gen)
		return false;
	fz_seen[b] = fz_gen;
	return true;
}

/* The block a blockref names, if it is a whole block on the device. */
static bool fz_bref_block(const struct h2_blockref *b, uint64_t *blk)
{
	uint64_t off = H2_BREF_OFFSET(b);

	if (b->type == H2_BREF_EMPTY || off % H2_BLOCK_SIZE ||
	    off >= fz_dev_size)
		return false;
	*blk = off / H2_BLOCK_SIZE;
	return true;
}

/*
 * Give the blockref stored at device offset loc the check code of its
 * block, after doing the same for every blockref inside that block (by
 * the types the blockrefs claim, damaged or not).  Each block is entered
 * once per walk: cycles and shared subtrees end there.
 */
static void fz_fix_bref(uint64_t loc, unsigned depth)
{
	struct h2_blockref b;
	uint64_t blk, check;

	fz_read(loc, &b, sizeof(b));
	if (depth > FZ_FIX_DEPTH || !fz_bref_block(&b, &blk))
		return;
	if (fz_first_visit(blk)) {
		uint64_t off = blk * H2_BLOCK_SIZE;

		if (b.type == H2_BREF_INDIRECT) {
			struct h2_blockref s[H2_FANOUT];

			/* (Empty slots have nothing to fix.) */
			fz_read(off, s, sizeof(s));
			for (unsigned i = 0; i < H2_FANOUT; i++)
				if (s[i].type != H2_BREF_EMPTY)
					fz_fix_bref(off + i * sizeof(b),
						    depth + 1);
		} else if (b.type == H2_BREF_DIR) {
			for (unsigned i = 0; i < H2_VOLREC_PER_BLOCK; i++) {
				uint64_t rec = off + i * H2_VOLREC_SIZE;
				uint32_t flags;

				fz_read(rec + offsetof(struct h2_volrec, flags),
					&flags, sizeof(flags));
				if (flags & H2_VOLREC_USED)
					fz_fix_bref(
					    rec + offsetof(struct h2_volrec,
							   root),
					    depth + 1);
			}
		}
	}
	check = h2_check64(fz_blk(blk), H2_BLOCK_SIZE);
	fz_write(loc + offsetof(struct h2_blockref, check), &check,
		 sizeof(check));
}

static unsigned fz_copies(void)
{
	return h2_hdr_copies(fz_dev_size);
}

/* Header copies with the magic, oldest first. */
static unsigned fz_headers_by_tid(unsigned *idx)
{
	uint64_t tid[H2_HDR_COPIES];
	unsigned n = 0;

	for (unsigned i = 0; i < fz_copies(); i++) {
		struct h2_volhdr h;
		unsigned k = n++;

		fz_read(h2_hdr_offset(i), &h, sizeof(h));
		if (h.magic != H2_HDR_MAGIC) {
			n--;
			continue;
		}
		while (k > 0 && tid[k - 1] > h.tid) {
			tid[k] = tid[k - 1];
			idx[k] = idx[k - 1];
			k--;
		}
		tid[k] = h.tid;
		idx[k] = i;
	}
	return n;
}

static void fz_fix_freemap(const struct h2_volhdr *h)
{
	uint32_t pages = h->fm_pages < 4 ? h->fm_pages : 4;

	for (uint32_t p = 0; p < pages; p++) {
		for (unsigned s = 0; s < 2; s++) {
			uint64_t off = h2_fm_slot_offset(h->fm_base, p, s);
			uint8_t buf[H2_BLOCK_SIZE];
			struct h2_fmpage_hdr ph;
			uint32_t used = 0;

			if (off % H2_BLOCK_SIZE || off >= fz_dev_size)
				continue;
			fz_read(off, buf, sizeof(buf));
			memcpy(&ph, buf, sizeof(ph));
			if (ph.magic != H2_FM_MAGIC)
				continue;
			for (size_t w = H2_FM_HDR; w < H2_BLOCK_SIZE; w += 8) {
				uint64_t x;

				memcpy(&x, buf + w, 8);
				used += (uint32_t)__builtin_popcountll(x);
			}
			ph.used = used;
			ph.check = 0;
			memcpy(buf, &ph, sizeof(ph));
			ph.check = h2_check64(buf, sizeof(buf));
			memcpy(buf, &ph, sizeof(ph));
			fz_write(off, buf, sizeof(buf));
		}
	}
}

static void fz_fix_header_crcs(void)
{
	static uint8_t buf[H2_HDR_REGION];

	for (unsigned i = 0; i < fz_copies(); i++) {
		struct h2_volhdr h;
		uint32_t crc = 0;

		fz_read(h2_hdr_offset(i), &h, sizeof(h));
		if (h.hdr_len < sizeof(h) || h.hdr_len > H2_HDR_REGION)
			continue;
		fz_read(h2_hdr_offset(i), buf, h.hdr_len);
		memcpy(buf + offsetof(struct h2_volhdr, crc), &crc,
		       sizeof(crc));
		crc = h2_crc32c(0, buf, h.hdr_len);
		fz_write(h2_hdr_offset(i) + offsetof(struct h2_volhdr, crc),
			 &crc, sizeof(crc));
	}
}

/* Make every check code match again (mode bit 0); see the file comment. */
static void fz_fix(bool all_trees)
{
	unsigned idx[H2_HDR_COPIES], n = fz_headers_by_tid(idx);
	struct h2_volhdr h;

	for (unsigned k = all_trees ? 0 : (n ? n - 1 : 0); k < n; k++) {
		fz_gen++;
		fz_fix_bref(h2_hdr_offset(idx[k]) +
				offsetof(struct h2_volhdr, dir_root),
			    0);
	}
	if (n) {
		fz_read(h2_hdr_offset(idx[n - 1]), &h, sizeof(h));
		fz_fix_freemap(&h);
	}
	fz_fix_header_crcs();
}

/* ---------------------------------------------------------------------- */
/* The pristine image.                                                    */

static void fz_span_add(enum fz_kind kind, uint64_t off, uint32_t len)
{
	/* The last slot is kept for FZ_DEV. */
	if (fz_nspans < sizeof(fz_spans) / sizeof(fz_spans[0]) - 1)
		fz_spans[fz_nspans++] = (struct fz_span){off, len, kind};
}

static void fz_value_add(uint64_t v)
{
	if (fz_nvalues < sizeof(fz_values) / sizeof(fz_values[0]))
		fz_values[fz_nvalues++] = v;
}

/* Collect the places of one kind under the blockref at loc. */
static void fz_collect(uint64_t loc, enum fz_kind want, bool in_dir,
		       unsigned depth)
{
	struct h2_blockref b;
	uint64_t blk, off;

	fz_read(loc, &b, sizeof(b));
	if (depth > FZ_FIX_DEPTH || !fz_bref_block(&b, &blk) ||
	    !fz_first_visit(blk))
		return;
	off = blk * H2_BLOCK_SIZE;
	switch (b.type) {
	case H2_BREF_INDIRECT:
		if (want == (in_dir ? FZ_DIRIND : FZ_IND))
			fz_span_add(want, off, H2_BLOCK_SIZE);
		for (unsigned i = 0; i < H2_FANOUT; i++) {
			struct h2_blockref c;

			fz_read(off + i * sizeof(c), &c, sizeof(c));
			if (c.type == H2_BREF_EMPTY)
				continue;
			if (want == FZ_BREF && !in_dir)
				fz_span_add(FZ_BREF, off + i * sizeof(c),
					    sizeof(c));
			fz_collect(off + i * sizeof(c), want, in_dir,
				   depth + 1);
		}
		break;
	case H2_BREF_DIR:
		if (want == FZ_DIR)
			fz_span_add(FZ_DIR, off, H2_BLOCK_SIZE);
		for (unsigned i = 0; i < H2_VOLREC_PER_BLOCK; i++) {
			uint64_t rec = off + i * H2_VOLREC_SIZE;
			uint64_t root = rec + offsetof(struct h2_volrec, root);
			uint32_t flags;

			fz_read(rec + offsetof(struct h2_volrec, flags), &flags,
				sizeof(flags));
			if (!(flags & H2_VOLREC_USED))
				continue;
			if (want == FZ_VOLREC)
				fz_span_add(FZ_VOLREC, rec, H2_VOLREC_SIZE);
			if (want == FZ_ROOT)
				fz_span_add(FZ_ROOT, root,
					    sizeof(struct h2_blockref));
			fz_collect(root, want, false, depth + 1);
		}
		break;
	case H2_BREF_DATA:
		if (want == FZ_DATA)
			fz_span_add(FZ_DATA, off, H2_BLOCK_SIZE);
		break;
	}
}

static void fz_fail(const char *what, int r)
{
	fprintf(stderr, "fuzz_store: building the image: %s: %s (%s)\n", what,
		strerror(-r), h2_core_errmsg());
	abort();
}

/* Fill len bytes with a pattern that names volume, offset and round. */
static void fz_pattern(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
}

static void fz_write_vol(struct h2_store *st, const char *name, uint64_t off,
			 size_t len, unsigned seed)
{
	struct h2_vol *v;
	uint8_t *buf = malloc(len);
	int r;

	FUZZ_CHECK(buf);
	fz_pattern(buf, len, seed);
	r = h2_vol_open(st, name, &v);
	if (r < 0)
		fz_fail("open", r);
	r = h2_vol_write(v, buf, off, len, 0);
	if (r < 0)
		fz_fail("write", r);
	h2_vol_close(v);
	free(buf);
}

/* The store the inputs change: see the file comment. */
static void fz_build(struct h2_dev *dev)
{
	struct h2_format_opts fo = {0};
	struct h2_store_opts so = {.no_flusher = true};
	static uint8_t blk[3 * H2_BLOCK_SIZE];
	struct h2_store *st;
	struct h2_vol *v;
	int r;

	if ((r = h2_store_format(dev, &fo)) < 0)
		fz_fail("format", r);
	if ((r = h2_store_open(dev, &so, &st)) < 0)
		fz_fail("open the store", r);
	/* a: 4 GiB, a 4-level tree, reaching far. */
	if ((r = h2_vol_create(st, "a", 4ull << 30, NULL)) < 0)
		fz_fail("create a", r);
	fz_write_vol(st, "a", 0, 8192, 1);
	fz_write_vol(st, "a", 5000, 1000, 2);
	fz_write_vol(st, "a", 300 << 10, 4096, 3);
	fz_write_vol(st, "a", 20 << 20, 4096, 4);
	fz_write_vol(st, "a", 3ull << 30, 4096, 5);
	/* b: 64 KiB, one level, full. */
	if ((r = h2_vol_create(st, "b", 64 << 10, NULL)) < 0)
		fz_fail("create b", r);
	fz_write_vol(st, "b", 0, 64 << 10, 6);
	/* e: never written. */
	if ((r = h2_vol_create(st, "e", 1 << 20, NULL)) < 0)
		fz_fail("create e", r);
	if ((r = h2_store_sync(st, NULL)) < 0)
		fz_fail("sync", r);

	/* Snapshots of a, with a's tree changing between them, and a
	 * clone of the first one. */
	if ((r = h2_snap_create(st, "a", "s1", NULL)) < 0)
		fz_fail("snapshot s1", r);
	fz_write_vol(st, "a", 0, 4096, 7);
	fz_write_vol(st, "a", 40 << 20, 4096, 8);
	if ((r = h2_vol_open(st, "a", &v)) < 0)
		fz_fail("open a", r);
	if ((r = h2_vol_trim(v, 300 << 10, 4096, 0)) < 0)
		fz_fail("trim", r);
	h2_vol_close(v);
	if ((r = h2_store_sync(st, NULL)) < 0)
		fz_fail("sync", r);
	if ((r = h2_snap_create(st, "a", "s2", NULL)) < 0)
		fz_fail("snapshot s2", r);
	if ((r = h2_snap_clone(st, "a", "s1", "c", NULL)) < 0)
		fz_fail("clone", r);
	if ((r = h2_vol_open(st, "c", &v)) < 0)
		fz_fail("open c", r);
	fz_pattern(blk, sizeof(blk), 9);
	{
		struct h2_op ops[] = {
		    {.type = H2_OP_WRITE,
		     .off = 8192,
		     .len = 2 * 4096,
		     .buf = blk},
		    {.type = H2_OP_TRIM, .off = 0, .len = 4096},
		    {.type = H2_OP_ZERO,
		     .flags = H2_IO_NO_HOLE,
		     .off = 1 << 20,
		     .len = 4096},
		    {.type = H2_OP_WRITE,
		     .off = (2 << 20) + 100,
		     .len = 5000,
		     .buf = blk},
		};

		if ((r = h2_vol_txn(v, ops, sizeof(ops) / sizeof(ops[0]), 0,
				    NULL)) < 0)
			fz_fail("transaction", r);
	}
	h2_vol_close(v);
	/* A few more flushes: every header copy gets its own tid. */
	for (unsigned i = 0; i < 3; i++) {
		fz_write_vol(st, "b", i * 4096, 4096, 10 + i);
		if ((r = h2_store_sync(st, NULL)) < 0)
			fz_fail("sync", r);
	}
	if ((r = h2_store_close(st)) < 0)
		fz_fail("close", r);
}

/*
 * Replace what differs from one build to the next (the uuid, the format
 * time, creation times in the directory) by constants, and make every
 * check code match again, in the older header copies' trees too (what
 * they share with the newest is fixed last by the newest).
 */
static void fz_normalize(void)
{
	unsigned idx[H2_HDR_COPIES], n = fz_headers_by_tid(idx);
	struct h2_volhdr h;
	uint64_t t = 1700000000ull * 1000000000ull;

	FUZZ_CHECK(n == fz_copies());
	for (unsigned i = 0; i < n; i++) {
		fz_read(h2_hdr_offset(i), &h, sizeof(h));
		memset(h.uuid, 0x42, sizeof(h.uuid));
		h.format_time_ns = t;
		fz_write(h2_hdr_offset(i), &h, sizeof(h));
	}
	/* The records, found through the span walk. */
	fz_gen++;
	fz_nspans = 0;
	for (unsigned i = 0; i < n; i++)
		fz_collect(h2_hdr_offset(idx[i]) +
			       offsetof(struct h2_volhdr, dir_root),
			   FZ_VOLREC, true, 0);
	for (unsigned i = 0; i < fz_nspans; i++)
		fz_write(fz_spans[i].off + offsetof(struct h2_volrec, ctime_ns),
			 &t, sizeof(t));
	fz_nspans = 0;
	fz_fix(true);
}

static void fz_init(void)
{
	static const enum fz_kind kinds[] = {
	    FZ_DIRIND, FZ_DIR, FZ_VOLREC, FZ_ROOT, FZ_IND, FZ_DATA, FZ_BREF,
	};
	unsigned idx[H2_HDR_COPIES], n;
	struct h2_fdev *fd;
	struct h2_dev *dev;
	struct h2_volhdr h;
	int r;

	if (fz_ready)
		return;
	if ((r = h2_fdev_create(FZ_DEV_SIZE, &fd)) < 0)
		fz_fail("device", r);
	dev = h2_fdev_dev(fd);
	fz_build(dev);
	for (uint64_t b = 0; b < FZ_DEV_SIZE / H2_BLOCK_SIZE; b++) {
		uint8_t buf[H2_BLOCK_SIZE];

		if ((r = h2_dev_pread(dev, buf, sizeof(buf),
				      b * H2_BLOCK_SIZE)) < 0)
			fz_fail("read back", r);
		if (memcmp(buf, fz_zero, sizeof(buf)) == 0)
			continue;
		fz_base[b] = malloc(H2_BLOCK_SIZE);
		FUZZ_CHECK(fz_base[b]);
		memcpy(fz_base[b], buf, sizeof(buf));
	}
	h2_fdev_free(fd);
	memcpy(fz_work, fz_base, sizeof(fz_work));
	fz_dev_size = FZ_DEV_SIZE;

	fz_normalize();
	/* The normalized view becomes the base. */
	for (size_t i = 0; i < fz_npriv; i++) {
		free(fz_base[fz_priv[i]]);
		fz_base[fz_priv[i]] = fz_work[fz_priv[i]];
	}
	fz_npriv = 0;

	/* The places, most valuable first: the span byte of an input
	 * picks one modulo their number. */
	n = fz_headers_by_tid(idx);
	for (unsigned i = 0; i < n; i++) {
		unsigned c = idx[n - 1 - i]; /* newest first */

		fz_span_add(FZ_HDR, h2_hdr_offset(c), H2_BLOCK_SIZE);
		fz_span_add(FZ_DIRROOT,
			    h2_hdr_offset(c) +
				offsetof(struct h2_volhdr, dir_root),
			    sizeof(struct h2_blockref));
	}
	fz_read(h2_hdr_offset(idx[n - 1]), &h, sizeof(h));
	fz_tid = h.tid;
	{
		/* The slot the newest header selects first. */
		uint8_t sel;

		fz_read(h2_hdr_offset(idx[n - 1]) + H2_HDR_FIXED, &sel, 1);
		fz_span_add(FZ_FMSLOT, h2_fm_slot_offset(h.fm_base, 0, sel & 1),
			    H2_BLOCK_SIZE);
		fz_span_add(FZ_FMSLOT,
			    h2_fm_slot_offset(h.fm_base, 0, !(sel & 1)),
			    H2_BLOCK_SIZE);
	}
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		unsigned before = fz_nspans;

		fz_gen++; /* blocks shared by two trees count once */
		for (unsigned i = n; i-- > 0;) {
			fz_collect(h2_hdr_offset(idx[i]) +
				       offsetof(struct h2_volhdr, dir_root),
				   kinds[k], true, 0);
		}
		/* A few data blocks are enough. */
		if (kinds[k] == FZ_DATA && fz_nspans > before + 8)
			fz_nspans = before + 8;
	}
	fz_spans[fz_nspans++] =
	    (struct fz_span){0, (uint32_t)(FZ_DEV_SIZE >> 10), FZ_DEV};

	/* Values worth writing into fields. */
	{
		static const uint64_t fixed[] = {
		    0,
		    1,
		    2,
		    3,
		    H2_BLOCK_RADIX,
		    H2_FANOUT_RADIX,
		    2 * H2_FANOUT_RADIX,
		    3 * H2_FANOUT_RADIX,
		    H2_FANOUT - 1,
		    H2_FANOUT,
		    H2_MAX_LEVELS,
		    H2_MAX_LEVELS + 1,
		    H2_NAME_MAX,
		    H2_NAME_MAX + 1,
		    0x7f,
		    0x80,
		    0xff,
		    0xffff,
		    0xffffffffu,
		    1ull << 31,
		    1ull << 32,
		    1ull << 63,
		    UINT64_MAX,
		    H2_BLOCK_SIZE,
		    H2_VOLUME_MAX_SIZE,
		    H2_VOLUME_MAX_SIZE + 1,
		    H2_HDR_REGION,
		    H2_HDR_STRIDE,
		    H2_HDR_MAX_FM_PAGES,
		    H2_DEV_MIN_SIZE,
		    FZ_DEV_SIZE,
		    FZ_DEV_SIZE + H2_BLOCK_SIZE,
		    FZ_DEV_SIZE / H2_BLOCK_SIZE,
		    FZ_DEV_SIZE / H2_BLOCK_SIZE - 1,
		    H2_VOLREC_USED | H2_VOLREC_SNAPSHOT,
		    H2_FM_BITS,
		    4,
		    5,
		    6,
		    7,
		    8,
		};

		for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
			fz_value_add(fixed[i]);
		fz_value_add(fz_tid);
		fz_value_add(fz_tid + 1);
		fz_value_add(fz_tid - 1);
		fz_value_add(h.fm_base);
		fz_value_add(h.used_blocks);
		fz_value_add(h.next_vol_id);
		/* Every place's block, as a blockref's data_off. */
		for (unsigned i = 0; i < fz_nspans; i++)
			fz_value_add(
			    (fz_spans[i].off & ~(uint64_t)(H2_BLOCK_SIZE - 1)) |
			    H2_BLOCK_RADIX);
	}
	fz_ready = true;
}

/* ---------------------------------------------------------------------- */
/* One input.                                                             */

/* Apply the patches; returns how many there were. */
static unsigned fz_patch(const uint8_t *d, size_t n)
{
	unsigned count = 0;
	size_t i = 0;

	while (count < FZ_MAX_PATCHES && n - i >= 4) {
		const struct fz_span *s = &fz_spans[d[i] % fz_nspans];
		uint64_t off = d[i + 1] | (uint64_t)d[i + 2] << 8;
		unsigned op = d[i + 3] >> 6, k = (d[i + 3] & 0x3f) + 1u;
		uint8_t buf[64];

		i += 4;
		off = s->kind == FZ_DEV ? (off % s->len) << 10
					: s->off + off % s->len;
		switch (op) {
		case 0:
			if (k > n - i)
				k = (unsigned)(n - i);
			fz_write(off, d + i, k);
			i += k;
			break;
		case 1: {
			unsigned width = 1u << (k - 1) % 4;
			uint64_t v;

			if (i >= n)
				return count;
			v = fz_values[d[i++] % fz_nvalues];
			for (unsigned b = 0; b < width; b++)
				buf[b] = (uint8_t)(v >> (8 * b));
			fz_write(off, buf, width);
			break;
		}
		case 2: {
			const struct fz_span *src;
			uint64_t soff;

			if (n - i < 3)
				return count;
			src = &fz_spans[d[i] % fz_nspans];
			soff = d[i + 1] | (uint64_t)d[i + 2] << 8;
			soff = src->kind == FZ_DEV ? (soff % src->len) << 10
						   : src->off + soff % src->len;
			i += 3;
			if (soff + k > FZ_MAX_BLOCKS * (uint64_t)H2_BLOCK_SIZE)
				break;
			fz_read(soff, buf, k);
			fz_write(off, buf, k);
			break;
		}
		default:
			if (i >= n)
				return count;
			memset(buf, d[i++], k);
			fz_write(off, buf, k);
			break;
		}
		count++;
	}
	return count;
}

/* Volume reads: stop block status after FZ_EXT_CAP extents. */
struct fz_exts {
	uint64_t off[FZ_EXT_CAP], len[FZ_EXT_CAP];
	bool hole[FZ_EXT_CAP];
	unsigned n;
};

static int fz_ext_cb(void *arg, uint64_t off, uint64_t len, bool hole)
{
	struct fz_exts *e = arg;

	if (e->n == FZ_EXT_CAP)
		return 1;
	e->off[e->n] = off;
	e->len[e->n] = len;
	e->hole[e->n] = hole;
	e->n++;
	return 0;
}

/*
 * Open volume name, map it and read what is mapped (up to FZ_READ_CAP
 * bytes) and its last block.  Returns 0, or the first error.
 */
static int fz_read_volume(struct h2_store *st, const char *name, uint8_t *buf)
{
	struct fz_exts e = {0};
	uint64_t size, budget = FZ_READ_CAP;
	struct h2_vol *v;
	int r, first = 0;

	r = h2_vol_open(st, name, &v);
	if (r < 0) {
		fz_stats.vol_open_fail++;
		return fz_note(r, 0, name);
	}
	fz_stats.vols_read++;
	size = h2_vol_size(v);
	FUZZ_CHECK(size <= H2_VOLUME_MAX_SIZE);
	FUZZ_CHECK(strlen(h2_vol_name(v)) < 2 * H2_NAME_MAX + 2);
	if (size) {
		uint64_t end = 0;

		r = h2_vol_block_status(v, 0, size, fz_ext_cb, &e);
		if (r < 0) {
			fz_stats.bs_fail++;
			first = fz_note(r, first, name);
		}
		for (unsigned i = 0; i < e.n; i++) {
			/* In order, inside the volume, not overlapping. */
			FUZZ_CHECK(e.off[i] >= end && e.len[i] > 0);
			FUZZ_CHECK(e.off[i] <= size &&
				   e.len[i] <= size - e.off[i]);
			end = e.off[i] + e.len[i];
		}
	}
	for (unsigned i = 0; i < e.n && budget; i++) {
		uint64_t len = e.len[i] < budget ? e.len[i] : budget;

		if (e.hole[i])
			len = len < H2_BLOCK_SIZE ? len : H2_BLOCK_SIZE;
		r = h2_vol_read(v, buf, e.off[i], len);
		if (r == 0 && e.hole[i])
			FUZZ_CHECK(memcmp(buf, fz_zero, len) == 0);
		budget -= len;
		first = fz_note(r, first, name);
		r == 0 ? fz_stats.read_ok++ : fz_stats.read_fail++;
	}
	if (size) {
		uint64_t len = size < H2_BLOCK_SIZE ? size : H2_BLOCK_SIZE;

		r = h2_vol_read(v, buf, size - len, len);
		first = fz_note(r, first, name);
		r == 0 ? fz_stats.read_ok++ : fz_stats.read_fail++;
	}
	/* Past the end is refused, never read. */
	FUZZ_CHECK(h2_vol_read(v, buf, size, 1) < 0);
	h2_vol_close(v);
	return first;
}

/* Open the store read-only and read everything in it; 0 if all worked. */
static int fz_open_and_read(void)
{
	struct h2_store_opts so = {.read_only = true};
	struct h2_vol_info *vols = NULL;
	struct h2_snap_info *snaps = NULL;
	struct h2_store_stats stats;
	size_t nvols = 0, nsnaps = 0;
	static uint8_t *buf;
	struct h2_store *st;
	int r, first = 0;

	fz_first_msg[0] = 0;
	r = h2_store_open(fzd_new(), &so, &st);
	if (r < 0) {
		fz_stats.open_fail++;
		return fz_note(r, 0, "open");
	}
	fz_stats.open_ok++;
	if (!buf)
		buf = malloc(FZ_READ_CAP); /* kept for the process */
	FUZZ_CHECK(buf);
	h2_store_stat(st, &stats);
	r = h2_vol_list(st, &vols, &nvols);
	FUZZ_CHECK(r == 0);
	for (size_t i = 0; i < nvols; i++) {
		struct h2_vol_info info;

		FUZZ_CHECK(strlen(vols[i].name) <= H2_NAME_MAX);
		/* (A damaged directory may repeat a name, or hold one
		 * that lookups refuse.) */
		r = h2_vol_info(st, vols[i].name, &info);
		first = fz_note(r, first, vols[i].name);
		if (r == 0)
			first = fz_note(fz_read_volume(st, vols[i].name, buf),
					first, vols[i].name);
	}
	r = h2_snap_list(st, NULL, &snaps, &nsnaps);
	FUZZ_CHECK(r == 0);
	for (size_t i = 0; i < nsnaps; i++) {
		char name[2 * H2_NAME_MAX + 2];

		FUZZ_CHECK(strlen(snaps[i].volume) <= H2_NAME_MAX &&
			   strlen(snaps[i].name) <= H2_NAME_MAX);
		snprintf(name, sizeof(name), "%s@%s", snaps[i].volume,
			 snaps[i].name);
		first = fz_note(fz_read_volume(st, name, buf), first, name);
	}
	/* Read only: nothing is written, synced or changed. */
	FUZZ_CHECK(h2_vol_create(st, "new", 4096, NULL) == -EROFS);
	free(vols);
	free(snaps);
	FUZZ_CHECK(h2_store_close(st) == 0);
	return first;
}

/* As formatted, grown, three header copies' worth, the minimum. */
static const uint64_t fz_dev_sizes[4] = {
    FZ_DEV_SIZE,
    FZ_DEV_SIZE + (1u << 20),
    3 * H2_HDR_STRIDE,
    H2_DEV_MIN_SIZE,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct h2_check_report *rep = NULL;
	struct h2_dev *dev;
	unsigned patches;
	uint8_t mode;
	int r;

	fz_init();
	if (size < 1)
		return 0;
	mode = data[0];
	fz_dev_size = fz_dev_sizes[(mode >> 2) & 3];
	fz_stats.inputs++;
	patches = fz_patch(data + 1, size - 1);
	fz_stats.patches += patches;
	if (mode & 1) {
		fz_fix(mode & 2);
		fz_stats.fixed++;
	}

	dev = fzd_new();
	r = h2_check(dev, &rep);
	fzd_close(dev);
	FUZZ_CHECK(r == 0);
	FUZZ_CHECK(rep->status <= H2_CHECK_UNOPENABLE);
	FUZZ_CHECK((rep->status == H2_CHECK_CLEAN) == (rep->nproblems == 0));
	fz_stats.check[rep->status]++;
	/* The untouched image is clean. */
	if (patches == 0 && fz_dev_size >= FZ_DEV_SIZE)
		FUZZ_CHECK(rep->status == H2_CHECK_CLEAN);

	r = fz_open_and_read();
	/* The checker and the engine agree: clean means usable. */
	if (rep->status == H2_CHECK_CLEAN && r < 0) {
		fprintf(stderr,
			"fuzz_store: h2_check found the store clean, but the "
			"engine failed: %s (%s)\n",
			strerror(-r), fz_first_msg);
		FUZZ_CHECK(!"a clean store failed to open or read");
	}
	h2_check_report_free(rep);
	fz_view_reset();
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Seeds and the corpus report (fuzz_main).                               */

/* Span index of the nth place of a kind. */
static unsigned fz_span_of(enum fz_kind kind, unsigned nth)
{
	for (unsigned i = 0; i < fz_nspans; i++)
		if (fz_spans[i].kind == kind && nth-- == 0)
			return i;
	return fz_nspans - 1;
}

/* Span index of the record (in the newest directory) named name. */
static unsigned fz_rec_span(const char *name, struct h2_volrec *rec)
{
	for (unsigned i = 0; i < fz_nspans; i++) {
		if (fz_spans[i].kind != FZ_VOLREC)
			continue;
		fz_read(fz_spans[i].off, rec, sizeof(*rec));
		if (strcmp(rec->name, name) == 0)
			return i;
	}
	FUZZ_CHECK(!"no such record in the image");
	return 0;
}

struct fz_seed {
	uint8_t b[256];
	size_t n;
};

static void seed_raw(struct fz_seed *s, unsigned span, uint32_t off, uint64_t v,
		     unsigned width)
{
	FUZZ_CHECK(s->n + 4 + width <= sizeof(s->b));
	s->b[s->n++] = (uint8_t)span;
	s->b[s->n++] = (uint8_t)off;
	s->b[s->n++] = (uint8_t)(off >> 8);
	s->b[s->n++] = (uint8_t)(width - 1);
	for (unsigned i = 0; i < width; i++)
		s->b[s->n++] = (uint8_t)(v >> (8 * i));
}

#define HDR_F(f)  ((uint32_t)offsetof(struct h2_volhdr, f))
#define REC_F(f)  ((uint32_t)offsetof(struct h2_volrec, f))
#define BREF_F(f) ((uint32_t)offsetof(struct h2_blockref, f))
#define SZ(t, f)  ((unsigned)sizeof(((struct t *)0)->f))

void fuzz_seeds(fuzz_seed_fn emit, void *arg)
{
	struct seed_def {
		const char *name;
		uint8_t mode;
		enum fz_kind kind;
		unsigned nth;
		uint32_t off;
		uint64_t value;
		unsigned width;
	};
	uint64_t hdr1 = 0, fm = 0;
	struct h2_volrec a, b, c, s1;
	unsigned span_a, span_b, span_c, span_s1;
	struct fz_seed s;

	fz_init();
	span_a = fz_rec_span("a", &a);
	span_b = fz_rec_span("b", &b);
	span_c = fz_rec_span("c", &c);
	span_s1 = fz_rec_span("s1", &s1);
	hdr1 = fz_spans[fz_span_of(FZ_HDR, 1)].off | H2_BLOCK_RADIX;
	fm = fz_spans[fz_span_of(FZ_FMSLOT, 0)].off | H2_BLOCK_RADIX;
	{
		const struct seed_def defs[] = {
		    {"hdr-dev-size", 1, FZ_HDR, 0, HDR_F(dev_size),
		     FZ_DEV_SIZE + H2_BLOCK_SIZE, 8},
		    {"hdr-tid-max", 1, FZ_HDR, 1, HDR_F(tid), UINT64_MAX, 8},
		    {"hdr-len-zero", 1, FZ_HDR, 0, HDR_F(hdr_len), 0, 4},
		    {"hdr-fm-pages", 1, FZ_HDR, 0, HDR_F(fm_pages), 2, 4},
		    {"hdr-used-over", 1, FZ_HDR, 0, HDR_F(used_blocks),
		     FZ_DEV_SIZE, 8},
		    {"hdr-next-id-zero", 1, FZ_HDR, 0, HDR_F(next_vol_id), 0,
		     8},
		    {"hdr-copy-index", 1, FZ_HDR, 0, HDR_F(copy_index), 3, 4},
		    {"hdr-crc-only", 0, FZ_HDR, 0, HDR_F(crc), 0, 4},
		    {"dirroot-to-header", 1, FZ_DIRROOT, 0, BREF_F(data_off),
		     hdr1, 8},
		    {"dirroot-to-freemap", 1, FZ_DIRROOT, 0, BREF_F(data_off),
		     fm, 8},
		    {"dirroot-level", 1, FZ_DIRROOT, 0, BREF_F(level), 3, 1},
		    {"dirroot-type-data", 1, FZ_DIRROOT, 0, BREF_F(type),
		     H2_BREF_DATA, 1},
		    {"rec-levels", 1, FZ_VOLREC, 0, REC_F(levels), 9, 1},
		    {"rec-name-len", 1, FZ_VOLREC, 1, REC_F(name_len), 0, 1},
		    {"rec-size-max", 1, FZ_VOLREC, 0, REC_F(size),
		     H2_VOLUME_MAX_SIZE, 8},
		    /* (The records by name: see below.) */
		    {"rec-snapshot-orphan", 1, FZ_VOLREC, 0, REC_F(parent_id),
		     999, 8},
		    {"rec-flags", 1, FZ_VOLREC, 0, REC_F(flags),
		     H2_VOLREC_USED | H2_VOLREC_SNAPSHOT, 4},
		    {"rec-origin", 1, FZ_VOLREC, 0, REC_F(origin_id), 0, 8},
		    {"rec-snap-tid", 1, FZ_VOLREC, 0, REC_F(snap_tid), 0, 8},
		    {"rec-excl", 1, FZ_VOLREC, 0, REC_F(excl_blocks), 1000, 8},
		    {"root-type-dir", 1, FZ_ROOT, 0, BREF_F(type), H2_BREF_DIR,
		     1},
		    {"root-keybits", 1, FZ_ROOT, 1, BREF_F(keybits), 0, 1},
		    {"bref-key", 1, FZ_BREF, 0, BREF_F(key), 1, 8},
		    {"bref-level", 1, FZ_BREF, 2, BREF_F(level), 200, 1},
		    {"bref-blocks", 1, FZ_BREF, 3, BREF_F(blocks), UINT64_MAX,
		     8},
		    {"bref-birth", 1, FZ_BREF, 4, BREF_F(birth_tid), UINT64_MAX,
		     8},
		    {"bref-to-header", 1, FZ_BREF, 1, BREF_F(data_off), hdr1,
		     8},
		    {"bref-radix", 1, FZ_BREF, 5, BREF_F(data_off), 0x1000, 8},
		    {"ind-to-itself", 1, FZ_IND, 1, 0, 0, 0},
		    {"data-byte", 0, FZ_DATA, 0, 100, 0x5a, 1},
		    {"data-byte-fixed", 1, FZ_DATA, 1, 100, 0x5a, 1},
		    {"fm-bit-cleared", 1, FZ_FMSLOT, 0, H2_FM_HDR + 3, 0, 1},
		    {"fm-bit-set", 1, FZ_FMSLOT, 0, H2_FM_HDR + 1000, 0xff, 1},
		    {"fm-magic", 1, FZ_FMSLOT, 0, 0, 0, 8},
		    {"small-device", 0x0c, FZ_HDR, 0, 0, 0, 0},
		    {"three-copies", 0x08, FZ_HDR, 0, 0, 0, 0},
		    {"grown-device", 0x04, FZ_HDR, 0, 0, 0, 0},
		    {"pristine", 0, FZ_HDR, 0, 0, 0, 0},
		    {"pristine-fixed", 1, FZ_HDR, 0, 0, 0, 0},
		};

		for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++) {
			const struct seed_def *d = &defs[i];
			unsigned span = fz_span_of(d->kind, d->nth);
			uint64_t value = d->value;

			/* Records by name: the snapshot loses its volume,
			 * a volume claims to be a snapshot, the clone's
			 * origin is a volume, a snapshot's tid precedes
			 * the volume, its space is wrong. */
			if (strcmp(d->name, "rec-snapshot-orphan") == 0)
				span = span_s1;
			if (strcmp(d->name, "rec-flags") == 0)
				span = span_b;
			if (strcmp(d->name, "rec-origin") == 0) {
				span = span_c;
				value = a.id;
			}
			if (strcmp(d->name, "rec-snap-tid") == 0) {
				span = span_s1;
				value = a.create_tid;
			}
			if (strcmp(d->name, "rec-excl") == 0)
				span = span_s1;
			(void)span_a;

			s.n = 0;
			s.b[s.n++] = d->mode;
			if (d->width)
				seed_raw(&s, span, d->off, value, d->width);
			if (strcmp(d->name, "ind-to-itself") == 0) {
				/* The first slot of an indirect block names
				 * that block. */
				uint64_t self =
				    fz_spans[span].off | H2_BLOCK_RADIX;

				seed_raw(&s, span, BREF_F(data_off), self, 8);
			}
			emit(arg, d->name, s.b, s.n);
		}
	}
}

int fuzz_report(FILE *out)
{
	fprintf(out,
		"inputs %llu (%llu patches, %llu with check codes fixed): "
		"check clean %llu problems %llu unopenable %llu; open ok "
		"%llu failed %llu; volumes read %llu (open failed %llu), "
		"reads ok %llu failed %llu, block status failed %llu; %u "
		"places, %u values\n",
		(unsigned long long)fz_stats.inputs,
		(unsigned long long)fz_stats.patches,
		(unsigned long long)fz_stats.fixed,
		(unsigned long long)fz_stats.check[H2_CHECK_CLEAN],
		(unsigned long long)fz_stats.check[H2_CHECK_PROBLEMS],
		(unsigned long long)fz_stats.check[H2_CHECK_UNOPENABLE],
		(unsigned long long)fz_stats.open_ok,
		(unsigned long long)fz_stats.open_fail,
		(unsigned long long)fz_stats.vols_read,
		(unsigned long long)fz_stats.vol_open_fail,
		(unsigned long long)fz_stats.read_ok,
		(unsigned long long)fz_stats.read_fail,
		(unsigned long long)fz_stats.bs_fail, fz_nspans, fz_nvalues);
	return fz_stats.check[H2_CHECK_CLEAN] &&
		       fz_stats.check[H2_CHECK_PROBLEMS] &&
		       fz_stats.check[H2_CHECK_UNOPENABLE] &&
		       fz_stats.open_ok && fz_stats.open_fail &&
		       fz_stats.read_ok && fz_stats.read_fail
		   ? 0
		   : 1;
}
