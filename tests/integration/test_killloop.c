/*
 * test_killloop.c - kill -9 loop: a real h2d under several verifying
 * clients, killed with SIGKILL at random moments, checked offline,
 * restarted and verified, over and over.
 *
 * Each client thread owns one volume (kl0, kl1, ...) and runs a loop of
 * single-block writes, multi-block writes, batches (h2_txn), some with
 * FUA, flushes of its volume or syncs of the store, read-backs, and now
 * and then a snapshot (deleting its oldest one beyond MAX_SNAPS).  Every
 * write op gets the thread's next generation number, and every block it
 * writes holds a header naming (thread, block, generation) followed by a
 * pattern derived from the three: any block read back names exactly the
 * write it came from, and anything else is garbage.  Because a thread is
 * the only writer of its volume and waits for each call, its history is
 * a sequence, and the test keeps, per thread:
 *
 *   cur[k]      the generation the live volume holds at block k (what
 *               every acknowledged write left there);
 *   durable[k]  the generation the durability contract promises at k:
 *               the last write acknowledged before a successful flush or
 *               sync of this thread, or a FUA write;
 *   p_durable   the newest generation covered by such a flush (or a FUA
 *               write, or a snapshot, which returns once durable);
 *   log         every write op issued since the last verification, whether
 *               it was acknowledged, failed or in flight at the kill.
 *
 * The killer (the test's main thread) waits until every client is
 * running its loop, sleeps a random delay drawn from a seeded RNG (the
 * kill moment, not a synchronisation), SIGKILLs h2d, waits until every
 * client has seen its connection die, runs `h2d check` on the store
 * (exit 0 required), and starts h2d again on the same store.  Each
 * client then connects again (a fresh connection, no H2_RECONNECT; h2d
 * takes a new port, as over thousands of restarts some other program's
 * outgoing connection could take the old one while h2d is down), reads
 * its whole volume and checks, in this order:
 *
 *   1. every block holds zeros (never written) or a write of this test
 *      to this block: never garbage, never another block's data;
 *   2. no block is older than durable[k]: no acknowledged-and-synced
 *      write is lost;
 *   3. every block's generation is its state at the last verification
 *      or one of the writes issued to it since;
 *   4. every multi-block write and batch is all or nothing: if one of its
 *      blocks holds it, none of the others holds something older;
 *   5. the volume is an exact cut: with p the newest generation found,
 *      p >= p_durable and the volume is exactly the state after the
 *      thread's writes up to p (a flush is an exact cut, DESIGN.md §3, and
 *      a thread's history is a sequence, so any cut of it is a prefix);
 *   6. its snapshots: each one listed is one the test made (or was making
 *      at the kill) and holds exactly the volume as it was when the create
 *      call was made; each whose create returned and whose delete did not
 *      is listed; each whose delete returned is gone.
 *
 * What it read becomes the new state (it is on disk now), and the loop
 * goes on.  At the end, one more round without a kill: the clients write,
 * sync and stop, h2d gets SIGTERM (exit 0), `h2d check`, and after a
 * restart every volume and snapshot must be exactly the model.
 *
 * Kills: 25 by default (CI, also the sanitizer build); H2_SOAK=1 runs
 * 1000, H2_KILLS=N runs N.  H2_KILL_SEED=S repeats a run's schedule (the
 * kill delays and each thread's choice of ops; thread interleaving and
 * where in the server a kill lands still vary).  The seed is printed at
 * the start and in every failure message; on a failure the server's
 * directory (store, log) is kept and named.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#ifndef H2D_PATH
#error "H2D_PATH must name the h2d binary"
#endif

enum {
	NTHREADS = 4,
	NBLOCKS = 256,	 /* blocks per volume */
	BS = 4096,	 /* block size the test writes in */
	MAX_EXTENT = 16, /* blocks of one multi-block write */
	MAX_TXN = 8,	 /* blocks of one batch */
	MAX_OP = 16,	 /* max(MAX_EXTENT, MAX_TXN) */
	MAX_SNAPS = 3,	 /* snapshots a thread keeps */
	FINAL_OPS = 300, /* ops of the last round, before the clean stop */
	DEFAULT_KILLS = 25,
	SOAK_KILLS = 1000,
	WAIT_MS = 120000, /* bound on every wait for the clients */
};

#define VOL_BYTES   ((uint64_t)NBLOCKS * BS)
#define BLOCK_MAGIC 0x68326b696c6c3031ull /* "h2kill01" */
#define GARBAGE	    UINT64_MAX		  /* a block no write made */

/* One write op: a single block, an extent or a batch, at one generation. */
struct op {
	uint64_t gen;
	uint8_t n;  /* blocks */
	bool batch; /* h2_txn (else one h2_pwrite) */
	bool fua;
	bool acked; /* the call returned 0 */
	uint16_t blk[MAX_OP];
};

enum snap_state {
	SNAP_CREATING, /* create called, not returned */
	SNAP_LIVE,     /* create returned 0 */
	SNAP_DELETING, /* delete called, not returned */
};

struct snaprec {
	char name[32];
	enum snap_state state;
	uint64_t gens[NBLOCKS]; /* the volume when create was called */
};

/* What a thread was doing: the call the kill interrupted. */
enum doing {
	DO_NOTHING, /* between calls */
	DO_WRITE,
	DO_EXTENT,
	DO_BATCH,
	DO_SYNC,
	DO_SNAP_CREATE,
	DO_SNAP_DELETE,
	DO_READ,
	DO_N,
};

static const char *const doing_name[DO_N] = {
    [DO_NOTHING] = "between calls",
    [DO_WRITE] = "write",
    [DO_EXTENT] = "multi-block write",
    [DO_BATCH] = "batch",
    [DO_SYNC] = "flush/sync",
    [DO_SNAP_CREATE] = "snapshot create",
    [DO_SNAP_DELETE] = "snapshot delete",
    [DO_READ] = "read",
};

/* What every thread counts (added up for the summary). */
struct counts {
	uint64_t writes_acked;	  /* write ops acknowledged */
	uint64_t syncs;		  /* flushes and syncs that succeeded */
	uint64_t synced_verified; /* blocks whose synced write was checked */
	uint64_t txns_verified;	  /* multi-block ops checked all-or-nothing */
	uint64_t snaps_verified;  /* snapshots read back and compared */
	uint64_t snaps_made;
	uint64_t bytes_verified; /* bytes read back and compared */
	uint64_t lost_in_flight; /* acked but unsynced writes gone: allowed */
	uint64_t unacked;	 /* writes in flight at a kill */
	uint64_t unacked_landed; /* of which the store holds */
	uint64_t at_kill[DO_N];	 /* what the kills interrupted */
};

struct worker {
	int id;
	uint64_t rng;
	uint64_t gen; /* newest generation issued */
	uint64_t last_acked;
	uint64_t p_durable;
	uint64_t cur[NBLOCKS];
	uint64_t base[NBLOCKS]; /* as verified at the start of the round */
	uint64_t durable[NBLOCKS];
	struct op *log;
	size_t nlog, caplog;
	struct snaprec *snaps[MAX_SNAPS + 2];
	int nsnaps;
	uint64_t snapctr;
	struct counts n;
	enum doing doing;
	pthread_t th;
	/* Per round: */
	h2_client *c;
	h2_volume *v;
	uint8_t *buf; /* VOL_BYTES */
};

/* The killer and the clients meet here. */
static struct ctl {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int round;   /* the server round the clients should connect to */
	bool final;  /* this round ends without a kill */
	bool killed; /* this round's h2d has been sent SIGKILL */
	int running; /* clients verified and in their loop this round */
	int down;    /* clients done with this round */
	bool failed;
	char why[4096]; /* the first failure */
} ctl = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static struct h2t_srv srv;
static struct worker workers[NTHREADS];
static uint64_t seed;
static int kills_done;	    /* (ctl.mu) */
static uint64_t kill_delay; /* the last kill's, ms into its round (ctl.mu) */
static bool keep_dir;

static void stop_server(void)
{
	if (keep_dir) {
		if (srv.pid)
			h2t_stop(&srv, SIGKILL);
		fprintf(stderr,
			"killloop: kept %s (store var/h2/store.img, "
			"h2d.log)\n",
			srv.dir);
		return;
	}
	h2t_cleanup(&srv);
}

TestSuite(killloop, .fini = stop_server);

/* splitmix64: the seeded RNG of the schedule and of each thread. */
static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Monotonic milliseconds. */
static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------- */
/* Block contents.                                                        */

struct blkhdr {
	uint64_t magic;
	uint32_t thread;
	uint32_t block;
	uint64_t gen;
	uint64_t check; /* mixes the three above */
};

/* The pattern seed of block k of thread t at generation gen. */
static uint64_t blk_seed(int t, int k, uint64_t gen)
{
	uint64_t s = ((uint64_t)t << 56) ^ ((uint64_t)k << 40) ^ gen;

	return rnd(&s);
}

/* Block k of thread t as written by generation gen. */
static void blk_fill(uint8_t *b, int t, int k, uint64_t gen)
{
	struct blkhdr h = {BLOCK_MAGIC, (uint32_t)t, (uint32_t)k, gen,
			   blk_seed(t, k, gen)};
	uint64_t s = h.check, w;

	memcpy(b, &h, sizeof(h));
	for (size_t o = sizeof(h); o < BS; o += 8) {
		w = rnd(&s);
		memcpy(b + o, &w, 8);
	}
}

/* The generation block k of thread t holds: 0 for zeros, GARBAGE for
 * anything no write of this test to this block made. */
static uint64_t blk_decode(const uint8_t *b, int t, int k)
{
	static const uint8_t zero[BS];
	uint8_t want[BS];
	struct blkhdr h;

	memcpy(&h, b, sizeof(h));
	if (h.magic != BLOCK_MAGIC) {
		if (memcmp(b, zero, BS) == 0)
			return 0;
		return GARBAGE;
	}
	if (h.thread != (uint32_t)t || h.block != (uint32_t)k || h.gen == 0 ||
	    h.gen == GARBAGE || h.check != blk_seed(t, k, h.gen))
		return GARBAGE;
	blk_fill(want, t, k, h.gen);
	return memcmp(b, want, BS) == 0 ? h.gen : GARBAGE;
}

/* ---------------------------------------------------------------------- */
/* Failures.                                                              */

/* Record the first failure (any thread); the killer reports it. */
static void fail(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&ctl.mu);
	if (!ctl.failed) {
		int n = snprintf(ctl.why, sizeof(ctl.why),
				 "seed %" PRIu64 " (H2_KILL_SEED=%" PRIu64
				 "), after kill %d (%" PRIu64
				 " ms into its round): ",
				 seed, seed, kills_done, kill_delay);

		va_start(ap, fmt);
		vsnprintf(ctl.why + n, sizeof(ctl.why) - (size_t)n, fmt, ap);
		va_end(ap);
		ctl.failed = true;
	}
	pthread_cond_broadcast(&ctl.cv);
	pthread_mutex_unlock(&ctl.mu);
}

/* Whether any thread has failed. */
static bool failed(void)
{
	bool f;

	pthread_mutex_lock(&ctl.mu);
	f = ctl.failed;
	pthread_mutex_unlock(&ctl.mu);
	return f;
}

/* ---------------------------------------------------------------------- */
/* The model.                                                             */

/* Log a write op about to be issued (before: it may land even if the
 * call never returns). */
static struct op *log_op(struct worker *w)
{
	if (w->nlog == w->caplog) {
		w->caplog = w->caplog ? 2 * w->caplog : 1024;
		w->log = realloc(w->log, w->caplog * sizeof(*w->log));
		if (!w->log)
			abort(); /* not a cr_assert: not the test's thread */
	}
	memset(&w->log[w->nlog], 0, sizeof(w->log[0]));
	w->log[w->nlog].gen = ++w->gen;
	return &w->log[w->nlog++];
}

/* An op was acknowledged: the live volume holds it. */
static void op_acked(struct worker *w, struct op *o)
{
	o->acked = true;
	for (int i = 0; i < o->n; i++)
		w->cur[o->blk[i]] = o->gen;
	w->last_acked = o->gen;
	w->n.writes_acked++;
	if (o->fua) {
		/* FUA: durable on return, and it is a flush transaction whose
		 * cut holds every write acknowledged before it. */
		for (int i = 0; i < o->n; i++)
			w->durable[o->blk[i]] = o->gen;
		w->p_durable = o->gen;
	}
}

/* A flush or sync of this thread succeeded: everything it acknowledged
 * before is durable. */
static void synced(struct worker *w)
{
	memcpy(w->durable, w->cur, sizeof(w->cur));
	w->p_durable = w->last_acked;
	w->n.syncs++;
}

/* ---------------------------------------------------------------------- */
/* The clients.                                                           */

/* An error from the server: expected once h2d was killed this round
 * (returns true: the round is over for this thread), a failure else. */
static bool op_error(struct worker *w, int r, const char *what)
{
	bool killed;

	pthread_mutex_lock(&ctl.mu);
	killed = ctl.killed && !ctl.final;
	pthread_mutex_unlock(&ctl.mu);
	if (!killed)
		fail("thread %d: %s failed while h2d was up: %s (%s)", w->id,
		     what, h2_strerror(r), h2_last_error());
	return true;
}

/* A fresh connection for w (the development admin certificate). */
static int connect_client(struct worker *w)
{
	char crt[200], key[200];
	int r;

	snprintf(crt, sizeof(crt), "%s/client.crt", srv.tls);
	snprintf(key, sizeof(key), "%s/client.key", srv.tls);
	r = h2t_connect_with(&srv, crt, key, &w->c);
	if (r < 0) {
		fail("thread %d: connect to %s: %s (%s)", w->id, srv.addr,
		     h2_strerror(r), h2_last_error());
		return r;
	}
	return 0;
}

/* Thread t's volume. */
static void vol_name(int t, char *out, size_t len)
{
	snprintf(out, len, "kl%d", t);
}

/* Read a whole volume (or VOLUME@SNAP) into w->buf and decode it. */
static int read_image(struct worker *w, const char *name, uint64_t *got)
{
	h2_volume *v = NULL;
	int r = h2_volume_open(w->c, name, H2_OPEN_RO, &v);

	if (r == 0)
		r = h2_pread(v, w->buf, VOL_BYTES, 0);
	if (v)
		h2_volume_close(v);
	if (r < 0) {
		fail("thread %d: reading %s: %s (%s)", w->id, name,
		     h2_strerror(r), h2_last_error());
		return r;
	}
	for (int k = 0; k < NBLOCKS; k++)
		got[k] = blk_decode(w->buf + (size_t)k * BS, w->id, k);
	w->n.bytes_verified += VOL_BYTES;
	return 0;
}

/* What happened to block k since the round began, for a failure. */
static void block_story(const struct worker *w, int k, char *out, size_t len)
{
	size_t o = 0;

	o += (size_t)snprintf(
	    out + o, len - o,
	    "base %" PRIu64 ", durable %" PRIu64 ", writes since:", w->base[k],
	    w->durable[k]);
	for (size_t i = 0; i < w->nlog && o < len; i++)
		for (int j = 0; j < w->log[i].n && o < len; j++)
			if (w->log[i].blk[j] == k)
				o += (size_t)snprintf(
				    out + o, len - o, " %" PRIu64 "%s%s%s",
				    w->log[i].gen,
				    w->log[i].acked ? "" : "(unacked)",
				    w->log[i].fua ? "(fua)" : "",
				    w->log[i].n > 1 ? "(multi)" : "");
}

/* Checks 1 to 5 of the file comment on the volume read after a kill. */
static bool verify_volume(struct worker *w, const uint64_t *got)
{
	static __thread uint64_t replay[NBLOCKS];
	char story[1024];
	uint64_t p = 0;

	for (int k = 0; k < NBLOCKS; k++) {
		bool known = got[k] == w->base[k];

		if (got[k] == GARBAGE) {
			const uint8_t *b = w->buf + (size_t)k * BS;

			block_story(w, k, story, sizeof(story));
			fail("thread %d block %d holds data no write made "
			     "(first bytes %02x%02x%02x%02x%02x%02x%02x%02x); "
			     "%s",
			     w->id, k, b[0], b[1], b[2], b[3], b[4], b[5], b[6],
			     b[7], story);
			return false;
		}
		if (got[k] < w->durable[k]) {
			block_story(w, k, story, sizeof(story));
			fail("thread %d block %d: SYNCED WRITE LOST: holds "
			     "generation %" PRIu64 ", generation %" PRIu64
			     " was acknowledged before a successful sync; %s",
			     w->id, k, got[k], w->durable[k], story);
			return false;
		}
		for (size_t i = 0; i < w->nlog && !known; i++)
			for (int j = 0; j < w->log[i].n; j++)
				if (w->log[i].blk[j] == k &&
				    w->log[i].gen == got[k])
					known = true;
		if (!known) {
			block_story(w, k, story, sizeof(story));
			fail("thread %d block %d holds generation %" PRIu64
			     ", never written there since the last check; %s",
			     w->id, k, got[k], story);
			return false;
		}
		if (w->durable[k] > w->base[k])
			w->n.synced_verified++;
		if (got[k] > p)
			p = got[k];
	}
	for (size_t i = 0; i < w->nlog; i++) {
		const struct op *o = &w->log[i];
		int have = 0, older = -1;

		if (o->n < 2)
			continue;
		for (int j = 0; j < o->n; j++) {
			if (got[o->blk[j]] == o->gen)
				have++;
			else if (got[o->blk[j]] < o->gen)
				older = o->blk[j];
		}
		if (have && older >= 0) {
			block_story(w, older, story, sizeof(story));
			fail("thread %d: %s of generation %" PRIu64
			     " is torn: %d of its %d blocks hold it, block %d "
			     "holds %" PRIu64 "; block %d: %s",
			     w->id, o->batch ? "batch" : "multi-block write",
			     o->gen, have, o->n, older, got[older], older,
			     story);
			return false;
		}
		w->n.txns_verified++;
	}
	if (p < w->p_durable) {
		fail("thread %d: SYNCED WRITES LOST: the newest generation "
		     "in the volume is %" PRIu64 ", generation %" PRIu64
		     " was covered by a successful sync",
		     w->id, p, w->p_durable);
		return false;
	}
	memcpy(replay, w->base, sizeof(replay));
	for (size_t i = 0; i < w->nlog && w->log[i].gen <= p; i++)
		for (int j = 0; j < w->log[i].n; j++)
			replay[w->log[i].blk[j]] = w->log[i].gen;
	for (int k = 0; k < NBLOCKS; k++)
		if (replay[k] != got[k]) {
			block_story(w, k, story, sizeof(story));
			fail(
			    "thread %d: the volume is not an exact cut: it "
			    "holds generation %" PRIu64 ", so every write up "
			    "to it should be there, but block %d holds %" PRIu64
			    " instead of %" PRIu64 "; %s",
			    w->id, p, k, got[k], replay[k], story);
			return false;
		}
	for (size_t i = 0; i < w->nlog; i++)
		if (!w->log[i].acked) {
			w->n.unacked++;
			w->n.unacked_landed += w->log[i].gen <= p;
		}
	w->n.at_kill[w->doing]++;
	w->doing = DO_NOTHING;
	for (int k = 0; k < NBLOCKS; k++) {
		if (got[k] < w->cur[k])
			w->n.lost_in_flight++;
		w->base[k] = w->cur[k] = w->durable[k] = got[k];
	}
	w->p_durable = w->last_acked = p;
	w->nlog = 0;
	return true;
}

/* Forget w's snapshot record i. */
static void snap_remove(struct worker *w, int i)
{
	free(w->snaps[i]);
	memmove(&w->snaps[i], &w->snaps[i + 1],
		(size_t)(w->nsnaps - i - 1) * sizeof(w->snaps[0]));
	w->nsnaps--;
}

/* Check 6: the snapshots the server lists against the test's; exact:
 * no create or delete may be in doubt (after a clean stop). */
static bool verify_snaps(struct worker *w, bool exact)
{
	static __thread uint64_t got[NBLOCKS];
	h2_snapshot_info *list = NULL;
	size_t n = 0;
	char vol[16], full[160];
	bool listed[MAX_SNAPS + 2] = {false};
	int r;

	vol_name(w->id, vol, sizeof(vol));
	r = h2_snapshot_list(w->c, vol, &list, &n);
	if (r < 0) {
		fail("thread %d: snapshot list: %s (%s)", w->id, h2_strerror(r),
		     h2_last_error());
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		int s = 0;

		while (s < w->nsnaps && strcmp(w->snaps[s]->name, list[i].name))
			s++;
		if (s == w->nsnaps) {
			fail("thread %d: snapshot %s@%s exists, but it was "
			     "never made or its deletion returned",
			     w->id, vol, list[i].name);
			goto bad;
		}
		if (exact && w->snaps[s]->state != SNAP_LIVE) {
			fail("thread %d: snapshot %s@%s was in doubt at a "
			     "clean stop",
			     w->id, vol, list[i].name);
			goto bad;
		}
		listed[s] = true;
		snprintf(full, sizeof(full), "%s@%s", vol, list[i].name);
		if (read_image(w, full, got) < 0)
			goto bad;
		for (int k = 0; k < NBLOCKS; k++)
			if (got[k] != w->snaps[s]->gens[k]) {
				fail("thread %d: snapshot %s: block %d holds "
				     "generation %" PRIu64 " (%s), the volume "
				     "held %" PRIu64 " when it was taken",
				     w->id, full, k, got[k],
				     got[k] == GARBAGE ? "garbage" : "a write",
				     w->snaps[s]->gens[k]);
				goto bad;
			}
		w->n.snaps_verified++;
	}
	for (int s = w->nsnaps - 1; s >= 0; s--) {
		if (listed[s]) {
			w->snaps[s]->state = SNAP_LIVE;
			continue;
		}
		if (w->snaps[s]->state == SNAP_LIVE) {
			fail("thread %d: snapshot %s@%s is gone: its create "
			     "returned and it was never deleted",
			     w->id, vol, w->snaps[s]->name);
			goto bad;
		}
		snap_remove(w, s);
	}
	h2_snapshot_list_free(list);
	return true;
bad:
	h2_snapshot_list_free(list);
	return false;
}

/* Take a snapshot (deleting the oldest beyond MAX_SNAPS first).  Returns
 * false when the round is over. */
static bool do_snapshot(struct worker *w)
{
	struct snaprec *s;
	char vol[16];
	int r;

	vol_name(w->id, vol, sizeof(vol));
	if (w->nsnaps >= MAX_SNAPS) {
		w->snaps[0]->state = SNAP_DELETING;
		w->doing = DO_SNAP_DELETE;
		r = h2_snapshot_delete(w->c, vol, w->snaps[0]->name);
		if (r < 0)
			return !op_error(w, r, "snapshot delete");
		snap_remove(w, 0);
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		abort();
	snprintf(s->name, sizeof(s->name), "s%" PRIu64, ++w->snapctr);
	memcpy(s->gens, w->cur, sizeof(s->gens));
	s->state = SNAP_CREATING;
	w->snaps[w->nsnaps++] = s;
	w->doing = DO_SNAP_CREATE;
	r = h2_snapshot_create(w->c, vol, s->name, NULL);
	if (r < 0)
		return !op_error(w, r, "snapshot create");
	s->state = SNAP_LIVE;
	/* It returns once durable, holding every write acknowledged before
	 * the call: a sync point. */
	w->p_durable = w->last_acked;
	w->n.snaps_made++;
	return true;
}

/* Pick n distinct random blocks. */
static void pick_blocks(struct worker *w, struct op *o, int n)
{
	while (o->n < n) {
		uint16_t k = (uint16_t)(rnd(&w->rng) % NBLOCKS);
		bool dup = false;

		for (int i = 0; i < o->n; i++)
			dup |= o->blk[i] == k;
		if (!dup)
			o->blk[o->n++] = k;
	}
}

/* One write op (single block, extent or batch).  false: round over. */
static bool do_write(struct worker *w, int kind)
{
	uint8_t *b = w->buf;
	struct op *o = log_op(w);
	h2_txn *t = NULL;
	int r;

	o->fua = rnd(&w->rng) % 16 == 0;
	if (kind == 0) {
		pick_blocks(w, o, 1);
	} else if (kind == 1) {
		int n = 2 + (int)(rnd(&w->rng) % (MAX_EXTENT - 1));
		int k0 = (int)(rnd(&w->rng) % (NBLOCKS - n + 1));

		for (int i = 0; i < n; i++)
			o->blk[o->n++] = (uint16_t)(k0 + i);
	} else {
		o->batch = true;
		pick_blocks(w, o, 2 + (int)(rnd(&w->rng) % (MAX_TXN - 1)));
	}
	for (int i = 0; i < o->n; i++)
		blk_fill(b + (size_t)i * BS, w->id, o->blk[i], o->gen);
	w->doing = o->batch ? DO_BATCH : o->n > 1 ? DO_EXTENT : DO_WRITE;
	if (!o->batch) {
		r = h2_pwrite(w->v, b, (size_t)o->n * BS,
			      (uint64_t)o->blk[0] * BS, o->fua ? H2_FUA : 0);
	} else {
		r = h2_txn_begin(w->v, &t);
		for (int i = 0; r == 0 && i < o->n; i++)
			r = h2_txn_write(t, b + (size_t)i * BS, BS,
					 (uint64_t)o->blk[i] * BS);
		if (r == 0)
			r = h2_txn_commit(t, o->fua ? H2_FUA : 0);
		else
			h2_txn_abort(t);
	}
	if (r < 0)
		return !op_error(w, r, o->batch ? "batch" : "write");
	op_acked(w, o);
	return true;
}

/* A block read back while h2d runs holds exactly what was acknowledged. */
static bool do_readback(struct worker *w)
{
	int k = (int)(rnd(&w->rng) % NBLOCKS);
	uint64_t g;
	int r;

	w->doing = DO_READ;
	r = h2_pread(w->v, w->buf, BS, (uint64_t)k * BS);
	if (r < 0)
		return !op_error(w, r, "read");
	g = blk_decode(w->buf, w->id, k);
	if (g != w->cur[k]) {
		fail("thread %d block %d reads generation %" PRIu64
		     " while h2d runs, %" PRIu64 " was acknowledged last",
		     w->id, k, g, w->cur[k]);
		return false;
	}
	w->n.bytes_verified += BS;
	return true;
}

/* One random call of the loop; false when the round is over. */
static bool step_call(struct worker *w)
{
	unsigned x = (unsigned)(rnd(&w->rng) % 100);
	int r;

	if (x < 50)
		return do_write(w, 0);
	if (x < 65)
		return do_write(w, 1);
	if (x < 80)
		return do_write(w, 2);
	if (x < 92) {
		bool whole = rnd(&w->rng) % 2;

		w->doing = DO_SYNC;
		r = whole ? h2_sync(w->c) : h2_flush(w->v);
		if (r < 0)
			return !op_error(w, r, whole ? "sync" : "flush");
		synced(w);
		return true;
	}
	if (x < 99)
		return do_readback(w);
	return do_snapshot(w);
}

/* One step of the loop; false when the round is over (w->doing then
 * says which call failed). */
static bool step(struct worker *w)
{
	if (!step_call(w))
		return false;
	w->doing = DO_NOTHING;
	return true;
}

/* Wait for round > last (or a failure); returns the round, or -1. */
static int wait_round(int last, bool *final)
{
	int round = -1;

	pthread_mutex_lock(&ctl.mu);
	while (ctl.round <= last && !ctl.failed)
		pthread_cond_wait(&ctl.cv, &ctl.mu);
	if (!ctl.failed) {
		round = ctl.round;
		*final = ctl.final;
	}
	pthread_mutex_unlock(&ctl.mu);
	return round;
}

/* Count this thread into ctl.running or ctl.down. */
static void count_state(int *field)
{
	pthread_mutex_lock(&ctl.mu);
	(*field)++;
	pthread_cond_broadcast(&ctl.cv);
	pthread_mutex_unlock(&ctl.mu);
}

/* A client thread: one round per h2d process. */
static void *client_main(void *arg)
{
	struct worker *w = arg;
	static __thread uint64_t got[NBLOCKS];
	char vol[16];
	bool final = false;
	int round = 0, r;

	vol_name(w->id, vol, sizeof(vol));
	while ((round = wait_round(round, &final)) >= 0) {
		if (connect_client(w) < 0)
			break;
		/* After a kill: read everything back and check it. */
		if (round > 1 &&
		    (read_image(w, vol, got) < 0 || !verify_volume(w, got) ||
		     !verify_snaps(w, false)))
			break;
		r = h2_volume_open(w->c, vol, H2_OPEN_RW, &w->v);
		if (r < 0) {
			fail("thread %d: open %s: %s (%s)", w->id, vol,
			     h2_strerror(r), h2_last_error());
			break;
		}
		count_state(&ctl.running);
		if (final) {
			for (int i = 0; i < FINAL_OPS && !failed(); i++)
				if (!step(w))
					break;
			r = h2_sync(w->c);
			if (r < 0)
				op_error(w, r, "final sync");
			else
				synced(w);
		} else {
			while (!failed() && step(w))
				;
		}
		h2_volume_close(w->v);
		h2_disconnect(w->c);
		w->v = NULL;
		w->c = NULL;
		count_state(&ctl.down);
		if (final)
			break;
	}
	if (w->c)
		h2_disconnect(w->c);
	return NULL;
}

/* ---------------------------------------------------------------------- */
/* The killer.                                                            */

/* Wait until *field reaches NTHREADS; false on a failure or timeout. */
static bool wait_all(int *field, const char *what)
{
	struct timespec ts;
	bool ok;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += WAIT_MS / 1000;
	pthread_mutex_lock(&ctl.mu);
	while (*field < NTHREADS && !ctl.failed)
		if (pthread_cond_timedwait(&ctl.cv, &ctl.mu, &ts) != 0)
			break;
	ok = *field >= NTHREADS && !ctl.failed;
	if (!ok && !ctl.failed)
		snprintf(ctl.why, sizeof(ctl.why),
			 "seed %" PRIu64 ", kill %d: only %d of %d clients %s "
			 "within %d s",
			 seed, kills_done, *field, NTHREADS, what,
			 WAIT_MS / 1000);
	pthread_mutex_unlock(&ctl.mu);
	return ok;
}

/* Start a round: the clients connect to the h2d now running. */
static void start_round(bool final)
{
	pthread_mutex_lock(&ctl.mu);
	ctl.round++;
	ctl.final = final;
	ctl.killed = false;
	ctl.running = ctl.down = 0;
	pthread_cond_broadcast(&ctl.cv);
	pthread_mutex_unlock(&ctl.mu);
}

/* Give up: keep the directory, say everything known. */
static void report_failure(void)
{
	keep_dir = true;
	pthread_mutex_lock(&ctl.mu);
	fprintf(stderr, "killloop: FAILED: %s\n", ctl.why);
	pthread_mutex_unlock(&ctl.mu);
	cr_assert_fail("%s", ctl.why);
}

/* `h2d check` of the store (h2d down): exit 0 or the test fails. */
static void check_store(const char *when)
{
	char cmd[512];
	int st;

	snprintf(cmd, sizeof(cmd), "'%s' check --device '%s' > '%s' 2>&1",
		 H2D_PATH, h2t_path(&srv, "var/h2/store.img"),
		 h2t_path(&srv, "check.out"));
	st = system(cmd);
	if (st != 0) {
		snprintf(cmd, sizeof(cmd), "cat '%s' >&2",
			 h2t_path(&srv, "check.out"));
		if (system(cmd) != 0)
			fprintf(stderr, "(no check output)\n");
		fail("h2d check %s: exit status %d (output above)", when,
		     WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		report_failure();
	}
}

/* H2_KILLS, else H2_SOAK's count, else the quick mode's. */
static int kills_wanted(void)
{
	const char *e = getenv("H2_KILLS");

	if (e && *e)
		return atoi(e);
	e = getenv("H2_SOAK");
	if (e && *e && strcmp(e, "0") != 0)
		return SOAK_KILLS;
	return DEFAULT_KILLS;
}

/* The threads' counts added up (they are between rounds). */
static void sum_counts(struct counts *t)
{
	memset(t, 0, sizeof(*t));
	for (int i = 0; i < NTHREADS; i++) {
		const struct counts *c = &workers[i].n;

		t->writes_acked += c->writes_acked;
		t->syncs += c->syncs;
		t->synced_verified += c->synced_verified;
		t->txns_verified += c->txns_verified;
		t->snaps_verified += c->snaps_verified;
		t->snaps_made += c->snaps_made;
		t->bytes_verified += c->bytes_verified;
		t->lost_in_flight += c->lost_in_flight;
		t->unacked += c->unacked;
		t->unacked_landed += c->unacked_landed;
		for (int d = 0; d < DO_N; d++)
			t->at_kill[d] += c->at_kill[d];
	}
}

/* A progress line, or the summary (with what the kills interrupted). */
static void print_line(const char *what, int kills, uint64_t t0)
{
	struct counts t;

	sum_counts(&t);
	fprintf(stderr,
		"killloop: %s: %d kills, %" PRIu64 " writes acked, %" PRIu64
		" syncs, %" PRIu64 " synced writes verified, %" PRIu64
		" txns verified, %" PRIu64 " snapshots verified (%" PRIu64
		" made), %" PRIu64 " MiB verified, %" PRIu64
		" unsynced writes lost (allowed), %.1f s\n",
		what, kills, t.writes_acked, t.syncs, t.synced_verified,
		t.txns_verified, t.snaps_verified, t.snaps_made,
		t.bytes_verified >> 20, t.lost_in_flight,
		(double)(now_ms() - t0) / 1000.0);
	if (strcmp(what, "summary") != 0)
		return;
	fprintf(stderr,
		"killloop: %" PRIu64 " writes in flight at a kill, %" PRIu64
		" of them in the store after it; the kills found the "
		"clients in:",
		t.unacked, t.unacked_landed);
	for (int d = 0; d < DO_N; d++)
		fprintf(stderr, "%s %s %" PRIu64, d ? "," : "", doing_name[d],
			t.at_kill[d]);
	fprintf(stderr, "\n");
}

/* After the clean stop: every volume and snapshot exactly the model. */
static void verify_exact(void)
{
	static uint64_t got[NBLOCKS];
	char vol[16];

	for (int i = 0; i < NTHREADS; i++) {
		struct worker *w = &workers[i];

		if (connect_client(w) < 0)
			report_failure();
		vol_name(i, vol, sizeof(vol));
		if (read_image(w, vol, got) < 0)
			report_failure();
		for (int k = 0; k < NBLOCKS; k++)
			if (got[k] != w->cur[k]) {
				fail("after a clean stop, thread %d block %d "
				     "holds %" PRIu64 ", not %" PRIu64,
				     i, k, got[k], w->cur[k]);
				report_failure();
			}
		if (!verify_snaps(w, true))
			report_failure();
		h2_disconnect(w->c);
		w->c = NULL;
	}
}

Test(killloop, sigkill_at_random_moments_loses_no_synced_write)
{
	/* Background flushes often too, so that kills land in them. */
	static const char *const extra[] = {"--flush-interval", "100", NULL};
	const char *e = getenv("H2_KILL_SEED");
	int kills = kills_wanted();
	bool soak = kills > DEFAULT_KILLS;
	uint64_t t0 = now_ms(), last_print = t0, ks;
	h2_client *admin;
	char vol[16];

	seed = e && *e ? strtoull(e, NULL, 0)
		       : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	ks = seed;
	fprintf(stderr,
		"killloop: seed %" PRIu64 " (H2_KILL_SEED=%" PRIu64
		" repeats the schedule), %d kills, %d clients\n",
		seed, seed, kills, NTHREADS);
	h2t_start(&srv, extra);
	admin = h2t_connect(&srv);
	for (int i = 0; i < NTHREADS; i++) {
		vol_name(i, vol, sizeof(vol));
		cr_assert_eq(h2_volume_create(admin, vol, VOL_BYTES), 0, "%s",
			     h2_last_error());
	}
	cr_assert_eq(h2_sync(admin), 0, "%s", h2_last_error());
	h2_disconnect(admin);
	for (int i = 0; i < NTHREADS; i++) {
		struct worker *w = &workers[i];

		w->id = i;
		w->rng = seed ^ (0x1000ull * (uint64_t)(i + 1));
		w->buf = malloc(VOL_BYTES);
		cr_assert_not_null(w->buf);
		cr_assert_eq(pthread_create(&w->th, NULL, client_main, w), 0);
	}

	while (kills_done < kills) {
		/* 20 to 400 ms into the round: writes, batches, syncs and
		 * flushes are in flight all the time. */
		uint64_t delay = 20 + rnd(&ks) % 381;
		struct timespec ts = {(time_t)(delay / 1000),
				      (long)(delay % 1000) * 1000000};
		int st;

		start_round(false);
		if (!wait_all(&ctl.running, "were running"))
			report_failure();
		nanosleep(&ts, NULL); /* the kill moment */
		pthread_mutex_lock(&ctl.mu);
		ctl.killed = true;
		kills_done++;
		kill_delay = delay;
		pthread_mutex_unlock(&ctl.mu);
		st = h2t_stop(&srv, SIGKILL);
		if (st != 128 + SIGKILL) {
			fail("h2d exited with status %d before the kill", st);
			report_failure();
		}
		if (!wait_all(&ctl.down, "saw the kill"))
			report_failure();
		check_store("after a kill");
		h2t_restart(&srv);
		if (soak &&
		    (now_ms() - last_print >= 10000 || kills_done == kills)) {
			print_line("progress", kills_done, t0);
			last_print = now_ms();
		}
	}

	/* The last round: verify the last kill, write on, sync, stop
	 * cleanly, and everything must be exactly there. */
	start_round(true);
	if (!wait_all(&ctl.down, "finished the last round"))
		report_failure();
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(workers[i].th, NULL);
	if (failed())
		report_failure();
	cr_assert_eq(h2t_stop(&srv, SIGTERM), 0, "h2d did not stop cleanly");
	check_store("after a clean stop");
	h2t_restart(&srv);
	verify_exact();
	print_line("summary", kills_done, t0);
	for (int i = 0; i < NTHREADS; i++) {
		struct worker *w = &workers[i];

		while (w->nsnaps)
			snap_remove(w, 0);
		free(w->log);
		free(w->buf);
	}
}
