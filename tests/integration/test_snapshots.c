/*
 * Snapshots, clones and rollback end to end: a real h2d driven through
 * libh2client.  What a snapshot holds is checked byte for byte against
 * a model of the writes, while a writer runs; read-only-ness, clone
 * independence, rollback's refusal while someone writes, the
 * dependency rules of delete, and the rights each operation needs.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)

static struct h2t_srv srv;

static void stop_server(void)
{
	h2t_cleanup(&srv);
}

TestSuite(snapshots, .fini = stop_server, .timeout = 300);

/* SIGTERM: h2d must exit 0 (in sanitizer builds: no leak, no error). */
static void stop_clean(void)
{
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0, "h2d did not stop cleanly");
}

static h2_volume *open_vol(h2_client *c, const char *name, unsigned flags)
{
	h2_volume *v = NULL;
	int r = h2_volume_open(c, name, flags, &v);

	cr_assert_eq(r, 0, "open %s: %s (%s)", name, h2_strerror(r),
		     h2_last_error());
	return v;
}

static void create(h2_client *c, const char *name, uint64_t size)
{
	int r = h2_volume_create(c, name, size);

	cr_assert_eq(r, 0, "create %s: %s (%s)", name, h2_strerror(r),
		     h2_last_error());
}

static void snap(h2_client *c, const char *vol, const char *name)
{
	int r = h2_snapshot_create(c, vol, name, NULL);

	cr_assert_eq(r, 0, "snapshot %s@%s: %s (%s)", vol, name, h2_strerror(r),
		     h2_last_error());
}

/* Write len bytes of pattern seed at off of volume name. */
static void put(h2_client *c, const char *name, uint64_t off, size_t len,
		uint64_t seed)
{
	h2_volume *v = open_vol(c, name, H2_OPEN_RW);
	uint8_t *b = malloc(len);

	h2t_pattern(b, len, seed);
	cr_assert_eq(h2_pwrite(v, b, len, off, 0), 0, "%s", h2_last_error());
	cr_assert_eq(h2_volume_close(v), 0);
	free(b);
}

/* Volume (or VOLUME@SNAP) name reads len bytes of pattern seed at off
 * (seed 0: zeros). */
static void expect(h2_client *c, const char *name, uint64_t off, size_t len,
		   uint64_t seed)
{
	h2_volume *v = open_vol(c, name, H2_OPEN_RO);
	uint8_t *want = calloc(1, len), *got = malloc(len);

	if (seed)
		h2t_pattern(want, len, seed);
	cr_assert_eq(h2_pread(v, got, len, off), 0, "%s", h2_last_error());
	cr_assert_eq(memcmp(got, want, len), 0,
		     "%s at %" PRIu64 " is not pattern %" PRIu64, name, off,
		     seed);
	cr_assert_eq(h2_volume_close(v), 0);
	free(want);
	free(got);
}

/* ---------------------------------------------------------------------- */
/* A snapshot under a running writer.                                     */

#define WBLK 4096u
#define NBLK 1024u /* the writer's 4 MiB region */

/* Write i: its block and contents (an 8-byte stamp i + 1, then a
 * pattern), so that any block read names the write that put it there. */
static uint64_t wblock(uint64_t i)
{
	return i * 7919 % NBLK;
}

static void wdata(uint64_t i, uint8_t *b)
{
	uint64_t stamp = i + 1;

	h2t_pattern(b, WBLK, stamp);
	memcpy(b, &stamp, sizeof(stamp));
}

struct writer {
	h2_volume *v;
	atomic_ulong started; /* writes begun (write i: started > i) */
	atomic_ulong done;    /* writes acknowledged */
	atomic_bool stop;
	int err;       /* under mu: the failed write's error */
	char why[256]; /* under mu: and its message */
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint8_t b[WBLK];

	for (uint64_t i = 0; !atomic_load(&w->stop); i++) {
		int err;

		wdata(i, b);
		atomic_store(&w->started, i + 1);
		err = h2_pwrite(w->v, b, WBLK, wblock(i) * WBLK, 0);
		pthread_mutex_lock(&w->mu);
		if (err) {
			w->err = err;
			snprintf(w->why, sizeof(w->why), "%s",
				 h2_last_error());
			pthread_mutex_unlock(&w->mu);
			break;
		}
		atomic_store(&w->done, i + 1);
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
	}
	pthread_mutex_lock(&w->mu);
	atomic_store(&w->stop, true);
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Wait until the writer has n writes acknowledged (or failed). */
static void writer_wait(struct writer *w, uint64_t n)
{
	int err;

	pthread_mutex_lock(&w->mu);
	while (atomic_load(&w->done) < n && !atomic_load(&w->stop))
		pthread_cond_wait(&w->cv, &w->mu);
	err = w->err;
	pthread_mutex_unlock(&w->mu);
	cr_assert_eq(err, 0, "writer: %s", w->why);
}

/* The region after writes [0, n). */
static uint8_t *model(uint64_t n)
{
	uint8_t *img = calloc(NBLK, WBLK);

	for (uint64_t i = 0; i < n; i++)
		wdata(i, img + wblock(i) * WBLK);
	return img;
}

/* Read the writer's region of name. */
static uint8_t *read_region(h2_client *c, const char *name)
{
	h2_volume *v = open_vol(c, name, H2_OPEN_RO);
	uint8_t *img = malloc(NBLK * WBLK);

	cr_assert_eq(h2_pread(v, img, NBLK * WBLK, 0), 0, "%s",
		     h2_last_error());
	cr_assert_eq(h2_volume_close(v), 0);
	return img;
}

/*
 * The writes are sequential, so a snapshot that holds every write
 * acknowledged before the call and none by half is the image after
 * writes [0, cut) for one cut between the writes acknowledged before
 * the call (A) and those begun before it returned (B).  The newest
 * stamp found names the cut.
 */
Test(snapshots, snapshot_under_a_writer_is_an_exact_cut)
{
	struct writer w = {.mu = PTHREAD_MUTEX_INITIALIZER,
			   .cv = PTHREAD_COND_INITIALIZER};
	h2_snapshot_info si;
	uint64_t a, b, cut = 0, end;
	uint8_t *img, *want;
	h2_client *c, *wc;
	pthread_t t;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	wc = h2t_connect(&srv);
	create(c, "busy", 8 * MiB);
	w.v = open_vol(wc, "busy", H2_OPEN_RW);
	cr_assert_eq(pthread_create(&t, NULL, writer_main, &w), 0);
	writer_wait(&w, 300);

	a = atomic_load(&w.done);
	cr_assert_eq(h2_snapshot_create(c, "busy", "s1", &si), 0, "%s",
		     h2_last_error());
	b = atomic_load(&w.started);
	cr_assert_str_eq(si.volume, "busy");
	cr_assert_str_eq(si.name, "s1");
	cr_assert_eq(si.size, 8 * MiB);
	cr_assert_gt(si.tid, 0);

	/* Writes after the snapshot go on; then stop. */
	writer_wait(&w, b + 300);
	atomic_store(&w.stop, true);
	pthread_join(t, NULL);
	cr_assert_eq(w.err, 0, "writer: %s", w.why);
	end = atomic_load(&w.done);
	cr_assert_eq(h2_volume_close(w.v), 0);

	img = read_region(c, "busy@s1");
	for (uint64_t k = 0; k < NBLK; k++) {
		uint64_t stamp;

		memcpy(&stamp, img + k * WBLK, sizeof(stamp));
		if (stamp > cut)
			cut = stamp;
	}
	cr_log_info("snapshot cut after write %" PRIu64 " (acknowledged "
		    "before: %" PRIu64 ", begun before it returned: %" PRIu64
		    ", all: %" PRIu64 ")",
		    cut, a, b, end);
	cr_assert(cut >= a && cut <= b,
		  "the snapshot holds writes [0, %" PRIu64 "): acknowledged "
		  "before it %" PRIu64 ", begun before it returned %" PRIu64,
		  cut, a, b);
	want = model(cut);
	cr_assert_eq(memcmp(img, want, NBLK * WBLK), 0,
		     "the snapshot is not the image after %" PRIu64 " writes",
		     cut);
	free(img);
	free(want);

	/* The volume has every write; the snapshot still has its cut. */
	img = read_region(c, "busy");
	want = model(end);
	cr_assert_eq(memcmp(img, want, NBLK * WBLK), 0,
		     "the live volume lost writes");
	free(img);
	free(want);
	img = read_region(c, "busy@s1");
	want = model(cut);
	cr_assert_eq(memcmp(img, want, NBLK * WBLK), 0,
		     "writes after the snapshot changed it");
	free(img);
	free(want);
	/* Beyond the region: holes in both. */
	expect(c, "busy@s1", NBLK * WBLK, 64 * KiB, 0);
	h2_disconnect(wc);
	h2_disconnect(c);
	stop_clean();
}

Test(snapshots, snapshot_is_read_only_and_survives_a_restart)
{
	h2_snapshot_info *list = NULL;
	h2_volume_info vi;
	uint8_t b[4096] = {7};
	h2_client *c;
	h2_volume *v;
	h2_txn *t;
	h2_stat_report *rep;
	size_t n = 0;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	create(c, "ro", 4 * MiB);
	put(c, "ro", 0, MiB, 1);
	snap(c, "ro", "mon");
	put(c, "ro", 0, MiB, 2);

	cr_assert_eq(h2_volume_open(c, "ro@mon", H2_OPEN_RW, &v), H2_EROFS);
	cr_assert(strstr(h2_last_error(), "read-only"), "%s", h2_last_error());
	v = open_vol(c, "ro@mon", H2_OPEN_RO);
	cr_assert_eq(h2_volume_size(v), 4 * MiB);
	cr_assert_eq(h2_pwrite(v, b, sizeof(b), 0, 0), H2_EROFS);
	cr_assert_eq(h2_trim(v, 0, 4096, 0), H2_EROFS);
	cr_assert_eq(h2_write_zeroes(v, 0, 4096, 0), H2_EROFS);
	cr_assert_eq(h2_txn_begin(v, &t), 0);
	cr_assert_eq(h2_txn_write(t, b, sizeof(b), 0), 0);
	cr_assert_eq(h2_txn_commit(t, 0), H2_EROFS);
	cr_assert_eq(h2_volume_close(v), 0);
	expect(c, "ro@mon", 0, MiB, 1);
	expect(c, "ro", 0, MiB, 2);

	/* Space figures are as of the last flush. */
	cr_assert_eq(h2_sync(c), 0);
	cr_assert_eq(h2_volume_info_get(c, "ro", &vi), 0);
	cr_assert_eq(vi.snapshots, 1);
	cr_assert_gt(vi.snap_bytes, 0, "the snapshot holds the old MiB");
	cr_assert_str_eq(vi.origin, "");
	cr_assert_eq(h2_stat_report_get(c, "ro", &rep), 0, "%s",
		     h2_last_error());
	cr_assert(H2_STAT_HAS(rep, snapshot_bytes));
	cr_assert_eq(rep->snapshots, 1);
	cr_assert_eq(rep->snapshot_bytes, vi.snap_bytes);
	h2_stat_report_free(rep);

	/* Unknown snapshots and bad names. */
	cr_assert_eq(h2_volume_open(c, "ro@tue", H2_OPEN_RO, &v), H2_ENOENT);
	cr_assert_eq(h2_volume_open(c, "ro@", H2_OPEN_RO, &v), H2_EINVAL);
	cr_assert_eq(h2_volume_open(c, "ro@a@b", H2_OPEN_RO, &v), H2_EINVAL);
	cr_assert_eq(h2_snapshot_create(c, "ro", "mon", NULL), H2_EEXIST);
	cr_assert_eq(h2_snapshot_create(c, "ro", "bad name", NULL), H2_EINVAL);
	cr_assert_eq(h2_snapshot_create(c, "nope", "x", NULL), H2_ENOENT);

	/* Durable: still there after a restart. */
	h2_disconnect(c);
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0);
	h2t_restart(&srv);
	c = h2t_connect(&srv);
	expect(c, "ro@mon", 0, MiB, 1);
	expect(c, "ro", 0, MiB, 2);
	cr_assert_eq(h2_snapshot_list(c, "ro", &list, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(list[0].name, "mon");
	cr_assert_gt(list[0].ctime_ns, 0);
	h2_snapshot_list_free(list);

	/* Deleting it gives its space back. */
	cr_assert_eq(h2_snapshot_delete(c, "ro", "mon"), 0, "%s",
		     h2_last_error());
	cr_assert_eq(h2_volume_info_get(c, "ro", &vi), 0);
	cr_assert_eq(vi.snapshots, 0);
	cr_assert_eq(h2_volume_open(c, "ro@mon", H2_OPEN_RO, &v), H2_ENOENT);
	cr_assert_eq(h2_snapshot_delete(c, "ro", "mon"), H2_ENOENT);
	h2_disconnect(c);
	stop_clean();
}

Test(snapshots, clone_is_writable_and_independent)
{
	h2_snapshot_info *list = NULL;
	h2_volume_info vi;
	h2_client *c;
	size_t n = 0;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	create(c, "base", 4 * MiB);
	put(c, "base", 0, 2 * MiB, 1);
	snap(c, "base", "gold");

	cr_assert_eq(h2_clone(c, "base", "gold", "work", &vi), 0, "%s",
		     h2_last_error());
	cr_assert_str_eq(vi.name, "work");
	cr_assert_eq(vi.size, 4 * MiB);
	cr_assert_str_eq(vi.origin, "base@gold");
	cr_assert(vi.can_write);
	expect(c, "work", 0, 2 * MiB, 1);

	/* Writes to the clone touch neither the origin nor the snapshot,
	 * and the other way round. */
	put(c, "work", MiB, MiB, 2);
	expect(c, "work", MiB, MiB, 2);
	expect(c, "work", 0, MiB, 1);
	expect(c, "base", 0, 2 * MiB, 1);
	expect(c, "base@gold", 0, 2 * MiB, 1);
	put(c, "base", 0, MiB, 3);
	expect(c, "work", 0, MiB, 1);
	expect(c, "base@gold", 0, MiB, 1);

	cr_assert_eq(h2_volume_info_get(c, "work", &vi), 0);
	cr_assert_str_eq(vi.origin, "base@gold");
	cr_assert_eq(h2_snapshot_list(c, "base", &list, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(list[0].clones, 1);
	h2_snapshot_list_free(list);
	cr_assert_eq(h2_clone(c, "base", "gold", "work", NULL), H2_EEXIST);
	cr_assert_eq(h2_clone(c, "base", "none", "w2", NULL), H2_ENOENT);

	/* The snapshot cannot go while the clone needs it. */
	cr_assert_eq(h2_snapshot_delete(c, "base", "gold"), H2_EDEPENDENTS);
	cr_assert(strstr(h2_last_error(), "gold"), "%s", h2_last_error());
	cr_assert_eq(h2_volume_delete(c, "work"), 0, "%s", h2_last_error());
	cr_assert_eq(h2_snapshot_delete(c, "base", "gold"), 0, "%s",
		     h2_last_error());
	expect(c, "base", 0, MiB, 3);
	h2_disconnect(c);
	stop_clean();
}

Test(snapshots, rollback_refused_while_written_unless_forced)
{
	h2_client *c, *other;
	h2_volume *v;
	uint8_t b[4096], *want = malloc(2 * MiB);

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	other = h2t_connect(&srv);
	create(c, "rb", 4 * MiB);
	put(c, "rb", 0, 2 * MiB, 1);
	snap(c, "rb", "s1");
	put(c, "rb", 0, 2 * MiB, 2);

	/* Another connection has it open for writing. */
	v = open_vol(other, "rb", H2_OPEN_RW);
	cr_assert_eq(h2_rollback(c, "rb", "s1", 0), H2_EBUSY);
	cr_assert(strstr(h2_last_error(), "\"rb\"") &&
		      strstr(h2_last_error(), "open for writing"),
		  "%s", h2_last_error());
	expect(c, "rb", 0, 2 * MiB, 2);

	cr_assert_eq(h2_rollback(c, "rb", "s1", H2_ROLLBACK_FORCE), 0, "%s",
		     h2_last_error());
	expect(c, "rb", 0, 2 * MiB, 1);
	/* The writer's handle reads the snapshot's data now, and writes
	 * on top of it. */
	cr_assert_eq(h2_pread(v, b, sizeof(b), MiB), 0);
	h2t_pattern(want, 2 * MiB, 1);
	cr_assert_eq(memcmp(b, want + MiB, sizeof(b)), 0);
	free(want);
	h2t_pattern(b, sizeof(b), 9);
	cr_assert_eq(h2_pwrite(v, b, sizeof(b), 0, 0), 0);
	cr_assert_eq(h2_volume_close(v), 0);
	expect(c, "rb", 0, 4096, 9);
	expect(c, "rb@s1", 0, 2 * MiB, 1);

	/* A reader does not block it. */
	v = open_vol(other, "rb", H2_OPEN_RO);
	cr_assert_eq(h2_rollback(c, "rb", "s1", 0), 0, "%s", h2_last_error());
	cr_assert_eq(h2_volume_close(v), 0);
	expect(c, "rb", 0, 2 * MiB, 1);

	/* Only to the newest snapshot. */
	snap(c, "rb", "s2");
	cr_assert_eq(h2_rollback(c, "rb", "s1", 0), H2_EDEPENDENTS);
	cr_assert_eq(h2_rollback(c, "rb", "nope", 0), H2_ENOENT);
	h2_disconnect(other);
	h2_disconnect(c);
	stop_clean();
}

Test(snapshots, volume_with_snapshots_deletes_only_recursively)
{
	h2_volume_info *vols = NULL;
	h2_snapshot_info *snaps = NULL;
	size_t n = 0;
	h2_client *c;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	create(c, "old", 4 * MiB);
	create(c, "keep", MiB);
	put(c, "old", 0, MiB, 1);
	snap(c, "old", "a");
	snap(c, "old", "b");
	cr_assert_eq(h2_clone(c, "old", "a", "kid", NULL), 0, "%s",
		     h2_last_error());
	snap(c, "kid", "k1");
	cr_assert_eq(h2_clone(c, "kid", "k1", "grandkid", NULL), 0, "%s",
		     h2_last_error());

	cr_assert_eq(h2_volume_delete(c, "old"), H2_EDEPENDENTS);
	cr_assert(strstr(h2_last_error(), "old"), "%s", h2_last_error());
	expect(c, "old@a", 0, MiB, 1);

	cr_assert_eq(h2_volume_delete_flags(c, "old", H2_DELETE_RECURSIVE), 0,
		     "%s", h2_last_error());
	cr_assert_eq(h2_volume_list(c, &vols, &n), 0);
	cr_assert_eq(n, 1, "the clones went with it");
	cr_assert_str_eq(vols[0].name, "keep");
	free(vols);
	cr_assert_eq(h2_snapshot_list(c, NULL, &snaps, &n), 0);
	cr_assert_eq(n, 0);
	h2_snapshot_list_free(snaps);
	/* The name is free again. */
	create(c, "old", MiB);
	expect(c, "old", 0, MiB, 0);
	h2_disconnect(c);
	stop_clean();
}

Test(snapshots, rights_limit_every_snapshot_operation)
{
	static const char *const extra[] = {"--access", "reader=read:pub-*",
					    "--access", "op=admin:pub-*", NULL};
	h2_snapshot_info *list = NULL;
	h2_client *admin, *rd, *op;
	h2_volume *v;
	size_t n = 0;

	h2t_start(&srv, extra);
	admin = h2t_connect(&srv);
	create(admin, "pub-1", MiB);
	create(admin, "secret", MiB);
	put(admin, "pub-1", 0, 64 * KiB, 1);
	snap(admin, "pub-1", "s");
	snap(admin, "secret", "hidden");
	h2t_issue_client(&srv, "reader", "reader", 30, false);
	h2t_issue_client(&srv, "op", "op", 30, false);
	cr_assert_eq(h2t_connect_with(&srv, h2t_path(&srv, "reader.crt"),
				      h2t_path(&srv, "reader.key"), &rd),
		     0);
	cr_assert_eq(h2t_connect_with(&srv, h2t_path(&srv, "op.crt"),
				      h2t_path(&srv, "op.key"), &op),
		     0);

	/* A reader lists and reads the snapshots it can see, nothing
	 * more. */
	cr_assert_eq(h2_snapshot_list(rd, NULL, &list, &n), 0);
	cr_assert_eq(n, 1, "the reader sees other volumes' snapshots");
	cr_assert_str_eq(list[0].volume, "pub-1");
	h2_snapshot_list_free(list);
	cr_assert_eq(h2_snapshot_list(rd, "secret", &list, &n), H2_ENOENT);
	cr_assert_eq(h2_volume_open(rd, "secret@hidden", H2_OPEN_RO, &v),
		     H2_ENOENT);
	expect(rd, "pub-1@s", 0, 64 * KiB, 1);
	cr_assert_eq(h2_snapshot_create(rd, "pub-1", "mine", NULL), H2_EPERM);
	cr_assert(strstr(h2_last_error(), "admin"), "%s", h2_last_error());
	cr_assert_eq(h2_snapshot_delete(rd, "pub-1", "s"), H2_EPERM);
	cr_assert_eq(h2_clone(rd, "pub-1", "s", "pub-2", NULL), H2_EPERM);
	cr_assert_eq(h2_rollback(rd, "pub-1", "s", H2_ROLLBACK_FORCE),
		     H2_EPERM);
	cr_assert_eq(h2_volume_delete_flags(rd, "pub-1", H2_DELETE_RECURSIVE),
		     H2_EPERM);
	cr_assert_eq(h2_snapshot_create(rd, "secret", "x", NULL), H2_EPERM);

	/* An operator with admin on pub-*: clones inside it only. */
	cr_assert_eq(h2_clone(op, "pub-1", "s", "elsewhere", NULL), H2_EPERM);
	cr_assert_eq(h2_clone(op, "secret", "hidden", "pub-3", NULL), H2_EPERM);
	cr_assert_eq(h2_clone(op, "pub-1", "s", "pub-2", NULL), 0, "%s",
		     h2_last_error());
	cr_assert_eq(h2_snapshot_create(op, "pub-1", "t", NULL), 0);
	cr_assert_eq(h2_snapshot_delete(op, "pub-1", "t"), 0);
	/* A recursive delete that would take a clone it may not
	 * administer is refused, naming the clone; nothing is deleted. */
	cr_assert_eq(h2_clone(admin, "pub-1", "s", "other", NULL), 0);
	cr_assert_eq(h2_volume_delete_flags(op, "pub-1", H2_DELETE_RECURSIVE),
		     H2_EPERM);
	cr_assert(strstr(h2_last_error(), "\"other\""), "%s", h2_last_error());
	expect(op, "pub-2", 0, 64 * KiB, 1);
	expect(admin, "other", 0, 64 * KiB, 1);
	cr_assert_eq(h2_volume_delete(admin, "other"), 0);
	cr_assert_eq(h2_volume_delete_flags(op, "pub-1", H2_DELETE_RECURSIVE),
		     0, "%s", h2_last_error());
	cr_assert_eq(h2_volume_open(op, "pub-2", H2_OPEN_RO, &v), H2_ENOENT);
	h2_disconnect(rd);
	h2_disconnect(op);
	h2_disconnect(admin);
	stop_clean();
}

/* More snapshots than one reply can carry: the server cuts the list
 * short and the library asks again from where it stopped. */
Test(snapshots, long_snapshot_list_comes_whole_in_several_replies)
{
	enum { N = 450 };
	h2_snapshot_info *list = NULL;
	uint64_t before;
	h2_stats st;
	char name[128];
	size_t n = 0;
	h2_client *c;

	h2t_start(&srv, NULL);
	c = h2t_connect(&srv);
	create(c, "many", MiB);
	create(c, "few", MiB);
	snap(c, "few", "only");
	for (int i = 0; i < N; i++) {
		/* 120-byte names: ~170 bytes each on the wire, 75 KiB in
		 * all, more than a 64 KiB frame header. */
		snprintf(name, sizeof(name), "%04d-%0116d", i, 0);
		snap(c, "many", name);
	}
	cr_assert_eq(h2_stat(c, &st), 0);
	before = st.requests;
	cr_assert_eq(h2_snapshot_list(c, NULL, &list, &n), 0, "%s",
		     h2_last_error());
	cr_assert_eq(h2_stat(c, &st), 0);
	/* This Stat, and more than one SnapshotList. */
	cr_assert_geq(st.requests - before, 3, "the list came in one reply");
	cr_assert_eq(n, N + 1);
	cr_assert_str_eq(list[0].volume, "few");
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "%04d-%0116d", i, 0);
		cr_assert_str_eq(list[i + 1].volume, "many");
		cr_assert_str_eq(list[i + 1].name, name, "entry %d", i);
		if (i)
			cr_assert_gt(list[i + 1].tid, list[i].tid);
	}
	h2_snapshot_list_free(list);
	cr_assert_eq(h2_snapshot_list(c, "many", &list, &n), 0);
	cr_assert_eq(n, N);
	h2_snapshot_list_free(list);
	h2_disconnect(c);
	stop_clean();
}
