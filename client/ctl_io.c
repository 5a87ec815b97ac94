/*
 * ctl_io.c - h2ctl's data commands: write, read, import, export.
 *
 * All four move data in IO_CHUNK requests with up to IO_DEPTH of them in
 * flight through the library's asynchronous interface.  The requests
 * live in a ring of slots, oldest first; each slot owns one IO_CHUNK
 * buffer and counts the requests still using it.  A slot is reused only
 * after all its requests have completed, so a buffer never changes under
 * a request.  Readers (read, export) consume the oldest slot first, which
 * keeps their output in volume order: "h2ctl read" writes to a pipe.
 *
 * The first failed request stops the submission of new ones; the
 * requests already in flight are always waited for before the buffers
 * are freed (the library writes into them until their callback runs).
 *
 * import keeps the volume sparse: holes of the file (SEEK_DATA and
 * SEEK_HOLE) and runs of all-zero ZERO_BLOCK blocks (ZERO_MIN_RUN or
 * longer) are not sent as data but collected as zero ranges, sent with
 * h2_write_zeroes (which lets the server leave them unallocated).  Synchronous
 * calls are only made with nothing in flight, so they never interleave with
 * asynchronous replies. export asks h2_block_status for the map, reads only the
 * data extents and writes only their non-zero blocks into a file of the
 * volume's size.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"

#define IO_CHUNK   (1u << 20) /* bytes per request */
#define IO_DEPTH   8	      /* requests in flight */
#define ZERO_BLOCK 4096u      /* granularity of zero detection */
/*
 * import sends a zero run inside the file's data as a zero range only
 * from this length on: write_zeroes is a synchronous round trip, and a
 * few KiB of zeros cost less as part of a pipelined write.
 */
#define ZERO_MIN_RUN (64u << 10)
/* export reads through holes this small between two data extents. */
#define MAP_MERGE_GAP (64u << 10)
/* Zero ranges collected by import before they are sent. */
#define ZERO_CAP 1024
/*
 * Send them when this many are waiting: one chunk adds at most one range
 * per ZERO_MIN_RUN, plus one for a file hole and one for the tail, so the
 * array never overflows between two checks.
 */
#define ZERO_FLUSH_AT (ZERO_CAP - IO_CHUNK / ZERO_MIN_RUN - 3)
_Static_assert(ZERO_FLUSH_AT > 0, "ZERO_CAP too small for IO_CHUNK");
/* Largest single write_zeroes; halved while the server says too big. */
#define ZERO_MAX (1ull << 30)
/* Part of the volume whose allocation map export asks for at once. */
#define MAP_WINDOW (1ull << 30)

struct io_pipe;

struct io_slot {
	struct io_pipe *pipe;
	uint8_t *buf;	  /* IO_CHUNK bytes */
	uint64_t off;	  /* volume offset of buf[0] */
	size_t len;	  /* bytes of buf in use */
	unsigned pending; /* requests not completed yet */
};

struct io_range {
	uint64_t off, len;
};

struct io_pipe {
	struct ctl *ctl;
	const char *name; /* volume name, for messages */
	h2_volume *v;
	struct io_slot slot[IO_DEPTH];
	unsigned head, used; /* the ring: slots in use, oldest first */
	int err;	     /* first failure: nothing more is submitted */
	uint64_t err_off;    /* where it happened */
	char err_msg[256];   /* the library's sentence about it, or "" */
	bool dead;	     /* h2_aio_poll failed: the connection is gone */
	uint8_t *zeros;	     /* IO_CHUNK zero bytes, when needed */
	struct io_range *zr; /* import: zero ranges waiting, ZERO_CAP */
	unsigned nzero;
	bool no_write_zeroes; /* the server lacks it: write zero buffers */
};

/* Allocate the slots' buffers.  Returns CTL_EXIT_OK or a failure. */
static int pipe_init(struct io_pipe *p, struct ctl *ctl, const char *name,
		     h2_volume *v)
{
	memset(p, 0, sizeof(*p));
	p->ctl = ctl;
	p->name = name;
	p->v = v;
	for (unsigned i = 0; i < IO_DEPTH; i++) {
		p->slot[i].pipe = p;
		p->slot[i].buf = malloc(IO_CHUNK);
		if (!p->slot[i].buf)
			return ctl_fail("out of memory for I/O buffers");
	}
	return CTL_EXIT_OK;
}

/* Free the buffers (all requests must have completed). */
static void pipe_free(struct io_pipe *p)
{
	for (unsigned i = 0; i < IO_DEPTH; i++) {
		/*
		 * A request the library never completed may still write
		 * into its buffer: leak it rather than free it under it.
		 */
		if (p->slot[i].pending == 0)
			free(p->slot[i].buf);
	}
	free(p->zeros);
	free(p->zr);
}

/*
 * Record the first failure, with the library's sentence (in a callback
 * it is about that request; after a failed call, about that call).
 */
static void pipe_error(struct io_pipe *p, int err, uint64_t off)
{
	if (p->err == 0) {
		p->err = err;
		p->err_off = off;
		snprintf(p->err_msg, sizeof(p->err_msg), "%s",
			 ctl_h2_reason(err));
	}
}

/* Completion of any request: arg is its slot. */
static void io_done(void *arg, int result)
{
	struct io_slot *s = arg;

	s->pending--;
	if (result < 0)
		pipe_error(s->pipe, result, s->off);
}

/* Run completions until slot s has none pending. */
static void slot_wait(struct io_pipe *p, struct io_slot *s)
{
	while (s->pending > 0 && !p->dead) {
		int r = h2_aio_poll(p->ctl->client, -1);

		if (r < 0) {
			/* Every pending callback has run with an error. */
			pipe_error(p, r, s->off);
			p->dead = true;
		}
	}
}

/* A fresh slot at the tail of the ring (the ring must not be full). */
static struct io_slot *ring_push(struct io_pipe *p)
{
	struct io_slot *s = &p->slot[(p->head + p->used) % IO_DEPTH];

	p->used++;
	s->off = 0;
	s->len = 0;
	return s;
}

/* The oldest slot in use. */
static struct io_slot *ring_head(struct io_pipe *p)
{
	return &p->slot[p->head];
}

/* Release the oldest slot (its requests must have completed). */
static void ring_pop(struct io_pipe *p)
{
	p->head = (p->head + 1) % IO_DEPTH;
	p->used--;
}

/* A free slot for writing, waiting for the oldest one if need be. */
static struct io_slot *ring_take(struct io_pipe *p)
{
	if (p->used == IO_DEPTH) {
		slot_wait(p, ring_head(p));
		ring_pop(p);
	}
	return ring_push(p);
}

/* Wait for every request and empty the ring. */
static void ring_drain(struct io_pipe *p)
{
	while (p->used > 0) {
		slot_wait(p, ring_head(p));
		ring_pop(p);
	}
}

/* Submit a write of len bytes of buf at volume offset off, for slot s. */
static void submit_write(struct io_pipe *p, struct io_slot *s, const void *buf,
			 size_t len, uint64_t off)
{
	int r;

	if (p->err)
		return;
	s->pending++;
	r = h2_aio_pwrite(p->v, buf, len, off, 0, io_done, s);
	if (r < 0) {
		s->pending--;
		pipe_error(p, r, off);
	}
}

/* Submit a read filling slot s (s->off, s->len set). */
static void submit_read(struct io_pipe *p, struct io_slot *s)
{
	int r;

	if (p->err)
		return;
	s->pending++;
	r = h2_aio_pread(p->v, s->buf, s->len, s->off, io_done, s);
	if (r < 0) {
		s->pending--;
		pipe_error(p, r, s->off);
	}
}

/* The message for the pipe's failure; returns CTL_EXIT_FAIL. */
static int pipe_fail(const struct io_pipe *p, const char *verb)
{
	char hint[256];

	return ctl_fail("%s volume \"%s\" at offset %" PRIu64 " failed: %s%s",
			verb, p->name, p->err_off, p->err_msg,
			ctl_h2_hint(p->ctl, p->err, hint, sizeof(hint)));
}

/* read(2) until n bytes or end of file; bytes read, or -1 with errno. */
static ssize_t read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* pread(2) exactly n bytes at off; 0, or -1 with errno (EIO if short). */
static int pread_full(int fd, void *buf, size_t n, uint64_t off)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r =
		    pread(fd, (char *)buf + got, n - got, (off_t)(off + got));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			errno = EIO; /* the file shrank under us */
			return -1;
		}
		got += (size_t)r;
	}
	return 0;
}

/* write(2) all n bytes; 0, or -1 with errno. */
static int write_full(int fd, const void *buf, size_t n)
{
	while (n > 0) {
		ssize_t r = write(fd, buf, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		buf = (const char *)buf + r;
		n -= (size_t)r;
	}
	return 0;
}

/* pwrite(2) all n bytes at off; 0, or -1 with errno. */
static int pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
	while (n > 0) {
		ssize_t r = pwrite(fd, buf, n, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		buf = (const char *)buf + r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* Whether n bytes at p are all zero. */
static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/*
 * Length of the run of blocks starting at buf[at] that are all zero or
 * all not (as *zero says), blocks aligned to ZERO_BLOCK in the volume
 * (base is the volume offset of buf[0]).
 */
static size_t zero_run(const uint8_t *buf, size_t len, size_t at, uint64_t base,
		       bool *zero)
{
	size_t start = at;
	bool first = true;

	while (at < len) {
		size_t blk = ZERO_BLOCK - (size_t)((base + at) % ZERO_BLOCK);
		bool z;

		if (blk > len - at)
			blk = len - at;
		z = all_zero(buf + at, blk);
		if (first)
			*zero = z;
		else if (z != *zero)
			break;
		first = false;
		at += blk;
	}
	return at - start;
}

/* Open volume name (rw or not) into *v; CTL_EXIT_OK or a failure. */
static int open_volume(struct ctl *ctl, const char *name, bool rw,
		       h2_volume **v)
{
	int r =
	    h2_volume_open(ctl->client, name, rw ? H2_OPEN_RW : H2_OPEN_RO, v);

	if (r < 0)
		return ctl_fail_h2(ctl, r, "cannot open volume \"%s\"%s", name,
				   rw ? " for writing" : "");
	return CTL_EXIT_OK;
}

/* Close v; a failure there (rc was OK) becomes the result. */
static int close_volume(struct ctl *ctl, const char *name, h2_volume *v, int rc)
{
	int r;

	if (!v)
		return rc;
	r = h2_volume_close(v);
	if (r < 0 && rc == CTL_EXIT_OK)
		return ctl_fail_h2(ctl, r, "cannot close volume \"%s\"", name);
	return rc;
}

/* Flush v so that everything written is durable. */
static int flush_volume(struct ctl *ctl, const char *name, h2_volume *v)
{
	int r = h2_flush(v);

	if (r < 0)
		return ctl_fail_h2(ctl, r, "cannot flush volume \"%s\"", name);
	return CTL_EXIT_OK;
}

/* "VOLUME at offset OFF": check that off is inside a volume of size. */
static int check_offset(const char *name, uint64_t off, uint64_t size)
{
	char hs[32];

	if (off > size)
		return ctl_fail("offset %" PRIu64 " is past the end of volume "
				"\"%s\" (%s)",
				off, name, ctl_size(size, hs, sizeof(hs)));
	return CTL_EXIT_OK;
}

/* {"volume", "offset", "bytes", "file"?, "seconds"} */
static int io_json(const char *volume, const char *file, uint64_t off,
		   uint64_t bytes, double secs)
{
	cJSON *o = cJSON_CreateObject();

	if (o && (!cJSON_AddStringToObject(o, "volume", volume) ||
		  (file && !cJSON_AddStringToObject(o, "file", file)) ||
		  !ctl_json_u64(o, "offset", off) ||
		  !ctl_json_u64(o, "bytes", bytes) ||
		  !cJSON_AddNumberToObject(o, "seconds", secs))) {
		cJSON_Delete(o);
		o = NULL;
	}
	return ctl_json_print(o);
}

/* Whether a FILE argument means standard input/output. */
static bool is_std(int np, char **pos, int i)
{
	return np <= i || !strcmp(pos[i], "-");
}

int ctl_write(struct ctl *ctl, int argc, char **argv)
{
	const char *name, *file;
	struct io_pipe p = {0};
	struct timespec t0, t1;
	h2_volume *v = NULL;
	uint64_t off, size, pos = 0;
	bool overflow = false, std;
	struct stat st;
	int fd = STDIN_FILENO, rc, np;

	if ((rc = ctl_positional(ctl, argc, argv, 2, 3, &np)) ||
	    (rc = ctl_parse_size(ctl, "OFFSET", argv[1], &off)))
		return rc;
	name = argv[0];
	std = is_std(np, argv, 2);
	file = std ? "standard input" : argv[2];
	if (!std && (fd = open(file, O_RDONLY | O_CLOEXEC)) < 0)
		return ctl_fail("cannot open %s: %s", file, strerror(errno));
	if ((rc = ctl_connect(ctl)) || (rc = open_volume(ctl, name, true, &v)))
		goto out;
	size = h2_volume_size(v);
	if ((rc = check_offset(name, off, size)))
		goto out;
	/* A file that cannot fit fails before anything is written. */
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    (uint64_t)st.st_size > size - off) {
		char hs[32], hf[32];

		rc = ctl_fail("%s (%s) does not fit in volume \"%s\" (%s) at "
			      "offset %" PRIu64 " (grow it with \"h2ctl volume "
			      "resize\")",
			      file, ctl_size((uint64_t)st.st_size, hf, 32),
			      name, ctl_size(size, hs, sizeof(hs)), off);
		goto out;
	}
	if ((rc = pipe_init(&p, ctl, name, v)))
		goto out;
	t0 = ctl_now();
	while (!p.err && !overflow) {
		struct io_slot *s = ring_take(&p);
		ssize_t n = read_full(fd, s->buf, IO_CHUNK);

		if (n < 0) {
			rc = ctl_fail("cannot read %s: %s", file,
				      strerror(errno));
			p.used--; /* give the slot back unused */
			break;
		}
		if (n == 0) {
			p.used--;
			break;
		}
		s->off = off + pos;
		s->len = (size_t)n;
		if (s->len > size - off - pos) {
			s->len = (size_t)(size - off - pos);
			overflow = true;
		}
		if (s->len)
			submit_write(&p, s, s->buf, s->len, s->off);
		pos += s->len;
	}
	ring_drain(&p);
	t1 = ctl_now();
	if (rc)
		goto out;
	if (p.err) {
		rc = pipe_fail(&p, "writing");
		goto out;
	}
	if (overflow) {
		char hs[32];

		rc = ctl_fail("the data runs past the end of volume \"%s\" "
			      "(%s): wrote the first %" PRIu64 " bytes at "
			      "offset %" PRIu64 " (grow it with \"h2ctl volume "
			      "resize\")",
			      name, ctl_size(size, hs, sizeof(hs)), pos, off);
		flush_volume(ctl, name, v);
		goto out;
	}
	if ((rc = flush_volume(ctl, name, v)))
		goto out;
	if (ctl->json) {
		rc = io_json(name, std ? NULL : file, off, pos,
			     ctl_elapsed(&t0, &t1));
	} else {
		printf("wrote %" PRIu64 " bytes to volume \"%s\" at offset "
		       "%" PRIu64 "\n",
		       pos, name, off);
		rc = ctl_stdout_done();
	}
out:
	pipe_free(&p);
	rc = close_volume(ctl, name, v, rc);
	if (!std)
		close(fd);
	return rc;
}

int ctl_read(struct ctl *ctl, int argc, char **argv)
{
	const char *name, *file;
	struct io_pipe p = {0};
	struct timespec t0, t1;
	h2_volume *v = NULL;
	uint64_t off, len, size, sub = 0, done = 0;
	bool std;
	int fd = STDOUT_FILENO, rc, np;

	if ((rc = ctl_positional(ctl, argc, argv, 3, 4, &np)) ||
	    (rc = ctl_parse_size(ctl, "OFFSET", argv[1], &off)) ||
	    (rc = ctl_parse_size(ctl, "LENGTH", argv[2], &len)))
		return rc;
	name = argv[0];
	std = is_std(np, argv, 3);
	file = std ? "standard output" : argv[3];
	if ((rc = ctl_connect(ctl)) || (rc = open_volume(ctl, name, false, &v)))
		goto out;
	size = h2_volume_size(v);
	if (off > size || len > size - off) {
		char hs[32];

		rc = ctl_fail("%" PRIu64 " bytes at offset %" PRIu64 " are not "
			      "inside volume \"%s\" (%s, %" PRIu64 " bytes)",
			      len, off, name, ctl_size(size, hs, sizeof(hs)),
			      size);
		goto out;
	}
	/* Open the output only now: a failed read leaves no empty file. */
	if (!std && (fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			       0666)) < 0) {
		rc = ctl_fail("cannot create %s: %s", file, strerror(errno));
		std = true; /* nothing to close */
		goto out;
	}
	if ((rc = pipe_init(&p, ctl, name, v)))
		goto out;
	t0 = ctl_now();
	while (done < len) {
		struct io_slot *s;

		while (p.used < IO_DEPTH && sub < len && !p.err) {
			s = ring_push(&p);
			s->off = off + sub;
			s->len = len - sub < IO_CHUNK ? (size_t)(len - sub)
						      : IO_CHUNK;
			submit_read(&p, s);
			sub += s->len;
		}
		s = ring_head(&p);
		slot_wait(&p, s);
		if (p.err)
			break;
		if (write_full(fd, s->buf, s->len) < 0) {
			/* A reader that went away needs no message. */
			rc = errno == EPIPE ? CTL_EXIT_FAIL
					    : ctl_fail("cannot write to %s: %s",
						       file, strerror(errno));
			break;
		}
		done += s->len;
		ring_pop(&p);
	}
	ring_drain(&p);
	t1 = ctl_now();
	if (rc)
		goto out;
	if (p.err) {
		rc = pipe_fail(&p, "reading");
		goto out;
	}
	if (!std && close(fd) < 0) {
		std = true;
		rc = ctl_fail("cannot write %s: %s", file, strerror(errno));
		goto out;
	}
	if (!std) {
		std = true;
		if (ctl->json) {
			rc = io_json(name, file, off, len,
				     ctl_elapsed(&t0, &t1));
		} else {
			printf("read %" PRIu64 " bytes of volume \"%s\" at "
			       "offset %" PRIu64 " into %s\n",
			       len, name, off, file);
			rc = ctl_stdout_done();
		}
	}
out:
	pipe_free(&p);
	rc = close_volume(ctl, name, v, rc);
	if (!std)
		close(fd);
	return rc;
}

/*
 * import: remember that [off, off + len) must read as zeros.  Only
 * called between ring_take() and the next safe point (see ZERO_FLUSH_AT).
 */
static void zero_add(struct io_pipe *p, uint64_t off, uint64_t len)
{
	struct io_range *last = p->nzero ? &p->zr[p->nzero - 1] : NULL;

	if (len == 0)
		return;
	if (last && last->off + last->len == off) {
		last->len += len;
		return;
	}
	p->zr[p->nzero].off = off;
	p->zr[p->nzero].len = len;
	p->nzero++;
}

/* Zero [off, off + len) with writes of zero buffers (old servers). */
static void zero_by_writing(struct io_pipe *p, uint64_t off, uint64_t len)
{
	if (!p->zeros && !(p->zeros = calloc(1, IO_CHUNK))) {
		pipe_error(p, H2_ENOMEM, off);
		return;
	}
	while (len > 0 && !p->err) {
		struct io_slot *s = ring_take(p);
		size_t n = len < IO_CHUNK ? (size_t)len : IO_CHUNK;

		s->off = off;
		s->len = n;
		submit_write(p, s, p->zeros, n, off);
		off += n;
		len -= n;
	}
}

/*
 * Send the zero ranges collected.  Waits for every request in flight
 * first, so the synchronous calls never overlap asynchronous ones.
 */
static void zero_flush(struct io_pipe *p)
{
	uint64_t piece = ZERO_MAX;

	ring_drain(p);
	for (unsigned i = 0; i < p->nzero && !p->err; i++) {
		uint64_t off = p->zr[i].off, len = p->zr[i].len;

		while (len > 0 && !p->err) {
			uint64_t n = len < piece ? len : piece;
			int r;

			if (p->no_write_zeroes) {
				zero_by_writing(p, off, len);
				break;
			}
			r = h2_write_zeroes(p->v, off, n, 0);
			if (r == H2_ETOOBIG && piece > IO_CHUNK) {
				piece /= 2;
				continue;
			}
			if (r == H2_EUNSUPPORTED) {
				p->no_write_zeroes = true;
				continue;
			}
			if (r < 0) {
				pipe_error(p, r, off);
				break;
			}
			off += n;
			len -= n;
		}
	}
	p->nzero = 0;
	ring_drain(p);
}

/* import: send the zero ranges if there are many (a safe point). */
static void zero_maybe_flush(struct io_pipe *p)
{
	if (p->nzero >= ZERO_FLUSH_AT)
		zero_flush(p);
}

struct import_stats {
	uint64_t data; /* bytes sent as data */
	uint64_t zero; /* bytes of the file sent as zero ranges */
};

/*
 * Send the file's data in [pos, end) (a data extent of the file): the
 * non-zero runs as writes, the zero runs as zero ranges.  Returns 0, or
 * -1 with errno after a read error.
 */
static int import_extent(struct io_pipe *p, int fd, uint64_t pos, uint64_t end,
			 struct ctl_progress *prog, struct import_stats *st)
{
	while (pos < end && !p->err) {
		struct io_slot *s;
		size_t at = 0, dat = 0;

		zero_maybe_flush(p);
		s = ring_take(p);
		s->off = pos;
		s->len = end - pos < IO_CHUNK ? (size_t)(end - pos) : IO_CHUNK;
		if (pread_full(fd, s->buf, s->len, pos) < 0) {
			p->used--; /* give the unused slot back */
			return -1;
		}
		/* Data runs pile up in [dat, at) until a long zero run. */
		while (at < s->len) {
			bool zero;
			size_t n = zero_run(s->buf, s->len, at, s->off, &zero);

			if (zero && n >= ZERO_MIN_RUN) {
				if (at > dat)
					submit_write(p, s, s->buf + dat,
						     at - dat, s->off + dat);
				zero_add(p, s->off + at, n);
				st->zero += n;
				dat = at + n;
			} else {
				st->data += n;
			}
			at += n;
		}
		if (at > dat)
			submit_write(p, s, s->buf + dat, at - dat,
				     s->off + dat);
		pos += s->len;
		ctl_progress_update(prog, pos);
	}
	return 0;
}

/* Size of the file or block device open as fd; -1 if not seekable. */
static int64_t source_size(int fd, const struct stat *st)
{
	off_t end;

	if (S_ISREG(st->st_mode))
		return st->st_size;
	if (!S_ISBLK(st->st_mode))
		return -1;
	end = lseek(fd, 0, SEEK_END);
	return end < 0 ? -1 : end;
}

int ctl_import(struct ctl *ctl, int argc, char **argv)
{
	const char *name, *file;
	struct ctl_progress prog = {0};
	struct import_stats ist = {0};
	struct io_pipe p = {0};
	struct timespec t0, t1;
	h2_volume *v = NULL;
	uint64_t vsize, fsize, pos = 0;
	bool seek_data = true;
	struct stat st;
	char label[160];
	int64_t fs;
	int fd, rc, np;

	if ((rc = ctl_positional(ctl, argc, argv, 2, 2, &np)))
		return rc;
	name = argv[0];
	file = argv[1];
	if ((fd = open(file, O_RDONLY | O_CLOEXEC)) < 0)
		return ctl_fail("cannot open %s: %s", file, strerror(errno));
	if (fstat(fd, &st) < 0 || (fs = source_size(fd, &st)) < 0) {
		rc = ctl_fail("cannot import %s: not a regular file or block "
			      "device (for a stream use \"h2ctl write %s 0 "
			      "-\")",
			      file, name);
		goto out;
	}
	fsize = (uint64_t)fs;
	if ((rc = ctl_connect(ctl)) || (rc = open_volume(ctl, name, true, &v)))
		goto out;
	vsize = h2_volume_size(v);
	if (fsize > vsize) {
		char hf[32], hv[32];

		rc = ctl_fail("%s (%s) is larger than volume \"%s\" (%s): grow "
			      "it first with \"h2ctl volume resize %s %" PRIu64
			      "\"",
			      file, ctl_size(fsize, hf, sizeof(hf)), name,
			      ctl_size(vsize, hv, sizeof(hv)), name, fsize);
		goto out;
	}
	if ((rc = pipe_init(&p, ctl, name, v)))
		goto out;
	if (!(p.zr = calloc(ZERO_CAP, sizeof(*p.zr)))) {
		rc = ctl_fail("out of memory");
		goto out;
	}
	snprintf(label, sizeof(label), "import %s", name);
	ctl_progress_start(&prog, label, fsize);
	t0 = ctl_now();
	while (pos < fsize && !p.err) {
		off_t data = pos, hole = (off_t)fsize;

		/* Filesystems without SEEK_DATA: all of the file is data. */
		if (seek_data) {
			data = lseek(fd, (off_t)pos, SEEK_DATA);
			if (data < 0 && errno == ENXIO) {
				data = (off_t)fsize; /* a hole to the end */
			} else if (data < 0) {
				seek_data = false;
				data = (off_t)pos;
			}
		}
		if ((uint64_t)data > fsize)
			data = (off_t)fsize;
		zero_maybe_flush(&p);
		zero_add(&p, pos, (uint64_t)data - pos);
		ist.zero += (uint64_t)data - pos;
		pos = (uint64_t)data;
		if (pos >= fsize)
			break;
		if (seek_data) {
			hole = lseek(fd, data, SEEK_HOLE);
			if (hole < 0 || (uint64_t)hole > fsize)
				hole = (off_t)fsize;
		}
		if (import_extent(&p, fd, pos, (uint64_t)hole, &prog, &ist) <
		    0) {
			rc = ctl_fail("cannot read %s: %s", file,
				      strerror(errno));
			break;
		}
		pos = (uint64_t)hole;
		ctl_progress_update(&prog, pos);
	}
	/* The volume reads as the file followed by zeros. */
	if (!rc && !p.err) {
		zero_maybe_flush(&p);
		zero_add(&p, fsize, vsize - fsize);
	}
	if (!rc)
		zero_flush(&p);
	ring_drain(&p);
	if (!rc && p.err)
		rc = pipe_fail(&p, "writing");
	if (!rc)
		rc = flush_volume(ctl, name, v);
	t1 = ctl_now();
	ctl_progress_end(&prog, rc == CTL_EXIT_OK);
	if (rc)
		goto out;
	if (ctl->json) {
		cJSON *o = cJSON_CreateObject();

		if (o && (!cJSON_AddStringToObject(o, "volume", name) ||
			  !cJSON_AddStringToObject(o, "file", file) ||
			  !ctl_json_u64(o, "bytes", fsize) ||
			  !ctl_json_u64(o, "data_bytes", ist.data) ||
			  !ctl_json_u64(o, "zero_bytes", ist.zero) ||
			  !ctl_json_u64(o, "volume_size", vsize) ||
			  !cJSON_AddNumberToObject(o, "seconds",
						   ctl_elapsed(&t0, &t1)))) {
			cJSON_Delete(o);
			o = NULL;
		}
		rc = ctl_json_print(o);
	} else {
		char hf[32], hd[32], hz[32];

		printf("imported %s (%s) into volume \"%s\" in %.2f s: %s "
		       "data, %s zeros\n",
		       file, ctl_size(fsize, hf, sizeof(hf)), name,
		       ctl_elapsed(&t0, &t1), ctl_size(ist.data, hd, 32),
		       ctl_size(ist.zero, hz, sizeof(hz)));
		rc = ctl_stdout_done();
	}
out:
	pipe_free(&p);
	rc = close_volume(ctl, name, v, rc);
	close(fd);
	return rc;
}

/* export: the allocation map of one window of the volume. */
struct extent_map {
	struct io_range *e; /* data extents, in order, clipped */
	size_t n, cap;
	uint64_t start, end; /* the window */
	bool oom;
};

/* h2_block_status callback: keep the data extents inside the window. */
static int map_extent(void *arg, uint64_t off, uint64_t len, bool hole)
{
	struct extent_map *m = arg;
	uint64_t end = off + len < off ? UINT64_MAX : off + len;

	if (off < m->start)
		off = m->start;
	if (end > m->end)
		end = m->end;
	if (hole || off >= end)
		return 0;
	/* Read through a small hole rather than split the requests. */
	if (m->n && m->e[m->n - 1].off + m->e[m->n - 1].len <= off &&
	    off - (m->e[m->n - 1].off + m->e[m->n - 1].len) <= MAP_MERGE_GAP) {
		m->e[m->n - 1].len = end - m->e[m->n - 1].off;
		return 0;
	}
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64;
		struct io_range *e = reallocarray(m->e, cap, sizeof(*e));

		if (!e) {
			m->oom = true;
			return H2_ENOMEM;
		}
		m->e = e;
		m->cap = cap;
	}
	m->e[m->n].off = off;
	m->e[m->n].len = end - off;
	m->n++;
	return 0;
}

/* qsort order of ranges: by offset. */
static int by_off(const void *a, const void *b)
{
	const struct io_range *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/*
 * Fill m with the data extents of [start, end).  Without block status
 * (*mapless) all of it is data.  Returns 0 or an H2_E* error.
 */
static int map_window(h2_volume *v, struct extent_map *m, uint64_t start,
		      uint64_t end, bool *mapless)
{
	int r;

	m->n = 0;
	m->start = start;
	m->end = end;
	m->oom = false;
	if (!*mapless) {
		r = h2_block_status(v, start, end - start, map_extent, m);
		if (m->oom)
			return H2_ENOMEM;
		if (r == H2_EUNSUPPORTED)
			*mapless = true;
		else if (r < 0)
			return r;
	}
	if (*mapless) {
		m->n = 0;
		return map_extent(m, start, end - start, false);
	}
	/* The map is normally sorted; make sure, and drop overlaps. */
	qsort(m->e, m->n, sizeof(*m->e), by_off);
	for (size_t i = 1; i < m->n; i++) {
		struct io_range *a = &m->e[i - 1], *b = &m->e[i];

		if (b->off < a->off + a->len) {
			uint64_t bend = b->off + b->len;

			b->off = a->off + a->len;
			b->len = bend > b->off ? bend - b->off : 0;
		}
	}
	return 0;
}

/*
 * export: write the oldest slot's data to the file, skipping all-zero
 * blocks (the file is sparse and already reads as zeros there).
 */
static int export_slot(int fd, const struct io_slot *s, uint64_t *data)
{
	size_t at = 0;

	while (at < s->len) {
		bool zero = false;
		size_t n = zero_run(s->buf, s->len, at, s->off, &zero);

		if (!zero) {
			if (pwrite_full(fd, s->buf + at, n, s->off + at) < 0)
				return -1;
			*data += n;
		}
		at += n;
	}
	return 0;
}

int ctl_export(struct ctl *ctl, int argc, char **argv)
{
	const char *name, *file;
	struct ctl_progress prog = {0};
	struct extent_map m = {0};
	struct io_pipe p = {0};
	struct timespec t0, t1;
	h2_volume *v = NULL;
	uint64_t size, win, data = 0;
	bool mapless = false;
	struct stat st;
	char label[160];
	int fd = -1, rc, np, r;

	if ((rc = ctl_positional(ctl, argc, argv, 2, 2, &np)))
		return rc;
	name = argv[0];
	file = argv[1];
	/* Refuse a non-file target before touching the volume. */
	if (stat(file, &st) == 0 && !S_ISREG(st.st_mode))
		return ctl_fail("cannot export to %s: not a regular file (for "
				"a device or a pipe use \"h2ctl read %s 0 "
				"SIZE > %s\")",
				file, name, file);
	if ((rc = ctl_connect(ctl)) || (rc = open_volume(ctl, name, false, &v)))
		goto out;
	size = h2_volume_size(v);
	fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	if (fd < 0) {
		rc = ctl_fail("cannot create %s: %s", file, strerror(errno));
		goto out;
	}
	/* The file reads as zeros wherever we write nothing. */
	if (ftruncate(fd, (off_t)size) < 0) {
		rc = ctl_fail("cannot make %s %" PRIu64 " bytes long: %s", file,
			      size, strerror(errno));
		goto out;
	}
	if ((rc = pipe_init(&p, ctl, name, v)))
		goto out;
	snprintf(label, sizeof(label), "export %s", name);
	ctl_progress_start(&prog, label, size);
	t0 = ctl_now();
	for (win = 0; win < size && !rc && !p.err;) {
		uint64_t wend =
		    size - win > MAP_WINDOW ? win + MAP_WINDOW : size;

		r = map_window(v, &m, win, wend, &mapless);
		if (r < 0) {
			rc = ctl_fail_h2(ctl, r,
					 "cannot get the allocation map of "
					 "volume \"%s\"",
					 name);
			break;
		}
		for (size_t i = 0; i < m.n && !rc && !p.err; i++) {
			uint64_t pos = m.e[i].off, end = pos + m.e[i].len;

			while (pos < end && !rc && !p.err) {
				struct io_slot *s;

				if (p.used == IO_DEPTH) {
					s = ring_head(&p);
					slot_wait(&p, s);
					if (p.err)
						break;
					if (export_slot(fd, s, &data) < 0)
						rc = ctl_fail(
						    "cannot write %s: %s", file,
						    strerror(errno));
					ctl_progress_update(&prog,
							    s->off + s->len);
					ring_pop(&p);
					continue;
				}
				s = ring_push(&p);
				s->off = pos;
				s->len = end - pos < IO_CHUNK
					     ? (size_t)(end - pos)
					     : IO_CHUNK;
				submit_read(&p, s);
				pos += s->len;
			}
		}
		win = wend;
		/* Write the window's tail before the next map is asked. */
		while (p.used > 0 && !rc && !p.err) {
			struct io_slot *s = ring_head(&p);

			slot_wait(&p, s);
			if (!p.err && export_slot(fd, s, &data) < 0)
				rc = ctl_fail("cannot write %s: %s", file,
					      strerror(errno));
			ring_pop(&p);
		}
		ctl_progress_update(&prog, win);
	}
	ring_drain(&p);
	if (!rc && p.err)
		rc = pipe_fail(&p, "reading");
	if (!rc && close(fd) < 0)
		rc = ctl_fail("cannot write %s: %s", file, strerror(errno));
	fd = -1;
	t1 = ctl_now();
	ctl_progress_end(&prog, rc == CTL_EXIT_OK);
	if (rc)
		goto out;
	if (ctl->json) {
		cJSON *o = cJSON_CreateObject();

		if (o && (!cJSON_AddStringToObject(o, "volume", name) ||
			  !cJSON_AddStringToObject(o, "file", file) ||
			  !ctl_json_u64(o, "bytes", size) ||
			  !ctl_json_u64(o, "data_bytes", data) ||
			  !cJSON_AddNumberToObject(o, "seconds",
						   ctl_elapsed(&t0, &t1)))) {
			cJSON_Delete(o);
			o = NULL;
		}
		rc = ctl_json_print(o);
	} else {
		char hs[32], hd[32];

		printf("exported volume \"%s\" (%s) to %s in %.2f s: %s data, "
		       "the rest sparse\n",
		       name, ctl_size(size, hs, sizeof(hs)), file,
		       ctl_elapsed(&t0, &t1), ctl_size(data, hd, sizeof(hd)));
		rc = ctl_stdout_done();
	}
out:
	free(m.e);
	pipe_free(&p);
	rc = close_volume(ctl, name, v, rc);
	if (fd >= 0)
		close(fd);
	return rc;
}
