/*
 * cmd_format.c - "h2d format": write a new, empty store onto a device.
 *
 * With --size the device is a sparse regular file that this command
 * creates.  An existing file is never replaced without --force, whether
 * or not it holds a store (it might be someone's disk image); an existing
 * store is never overwritten without --force (the engine refuses and its
 * message says so).  Without --size the device must exist already (a file
 * or a block device) and keeps its size.
 *
 * --preallocate (with --size) writes zeros over the whole new file first,
 * as qemu-img's preallocation=full does.  A copy-on-write store writes
 * every part of its device sooner or later, and on thin-provisioned or
 * freshly created storage the first write to a region costs far more
 * than later ones (on this project's CI machines: ~200 MB/s for first
 * writes, ~1.4 GB/s for rewrites, fallocate or not); preallocating pays
 * that once, at format time, with progress shown.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cli.h"
#include "dev.h"
#include "format.h"
#include "h2core.h"
#include "h2d.h"

struct format_args {
	const char *device;
	uint64_t size;
	bool have_size;
	bool force;
	bool preallocate;
};

/* Print the command's help. */
static void format_usage(FILE *f)
{
	fprintf(f,
		"usage: h2d format --device PATH [--size SIZE [--preallocate]]\n"
		"                  [--force]\n"
		"\n"
		"Write a new, empty h2 store onto PATH.\n"
		"\n"
		"  --device PATH  file or block device to format\n"
		"  --size SIZE    create PATH as a sparse file of SIZE bytes\n"
		"                 (suffixes K, M, G, T, P: powers of 1024;\n"
		"                 at least %llu MiB)\n"
		"  --force        destroy an existing store, or replace an\n"
		"                 existing file when --size is given\n"
		"  --preallocate  with --size: write zeros over the whole file\n"
		"                 first, so no write to the store is its\n"
		"                 first (shows progress; takes a while)\n"
		"  --help         show this help\n"
		"\n"
		"Exit status: 0 formatted, 1 failed, 2 usage error.\n",
		H2_DEV_MIN_SIZE >> 20);
}

/* Parse the command line; returns -1 to go on, else an exit code. */
static int format_parse(int argc, char **argv, struct format_args *a)
{
	static const struct option opts[] = {
	    {"device", required_argument, NULL, 'd'},
	    {"size", required_argument, NULL, 's'},
	    {"force", no_argument, NULL, 'f'},
	    {"preallocate", no_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int ch, r;

	optind = 0; /* glibc: start afresh */
	while ((ch = getopt_long(argc, argv, "d:s:fh", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			a->device = optarg;
			break;
		case 's':
			r = h2d_parse_size(optarg, &a->size);
			if (r < 0) {
				fprintf(stderr,
					"h2d format: invalid --size \"%s\": %s "
					"(use a number with an optional K, M, "
					"G, T or P suffix, e.g. 64G)\n",
					optarg,
					r == -ERANGE ? "too large"
						     : "not a size");
				return H2D_EXIT_USAGE;
			}
			a->have_size = true;
			break;
		case 'f':
			a->force = true;
			break;
		case 'p':
			a->preallocate = true;
			break;
		case 'h':
			format_usage(stdout);
			return H2D_EXIT_OK;
		default:
			format_usage(stderr);
			return H2D_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "h2d format: unexpected argument \"%s\"\n\n",
			argv[optind]);
		format_usage(stderr);
		return H2D_EXIT_USAGE;
	}
	if (!a->device) {
		fprintf(stderr, "h2d format: --device PATH is required\n\n");
		format_usage(stderr);
		return H2D_EXIT_USAGE;
	}
	if (a->preallocate && !a->have_size) {
		fprintf(stderr, "h2d format: --preallocate needs --size: it "
				"only fills a file this command creates\n");
		return H2D_EXIT_USAGE;
	}
	if (a->have_size && a->size < H2_DEV_MIN_SIZE) {
		fprintf(stderr,
			"h2d format: --size %" PRIu64 " is too small: an h2 "
			"store needs at least %llu MiB\n",
			a->size, H2_DEV_MIN_SIZE >> 20);
		return H2D_EXIT_USAGE;
	}
	return -1;
}

/*
 * --size without --force on an existing file: refuse, with the engine's
 * message if the file holds a store.
 */
static int refuse_existing(const struct format_args *a)
{
	struct h2_format_opts keep = {.force = false};
	struct h2_dev *dev = NULL;

	/* Read-write: the engine refuses a read-only device before probing. */
	if (h2_dev_open_file(a->device, 0, &dev) == 0 && h2_store_probe(dev) &&
	    h2_store_format(dev, &keep) < 0) {
		/* The engine refused and explains (mentions --force). */
		fprintf(stderr, "h2d format: %s\n", h2_core_errmsg());
	} else {
		fprintf(stderr,
			"h2d format: %s already exists; use --force to replace "
			"it with a new %" PRIu64 "-byte file, or leave out "
			"--size to format it at its current size\n",
			a->device, a->size);
	}
	h2_dev_close(dev);
	return H2D_EXIT_FAIL;
}

/* Open (or create) the device the arguments name. */
static int format_open(const struct format_args *a, struct h2_dev **dev,
		       bool *created)
{
	struct stat sb;
	bool exists = stat(a->device, &sb) == 0;
	int r;

	*created = false;
	if (!exists && errno != ENOENT) {
		fprintf(stderr, "h2d format: %s: %s\n", a->device,
			strerror(errno));
		return H2D_EXIT_FAIL;
	}
	if (!a->have_size) {
		if (!exists) {
			fprintf(stderr,
				"h2d format: %s does not exist; give --size "
				"SIZE to create it as a sparse file\n",
				a->device);
			return H2D_EXIT_FAIL;
		}
		r = h2_dev_open_file(a->device, 0, dev);
		if (r < 0) {
			fprintf(stderr, "h2d format: %s\n", h2_core_errmsg());
			return H2D_EXIT_FAIL;
		}
		return -1;
	}
	if (exists && !S_ISREG(sb.st_mode)) {
		fprintf(stderr,
			"h2d format: %s is not a regular file: --size only "
			"creates files; leave it out to format the device at "
			"its own size\n",
			a->device);
		return H2D_EXIT_USAGE;
	}
	if (exists && !a->force)
		return refuse_existing(a);
	r = h2_dev_create_file(a->device, a->size, exists, dev);
	if (r < 0) {
		fprintf(stderr, "h2d format: %s\n", h2_core_errmsg());
		return H2D_EXIT_FAIL;
	}
	*created = !exists;
	return -1;
}

/* Write zeros over the whole device, showing progress on stderr. */
static int preallocate(struct h2_dev *dev)
{
	const size_t chunk = 8u << 20;
	struct iovec iov;
	bool tty = isatty(STDERR_FILENO);
	unsigned shown = 0;
	char human[32];
	int r;

	iov.iov_base = calloc(1, chunk);
	if (!iov.iov_base) {
		fprintf(stderr, "h2d format: out of memory\n");
		return -1;
	}
	fprintf(stderr, "h2d format: preallocating %s: writing zeros\n",
		h2d_format_size(dev->size, human, sizeof(human)));
	for (uint64_t off = 0; off < dev->size; off += iov.iov_len) {
		unsigned pct;

		iov.iov_len = dev->size - off < chunk ? dev->size - off : chunk;
		r = h2_dev_pwritev(dev, &iov, 1, off);
		if (r < 0) {
			fprintf(stderr, "h2d format: %s\n", h2_core_errmsg());
			free(iov.iov_base);
			return -1;
		}
		pct = (unsigned)((off + iov.iov_len) * 100 / dev->size);
		/* A terminal sees every percent, a log every tenth. */
		if (tty ? pct != shown : pct / 10 != shown / 10) {
			fprintf(stderr, tty ? "\rh2d format: %u%%" :
					      "h2d format: %u%%\n",
				pct);
			shown = pct;
		}
	}
	if (tty)
		fputc('\n', stderr);
	free(iov.iov_base);
	r = h2_dev_flush(dev);
	if (r < 0) {
		fprintf(stderr, "h2d format: %s\n", h2_core_errmsg());
		return -1;
	}
	return 0;
}

int h2d_cmd_format(int argc, char **argv)
{
	struct format_args a = {0};
	struct h2_format_opts fo;
	struct h2_dev *dev = NULL;
	char human[32];
	bool created;
	int rc, r;

	rc = format_parse(argc, argv, &a);
	if (rc >= 0)
		return rc;
	rc = format_open(&a, &dev, &created);
	if (rc >= 0)
		return rc;
	if (a.preallocate && preallocate(dev) < 0) {
		rc = H2D_EXIT_FAIL;
		goto out;
	}
	fo.force = a.force;
	r = h2_store_format(dev, &fo);
	if (r < 0) {
		fprintf(stderr, "h2d format: %s\n", h2_core_errmsg());
		rc = H2D_EXIT_FAIL;
		goto out;
	}
	printf("h2d format: %s: %s (%" PRIu64 " bytes), %u header copies, "
	       "empty store written\n",
	       a.device, h2d_format_size(dev->size, human, sizeof(human)),
	       dev->size, h2_hdr_copies(dev->size));
	rc = H2D_EXIT_OK;
out:
	h2_dev_close(dev);
	/* Do not leave a half-formatted file we created behind. */
	if (rc != H2D_EXIT_OK && created)
		unlink(a.device);
	return rc;
}
