/*
 * The offline checker (core/check.c): a store written through the engine
 * checks clean with exact counts, and each kind of damage, made with
 * h2_fdev_poke the way a failing disk would, is found and named.
 *
 * The tests find blocks by walking the on-disk structures of format.h
 * themselves (header -> directory -> record -> tree), so they do not trust
 * the checker to tell them where things are.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "check.h"
#include "format.h"
#include "helpers.h"
#include "internal.h"

#define BS H2_BLOCK_SIZE

/* ---------------------------------------------------------------------- */
/* Finding things on the device.                                          */

static void t_read(struct h2_fdev *fd, void *buf, size_t len, uint64_t off)
{
	cr_assert_eq(h2_dev_pread(h2_fdev_dev(fd), buf, len, off), 0);
}

/* The newest valid header and its selector bits (caller frees *sel). */
static void t_hdr(struct h2_fdev *fd, struct h2_volhdr *h, uint8_t **sel)
{
	unsigned mask;
	int copy;

	cr_assert_eq(h2_hdr_read_best(h2_fdev_dev(fd), h, sel, &copy, &mask),
		     0);
}

/* Blockref in slot i of the indirect block b names. */
static struct h2_blockref t_slot(struct h2_fdev *fd,
				 const struct h2_blockref *b, unsigned i)
{
	struct h2_blockref s[H2_FANOUT];

	cr_assert_eq(b->type, H2_BREF_INDIRECT);
	t_read(fd, s, sizeof(s), H2_BREF_OFFSET(b));
	return s[i];
}

/* The directory record of volume name (from the newest header). */
static struct h2_volrec t_rec(struct h2_fdev *fd, const char *name)
{
	struct h2_volhdr h;
	uint8_t *sel;
	struct h2_blockref l2, l1, leaf;
	struct h2_volrec recs[H2_VOLREC_PER_BLOCK];

	t_hdr(fd, &h, &sel);
	free(sel);
	l2 = h.dir_root;
	/* Tests use few volumes: all records live in directory leaf 0. */
	l1 = t_slot(fd, &l2, 0);
	leaf = t_slot(fd, &l1, 0);
	cr_assert_eq(leaf.type, H2_BREF_DIR);
	t_read(fd, recs, sizeof(recs), H2_BREF_OFFSET(&leaf));
	for (unsigned i = 0; i < H2_VOLREC_PER_BLOCK; i++)
		if ((recs[i].flags & H2_VOLREC_USED) &&
		    strcmp(recs[i].name, name) == 0)
			return recs[i];
	cr_assert_fail("no record for volume %s", name);
	return recs[0];
}

/* Blockref of the block at `level` on the path to leaf key of a volume. */
static struct h2_blockref t_bref(struct h2_fdev *fd, const char *name,
				 uint64_t key, unsigned level)
{
	struct h2_volrec rec = t_rec(fd, name);
	struct h2_blockref b = rec.root;

	while (b.level > level) {
		unsigned shift = H2_FANOUT_RADIX * (b.level - 1u);

		b = t_slot(fd, &b, (unsigned)(key >> shift) & (H2_FANOUT - 1));
		cr_assert_neq(b.type, H2_BREF_EMPTY,
			      "key %" PRIu64 " is a hole", key);
	}
	return b;
}

/* Set or clear one block's freemap bit, rewriting the page validly. */
static void t_fm_edit(struct h2_fdev *fd, uint64_t blk, bool set)
{
	struct h2_volhdr h;
	uint8_t *sel, page[BS];
	struct h2_fmpage_hdr ph;
	uint32_t p = (uint32_t)(blk / H2_FM_BITS), bit = blk % H2_FM_BITS;
	uint64_t *bits = (uint64_t *)(page + H2_FM_HDR), off;
	unsigned s;

	t_hdr(fd, &h, &sel);
	s = (sel[p / 8] >> (p % 8)) & 1;
	free(sel);
	off = h2_fm_slot_offset(h.fm_base, p, s);
	t_read(fd, page, sizeof(page), off);
	if (set)
		bits[bit / 64] |= 1ull << (bit % 64);
	else
		bits[bit / 64] &= ~(1ull << (bit % 64));
	memcpy(&ph, page, sizeof(ph));
	ph.used = 0;
	for (unsigned w = 0; w < H2_FM_BITS / 64; w++)
		ph.used += (uint32_t)__builtin_popcountll(bits[w]);
	ph.check = 0;
	memcpy(page, &ph, sizeof(ph));
	ph.check = h2_check64(page, sizeof(page));
	memcpy(page, &ph, sizeof(ph));
	cr_assert_eq(h2_fdev_poke(fd, off, page, sizeof(page)), 0);
}

/* Flip the bits of one byte at device offset off. */
static void t_flip(struct h2_fdev *fd, uint64_t off)
{
	uint8_t x;

	t_read(fd, &x, 1, off);
	x ^= 0xff;
	cr_assert_eq(h2_fdev_poke(fd, off, &x, 1), 0);
}

static struct h2_check_report *t_check(struct h2_fdev *fd)
{
	struct h2_check_report *rep;

	cr_assert_eq(h2_check(h2_fdev_dev(fd), &rep), 0, "%s",
		     h2_core_errmsg());
	return rep;
}

/* Index of the first problem whose where and what contain the strings. */
static long t_find(const struct h2_check_report *rep, const char *where,
		   const char *what)
{
	for (size_t i = 0; i < rep->nproblems; i++)
		if (strstr(rep->problems[i].where, where) &&
		    strstr(rep->problems[i].what, what))
			return (long)i;
	return -1;
}

static void t_dump(const struct h2_check_report *rep)
{
	for (size_t i = 0; i < rep->nproblems; i++)
		fprintf(stderr, "  %s: %s\n", rep->problems[i].where,
			rep->problems[i].what);
}

/* ---------------------------------------------------------------------- */
/* The store every damage test starts from.                               */

/*
 * 64 MiB device; vm1 (10 MiB, 2 levels) holds leaves 0..73; vm2 (1 GiB,
 * 3 levels) holds leaf 0 and leaf 131072.  Referenced blocks:
 *   vm1: 74 data + 2 level-1 + 1 root                 = 77
 *   vm2: 2 data + 2 level-1 + 2 level-2 + 1 root       =  7
 *   directory: root + level-1 + one DIR leaf           =  3
 */
#define T_VM1_BLOCKS 77
#define T_VM2_BLOCKS 7
#define T_DIR_BLOCKS 3
#define T_REFERENCED (T_VM1_BLOCKS + T_VM2_BLOCKS + T_DIR_BLOCKS)

static struct h2_fdev *t_store(void)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	static uint8_t w[300000];
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "vm1", 10 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_create(st, "vm2", 1ull << 30, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "vm1", &v), 0);
	t_fill(w, sizeof(w), 7, 0);
	cr_assert_eq(h2_vol_write(v, w, 0, sizeof(w), 0), 0, "%s",
		     h2_core_errmsg());
	h2_vol_close(v);
	cr_assert_eq(h2_vol_open(st, "vm2", &v), 0);
	cr_assert_eq(h2_vol_write(v, w, 0, BS, 0), 0);
	cr_assert_eq(h2_vol_write(v, w + BS, 512 * MiB, BS, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0, "%s", h2_core_errmsg());
	return fd;
}

/* ---------------------------------------------------------------------- */

Test(check, fresh_store_is_clean_and_only_reserved_blocks_are_used)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_check_report *rep = t_check(fd);

	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_CLEAN);
	cr_assert_eq(rep->nproblems, 0);
	cr_assert_eq(rep->header_copies, 4);
	cr_assert_eq(rep->headers_valid, 4);
	cr_assert_eq(rep->tid, 1);
	cr_assert_eq(rep->volumes, 0);
	cr_assert_eq(rep->blocks_total, 64 * MiB / BS);
	/* Four 64 KiB header regions and one freemap page's two slots. */
	cr_assert_eq(rep->blocks_reserved, 4 * 16 + 2);
	cr_assert_eq(rep->blocks_used, rep->blocks_reserved);
	cr_assert_eq(rep->blocks_referenced, 0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

Test(check, written_store_is_clean_with_exact_counts)
{
	struct h2_fdev *fd = t_store();
	struct h2_check_report *rep = t_check(fd);

	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_CLEAN);
	cr_assert_eq(rep->nproblems, 0);
	cr_assert_eq(rep->volumes, 2);
	cr_assert_eq(rep->blocks_referenced, T_REFERENCED);
	cr_assert_eq(rep->blocks_verified, T_REFERENCED);
	cr_assert_eq(rep->leaked_blocks, 0);
	cr_assert_eq(rep->free_referenced, 0);
	cr_assert_eq(rep->blocks_used, rep->blocks_reserved + T_REFERENCED);
	cr_assert_eq(t_rec(fd, "vm1").used_blocks, T_VM1_BLOCKS);
	cr_assert_eq(t_rec(fd, "vm2").used_blocks, T_VM2_BLOCKS);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

Test(check, clean_after_overwrites_trims_resize_and_delete)
{
	struct h2_fdev *fd = t_store();
	struct h2_store *st = t_open(fd, false);
	static uint8_t w[256 * 1024];
	struct h2_check_report *rep;
	uint64_t seed = 42;
	struct h2_vol *v;

	/* Several flushes of overwrites free old blocks and reuse them. */
	cr_assert_eq(h2_vol_open(st, "vm1", &v), 0);
	for (int round = 0; round < 6; round++) {
		for (int k = 0; k < 8; k++) {
			uint64_t off = t_rand(&seed) % (10 * MiB - sizeof(w));

			t_fill(w, sizeof(w), seed, off);
			cr_assert_eq(
			    h2_vol_write(v, w, off, 1 + off % sizeof(w), 0), 0,
			    "%s", h2_core_errmsg());
		}
		cr_assert_eq(h2_vol_trim(v, (uint64_t)round * MiB, 300000, 0), 0);
		cr_assert_eq(h2_store_sync(st, NULL), 0, "%s", h2_core_errmsg());
	}
	h2_vol_close(v);
	cr_assert_eq(h2_vol_resize(st, "vm1", 3 * MiB + 100), 0, "%s",
		     h2_core_errmsg());
	cr_assert_eq(h2_vol_create(st, "gone", 8 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "gone", &v), 0);
	cr_assert_eq(h2_vol_write(v, w, 0, sizeof(w), 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	cr_assert_eq(h2_vol_delete(st, "gone"), 0);
	cr_assert_eq(h2_vol_delete(st, "vm2"), 0);
	cr_assert_eq(h2_store_close(st), 0, "%s", h2_core_errmsg());

	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_CLEAN);
	cr_assert_eq(rep->volumes, 1);
	cr_assert_eq(rep->leaked_blocks, 0);
	cr_assert_eq(rep->blocks_used,
		     rep->blocks_reserved + rep->blocks_referenced);
	cr_assert_eq(rep->blocks_verified, rep->blocks_referenced);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

Test(check, damaged_header_copy_is_named_but_store_opens)
{
	struct h2_fdev *fd = t_store();
	struct h2_check_report *rep;
	struct h2_store_opts ro = {.read_only = true};
	struct h2_store *st;

	t_flip(fd, h2_hdr_offset(1) + 100);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	cr_assert_eq(rep->headers_valid, 3);
	cr_assert_eq(rep->header_copies, 4);
	cr_assert_eq(rep->nproblems, 1);
	cr_assert_geq(t_find(rep, "header copy 1 (offset 16777216)", "CRC"), 0);
	/* Nothing else is wrong: the counts are those of a clean store. */
	cr_assert_eq(rep->blocks_referenced, T_REFERENCED);
	h2_check_report_free(rep);

	st = t_open_opts(fd, &ro);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

Test(check, all_headers_damaged_is_unopenable)
{
	struct h2_fdev *fd = t_store();
	struct h2_check_report *rep;
	struct h2_store *st;

	for (unsigned i = 0; i < 4; i++)
		t_flip(fd, h2_hdr_offset(i) + 8);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_UNOPENABLE);
	cr_assert_eq(rep->headers_valid, 0);
	for (unsigned i = 0; i < 4; i++) {
		char where[64];

		snprintf(where, sizeof(where),
			 "header copy %u (offset %" PRIu64 ")", i,
			 h2_hdr_offset(i));
		cr_assert_geq(t_find(rep, where, "invalid"), 0, "%s", where);
	}
	h2_check_report_free(rep);
	cr_assert_eq(h2_store_open(h2_fdev_dev(fd), NULL, &st), -ENOENT);
	h2_fdev_free(fd);
}

Test(check, unformatted_device_is_unopenable)
{
	struct h2_fdev *fd;
	struct h2_check_report *rep;

	cr_assert_eq(h2_fdev_create(64 * MiB, &fd), 0);
	rep = t_check(fd);
	cr_assert_eq(rep->status, H2_CHECK_UNOPENABLE);
	cr_assert_geq(t_find(rep, "", "no valid h2 volume header"), 0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

Test(check, damaged_data_block_is_named_and_read_fails)
{
	struct h2_fdev *fd = t_store();
	struct h2_blockref b = t_bref(fd, "vm1", 5, 0);
	uint64_t off = H2_BREF_OFFSET(&b);
	struct h2_check_report *rep;
	struct h2_store *st;
	struct h2_vol *v;
	uint8_t buf[2 * BS];
	char where[160], msg[64];

	t_flip(fd, off + 1000);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	cr_assert_eq(rep->nproblems, 1);
	snprintf(where, sizeof(where),
		 "volume vm1 block at device offset %" PRIu64 " key 5 level 0",
		 off);
	cr_assert_geq(t_find(rep, where, "checksum mismatch"), 0);
	/* A damaged data block is still referenced and counted. */
	cr_assert_eq(rep->blocks_referenced, T_REFERENCED);
	cr_assert_eq(rep->blocks_verified, T_REFERENCED - 1);
	cr_assert_eq(rep->leaked_blocks, 0);
	h2_check_report_free(rep);

	st = t_open(fd, false);
	cr_assert_eq(h2_vol_open(st, "vm1", &v), 0);
	cr_assert_eq(h2_vol_read(v, buf, 4 * BS + 10, sizeof(buf)), -EBADMSG);
	cr_assert(strstr(h2_core_errmsg(), "vm1"), "%s", h2_core_errmsg());
	snprintf(msg, sizeof(msg), "offset %u", 5 * BS);
	cr_assert(strstr(h2_core_errmsg(), msg), "%s", h2_core_errmsg());
	snprintf(msg, sizeof(msg), "device offset %" PRIu64, off);
	cr_assert(strstr(h2_core_errmsg(), msg), "%s", h2_core_errmsg());
	/* Its neighbours still read. */
	cr_assert_eq(h2_vol_read(v, buf, 6 * BS, BS), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

Test(check, damaged_indirect_block_makes_its_subtree_leak)
{
	struct h2_fdev *fd = t_store();
	struct h2_blockref b = t_bref(fd, "vm1", 64, 1);
	uint64_t off = H2_BREF_OFFSET(&b);
	struct h2_check_report *rep;
	char where[160];

	cr_assert_eq(b.key, 64);
	t_flip(fd, off + 64 * 3 + 20);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	snprintf(where, sizeof(where),
		 "volume vm1 block at device offset %" PRIu64 " key 64 level 1",
		 off);
	cr_assert_geq(t_find(rep, where, "checksum mismatch"), 0);
	cr_assert_geq(t_find(rep, "volume vm1", "unreadable"), 0);
	/* The ten data blocks below it (leaves 64..73) are unreachable. */
	cr_assert_eq(rep->leaked_blocks, 10);
	cr_assert_eq(rep->blocks_referenced, T_REFERENCED - 10);
	cr_assert_geq(t_find(rep, "device block", "leaked"), 0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

Test(check, damaged_volume_root_is_reported_and_others_checked)
{
	struct h2_fdev *fd = t_store();
	struct h2_volrec rec = t_rec(fd, "vm2");
	struct h2_check_report *rep;

	t_flip(fd, H2_BREF_OFFSET(&rec.root));
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	cr_assert_geq(t_find(rep, "volume vm2 block", "checksum mismatch"), 0);
	/* vm2's other six blocks can no longer be reached. */
	cr_assert_eq(rep->leaked_blocks, T_VM2_BLOCKS - 1);
	cr_assert_eq(t_find(rep, "volume vm1", ""), -1);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

Test(check, damaged_directory_is_unopenable)
{
	struct h2_fdev *fd = t_store();
	struct h2_volhdr h;
	uint8_t *sel;
	struct h2_check_report *rep;

	t_hdr(fd, &h, &sel);
	free(sel);
	t_flip(fd, H2_BREF_OFFSET(&h.dir_root) + 7);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_UNOPENABLE);
	cr_assert_geq(t_find(rep, "directory block", "checksum mismatch"), 0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

Test(check, referenced_block_free_in_freemap)
{
	struct h2_fdev *fd = t_store();
	struct h2_blockref b = t_bref(fd, "vm2", 131072, 0);
	uint64_t off = H2_BREF_OFFSET(&b);
	struct h2_check_report *rep;
	char where[160];

	t_fm_edit(fd, off / BS, false);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	cr_assert_eq(rep->free_referenced, 1);
	cr_assert_eq(rep->leaked_blocks, 0);
	snprintf(where, sizeof(where),
		 "volume vm2 block at device offset %" PRIu64
		 " key 131072 level 0",
		 off);
	cr_assert_geq(t_find(rep, where, "free in the freemap"), 0);
	/* The page itself is valid: only the semantics are wrong. */
	cr_assert_eq(t_find(rep, "freemap page", ""), -1);
	/* And the header's used count no longer matches the freemap. */
	cr_assert_geq(t_find(rep, "header copy", "used block count"), 0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

Test(check, allocated_unreferenced_block_is_a_leak)
{
	struct h2_fdev *fd = t_store();
	uint64_t blk = 64 * MiB / BS - 1;
	struct h2_check_report *rep;
	char where[64];

	t_fm_edit(fd, blk, true);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	cr_assert_eq(rep->leaked_blocks, 1);
	cr_assert_eq(rep->free_referenced, 0);
	snprintf(where, sizeof(where), "device block %" PRIu64 " (offset", blk);
	cr_assert_geq(t_find(rep, where, "leaked"), 0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

Test(check, many_leaks_are_listed_up_to_a_limit_then_summarized)
{
	struct h2_fdev *fd = t_store();
	uint64_t last = 64 * MiB / BS - 1;
	struct h2_check_report *rep;
	size_t listed = 0;

	/* 30 separate leaks (every other block at the end). */
	for (uint64_t i = 0; i < 30; i++)
		t_fm_edit(fd, last - 2 * i, true);
	rep = t_check(fd);
	cr_assert_eq(rep->leaked_blocks, 30);
	for (size_t i = 0; i < rep->nproblems; i++)
		if (strstr(rep->problems[i].where, "device block ") &&
		    strstr(rep->problems[i].what, "leaked"))
			listed++;
	cr_assert_eq(listed, 20);
	cr_assert_geq(t_find(rep, "freemap", "10 more blocks"), 0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

Test(check, reserved_block_free_in_freemap)
{
	struct h2_fdev *fd = t_store();
	struct h2_check_report *rep;

	/* Block 1 is inside header copy 0's region. */
	t_fm_edit(fd, 1, false);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	cr_assert_geq(t_find(rep, "device block 1 (offset 4096)", "reserved"),
		      0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

Test(check, damaged_freemap_page_is_named)
{
	struct h2_fdev *fd = t_store();
	struct h2_volhdr h;
	uint8_t *sel;
	unsigned s;
	uint64_t off;
	struct h2_check_report *rep;
	char where[80];

	t_hdr(fd, &h, &sel);
	s = sel[0] & 1;
	free(sel);
	off = h2_fm_slot_offset(h.fm_base, 0, s);
	t_flip(fd, off + 2000);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	snprintf(where, sizeof(where),
		 "freemap page 0 slot %u (offset %" PRIu64 ")", s, off);
	cr_assert_geq(t_find(rep, where, "checksum mismatch"), 0);
	/* Nothing can be compared against a page we do not trust. */
	cr_assert_eq(rep->leaked_blocks, 0);
	cr_assert_eq(rep->free_referenced, 0);
	cr_assert_eq(rep->blocks_referenced, T_REFERENCED);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

Test(check, wrong_volume_used_count_is_reported)
{
	struct h2_fdev *fd = t_store();
	struct h2_volhdr h;
	uint8_t *sel;
	struct h2_blockref l1, leaf;
	struct h2_check_report *rep;

	/*
	 * Rewrite vm1's record with a wrong used count and repair the check
	 * codes up to the header, so only the count is wrong.
	 */
	t_hdr(fd, &h, &sel);
	{
		uint8_t dirblk[BS], l1blk[BS], l2blk[BS], hdr[H2_HDR_REGION];
		struct h2_volrec *recs = (struct h2_volrec *)dirblk;
		struct h2_blockref *s1 = (struct h2_blockref *)l1blk;
		struct h2_blockref *s2 = (struct h2_blockref *)l2blk;
		struct h2_volhdr *hp = (struct h2_volhdr *)hdr;
		unsigned copy = (unsigned)(h.tid % 4);

		l1 = t_slot(fd, &h.dir_root, 0);
		leaf = t_slot(fd, &l1, 0);
		t_read(fd, dirblk, BS, H2_BREF_OFFSET(&leaf));
		t_read(fd, l1blk, BS, H2_BREF_OFFSET(&l1));
		t_read(fd, l2blk, BS, H2_BREF_OFFSET(&h.dir_root));
		for (unsigned i = 0; i < H2_VOLREC_PER_BLOCK; i++)
			if (strcmp(recs[i].name, "vm1") == 0)
				recs[i].used_blocks += 5;
		s1[0].check = h2_check64(dirblk, BS);
		s2[0].check = h2_check64(l1blk, BS);
		cr_assert_eq(
		    h2_fdev_poke(fd, H2_BREF_OFFSET(&leaf), dirblk, BS), 0);
		cr_assert_eq(h2_fdev_poke(fd, H2_BREF_OFFSET(&l1), l1blk, BS),
			     0);
		cr_assert_eq(
		    h2_fdev_poke(fd, H2_BREF_OFFSET(&h.dir_root), l2blk, BS),
		    0);
		t_read(fd, hdr, sizeof(hdr), h2_hdr_offset(copy));
		cr_assert_eq(hp->tid, h.tid);
		hp->dir_root.check = h2_check64(l2blk, BS);
		hp->crc = 0;
		hp->crc = h2_crc32c(0, hdr, hp->hdr_len);
		cr_assert_eq(
		    h2_fdev_poke(fd, h2_hdr_offset(copy), hdr, hp->hdr_len), 0);
	}
	free(sel);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	cr_assert_eq(rep->nproblems, 1);
	cr_assert_geq(t_find(rep, "volume vm1", "uses 82 blocks"), 0);
	cr_assert_geq(t_find(rep, "volume vm1", "references 77"), 0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

/* A blockref (device offset) whose check code t_fix_bref leaves alone. */
static uint64_t t_fix_keep = UINT64_MAX;

/*
 * Give the blockref at device offset loc the check code of its block,
 * after doing so for the blockrefs inside it (the newest tree's), so that
 * damage made on purpose is the only thing wrong.  Unaligned blockrefs
 * are left as they are, and so is the one at t_fix_keep.
 */
static void t_fix_bref(struct h2_fdev *fd, uint64_t loc)
{
	struct h2_blockref b;
	uint8_t blk[BS];
	uint64_t off;

	t_read(fd, &b, sizeof(b), loc);
	off = H2_BREF_OFFSET(&b);
	if (b.type == H2_BREF_EMPTY || off % BS || loc == t_fix_keep)
		return;
	if (b.type == H2_BREF_INDIRECT)
		for (unsigned i = 0; i < H2_FANOUT; i++)
			t_fix_bref(fd, off + i * sizeof(b));
	if (b.type == H2_BREF_DIR)
		for (unsigned i = 0; i < H2_VOLREC_PER_BLOCK; i++)
			t_fix_bref(fd, off + i * H2_VOLREC_SIZE +
					   offsetof(struct h2_volrec, root));
	t_read(fd, blk, BS, off);
	b.check = h2_check64(blk, BS);
	cr_assert_eq(h2_fdev_poke(fd, loc + offsetof(struct h2_blockref, check),
				  &b.check, sizeof(b.check)),
		     0);
}

/* The same from the newest header down, and its CRC. */
static void t_fix_checks(struct h2_fdev *fd)
{
	static uint8_t hdr[H2_HDR_REGION];
	struct h2_volhdr *hp = (struct h2_volhdr *)hdr;
	struct h2_volhdr h;
	uint64_t at;
	uint8_t *sel;

	t_hdr(fd, &h, &sel);
	free(sel);
	at = h2_hdr_offset((unsigned)(h.tid % 4));
	t_fix_bref(fd, at + offsetof(struct h2_volhdr, dir_root));
	t_read(fd, hdr, sizeof(hdr), at);
	cr_assert_eq(hp->tid, h.tid);
	hp->crc = 0;
	hp->crc = h2_crc32c(0, hdr, hp->hdr_len);
	cr_assert_eq(h2_fdev_poke(fd, at, hdr, hp->hdr_len), 0);
}

/*
 * A data blockref whose offset is not block aligned (its check code
 * otherwise right) is damage in its own right.  It was taken for the
 * block it starts in, so when that block was shared with a tree walked
 * before (a snapshot's) it was not read at all and the store checked
 * clean, though every read of it fails (found by tests/fuzz/fuzz_store).
 */
Test(check, unaligned_blockref_is_named)
{
	struct h2_fdev *fd = t_store();
	struct h2_blockref l1 = t_bref(fd, "vm1", 5, 1);
	uint64_t loc = H2_BREF_OFFSET(&l1) + 5 * sizeof(struct h2_blockref) +
		       offsetof(struct h2_blockref, data_off);
	struct h2_check_report *rep;
	uint64_t data_off;

	t_read(fd, &data_off, sizeof(data_off), loc);
	data_off += 0x100;
	cr_assert_eq(h2_fdev_poke(fd, loc, &data_off, sizeof(data_off)), 0);
	t_fix_checks(fd);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	cr_assert_geq(t_find(rep, "vm1", "is not block aligned"), 0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

/*
 * A blockref to a subtree shared with a tree walked before was not read
 * again, so its own check code was never compared: a snapshot whose
 * blockref to a block it shares with its volume had the wrong check code
 * checked clean, though every read through it fails (found by
 * tests/fuzz/fuzz_store).
 */
Test(check, wrong_check_code_on_a_shared_blockref_is_named)
{
	struct h2_fdev *fd = t_store();
	struct h2_store *st = t_open(fd, false);
	struct h2_check_report *rep;
	struct h2_blockref root, vroot, l1, vl1;
	static uint8_t w[BS], r[BS];
	uint64_t loc, check;
	struct h2_vol *v;

	/* vm1's level-1 block 0 (leaves 0..73) becomes shared with s; a
	 * write to leaf 600 gives vm1 a root of its own. */
	cr_assert_eq(h2_snap_create(st, "vm1", "s", NULL), 0);
	cr_assert_eq(h2_vol_open(st, "vm1", &v), 0);
	t_fill(w, sizeof(w), 9, 0);
	cr_assert_eq(h2_vol_write(v, w, 600 * BS, BS, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0, "%s", h2_core_errmsg());
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_CLEAN);
	h2_check_report_free(rep);

	/* The snapshot's slot 0 (walked after vm1's) gets a wrong check
	 * code; everything above it is made consistent again. */
	root = t_rec(fd, "s").root;
	vroot = t_rec(fd, "vm1").root;
	l1 = t_slot(fd, &root, 0);
	cr_assert_neq(H2_BREF_OFFSET(&root), H2_BREF_OFFSET(&vroot));
	vl1 = t_slot(fd, &vroot, 0);
	cr_assert_eq(H2_BREF_OFFSET(&l1), H2_BREF_OFFSET(&vl1));
	loc = H2_BREF_OFFSET(&root) + offsetof(struct h2_blockref, check);
	check = l1.check ^ 1;
	cr_assert_eq(h2_fdev_poke(fd, loc, &check, sizeof(check)), 0);
	t_fix_keep = H2_BREF_OFFSET(&root);
	t_fix_checks(fd);
	t_fix_keep = UINT64_MAX;

	st = t_open(fd, false);
	cr_assert_eq(h2_vol_open(st, "vm1@s", &v), 0);
	cr_assert_lt(h2_vol_read(v, r, 0, BS), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	cr_assert_geq(t_find(rep, "", "shared with another tree"), 0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

/*
 * The same for a data leaf: vm1 rewrote leaf 3, so its level-1 block is
 * its own, and the snapshot's old one names the same 73 other leaves.
 * The snapshot's blockref to leaf 5 gets a wrong check code.
 */
Test(check, wrong_check_code_on_a_shared_leaf_is_named)
{
	struct h2_fdev *fd = t_store();
	struct h2_store *st = t_open(fd, false);
	struct h2_blockref root, l1, vl1, leaf, vleaf;
	struct h2_check_report *rep;
	static uint8_t w[BS], r[BS];
	uint64_t loc, check;
	struct h2_vol *v;

	cr_assert_eq(h2_snap_create(st, "vm1", "s", NULL), 0);
	cr_assert_eq(h2_vol_open(st, "vm1", &v), 0);
	t_fill(w, sizeof(w), 9, 0);
	cr_assert_eq(h2_vol_write(v, w, 3 * BS, BS, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0, "%s", h2_core_errmsg());

	root = t_rec(fd, "s").root;
	l1 = t_slot(fd, &root, 0);
	vl1 = t_bref(fd, "vm1", 5, 1);
	cr_assert_neq(H2_BREF_OFFSET(&l1), H2_BREF_OFFSET(&vl1));
	leaf = t_slot(fd, &l1, 5);
	vleaf = t_slot(fd, &vl1, 5);
	/* Shared: vm1's own level-1 block names the same leaf. */
	cr_assert_eq(H2_BREF_OFFSET(&leaf), H2_BREF_OFFSET(&vleaf));
	loc = H2_BREF_OFFSET(&l1) + 5 * sizeof(struct h2_blockref);
	check = leaf.check ^ 1;
	cr_assert_eq(h2_fdev_poke(fd, loc + offsetof(struct h2_blockref, check),
				  &check, sizeof(check)),
		     0);
	t_fix_keep = loc;
	t_fix_checks(fd);
	t_fix_keep = UINT64_MAX;

	st = t_open(fd, false);
	cr_assert_eq(h2_vol_open(st, "vm1@s", &v), 0);
	cr_assert_lt(h2_vol_read(v, r, 5 * BS, BS), 0);
	cr_assert_eq(h2_vol_read(v, r, 6 * BS, BS), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	cr_assert_eq(rep->nproblems, 1);
	cr_assert_geq(t_find(rep, "vm1@s", "shared with another tree"), 0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

/*
 * The same blockref, with the right check code, but naming one of the
 * volume's data blocks (walked before, so taken for a shared subtree):
 * the engine reads that block as the level-1 block and finds its slots
 * inconsistent (found by tests/fuzz/fuzz_store).
 */
Test(check, shared_blockref_to_a_block_of_another_kind_is_named)
{
	struct h2_fdev *fd = t_store();
	struct h2_store *st = t_open(fd, false);
	struct h2_blockref root, leaf;
	struct h2_check_report *rep;
	static uint8_t w[BS], r[BS], blk[BS];
	uint64_t loc, off, check;
	struct h2_vol *v;

	cr_assert_eq(h2_snap_create(st, "vm1", "s", NULL), 0);
	cr_assert_eq(h2_vol_open(st, "vm1", &v), 0);
	t_fill(w, sizeof(w), 9, 0);
	cr_assert_eq(h2_vol_write(v, w, 600 * BS, BS, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0, "%s", h2_core_errmsg());

	/* s's slot 0 names vm1's leaf 5, with that block's check code. */
	root = t_rec(fd, "s").root;
	leaf = t_bref(fd, "vm1", 5, 0);
	off = H2_BREF_OFFSET(&leaf);
	t_read(fd, blk, BS, off);
	loc = H2_BREF_OFFSET(&root);
	off |= H2_BLOCK_RADIX;
	check = h2_check64(blk, BS);
	cr_assert_eq(h2_fdev_poke(fd,
				  loc + offsetof(struct h2_blockref, data_off),
				  &off, sizeof(off)),
		     0);
	cr_assert_eq(h2_fdev_poke(fd, loc + offsetof(struct h2_blockref, check),
				  &check, sizeof(check)),
		     0);
	t_fix_keep = loc;
	t_fix_checks(fd);
	t_fix_keep = UINT64_MAX;

	st = t_open(fd, false);
	cr_assert_eq(h2_vol_open(st, "vm1@s", &v), 0);
	cr_assert_lt(h2_vol_read(v, r, 0, BS), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	cr_assert_geq(t_find(rep, "vm1@s", "inconsistent blockref"), 0);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

/*
 * A snapshot's exclusive space is what its volume's tree lacks of it.
 * When the volume grew taller than the snapshot (a resize) and the part
 * of its tree that covers the snapshot's keys became a hole (trimmed),
 * the checker took the hole for an unreadable block and reported the
 * snapshot's space as unverifiable (found by tests/fuzz/fuzz_session).
 */
Test(check, snapshot_space_after_the_volume_grew_and_lost_those_keys)
{
	struct h2_fdev *fd = t_fdev(64 * MiB);
	struct h2_store *st = t_open(fd, false);
	struct h2_check_report *rep;
	struct h2_snap_info si;
	static uint8_t w[2 * BS];
	struct h2_vol *v;

	cr_assert_eq(h2_vol_create(st, "a", 1 * MiB, NULL), 0);
	cr_assert_eq(h2_vol_open(st, "a", &v), 0);
	t_fill(w, sizeof(w), 3, 0);
	cr_assert_eq(h2_vol_write(v, w, 0, sizeof(w), 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_snap_create(st, "a", "s1", NULL), 0);
	/* Two levels become five; keys 0..4095 (the snapshot's) go. */
	cr_assert_eq(h2_vol_resize(st, "a", 1ull << 40), 0);
	cr_assert_eq(h2_vol_open(st, "a", &v), 0);
	cr_assert_eq(h2_vol_trim(v, 0, 1 * MiB, 0), 0);
	cr_assert_eq(h2_vol_write(v, w, 32 * MiB, BS, 0), 0);
	h2_vol_close(v);
	cr_assert_eq(h2_store_close(st), 0, "%s", h2_core_errmsg());

	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_CLEAN);
	h2_check_report_free(rep);
	/* And the engine's figure, which the checker agreed with: the
	 * snapshot alone holds its root, a level-1 block and two leaves. */
	st = t_open(fd, false);
	cr_assert_eq(h2_snap_info(st, "a", "s1", &si), 0);
	cr_assert_eq(si.excl_bytes, 4 * BS);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}

Test(check, unreadable_data_block_is_named_exactly)
{
	struct h2_fdev *fd = t_store();
	struct h2_blockref b = t_bref(fd, "vm1", 5, 0);
	uint64_t off = H2_BREF_OFFSET(&b);
	struct h2_check_report *rep;
	char where[160];

	h2_fdev_fail_reads(fd, off, BS);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->status, H2_CHECK_PROBLEMS);
	/* Its neighbours share a run read; only this block is named. */
	cr_assert_eq(rep->nproblems, 1);
	snprintf(where, sizeof(where),
		 "volume vm1 block at device offset %" PRIu64 " key 5 level 0",
		 off);
	cr_assert_geq(t_find(rep, where, "read failed"), 0);
	cr_assert_eq(rep->blocks_verified, T_REFERENCED - 1);
	cr_assert_eq(rep->blocks_referenced, T_REFERENCED);
	h2_check_report_free(rep);
	h2_fdev_free(fd);
}

/*
 * A random mix of everything the engine does, with flushes in between and
 * a reopen in the middle, must leave a store that checks clean: every
 * freed block is free, nothing leaks, every count matches.
 */
Test(check, random_workload_leaves_a_clean_store)
{
	static const char *const names[] = {"a", "b", "c"};
	static uint8_t w[200 * 1024];

	/* Odd seeds: a background flusher every millisecond as well. */
	for (uint64_t seed = 1; seed <= 8; seed++) {
		struct h2_store_opts o = {.flush_interval_ms = 1,
					  .no_flusher = !(seed & 1)};
		struct h2_fdev *fd = t_fdev(64 * MiB);
		struct h2_store *st = t_open_opts(fd, &o);
		struct h2_check_report *rep;
		uint64_t s = seed * 0x9E3779B97F4A7C15ull;

		for (int step = 0; step < 400; step++) {
			const char *n = names[t_rand(&s) % 3];
			uint64_t x = t_rand(&s) % 100;
			struct h2_vol_info info;
			struct h2_vol *v;

			if (step == 200) {
				cr_assert_eq(h2_store_close(st), 0, "%s",
					     h2_core_errmsg());
				st = t_open_opts(fd, &o);
			}
			if (h2_vol_info(st, n, &info) == -ENOENT) {
				cr_assert_eq(
				    h2_vol_create(st, n,
						     1 * MiB + t_rand(&s) %
								   (16 * MiB),
						     NULL),
				    0, "%s", h2_core_errmsg());
				continue;
			}
			if (x < 3) {
				cr_assert_eq(h2_vol_delete(st, n), 0, "%s",
					     h2_core_errmsg());
				continue;
			}
			if (x < 8) {
				cr_assert_eq(
				    h2_vol_resize(
					st, n, 1 + t_rand(&s) % (20 * MiB)),
				    0, "%s", h2_core_errmsg());
				continue;
			}
			if (x < 20) {
				cr_assert_eq(h2_store_sync(st, NULL), 0, "%s",
					     h2_core_errmsg());
				continue;
			}
			cr_assert_eq(h2_vol_open(st, n, &v), 0);
			{
				uint64_t size = h2_vol_size(v);
				uint64_t off = t_rand(&s) % size;
				uint64_t len = 1 + t_rand(&s) % sizeof(w);

				if (len > size - off)
					len = size - off;
				if (x < 35) {
					cr_assert_eq(h2_vol_trim(v, off, len, 0), 0,
						     "%s", h2_core_errmsg());
				} else if (x < 40) {
					cr_assert_eq(
					    h2_vol_write_zeroes(v, off, len, 0), 0,
					    "%s", h2_core_errmsg());
				} else {
					t_fill(w, len, s, off);
					cr_assert_eq(
					    h2_vol_write(v, w, off, len, 0), 0,
					    "%s", h2_core_errmsg());
				}
			}
			h2_vol_close(v);
		}
		cr_assert_eq(h2_store_close(st), 0, "%s", h2_core_errmsg());
		rep = t_check(fd);
		t_dump(rep);
		cr_assert_eq(rep->status, H2_CHECK_CLEAN, "seed %" PRIu64,
			     seed);
		cr_assert_eq(rep->blocks_used,
			     rep->blocks_reserved + rep->blocks_referenced);
		h2_check_report_free(rep);
		h2_fdev_free(fd);
	}
}

/*
 * A header copy whose tid is at the top of the range (its CRC right) is
 * invalid: opening from it would make the next flush's tid wrap and
 * undo the order of birth times and snapshots.  The other copies hold.
 */
Test(check, header_tid_near_the_top_is_invalid)
{
	struct h2_fdev *fd = t_store();
	static uint8_t hdr[H2_HDR_REGION];
	struct h2_volhdr *hp = (struct h2_volhdr *)hdr;
	struct h2_check_report *rep;
	struct h2_store *st;
	struct h2_volhdr h;
	uint8_t *sel;
	unsigned other;

	t_hdr(fd, &h, &sel);
	free(sel);
	other = (unsigned)((h.tid + 1) % 4);
	t_read(fd, hdr, sizeof(hdr), h2_hdr_offset(other));
	hp->tid = UINT64_MAX - 1;
	hp->copy_index = other;
	hp->crc = 0;
	hp->crc = h2_crc32c(0, hdr, hp->hdr_len);
	cr_assert_eq(h2_fdev_poke(fd, h2_hdr_offset(other), hdr, hp->hdr_len),
		     0);
	rep = t_check(fd);
	t_dump(rep);
	cr_assert_eq(rep->tid, h.tid, "the damaged copy was taken");
	cr_assert_geq(t_find(rep, "header copy", "out of range"), 0);
	h2_check_report_free(rep);
	cr_assert_eq(h2_store_open(h2_fdev_dev(fd), NULL, &st), 0, "%s",
		     h2_core_errmsg());
	cr_assert_eq(h2_store_sync(st, NULL), 0);
	cr_assert_eq(h2_store_close(st), 0);
	h2_fdev_free(fd);
}
